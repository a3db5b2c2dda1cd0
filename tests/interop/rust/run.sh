#!/usr/bin/env bash
# Rust client suite (rdkafka-rs over librdkafka built from source, and rskafka).
# Contract: tests/interop/README.md. Extra arguments are passed to the program as scenario
# filters (substrings of "<client>/<scenario>", e.g. "rskafka/" or "rdkafka-rs/roundtrip-zstd").
set -u
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

RD_SCENARIOS="create-topic roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd idempotent-100k group-split group-leave group-resume group-two-groups group-static group-cooperative"
RS_SCENARIOS="create-topic roundtrip-none roundtrip-gzip roundtrip-snappy roundtrip-lz4 roundtrip-zstd"

emit_all() { # status detail
    local s
    for s in $RD_SCENARIOS; do echo "RESULT|rdkafka-rs|$s|$1|$2"; done
    for s in $RS_SCENARIOS; do echo "RESULT|rskafka|$s|$1|$2"; done
}

if ! command -v cargo >/dev/null 2>&1; then
    emit_all skip "cargo not found on PATH (Rust toolchain missing)"
    exit 0
fi
if ! command -v cmake >/dev/null 2>&1; then
    emit_all skip "cmake not found (rdkafka feature cmake-build compiles librdkafka from source)"
    exit 0
fi
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    emit_all skip "no C compiler found (librdkafka is compiled from source)"
    exit 0
fi

mkdir -p target
log="target/build.log"
echo "[interop-rust] cargo build --release (log: $here/$log)" >&2
if ! cargo build --release >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    emit_all fail "cargo build --release failed; see $here/$log"
    exit 1
fi

exec "$here/target/release/kelp-interop-rust" "$@"
