#!/usr/bin/env bash
# A -kill-cmd for `probe kill` that makes the broker's flushes hang before the kill: stops the
# stack's weed server (master, volume, filer) with SIGSTOP, waits 2 s (records published meanwhile
# stay in the broker's memory, neither flushed nor acknowledged, while readers go on fetching),
# SIGKILLs the broker, resumes the weed server and restarts the broker. Uses the stack of
# SEAWEEDMQ_STATE / SEAWEEDMQ_DIR, as scripts/seaweedmq-broker.sh does.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

DIR=$(seaweedmq_dir)
[ -n "$DIR" ] && [ -f "$DIR/server.pid" ] || die "no SeaweedMQ stack recorded (SEAWEEDMQ_DIR / SEAWEEDMQ_STATE)"
SERVER=$(cat "$DIR/server.pid")
kill -STOP "$SERVER"
sleep 2
if ! scripts/seaweedmq-broker.sh kill; then
    kill -CONT "$SERVER"
    exit 1
fi
kill -CONT "$SERVER"
scripts/seaweedmq-broker.sh start
