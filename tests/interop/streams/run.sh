#!/usr/bin/env bash
# Interop suite: Kafka Streams (kafka-streams 4.x, a word count with a state store and its
# changelog, at-least-once) against kelp. Contract: tests/interop/README.md.
# Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
set -u
cd "$(dirname "$0")"
CLIENT=java-streams
SCENARIOS=(wordcount-restart)
skip_all() {
    for s in "${SCENARIOS[@]}"; do echo "RESULT|$CLIENT|$s|skip|$1"; done
    exit 0
}
command -v java >/dev/null 2>&1 || skip_all "java not installed"
command -v mvn >/dev/null 2>&1 || skip_all "mvn (Maven) not installed"
: "${KELP_BOOTSTRAP:?KELP_BOOTSTRAP must be set}"
export KELP_TOPIC_PREFIX="${KELP_TOPIC_PREFIX:-interop-$(date +%s)-$$-}"
mkdir -p target
if ! mvn -q -B -Dstyle.color=never package -DskipTests >target/build.log 2>&1; then
    cat target/build.log >&2
    for s in "${SCENARIOS[@]}"; do
        echo "RESULT|$CLIENT|$s|fail|maven build against kafka-streams failed (log above on stderr)"
    done
    exit 1
fi
log=$PWD/target/client.log
timeout --kill-after=10 600 java -Xmx512m \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -Dorg.slf4j.simpleLogger.logFile="$log" \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -cp "target/kelp-interop-streams-0.1.0.jar:$(cat target/classpath.txt)" kelp.streams.WordCount
rc=$?
if [ $rc -ne 0 ]; then
    [ $rc -eq 1 ] || echo "RESULT|$CLIENT|wordcount-restart|fail|program exited with status $rc (killed or crashed)"
    echo "--- last lines of $log ---" >&2
    tail -n 60 "$log" >&2
fi
exit $rc
