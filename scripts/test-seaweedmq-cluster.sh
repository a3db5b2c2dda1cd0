#!/usr/bin/env bash
# Three kelp instances (node ids 1, 2, 3, one cluster through the filer) in front of one real
# SeaweedFS stack (patched weed by default), checked with real clients (issue 11):
#   metadata   franz-go, Java kafka-clients (4.x and 3.9) and confluent-kafka, each bootstrapped
#              from ONE instance, see all three brokers at their addresses, and a 12-partition
#              topic has a leader on each of them (tests/interop/go cluster.go,
#              tests/interop/java Cluster.java, tests/seaweedmq/cluster.py); every instance's
#              /metrics agrees with Metadata on who leads what; Produce and Fetch sent to an
#              instance that does not lead the partition get NOT_LEADER_OR_FOLLOWER, OffsetCommit
#              and OffsetFetch at one that does not coordinate the group NOT_COORDINATOR
#              (tests/seaweedmq/cluster_routing.py);
#   failover   a 100,000-record idempotent acks=all produce over 12 partitions, bootstrapped
#              from all three, with a 3-member group reading (tests/seaweedmq/faults.py), while
#              (1) instance 2 is SIGKILLed, (2) started again, (3)(4)(5) instances 1, 2, 3 are
#              restarted one by one (SIGTERM, start, wait until it has rejoined): every
#              acknowledged record is read exactly once in partition order, the group resumes
#              at its commits and commits every end;
#   time       from the SIGKILL until Metadata names a live leader for every partition and a
#              produce to each is acknowledged: reported, at most the lease plus 5 s;
#   writers    from the instances' `writer T[p] starts/ends at ms` debug lines, no partition
#              ever had two kelp writers at once (tests/seaweedmq/cluster_writers.py; its
#              selftest first shows it fails on overlapping logs).
#
# Environment: KELP_BIN (default: cargo build --release), WEED_BIN / WEED_PATCHES (see
# seaweedmq-up.sh), KELP_PYTHON_VENV, KELP_CLUSTER_LEASE_MS (10000: --member-lease-ms of every
# instance), KELP_FAULT_RECORDS (100000), KELP_CLUSTER_RATE (800 records/s: the produce is paced
# so that the five faults fall inside it), KELP_CLUSTER_REQUIRE_ALL (default 1 under CI: a
# skipped check, e.g. a missing Go or Java toolchain, fails the run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

LEASE_MS=${KELP_CLUSTER_LEASE_MS:-10000}
RECORDS=${KELP_FAULT_RECORDS:-100000}
RATE=${KELP_CLUSTER_RATE:-800}
PARTITIONS=12
REQUIRE_ALL=${KELP_CLUSTER_REQUIRE_ALL:-${CI:+1}}
# The failover limit: the lease plus 5 s.
LIMIT_S=$(((LEASE_MS + 5000) / 1000))
NODES=(1 2 3)
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kelp-seaweedmq-cluster.XXXXXX")
export SEAWEEDMQ_STATE="$ROOT/target/seaweedmq-cluster.state"
RESULTS=$RUN_DIR/results.txt
: >"$RESULTS"
# One line per kelp process that ended: LABEL LOG END_MS HOW (cluster_writers.py's manifest).
MANIFEST=$RUN_DIR/processes.txt
: >"$MANIFEST"
# One line per fault the injector ran: K|ok or fail|what happened.
FAULTS_TXT=$RUN_DIR/faults.txt
: >"$FAULTS_TXT"
T0=$SECONDS

