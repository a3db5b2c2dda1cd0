#!/usr/bin/env bash
# Python client suite: confluent-kafka (librdkafka) and kafka-python against a running kelp.
# Contract: tests/interop/README.md. Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
VENV=${KELP_PYTHON_VENV:-$ROOT/target/interop/venv-python}
PROG_TIMEOUT=${KELP_INTEROP_PROGRAM_TIMEOUT:-200}
: "${KELP_BOOTSTRAP:?KELP_BOOTSTRAP must be set}"
: "${KELP_TOPIC_PREFIX:?KELP_TOPIC_PREFIX must be set}"

CODECS=(none gzip snappy lz4 zstd)
CK_ROUNDTRIP=(create-topic "${CODECS[@]/#/roundtrip-}" admin fetch-limits compacted-keys compaction)
KP_ROUNDTRIP=(create-topic "${CODECS[@]/#/roundtrip-}" admin)
CK_GROUPS=(group-split group-leave group-kill group-resume group-static group-two-groups acceptance-groups)
KP_GROUPS=(group-split group-leave group-resume group-two-groups)

emit_all() { # status detail -> one line for every scenario of both clients
    local status=$1 detail=$2 s
    for s in "${CK_ROUNDTRIP[@]}" acceptance-20k idempotent-100k "${CK_GROUPS[@]}" group-churn-cooperative; do
        echo "RESULT|confluent-kafka|$s|$status|$detail"
    done
    for s in "${KP_ROUNDTRIP[@]}" "${KP_GROUPS[@]}"; do
        echo "RESULT|kafka-python|$s|$status|$detail"
    done
}

# --- toolchain: a missing python3 or venv module is a skip, never a download ----------------
if ! command -v python3 >/dev/null 2>&1; then
    emit_all skip "python3 not found on PATH"
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    emit_all skip "python3 has no venv/ensurepip module (Debian: apt-get install python3-venv)"
    exit 0
fi

# --- venv with pinned clients (reused while requirements.txt is unchanged) -------------------
STAMP=$VENV/.kelp-requirements.sha256
WANT=$( (python3 --version; cat "$HERE/requirements.txt") | sha256sum | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python || ! -f $STAMP || $(cat "$STAMP") != "$WANT" ]]; then
    echo "[python] creating venv $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" >&2 ||
        ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
            -r "$HERE/requirements.txt" >&2; then
        rm -rf "$VENV"
        emit_all fail "could not create the venv or pip-install tests/interop/python/requirements.txt (see suite log)"
        exit 1
    fi
    echo "$WANT" >"$STAMP"
fi
PY=$VENV/bin/python
"$PY" -c 'import confluent_kafka, kafka; print("[python] confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__)' >&2

# --- run the programs --------------------------------------------------------------------------
rc=0
# run_prog <client> <program.py> <scenario...>: runs the program under a timeout
# (RUN_TIMEOUT=<s> run_prog ... to change it for one program); any declared scenario it did
# not report (crash, hang, kill) is reported as fail here.
run_prog() {
    local client=$1 prog=$2
    shift 2
    local out status=0 s limit=${RUN_TIMEOUT:-$PROG_TIMEOUT}
    out=$(mktemp)
    echo "[python] === $prog ($client) ===" >&2
    # --foreground: stay in the suite's process group, so the harness can stop us as a whole
    timeout --foreground --kill-after=20 "$limit" "$PY" -u "$HERE/$prog" | tee "$out" || status=$?
    if [[ $status -ne 0 ]]; then
        rc=1
        local why="$prog exited with status $status"
        [[ $status -eq 124 || $status -eq 137 ]] && why="$prog timed out after ${limit}s"
        for s in "$@"; do
            if ! grep -q "^RESULT|$client|$s|" "$out"; then
                echo "RESULT|$client|$s|fail|$why before reporting this scenario"
            fi
        done
    fi
    rm -f "$out"
}

export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
run_prog confluent-kafka confluent_roundtrip.py "${CK_ROUNDTRIP[@]}"
run_prog kafka-python kafka_python_roundtrip.py "${KP_ROUNDTRIP[@]}"
run_prog confluent-kafka confluent_acceptance.py acceptance-20k
run_prog confluent-kafka confluent_idempotent.py idempotent-100k
# consumer groups: about 1 min when things work; the limits cap a run whose waits time out
RUN_TIMEOUT=${KELP_INTEROP_GROUPS_TIMEOUT:-360} run_prog confluent-kafka confluent_groups.py "${CK_GROUPS[@]}"
RUN_TIMEOUT=${KELP_INTEROP_GROUPS_TIMEOUT:-240} run_prog kafka-python kafka_python_groups.py "${KP_GROUPS[@]}"
# 8 cooperative members churning their subscriptions for 30 s, then settling: about 40 s
RUN_TIMEOUT=180 run_prog confluent-kafka confluent_churn.py group-churn-cooperative
exit $rc
