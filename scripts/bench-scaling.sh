#!/usr/bin/env bash
# How kelp's latency and memory grow with connections and with partitions, on this machine.
#
# Two sweeps, each point on a fresh kelp (one shard, pinned to $BENCH_BROKER_CORE, --spin-us as
# in scripts/bench-peers.sh) driven by `loadtest produce` pinned to $BENCH_CLIENT_CORE:
#   connections: 1, 100, 1000 connections, topic of $BENCH_FIXED_PARTITIONS (8) partitions
#   partitions:  topic of 1, 1000, 10000 partitions, $BENCH_FEW_CONNECTIONS (4) connections
# Every point: 100-byte records, 1 record per request, acks=1, the same open-loop rate in total
# ($BENCH_RATE records/s, 16 requests in flight per connection at most), with
# --spread-partitions so that the connections cycle through every partition of the topic. The
# rate is one every point sustains easily (kelp does ~80,000 requests/s on one connection
# closed loop here), so p99 compares the same offered load at every point. Then a closed-loop
# line (1 request in flight per connection, as fast as it goes) on the same kelp.
#
# Measured per point: p50/p99/p99.9/max latency, records/s and errors (loadtest --json); kelp's
# VmRSS right after startup, after the topic is created, its peak while the open-loop run goes
# (sampled every 0.25 s; the connections are open then) and after it; kelp's CPU (all threads)
# and the CPU other processes of the machine took during the run (the noise indicator).
#
# Output: bench-results/scaling-<date>.md (printed at the end); raw JSON/.hgrm/logs/RSS samples
# under target/bench-scaling/<date>/.
#
# The machine may be shared: what other processes take of the CPU is measured before and
# during every point, a point disturbed by them (more than $BENCH_QUIET_BELOW % of a core during
# the run) is run again after waiting for a quieter moment while the time budget lasts, and the
# report shows each point's least disturbed run.
#
# Usage: scripts/bench-scaling.sh [--quick]
#   --quick   short durations, no retries, no waiting (a smoke run, about a minute)
# Environment:
#   BENCH_DURATION (15s; quick 3s), BENCH_WARMUP (3s; quick 1s)  open-loop run per point
#   BENCH_CLOSED_DURATION (8s; quick 2s), BENCH_CLOSED_WARMUP (2s; quick 1s); 0s = no closed loop
#   BENCH_RATE (10000)                 open-loop records/s over all connections
#   BENCH_CONNECTIONS ("1 100 1000"), BENCH_PARTITIONS ("1 1000 10000")  the sweeps ("" skips one)
#   BENCH_FIXED_PARTITIONS (8)         partitions of the topic in the connections sweep
#   BENCH_FEW_CONNECTIONS (4)          connections in the partitions sweep
#   BENCH_REPEAT (1)                   runs of each sweep (interleaved)
#   BENCH_RETRIES (2; quick 0)         extra runs of a point that other processes disturbed
#   BENCH_QUIET_BELOW (25)             "quiet": other processes use at most this % of one core
#   BENCH_QUIET_WAIT (20; quick 0)     before a point, wait up to this many seconds for quiet
#   BENCH_BUDGET (540)                 seconds after which no more waiting or retrying is done
#                                      (the sweeps themselves take about 3.5 minutes)
#   BENCH_BROKER_CORE (0), BENCH_CLIENT_CORE (1)
#   BENCH_KELP_SPIN_US (2000)          kelp's --spin-us (as bench-peers: the broker has its core)
#   BENCH_CLIENT_SPIN (1)              0 = loadtest sleeps in ppoll (--no-spin) instead of spinning
#   KELP_BIN, LOADTEST_BIN             use these binaries instead of `cargo build --release`
#   BENCH_NOTE                         a line added to the report's machine section
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/bench-lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/bench-lib.sh"

QUICK=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $arg (see --help)" ;;
    esac
done
if ((QUICK)); then
    DURATION=${BENCH_DURATION:-3s} WARMUP=${BENCH_WARMUP:-1s}
    CLOSED_DURATION=${BENCH_CLOSED_DURATION:-2s} CLOSED_WARMUP=${BENCH_CLOSED_WARMUP:-1s}
    RETRIES=${BENCH_RETRIES:-0} QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
