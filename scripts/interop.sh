#!/usr/bin/env bash
# Interop matrix: run real third-party Kafka clients against the real kelp binary.
# See tests/interop/README.md for the contract every suite follows.
#
# Usage: scripts/interop.sh
# Environment:
#   KELP_BIN                  use this kelp binary instead of `cargo build --release`
#   KELP_INTEROP_SUITES       space-separated suite names (folders of tests/interop/) to run;
#                             default: every tests/interop/*/run.sh
#   KELP_INTEROP_REQUIRE_ALL  1 = any skip is an error too
#   KELP_INTEROP_TIMEOUT      per-suite timeout in seconds (default 900)
#   KELP_INTEROP_READY_TIMEOUT  seconds to wait for kelp to accept connections (default 60)
#   RUST_LOG                  kelp's log filter (default info)
# Output: a client x scenario table on stdout and in target/interop/table.md; logs of kelp
# and of every suite in a temp dir (printed; target/interop/last-run links to it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

OUT_DIR=$ROOT/target/interop
SUITE_TIMEOUT=${KELP_INTEROP_TIMEOUT:-900}
READY_TIMEOUT=${KELP_INTEROP_READY_TIMEOUT:-60}
REQUIRE_ALL=${KELP_INTEROP_REQUIRE_ALL:-0}
mkdir -p "$OUT_DIR"
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kelp-interop.XXXXXX")
ln -sfn "$RUN_DIR" "$OUT_DIR/last-run"
RESULTS=$RUN_DIR/results.tsv   # suite <TAB> RESULT|client|scenario|status|detail
SUITES_TSV=$RUN_DIR/suites.tsv # suite <TAB> exit <TAB> seconds <TAB> log
PROBLEMS=$RUN_DIR/problems.txt # one line per harness-level problem
: >"$RESULTS"
: >"$SUITES_TSV"
: >"$PROBLEMS"

# --- kelp binary ---------------------------------------------------------------------------------
if [[ -n ${KELP_BIN:-} ]]; then
    banner "interop: using KELP_BIN=$KELP_BIN"
else
    banner "interop: cargo build --release"
    cargo build --release
    KELP_BIN=$ROOT/target/release/kelp
fi
[[ -x $KELP_BIN ]] || die "kelp binary $KELP_BIN does not exist or is not executable"
KELP_BIN=$(realpath "$KELP_BIN")

# --- suites to run -----------------------------------------------------------------------------
SUITES=()
if [[ -n ${KELP_INTEROP_SUITES:-} ]]; then
    for s in $KELP_INTEROP_SUITES; do
        [[ -f $ROOT/tests/interop/$s/run.sh ]] || die "KELP_INTEROP_SUITES names '$s' but tests/interop/$s/run.sh does not exist"
        SUITES+=("$s")
    done
else
    for f in "$ROOT"/tests/interop/*/run.sh; do
        [[ -f $f ]] || continue
        SUITES+=("$(basename "$(dirname "$f")")")
    done
fi
[[ ${#SUITES[@]} -gt 0 ]] || die "no suites found under tests/interop/*/run.sh"

# --- start kelp ----------------------------------------------------------------------------------
# glommio locks memory for its rings; raise the limit if we may (CI does it as root too).
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
PORT=$(free_port)
BOOTSTRAP=127.0.0.1:$PORT
KELP_LOG=$RUN_DIR/kelp.log
banner "interop: starting kelp on $BOOTSTRAP (log: $KELP_LOG)"
RUST_LOG=${RUST_LOG:-info} "$KELP_BIN" --listen "$BOOTSTRAP" >"$KELP_LOG" 2>&1 &
KELP_PID=$!
KELP_DEAD="" # set to a description once we notice kelp exited on its own
suite_pid=""

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    if [[ -n ${suite_pid:-} ]] && kill -0 "$suite_pid" 2>/dev/null; then
        echo "interop: stopping the running suite (pid $suite_pid)" >&2
        kill -TERM "$suite_pid" 2>/dev/null || true
        wait "$suite_pid" 2>/dev/null || true
    fi
    if [[ -n ${KELP_PID:-} ]] && kill -0 "$KELP_PID" 2>/dev/null; then
        kill -TERM "$KELP_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$KELP_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$KELP_PID" 2>/dev/null; then
            echo "interop: kelp did not exit 10s after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$KELP_PID" 2>/dev/null || true
        fi
        wait "$KELP_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

kelp_alive() { kill -0 "$KELP_PID" 2>/dev/null; }
note_kelp_death() { # context
    local st=0
    wait "$KELP_PID" 2>/dev/null || st=$?
    KELP_DEAD="kelp (pid $KELP_PID) exited on its own with status $st $1"
    echo "$KELP_DEAD" >>"$PROBLEMS"
    echo "interop: $KELP_DEAD; last lines of $KELP_LOG:" >&2
    tail -n 40 "$KELP_LOG" | sed 's/^/  kelp| /' >&2
}