# The running instance N's pid and log are in $RUN_DIR/node-N.pid and node-N.log (files: the
# fault injector, a subshell, starts instances too).
node_pid() { cat "$RUN_DIR/node-$1.pid" 2>/dev/null || true; }
node_log() { cat "$RUN_DIR/node-$1.log" 2>/dev/null || true; }
INJECTOR=
cleanup() {
    [ -z "$INJECTOR" ] || kill "$INJECTOR" 2>/dev/null || true
    local n pid
    for n in "${NODES[@]}"; do
        pid=$(node_pid "$n")
        [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
    done
    scripts/seaweedmq-down.sh || true
}
trap cleanup EXIT

need_kelp_bin cluster
need_python_venv cluster
PY=$VENV/bin/python

banner "cluster: the single-writer checker on synthetic logs (it must fail on overlaps)"
"$PY" tests/seaweedmq/cluster_writers.py selftest | tee -a "$RESULTS" || true

banner "cluster: starting a SeaweedFS stack"
scripts/seaweedmq-up.sh
BROKER=127.0.0.1:${SEAWEEDMQ_BROKER_PORT:-17777}
FILER=127.0.0.1:${SEAWEEDMQ_FILER_PORT:-8888}

# Free loopback ports, all different: Kafka and metrics for each instance.
declare -A PORT MPORT
taken=" "
fresh_port() {
    local p
    while :; do
        p=$(free_port)
        [[ $taken == *" $p "* ]] || break
    done
    echo "$p"
}
for n in "${NODES[@]}"; do
    PORT[$n]=$(fresh_port)
    taken+="${PORT[$n]} "
    MPORT[$n]=$(fresh_port)
    taken+="${MPORT[$n]} "
done
BROKERS_SPEC=$(for n in "${NODES[@]}"; do printf '%s=127.0.0.1:%s,' "$n" "${PORT[$n]}"; done)
BROKERS_SPEC=${BROKERS_SPEC%,}
ALL_BOOTSTRAP=$(for n in "${NODES[@]}"; do printf '127.0.0.1:%s,' "${PORT[$n]}"; done)
ALL_BOOTSTRAP=${ALL_BOOTSTRAP%,}
echo "instances: $BROKERS_SPEC (metrics on $(for n in "${NODES[@]}"; do printf '%s ' "${MPORT[$n]}"; done)), lease ${LEASE_MS} ms"

# start_node N: starts instance N (same node id and ports every time) with a new log,
# $RUN_DIR/kelp-nodeN-K.log for its K-th start, and waits until it listens.
start_node() {
    local n=$1 k log
    k=$(find "$RUN_DIR" -maxdepth 1 -name "kelp-node$n-*.log" | wc -l)
    log=$RUN_DIR/kelp-node$n-$((k + 1)).log
    RUST_LOG=info,kelp::shard::seaweed::serving=debug "$KELP_BIN" --backend seaweedmq \
        --seaweedmq "$BROKER" --seaweedmq-filer "$FILER" --node-id "$n" \
        --listen "127.0.0.1:${PORT[$n]}" --metrics-listen "127.0.0.1:${MPORT[$n]}" \
        --member-lease-ms "$LEASE_MS" --shards 1 >"$log" 2>&1 &
    echo $! >"$RUN_DIR/node-$n.pid"
    echo "$log" >"$RUN_DIR/node-$n.log"
    wait_listening "${PORT[$n]}" "$!" "$log" 60 "kelp node $n"
}

# wait_settled N SECONDS: until instance N's current log says it settled with all three.
# Returns 1 (with the log's tail) if it does not within SECONDS or the process exits.
wait_settled() {
    local n=$1 log pid deadline=$((SECONDS + $2))
    log=$(node_log "$n")
    pid=$(node_pid "$n")
    until grep -q 'settled with members \[1, 2, 3\]' "$log"; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "node $n did not settle with members [1, 2, 3] within $2 s ($log):" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# stop_node N SIGNAL: signals instance N and waits until it is gone (await_node).
stop_node() {
    kill "-$2" "$(node_pid "$1")"
    await_node "$1" "$2"
}

# await_node N SIGNAL: waits until instance N, sent SIGNAL, is gone (SIGKILL after 30 s), and
# records it in the manifest with the time it was seen gone.
await_node() {
    local n=$1 sig=$2 pid log deadline=$((SECONDS + 30))
    pid=$(node_pid "$n")
    log=$(node_log "$n")
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "node $n ($pid) still running 30 s after SIG$sig; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sig=KILL
        fi
        sleep 0.02
    done
    echo "$(basename "$log" .log) $log $(date +%s%3N) $([ "$sig" = KILL ] && echo kill || echo term)" >>"$MANIFEST"
    rm -f "$RUN_DIR/node-$n.pid"
}

banner "cluster: three kelp instances"
for n in "${NODES[@]}"; do
    start_node "$n"
done
for n in "${NODES[@]}"; do
    wait_settled "$n" 120 || die "the three instances did not form a cluster"
done
echo "all three settled with members [1, 2, 3] $((SECONDS - T0)) s into the run"
for n in "${NODES[@]}"; do grep -m1 'settled with members \[1, 2, 3\]' "$(node_log "$n")"; done

PREFIX=cluster-$(rand_hex)
LEADERS=$RUN_DIR/leaders.json

# pick_result CLIENT OUTPUT LOG: the RESULT|CLIENT|cluster-metadata line of a client suite's
# OUTPUT; if there is none, a skip with the suite's reason (a missing toolchain) or a failure.
pick_result() {
    local client=$1 out=$2 log=$3 line reason
    line=$(grep "^RESULT|$client|cluster-metadata|" <<<"$out" || true)
    if [ -z "$line" ]; then
        reason=$(grep -m1 "^RESULT|$client|[^|]*|skip|" <<<"$out" | cut -d'|' -f5- || true)
        if [ -n "$reason" ]; then
            line="RESULT|$client|cluster-metadata|skip|$reason"
        else
            line="RESULT|$client|cluster-metadata|fail|no result from the suite (log: $log): $(tail -n 3 "$log" | tr '\n|' ' /')"
        fi
    fi
    echo "$line" | tee -a "$RESULTS"
}

banner "cluster: a $PARTITIONS-partition topic; every client sees the cluster from one instance"
KELP_BOOTSTRAP=127.0.0.1:${PORT[1]} KELP_CLUSTER_BROKERS=$BROKERS_SPEC timeout 300 \
    "$PY" tests/seaweedmq/cluster.py create "$PREFIX" "$PARTITIONS" "$LEADERS" \
    2>"$RUN_DIR/create.log" | tee -a "$RESULTS" || true
TOPIC=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["topic"])' "$LEADERS" 2>/dev/null || true)
# create, franz-go, java-4.x, java-3.9, confluent-kafka, metrics, wrong-instance
expected=7
if [ -n "$TOPIC" ]; then
    export KELP_CLUSTER_BROKERS=$BROKERS_SPEC KELP_CLUSTER_TOPIC=$TOPIC \
        KELP_CLUSTER_PARTITIONS=$PARTITIONS KELP_TOPIC_PREFIX=$PREFIX
    # Each client bootstraps from one instance, a different one each.
    echo "--- franz-go through node 1 (tests/interop/go/run.sh builds it)"
    out=$(KELP_BOOTSTRAP=127.0.0.1:${PORT[1]} timeout 900 tests/interop/go/run.sh \
        -clients franz-go -scenarios cluster-metadata 2>"$RUN_DIR/franz-go.log" || true)
    pick_result franz-go "$out" "$RUN_DIR/franz-go.log"
    echo "--- Java kafka-clients through node 2 (tests/interop/java/run.sh builds it with Maven)"
    out=$(KELP_BOOTSTRAP=127.0.0.1:${PORT[2]} JAVA_SCENARIOS=cluster-metadata timeout 900 \
        tests/interop/java/run.sh 2>"$RUN_DIR/java.log" || true)
    pick_result java-4.x "$out" "$RUN_DIR/java.log"
    pick_result java-3.9 "$out" "$RUN_DIR/java.log"
    echo "--- confluent-kafka through node 3"
    out=$(KELP_BOOTSTRAP=127.0.0.1:${PORT[3]} timeout 300 "$PY" tests/seaweedmq/cluster.py \
        metadata "$TOPIC" "$PARTITIONS" 2>"$RUN_DIR/confluent.log" || true)
    pick_result confluent-kafka "$out" "$RUN_DIR/confluent.log"
    echo "--- /metrics of every instance against Metadata"
    KELP_BOOTSTRAP=127.0.0.1:${PORT[1]} KELP_CLUSTER_LEASE_MS=$LEASE_MS timeout 300 \
        "$PY" tests/seaweedmq/cluster.py metrics \
        $(for n in "${NODES[@]}"; do printf 'http://127.0.0.1:%s/metrics ' "${MPORT[$n]}"; done) \
        2>"$RUN_DIR/metrics.log" | tee -a "$RESULTS" || true
    echo "--- requests sent to the wrong instance (kafka-python's low-level client)"
    KELP_BOOTSTRAP=127.0.0.1:${PORT[2]} timeout 300 "$PY" tests/seaweedmq/cluster_routing.py \
        "$TOPIC" "$PARTITIONS" 2>"$RUN_DIR/routing.log" | tee -a "$RESULTS" || true
fi
echo "metadata checks done $((SECONDS - T0)) s into the run"

# ---- faults during a produce ----------------------------------------------------------------

# fault_note K ok|fail TEXT: what fault K did, for the cluster-faults result.
fault_note() {
    echo "$1|$2|$3" >>"$FAULTS_TXT"
    echo "fault $1: $2: $3"
}

# kill_node2: SIGKILL instance 2; then the time until every partition of the spread topic
# has a live leader taking produces (cluster-failover-time).
kill_node2() {
    local pid kill_ms
    pid=$(node_pid 2)
    kill_ms=$(date +%s%3N)
    stop_node 2 KILL
    echo "$kill_ms" >"$RUN_DIR/kill-ms"
    fault_note 1 ok "node 2 ($pid) SIGKILLed at ms $kill_ms"
    if [ -n "$TOPIC" ]; then
        KELP_BOOTSTRAP=$ALL_BOOTSTRAP KELP_CLUSTER_BROKERS=$BROKERS_SPEC timeout 300 \
            "$PY" tests/seaweedmq/cluster.py failover "$LEADERS" 2 "$kill_ms" "$LIMIT_S" \
            2>"$RUN_DIR/failover.log" | tee -a "$RESULTS" || true
    else
        echo "RESULT|confluent-kafka|cluster-failover-time|fail|no topic to measure on (cluster-create-topic failed)" | tee -a "$RESULTS"
    fi
}

# restart_node K N [SIGNAL]: (SIGTERM instance N and wait until it is gone, then) start it again
# and wait until it has rejoined: its new log says it settled with all three.
restart_node() {
    local k=$1 n=$2 sig=${3:-} t log what=""
    t=$SECONDS
    if [ -n "$sig" ]; then
        log=$(node_log "$n")
        stop_node "$n" "$sig"
        what="SIG$sig: gone after $((SECONDS - t)) s"
        if grep -q "node $n left; the others take its partitions over now" "$log"; then
            what+=", left cleanly"
        else
            fault_note "$k" fail "node $n did not log that it left the cluster cleanly ($log)"
        fi
        what+="; "
    fi
    t=$SECONDS
    # In a subshell: wait_listening dies if it does not listen, which must not end the injector.
    if ! (start_node "$n"); then
        fault_note "$k" fail "node $n: ${what}did not start listening again ($(node_log "$n"))"
        return
    fi
    if wait_settled "$n" 120; then
        fault_note "$k" ok "node $n: ${what}started again, settled with [1, 2, 3] after $((SECONDS - t)) s"
    else
        fault_note "$k" fail "node $n: ${what}started again, but did not settle with [1, 2, 3] within 120 s ($(node_log "$n"))"
    fi
}

inject() {
    case $1 in
    1) kill_node2 ;;
    2) restart_node 2 2 ;;
    3) restart_node 3 1 TERM ;;
    4) restart_node 4 2 TERM ;;
    5) restart_node 5 3 TERM ;;
    esac
}

