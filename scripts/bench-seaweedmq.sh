#!/usr/bin/env bash
# Produce through SeaweedMQ, side by side in one run, every broker with its default flags:
#   - kelp on a SeaweedFS stack built with kelp's broker patches (durable acks: a record is
#     acked once the filer holds it) against kelp on a stock SeaweedFS stack (acks from the
#     broker's memory), both up at once on their own ports;
#   - SeaweedFS's own Kafka gateway (`weed mq.kafka.gateway`) on the patched stack;
#   - kelp on its memory backend, as the reference.
# Workloads (`loadtest produce`, 100-byte records, 1 record per request, acks=1, closed loop):
# 1 connection with 1 request in flight, then 4 connections x 16 (64 in flight). Each workload
# runs BENCH_ROUNDS times with the systems taking turns, so that a slow spell of this shared
# machine does not fall on one system only. Reported per run: p50/p99/p99.9, records/s, kelp's
# records per gRPC stream write (/metrics), and records per filer flush (the volume server's
# upload count over the run, from `weed server -metricsPort`: each flush is one upload).
#
# Usage: scripts/bench-seaweedmq.sh      (a benchmark, not a test: it reports, it does not judge)
# Environment: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_ROUNDS (2), WEED_BIN_PATCHED /
# WEED_BIN_STOCK (default: built by seaweedmq-up.sh).
# Output: bench-results/seaweedmq-<date>.md; raw JSON under target/bench-seaweedmq/<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-5s}
ROUNDS=${BENCH_ROUNDS:-2}
STAMP=$(date -u +%Y-%m-%d-%H%M)
RAW=$ROOT/target/bench-seaweedmq/$STAMP
mkdir -p "$RAW" bench-results
PIDS=()
# stack_env NAME: the environment seaweedmq-up.sh / -down.sh get for stack NAME.
stack_env() {
    case $1 in
    patched) echo "SEAWEEDMQ_STATE=$ROOT/target/bench-seaweedmq-patched.state SEAWEEDMQ_METRICS_PORT=9327 WEED_PATCHES=1 ${WEED_BIN_PATCHED:+WEED_BIN=$WEED_BIN_PATCHED}" ;;
    stock) echo "SEAWEEDMQ_STATE=$ROOT/target/bench-seaweedmq-stock.state SEAWEEDMQ_METRICS_PORT=9328 WEED_PATCHES=0 ${WEED_BIN_STOCK:+WEED_BIN=$WEED_BIN_STOCK} SEAWEEDMQ_MASTER_PORT=9533 SEAWEEDMQ_VOLUME_PORT=8281 SEAWEEDMQ_FILER_PORT=9088 SEAWEEDMQ_BROKER_PORT=17977" ;;
    esac
}
cleanup() {
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for s in patched stock; do
        # shellcheck disable=SC2046 # the assignments are words
        env $(stack_env "$s") scripts/seaweedmq-down.sh || true
    done
}
trap cleanup EXIT

banner "bench-seaweedmq: cargo build --release"
cargo build --release --bin kelp --bin loadtest
for s in patched stock; do
    banner "bench-seaweedmq: $s stack"
    # shellcheck disable=SC2046
    env $(stack_env "$s") scripts/seaweedmq-up.sh | tee "$RAW/stack-$s.log"
done
WEED=$(sed -n 's/^weed: \([^ ]*\).*/\1/p' "$RAW/stack-patched.log")
WEED_STOCK=$(sed -n 's/^weed: \([^ ]*\).*/\1/p' "$RAW/stack-stock.log")

