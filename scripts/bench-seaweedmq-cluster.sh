#!/usr/bin/env bash
# Produce through one kelp instance and through three, side by side in one run, in front of
# one SeaweedFS stack (kelp's broker patches, default flags): the same cluster either has one
# member (instances 2 and 3 stopped with SIGTERM) or three, in rounds that alternate which
# shape goes first. Workloads:
#   - loadtest (leader-aware, kelp's own): 12 partitions, 12 connections x 8 requests in flight,
#     1 KiB records, 1 record per request, acks=all, closed loop;
#   - confluent-kafka (librdkafka, its default producer settings: linger 5 ms, idempotence off,
#     acks=all), bootstrapped from instance 1, 100,000 1 KiB records over 12 partitions.
# For each run it also reads the CPU time every process used (kelp instances, the MQ broker,
# the `weed server` holding master, volume server and filer) from /proc, as microseconds of CPU
# per record: the figures the capacity model in ARCHITECTURE.md is built from.
#
# Usage: scripts/bench-seaweedmq-cluster.sh   (a benchmark: it reports, it does not judge)
# Environment: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_ROUNDS (2), WEED_BIN.
# Output: bench-results/seaweedmq-cluster-<date>.md; raw JSON under
# target/bench-seaweedmq-cluster/<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-5s}
ROUNDS=${BENCH_ROUNDS:-2}
PY_RECORDS=${BENCH_PY_RECORDS:-100000}
STAMP=$(date -u +%Y-%m-%d-%H%M)
RAW=$ROOT/target/bench-seaweedmq-cluster/$STAMP
REPORT=$ROOT/bench-results/seaweedmq-cluster-$STAMP.md
VENV=${KELP_PYTHON_VENV:-$ROOT/target/interop/venv-python}
mkdir -p "$RAW" bench-results
export SEAWEEDMQ_STATE=$ROOT/target/bench-seaweedmq-cluster.state
declare -A PID PORT
cleanup() {
    for i in 1 2 3; do [ -n "${PID[$i]:-}" ] && kill -TERM "${PID[$i]}" 2>/dev/null; done
    scripts/seaweedmq-down.sh || true
}
trap cleanup EXIT

banner "bench-seaweedmq-cluster: cargo build --release"
cargo build --release --bin kelp --bin loadtest
[ -x "$VENV/bin/python" ] || die "no Python venv with confluent-kafka at $VENV (scripts/interop.sh makes it)"
banner "bench-seaweedmq-cluster: SeaweedFS stack"
scripts/seaweedmq-up.sh | tee "$RAW/stack.log"
STACK_DIR=$(sed -n 's/.*logs and pids in \(.*\)$/\1/p' "$RAW/stack.log")
SERVER_PID=$(cat "$STACK_DIR/server.pid")
BROKER_PID=$(cat "$STACK_DIR/broker.pid")

for i in 1 2 3; do PORT[$i]=$(free_port); done
# start I: instance I (node id I) on its port, logging to RAW/kelp-I-<n>.log.
STARTS=0
start() {
    STARTS=$((STARTS + 1))
    target/release/kelp --backend seaweedmq --seaweedmq 127.0.0.1:17777 \
        --seaweedmq-filer 127.0.0.1:8888 --node-id "$1" --listen "127.0.0.1:${PORT[$1]}" \
        --shards 1 >"$RAW/kelp-$1-$STARTS.log" 2>&1 &
    PID[$1]=$!
    LOG[$1]=$RAW/kelp-$1-$STARTS.log
    wait_listening "${PORT[$1]}" "${PID[$1]}" "${LOG[$1]}" 60 "kelp $1"
}
declare -A LOG
stop() {
    kill -TERM "${PID[$1]}"
    local deadline=$((SECONDS + 20))
    while kill -0 "${PID[$1]}" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "kelp $1 did not exit within 20 s of SIGTERM"
        sleep 0.1
    done
    PID[$1]=""
}
# last_settled I: the member list of instance I's last "settled with members" line.
last_settled() {
    grep 'settled with members' "${LOG[$1]}" | tail -n 1 | sed 's/.*members \[\(.*\)\];.*/\1/'
}
# settled MEMBERS: waits until every running instance logs a settled view with exactly MEMBERS
# ("1" or "1, 2, 3") after its last start, and then until the start-up grace its line names
# has passed (an instance that just started takes its share only then; warm-ups would meet
# NOT_LEADER_OR_FOLLOWER meanwhile).
settled() {
    local deadline=$((SECONDS + 90)) i grace
    for i in 1 2 3; do
        [ -n "${PID[$i]:-}" ] || continue
        until [ "$(last_settled "$i")" = "$1" ]; do
            [ "$SECONDS" -lt "$deadline" ] || die "instance $i did not settle with [$1] within 90 s"
            sleep 0.2
        done
        grace=$(grep 'settled with members' "${LOG[$i]}" | tail -n 1 |
            sed -n 's/.* in \([0-9.]*\) s, when its start-up grace ends.*/\1/p')
        [ -z "$grace" ] || sleep "$grace"
    done
}

# cpu_ticks PID...: user+system clock ticks used so far by those processes (and their threads).
cpu_ticks() {
    local t=0 p
    for p in "$@"; do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}
kelp_pids() {
    local i
    for i in 1 2 3; do [ -n "${PID[$i]:-}" ] && echo "${PID[$i]}"; done
}
HZ=$(getconf CLK_TCK)