deadline=$((SECONDS + READY_TIMEOUT))
until port_open 127.0.0.1 "$PORT"; do
    if ! kelp_alive; then
        note_kelp_death "before accepting connections"
        die "kelp did not start"
    fi
    if ((SECONDS >= deadline)); then
        tail -n 40 "$KELP_LOG" | sed 's/^/  kelp| /' >&2
        die "kelp did not accept connections on $BOOTSTRAP within ${READY_TIMEOUT}s"
    fi
    sleep 0.1
done
echo "interop: kelp (pid $KELP_PID) accepts connections on $BOOTSTRAP"

# --- run suites ----------------------------------------------------------------------------------
for suite in "${SUITES[@]}"; do
    if [[ -n $KELP_DEAD ]]; then
        echo "suite $suite not run: kelp is dead" >>"$PROBLEMS"
        printf '%s\t%s\t%s\t%s\n' "$suite" "not-run" 0 "-" >>"$SUITES_TSV"
        continue
    fi
    prefix="it-$suite-$(rand_hex)"
    log=$RUN_DIR/$suite.log
    raw=$RUN_DIR/$suite.stdout
    banner "interop: suite $suite (topic prefix $prefix, timeout ${SUITE_TIMEOUT}s, log $log)"
    t0=$SECONDS
    : >"$raw"
    KELP_BOOTSTRAP=$BOOTSTRAP KELP_TOPIC_PREFIX=$prefix KELP_KELP_BIN=$KELP_BIN \
        timeout --kill-after=30 "$SUITE_TIMEOUT" "$ROOT/tests/interop/$suite/run.sh" \
        >"$raw" 2>"$log" </dev/null &
    suite_pid=$!
    # show RESULT lines as they come
    tail -n +1 -f --pid="$suite_pid" "$raw" | grep --line-buffered '^RESULT|' | sed -u 's/^/  /' &
    tail_pid=$!
    # if kelp dies, stop the suite now rather than letting it wait out its timeouts
    while kill -0 "$suite_pid" 2>/dev/null; do
        if ! kelp_alive; then
            echo "interop: kelp died while suite $suite was running; stopping the suite" >&2
            kill -TERM "$suite_pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    st=0
    wait "$suite_pid" || st=$?
    wait "$tail_pid" || true
    dt=$((SECONDS - t0))
    # the suite's other stdout goes to its log too
    if grep -qv '^RESULT|' "$raw"; then
        {
            echo "---- non-RESULT stdout of run.sh ----"
            grep -v '^RESULT|' "$raw"
        } >>"$log"
    fi
    grep '^RESULT|' "$raw" | sed "s/^/$suite\t/" >>"$RESULTS" || true
    printf '%s\t%s\t%s\t%s\n' "$suite" "$st" "$dt" "$log" >>"$SUITES_TSV"
    nres=$(grep -c '^RESULT|' "$raw" || true)
    nfail=$(grep -c '^RESULT|[^|]*|[^|]*|fail|' "$raw" || true)
    if [[ $st -ne 0 ]]; then
        if [[ $st -eq 124 || $st -eq 137 ]]; then
            echo "suite $suite: run.sh timed out after ${SUITE_TIMEOUT}s (exit $st)" >>"$PROBLEMS"
        elif [[ $nfail -eq 0 ]]; then
            echo "suite $suite: run.sh exited $st without reporting a failed scenario" >>"$PROBLEMS"
        fi
    fi
    if [[ $nres -eq 0 ]]; then
        echo "suite $suite: run.sh printed no RESULT line" >>"$PROBLEMS"
    fi
    echo "interop: suite $suite finished in ${dt}s, exit $st, $nres results ($nfail failed)"
    if [[ $st -ne 0 || $nfail -gt 0 ]]; then
        echo "interop: last 40 lines of $log:"
        tail -n 40 "$log" | sed 's/^/  | /'
    fi
    if ! kelp_alive; then
        note_kelp_death "during suite $suite"
    fi
done

if [[ -z $KELP_DEAD ]] && ! kelp_alive; then
    note_kelp_death "after the suites"
fi

# --- report --------------------------------------------------------------------------------------
banner "interop: results"
set +e
python3 - "$RESULTS" "$SUITES_TSV" "$PROBLEMS" "$OUT_DIR/table.md" "$REQUIRE_ALL" "$KELP_LOG" \
    "$RUN_DIR" <<'PY'
import sys

results_f, suites_f, problems_f, md_f, require_all, kelp_log, run_dir = sys.argv[1:8]
require_all = require_all == "1"
CANON = ["create-topic", "roundtrip-none", "roundtrip-gzip", "roundtrip-snappy", "roundtrip-lz4",
         "roundtrip-zstd", "idempotent-100k", "admin"]
