#!/usr/bin/env bash
# TLS on SSL and SASL_SSL listeners, with real clients against the real kelp binary; the CA,
# kelp's certificate and the client certificates are made here (make_test_pki, openssl).
#   kelp on SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 users):
#   - confluent-kafka and kafka-python produce and read back over each mechanism, verifying
#     kelp's certificate against the test CA; a wrong password fails fast; a TLS client that
#     does not log in gets no metadata (tests/security/sasl_clients.py);
#   - kcat, the Java client (kafka-clients 4.x), franz-go and Sarama produce and read back over
#     SCRAM-SHA-512 and PLAIN, and fail fast on a wrong password;
#   - a plaintext client gets no Kafka answer; a client trusting another CA refuses kelp; a
#     connection that starts no handshake is closed at --auth-timeout-ms; SIGHUP with new
#     certificate files: new connections get the new certificate, open ones go on
#     (tests/security/tls_checks.py).
#   - the SCRAM admin API over SASL_SSL with the Java client (scram-admin in Tls.java);
#   kelp on SSL with --tls-client-ca (mutual TLS):
#   - the Java client and kcat with a client certificate produce and read back; without one,
#     or with one from a CA kelp does not know, they get nothing;
#   - the certificate's subject is the principal: named in --super-users, it may describe SCRAM
#     credentials, another certificate may not.
# Environment: KELP_BIN (default: cargo build --release), KELP_PYTHON_VENV.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kelp-tls.XXXXXX")
RESULTS=$RUN_DIR/results.txt
: >"$RESULTS"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

need_kelp_bin tls
need_python_venv tls

result() { echo "RESULT|$1|$2|$3|$4" | tee -a "$RESULTS"; }

PKI=$RUN_DIR/pki
make_test_pki "$PKI"
USER_NAME=alice
PASSWORD="tls-$(rand_hex)-secret"
USERS=$RUN_DIR/users
for mech in PLAIN SCRAM-SHA-256 SCRAM-SHA-512; do
    echo "$PASSWORD" | "$KELP_BIN" user add --users-file "$USERS" --mechanism "$mech" "$USER_NAME"
done

# start_kelp NAME PROTOCOL PORT FLAGS...: kelp on PROTOCOL://127.0.0.1:PORT, logging to
# RUN_DIR/NAME.log; its pid is appended to PIDS.
start_kelp() {
    local name=$1 protocol=$2 port=$3
    shift 3
    RUST_LOG=${RUST_LOG:-info} "$KELP_BIN" --listen "$protocol://127.0.0.1:$port" \
        --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" "$@" \
        >"$RUN_DIR/$name.log" 2>&1 &
    PIDS+=($!)
    wait_listening "$port" "$!" "$RUN_DIR/$name.log" 60 "kelp ($name)"
}

SASL_PORT=$(free_port)
AUTH_TIMEOUT_MS=2000
SHARDS=2
banner "tls: kelp on SASL_SSL://127.0.0.1:$SASL_PORT"
start_kelp sasl-ssl SASL_SSL "$SASL_PORT" --users-file "$USERS" --shards "$SHARDS" \
    --auth-timeout-ms "$AUTH_TIMEOUT_MS" --super-users "$USER_NAME"
SASL_PID=${PIDS[-1]}
SASL_BOOTSTRAP=127.0.0.1:$SASL_PORT

banner "tls: confluent-kafka and kafka-python over SASL_SSL"
KELP_BOOTSTRAP=$SASL_BOOTSTRAP KELP_SECURITY_PROTOCOL=SASL_SSL KELP_TLS_CA=$PKI/ca.pem \
    KELP_SASL_USER=$USER_NAME KELP_SASL_PASSWORD=$PASSWORD \
    timeout 600 "$VENV/bin/python" tests/security/sasl_clients.py 2>"$RUN_DIR/python-clients.log" |
    tee -a "$RESULTS" || true

banner "tls: kcat over SASL_SSL"
KCAT_TLS=(-X security.protocol=SASL_SSL -X "ssl.ca.location=$PKI/ca.pem"
    -X sasl.mechanisms=SCRAM-SHA-512 -X "sasl.username=$USER_NAME" -X "sasl.password=$PASSWORD")
TOPIC=tls-kcat-$(rand_hex)
seq 1 20 | timeout 60 kcat -b "$SASL_BOOTSTRAP" "${KCAT_TLS[@]}" -P -t "$TOPIC" -p 0 \
    2>"$RUN_DIR/kcat-produce.log" || true
got=$(timeout 60 kcat -b "$SASL_BOOTSTRAP" "${KCAT_TLS[@]}" -C -t "$TOPIC" -p 0 -o beginning -e \
    2>"$RUN_DIR/kcat-consume.log" | tr '\n' ' ' || true)
if [ "$got" = "$(seq 1 20 | tr '\n' ' ')" ]; then
    result kcat sasl-ssl-scram-sha-512 pass "20 records produced and read back as $USER_NAME"
else
    result kcat sasl-ssl-scram-sha-512 fail "read back: '$got'"
fi

banner "tls: raw TLS checks"
tls_check() { timeout 60 "$VENV/bin/python" tests/security/tls_checks.py "$@" | tee -a "$RESULTS" || true; }
tls_check plaintext "$SASL_BOOTSTRAP"
tls_check wrong-ca "$SASL_BOOTSTRAP" "$PKI/stranger-ca.pem"
tls_check silent "$SASL_BOOTSTRAP" "$AUTH_TIMEOUT_MS"

