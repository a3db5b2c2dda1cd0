#!/usr/bin/env bash
# SASL on a SASL_PLAINTEXT listener, with real clients against the real kelp binary:
#   - `kelp user add` writes the users file (password on stdin); the file must not hold it;
#   - confluent-kafka (librdkafka) and kafka-python (pure Python) produce and read back over
#     PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; a wrong password fails fast with an
#     authentication error; a client without SASL gets no metadata (tests/security/sasl_clients.py);
#   - kcat produces and consumes over SCRAM-SHA-512; kcat without SASL cannot produce (its
#     record is nowhere to be read);
#   - a user added while kelp runs logs in after SIGHUP (the users file is read again);
#   - the SCRAM admin APIs (confluent-kafka's admin client, tests/security/scram_admin.py): the
#     --super-users user describes and adds a credential, which logs in; others are refused;
#     a deleted credential no longer logs in; the added password is not in the users file;
#   - a connection that says nothing is closed at --auth-timeout-ms;
#   - failed logins are counted on /metrics.
# Environment: KELP_BIN (default: cargo build --release), KELP_PYTHON_VENV.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kelp-sasl.XXXXXX")
RESULTS=$RUN_DIR/results.txt
: >"$RESULTS"
KELP_PID=
cleanup() {
    [ -n "$KELP_PID" ] && kill -TERM "$KELP_PID" 2>/dev/null || true
}
trap cleanup EXIT

need_kelp_bin sasl
need_python_venv sasl

result() { echo "RESULT|$1|$2|$3|$4" | tee -a "$RESULTS"; }

USER_NAME=alice
PASSWORD="sasl-$(rand_hex)-secret"
USERS=$RUN_DIR/users
banner "sasl: kelp user add"
for mech in PLAIN SCRAM-SHA-256 SCRAM-SHA-512; do
    echo "$PASSWORD" | "$KELP_BIN" user add --users-file "$USERS" --mechanism "$mech" "$USER_NAME"
done
if grep -q -- "$PASSWORD" "$USERS"; then
    result kelp users-file-salted fail "the users file holds the password in clear"
else
    result kelp users-file-salted pass "$(grep -c "^$USER_NAME	" "$USERS") credentials for $USER_NAME, no password in clear; mode $(stat -c %a "$USERS")"
fi

PORT=$(free_port)
METRICS_PORT=$(free_port)
AUTH_TIMEOUT_MS=2000
SHARDS=2
banner "sasl: kelp on SASL_PLAINTEXT://127.0.0.1:$PORT"
RUST_LOG=${RUST_LOG:-info} "$KELP_BIN" --listen "SASL_PLAINTEXT://127.0.0.1:$PORT" \
    --users-file "$USERS" --auth-timeout-ms "$AUTH_TIMEOUT_MS" --shards "$SHARDS" \
    --super-users "$USER_NAME" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" >"$RUN_DIR/kelp.log" 2>&1 &
KELP_PID=$!
wait_listening "$PORT" "$KELP_PID" "$RUN_DIR/kelp.log" 60 "kelp"

banner "sasl: confluent-kafka and kafka-python"
KELP_BOOTSTRAP=127.0.0.1:$PORT KELP_SASL_USER=$USER_NAME KELP_SASL_PASSWORD=$PASSWORD \
    timeout 600 "$VENV/bin/python" tests/security/sasl_clients.py 2>"$RUN_DIR/clients.log" |
    tee -a "$RESULTS" || true

banner "sasl: kcat"
KCAT_SASL=(-X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-512
    -X "sasl.username=$USER_NAME" -X "sasl.password=$PASSWORD")
TOPIC=sasl-kcat-$(rand_hex)
seq 1 20 | timeout 60 kcat -b "127.0.0.1:$PORT" "${KCAT_SASL[@]}" -P -t "$TOPIC" -p 0 \
    2>"$RUN_DIR/kcat-produce.log" || true
got=$(timeout 60 kcat -b "127.0.0.1:$PORT" "${KCAT_SASL[@]}" -C -t "$TOPIC" -p 0 -o beginning -e \
    2>"$RUN_DIR/kcat-consume.log" | tr '\n' ' ' || true)
if [ "$got" = "$(seq 1 20 | tr '\n' ' ')" ]; then
    result kcat sasl-scram-sha-512 pass "20 records produced and read back as $USER_NAME"
else
    result kcat sasl-scram-sha-512 fail "read back: '$got'"
fi
# Without SASL: the connection closes at the first request, the record goes nowhere.
ANON=sasl-anon-$(rand_hex)
echo anonymous | timeout 20 kcat -b "127.0.0.1:$PORT" -P -t "$ANON" -p 0 -m 5 \
    2>"$RUN_DIR/kcat-anon.log" && anon_rc=0 || anon_rc=$?