RANK = {"fail": 3, "pass": 2, "skip": 1, "n/a": 0}
CELL = {"pass": "pass", "fail": "FAIL", "skip": "skip", "n/a": "n/a", None: "-"}

problems = [l.rstrip("\n") for l in open(problems_f) if l.strip()]
suites = [l.rstrip("\n").split("\t") for l in open(suites_f) if l.strip()]
clients, scenarios, cells, entries = [], [], {}, []
for line in open(results_f):
    suite, _, res = line.rstrip("\n").partition("\t")
    parts = res.split("|", 4)
    if len(parts) != 5 or parts[0] != "RESULT" or parts[3] not in RANK or not parts[1] or not parts[2]:
        problems.append(f"suite {suite}: malformed result line: {res[:200]}")
        continue
    _, client, scen, status, detail = parts
    if status in ("skip", "n/a") and not detail.strip():
        problems.append(f"suite {suite}: {client} {scen} is skip without a reason")
    if client not in clients:
        clients.append(client)
    if scen not in scenarios:
        scenarios.append(scen)
    key = (client, scen)
    if key in cells:
        problems.append(f"suite {suite}: {client} {scen} reported more than once")
    if key not in cells or RANK[status] > RANK[cells[key]]:
        cells[key] = status
    entries.append((suite, client, scen, status, detail))
cols = [s for s in CANON if s in scenarios] + [s for s in scenarios if s not in CANON]
suites_with_results = {e[0] for e in entries}
for s in suites:
    if s[0] not in suites_with_results:
        clients.append(f"({s[0]}: no results)")

rows = [["client"] + cols] + [[c] + [CELL[cells.get((c, s))] for s in cols] for c in clients]
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows[0] else []
out = []
for k, r in enumerate(rows):
    out.append("  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip())
    if k == 0:
        out.append("  ".join("-" * w for w in widths))
print("\n".join(out) if clients else "(no results)")

skips = [e for e in entries if e[3] == "skip"]
fails = [e for e in entries if e[3] == "fail"]
nas = [e for e in entries if e[3] == "n/a"]
if nas:
    print(f"\nNot applicable ({len(nas)}): the client itself cannot do this")
    for suite, client, scen, _, detail in nas:
        print(f"  - {client} / {scen}: {detail}")
if skips:
    print(f"\nSkipped ({len(skips)}):")
    for suite, client, scen, _, detail in skips:
        print(f"  - {client} / {scen}: {detail}")
if fails:
    print(f"\nFailed ({len(fails)}):")
    for suite, client, scen, _, detail in fails:
        print(f"  - {client} / {scen}: {detail}")
print("\nSuites:")
for s in suites:
    name, st, dt, log = (s + ["", "", "", ""])[:4]
    print(f"  - {name}: exit {st}, {dt}s, log {log}")
print(f"  kelp log: {kelp_log}")
if problems:
    print(f"\nProblems ({len(problems)}):")
    for p in problems:
        print(f"  - {p}")

def md_escape(s):
    return s.replace("|", "\\|")

with open(md_f, "w") as f:
    f.write("# kelp interop matrix\n\n")
    if clients:
        f.write("| " + " | ".join(rows[0]) + " |\n")
        f.write("|" + "---|" * len(rows[0]) + "\n")
        for r in rows[1:]:
            f.write("| " + " | ".join(f"**{v}**" if v == "FAIL" else v for v in r) + " |\n")
    else:
        f.write("(no results)\n")
    f.write("\npass = passed, FAIL = failed, skip = could not run here (reason below), "
            "n/a = the client cannot do this (reason below), - = not run\n")
    for title, lst in (("Not applicable", nas), ("Skipped", skips), ("Failed", fails)):
        if lst:
            f.write(f"\n## {title}\n\n")
            for suite, client, scen, _, detail in lst:
                f.write(f"- `{client}` / `{scen}`: {md_escape(detail)}\n")
    if problems:
        f.write("\n## Problems\n\n")
        for p in problems:
            f.write(f"- {md_escape(p)}\n")

npass = sum(1 for e in entries if e[3] == "pass")
bad = len(fails) + len(problems)
verdict_bad = bad > 0 or (require_all and skips)
print(f"\nTable written to {md_f}; logs in {run_dir}")
if require_all and skips:
    print(f"KELP_INTEROP_REQUIRE_ALL=1 and {len(skips)} scenario(s) skipped: that is an error")
print(f"\ninterop: {npass} passed, {bad} failed, {len(skips)} skipped")
sys.exit(1 if verdict_bad else 0)
PY
report_rc=$?
set -e
exit "$report_rc"
