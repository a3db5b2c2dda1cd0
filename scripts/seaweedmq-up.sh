#!/usr/bin/env bash
# Starts a minimal real SeaweedMQ stack on loopback for kelp's SeaweedMQ backend tests:
#   weed server    (master + volume + filer)
#   weed mq.broker (the SeaweedMessaging gRPC service kelp talks to)
# in a fresh temporary directory, waits until the broker answers, and prints the line to export:
#   KELP_SEAWEEDMQ=127.0.0.1:17777
# scripts/seaweedmq-down.sh stops it again.
#
# The `weed` binary: $WEED_BIN if set; otherwise one built from SeaweedFS's source, by default
# with kelp's broker patches (scripts/seaweedfs/patches, see scripts/seaweedfs/README.md)
# applied, and kept per variant so that a patched and a stock binary are never mixed up:
#   target/weed-bin/<WEED_VERSION>/patched-<hash>/weed   WEED_PATCHES=1 (default); <hash> is the
#                                                        first 12 hex digits of the SHA-256 of the
#                                                        patch files (names and contents), so an
#                                                        edited series builds anew
#   target/weed-bin/<WEED_VERSION>/stock/weed            WEED_PATCHES=0
# Each is built once (Go >= 1.26; slow: about ten minutes on two cores, a few minutes more for
# the other variant) from the module source the Go proxy serves for $WEED_VERSION. With WEED_SRC
# (a SeaweedFS source tree, left untouched) it is built from a copy of that tree instead, into
# target/weed-bin/src/<variant>/weed, on every run. `weed` on PATH is not used: set WEED_BIN.
# target/weed-bin/weed is made a link to the binary this stack runs (for scripts that start
# SeaweedFS's gateway next to it); it is never read here. The variant is printed and recorded in
# <SEAWEEDMQ_DIR>/weed.variant.
#
# Known SeaweedFS 4.44 broker bug: about 5-6 minutes after every partition of a topic lost its
# last publisher and subscriber, the broker's idle-partition cleanup deadlocks (it removes the
# topic from the concurrent map it is iterating), and from then on ConfigureTopic and other
# calls hang. Start a fresh stack for each test run rather than reusing one for long.
#
# Environment (all optional):
#   WEED_BIN                  a weed binary to use as is (variant unknown)
#   WEED_PATCHES              1 (default): apply scripts/seaweedfs/patches; 0: build stock weed
#   WEED_VERSION              module version to build (default: SeaweedFS 4.53's pseudo-version;
#                             the patches are made for that one)
#   WEED_SRC                  build from this SeaweedFS source tree instead of the module source
#   SEAWEEDMQ_MASTER_PORT     9333  (gRPC on +10000)
#   SEAWEEDMQ_VOLUME_PORT     8081  (gRPC on +10000)
#   SEAWEEDMQ_FILER_PORT      8888  (gRPC on +10000)
#   SEAWEEDMQ_BROKER_PORT     17777 (gRPC, no offset)
#   SEAWEEDMQ_METRICS_PORT    serve `weed server`'s Prometheus metrics there (default: off)
#   SEAWEEDMQ_BROKER_FLAGS    extra `weed mq.broker` flags, word-split (default none: the
#                             broker runs with its default flags; see scripts/lib.sh)
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
WEED_PATCHES=${WEED_PATCHES:-1}
PATCH_DIR=$ROOT/scripts/seaweedfs/patches
MASTER_PORT=${SEAWEEDMQ_MASTER_PORT:-9333}
VOLUME_PORT=${SEAWEEDMQ_VOLUME_PORT:-8081}
FILER_PORT=${SEAWEEDMQ_FILER_PORT:-8888}
BROKER_PORT=${SEAWEEDMQ_BROKER_PORT:-17777}
STATE=${SEAWEEDMQ_STATE:-$ROOT/target/seaweedmq.state}
START_TIMEOUT_S=${SEAWEEDMQ_START_TIMEOUT_S:-180}

# ---- the weed binary ----------------------------------------------------------------------

