#!/usr/bin/env bash
# Tests kelp's SeaweedFS broker patch series (scripts/seaweedfs/patches/*.patch) on a scratch copy
# of the SeaweedFS module source:
#   1. copies the pristine source of $WEED_VERSION (from the Go module cache, fetched through the
#      module proxy if missing) to a scratch directory;
#   2. applies the series in order with `patch -p1` (each patch must apply cleanly);
#   3. checks the files the series touches are gofmt-clean;
#   4. runs exactly the tests the patches add (every `func TestXxx` in their *_test.go files),
#      with `go test -count=1 -run '^(...)$'` on the packages concerned.
# With --verify-fail it also proves each patch's tests need that patch: for patch N it takes the
# source with patches 1..N-1 applied plus only the *_test.go parts of patch N, runs patch N's
# tests, and requires them to fail (saying whether they fail to build or fail an assertion).
#
# Needs Go (>= 1.26) and the module proxy (or a warm module cache); installs nothing. On two cores
# it takes 20-40 s with a warm Go build cache (50-90 s with --verify-fail); with an empty GOCACHE
# the first run compiles the test packages' dependencies (about 2.5 minutes in all).
#
# Usage: scripts/seaweedfs/test-patches.sh [--verify-fail] [--keep]
#   --keep   leave the scratch directory (printed) instead of removing it
# Environment: WEED_VERSION (default: SeaweedFS 4.53's pseudo-version, as scripts/seaweedmq-up.sh),
#   TMPDIR (where the scratch directory goes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATCH_DIR=$HERE/patches
WEED_VERSION=${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
VERIFY_FAIL=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
    --verify-fail) VERIFY_FAIL=1 ;;
    --keep) KEEP=1 ;;
    *)
        echo "usage: $0 [--verify-fail] [--keep]" >&2
        exit 2
        ;;
    esac
done

die() {
    echo "test-patches: FAILED: $*" >&2
    exit 1
}
say() {
    echo "test-patches: $*"
}
# run CMD...: print the command, then run it.
run() {
    echo "+ $*"
    "$@"
}

START=$SECONDS
command -v go >/dev/null || die "no Go toolchain"
PATCHES=("$PATCH_DIR"/*.patch)
[ -f "${PATCHES[0]}" ] || die "no patches in $PATCH_DIR"

MODULE_DIR=$(go mod download -json "github.com/seaweedfs/seaweedfs@$WEED_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n 1) || true
[ -n "$MODULE_DIR" ] && [ -f "$MODULE_DIR/go.mod" ] ||
    die "go mod download github.com/seaweedfs/seaweedfs@$WEED_VERSION gave no source directory"
say "SeaweedFS $WEED_VERSION source: $MODULE_DIR"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/kelp-weed-patches.XXXXXX")
cleanup() {
    if [ "$KEEP" = 1 ]; then
        say "kept $SCRATCH"
    else
        rm -rf "$SCRATCH"
    fi
}
trap cleanup EXIT

# fresh_tree DIR: a writable copy of the pristine module source.
fresh_tree() {
    rm -rf "$1"
    cp -r "$MODULE_DIR" "$1"
    chmod -R u+w "$1"
}

# apply_patch TREE PATCH [patch options...]
apply_patch() {
    local tree=$1 p=$2
    shift 2
    echo "+ patch -p1 --forward --batch $* < $(basename "$p")"
    (cd "$tree" && patch -p1 --forward --batch --quiet "$@") <"$p" ||
        die "$(basename "$p") does not apply cleanly (after the patches before it)"
}

# patch_tests PATCH: prints "package-dir TestName" for each test function the patch adds.
patch_tests() {
    awk '
        /^\+\+\+ b\// { file = substr($2, 3); next }
        file ~ /_test\.go$/ && /^\+func Test[A-Za-z0-9_]*\(t \*testing\.T\)/ {
            name = $2; sub(/\(.*/, "", name)
            dir = file; sub(/\/[^\/]*$/, "", dir)
            print dir, name
        }' "$1"
}