# start_kelp NAME ARGS...: kelp on a free port, with /metrics; sets PORT_<NAME>, METRICS_<NAME>.
start_kelp() {
    local name=$1 port metrics
    shift
    port=$(free_port)
    metrics=$(free_port)
    target/release/kelp --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" "$@" \
        >"$RAW/kelp-$name.log" 2>&1 &
    PIDS+=("$!")
    wait_listening "$port" "$!" "$RAW/kelp-$name.log" 90 "kelp ($name)"
    if [[ " $* " == *" --seaweedmq-filer "* ]]; then
        # A cluster of one: it leads partitions once its membership has settled.
        local deadline=$((SECONDS + 90))
        until grep -q 'settled with members' "$RAW/kelp-$name.log"; do
            [ "$SECONDS" -lt "$deadline" ] || die "kelp ($name) did not settle its membership within 90 s"
            sleep 0.2
        done
    fi
    printf -v "PORT_$name" '%s' "$port"
    printf -v "METRICS_$name" '%s' "$metrics"
}
start_kelp patched --backend seaweedmq --seaweedmq 127.0.0.1:17777 --seaweedmq-filer 127.0.0.1:8888
start_kelp stock --backend seaweedmq --seaweedmq 127.0.0.1:17977 --seaweedmq-filer 127.0.0.1:9088
start_kelp memory
# The 4.53 gateway advertises port 9093 whatever -port says (see test-seaweedmq.sh).
"$WEED" mq.kafka.gateway -master=127.0.0.1:9333 -ip=127.0.0.1 -port=9093 \
    -schema-registry-url=http://127.0.0.1:9 >"$RAW/weed-gateway.log" 2>&1 &
PIDS+=("$!")
wait_listening 9093 "$!" "$RAW/weed-gateway.log" 90 "weed mq.kafka.gateway"

# metric URL NAME: a counter's value (summed over its label sets) from a Prometheus endpoint.
metric() {
    curl -fsS "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}
# flushes STACK: the stack's volume server uploads so far (one per broker flush).
flushes() {
    local port=9327
    [ "$1" = stock ] && port=9328
    curl -fsS "http://127.0.0.1:$port/metrics" |
        awk '/^SeaweedFS_volumeServer_request_total\{.*type="POST"/ { s += $2 } END { printf "%d\n", s }'
}

# run NAME PORT TOPIC STACK [loadtest options]: one run; its figures go to $RAW/NAME.json and
# its per-write and per-flush ratios to $RAW/NAME.ratios.
run() {
    local name=$1 port=$2 topic=$3 stack=$4 kmetrics="" s0=0 r0=0 f0=0
    shift 4
    banner "bench-seaweedmq: $name"
    case $name in
    kelp-patched*) kmetrics="http://127.0.0.1:$METRICS_patched/metrics" ;;
    kelp-stock*) kmetrics="http://127.0.0.1:$METRICS_stock/metrics" ;;
    esac
    if [ -n "$kmetrics" ]; then
        s0=$(metric "$kmetrics" kelp_seaweedmq_publish_sends_total)
        r0=$(metric "$kmetrics" kelp_seaweedmq_published_records_total)
    fi
    [ "$stack" != - ] && f0=$(flushes "$stack")
    target/release/loadtest produce --bootstrap "127.0.0.1:$port" --topic "$topic" --partitions 1 \
        --record-bytes 100 --acks 1 --duration "$DURATION" --warmup "$WARMUP" "$@" \
        --json >"$RAW/$name.json"
    local per_write=- per_flush=-
    if [ -n "$kmetrics" ]; then
        local s r
        s=$(($(metric "$kmetrics" kelp_seaweedmq_publish_sends_total) - s0))
        r=$(($(metric "$kmetrics" kelp_seaweedmq_published_records_total) - r0))
        per_write=$(awk -v r="$r" -v s="$s" 'BEGIN { printf "%.1f", r / (s > 0 ? s : 1) }')
    fi
    if [ "$stack" != - ]; then
        local f records
        f=$(($(flushes "$stack") - f0))
        records=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["records"])' "$RAW/$name.json")
        # Warm-up records are flushed too: count them by the run's rate.
        per_flush=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); f=int(sys.argv[2]); w=float(sys.argv[3]); r=d["records"]*(1+w/d["duration_s"]); print("%.1f" % (r/f) if f else "-")' \
            "$RAW/$name.json" "$f" "${WARMUP%s}")
        : "$records"
    fi
    echo "$per_write $per_flush" >"$RAW/$name.ratios"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("p50 %.0f us, p99 %.0f us, %.0f records/s" % (d["p50_us"], d["p99_us"], d["records_per_sec"]))' "$RAW/$name.json"
}

