#!/usr/bin/env bash
# kelp on SeaweedMQ through the faults operators meet, on a real SeaweedFS stack with the
# broker's default flags:
#   full-stop     kelp produces 5,000 records (keys, values, headers, timestamps, every codec)
#                 and commits a group; kelp stops; the broker unloads every partition (its log
#                 says so); a new kelp reads every record and commit back
#                 (tests/seaweedmq/kelp_acceptance.py);
#   broker-kill   the MQ broker is SIGKILLed and restarted three times during a 100,000-record
#                 idempotent acks=all produce over 4 partitions, a 3-member group reading;
#   broker-term   the same with one SIGTERM;
#   kelp-kill     kelp itself is SIGKILLed during the same produce and started again
#                 (tests/seaweedmq/faults.py: nothing acknowledged lost, nothing stored twice,
#                 the group reads everything and commits every end).
#
# By default the stack's weed carries kelp's broker patches (scripts/seaweedfs/patches), and
# every scenario must pass. With KELP_FAULTS_STOCK=1 (what scripts/test-seaweedmq-faults-stock.sh
# sets) weed is stock SeaweedFS, which loses acknowledged records and reuses offsets; the
# scenarios then check what kelp promises there: no record is ever acknowledged at an offset
# another record holds, and a full stop either reads everything back or is refused with a
# fence that names the SeaweedFS bug.
#
# Environment: KELP_BIN (default: cargo build --release), WEED_BIN / WEED_PATCHES (see
# seaweedmq-up.sh), KELP_PYTHON_VENV, KELP_FAULT_RECORDS (100000), KELP_FAULTS ("full-stop
# broker-kill broker-term kelp-kill": which to run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

STOCK=${KELP_FAULTS_STOCK:-0}
FAULTS=${KELP_FAULTS:-"full-stop broker-kill broker-term kelp-kill"}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kelp-seaweedmq-faults.XXXXXX")
export SEAWEEDMQ_STATE="$ROOT/target/seaweedmq-faults.state"
if [ "$STOCK" = 1 ]; then
    export WEED_PATCHES=0
    export KELP_FAULT_EXPECT=fenced
fi
PIDS=()
# The running kelp's pid, in a file: the fault injector (a subshell) starts kelp again too.
KELP_PID_FILE=$RUN_DIR/kelp.pid
kelp_pid() { cat "$KELP_PID_FILE" 2>/dev/null || true; }
cleanup() {
    for pid in "${PIDS[@]+"${PIDS[@]}"}" $(kelp_pid); do
        kill -TERM "$pid" 2>/dev/null || true
    done
    scripts/seaweedmq-down.sh || true
}
trap cleanup EXIT

need_kelp_bin faults
need_python_venv faults

banner "faults: starting a SeaweedFS stack ($([ "$STOCK" = 1 ] && echo stock || echo patched) weed, default broker flags)"
scripts/seaweedmq-up.sh
BROKER=127.0.0.1:${SEAWEEDMQ_BROKER_PORT:-17777}
FILER=127.0.0.1:${SEAWEEDMQ_FILER_PORT:-8888}
STACK_DIR=$(seaweedmq_dir)

KELP_PORT=$(free_port)
# start_kelp NAME: kelp on $KELP_PORT (the same port every time, so that clients reconnect to
# it); its pid goes to $KELP_PID_FILE, its log to $RUN_DIR/kelp-NAME.log.
start_kelp() {
    RUST_LOG=${RUST_LOG:-info} "$KELP_BIN" --backend seaweedmq --seaweedmq "$BROKER" \
        --seaweedmq-filer "$FILER" --listen "127.0.0.1:$KELP_PORT" \
        >"$RUN_DIR/kelp-$1.log" 2>&1 &
    echo $! >"$KELP_PID_FILE"
    wait_listening "$KELP_PORT" "$!" "$RUN_DIR/kelp-$1.log" 60 "kelp $1"
}