else
    DURATION=${BENCH_DURATION:-15s} WARMUP=${BENCH_WARMUP:-3s}
    CLOSED_DURATION=${BENCH_CLOSED_DURATION:-8s} CLOSED_WARMUP=${BENCH_CLOSED_WARMUP:-2s}
    RETRIES=${BENCH_RETRIES:-2} QUIET_WAIT=${BENCH_QUIET_WAIT:-20}
fi
REPEAT=${BENCH_REPEAT:-1}
QUIET_BELOW=${BENCH_QUIET_BELOW:-25}
BUDGET=${BENCH_BUDGET:-540}
RATE=${BENCH_RATE:-10000}
CONNECTIONS=${BENCH_CONNECTIONS-"1 100 1000"}
PARTITIONS=${BENCH_PARTITIONS-"1 1000 10000"}
FIXED_PARTITIONS=${BENCH_FIXED_PARTITIONS:-8}
FEW_CONNECTIONS=${BENCH_FEW_CONNECTIONS:-4}
BROKER_CORE=${BENCH_BROKER_CORE:-0}
CLIENT_CORE=${BENCH_CLIENT_CORE:-1}
SPIN_US=${BENCH_KELP_SPIN_US:-2000}
CLIENT_SPIN=${BENCH_CLIENT_SPIN:-1}
IN_FLIGHT=16 # open loop: enough that a slow response does not hold back the schedule

STAMP=$(date -u +%Y-%m-%d-%H%M)
RESULTS_DIR=$ROOT/bench-results
RUN_DIR=$ROOT/target/bench-scaling/$STAMP
mkdir -p "$RESULTS_DIR" "$RUN_DIR"
bench_notes "$RUN_DIR"

# --- binaries and limits -------------------------------------------------------------------------
bench_binaries
# One descriptor per connection on each side, plus kelp's own (listener, io_uring, eventfds).
max_conns=$FEW_CONNECTIONS
for c in $CONNECTIONS; do ((c > max_conns)) && max_conns=$c; done
need_fds=$((max_conns + 256))
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < need_fds)); then
    ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null || true
    [[ $(ulimit -n) == unlimited ]] || (($(ulimit -n) >= need_fds)) ||
        die "need $need_fds file descriptors for $max_conns connections; ulimit -n is $(ulimit -n) (hard $(ulimit -H -n))"
fi
# kelp refuses connections past --max-connections (default 10000); pass it explicitly anyway.
KELP_MAX_CONNECTIONS=$((max_conns + 64 > 10000 ? max_conns + 64 : 10000))
CLK_TCK=$(getconf CLK_TCK)

# --- machine -------------------------------------------------------------------------------------
{
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores ($(lscpu | sed -n 's/^Hypervisor vendor: *//p') guest)"
    echo "- kernel: $(uname -r); memory: $(free -g | awk '/^Mem:/{print $2}') GiB"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- placement: kelp (1 shard) on core $BROKER_CORE with --spin-us $SPIN_US, loadtest on core $CLIENT_CORE ($([[ $CLIENT_SPIN == 1 ]] && echo busy-polling || echo 'sleeping in ppoll'))"
    echo "- per point: fresh kelp; ${WARMUP} warm-up + ${DURATION} open loop at $RATE records/s in total; then ${CLOSED_WARMUP} + ${CLOSED_DURATION} closed loop; $REPEAT run(s) of each sweep; up to $RETRIES retries of a point where other processes took over $QUIET_BELOW % of a core, waiting up to ${QUIET_WAIT} s for quiet, within a ${BUDGET} s budget"
    echo "- limits: ulimit -n $(ulimit -n), ulimit -l $(ulimit -l) KiB, kelp --max-connections $KELP_MAX_CONNECTIONS"
    echo "- kelp binary: $KELP_BIN (built $(date -u -r "$KELP_BIN" '+%Y-%m-%d %H:%M UTC')); repo at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src loadtest Cargo.toml 2>/dev/null || echo ' with uncommitted changes in src/, loadtest/ or Cargo.toml')"
    if [[ -n ${BENCH_NOTE:-} ]]; then echo "- note: $BENCH_NOTE"; fi
} >"$RUN_DIR/machine.md"

