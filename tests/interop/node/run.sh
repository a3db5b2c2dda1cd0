#!/usr/bin/env bash
# Interop suite: kafkajs 2.2.4 (+ community snappy/lz4 codecs) against kelp.
# Contract: tests/interop/README.md. Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
# Optional: NODE_SCENARIOS="admin roundtrip-gzip" to run a subset.
set -u
cd "$(dirname "$0")"
SCENARIOS=(${NODE_SCENARIOS:-admin roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd group-split group-leave group-resume group-two-groups})

skip_all() {
    for s in "${SCENARIOS[@]}"; do echo "RESULT|kafkajs|$s|skip|$1"; done
    exit 0
}
command -v node >/dev/null 2>&1 || skip_all "node not installed"
command -v npm >/dev/null 2>&1 || skip_all "npm not installed"

if [ -z "${KELP_BOOTSTRAP:-}" ]; then
    echo "KELP_BOOTSTRAP is not set" >&2
    exit 2
fi
export KELP_TOPIC_PREFIX="${KELP_TOPIC_PREFIX:-interop-$(date +%s)-$$-}"

# Install exactly what package-lock.json pins (re-done only when the lock changed). lz4 (under
# kafkajs-lz4) builds a small native xxhash module with node-gyp during install (needs make, g++).
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.kelp-installed-lock; then
    if ! npm ci --no-audit --no-fund >npm-ci.log 2>&1; then
        cat npm-ci.log >&2
        for s in "${SCENARIOS[@]}"; do echo "RESULT|kafkajs|$s|fail|npm ci failed (log above on stderr)"; done
        exit 1
    fi
    cp package-lock.json node_modules/.kelp-installed-lock
fi

export KAFKAJS_NO_PARTITIONER_WARNING=1
timeout --kill-after=10 1200 node interop.js "${SCENARIOS[@]}"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then
    echo "RESULT|kafkajs|run|fail|node exited with status $rc (killed or crashed)"
fi
[ $rc -eq 0 ]
