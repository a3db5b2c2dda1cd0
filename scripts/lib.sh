#!/usr/bin/env bash
# Small helpers shared by the scripts in scripts/ (sourced, not run).

# banner TEXT: a section header that stands out in CI logs.
banner() {
    printf '\n========== %s ==========\n' "$*"
}

die() {
    echo "error: $*" >&2
    exit 1
}

# die_with_logs RESULTS RUN_DIR LINES WHY: the tail of every log in RUN_DIR, then the failed
# RESULT lines once more and the verdict. The failures come last on purpose: a CI report often
# keeps only the end of the output, and the logs' tails would otherwise push them out of it.
die_with_logs() {
    local f
    for f in "$2"/*.log; do
        echo "--- $f (tail)"
        tail -n "$3" "$f"
    done
    echo "--- failed results ($(grep -c '^RESULT|.*|pass|' "$1" || true) passed):"
    grep '^RESULT|.*|fail|' "$1" || echo "(none failed: a scenario gave no result)"
    die "$4"
}

# check_results SUITE RESULTS EXPECTED RUN_DIR: counts the RESULT lines of RESULTS and dies
# (with the logs' tails and the failed lines, die_with_logs) unless exactly EXPECTED passed and
# none failed; a skip counts as not passed.
check_results() {
    local passed failed skipped
    passed=$(grep -c '^RESULT|.*|pass|' "$2" || true)
    failed=$(grep -c '^RESULT|.*|fail|' "$2" || true)
    skipped=$(grep -c '^RESULT|.*|skip|' "$2" || true)
    echo "$1: $passed passed, $failed failed, $skipped skipped (expected $3 passed); logs in $4"
    if [ "$failed" -gt 0 ] || [ "$passed" -ne "$3" ]; then
        die_with_logs "$2" "$4" 15 "$1 checks failed"
    fi
}

# need_kelp_bin SUITE: KELP_BIN as given, or kelp built now (cargo build --release).
need_kelp_bin() {
    if [ -z "${KELP_BIN:-}" ]; then
        banner "$1: cargo build --release"
        cargo build --release --bin kelp
        KELP_BIN=$ROOT/target/release/kelp
    fi
}

# need_python_venv SUITE: sets VENV to KELP_PYTHON_VENV or target/interop/venv-python, made
# (with the interop suite's pinned clients) if it lacks them.
need_python_venv() {
    VENV=${KELP_PYTHON_VENV:-$ROOT/target/interop/venv-python}
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import confluent_kafka, kafka' 2>/dev/null; then
        banner "$1: python venv with confluent-kafka and kafka-python"
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
            -r "$ROOT/tests/interop/python/requirements.txt"
    fi
}

# free_port: print a TCP port on 127.0.0.1 that is free right now (the OS picks it).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_open HOST PORT: true if a TCP connect succeeds.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_listening PORT PID LOG SECONDS WHAT: waits until 127.0.0.1:PORT accepts; dies with the
# tail of LOG if process PID exits first or SECONDS pass.
wait_listening() {
    local port=$1 pid=$2 log=$3 deadline=$((SECONDS + $4)) what=$5
    until port_open 127.0.0.1 "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log" >&2
            die "$what exited before listening on $port"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$log" >&2
            die "$what did not listen on $port within $4 s"
        fi
        sleep 0.2
    done
}

# wait_log_line LOG PATTERN SECONDS WHY: waits until LOG has a line matching PATTERN (grep);
# dies with LOG's tail and WHY if SECONDS pass first.
wait_log_line() {
    local log=$1 pattern=$2 deadline=$((SECONDS + $3))
    until grep -q "$pattern" "$log"; do
        [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$log" >&2; die "$4"; }
        sleep 0.2
    done
}

# rand_hex: 8 random hex digits.
rand_hex() {
    od -An -N4 -tx1 /dev/urandom | tr -d ' \n'
}

# start_weed_broker WEED DIR MASTER_PORT BROKER_PORT: starts `weed mq.broker` in its own
# session (so that it can be signalled with its children), appending to DIR/broker.log, and
# records its pid in DIR/broker.pid. The broker runs with its default flags (flush interval
# 5 s: with kelp's broker patches acks wait for the filer anyway, see scripts/seaweedfs) plus
# $SEAWEEDMQ_BROKER_FLAGS, word-split, which the first start records in DIR/broker.flags so that
# restarts (scripts/seaweedmq-broker.sh) run with the same flags when it is not set.
start_weed_broker() {
    local extra
    if [ -n "${SEAWEEDMQ_BROKER_FLAGS+set}" ]; then
        extra=$SEAWEEDMQ_BROKER_FLAGS
        printf '%s\n' "$extra" >"$2/broker.flags"
    else
        extra=$(cat "$2/broker.flags" 2>/dev/null || true)
    fi
    # shellcheck disable=SC2086 # the extra flags are meant to be word-split
    setsid "$1" mq.broker -master="127.0.0.1:$3" -ip=127.0.0.1 -port="$4" $extra \
        >>"$2/broker.log" 2>&1 </dev/null &
    echo $! >"$2/broker.pid"
}

# seaweedmq_dir: prints the directory of the stack seaweedmq-up.sh started ($SEAWEEDMQ_DIR, else
# the one recorded in $SEAWEEDMQ_STATE, default target/seaweedmq.state); nothing if none. Run
# from the repository root.
seaweedmq_dir() {
    local state=${SEAWEEDMQ_STATE:-$PWD/target/seaweedmq.state}
    if [ -n "${SEAWEEDMQ_DIR:-}" ]; then
        echo "$SEAWEEDMQ_DIR"
    elif [ -f "$state" ]; then
        cat "$state"
    fi
}

# pki_ca DIR NAME SUBJECT: a self-signed CA, DIR/NAME.pem and DIR/NAME.key.
pki_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "$3" \
        -keyout "$1/$2.key" -out "$1/$2.pem" 2>/dev/null
}

# pki_leaf DIR NAME SUBJECT CA EXTENSIONS: a certificate DIR/NAME.pem (key DIR/NAME.key, PKCS#8)
# signed by the CA DIR/CA.pem, with the given x509v3 extension lines.
pki_leaf() {
    openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$1/$2.key" -out "$1/$2.csr" 2>/dev/null
    printf '%s\n' "$5" >"$1/$2.ext"
    openssl x509 -req -in "$1/$2.csr" -CA "$1/$4.pem" -CAkey "$1/$4.key" -CAcreateserial \
        -days 2 -extfile "$1/$2.ext" -out "$1/$2.pem" 2>/dev/null
    [ -s "$1/$2.pem" ] || die "pki_leaf: openssl did not make $1/$2.pem"
}

# The extensions of a kelp server certificate for loopback.
PKI_SERVER_EXT="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"

# make_test_pki DIR: a throw-away PKI for the TLS tests, made with openssl:
#   ca.pem/ca.key               the CA kelp's certificate chains to (clients verify against it);
#   server.pem/server.key       kelp's certificate, for 127.0.0.1 and localhost;
#   client-ca.pem/client-ca.key the CA client certificates chain to (--tls-client-ca);
#   client.pem/client.key       a client certificate, CN=kelp-test-client;
#   stranger.pem/stranger.key   a client certificate from a CA kelp does not know.
make_test_pki() {
    mkdir -p "$1"
    pki_ca "$1" ca "/CN=kelp test CA"
    pki_ca "$1" client-ca "/CN=kelp test client CA"
    pki_ca "$1" stranger-ca "/CN=a CA kelp does not know"
    pki_leaf "$1" server "/CN=127.0.0.1" ca "$PKI_SERVER_EXT"
    pki_leaf "$1" client "/CN=kelp-test-client/O=kelp" client-ca "extendedKeyUsage=clientAuth"
    pki_leaf "$1" stranger "/CN=stranger" stranger-ca "extendedKeyUsage=clientAuth"
}