AT="0.1 0.25 0.45 0.65 0.85"
banner "cluster: $RECORDS records (paced at $RATE/s) over $PARTITIONS partitions through all three, a 3-member group reading; faults at ${AT// /, } of the records acknowledged: SIGKILL node 2, start it, restart 1, 2, 3 one by one"
SIGNALS=$RUN_DIR/signals
mkdir -p "$SIGNALS"
(
    for k in 1 2 3 4 5; do
        until [ -f "$SIGNALS/fault-$k" ]; do sleep 0.02; done
        echo "--- fault $k at $(date -u +%T.%N) ($((SECONDS - T0)) s into the run)"
        inject "$k"
        touch "$SIGNALS/done-$k"
    done
) >"$RUN_DIR/injector.log" 2>&1 &
INJECTOR=$!
KELP_BOOTSTRAP=$ALL_BOOTSTRAP KELP_TOPIC_PREFIX=$PREFIX KELP_FAULT_AT="$AT" \
    KELP_FAULT_PARTITIONS=$PARTITIONS KELP_FAULT_RECORDS=$RECORDS KELP_FAULT_RATE=$RATE \
    KELP_FAULT_RESUME_CHECK=1 timeout 1200 \
    "$PY" tests/seaweedmq/faults.py "$SIGNALS" cluster 2>"$RUN_DIR/faults.log" |
    tee -a "$RESULTS" || true