# measure NAME COMMAND...: runs the workload, then writes RAW/NAME.cpu: CPU seconds of kelp
# (all instances), the broker and the weed server during it.
measure() {
    local name=$1 k0 b0 s0
    shift
    # shellcheck disable=SC2046 # one pid per word
    k0=$(cpu_ticks $(kelp_pids))
    b0=$(cpu_ticks "$BROKER_PID")
    s0=$(cpu_ticks "$SERVER_PID")
    "$@"
    # shellcheck disable=SC2046
    echo "$((($(cpu_ticks $(kelp_pids)) - k0))) $((($(cpu_ticks "$BROKER_PID") - b0))) $((($(cpu_ticks "$SERVER_PID") - s0))) $HZ" >"$RAW/$name.cpu"
}

loadtest_run() { # NAME TOPIC
    target/release/loadtest produce --bootstrap "127.0.0.1:${PORT[1]}" --topic "$2" \
        --partitions 12 --connections 12 --in-flight 8 --record-bytes 1024 --batch-records 1 \
        --acks=-1 --duration "$DURATION" --warmup "$WARMUP" --json >"$RAW/$1.json"
}

python_run() { # NAME TOPIC
    "$VENV/bin/python" - "127.0.0.1:${PORT[1]}" "$2" "$PY_RECORDS" >"$RAW/$1.json" <<'EOF'
import json, sys, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
boot, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": boot})  # kept: a collected client fails its futures
admin.create_topics([NewTopic(topic, 12, 1)])[topic].result()
p = Producer({"bootstrap.servers": boot})
acked, failed = 0, 0
def done(err, _msg):
    global acked, failed
    if err: failed += 1
    else: acked += 1
value = b"x" * 1024
# Warm up: metadata, connections to every leader.
for i in range(1200):
    p.produce(topic, value, partition=i % 12, on_delivery=done)
p.flush(120)
acked = 0
t0 = time.monotonic()
for i in range(n):
    while True:
        try:
            p.produce(topic, value, partition=i % 12, on_delivery=done)
            break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
p.flush(300)
dt = time.monotonic() - t0
print(json.dumps({"records": acked, "failed": failed, "duration_s": dt, "records_per_sec": acked / dt}))
EOF
}

start 1
settled "1"
for round in $(seq 1 "$ROUNDS"); do
    shapes=(one three)
    ((round % 2 == 0)) && shapes=(three one)
    for shape in "${shapes[@]}"; do
        if [ "$shape" = three ]; then
            start 2
            start 3
            settled "1, 2, 3"
        fi
        banner "bench-seaweedmq-cluster: round $round, $shape instance(s), loadtest"
        measure "$shape-loadtest-r$round" loadtest_run "$shape-loadtest-r$round" "_bc-$shape-lt-$round-$STAMP"
        banner "bench-seaweedmq-cluster: round $round, $shape instance(s), confluent-kafka"
        measure "$shape-python-r$round" python_run "$shape-python-r$round" "_bc-$shape-py-$round-$STAMP"
        if [ "$shape" = three ]; then
            stop 2
            stop 3
            settled "1"
        fi
    done
done

banner "bench-seaweedmq-cluster: report"
python3 - "$RAW" "$REPORT" "$ROUNDS" <<'EOF'
import json, os, statistics, sys
raw, report, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
def cpu(name, records):
    k, b, s, hz = (int(x) for x in open(os.path.join(raw, name + ".cpu")).read().split())
    per = lambda t: 1e6 * t / hz / records if records else float("nan")
    return per(k), per(b), per(s)
lines = ["# kelp on SeaweedMQ: one instance against three (scripts/bench-seaweedmq-cluster.sh)", "",
         "One SeaweedFS stack (kelp's broker patches, default flags), 1 KiB records, 12 partitions, "
         "acks=all. CPU columns: microseconds of CPU per acknowledged record, over the whole run "
         "(warm-up included for loadtest), for all kelp instances together, the MQ broker, and "
         "the `weed server` process (master, volume server, filer).", "",
         "| run | records/s | p50 | p99 | kelp CPU/rec | broker CPU/rec | weed server CPU/rec |",
         "|---|---:|---:|---:|---:|---:|---:|"]
summary = {}
for r in range(1, rounds + 1):
    for shape in ("one", "three"):
        for kind in ("loadtest", "python"):
            name = f"{shape}-{kind}-r{r}"
            d = json.load(open(os.path.join(raw, name + ".json")))
            rate = d["records_per_sec"]
            if kind == "loadtest":
                warm = d.get("warmup_s") or d.get("config", {}).get("warmup_s", 0) or 0
                records = d["records"] * (1 + warm / d["duration_s"]) if d.get("duration_s") else d["records"]
                p50, p99 = "%.0f us" % d["p50_us"], "%.0f us" % d["p99_us"]
            else:
                records = d["records"] + 1200
                p50 = p99 = "-"
            k, b, s = cpu(name, records)
            summary.setdefault((shape, kind), []).append((rate, k, b, s))
            lines.append(f"| {name} | {rate:,.0f} | {p50} | {p99} | {k:.0f} us | {b:.0f} us | {s:.0f} us |")
lines += ["", "Medians:", "", "| workload | one instance rec/s | three instances rec/s | three/one | kelp CPU/rec (one, three) | broker CPU/rec | weed server CPU/rec |", "|---|---:|---:|---:|---:|---:|---:|"]
for kind in ("loadtest", "python"):
    one = summary[("one", kind)]
    three = summary[("three", kind)]
    m = lambda v, i: statistics.median(x[i] for x in v)
    lines.append(f"| {kind} | {m(one,0):,.0f} | {m(three,0):,.0f} | {m(three,0)/m(one,0):.2f} | "
                 f"{m(one,1):.0f} / {m(three,1):.0f} us | {m(one,2):.0f} / {m(three,2):.0f} us | {m(one,3):.0f} / {m(three,3):.0f} us |")
open(report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwritten to {report}")
EOF
