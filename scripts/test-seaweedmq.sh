#!/usr/bin/env bash
# kelp's SeaweedMQ backend against a real SeaweedFS stack (scripts/seaweedmq-up.sh builds `weed`
# when it is missing):
#   1. the gRPC core's own tests (tests/seaweedmq_core.rs) against the broker;
#   2. kelp A (--backend seaweedmq): a confluent-kafka program creates 5 topics and produces
#      5,000 records with headers, one topic per codec, reads them back, and commits a group's
#      offsets (tests/seaweedmq/kelp_acceptance.py produce);
#   3. kelp B starts, A stops (a rolling restart: B has nothing in memory from A), and the
#      program reads every record back from SeaweedMQ through B, finds the group's commits,
#      and a new member resumes exactly at them (kelp_acceptance.py verify);
#   4. 96 records of 200 kB read back through Fetch answers of at most 1 MB, and with a partition
#      limit below a record, and a compacted topic refusing key-less records
#      (tests/interop/python/confluent_roundtrip.py fetch-limits compacted-keys);
#   5. the application suites of the interop matrix (Kafka Streams, Kafka Connect) through kelp B;
#   6. SeaweedFS's own gateway (`weed mq.kafka.gateway`) starts on the same stack: records
#      produced through kelp are read through it and the other way round (gateway_interop.py);
#   7. committed offsets: kelp C without a filer stores them as records of the offsets topic (as
#      kelps before the filer store did); kelp D with a filer, in a new cluster, moves them to
#      one filer entry per group, keeps 300 more commits in that entry, and a restarted D finds
#      them (tests/seaweedmq/offsets_store.py).
# Kelp is restarted by rolling rather than stop-then-start because SeaweedFS (4.44 to 4.53)
# unloads a partition the moment its last publisher leaves and reloads it with its offsets
# reset; see ARCHITECTURE.md ("SeaweedMQ backend").
#
# Environment: KELP_BIN (default: cargo build --release), WEED_BIN / WEED_VERSION / WEED_SRC
# (see seaweedmq-up.sh), KELP_PYTHON_VENV (default target/interop/venv-python).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kelp-seaweedmq-test.XXXXXX")
STATE_FILE="$ROOT/target/seaweedmq-test.state"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    SEAWEEDMQ_STATE=$STATE_FILE scripts/seaweedmq-down.sh || true
}
trap cleanup EXIT

need_kelp_bin seaweedmq
need_python_venv seaweedmq

banner "seaweedmq: starting a SeaweedFS stack"
SEAWEEDMQ_STATE=$STATE_FILE scripts/seaweedmq-up.sh
BROKER=127.0.0.1:${SEAWEEDMQ_BROKER_PORT:-17777}

banner "seaweedmq: the gRPC core against the broker (tests/seaweedmq_core.rs)"
KELP_SEAWEEDMQ=$BROKER cargo test --release --test seaweedmq_core

FILER=127.0.0.1:${SEAWEEDMQ_FILER_PORT:-8888}

# start_kelp NAME NODE_ID [FLAGS...]: starts kelp (with the stack's filer unless FLAGS say
# --no-filer) and waits until it listens; sets KELP_PORT and KELP_PID. Its log is
# $RUN_DIR/kelp-NAME.log.
start_kelp() {
    local name=$1 node=$2
    shift 2
    local filer=(--seaweedmq-filer "$FILER")
    if [ "${1:-}" = --no-filer ]; then
        filer=()
        shift
    fi
    KELP_PORT=$(free_port)
    RUST_LOG=${RUST_LOG:-info} "$KELP_BIN" --backend seaweedmq --seaweedmq "$BROKER" \
        "${filer[@]}" --node-id "$node" "$@" \
        --listen "127.0.0.1:$KELP_PORT" >"$RUN_DIR/kelp-$name.log" 2>&1 &
    KELP_PID=$!
    PIDS+=("$KELP_PID")
    wait_listening "$KELP_PORT" "$KELP_PID" "$RUN_DIR/kelp-$name.log" 60 "kelp $name"
}

# stop_kelp PID NAME: SIGTERM, and it must be gone within 10 s.
stop_kelp() {
    kill -TERM "$1"
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    die "kelp $2 did not exit within 10 s of SIGTERM"
}

PREFIX=swmq-$(rand_hex)
RESULTS=$RUN_DIR/results.txt
run_phase() { # run_phase MODE PORT
    KELP_BOOTSTRAP=127.0.0.1:$2 KELP_TOPIC_PREFIX=$PREFIX timeout 900 \
        "$VENV/bin/python" tests/seaweedmq/kelp_acceptance.py "$1" "$RUN_DIR/acceptance.json" \
        2>"$RUN_DIR/$1.log" | tee -a "$RESULTS"
}

banner "seaweedmq: kelp A, produce 5,000 records under every codec, commit a group"
start_kelp A 1
PORT_A=$KELP_PORT
PID_A=$KELP_PID
run_phase produce "$PORT_A" || true

banner "seaweedmq: kelp B joins kelp A's cluster, then kelp A stops (SIGTERM)"
start_kelp B 2
PORT_B=$KELP_PORT
PID_B=$KELP_PID
# A rolling restart: B joins, the two share the partitions, then A leaves and B takes them all.
wait_log_line "$RUN_DIR/kelp-B.log" 'settled with members \[1, 2\]' 120 \
    "kelp B did not join kelp A's cluster within 120 s"