kill "$INJECTOR" 2>/dev/null || true
wait "$INJECTOR" 2>/dev/null || true
INJECTOR=
cat "$RUN_DIR/injector.log"
# cluster-produce, -no-loss, -no-dups, -consumers; cluster-failover-time; cluster-faults
expected=$((expected + 6))
if grep -q '|fail|' "$FAULTS_TXT" || [ "$(wc -l <"$FAULTS_TXT")" -lt 5 ]; then
    status=fail
else
    status=pass
fi
echo "RESULT|kelp|cluster-faults|$status|$(cut -d'|' -f3 "$FAULTS_TXT" | paste -sd';' | tr '|' '/') ($(wc -l <"$FAULTS_TXT") notes, 5 faults expected)" |
    tee -a "$RESULTS"

# ---- no two writers --------------------------------------------------------------------------

banner "cluster: every instance stops (SIGTERM); no partition ever had two writers"
for n in "${NODES[@]}"; do
    pid=$(node_pid "$n")
    [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
done
for n in "${NODES[@]}"; do
    [ -z "$(node_pid "$n")" ] || await_node "$n" TERM
done
cat "$MANIFEST"
"$PY" tests/seaweedmq/cluster_writers.py check "$MANIFEST" | tee -a "$RESULTS" || true
# the checker and its selftest
expected=$((expected + 2))

# ---- summary ----------------------------------------------------------------------------------

passed=$(grep -c '^RESULT|.*|pass|' "$RESULTS" || true)
failed=$(grep -c '^RESULT|.*|fail|' "$RESULTS" || true)
skipped=$(grep -c '^RESULT|.*|skip|' "$RESULTS" || true)
echo "cluster: $passed passed, $failed failed, $skipped skipped (expected $expected) in $((SECONDS - T0)) s; logs in $RUN_DIR"
if [ "$skipped" -gt 0 ]; then
    grep '^RESULT|.*|skip|' "$RESULTS"
fi
if [ "$failed" -gt 0 ] || [ $((passed + skipped)) -ne "$expected" ] ||
    { [ "$skipped" -gt 0 ] && [ "${REQUIRE_ALL:-0}" = 1 ]; }; then
    die_with_logs "$RESULTS" "$RUN_DIR" 15 "the kelp cluster checks failed"
fi
