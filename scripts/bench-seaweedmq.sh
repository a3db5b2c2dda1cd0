#!/usr/bin/env bash
# Produce latency through SeaweedMQ, side by side on one stack: kelp (--backend seaweedmq)
# against SeaweedFS's own Kafka gateway (`weed mq.kafka.gateway`), and kelp on its memory
# backend as the reference, with the same `loadtest produce` workload (1 connection, 1 request
# in flight, 100-byte records, 1 record per request, acks=1, closed loop), then a pipelined one
# (4 connections x 16 requests in flight) to show how kelp's gRPC core coalesces records: kelp's
# /metrics gives records per stream write (kelp_seaweedmq_published_records_total /
# kelp_seaweedmq_publish_sends_total). The gRPC core's own cost, without a broker, is
# `cargo bench --bench seaweedmq_publish`.
#
# Usage: scripts/bench-seaweedmq.sh      (a benchmark, not a test: it reports, it does not judge)
# Environment: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_ROUNDS (2), WEED_BIN (see
# seaweedmq-up.sh).
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
KELP_SW_METRICS=$(free_port)
target/release/kelp --backend seaweedmq --listen "127.0.0.1:$KELP_SW" \
    --metrics-listen "127.0.0.1:$KELP_SW_METRICS" >"$RAW/kelp-seaweedmq.log" 2>&1 &
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

run() { # run NAME PORT TOPIC [loadtest options]
    banner "bench-seaweedmq: $1"
    local name=$1 port=$2 topic=$3
    shift 3
    target/release/loadtest produce --bootstrap "127.0.0.1:$port" --topic "$topic" --partitions 1 \
        --record-bytes 100 --acks 1 --duration "$DURATION" --warmup "$WARMUP" "$@" \
        --json >"$RAW/$name.json"
    cat "$RAW/$name.json"
}
# counter NAME: one of kelp-seaweedmq's /metrics counters.
counter() {
    curl -fsS "http://127.0.0.1:$KELP_SW_METRICS/metrics" | sed -n "s/^$1 \([0-9]*\)$/\1/p"
}
# per_write BEFORE_SENDS BEFORE_RECORDS: records per stream write since then.
per_write() {
    local sends records
    sends=$(($(counter kelp_seaweedmq_publish_sends_total) - $1))
    records=$(($(counter kelp_seaweedmq_published_records_total) - $2))
    awk -v r="$records" -v s="$sends" 'BEGIN { printf "%.1f (%d records in %d writes)", r / (s > 0 ? s : 1), r, s }'
}
PIPELINED=(--connections 4 --in-flight 16)
# Each workload runs ROUNDS times, the systems taking turns, so that a slow spell of this
# shared machine (or of a stack just started) does not fall on one system only.
ROUNDS=${BENCH_ROUNDS:-2}
NAMES=()
for round in $(seq 1 "$ROUNDS"); do
    s0=$(counter kelp_seaweedmq_publish_sends_total)
    r0=$(counter kelp_seaweedmq_published_records_total)
    run "kelp-seaweedmq-r$round" "$KELP_SW" "_bench-kelp-$STAMP" --connections 1
    PER_WRITE_1=$(per_write "$s0" "$r0")
    run "weed-gateway-r$round" 9093 "_bench-gw-$STAMP" --connections 1
    run "kelp-memory-r$round" "$KELP_MEM" "_bench-mem-$STAMP" --connections 1
    NAMES+=("kelp-seaweedmq-r$round" "weed-gateway-r$round" "kelp-memory-r$round")
done
for round in $(seq 1 "$ROUNDS"); do
    s0=$(counter kelp_seaweedmq_publish_sends_total)
    r0=$(counter kelp_seaweedmq_published_records_total)
    run "kelp-seaweedmq-pipelined-r$round" "$KELP_SW" "_bench-kelp-p-$STAMP" "${PIPELINED[@]}"
    PER_WRITE_64=$(per_write "$s0" "$r0")
    run "weed-gateway-pipelined-r$round" 9093 "_bench-gw-p-$STAMP" "${PIPELINED[@]}"
    run "kelp-memory-pipelined-r$round" "$KELP_MEM" "_bench-mem-p-$STAMP" "${PIPELINED[@]}"
    NAMES+=("kelp-seaweedmq-pipelined-r$round" "weed-gateway-pipelined-r$round"
        "kelp-memory-pipelined-r$round")
done

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
    for s in "${NAMES[@]}"; do
        echo "| $s | $(field "$s" p50_us) | $(field "$s" p99_us) | $(field "$s" p999_us) | $(field "$s" max_us) | $(field "$s" records_per_sec) | $(field "$s" errors) |"
    done
    echo
    echo "\"pipelined\": ${PIPELINED[*]} (64 requests in flight)."
    echo
    echo "\"-rN\": round N; the systems take turns within a round."
    echo
    echo "kelp's records per gRPC stream write (one record per DataMessage; /metrics; last round):"
    echo "- 1 in flight: $PER_WRITE_1"
    echo "- pipelined: $PER_WRITE_64"
} >"bench-results/seaweedmq-$STAMP.md"
cat "bench-results/seaweedmq-$STAMP.md"