grep -m1 'settled with members' "$RUN_DIR/kelp-B.log"
stop_kelp "$PID_A" A
grep -m1 'left; the others take' "$RUN_DIR/kelp-A.log" || die "kelp A did not leave the cluster cleanly"
# B answers NOT_LEADER_OR_FOLLOWER for A's partitions until it has taken them (a real client
# retries that; librdkafka's watermark query, which the readback ends with, does not, so the
# readback retries it too: B may still be in its start-up grace when it settles alone).
wait_log_line "$RUN_DIR/kelp-B.log" 'settled with members \[2\]; node 2 leads its share' 120 \
    "kelp B did not take kelp A's partitions within 120 s"

banner "seaweedmq: read everything back through kelp B; the group resumes at its commits"
run_phase verify "$PORT_B" || true

banner "seaweedmq: 19 MB of 200 kB records read through 1 MB Fetch answers; a compacted topic refuses key-less records (confluent_roundtrip.py)"
KELP_BOOTSTRAP=127.0.0.1:$PORT_B KELP_TOPIC_PREFIX=$PREFIX PYTHONPATH=tests/interop/python \
    timeout 600 "$VENV/bin/python" tests/interop/python/confluent_roundtrip.py fetch-limits compacted-keys \
    2>"$RUN_DIR/fetch-limits.log" | tee -a "$RESULTS" || true

# The application suites of the interop matrix, through kelp B on SeaweedMQ: the same programs
# and checks as on the memory backend (tests/interop/README.md).
for suite in streams connect; do
    banner "seaweedmq: interop suite tests/interop/$suite through kelp on SeaweedMQ"
    KELP_BOOTSTRAP=127.0.0.1:$PORT_B KELP_TOPIC_PREFIX=$PREFIX-$suite- KELP_KELP_BIN=$KELP_BIN \
        timeout 900 "tests/interop/$suite/run.sh" 2>"$RUN_DIR/interop-$suite.log" |
        tee -a "$RESULTS" || true
done

banner "seaweedmq: SeaweedFS's own Kafka gateway on the same stack, both ways (gateway_interop.py)"
WEED=${WEED_BIN:-$ROOT/target/weed-bin/weed}
[ -x "$WEED" ] || WEED=$(command -v weed)
# The 4.53 gateway advertises port 9093 whatever -port says (protocol/handler.go,
# GetAdvertisedAddress keeps its default port once KAFKA_ADVERTISED_HOST is set, which the
# command always sets), so it has to listen there.
GW_PORT=9093
if port_open 127.0.0.1 "$GW_PORT"; then
    die "port $GW_PORT is taken; the weed gateway can only be reached there"
fi
# No schema registry runs here: the gateway then only creates topics whose names start with `_`.
"$WEED" mq.kafka.gateway -master="127.0.0.1:${SEAWEEDMQ_MASTER_PORT:-9333}" -ip=127.0.0.1 \
    -port="$GW_PORT" -schema-registry-url=http://127.0.0.1:9 >"$RUN_DIR/weed-gateway.log" 2>&1 &
PIDS+=("$!")
wait_listening "$GW_PORT" "$!" "$RUN_DIR/weed-gateway.log" 90 "weed mq.kafka.gateway"
KELP_BOOTSTRAP=127.0.0.1:$PORT_B GATEWAY_BOOTSTRAP=127.0.0.1:$GW_PORT KELP_TOPIC_PREFIX=$PREFIX \
    timeout 600 "$VENV/bin/python" tests/seaweedmq/gateway_interop.py 2>"$RUN_DIR/gateway.log" |
    tee -a "$RESULTS" || true

banner "seaweedmq: committed offsets from the topic (kelp C, no filer) to one filer entry per group (kelp D)"
stop_kelp "$PID_B" B
OFFSETS_STATE=$RUN_DIR/offsets-store.json
offsets_phase() { # offsets_phase MODE PORT [ENV...]
    local mode=$1 port=$2
    shift 2
    env KELP_BOOTSTRAP="127.0.0.1:$port" KELP_TOPIC_PREFIX="$PREFIX" "$@" timeout 600 \
        "$VENV/bin/python" tests/seaweedmq/offsets_store.py "$mode" "$OFFSETS_STATE" \
        2>"$RUN_DIR/offsets-$mode.log" | tee -a "$RESULTS" || true
}
start_kelp C 3 --no-filer
offsets_phase legacy "$KELP_PORT"
stop_kelp "$KELP_PID" C
MIGRATE_CLUSTER=$PREFIX-migrate
start_kelp D 4 --cluster-id "$MIGRATE_CLUSTER"
offsets_phase migrated "$KELP_PORT" KELP_FILER_HTTP="$FILER" KELP_CLUSTER_ID="$MIGRATE_CLUSTER"
stop_kelp "$KELP_PID" D
start_kelp D2 4 --cluster-id "$MIGRATE_CLUSTER"
offsets_phase restarted "$KELP_PORT"

# 22 of the programs above plus one per application suite.
EXPECTED=24
passed=$(grep -c '^RESULT|.*|pass|' "$RESULTS" || true)
failed=$(grep -c '^RESULT|.*|fail|' "$RESULTS" || true)
others=$(grep -c '^RESULT' "$RESULTS" || true)
echo "seaweedmq: $passed passed, $failed failed ($others scenarios); logs in $RUN_DIR"
if [ "$failed" -gt 0 ] || [ "$passed" -ne "$EXPECTED" ]; then
    die_with_logs "$RESULTS" "$RUN_DIR" 20 "SeaweedMQ acceptance failed"
fi
