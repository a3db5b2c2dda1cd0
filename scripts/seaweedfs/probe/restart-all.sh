#!/usr/bin/env bash
# A -kill-cmd for `probe startup` that restarts the whole stack on its data, as a host restart
# does: SIGKILLs the broker and the weed server (master, volume, filer), starts the weed server
# again with the arguments it ran with and the broker right after it, as scripts/seaweedmq-up.sh
# starts them, and waits until the broker's port accepts. The broker then finds no filer
# registered with the master yet ("the cluster has 0 filers" in its log) and serves gRPC for
# seconds before it creates its balancer lock. Uses the stack of SEAWEEDMQ_STATE / SEAWEEDMQ_DIR,
# as scripts/seaweedmq-broker.sh does; scripts/seaweedmq-down.sh stops it as before.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

DIR=$(seaweedmq_dir)
[ -n "$DIR" ] && [ -f "$DIR/server.pid" ] && [ -f "$DIR/broker.args" ] ||
    die "no SeaweedMQ stack recorded (SEAWEEDMQ_DIR / SEAWEEDMQ_STATE)"
{ read -r WEED; read -r MASTER_PORT; read -r BROKER_PORT; } <"$DIR/broker.args"
SERVER=$(cat "$DIR/server.pid")
[ -r "/proc/$SERVER/cmdline" ] || die "weed server ($SERVER) is not running"
mapfile -d '' SERVER_ARGS <"/proc/$SERVER/cmdline"

scripts/seaweedmq-broker.sh kill
# The server leads its own session (setsid): signal that process group.
kill -KILL -- "-$SERVER" 2>/dev/null || kill -KILL "$SERVER" 2>/dev/null || true
deadline=$((SECONDS + 30))
while kill -0 "$SERVER" 2>/dev/null || port_open 127.0.0.1 "$MASTER_PORT"; do
    [ "$SECONDS" -lt "$deadline" ] || die "weed server ($SERVER) still there 30 s after SIGKILL"
    sleep 0.05
done
echo "stopped weed server ($SERVER) with SIGKILL"

echo "--- restart at $(date -u +%FT%TZ)" >>"$DIR/server.log"
setsid "${SERVER_ARGS[@]}" >>"$DIR/server.log" 2>&1 </dev/null &
echo $! >"$DIR/server.pid"
echo "--- restart at $(date -u +%FT%TZ)" >>"$DIR/broker.log"
start_weed_broker "$WEED" "$DIR" "$MASTER_PORT" "$BROKER_PORT"
wait_listening "$BROKER_PORT" "$(cat "$DIR/broker.pid")" "$DIR/broker.log" 120 "weed mq.broker"
echo "weed server ($(cat "$DIR/server.pid")) and mq.broker ($(cat "$DIR/broker.pid")) started again; the broker listens on $BROKER_PORT"
