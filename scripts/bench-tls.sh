#!/usr/bin/env bash
# What TLS and SASL cost, against plaintext, side by side in one run, with a real client and
# kelp's default flags: kelp on PLAINTEXT, on SSL, and on SASL_SSL (SCRAM-SHA-512), one at a
# time, in rounds (PLAINTEXT, SSL, SASL_SSL, then again), a fresh kelp for each run. Each run:
#   - latency: librdkafka (confluent-kafka, scripts/rdkafka-probe.py) in open loop at
#     $BENCH_PROBE_RATE records/s, 100-byte records, one per request, acks=1;
#   - throughput: the same client sending $BENCH_FLOOD records closed loop with librdkafka's
#     default batching;
#   - kelp's own share: round trips of ApiVersions on one connection, closed loop, from a
#     scripted client (scripts/rtt-probe.py, Python's socket and ssl), so that what TLS costs
#     kelp shows apart from what it costs the client library.
# The client is not pinned, like an application beside kelp. The certificate is RSA 2048 from a
# throw-away CA (make_test_pki), what most deployments present.
#
# Usage: scripts/bench-tls.sh
# Environment: BENCH_ROUNDS (3), BENCH_PROBE_RATE (1000), BENCH_PROBE_SECONDS (10),
#   BENCH_FLOOD (200000), KELP_BIN (default: cargo build --release), KELP_PYTHON_VENV.
# Output: every run, and per listener the medians and their ratio to PLAINTEXT's; written to
# bench-results/tls-<date>.md; raw JSON under target/bench-tls/<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/bench-lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/bench-lib.sh"

ROUNDS=${BENCH_ROUNDS:-3}
RATE=${BENCH_PROBE_RATE:-1000}
SECONDS_MEASURED=${BENCH_PROBE_SECONDS:-10}
FLOOD=${BENCH_FLOOD:-200000}
STAMP=$(date -u +%Y-%m-%d-%H%M)
OUT=$ROOT/target/bench-tls/$STAMP
mkdir -p "$OUT"
need_kelp_bin bench-tls
probe_venv
ulimit -l unlimited 2>/dev/null || true

PKI=$OUT/pki
make_test_pki "$PKI"
PASSWORD="bench-$(rand_hex)"
echo "$PASSWORD" | "$KELP_BIN" user add --users-file "$OUT/users" --mechanism SCRAM-SHA-512 bench

KELP_PID=
trap '[ -n "$KELP_PID" ] && kill -TERM "$KELP_PID" 2>/dev/null || true' EXIT

# client_conf PROTOCOL: the probe's --conf flags for a listener.
client_conf() {
    case $1 in
    PLAINTEXT) ;;
    SSL) echo "--conf security.protocol=SSL --conf ssl.ca.location=$PKI/ca.pem" ;;
    SASL_SSL) echo "--conf security.protocol=SASL_SSL --conf ssl.ca.location=$PKI/ca.pem \
        --conf sasl.mechanism=SCRAM-SHA-512 --conf sasl.username=bench --conf sasl.password=$PASSWORD" ;;
    esac
}

run_one() { # ROUND PROTOCOL
    local port tag=$2-$1
    port=$(free_port)
    "$KELP_BIN" --listen "$2://127.0.0.1:$port" --tls-cert "$PKI/server.pem" \
        --tls-key "$PKI/server.key" --users-file "$OUT/users" >"$OUT/kelp-$tag.log" 2>&1 &
    KELP_PID=$!
    wait_listening "$port" "$KELP_PID" "$OUT/kelp-$tag.log" 60 "kelp ($2)"
    # shellcheck disable=SC2046 # the --conf flags are meant to be split
    "$VENV/bin/python" scripts/rdkafka-probe.py --bootstrap "127.0.0.1:$port" --topic "lat-$tag" \
        --rate "$RATE" --duration "$SECONDS_MEASURED" --label "$tag" $(client_conf "$2") \
        >"$OUT/latency-$tag.json"
    # shellcheck disable=SC2046
    "$VENV/bin/python" scripts/rdkafka-probe.py --bootstrap "127.0.0.1:$port" --topic "flood-$tag" \
        --rate 1 --flood "$FLOOD" --label "$tag" $(client_conf "$2") >"$OUT/flood-$tag.json"
    local ca=()
    [ "$2" = PLAINTEXT ] || ca=(--ca "$PKI/ca.pem")
    if [ "$2" != SASL_SSL ]; then # the SASL login is not the scripted client's: SSL says it
        "$VENV/bin/python" scripts/rtt-probe.py --bootstrap "127.0.0.1:$port" "${ca[@]}" \
            --label "$tag" >"$OUT/rtt-$tag.json"
    fi
    kill -TERM "$KELP_PID"
    wait "$KELP_PID" || true
    KELP_PID=
}

