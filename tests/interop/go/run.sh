#!/usr/bin/env bash
# Go client interop suite (franz-go, sarama, kafka-go) for kelp.
# Contract: tests/interop/README.md. Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX
# (optional KELP_GO_DEBUG=1 for client logs on stderr). Extra arguments are
# passed to the program, e.g. -clients franz-go -scenarios roundtrip-zstd.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

groups="group-split group-leave group-resume group-two-groups group-static group-cooperative"
declare -A scenarios=(
  [franz-go]="create-topic admin roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd idempotent-100k $groups admin-groups"
  [sarama]="create-topic admin roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd $groups"
  [kafka-go]="create-topic roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd $groups"
)
clients="franz-go sarama kafka-go"

# every_line STATUS DETAIL: one RESULT line per client and scenario
every_line() {
  for c in $clients; do
    for s in ${scenarios[$c]}; do
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