# stop_kelp SIGNAL: stops kelp and waits until it is gone.
stop_kelp() {
    local pid
    pid=$(kelp_pid)
    [ -n "$pid" ] || return 0
    kill "-$1" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "kelp ($pid) still running 30 s after SIG$1"
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || true
    rm -f "$KELP_PID_FILE"
}

PREFIX=faults-$(rand_hex)
RESULTS=$RUN_DIR/results.txt
: >"$RESULTS"
expected=0

# ---- full stop -----------------------------------------------------------------------------

full_stop() {
    banner "faults: full stop (kelp stops, the broker unloads every partition, kelp starts)"
    start_kelp full-stop-1
    KELP_BOOTSTRAP=127.0.0.1:$KELP_PORT KELP_TOPIC_PREFIX=$PREFIX timeout 900 \
        "$VENV/bin/python" tests/seaweedmq/kelp_acceptance.py produce "$RUN_DIR/acceptance.json" \
        2>"$RUN_DIR/full-stop-produce.log" | tee -a "$RESULTS" || true
    local before
    before=$(grep -c 'Publisher:0 Subscriber:0 .* shutdown true' "$STACK_DIR/broker.log" || true)
    stop_kelp TERM
    # Every partition of the 5 topics of 3 loses its last publisher; the broker logs each
    # unload. (It keeps topics named `__*`, kelp's offsets topic among them, loaded.)
    local deadline=$((SECONDS + 120)) now
    while :; do
        now=$(grep -c 'Publisher:0 Subscriber:0 .* shutdown true' "$STACK_DIR/broker.log" || true)
        [ $((now - before)) -ge 15 ] && break
        [ "$SECONDS" -lt "$deadline" ] || die "the broker unloaded $((now - before)) of 15 partitions within 120 s of kelp's stop"
        sleep 0.2
    done
    echo "the broker unloaded $((now - before)) partitions after kelp stopped"
    start_kelp full-stop-2
    if [ "$STOCK" = 1 ]; then
        # Stock SeaweedFS renumbers the reloaded partitions from 0: kelp must refuse them.
        local out
        out=$(KELP_BOOTSTRAP=127.0.0.1:$KELP_PORT KELP_TOPIC_PREFIX=$PREFIX KELP_INTEROP_DEADLINE_S=20 \
            timeout 600 "$VENV/bin/python" tests/seaweedmq/kelp_acceptance.py verify \
            "$RUN_DIR/acceptance.json" 2>"$RUN_DIR/full-stop-verify.log" || true)
        echo "$out" >"$RUN_DIR/full-stop-verify.txt"
        if ! grep -q '|fail|' <<<"$out"; then
            echo "RESULT|confluent-kafka|full-stop-stock|pass|everything read back after the full stop" | tee -a "$RESULTS"
        elif grep -q ' fenced: ' "$RUN_DIR/kelp-full-stop-2.log"; then
            echo "RESULT|confluent-kafka|full-stop-stock|pass|reads refused: kelp fenced $(grep -c ' fenced: ' "$RUN_DIR/kelp-full-stop-2.log") partitions the broker lost or cannot read back, naming the SeaweedFS bug and the patches ($(grep -m1 -o 'fenced: [^.]*' "$RUN_DIR/kelp-full-stop-2.log"))" | tee -a "$RESULTS"
        else
            echo "RESULT|confluent-kafka|full-stop-stock|fail|records missing after the full stop and no fence named the cause" | tee -a "$RESULTS"
        fi
        # produce: topics, 5 round trips, the commit; then the full stop's verdict.
        expected=$((expected + 8))
    else
        KELP_BOOTSTRAP=127.0.0.1:$KELP_PORT KELP_TOPIC_PREFIX=$PREFIX timeout 900 \
            "$VENV/bin/python" tests/seaweedmq/kelp_acceptance.py verify "$RUN_DIR/acceptance.json" \
            2>"$RUN_DIR/full-stop-verify.log" | tee -a "$RESULTS" || true
        # produce: topics, 5 round trips, the commit; verify: 5 read-backs, the commits, the
        # resume.
        expected=$((expected + 14))
    fi
    stop_kelp TERM
}