# run_tests TREE PATCH...: runs the tests the given patches add; returns go test's status.
run_tests() {
    local tree=$1 p
    shift
    local lines
    lines=$(for p in "$@"; do patch_tests "$p"; done)
    [ -n "$lines" ] || die "no tests found in $*"
    local names pkgs
    names=$(awk '{print $2}' <<<"$lines" | sort -u | paste -sd '|')
    pkgs=$(awk '{print "./" $1}' <<<"$lines" | sort -u | tr '\n' ' ')
    # shellcheck disable=SC2086 # one argument per package
    (cd "$tree" && run go test -count=1 -v -timeout 300s -run "^($names)\$" $pkgs)
}

# ---- the series, applied in order, and its tests ----------------------------------------------

TREE=$SCRATCH/patched
say "copying the source to $TREE"
fresh_tree "$TREE"
for p in "${PATCHES[@]}"; do
    apply_patch "$TREE" "$p"
done

changed=$(cat "${PATCHES[@]}" | sed -n 's|^+++ b/\(.*\.go\)$|\1|p' | sort -u)
# shellcheck disable=SC2086 # one argument per file
unformatted=$(cd "$TREE" && gofmt -l $changed)
[ -z "$unformatted" ] || die "not gofmt-clean after the series: $unformatted"
say "gofmt: the $(wc -w <<<"$changed") Go files the series touches are clean"

say "running the tests the series adds, on the patched source"
status=0
run_tests "$TREE" "${PATCHES[@]}" >"$SCRATCH/tests.log" 2>&1 || status=$?
# go test -v output without the broker's glog lines
grep -E '^(\+ go test|--- |ok |FAIL|PASS|panic:)|_test\.go:[0-9]+:' "$SCRATCH/tests.log" || true
if [ "$status" != 0 ]; then
    grep -v '^[IWE][0-9]\{4\} ' "$SCRATCH/tests.log" | tail -n 40 >&2
    die "patch tests fail on the patched source (go test exit status $status)"
fi
say "PASS: all patch tests pass on the patched source ($((SECONDS - START)) s so far)"

# ---- each patch's tests fail without it ------------------------------------------------------

if [ "$VERIFY_FAIL" = 1 ]; then
    BASE=$SCRATCH/base
    say "copying the source to $BASE"
    fresh_tree "$BASE"
    for p in "${PATCHES[@]}"; do
        say "$(basename "$p"): its tests on the source without it (earlier patches applied, plus only its *_test.go changes)"
        STAGE=$SCRATCH/stage
        rm -rf "$STAGE"
        cp -r "$BASE" "$STAGE"
        # Only the *_test.go files of this patch: split it with filterdiff-free awk.
        awk '
            /^diff --git / { keep = ($3 ~ /_test\.go$/) }
            /^-- $/ { keep = 0 }
            keep { print }' "$p" >"$SCRATCH/tests-only.patch"
        apply_patch "$STAGE" "$SCRATCH/tests-only.patch"
        out=$SCRATCH/verify.log
        if run_tests "$STAGE" "$p" >"$out" 2>&1; then
            grep -v '^[IWE][0-9]\{4\} ' "$out" | tail -n 20
            die "$(basename "$p"): its tests pass without it"
        fi
        if grep -qE '\[build failed\]|\[setup failed\]|^# ' "$out"; then
            how="they do not build (the API they test is new)"
            grep -E 'undefined|has no field or method|cannot use' "$out" | head -n 3 | sed 's/^/    /'
        else
            how="they fail:"
            grep -E -- '^\s*--- FAIL|_test\.go:[0-9]+:' "$out" | head -n 16 | sed 's/^/    /'
        fi
        say "OK: without $(basename "$p") $how"
        apply_patch "$BASE" "$p"
    done
    say "PASS: every patch's tests fail without it"
fi

say "done in $((SECONDS - START)) s"