# weed_variant: "stock", or "patched-<hash of the patch series>".
weed_variant() {
    case "$WEED_PATCHES" in
    0) echo stock ;;
    1)
        local patches=("$PATCH_DIR"/*.patch) hash p
        [ -f "${patches[0]}" ] || die "WEED_PATCHES=1 but $PATCH_DIR holds no *.patch"
        hash=$(for p in "${patches[@]}"; do basename "$p"; cat "$p"; done | sha256sum | cut -c1-12)
        echo "patched-$hash"
        ;;
    *) die "WEED_PATCHES must be 0 or 1, not '$WEED_PATCHES'" ;;
    esac
}

# build_weed OUT: builds weed into OUT from a scratch copy of the source, with the patch series
# applied unless WEED_PATCHES=0. OUT appears only once the build succeeded.
build_weed() {
    local out=$1 dir src log
    command -v go >/dev/null 2>&1 || die "no Go toolchain to build weed (or set WEED_BIN)"
    mkdir -p "$(dirname "$out")"
    log=$(dirname "$out")/build.log
    : >"$log"
    if [ -n "${WEED_SRC:-}" ]; then
        [ -f "$WEED_SRC/go.mod" ] || die "WEED_SRC=$WEED_SRC has no go.mod"
        dir=$WEED_SRC
    else
        # `go install module/weed@version` refuses this module (its go.mod has replace
        # directives), so fetch the module source through the proxy and build it in place.
        banner "fetching SeaweedFS $WEED_VERSION source through the Go module proxy"
        dir=$(go mod download -json "github.com/seaweedfs/seaweedfs@$WEED_VERSION" 2>>"$log" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n 1) || true
        if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
            cat "$log" >&2
            die "go mod download github.com/seaweedfs/seaweedfs@$WEED_VERSION failed (log above); set WEED_BIN or WEED_SRC"
        fi
    fi
    src=$(dirname "$out")/src
    rm -rf "$src"
    cp -r "$dir" "$src"
    chmod -R u+w "$src"
    if [ "$WEED_PATCHES" = 1 ]; then
        local p
        for p in "$PATCH_DIR"/*.patch; do
            echo "applying $(basename "$p")"
            if ! (cd "$src" && patch -p1 --forward --batch --quiet) <"$p" >>"$log" 2>&1; then
                tail -n 20 "$log" >&2
                die "$(basename "$p") does not apply to $dir (log: $log); WEED_PATCHES=0 builds stock weed"
            fi
        done
    fi
    banner "building weed ($VARIANT) from $dir (go build; several minutes on two cores)"
    if ! (cd "$src" && go build -o "$out.partial" ./weed) >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "go build of weed failed (log: $log)"
    fi
    mv "$out.partial" "$out"
    rm -rf "$src"
}

if [ -n "${WEED_BIN:-}" ]; then
    [ -x "$WEED_BIN" ] || die "WEED_BIN=$WEED_BIN is not an executable"
    WEED=$WEED_BIN
    VARIANT="WEED_BIN (not built here; patched or not unknown)"
else
    VARIANT=$(weed_variant)
    if [ -n "${WEED_SRC:-}" ]; then
        WEED=$ROOT/target/weed-bin/src/$VARIANT/weed
        build_weed "$WEED"
    else
        WEED=$ROOT/target/weed-bin/$WEED_VERSION/$VARIANT/weed
        [ -x "$WEED" ] || build_weed "$WEED"
    fi
fi
mkdir -p "$ROOT/target/weed-bin"
ln -sfn "$WEED" "$ROOT/target/weed-bin/weed"
echo "weed: $WEED"
echo "weed variant: $VARIANT ($("$WEED" version 2>/dev/null | head -n 1))"

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
echo "$VARIANT" >"$DIR/weed.variant"

# Each process runs in its own session (setsid) so that the down script can stop it with the
# children it may start, by its own pid and nothing broader.
METRICS_FLAG=()
if [ -n "${SEAWEEDMQ_METRICS_PORT:-}" ]; then
    METRICS_FLAG=(-metricsPort="$SEAWEEDMQ_METRICS_PORT")
fi
setsid "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$DIR/data" \
    -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
    -filer=true -master.peers=none "${METRICS_FLAG[@]}" >"$DIR/server.log" 2>&1 </dev/null &
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
