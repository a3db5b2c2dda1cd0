#!/usr/bin/env bash
# Go client interop suite (franz-go, sarama, kafka-go) for kelp.
# Contract: tests/interop/README.md. Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX
# (optional KELP_GO_DEBUG=1 for client logs on stderr). Extra arguments are
# passed to the program, e.g. -clients franz-go -scenarios roundtrip-zstd.
#
# Scenarios outside the default lists below (the default run is against one plaintext kelp):
#   franz-go cluster-metadata: only when KELP_CLUSTER_BROKERS is set (cluster.go)
#   franz-go and sarama sasl-ssl-scram-sha-512, sasl-ssl-plain, sasl-ssl-wrong-password: only
#     when -scenarios names them (sasl_ssl.go: KELP_SASL_SSL_BOOTSTRAP, KELP_TLS_CA,
#     KELP_SASL_USER, KELP_SASL_PASSWORD; KELP_BOOTSTRAP is not needed when only these are named)
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

groups="group-split group-leave group-resume group-two-groups group-static group-cooperative"
declare -A scenarios=(
  [franz-go]="create-topic admin roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd idempotent-100k $groups admin-groups"
  [sarama]="create-topic admin roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd $groups"
  [kafka-go]="create-topic roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd $groups"
)
declare -A opt_in=(
  [franz-go]="cluster-metadata sasl-ssl-scram-sha-512 sasl-ssl-plain sasl-ssl-wrong-password"
  [sarama]="sasl-ssl-scram-sha-512 sasl-ssl-plain sasl-ssl-wrong-password"
)
clients="franz-go sarama kafka-go"

# -clients / -scenarios as the program reads them (Go's flag syntax), so that a run that cannot
# start reports what was asked for rather than the default lists
want_clients="" want_scenarios=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    -clients | --clients) want_clients=${args[i + 1]:-} ;;
    -clients=* | --clients=*) want_clients=${args[i]#*=} ;;
    -scenarios | --scenarios) want_scenarios=${args[i + 1]:-} ;;
    -scenarios=* | --scenarios=*) want_scenarios=${args[i]#*=} ;;
  esac
done

# every_line STATUS DETAIL: one RESULT line per client and scenario asked for
every_line() {
  local c s
  for c in $clients; do
    [[ -z $want_clients || ,${want_clients// /}, == *,$c,* ]] || continue
    for s in ${scenarios[$c]} ${opt_in[$c]:-}; do
      if [[ -z $want_scenarios ]]; then
        [[ " ${opt_in[$c]:-} " == *" $s "* ]] && continue
      else
        [[ ,${want_scenarios// /}, == *,$s,* ]] || continue
      fi
      echo "RESULT|$c|$s|$1|$2"
    done
  done
}

if ! command -v go >/dev/null 2>&1; then
  every_line skip "go toolchain not found on PATH"
  exit 0
fi

# never let the go command fetch a toolchain of its own
export GOTOOLCHAIN=local
gover="$(go env GOVERSION 2>/dev/null)"
case "$gover" in
  go1.2[6-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
  *) every_line skip "go.mod needs go >= 1.26, found ${gover:-unknown}"; exit 0 ;;
esac

cd "$here" || exit 1
if ! go mod download >"$here/.download.log" 2>&1; then
  every_line skip "go mod download failed (module proxy unreachable?): $(tail -n1 "$here/.download.log" | tr '|' '/')"
  exit 0
fi
rm -f "$here/.download.log"
mkdir -p "$here/.bin"
if ! go build -o "$here/.bin/kelp-interop-go" . 2>"$here/.bin/build.log"; then
  cat "$here/.bin/build.log" >&2
  every_line fail "go build failed: $(head -n1 "$here/.bin/build.log" | tr '|' '/')"
  exit 1
fi

exec "$here/.bin/kelp-interop-go" "$@"