# --- measuring helpers ---------------------------------------------------------------------------
rss_kib() { # pid
    awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
# cpu_ticks PID: utime + stime of all its threads, in clock ticks.
cpu_ticks() {
    local f sum=0 fields
    for f in /proc/"$1"/task/*/stat; do
        fields=$(sed 's/^.*) //' "$f" 2>/dev/null) || continue
        # After "pid (comm) ": state is field 1, utime 12, stime 13.
        sum=$((sum + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$sum"
}
# thread_cpu PID: "name=ticks" per thread, for the raw record.
thread_cpu() {
    local f
    for f in /proc/"$1"/task/*/stat; do
        sed 's/^[0-9]* (\(.*\)) \(.*\)$/\1 \2/' "$f" 2>/dev/null |
            awk '{printf "%s=%d ", $1, $13 + $14}'
    done
    echo
}
vm_busy_ticks() { # all CPUs: user + nice + system + irq + softirq + steal
    awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}
# sample_rss KELP_PID WATCH_PID OUT: kelp's VmRSS (KiB) and WATCH_PID's CPU ticks every 0.25 s
# while WATCH_PID lives.
sample_rss() {
    local lt
    while kill -0 "$2" 2>/dev/null; do
        lt=$(awk '{print $14 + $15}' "/proc/$2/stat" 2>/dev/null || echo 0)
        echo "$(date +%s.%N) $(rss_kib "$1") $lt" >>"$3"
        sleep 0.25
    done
}

# machine_busy_pct: CPU the machine used over the next second, in % of one core (nothing of
# this script runs meanwhile, so it is all other processes); repeated until it is at most
# BENCH_QUIET_BELOW, for up to BENCH_QUIET_WAIT seconds within the budget.
BUDGET_END=$((SECONDS + BUDGET))
machine_busy_pct() {
    local deadline=$((SECONDS + QUIET_WAIT)) b0 b1 busy
    ((deadline < BUDGET_END)) || deadline=$BUDGET_END
    while :; do
        b0=$(vm_busy_ticks)
        sleep 1
        b1=$(vm_busy_ticks)
        busy=$(((b1 - b0) * 100 / CLK_TCK))
        if ((busy <= QUIET_BELOW || SECONDS >= deadline)); then
            echo "$busy"
            return
        fi
    done
}

CLIENT_FLAGS=(--core "$CLIENT_CORE" --json)
[[ $CLIENT_SPIN == 1 ]] || CLIENT_FLAGS+=(--no-spin)
LOAD=(--record-bytes 100 --batch-records 1 --acks 1 --spread-partitions)

# run_point SWEEP CONNS PARTS RUN: one point on a fresh kelp; results in $RUN_DIR/NAME.*;
# sets OTHERS_PCT (other processes' CPU during the run, % of one core; 999 if it failed).
OTHERS_PCT=0
run_point() {
    local sweep=$1 conns=$2 parts=$3 rep=$4
    local name="$sweep-c$conns-p$parts-$rep" port pid bootstrap t0 t1 lpid
    local rss_start rss_topic rss_after kelp0 kelp1 vm0 vm1 wall0 wall1 lt_ticks
    OTHERS_PCT=999
    local meta=$RUN_DIR/$name.meta busy_before
    busy_before=$(machine_busy_pct)
    echo "bench: $name: $conns connections, $parts partitions (machine busy before: $busy_before%)" >&2
    port=$(free_port)
    bootstrap=127.0.0.1:$port
    "$KELP_BIN" --listen "$bootstrap" --cores "$BROKER_CORE" --spin-us "$SPIN_US" \
        --max-connections "$KELP_MAX_CONNECTIONS" >"$RUN_DIR/$name.kelp.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_port "$port" "$pid" "kelp ($name)" 30 "$RUN_DIR/$name.kelp.log"; then
        stop_pid "$pid" kelp
        return 0
    fi
    sleep 0.5
    rss_start=$(rss_kib "$pid")
    # Create the topic (CreateTopics with all partitions, then Metadata until every partition
    # has a leader) with a 1-record produce to partition 0.
    t0=$(date +%s.%N)
    if ! "$LOADTEST" produce --bootstrap "$bootstrap" --topic scaling --partitions "$parts" \
        --records 1 --warmup 0s --quiet >"$RUN_DIR/$name.setup.log" 2>&1; then
        note "$name: creating a topic of $parts partitions failed: $(tail -n 1 "$RUN_DIR/$name.setup.log")"
        stop_pid "$pid" kelp
        return 0
    fi
    t1=$(date +%s.%N)
    sleep 0.5
    rss_topic=$(rss_kib "$pid")
    # The measured open-loop run, with kelp's RSS sampled while the connections are open.
    kelp0=$(cpu_ticks "$pid")
    vm0=$(vm_busy_ticks)
    wall0=$(date +%s.%N)
    "$LOADTEST" produce --bootstrap "$bootstrap" --topic scaling --partitions "$parts" \
        --connections "$conns" --in-flight "$IN_FLIGHT" --rate "$RATE" "${LOAD[@]}" \
        --warmup "$WARMUP" --duration "$DURATION" "${CLIENT_FLAGS[@]}" \
        --label "$conns conn, $parts partitions" --hgrm "$RUN_DIR/$name.hgrm" \
        >"$RUN_DIR/$name.json.tmp" 2>"$RUN_DIR/$name.log" &
    lpid=$!
    STARTED_PIDS+=("$lpid")
    : >"$RUN_DIR/$name.rss"
    sample_rss "$pid" "$lpid" "$RUN_DIR/$name.rss"
    if wait "$lpid"; then
        mv "$RUN_DIR/$name.json.tmp" "$RUN_DIR/$name.json"
        sed -n '/^loadtest produce/,$p' "$RUN_DIR/$name.log" | grep -v '^ *$' | sed -n '3,5p' >&2
    else
        rm -f "$RUN_DIR/$name.json.tmp"
        note "$name: loadtest failed: $(tail -n 1 "$RUN_DIR/$name.log")"
    fi
    wall1=$(date +%s.%N)
    vm1=$(vm_busy_ticks)
    kelp1=$(cpu_ticks "$pid")
    thread_cpu "$pid" >"$RUN_DIR/$name.threads"
    sleep 0.5
    rss_after=$(rss_kib "$pid")
    # The closed-loop line on the same kelp (its topic now holds the open-loop records).
    if [[ $CLOSED_DURATION != 0s && $CLOSED_DURATION != 0 ]] && kill -0 "$pid" 2>/dev/null; then
        if ! "$LOADTEST" produce --bootstrap "$bootstrap" --topic scaling --partitions "$parts" \
            --connections "$conns" --in-flight 1 "${LOAD[@]}" \
            --warmup "$CLOSED_WARMUP" --duration "$CLOSED_DURATION" "${CLIENT_FLAGS[@]}" \
            --label "$conns conn, $parts partitions, closed loop" \
            >"$RUN_DIR/$name.closed.json.tmp" 2>"$RUN_DIR/$name.closed.log"; then
            rm -f "$RUN_DIR/$name.closed.json.tmp"
            note "$name: closed-loop loadtest failed: $(tail -n 1 "$RUN_DIR/$name.closed.log")"
        else
            mv "$RUN_DIR/$name.closed.json.tmp" "$RUN_DIR/$name.closed.json"
        fi
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        note "$name: kelp exited during the run: $(tail -n 1 "$RUN_DIR/$name.kelp.log")"
    fi
    stop_pid "$pid" kelp
    lt_ticks=$(awk 'END{print $3 + 0}' "$RUN_DIR/$name.rss")
    if [[ -f $RUN_DIR/$name.json ]]; then
        OTHERS_PCT=$(awk -v vm=$((vm1 - vm0)) -v k=$((kelp1 - kelp0)) -v l="$lt_ticks" \
            -v t="$CLK_TCK" -v w="$(echo "$wall1 - $wall0" | bc -l)" \
            'BEGIN{o = (vm - k - l) * 100 / t / w; printf "%d", (o < 0 ? 0 : o)}')
    fi
    {
        echo "sweep=$sweep connections=$conns partitions=$parts run=$rep"
        echo "rss_start_kib=$rss_start rss_topic_kib=$rss_topic rss_after_kib=$rss_after"
        echo "topic_setup_s=$(echo "$t1 - $t0" | bc -l)"
        echo "wall_s=$(echo "$wall1 - $wall0" | bc -l) clk_tck=$CLK_TCK"
        echo "kelp_cpu_ticks=$((kelp1 - kelp0)) vm_busy_ticks=$((vm1 - vm0)) busy_before_pct=$busy_before"
    } | tr ' ' '\n' >"$meta"
    echo "bench: $name: RSS start $((rss_start / 1024)) MiB, after topic $((rss_topic / 1024)) MiB, peak $(($(awk 'BEGIN{m=0} $2>m{m=$2} END{print m}' "$RUN_DIR/$name.rss") / 1024)) MiB, after $((rss_after / 1024)) MiB; other processes took $OTHERS_PCT% of a core" >&2
}

# point SWEEP CONNS PARTS REP: run_point, again (up to $RETRIES times) while other processes
# disturbed it and the budget lasts.
point() {
    local attempt=1 n=1
    while :; do
        # A count listed twice in a sweep gets runs of its own (the report pools them).
        while [[ -e $RUN_DIR/$1-c$2-p$3-r$4-$n.meta ]]; do n=$((n + 1)); done
        run_point "$1" "$2" "$3" "r$4-$n"
        if ((OTHERS_PCT <= QUIET_BELOW || attempt > RETRIES || SECONDS >= BUDGET_END)); then
            return 0
        fi
        echo "bench: other processes took $OTHERS_PCT% of a core during the run; again" >&2
        attempt=$((attempt + 1))
    done
}

command -v bc >/dev/null || die "bc is needed (apt-get install bc)"
for ((rep = 1; rep <= REPEAT; rep++)); do
    if [[ -n $CONNECTIONS ]]; then
        banner "bench: connections sweep ($rep/$REPEAT): $CONNECTIONS connections, $FIXED_PARTITIONS partitions"
        for c in $CONNECTIONS; do point conns "$c" "$FIXED_PARTITIONS" "$rep"; done
    fi
    if [[ -n $PARTITIONS ]]; then
        banner "bench: partitions sweep ($rep/$REPEAT): $PARTITIONS partitions, $FEW_CONNECTIONS connections"
        for p in $PARTITIONS; do point parts "$FEW_CONNECTIONS" "$p" "$rep"; done
    fi
done

# --- report --------------------------------------------------------------------------------------
banner "bench: report"
REPORT=$RESULTS_DIR/scaling-$STAMP.md
python3 - "$RUN_DIR" "$STAMP" "$RATE" "$CONNECTIONS" "$PARTITIONS" "$FIXED_PARTITIONS" \
    "$FEW_CONNECTIONS" "$QUIET_BELOW" >"$REPORT" <<'PY'
import json, os, sys, glob
run_dir, stamp, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn_points = [int(x) for x in sys.argv[4].split()]
part_points = [int(x) for x in sys.argv[5].split()]
fixed_parts, few_conns, quiet_below = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def load_meta(path):
    m = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    m[k] = float(v) if v.replace(".", "", 1).lstrip("-").isdigit() else v
    except OSError:
        return None
    return m

def rss_series(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    out.append((float(parts[0]), int(parts[1]), int(parts[2])))
    except (OSError, ValueError):
        pass
    return out

def runs(sweep, conns, parts):
    """Every repetition of one point, as dicts."""
    out = []
    for meta_path in sorted(glob.glob(os.path.join(run_dir, f"{sweep}-c{conns}-p{parts}-r*.meta"))):  # every run and retry
        base = meta_path[:-len(".meta")]
        meta = load_meta(meta_path)
        r = load_json(base + ".json")
        if meta is None or r is None:
            continue
        series = rss_series(base + ".rss")
        tck = meta.get("clk_tck", 100) or 100
        wall = meta.get("wall_s", 0) or 1
        lt_ticks = max((s[2] for s in series), default=0)
        kelp_cpu = meta["kelp_cpu_ticks"] / tck / wall
        vm_cpu = meta["vm_busy_ticks"] / tck / wall
        out.append({
            "r": r, "meta": meta,
            "closed": load_json(base + ".closed.json"),
            "rss_start": meta["rss_start_kib"] / 1024,
            "rss_topic": meta["rss_topic_kib"] / 1024,
            "rss_peak": max((s[1] for s in series), default=0) / 1024,
            "rss_after": meta["rss_after_kib"] / 1024,
            "kelp_cpu": kelp_cpu,
            "others_cpu": max(0.0, vm_cpu - kelp_cpu - lt_ticks / tck / wall),
            "setup_s": meta.get("topic_setup_s", 0),
            "busy_before": meta.get("busy_before_pct", 0) / 100,
        })
    return out

def f(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"

def pick(rs):
    """The run least disturbed by other processes (then the lowest p99)."""
    return min(rs, key=lambda x: (round(x["others_cpu"], 1), x["r"]["p99_us"])) if rs else None

def sweep_table(sweep, unit, points, key_of):
    rows, picked = [], []
    for n in points:
        conns, parts = key_of(n)
        rs = runs(sweep, conns, parts)
        b = pick(rs)
        picked.append((n, b, rs))
    base = next(((n, b) for n, b, _ in picked if b), None)
    header = (f"| {unit} | p50 us | p99 us | p99.9 us | max us | p99 of each run (others' CPU) | records/s | errors | "
              f"RSS start MiB | RSS after topic MiB | RSS peak in run MiB | RSS after run MiB | "
              f"{'RSS per connection KiB' if unit == 'connections' else 'RSS per partition KiB'} | "
              f"p99 / p99({base[0] if base else '-'}) | {unit} ratio | kelp CPU | others' CPU before / during |")
    ncols = header.count("|") - 1
    rows += [header, "|" + "---:|" * ncols]
    for n, b, rs in picked:
        if b is None:
            rows.append(f"| {n:,} | failed (see notes) |" + " |" * (ncols - 2))
            continue
        r = b["r"]
        per = ratio = nratio = "-"
        if base and base[1] is not b and n != base[0]:
            bb = base[1]
            if unit == "connections":
                # Connection buffers live while the connections are open: peak during the run.
                per = f"{(b['rss_peak'] - bb['rss_peak']) * 1024 / (n - base[0]):,.1f}"
            else:
                # Partition state exists from creation on: after the topic, then peak in the run.
                per = (f"{(b['rss_topic'] - bb['rss_topic']) * 1024 / (n - base[0]):,.2f} idle, "
                       f"{(b['rss_peak'] - bb['rss_peak']) * 1024 / (n - base[0]):,.2f} in run")
            ratio = f"{r['p99_us'] / bb['r']['p99_us']:.2f}"
            nratio = f"{n / base[0]:,.0f}"
        elif base and n == base[0]:
            ratio, nratio = "1.00", "1"
        each = ", ".join(f"{x['r']['p99_us']:,.0f} ({x['others_cpu'] * 100:.0f}%)" for x in rs)
        errs = r["errors"]
        rows.append(f"| {n:,} | {f(r['p50_us'])} | {f(r['p99_us'])} | {f(r['p999_us'])} | {f(r['max_us'])} | {each} | "
                    f"{f(r['records_per_sec'], 0)} | {errs} | {f(b['rss_start'])} | {f(b['rss_topic'])} | "
                    f"{f(b['rss_peak'])} | {f(b['rss_after'])} | {per} | {ratio} | {nratio} | "
                    f"{b['kelp_cpu'] * 100:.0f}% | {b['busy_before'] * 100:.0f}% / {b['others_cpu'] * 100:.0f}% |")
    return rows, picked

def closed_table(unit, picked):
    rows = [f"| {unit} | records/s | p50 us | p99 us | p99.9 us | errors |", "|---:|---:|---:|---:|---:|---:|"]
    for n, b, rs in picked:
        c = b and b["closed"]
        if not c:
            continue
        rows.append(f"| {n:,} | {f(c['records_per_sec'], 0)} | {f(c['p50_us'])} | {f(c['p99_us'])} | {f(c['p999_us'])} | {c['errors']} |")
    return rows if len(rows) > 2 else []

MEM_LABEL = {"rss_peak": "peak RSS in the run", "rss_topic": "RSS after creating the topic"}

def verdict(unit, picked, mem_keys):
    """At most linear: from one point to the next, the p99 ratio stays within the ratio of the
    counts, and memory per added unit does not rise (1.5x slack and 2 MiB, for noise)."""
    pts = [(n, b) for n, b, _ in picked if b]
    if len(pts) < 2:
        return [f"- {unit}: not enough points for a verdict"]
    lat_ok, lat_why = True, []
    for (n0, b0), (n1, b1) in zip(pts, pts[1:]):
        r = b1["r"]["p99_us"] / b0["r"]["p99_us"]
        lat_why.append(f"{n0:,} -> {n1:,}: p99 x{r:.2f} for {unit} x{n1 / n0:,.0f}")
        lat_ok &= r <= n1 / n0
    disturbed = [f"{n:,} ({b['others_cpu'] * 100:.0f}%)" for n, b in pts if b["others_cpu"] * 100 > quiet_below]
    caveat = (f"; not reliable: other processes took over {quiet_below}% of a core during the runs at "
              f"{', '.join(disturbed)} {unit}" if disturbed else "")
    lines = [f"- {unit}, p99: **{'at most linear' if lat_ok else 'FASTER than linear'}** ({'; '.join(lat_why)}{caveat})"]
    for mem_key in mem_keys:
        mem_ok, mem_why, prev_slope = True, [], None
        for (na, ba), (nb, bb) in zip(pts, pts[1:]):
            grew = bb[mem_key] - ba[mem_key]  # MiB
            slope = grew * 1024 / (nb - na)  # KiB per unit
            mem_why.append(f"{na:,} -> {nb:,}: {grew:+,.1f} MiB, {slope:,.2f} KiB per {unit[:-1]}")
            if prev_slope is not None:
                expected = max(prev_slope, 0) * (nb - na) / 1024
                if slope > 1.5 * max(prev_slope, 0) and grew - expected > 2:
                    mem_ok = False
            prev_slope = slope
        lines.append(f"- {unit}, {MEM_LABEL[mem_key]}: **{'at most linear' if mem_ok else 'FASTER than linear'}** "
                     f"({'; '.join(mem_why)})")
    return lines

with open(os.path.join(run_dir, "machine.md")) as m:
    machine = m.read().rstrip()
out = [f"# kelp scaling: connections and partitions, {stamp}", "", "## Machine", "", machine, "",
       "Latency is per Produce request, in microseconds, from its scheduled send time (open loop: "
       "coordinated omission corrected) to the response read. 100-byte records, 1 record per request, "
       f"acks=1, {rate:,.0f} records/s in total at every point, the connections cycling through every "
       "partition of the topic (`--spread-partitions`). RSS is kelp's VmRSS; the run's stored records "
       "(the embedded backend keeps them in memory) are the same at every point of a sweep, so differences "
       "between points are the cost of the connections or partitions. kelp CPU is all its threads over the "
       "run (a spinning shard shows ~100% of a core whenever it gets one); others' CPU is what the rest of the "
       "machine (other processes, e.g. other builds) took in the second before the point and during the run, "
       "in % of one core (the machine has 2): anything much above 0 disturbs the tails. Each row is the "
       "point's least disturbed run; the p99 of every run is listed with the others' CPU during it.", ""]
verdicts = []
if conn_points:
    rows, picked = sweep_table("conns", "connections", conn_points, lambda n: (n, fixed_parts))
    out += [f"## Connections sweep ({fixed_parts} partitions)", ""] + rows + [""]
    ct = closed_table("connections", picked)
    if ct:
        out += ["Closed loop on the same kelp right after (1 request in flight per connection, as fast as it goes):", ""] + ct + [""]
    verdicts += verdict("connections", picked, ["rss_peak"])
if part_points:
    rows, picked = sweep_table("parts", "partitions", part_points, lambda n: (few_conns, n))
    out += [f"## Partitions sweep ({few_conns} connections)", ""] + rows + [""]
    setups = [f"{n:,}: {b['setup_s']:.2f} s" for n, b, _ in picked if b]
    if setups:
        out += ["Topic creation (CreateTopics + Metadata until every partition has a leader + 1 produce): "
                + "; ".join(setups) + ".", ""]
    ct = closed_table("partitions", picked)
    if ct:
        out += ["Closed loop on the same kelp right after (1 request in flight per connection, as fast as it goes):", ""] + ct + [""]
    verdicts += verdict("partitions", picked, ["rss_topic", "rss_peak"])
out += ["## Verdict", "", "Rule: from one point to the next, p99 may grow at most by the ratio of the counts, and "
        "the memory per added connection/partition may not rise by more than 1.5x (and 2 MiB) over the previous step.", ""]
out += verdicts + [""]
problems = []
for path in sorted(glob.glob(os.path.join(run_dir, "*.json"))):
    r = load_json(path)
    if r and (r.get("errors") or r.get("fatal") or r.get("warmup_errors")):
        kinds = "; ".join(f"{v} x {k}" for k, v in r.get("error_kinds", {}).items())
        problems.append(f"{os.path.basename(path)}: {r.get('errors')} errors, {r.get('warmup_errors', 0)} in warm-up {kinds} {' '.join(r.get('fatal', []))}".rstrip())
with open(os.path.join(run_dir, "notes.txt")) as n:
    problems += [l.strip() for l in n if l.strip()]
if problems:
    out += ["## Notes", ""] + [f"- {l}" for l in problems] + [""]
out += [f"Raw results (JSON, .hgrm, RSS samples, per-thread CPU, logs): target/bench-scaling/{stamp}/ (not committed).", ""]
print("\n".join(out))
PY
banner "bench: $REPORT"
cat "$REPORT"
