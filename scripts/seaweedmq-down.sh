#!/usr/bin/env bash
# Stops the stack scripts/seaweedmq-up.sh started: the broker first, then the server, each by
# the pid it recorded (and that process's own session, which setsid gave it), nothing broader.
# Environment: SEAWEEDMQ_DIR or SEAWEEDMQ_STATE as for the up script; SEAWEEDMQ_KEEP=1 keeps
# the data and logs directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
STATE=${SEAWEEDMQ_STATE:-$PWD/target/seaweedmq.state}
DIR=$(seaweedmq_dir)
if [ -z "$DIR" ] || [ ! -d "$DIR" ]; then
    echo "no SeaweedMQ stack recorded (state file $STATE)"
    exit 0
fi

stop() {
    local name=$1 pidfile="$DIR/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        # The process leads its own session (setsid): signal that process group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "weed $name ($pid) ignored SIGTERM for 10s; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
    echo "stopped weed $name ($pid)"
}

stop broker
stop server
if [ "${SEAWEEDMQ_KEEP:-0}" = 1 ]; then
    echo "kept $DIR"
else
    rm -rf "$DIR"
fi
rm -f "$STATE"
