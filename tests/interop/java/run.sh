#!/usr/bin/env bash
# Interop suite: Apache Kafka Java client (kafka-clients 4.x and 3.9.x) against kelp.
# Contract: tests/interop/README.md. Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
# Optional: JAVA_SCENARIOS="admin roundtrip-gzip" to run a subset.
# TLS/SASL scenarios (src/main/java/kelp/interop/Tls.java), never in the default list (the default
# run is against a PLAINTEXT kelp), run by both clients when named in JAVA_SCENARIOS; they read
# their own listeners and files instead of KELP_BOOTSTRAP:
#   sasl-ssl-scram-sha-512 sasl-ssl-plain sasl-ssl-wrong-password: KELP_SASL_SSL_BOOTSTRAP (a
#     SASL_SSL listener), KELP_TLS_CA (PEM of the CA kelp's certificate chains to), KELP_SASL_USER,
#     KELP_SASL_PASSWORD (a user with SCRAM-SHA-512 and PLAIN credentials);
#   mtls mtls-no-cert mtls-stranger-cert: KELP_MTLS_BOOTSTRAP (an SSL listener kelp runs with
#     --tls-client-ca), KELP_TLS_CA, KELP_TLS_CLIENT_CERT/KELP_TLS_CLIENT_KEY (a certificate that
#     chains to that CA; PEM, the key PKCS#8 unencrypted), KELP_TLS_STRANGER_CERT/KELP_TLS_STRANGER_KEY
#     (one from a CA kelp does not know). scripts/lib.sh make_test_pki makes all of these;
#   scram-admin: the SASL_SSL listener and user above, kelp run with --super-users naming
#     KELP_SASL_USER (the SCRAM admin APIs; it adds and deletes a user of its own).
set -u
cd "$(dirname "$0")"
HERE=$PWD

# client name -> kafka-clients version (newest 4.x and newest 3.9.x on Maven Central).
VERSIONS=("java-4.x=4.4.0" "java-3.9=3.9.2")
# Group scenarios use group.protocol=classic. acceptance-kill (3 member JVMs, one SIGKILLed) runs
# with the 4.x client only.
SCENARIOS=(${JAVA_SCENARIOS:-admin roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd idempotent-100k
    group-split group-split-roundrobin group-split-cooperative group-leave group-resume group-static group-two-groups
    admin-groups acceptance-kill})
ONLY_4X=" acceptance-kill "
TLS_SCENARIOS=" sasl-ssl-scram-sha-512 sasl-ssl-plain sasl-ssl-wrong-password mtls mtls-no-cert mtls-stranger-cert scram-admin "
scenarios_for() { # client name -> the scenarios it runs
    local s
    for s in "${SCENARIOS[@]}"; do
        if [ "$1" != "java-4.x" ] && [[ $ONLY_4X == *" $s "* ]]; then continue; fi
        echo "$s"
    done
}

skip_all() { # reason
    for spec in "${VERSIONS[@]}"; do
        for s in $(scenarios_for "${spec%%=*}"); do echo "RESULT|${spec%%=*}|$s|skip|$1"; done
    done
    exit 0
}
command -v java >/dev/null 2>&1 || skip_all "java not installed"
command -v mvn >/dev/null 2>&1 || skip_all "mvn (Maven) not installed"
JAVA_MAJOR=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | cut -d. -f1)
[ "${JAVA_MAJOR:-0}" -ge 17 ] 2>/dev/null || skip_all "java ${JAVA_MAJOR:-?} found, need 17+"

needs_bootstrap=0
for s in "${SCENARIOS[@]}"; do
    [[ $TLS_SCENARIOS == *" $s "* ]] || needs_bootstrap=1
done
if [ $needs_bootstrap = 1 ] && [ -z "${KELP_BOOTSTRAP:-}" ]; then
    echo "KELP_BOOTSTRAP is not set" >&2
    exit 2
fi
export KELP_TOPIC_PREFIX="${KELP_TOPIC_PREFIX:-interop-$(date +%s)-$$-}"

failed=0
for spec in "${VERSIONS[@]}"; do
    name=${spec%%=*}
    version=${spec#*=}
    mapfile -t scen < <(scenarios_for "$name")
    [ ${#scen[@]} -gt 0 ] || continue
    out="$HERE/target/kafka-$version"
    mkdir -p "$out"
    if ! mvn -q -B -Dstyle.color=never -Dkafka.version="$version" -Dkelp.build.dir="$out" \
            package -DskipTests >"$out/build.log" 2>&1; then
        cat "$out/build.log" >&2
        for s in "${scen[@]}"; do
            echo "RESULT|$name|$s|fail|maven build against kafka-clients $version failed (log above on stderr)"
        done
        failed=1
        continue
    fi
    cp="$out/kelp-interop-java-0.1.0.jar:$(cat "$out/classpath.txt")"
    log="$out/client.log"
    # Client logs (WARN and up) go to a file; printed on failure. Results are the only stdout.
    # The program has its own per-scenario deadlines; `timeout` is the last resort.
    timeout --kill-after=10 1200 java -Xmx1g \
        -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
        -Dorg.slf4j.simpleLogger.logFile="$log" \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -cp "$cp" kelp.interop.Main "$name" "${scen[@]}"
    rc=$?
    if [ $rc -ne 0 ]; then
        failed=1
        if [ $rc -ne 1 ]; then
            echo "RESULT|$name|run|fail|client program exited with status $rc (killed or crashed)"
        fi
        echo "--- $name: last lines of $log ---" >&2
        tail -n 40 "$log" >&2 2>/dev/null
    fi
done
exit $failed