# ---- faults during a produce ---------------------------------------------------------------

# during_produce NAME AT ACTION: faults.py with faults at the fractions AT; ACTION is run for
# each (a function name).
during_produce() {
    local name=$1 at=$2 action=$3 signals=$RUN_DIR/signals-$1
    banner "faults: $name (faults at ${at// /, } of the records acknowledged)"
    mkdir -p "$signals"
    start_kelp "$name"
    local k=0 count
    count=$(wc -w <<<"$at")
    (
        for k in $(seq 1 "$count"); do
            until [ -f "$signals/fault-$k" ]; do sleep 0.02; done
            echo "--- fault $k at $(date -u +%T.%N)"
            "$action" "$name-$k"
            touch "$signals/done-$k"
        done
    ) >"$RUN_DIR/$name-faults.log" 2>&1 &
    local injector=$!
    KELP_BOOTSTRAP=127.0.0.1:$KELP_PORT KELP_TOPIC_PREFIX=$PREFIX KELP_FAULT_AT="$at" timeout 1200 \
        "$VENV/bin/python" tests/seaweedmq/faults.py "$signals" "$name" \
        2>"$RUN_DIR/$name.log" | tee -a "$RESULTS" || true
    kill "$injector" 2>/dev/null || true
    wait "$injector" 2>/dev/null || true
    cat "$RUN_DIR/$name-faults.log"
    grep -E 'fenced|lost acknowledged|stream broke' "$RUN_DIR"/kelp-"$name"*.log | head -n 5 || true
    if [ "$STOCK" = 1 ]; then expected=$((expected + 2)); else expected=$((expected + 4)); fi
    stop_kelp TERM
}

broker_kill() { scripts/seaweedmq-broker.sh restart; }
broker_term() { scripts/seaweedmq-broker.sh graceful-restart; }
# kelp_kill TAG: SIGKILL kelp and start it again on the same port.
kelp_kill() {
    local pid
    pid=$(kelp_pid)
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    echo "kelp ($pid) killed"
    start_kelp "$1"
    echo "kelp started again ($(kelp_pid))"
}

first=1
for fault in $FAULTS; do
    if [ "$STOCK" = 1 ] && [ "$first" = 0 ]; then
        # A stock broker after a fault scenario is often unusable for the next (it loses
        # partitions, or answers nothing): each scenario gets a fresh stack.
        banner "faults: a fresh stock stack for $fault"
        scripts/seaweedmq-down.sh
        scripts/seaweedmq-up.sh
        STACK_DIR=$(seaweedmq_dir)
    fi
    first=0
    case $fault in
    full-stop) full_stop ;;
    broker-kill) during_produce broker-kill "0.25 0.5 0.75" broker_kill ;;
    broker-term) during_produce broker-term "0.5" broker_term ;;
    kelp-kill) during_produce kelp-kill "0.5" kelp_kill ;;
    *) die "unknown fault $fault" ;;
    esac
done

passed=$(grep -c '^RESULT|.*|pass|' "$RESULTS" || true)
failed=$(grep -c '^RESULT|.*|fail|' "$RESULTS" || true)
echo "faults: $passed passed, $failed failed (expected $expected); logs in $RUN_DIR"
if [ "$failed" -gt 0 ] || [ "$passed" -ne "$expected" ]; then
    # The broker's side of a failure: its error lines go beside kelp's logs (their tail is
    # printed), and the stack's directory (the whole broker log, the filer's data) is kept.
    grep -E '^[EW][0-9]{4} ' "$STACK_DIR/broker.log" >"$RUN_DIR/weed-broker-errors.log" || true
    export SEAWEEDMQ_KEEP=1
    echo "the SeaweedFS stack's files are kept in $STACK_DIR"
    die_with_logs "$RESULTS" "$RUN_DIR" 15 "SeaweedMQ fault scenarios failed"
fi
