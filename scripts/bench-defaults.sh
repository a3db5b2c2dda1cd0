#!/usr/bin/env bash
# kelp as a new user first meets it: `kelp` with no flags and `loadtest produce` with no flags
# (a spinning client, not pinned), on this machine, against the pinned reference (kelp on
# $BENCH_BROKER_CORE with --spin-us 2000 --dedicated-cores, the client pinned to
# $BENCH_CLIENT_CORE), side by side in one run. The workload is loadtest's default: 1
# connection, 1 request in flight, 100-byte records, 1 per request, acks=1, closed loop,
# $BENCH_RECORDS records.
#
# Each round runs, in turn: the pinned reference, kelp's defaults, and kelp's defaults plus
# --dedicated-cores (kelp before it learned to back off from shared cores: every shard spins
# for --spin-us after activity, pinned, and glommio spins before parking). A fresh kelp per run:
# which shard the kernel hands the connection to decides whether a request crosses shards, and
# with it which mode a run falls in, so one run per start shows the spread users see.
#
# Each round also runs a real client against kelp with no flags: librdkafka (confluent-kafka,
# scripts/rdkafka-probe.py) in open loop at $BENCH_PROBE_RATE records/s, not pinned, as an
# application would run beside it.
#
# Usage: scripts/bench-defaults.sh
# Environment: BENCH_ROUNDS (5), BENCH_RECORDS (50000), BENCH_BROKER_CORE (0),
#   BENCH_CLIENT_CORE (1), KELP_BIN / LOADTEST_BIN (default: cargo build --release),
#   BENCH_PROBE_RATE (5000; empty: no real-client runs), KELP_PYTHON_VENV (default
#   target/interop/venv-python, made when missing).
# Output: a table of every run and, per configuration, the worst run's p99 and throughput
# against the pinned reference's median (the issue's bar: within 10x its p99, at least 0.3x its
# throughput); written to bench-results/defaults-<date>.md; raw JSON under
# target/bench-defaults/<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/bench-lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/bench-lib.sh"

ROUNDS=${BENCH_ROUNDS:-5}
RECORDS=${BENCH_RECORDS:-50000}
BROKER_CORE=${BENCH_BROKER_CORE:-0}
CLIENT_CORE=${BENCH_CLIENT_CORE:-1}
STAMP=$(date -u +%Y-%m-%d-%H%M)
RUN_DIR=$ROOT/target/bench-defaults/$STAMP
REPORT=$ROOT/bench-results/defaults-$STAMP.md
mkdir -p "$RUN_DIR" "$ROOT/bench-results"
bench_notes "$RUN_DIR"
bench_binaries

# run_one NAME KELP_FLAGS LOADTEST_FLAGS: a fresh kelp, one loadtest run, JSON in RUN_DIR.
run_one() {
    local name=$1 port mport pid
    local -a kflags lflags
    read -r -a kflags <<<"$2"
    read -r -a lflags <<<"$3"
    port=$(free_port)
    mport=$(free_port)
    "$KELP_BIN" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" "${kflags[@]}" \
        >"$RUN_DIR/$name.kelp.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$port" "$pid" "kelp ($name)" 30 "$RUN_DIR/$name.kelp.log" || return 0
    echo "bench: $name: kelp ${kflags[*]}; loadtest produce ${lflags[*]}" >&2
    if "$LOADTEST" produce --bootstrap "127.0.0.1:$port" --topic "bench-$name" \
        --records "$RECORDS" --json --label "$name" "${lflags[@]}" \
        >"$RUN_DIR/$name.json.tmp" 2>"$RUN_DIR/$name.log"; then
        mv "$RUN_DIR/$name.json.tmp" "$RUN_DIR/$name.json"
        sed -n '/latency (us)/,/throughput/p' "$RUN_DIR/$name.log" >&2
    else
        note "$name failed: $(tail -n 1 "$RUN_DIR/$name.log")"
    fi
    # What the spin governor did (0 with --dedicated-cores), and whether the connection moved
    # to the shard that owns the partition (it crossed shards until then).
    curl -s "http://127.0.0.1:$mport/metrics" |
        grep -E '^kelp_(spin_backoffs|connections_moved_in)_total' >"$RUN_DIR/$name.spin" || true
    stop_pid "$pid" "kelp ($name)"
}

PROBE_RATE=${BENCH_PROBE_RATE-5000}
if [[ -n $PROBE_RATE ]]; then
    probe_venv
fi

# run_probe NAME: a fresh kelp with no flags, the real client in open loop against it.
run_probe() {
    local name=$1 port mport pid
    port=$(free_port)
    mport=$(free_port)
    "$KELP_BIN" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" \
        >"$RUN_DIR/$name.kelp.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$port" "$pid" "kelp ($name)" 30 "$RUN_DIR/$name.kelp.log" || return 0
    echo "bench: $name: kelp; rdkafka-probe --rate $PROBE_RATE" >&2
    if "$VENV/bin/python" scripts/rdkafka-probe.py --bootstrap "127.0.0.1:$port" \
        --topic "bench-$name" --rate "$PROBE_RATE" --duration 10 --warmup 2 --label "$name" \
        >"$RUN_DIR/$name.json.tmp" 2>"$RUN_DIR/$name.log"; then
        mv "$RUN_DIR/$name.json.tmp" "$RUN_DIR/$name.json"
        tail -n 1 "$RUN_DIR/$name.log" >&2
    else
        note "$name failed: $(tail -n 1 "$RUN_DIR/$name.log")"
    fi
    curl -s "http://127.0.0.1:$mport/metrics" |
        grep -E '^kelp_(spin_backoffs|connections_moved_in)_total' >"$RUN_DIR/$name.spin" || true
    stop_pid "$pid" "kelp ($name)"
}

