#!/usr/bin/env bash
# Interop suite: Kafka Streams (kafka-streams 4.x, a word count with a state store and its
# changelog, at-least-once) against kelp. Contract: tests/interop/README.md.
# Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
set -u
cd "$(dirname "$0")"
CLIENT=java-streams
SCENARIOS=(wordcount-restart)
# shellcheck source=tests/interop/maven-app.sh
source ../maven-app.sh
maven_app_build kafka-streams
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