NAMES=()
for load in single pipelined; do
    if [ "$load" = single ]; then FLAGS=(--connections 1); else FLAGS=(--connections 4 --in-flight 16); fi
    for round in $(seq 1 "$ROUNDS"); do
        # Whoever went first in the last round goes last in this one.
        order=(kelp-patched kelp-stock weed-gateway kelp-memory)
        ((round % 2 == 0)) && order=(kelp-memory weed-gateway kelp-stock kelp-patched)
        for sys in "${order[@]}"; do
            name=$sys-$load-r$round
            case $sys in
            kelp-patched) run "$name" "$PORT_patched" "_b-kp-$load-$STAMP" patched "${FLAGS[@]}" ;;
            kelp-stock) run "$name" "$PORT_stock" "_b-ks-$load-$STAMP" stock "${FLAGS[@]}" ;;
            weed-gateway) run "$name" 9093 "_b-gw-$load-$STAMP" patched "${FLAGS[@]}" ;;
            kelp-memory) run "$name" "$PORT_memory" "_b-km-$load-$STAMP" - "${FLAGS[@]}" ;;
            esac
            NAMES+=("$name")
        done
    done
done

python3 - "$RAW" "$STAMP" "$("$WEED" version 2>/dev/null | head -n 1)" "$(git rev-parse --short HEAD)" \
    "$WARMUP" "$DURATION" "$(basename "$(dirname "$WEED")")" "$(basename "$(dirname "$WEED_STOCK")")" \
    "${NAMES[@]}" >"bench-results/seaweedmq-$STAMP.md" <<'EOF'
import json, os, statistics, sys
raw, stamp, weed, kelp, warmup, duration, vp, vs = sys.argv[1:9]
names = sys.argv[9:]
def load(n):
    d = json.load(open(os.path.join(raw, n + ".json")))
    w, f = open(os.path.join(raw, n + ".ratios")).read().split()
    return d, w, f
print(f"# Produce through SeaweedMQ, {stamp}\n")
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":")[1].strip()
print(f"- machine: {cpu}, {os.cpu_count()} cores")
print(f"- SeaweedFS {weed}: patched stack `{vp}` (kelp's broker patches: durable acks), stock stack `{vs}`; every broker with its default flags")
print(f"- kelp {kelp}; loadtest produce, 100 B records, 1 record per request, acks=1, closed loop, {warmup} warm-up then {duration}")
print("- single: 1 connection, 1 request in flight; pipelined: 4 connections x 16 in flight (64)")
print("- records/flush: records acknowledged per filer flush (the stack's volume-server uploads over the run, warm-up included)\n")
print("| run | p50 us | p99 us | p99.9 us | records/s | errors | records/write | records/flush |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for n in names:
    d, w, f = load(n)
    print(f"| {n} | {d['p50_us']:.0f} | {d['p99_us']:.0f} | {d['p999_us']:.0f} | {d['records_per_sec']:,.0f} | {d['errors']} | {w} | {f} |")
print("\n## Durable acks (patched) against stock acks, medians of the rounds\n")
print("| workload | p50 patched / stock | p99 patched / stock | records/s patched / stock |")
print("|---|---:|---:|---:|")
for load_ in ("single", "pipelined"):
    def med(sys_, key):
        return statistics.median(load(n)[0][key] for n in names if n.startswith(f"{sys_}-{load_}-"))
    p = {k: med("kelp-patched", k) for k in ("p50_us", "p99_us", "records_per_sec")}
    s = {k: med("kelp-stock", k) for k in ("p50_us", "p99_us", "records_per_sec")}
    print(f"| {load_} | {p['p50_us']:.0f} / {s['p50_us']:.0f} us = {p['p50_us'] / s['p50_us']:.1f}x | "
          f"{p['p99_us']:.0f} / {s['p99_us']:.0f} us = {p['p99_us'] / s['p99_us']:.1f}x | "
          f"{p['records_per_sec']:,.0f} / {s['records_per_sec']:,.0f} = {p['records_per_sec'] / s['records_per_sec']:.2f}x |")
print("\n\"-rN\": round N; the systems take turns within a round, the order reversed every other round.")
EOF
cat "bench-results/seaweedmq-$STAMP.md"