for round in $(seq 1 "$ROUNDS"); do
    banner "bench-defaults: round $round of $ROUNDS"
    run_one "pinned-$round" "--cores $BROKER_CORE --spin-us 2000 --dedicated-cores" \
        "--core $CLIENT_CORE"
    run_one "defaults-$round" "" ""
    run_one "spin-always-$round" "--dedicated-cores" ""
    if [[ -n $PROBE_RATE ]]; then
        run_probe "rdkafka-$round"
    fi
done

python3 - "$RUN_DIR" "$ROUNDS" "$REPORT" "$NOTES" "$(nproc)" "$(uname -r)" <<'EOF'
import json, os, statistics, sys
run_dir, rounds, report, notes, cpus, kernel = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
configs = [
    ("pinned", "kelp --cores 0 --spin-us 2000 --dedicated-cores; loadtest --core 1"),
    ("defaults", "kelp (no flags); loadtest produce (no flags)"),
    ("spin-always", "kelp --dedicated-cores (spins without the shared-core backoff); loadtest (no flags)"),
]
runs = {c: [] for c, _ in configs}
for c, _ in configs:
    for r in range(1, rounds + 1):
        path = os.path.join(run_dir, f"{c}-{r}.json")
        spin = os.path.join(run_dir, f"{c}-{r}.spin")
        backoffs, moves = "?", "?"
        if os.path.exists(spin):
            lines = [l.split() for l in open(spin) if l.strip()]
            b = [float(v) for k, v in lines if k.startswith("kelp_spin_backoffs_total")]
            m = [float(v) for k, v in lines if k.startswith("kelp_connections_moved_in_total")]
            backoffs = f"{b[0]:.0f}" if b else "?"
            moves = f"{sum(m):.0f}" if m else "?"
        if os.path.exists(path):
            d = json.load(open(path))
            runs[c].append((r, d["p50_us"], d["p99_us"], d["records_per_sec"], backoffs, moves))
lines = [f"# kelp's defaults against the pinned reference ({os.path.basename(run_dir)} UTC)", "",
         f"Machine: {cpus} CPUs, Linux {kernel}. `scripts/bench-defaults.sh`: {rounds} rounds, "
         "each a fresh kelp per configuration, loadtest's default workload (1 connection, 1 in "
         "flight, 100 B records, acks=1, closed loop).", "",
         "| configuration | round | p50 us | p99 us | records/s | spin backoffs | connections moved |",
         "|---|---|---|---|---|---|---|"]
for c, _ in configs:
    for r, p50, p99, rps, b, m in runs[c]:
        lines.append(f"| {c} | {r} | {p50:.0f} | {p99:.0f} | {rps:,.0f} | {b} | {m} |")
lines += ["", "Connections moved: 1 where the kernel gave the connection to the shard that does not own "
          "the partition (its requests crossed shards until it moved), 0 where it landed on the owner."]
lines += ["", "Configurations:", ""] + [f"- {c}: {what}" for c, what in configs]
if runs["pinned"]:
    ref_p99 = statistics.median(x[2] for x in runs["pinned"])
    ref_rps = statistics.median(x[3] for x in runs["pinned"])
    lines += ["", f"Pinned reference (median of {len(runs['pinned'])}): p99 {ref_p99:.0f} us, "
              f"{ref_rps:,.0f} records/s.", "",
              "| configuration | worst p99 / pinned p99 | worst records/s / pinned | runs within 10x p99 and 0.3x records/s |",
              "|---|---|---|---|"]
    for c in ("defaults", "spin-always"):
        rs = runs[c]
        if not rs:
            continue
        worst_p99 = max(x[2] for x in rs) / ref_p99
        worst_rps = min(x[3] for x in rs) / ref_rps
        ok = sum(1 for x in rs if x[2] <= 10 * ref_p99 and x[3] >= 0.3 * ref_rps)
        lines.append(f"| {c} | {worst_p99:.1f}x | {worst_rps:.2f}x | {ok} of {len(rs)} |")
probe = []
for r in range(1, rounds + 1):
    path = os.path.join(run_dir, f"rdkafka-{r}.json")
    if os.path.exists(path):
        probe.append((r, json.load(open(path))))
if probe:
    lines += ["", f"Real client, kelp with no flags: librdkafka (confluent-kafka, `scripts/rdkafka-probe.py`) in "
              f"open loop at {probe[0][1]['rate']:,.0f} records/s, 1 x 100 B record per request, acks=1, "
              "not pinned; latency from the time a record was due to its delivery report.", "",
              "| round | p50 us | p90 us | p99 us | p99.9 us | records/s | errors |",
              "|---|---|---|---|---|---|---|"]
    for r, d in probe:
        lines.append(f"| {r} | {d['p50_us']:.0f} | {d['p90_us']:.0f} | {d['p99_us']:.0f} | "
                     f"{d['p999_us']:.0f} | {d['records_per_sec']:,.0f} | {d['errors']} |")
problems = open(notes).read().strip() if os.path.exists(notes) else ""
if problems:
    lines += ["", "Notes:", ""] + [f"- {l}" for l in problems.splitlines()]
text = "\n".join(lines) + "\n"
open(report, "w").write(text)
print(text)
EOF
echo "bench-defaults: report in $REPORT"
