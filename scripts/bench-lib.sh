#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (bench-peers.sh, bench-scaling.sh); sourced after
# scripts/lib.sh, with ROOT set.

# bench_notes RUN_DIR: problems go to RUN_DIR/notes.txt ($NOTES, one line each, copied into
# the report) through `note`, and to stderr.
bench_notes() {
    NOTES=$1/notes.txt
    : >"$NOTES"
}
note() {
    echo "$*" >>"$NOTES"
    echo "bench: $*" >&2
}

# Every process the script starts goes into STARTED_PIDS, so that the EXIT trap stops exactly
# those.
STARTED_PIDS=()
stop_pid() { # pid name
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "$2 (pid $pid) did not exit 30 s after SIGTERM; sent SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
bench_cleanup() {
    local rc=$? pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid" "process"
    done
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() { # port pid name seconds log
    local deadline=$((SECONDS + $4))
    until port_open 127.0.0.1 "$1"; do
        if ! kill -0 "$2" 2>/dev/null; then
            note "$3 exited before accepting connections: $(tail -n 1 "$5" | sed 's/\x1b\[[0-9;]*m//g')"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            note "$3 did not accept connections on port $1 within $4 s"
            return 1
        fi
        sleep 0.1
    done
}

# bench_binaries: builds kelp and loadtest unless KELP_BIN and LOADTEST_BIN are given, sets
# KELP_BIN and LOADTEST to their absolute paths, and raises the locked-memory limit glommio's
# rings need.
bench_binaries() {
    if [[ -z ${KELP_BIN:-} || -z ${LOADTEST_BIN:-} ]]; then
        banner "bench: cargo build --release --bin kelp --bin loadtest"
        cargo build --release --bin kelp --bin loadtest
    fi
    KELP_BIN=$(realpath "${KELP_BIN:-$ROOT/target/release/kelp}")
    LOADTEST=$(realpath "${LOADTEST_BIN:-$ROOT/target/release/loadtest}")
    [[ -x $KELP_BIN ]] || die "no kelp binary at $KELP_BIN"
    [[ -x $LOADTEST ]] || die "no loadtest binary at $LOADTEST"
    ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
}

# probe_venv: sets VENV to a venv with confluent-kafka for scripts/rdkafka-probe.py
# ($KELP_PYTHON_VENV, default target/interop/venv-python, the interop suites' venv), making it
# when it is missing.
probe_venv() {
    VENV=${KELP_PYTHON_VENV:-$ROOT/target/interop/venv-python}
    if ! "$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
        echo "bench: python venv with confluent-kafka for the real-client probe" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
            -r "$ROOT/tests/interop/python/requirements.txt"
    fi
}
