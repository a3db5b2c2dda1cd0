#!/usr/bin/env bash
# Kills or restarts the MQ broker of the stack scripts/seaweedmq-up.sh started, leaving master,
# volume and filer running: for fault tests.
#
#   scripts/seaweedmq-broker.sh kill      SIGKILL the broker (its whole session) and wait until
#                                         it is gone
#   scripts/seaweedmq-broker.sh start     start it again with the same arguments and wait until
#                                         its gRPC port accepts
#   scripts/seaweedmq-broker.sh restart   both
#   scripts/seaweedmq-broker.sh stop | graceful-restart
#                                         the same with SIGTERM (the broker flushes its buffers)
#
# Environment: SEAWEEDMQ_STATE / SEAWEEDMQ_DIR as for seaweedmq-down.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

DIR=$(seaweedmq_dir)
if [ -z "$DIR" ] || [ ! -f "$DIR/broker.args" ]; then
    die "no SeaweedMQ stack recorded (SEAWEEDMQ_DIR / SEAWEEDMQ_STATE)"
fi
{ read -r WEED; read -r MASTER_PORT; read -r BROKER_PORT; } <"$DIR/broker.args"

# kill_broker SIGNAL: signal the broker's session and wait until it is gone.
kill_broker() {
    local pid sig=$1
    pid=$(cat "$DIR/broker.pid")
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null || port_open 127.0.0.1 "$BROKER_PORT"; do
        [ "$SECONDS" -lt "$deadline" ] || die "weed mq.broker ($pid) still there 30 s after SIG$sig"
        sleep 0.05
    done
    echo "stopped weed mq.broker ($pid) with SIG$sig"
}

start_broker() {
    echo "--- restart at $(date -u +%FT%TZ)" >>"$DIR/broker.log"
    start_weed_broker "$WEED" "$DIR" "$MASTER_PORT" "$BROKER_PORT"
    wait_listening "$BROKER_PORT" "$(cat "$DIR/broker.pid")" "$DIR/broker.log" 120 "weed mq.broker"
    echo "weed mq.broker ($(cat "$DIR/broker.pid")) listens on $BROKER_PORT again"
}

case "${1:-}" in
kill) kill_broker KILL ;;
stop) kill_broker TERM ;;
start) start_broker ;;
restart) kill_broker KILL && start_broker ;;
graceful-restart) kill_broker TERM && start_broker ;;
*) die "usage: $0 kill|stop|start|restart|graceful-restart" ;;
esac
