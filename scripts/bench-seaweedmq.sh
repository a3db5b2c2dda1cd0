#!/usr/bin/env bash
# Produce latency through SeaweedMQ, side by side on one stack: kelp (--backend seaweedmq)
# against SeaweedFS's own Kafka gateway (`weed mq.kafka.gateway`), and kelp on its memory
# backend as the reference, with the same `loadtest produce` workload (1 connection, 1 request
# in flight, 100-byte records, 1 record per request, acks=1, closed loop).
#
# Usage: scripts/bench-seaweedmq.sh      (a benchmark, not a test: it reports, it does not judge)
# Environment: BENCH_DURATION (15s), BENCH_WARMUP (5s), WEED_BIN (see seaweedmq-up.sh).
# Output: bench-results/seaweedmq-<date>.md; raw JSON under target/bench-seaweedmq/<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-5s}
STAMP=$(date -u +%Y-%m-%d-%H%M)
RAW=$ROOT/target/bench-seaweedmq/$STAMP
mkdir -p "$RAW" bench-results
STATE_FILE=$ROOT/target/bench-seaweedmq.state
PIDS=()
cleanup() {
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
    SEAWEEDMQ_STATE=$STATE_FILE scripts/seaweedmq-down.sh || true
}
trap cleanup EXIT

banner "bench-seaweedmq: cargo build --release"
cargo build --release --bin kelp --bin loadtest
SEAWEEDMQ_STATE=$STATE_FILE scripts/seaweedmq-up.sh
WEED=${WEED_BIN:-$ROOT/target/weed-bin/weed}
[ -x "$WEED" ] || WEED=$(command -v weed)

KELP_SW=$(free_port)
target/release/kelp --backend seaweedmq --listen "127.0.0.1:$KELP_SW" >"$RAW/kelp-seaweedmq.log" 2>&1 &
PIDS+=("$!")
wait_listening "$KELP_SW" "$!" "$RAW/kelp-seaweedmq.log" 90 "kelp (seaweedmq)"
KELP_MEM=$(free_port)
target/release/kelp --listen "127.0.0.1:$KELP_MEM" >"$RAW/kelp-memory.log" 2>&1 &
PIDS+=("$!")
wait_listening "$KELP_MEM" "$!" "$RAW/kelp-memory.log" 90 "kelp (memory)"
# The 4.53 gateway advertises port 9093 whatever -port says (see test-seaweedmq.sh).
"$WEED" mq.kafka.gateway -master=127.0.0.1:9333 -ip=127.0.0.1 -port=9093 \
    -schema-registry-url=http://127.0.0.1:9 >"$RAW/weed-gateway.log" 2>&1 &
PIDS+=("$!")
wait_listening 9093 "$!" "$RAW/weed-gateway.log" 90 "weed mq.kafka.gateway"

run() { # run NAME PORT TOPIC
    banner "bench-seaweedmq: $1"
    target/release/loadtest produce --bootstrap "127.0.0.1:$2" --topic "$3" --partitions 1 \
        --connections 1 --record-bytes 100 --acks 1 --duration "$DURATION" --warmup "$WARMUP" \
        --json >"$RAW/$1.json"
    cat "$RAW/$1.json"
}
run kelp-seaweedmq "$KELP_SW" "_bench-kelp-$STAMP"
run weed-gateway 9093 "_bench-gw-$STAMP"
run kelp-memory "$KELP_MEM" "_bench-mem-$STAMP"

field() { sed -n "s/.*\"$2\": *\\([0-9.]*\\).*/\\1/p" "$RAW/$1.json" | head -n 1; }
{
    echo "# Produce latency through SeaweedMQ, $STAMP"
    echo
    echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; kernel $(uname -r)"
    echo "- SeaweedFS: $("$WEED" version 2>/dev/null | head -n 1)"
    echo "- kelp: $(git rev-parse --short HEAD); workload: 1 connection, 1 in flight, 100 B records, 1 record/request, acks=1, closed loop, $WARMUP warm-up then $DURATION"
    echo
    echo "| system | p50 us | p99 us | p99.9 us | max us | records/s | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for s in kelp-seaweedmq weed-gateway kelp-memory; do
        echo "| $s | $(field $s p50_us) | $(field $s p99_us) | $(field $s p999_us) | $(field $s max_us) | $(field $s records_per_sec) | $(field $s errors) |"
    done
} >"bench-results/seaweedmq-$STAMP.md"
cat "bench-results/seaweedmq-$STAMP.md"
