#!/usr/bin/env bash
# Interop suite: Kafka Connect (a distributed worker from connect-runtime with the FileStream
# connectors from connect-file, restarted midway) against kelp. Contract: tests/interop/README.md.
# Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
set -u
cd "$(dirname "$0")"
CLIENT=java-connect
SCENARIOS=(filestream-restart)
# shellcheck source=tests/interop/maven-app.sh
source ../maven-app.sh
command -v python3 >/dev/null 2>&1 || skip_all "python3 (to pick free ports) not installed"
maven_app_build connect-runtime
# The two workers' REST listeners (one after the other; distinct ports so a slow exit of the
# first cannot block the second).
read -r KELP_CONNECT_REST_PORT_1 KELP_CONNECT_REST_PORT_2 < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
export KELP_CONNECT_REST_PORT_1 KELP_CONNECT_REST_PORT_2
export KELP_CONNECT_WORK=$PWD/target/work
mkdir -p "$KELP_CONNECT_WORK"
log=$PWD/target/client.log
timeout --kill-after=10 600 java -Xmx256m \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -Dorg.slf4j.simpleLogger.logFile="$log" \
    -cp "target/kelp-interop-connect-0.1.0.jar:$(cat target/classpath.txt)" kelp.connect.FileRoundTrip
rc=$?
if [ $rc -ne 0 ]; then
    [ $rc -eq 1 ] || echo "RESULT|$CLIENT|filestream-restart|fail|program exited with status $rc (killed or crashed)"
    for f in "$log" "$KELP_CONNECT_WORK/${KELP_TOPIC_PREFIX}"worker-*.log; do
        [ -f "$f" ] || continue
        echo "--- last lines of $f ---" >&2
        tail -n 60 "$f" >&2
    done
fi
exit $rc