for round in $(seq 1 "$ROUNDS"); do
    for protocol in PLAINTEXT SSL SASL_SSL; do
        banner "bench-tls: round $round/$ROUNDS, $protocol"
        run_one "$round" "$protocol"
    done
done

REPORT=$ROOT/bench-results/tls-$STAMP.md
python3 - "$OUT" "$ROUNDS" "$RATE" "$FLOOD" "$(nproc)" "$(uname -r)" >"$REPORT" <<'PY'
import json, os, statistics, sys
out, rounds, rate, flood, cpus, kernel = sys.argv[1:]
protocols = ["PLAINTEXT", "SSL", "SASL_SSL"]
def load(kind, p, r):
    with open(os.path.join(out, f"{kind}-{p}-{r}.json")) as f:
        return json.loads(f.readline())
rows, med = [], {}
for p in protocols:
    lat = [load("latency", p, r) for r in range(1, int(rounds) + 1)]
    fl = [load("flood", p, r) for r in range(1, int(rounds) + 1)]
    for r, (l, f) in enumerate(zip(lat, fl), 1):
        rows.append(f"| {p} | {r} | {l['p50_us']:.0f} | {l['p99_us']:.0f} | {f['records_per_sec']:.0f} | {l['errors'] + f['errors']} |")
    med[p] = (statistics.median(l["p50_us"] for l in lat), statistics.median(l["p99_us"] for l in lat),
              statistics.median(f["records_per_sec"] for f in fl))
print(f"# TLS and SASL cost against plaintext ({cpus} vCPUs, Linux {kernel})\n")
print(f"kelp with default flags, one listener each; librdkafka (confluent-kafka) unpinned: open loop at {rate} records/s "
      f"(100-byte records, one per request, acks=1) for latency, {flood} records closed loop with default batching for "
      f"throughput. `scripts/bench-tls.sh`, {rounds} rounds, a fresh kelp per run.\n")
print("| listener | p50 us | p99 us | records/s | p50 vs PLAINTEXT | p99 vs PLAINTEXT | records/s vs PLAINTEXT |")
print("|---|---|---|---|---|---|---|")
b = med["PLAINTEXT"]
for p in protocols:
    m = med[p]
    print(f"| {p} | {m[0]:.0f} | {m[1]:.0f} | {m[2]:.0f} | {m[0] / b[0]:.2f}x | {m[1] / b[1]:.2f}x | {m[2] / b[2]:.2f}x |")
print("\nMedians over the rounds. Every run:\n")
print("| listener | round | p50 us | p99 us | records/s | errors |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
rtt = {p: [load("rtt", p, r) for r in range(1, int(rounds) + 1)] for p in ["PLAINTEXT", "SSL"]}
m = {p: (statistics.median(x["p50_us"] for x in v), statistics.median(x["p99_us"] for x in v)) for p, v in rtt.items()}
print("\nkelp's own share (`scripts/rtt-probe.py`: ApiVersions round trips on one connection, closed loop, "
      "Python's socket and ssl; medians over the rounds):\n")
print("| listener | p50 us | p99 us | p50 vs PLAINTEXT | p99 vs PLAINTEXT |")
print("|---|---|---|---|---|")
for p in ["PLAINTEXT", "SSL"]:
    print(f"| {p} | {m[p][0]:.0f} | {m[p][1]:.0f} | {m[p][0] / m['PLAINTEXT'][0]:.2f}x | {m[p][1] / m['PLAINTEXT'][1]:.2f}x |")
PY
cat "$REPORT"
echo "bench-tls: written to $REPORT"
