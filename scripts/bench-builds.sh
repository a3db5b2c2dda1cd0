#!/usr/bin/env bash
# kelp against another build of itself, side by side in one run: the closed-loop produce
# workload (a) of bench-peers.sh (1 connection, 1 request in flight, 100-byte records, 1 record
# per request, acks=1), in rounds that alternate which build goes first, so that the machine's
# drift hits both alike. Each round starts a fresh kelp pinned to $BENCH_BROKER_CORE
# (--spin-us 2000) and a loadtest client on $BENCH_CLIENT_CORE.
#
# Usage: scripts/bench-builds.sh BASE_KELP_BIN [LABEL_BASE] [LABEL_NEW]
#   the new build is KELP_BIN (default: cargo build --release); LOADTEST_BIN likewise.
# Environment:
#   BENCH_ROUNDS (5)                   rounds; each runs both builds once
#   BENCH_DURATION (10s), BENCH_WARMUP (3s)
#   BENCH_BROKER_CORE (0), BENCH_CLIENT_CORE (1)
#   BENCH_WORKLOADS ("a")              a and/or b (b: 8 connections, 16 KiB batches)
#
# Output: a table per round, then per build the median of each figure and the new/base ratio
# of the medians; also written to bench-results/builds-<date>.md; raw JSON under
# target/bench-builds/<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/bench-lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/bench-lib.sh"

[[ $# -ge 1 ]] || die "usage: scripts/bench-builds.sh BASE_KELP_BIN [LABEL_BASE] [LABEL_NEW]"
BASE_BIN=$(realpath "$1")
[[ -x $BASE_BIN ]] || die "no kelp binary at $1"
LABEL_BASE=${2:-base}
LABEL_NEW=${3:-new}
ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-3s}
BROKER_CORE=${BENCH_BROKER_CORE:-0}
CLIENT_CORE=${BENCH_CLIENT_CORE:-1}
WORKLOADS=${BENCH_WORKLOADS:-a}

STAMP=$(date -u +%Y-%m-%d-%H%M)
RUN_DIR=$ROOT/target/bench-builds/$STAMP
REPORT=$ROOT/bench-results/builds-$STAMP.md
mkdir -p "$RUN_DIR" "$ROOT/bench-results"
bench_notes "$RUN_DIR"
bench_binaries

load_flags() { # workload
    case $1 in
    a) echo "--connections 1 --in-flight 1 --record-bytes 100 --batch-records 1 --partitions 1" ;;
    b) echo "--connections 8 --in-flight 1 --record-bytes 1024 --batch-records 16 --partitions 8" ;;
    *) die "unknown workload $1" ;;
    esac
}

# run_one BIN LABEL WORKLOAD ROUND: a fresh kelp, one loadtest run, JSON in RUN_DIR.
run_one() {
    local bin=$1 label=$2 w=$3 round=$4 port pid name
    name="$label-$w-$round"
    port=$(free_port)
    "$bin" --listen "127.0.0.1:$port" --cores "$BROKER_CORE" --spin-us 2000 \
        >"$RUN_DIR/$name.kelp.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if wait_port "$port" "$pid" "kelp $label" 60 "$RUN_DIR/$name.kelp.log"; then
        # shellcheck disable=SC2046 # the flags are words
        if "$LOADTEST" produce --bootstrap "127.0.0.1:$port" --topic "bench-$w" --acks 1 \
            $(load_flags "$w") --warmup "$WARMUP" --duration "$DURATION" --core "$CLIENT_CORE" \
            --json --label "$label" >"$RUN_DIR/$name.json" 2>"$RUN_DIR/$name.log"; then
            echo "bench: round $round, $w, $label: $(figures "$RUN_DIR/$name.json")" >&2
        else
            note "$name failed: $(tail -n 1 "$RUN_DIR/$name.log")"
            rm -f "$RUN_DIR/$name.json"
        fi
    fi
    stop_pid "$pid" "kelp $label"
}

# figures JSON: "p50 p99 p99.9 records/s" of one run.
figures() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f %.1f %.1f %.0f" % (d["p50_us"], d["p99_us"], d["p999_us"], d["records_per_sec"]))' "$1"
}

banner "bench: $LABEL_BASE ($BASE_BIN) against $LABEL_NEW ($KELP_BIN), $ROUNDS rounds"
for ((round = 1; round <= ROUNDS; round++)); do
    for w in $WORKLOADS; do
        if ((round % 2)); then
            run_one "$BASE_BIN" "$LABEL_BASE" "$w" "$round"
            run_one "$KELP_BIN" "$LABEL_NEW" "$w" "$round"
        else
            run_one "$KELP_BIN" "$LABEL_NEW" "$w" "$round"
            run_one "$BASE_BIN" "$LABEL_BASE" "$w" "$round"
        fi
    done
done

python3 - "$RUN_DIR" "$LABEL_BASE" "$LABEL_NEW" "$WORKLOADS" "$ROUNDS" >"$REPORT" <<'EOF'
import json, os, statistics, sys
run_dir, base, new, workloads, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), int(sys.argv[5])
keys = [("p50_us", "p50 (us)"), ("p99_us", "p99 (us)"), ("p999_us", "p99.9 (us)"), ("records_per_sec", "records/s")]
print(f"# kelp builds side by side: {base} against {new}\n")
for w in workloads:
    print(f"## workload {w}\n")
    print("| round | build | " + " | ".join(k[1] for k in keys) + " |")
    print("|---|---|" + "---:|" * len(keys))
    med = {}
    for label in (base, new):
        runs = []
        for r in range(1, rounds + 1):
            p = os.path.join(run_dir, f"{label}-{w}-{r}.json")
            if os.path.exists(p):
                runs.append((r, json.load(open(p))))
        for r, d in runs:
            print(f"| {r} | {label} | " + " | ".join(f"{d[k]:,.1f}" for k, _ in keys) + " |")
        med[label] = {k: statistics.median(d[k] for _, d in runs) for k, _ in keys} if runs else None
    print()
    print("| median | " + " | ".join(k[1] for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label in (base, new):
        if med[label]:
            print(f"| {label} | " + " | ".join(f"{med[label][k]:,.1f}" for k, _ in keys) + " |")
    if med[base] and med[new]:
        print(f"| {new} / {base} | " + " | ".join(f"{med[new][k] / med[base][k]:.2f}x" for k, _ in keys) + " |")
    print()
notes = open(os.path.join(run_dir, "notes.txt")).read().strip()
if notes:
    print("Notes:\n\n" + "\n".join(f"- {l}" for l in notes.splitlines()))
EOF
{
    echo
    echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at the end $(cut -d' ' -f1-3 /proc/loadavg);"
    echo "kelp pinned to core $BROKER_CORE with --spin-us 2000, loadtest on core $CLIENT_CORE; $WARMUP warm-up, $DURATION measured per run."
} >>"$REPORT"
cat "$REPORT"
