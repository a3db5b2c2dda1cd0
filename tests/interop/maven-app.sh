#!/usr/bin/env bash
# Shared by the application suites that are one Maven project each (streams/, connect/): sourced
# by their run.sh after it sets CLIENT and SCENARIOS (and cd'ed into its folder). Prints a skip
# line per scenario and exits when a toolchain is missing, otherwise builds the project (`mvn
# package`, the runtime classpath in target/classpath.txt) and prints a fail line per scenario
# and exits 1 when the build fails. Contract: tests/interop/README.md.

skip_all() { # reason
    for s in "${SCENARIOS[@]}"; do echo "RESULT|$CLIENT|$s|skip|$1"; done
    exit 0
}

# maven_app_build WHAT: WHAT names the dependency in the failure line.
maven_app_build() {
    command -v java >/dev/null 2>&1 || skip_all "java not installed"
    command -v mvn >/dev/null 2>&1 || skip_all "mvn (Maven) not installed"
    : "${KELP_BOOTSTRAP:?KELP_BOOTSTRAP must be set}"
    export KELP_TOPIC_PREFIX="${KELP_TOPIC_PREFIX:-interop-$(date +%s)-$$-}"
    mkdir -p target
    if ! mvn -q -B -Dstyle.color=never package -DskipTests >target/build.log 2>&1; then
        cat target/build.log >&2
        for s in "${SCENARIOS[@]}"; do
            echo "RESULT|$CLIENT|$s|fail|maven build against $1 failed (log above on stderr)"
        done
        exit 1
    fi
}