banner "tls: Go clients (franz-go, Sarama) over SASL_SSL"
KELP_SASL_SSL_BOOTSTRAP=$SASL_BOOTSTRAP KELP_TLS_CA=$PKI/ca.pem KELP_SASL_USER=$USER_NAME \
    KELP_SASL_PASSWORD=$PASSWORD KELP_TOPIC_PREFIX=tls-go-$(rand_hex)- \
    timeout 900 tests/interop/go/run.sh -clients franz-go,sarama \
    -scenarios sasl-ssl-scram-sha-512,sasl-ssl-plain,sasl-ssl-wrong-password \
    2>"$RUN_DIR/go-clients.log" | tee -a "$RESULTS" || true

MTLS_PORT=$(free_port)
banner "tls: kelp on SSL://127.0.0.1:$MTLS_PORT, client certificates required"
# The client certificate's subject, as Kafka (and kelp) names the principal, is a super user.
start_kelp mtls SSL "$MTLS_PORT" --tls-client-ca "$PKI/client-ca.pem" --shards 1 \
    --auth-timeout-ms "$AUTH_TIMEOUT_MS" --super-users "O=kelp,CN=kelp-test-client"
MTLS_BOOTSTRAP=127.0.0.1:$MTLS_PORT
pki_leaf "$PKI" other-client "/CN=another-client" client-ca "extendedKeyUsage=clientAuth"
tls_check principal "$MTLS_BOOTSTRAP" "$PKI/ca.pem" "$PKI/client.pem" "$PKI/client.key" \
    "$PKI/other-client.pem" "$PKI/other-client.key"

banner "tls: the Java client over SASL_SSL, and with a client certificate"
KELP_SASL_SSL_BOOTSTRAP=$SASL_BOOTSTRAP KELP_MTLS_BOOTSTRAP=$MTLS_BOOTSTRAP \
    KELP_TLS_CA=$PKI/ca.pem KELP_SASL_USER=$USER_NAME KELP_SASL_PASSWORD=$PASSWORD \
    KELP_TLS_CLIENT_CERT=$PKI/client.pem KELP_TLS_CLIENT_KEY=$PKI/client.key \
    KELP_TLS_STRANGER_CERT=$PKI/stranger.pem KELP_TLS_STRANGER_KEY=$PKI/stranger.key \
    KELP_TOPIC_PREFIX=tls-java-$(rand_hex)- \
    JAVA_SCENARIOS="sasl-ssl-scram-sha-512 sasl-ssl-plain sasl-ssl-wrong-password mtls mtls-no-cert mtls-stranger-cert scram-admin" \
    timeout 900 tests/interop/java/run.sh 2>"$RUN_DIR/java-clients.log" | tee -a "$RESULTS" || true

banner "tls: kcat with and without a client certificate"
KCAT_MTLS=(-X security.protocol=SSL -X "ssl.ca.location=$PKI/ca.pem")
TOPIC=mtls-kcat-$(rand_hex)
seq 1 20 | timeout 60 kcat -b "$MTLS_BOOTSTRAP" "${KCAT_MTLS[@]}" \
    -X "ssl.certificate.location=$PKI/client.pem" -X "ssl.key.location=$PKI/client.key" \
    -P -t "$TOPIC" -p 0 2>"$RUN_DIR/kcat-mtls.log" || true
got=$(timeout 60 kcat -b "$MTLS_BOOTSTRAP" "${KCAT_MTLS[@]}" \
    -X "ssl.certificate.location=$PKI/client.pem" -X "ssl.key.location=$PKI/client.key" \
    -C -t "$TOPIC" -p 0 -o beginning -e 2>>"$RUN_DIR/kcat-mtls.log" | tr '\n' ' ' || true)
if [ "$got" = "$(seq 1 20 | tr '\n' ' ')" ]; then
    result kcat mtls pass "20 records produced and read back with a client certificate"
else
    result kcat mtls fail "read back: '$got'"
fi
if timeout 30 kcat -b "$MTLS_BOOTSTRAP" "${KCAT_MTLS[@]}" -L -m 10 >"$RUN_DIR/kcat-no-cert.out" \
    2>"$RUN_DIR/kcat-no-cert.log"; then
    result kcat mtls-no-cert fail "metadata without a client certificate: $(head -c 200 "$RUN_DIR/kcat-no-cert.out")"
else
    result kcat mtls-no-cert pass "no metadata without a client certificate ($(grep -o 'SSL handshake failed[^:]*\|[A-Za-z ]*alert[^,]*' "$RUN_DIR/kcat-no-cert.log" | head -1))"
fi
if grep -q 'TLS: .*' "$RUN_DIR/mtls.log"; then
    echo "kelp's log for refused client certificates: $(grep -m1 'TLS: ' "$RUN_DIR/mtls.log")"
fi

banner "tls: SIGHUP reads new certificate files"
pki_leaf "$PKI" server-2 "/CN=127.0.0.1" ca "$PKI_SERVER_EXT"
tls_check reload "$SASL_BOOTSTRAP" "$PKI/ca.pem" "$PKI" "$SASL_PID" "$RUN_DIR/sasl-ssl.log" "$SHARDS"

if grep -q -e "$PASSWORD" "$RUN_DIR"/*.log; then
    result kelp tls-no-secret-in-logs fail "the password appears in a log"
else
    result kelp tls-no-secret-in-logs pass "the password appears in no log (kelp's, the clients')"
fi

for pid in "${PIDS[@]}"; do
    kill -TERM "$pid"
    wait "$pid" || die "kelp (pid $pid) did not exit cleanly on SIGTERM"
done
PIDS=()

# confluent-kafka and kafka-python 9, kcat 1, raw checks 5 (with the mTLS principal), Go 6, Java
# 14 (7 scenarios, 4.x and 3.9), kcat mTLS 2, secret 1.
check_results tls "$RESULTS" 38 "$RUN_DIR"