seen=$(timeout 30 kcat -b "127.0.0.1:$PORT" "${KCAT_SASL[@]}" -C -t "$ANON" -p 0 -o beginning -e \
    -m 10 2>/dev/null | tr '\n' ' ' || true)
if [ "$anon_rc" -ne 0 ] && [ -z "$seen" ]; then
    result kcat sasl-none-cannot-produce pass "kcat without SASL failed (exit $anon_rc); nothing stored"
else
    result kcat sasl-none-cannot-produce fail "kcat without SASL exit $anon_rc; read back '$seen'"
fi

banner "sasl: a user added while kelp runs logs in after SIGHUP"
NEW_PASSWORD="sasl-$(rand_hex)-second"
echo "$NEW_PASSWORD" | "$KELP_BIN" user add --users-file "$USERS" --mechanism SCRAM-SHA-256 bob
kill -HUP "$KELP_PID"
# Each shard takes the new users from its inbox and says so; every one must have.
deadline=$((SECONDS + 30))
until [ "$(grep -c 'check against the users file as read again (4 credentials)' "$RUN_DIR/kelp.log")" -ge "$SHARDS" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "not every shard took the users file within 30 s of SIGHUP"
    sleep 0.1
done
BOB_TOPIC=sasl-bob-$(rand_hex)
BOB_SASL=(-X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-256
    -X sasl.username=bob -X "sasl.password=$NEW_PASSWORD")
echo from-bob | timeout 60 kcat -b "127.0.0.1:$PORT" "${BOB_SASL[@]}" -P -t "$BOB_TOPIC" -p 0 \
    2>"$RUN_DIR/kcat-bob.log" || true
got=$(timeout 60 kcat -b "127.0.0.1:$PORT" "${BOB_SASL[@]}" -C -t "$BOB_TOPIC" -p 0 -o beginning \
    -e 2>>"$RUN_DIR/kcat-bob.log" | tr '\n' ' ' || true)
if [ "$got" = "from-bob " ]; then
    result kcat sasl-users-reload pass "bob, added to the users file after start, logged in after SIGHUP"
else
    result kcat sasl-users-reload fail "bob after SIGHUP read back '$got'"
fi

banner "sasl: SCRAM credentials through the admin API"
ADMIN_PASSWORD="sasl-$(rand_hex)-added"
KELP_BOOTSTRAP=127.0.0.1:$PORT KELP_SASL_USER=$USER_NAME KELP_SASL_PASSWORD=$PASSWORD \
    KELP_NEW_PASSWORD=$ADMIN_PASSWORD timeout 300 "$VENV/bin/python" tests/security/scram_admin.py \
    2>"$RUN_DIR/scram-admin.log" | tee -a "$RESULTS" || true

banner "sasl: a silent connection is closed at --auth-timeout-ms"
took=$(timeout 30 "$VENV/bin/python" - "$PORT" <<'EOF' || echo "error"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.monotonic()
s.settimeout(25)
try:
    data = s.recv(1)
    print(f"{time.monotonic() - t0:.1f}" if data == b"" else "data")
except ConnectionResetError:
    print(f"{time.monotonic() - t0:.1f}")
except socket.timeout:
    print("open")
EOF
)
if [[ $took =~ ^[0-9.]+$ ]] && awk -v t="$took" -v lim="$AUTH_TIMEOUT_MS" 'BEGIN { exit !(t * 1000 >= lim - 100 && t * 1000 <= lim + 5000) }'; then
    result kelp sasl-auth-timeout pass "closed after ${took}s (--auth-timeout-ms $AUTH_TIMEOUT_MS)"
else
    result kelp sasl-auth-timeout fail "silent connection: $took (--auth-timeout-ms $AUTH_TIMEOUT_MS)"
fi

failures=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk '/^kelp_sasl_authentication_failures_total/ { n += $2 } END { print n + 0 }')
if [ "$failures" -ge 2 ]; then
    result kelp sasl-failures-metric pass "kelp_sasl_authentication_failures_total = $failures after the wrong-password checks"
else
    result kelp sasl-failures-metric fail "kelp_sasl_authentication_failures_total = $failures, expected at least 2"
fi
if grep -q -e "$PASSWORD" -e "$NEW_PASSWORD" -e "$ADMIN_PASSWORD" "$RUN_DIR"/*.log "$USERS"; then
    result kelp sasl-no-secret-in-logs fail "a password appears in a log or the users file"
else
    result kelp sasl-no-secret-in-logs pass "no password appears in any log (kelp's, the clients') or the users file"
fi

kill -TERM "$KELP_PID"
wait "$KELP_PID" || die "kelp did not exit cleanly on SIGTERM"
KELP_PID=

check_results sasl "$RESULTS" 20 "$RUN_DIR"
