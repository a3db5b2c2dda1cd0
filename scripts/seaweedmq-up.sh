#!/usr/bin/env bash
# Starts a minimal real SeaweedMQ stack on loopback for kelp's SeaweedMQ backend tests:
#   weed server    (master + volume + filer)
#   weed mq.broker (the SeaweedMessaging gRPC service kelp talks to)
# in a fresh temporary directory, waits until the broker answers, and prints the line to export:
#   KELP_SEAWEEDMQ=127.0.0.1:17777
# scripts/seaweedmq-down.sh stops it again.
#
# The `weed` binary: $WEED_BIN if set, else target/weed-bin/weed, else `weed` on PATH, else it is
# built (Go >= 1.26; slow: about ten minutes on two cores) into target/weed-bin from the module
# source the Go proxy serves for $WEED_VERSION, or from WEED_SRC (a SeaweedFS source tree).
#
# Known SeaweedFS 4.44 broker bug: about 5-6 minutes after every partition of a topic lost its
# last publisher and subscriber, the broker's idle-partition cleanup deadlocks (it removes the
# topic from the concurrent map it is iterating), and from then on ConfigureTopic and other
# calls hang. Start a fresh stack for each test run rather than reusing one for long.
#
# Environment (all optional):
#   WEED_VERSION              module version to install (default: SeaweedFS 4.53's pseudo-version)
#   SEAWEEDMQ_MASTER_PORT     9333  (gRPC on +10000)
#   SEAWEEDMQ_VOLUME_PORT     8081  (gRPC on +10000)
#   SEAWEEDMQ_FILER_PORT      8888  (gRPC on +10000)
#   SEAWEEDMQ_BROKER_PORT     17777 (gRPC, no offset)
#   SEAWEEDMQ_DIR             data/log/pid directory (default: a new mktemp -d)
#   SEAWEEDMQ_STATE           file remembering SEAWEEDMQ_DIR for the down script
#                             (default: target/seaweedmq.state)
#   SEAWEEDMQ_START_TIMEOUT_S how long to wait for the broker (default 180)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ROOT=$PWD
# SeaweedFS 4.53 (2026-11-09). The 4.44 release the interface notes name
# (v0.0.0-20260822074101-3563738699f2) is refused by the module proxy here (403).
WEED_VERSION=${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
MASTER_PORT=${SEAWEEDMQ_MASTER_PORT:-9333}
VOLUME_PORT=${SEAWEEDMQ_VOLUME_PORT:-8081}
FILER_PORT=${SEAWEEDMQ_FILER_PORT:-8888}
BROKER_PORT=${SEAWEEDMQ_BROKER_PORT:-17777}
STATE=${SEAWEEDMQ_STATE:-$ROOT/target/seaweedmq.state}
START_TIMEOUT_S=${SEAWEEDMQ_START_TIMEOUT_S:-180}

# ---- the weed binary ----------------------------------------------------------------------

find_weed() {
    if [ -n "${WEED_BIN:-}" ]; then
        [ -x "$WEED_BIN" ] || die "WEED_BIN=$WEED_BIN is not an executable"
        echo "$WEED_BIN"
    elif [ -x "$ROOT/target/weed-bin/weed" ]; then
        echo "$ROOT/target/weed-bin/weed"
    elif command -v weed >/dev/null 2>&1; then
        command -v weed
    fi
}

install_weed() {
    command -v go >/dev/null 2>&1 || die "no weed binary and no Go toolchain to build one"
    mkdir -p "$ROOT/target/weed-bin"
    local log="$ROOT/target/weed-bin/install.log" src
    if [ -n "${WEED_SRC:-}" ]; then
        [ -f "$WEED_SRC/go.mod" ] || die "WEED_SRC=$WEED_SRC has no go.mod"
        src=$WEED_SRC
    else
        # `go install module/weed@version` refuses this module (its go.mod has replace
        # directives), so fetch the module source through the proxy and build it in place.
        banner "fetching SeaweedFS $WEED_VERSION source through the Go module proxy"
        local dir
        dir=$(go mod download -json "github.com/seaweedfs/seaweedfs@$WEED_VERSION" 2>"$log" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n 1) || true
        if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
            cat "$log" >&2
            die "go mod download github.com/seaweedfs/seaweedfs@$WEED_VERSION failed (log above); set WEED_BIN or WEED_SRC"
        fi
        src=$ROOT/target/weed-bin/src
        rm -rf "$src"
        cp -r "$dir" "$src"
        chmod -R u+w "$src"
    fi
    banner "building weed from $src (go build; several minutes on two cores)"
    if ! (cd "$src" && go build -o "$ROOT/target/weed-bin/weed" ./weed) >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "go build of weed failed (log: $log)"
    fi
    [ -n "${WEED_SRC:-}" ] || rm -rf "$src"
}

WEED=$(find_weed)
if [ -z "$WEED" ]; then
    install_weed
    WEED=$ROOT/target/weed-bin/weed
fi
echo "weed: $WEED ($("$WEED" version 2>/dev/null | head -n 1))"

# ---- the stack ----------------------------------------------------------------------------

for port in "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT" "$BROKER_PORT" \
    $((MASTER_PORT + 10000)) $((VOLUME_PORT + 10000)) $((FILER_PORT + 10000)); do
    if port_open 127.0.0.1 "$port"; then
        die "port $port on 127.0.0.1 is taken (a stack already running? scripts/seaweedmq-down.sh)"
    fi
done

DIR=${SEAWEEDMQ_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kelp-seaweedmq.XXXXXX")}
mkdir -p "$DIR/data"
mkdir -p "$(dirname "$STATE")"
echo "$DIR" >"$STATE"

# Each process runs in its own session (setsid) so that the down script can stop it with the
# children it may start, by its own pid and nothing broader.
setsid "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$DIR/data" \
    -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
    -filer=true -master.peers=none >"$DIR/server.log" 2>&1 </dev/null &
echo $! >"$DIR/server.pid"

start_weed_broker "$WEED" "$DIR" "$MASTER_PORT" "$BROKER_PORT"
# scripts/seaweedmq-broker.sh restarts the broker with these.
printf '%s\n' "$WEED" "$MASTER_PORT" "$BROKER_PORT" >"$DIR/broker.args"

echo "starting SeaweedMQ in $DIR (server pid $(cat "$DIR/server.pid"), broker pid $(cat "$DIR/broker.pid"))"

# Ready when the broker's port accepts and the broker balancer answers ListTopics: `weed shell`
# asks the filer for the balancer (what FindBrokerLeader does) and then calls ListTopics on it.
alive() {
    kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null
}
ready() {
    port_open 127.0.0.1 "$BROKER_PORT" || return 1
    local out
    out=$(echo "mq.topic.list" | timeout 20 "$WEED" shell -master="127.0.0.1:$MASTER_PORT" \
        -filer="127.0.0.1:$FILER_PORT" 2>&1) || true
    echo "$out" >"$DIR/ready-check.log"
    grep -q "current balancer: 127.0.0.1:$BROKER_PORT" <<<"$out" &&
        grep -qE "no topics found|name:" <<<"$out"
}

deadline=$((SECONDS + START_TIMEOUT_S))
until ready; do
    for p in server broker; do
        if ! alive "$p"; then
            tail -n 30 "$DIR/$p.log" >&2
            die "weed $p exited during start-up (log: $DIR/$p.log)"
        fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "--- last readiness check:" >&2
        cat "$DIR/ready-check.log" >&2 || true
        echo "--- broker log tail:" >&2
        tail -n 30 "$DIR/broker.log" >&2
        die "SeaweedMQ broker not ready after ${START_TIMEOUT_S}s (logs in $DIR)"
    fi
    sleep 1
done

echo "SeaweedMQ ready in $((START_TIMEOUT_S - (deadline - SECONDS)))s; logs and pids in $DIR"
echo "KELP_SEAWEEDMQ=127.0.0.1:$BROKER_PORT"
