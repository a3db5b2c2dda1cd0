#!/usr/bin/env bash
# kcat (librdkafka CLI) suite: metadata, roundtrip-none and roundtrip-<codec>.
# Contract: tests/interop/README.md. Env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX.
set -euo pipefail

: "${KELP_BOOTSTRAP:?KELP_BOOTSTRAP must be set}"
: "${KELP_TOPIC_PREFIX:?KELP_TOPIC_PREFIX must be set}"
CLIENT=kcat
N=500
CODECS=(none gzip snappy lz4 zstd)
CMD_TIMEOUT=${KELP_INTEROP_KCAT_TIMEOUT:-90} # per kcat call; `timeout --foreground` keeps kcat
# in the suite's process group, so the harness can stop the whole suite

result() { # scenario status detail
    local detail=${3//$'\n'/ }
    echo "RESULT|$CLIENT|$1|$2|${detail:0:900}"
}

errsum() { # file: the kcat/librdkafka error lines worth quoting (else the last lines)
    local e
    e=$(grep -E '% ERROR|% Delivery failed|FAIL\|' "$1" | tail -n 2)
    [[ -n $e ]] || e=$(tail -n 3 "$1")
    printf '%s' "$e" | tr '\n' ' '
}

KCAT=""
for c in kcat kafkacat; do
    if command -v "$c" >/dev/null 2>&1; then KCAT=$(command -v "$c"); break; fi
done
if [[ -z $KCAT ]]; then
    why="kcat/kafkacat not installed (Debian: apt-get install kcat; .ci/run installs it)"
    result metadata skip "$why"
    for c in "${CODECS[@]}"; do result "roundtrip-$c" skip "$why"; done
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rc=0
version=$("$KCAT" -V 2>&1 | grep -m1 '^Version' || true)
echo "[kcat] using $KCAT: $version" >&2
features=$(sed -n 's/.*builtin\.features=\([^ )]*\).*/\1/p' <<<"$version")

# Common client settings: generous timeouts, and errors go to stderr (the suite log).
KOPTS=(-b "$KELP_BOOTSTRAP" -X socket.timeout.ms=30000 -X topic.metadata.refresh.interval.ms=1000)

# --- metadata: exactly one broker, and it is the bootstrap address -------------------------------
metadata() {
    local out host port
    if ! out=$(timeout --foreground "$CMD_TIMEOUT" "$KCAT" "${KOPTS[@]}" -L -m 30 2>"$WORK/meta.err"); then
        result metadata fail "kcat -L failed: $(errsum "$WORK/meta.err")"
        return 1
    fi
    printf '%s\n' "$out" >&2
    local nb
    nb=$(sed -n 's/^ *\([0-9][0-9]*\) brokers:$/\1/p' <<<"$out")
    if [[ $nb != 1 ]]; then
        result metadata fail "kcat -L lists '${nb:-no}' brokers, expected exactly 1: $(grep -m3 -E 'brokers:|broker ' <<<"$out" | tr '\n' ' ')"
        return 1
    fi
    host=${KELP_BOOTSTRAP%:*}
    port=${KELP_BOOTSTRAP##*:}
    if ! grep -Eq "^ *broker -?[0-9]+ at $host:$port( |\$)" <<<"$out"; then
        result metadata fail "the one broker is not $KELP_BOOTSTRAP: $(grep -m1 -E '^ *broker -?[0-9]+ at ' <<<"$out")"
        return 1
    fi
    result metadata pass "1 broker: $(grep -m1 -E '^ *broker -?[0-9]+ at ' <<<"$out" | sed 's/^ *//')"
}

# --- roundtrip-<codec>: 500 keyed lines (with 2 same-key headers) produced with -z <codec>,
# consumed with -C -e -o beginning; compared exactly (content, count, per-partition offsets).
roundtrip() {
    local codec=$1 scen="roundtrip-$1" topic="$KELP_TOPIC_PREFIX-kcat-$1" zopt=()
    if [[ $codec != none ]]; then
        if [[ ",$features," != *",$codec,"* ]]; then
            result "$scen" skip "this kcat/librdkafka build lacks $codec (builtin.features=$features)"
            return 0
        fi
        zopt=(-z "$codec")
    fi
    local in="$WORK/$codec.in" out="$WORK/$codec.out" err="$WORK/$codec.err"
    # key:value lines; values contain ':' and spaces on purpose (only the first ':' splits).
    local i
    for ((i = 0; i < N; i++)); do
        printf 'key-%04d:value %d of %s: %s\n' "$i" "$i" "$codec" "$(printf 'x%.0s' $(seq 1 $((i % 40 + 1))))"
    done >"$in"
    # Producing to a topic that does not exist yet: kcat relies on the broker creating it on
    # first use (Metadata with allow_auto_topic_creation), as a stock Kafka broker does.
    if ! timeout --foreground "$CMD_TIMEOUT" "$KCAT" "${KOPTS[@]}" -P -t "$topic" -K: "${zopt[@]}" \
        -H "dup=first" -H "dup=second" -X acks=all -X message.timeout.ms=60000 \
        <"$in" 2>"$err"; then
        sed "s/^/[kcat -P $codec] /" "$err" >&2
        result "$scen" fail "kcat -P exited non-zero: $(errsum "$err")"
        return 1
    fi
    sed "s/^/[kcat -P $codec] /" "$err" >&2
    if grep -qi 'delivery failed' "$err"; then
        result "$scen" fail "kcat -P reported failed deliveries: $(grep -i -m3 'delivery failed' "$err")"
        return 1
    fi
    # %p partition, %o offset, %k key, %h headers, %s value
    if ! timeout --foreground "$CMD_TIMEOUT" "$KCAT" "${KOPTS[@]}" -C -t "$topic" -o beginning -e -q \
        -f '%p\t%o\t%k\t%h\t%s\n' >"$out" 2>"$err"; then
        sed "s/^/[kcat -C $codec] /" "$err" >&2
        result "$scen" fail "kcat -C exited non-zero or timed out: $(errsum "$err")"
        return 1
    fi
    sed "s/^/[kcat -C $codec] /" "$err" >&2
    local n
    n=$(wc -l <"$out")
    # offsets dense from 0 per partition, in production order (keys increasing per partition)
    local bad
    bad=$(awk -F'\t' '{
            if (!($1 in next_off)) next_off[$1] = 0;
            if ($2 != next_off[$1]) { printf "partition %s: offset %s where %s expected", $1, $2, next_off[$1]; exit }
            next_off[$1]++;
            if (($1 in last) && $3 <= last[$1]) { printf "partition %s offset %s: key %s after %s (order)", $1, $2, $3, last[$1]; exit }
            last[$1] = $3;
            if ($4 != "dup=first,dup=second") { printf "partition %s offset %s: headers \"%s\", expected \"dup=first,dup=second\"", $1, $2, $4; exit }
        }' "$out")
    if [[ -n $bad ]]; then
        result "$scen" fail "$bad"
        return 1
    fi
    # exact content: the key:value lines, sorted (partitions interleave), equal to the input
    if ! diff <(cut -f3,5 "$out" | sed 's/\t/:/' | sort) <(sort "$in") >"$WORK/$codec.diff"; then
        result "$scen" fail "consumed $n lines, produced $N; first difference (< consumed, > produced): $(grep -m2 '^[<>]' "$WORK/$codec.diff" | tr '\n' ' ')"
        return 1
    fi
    if [[ $n -ne $N ]]; then
        result "$scen" fail "consumed $n lines, expected $N"
        return 1
    fi
    local parts
    parts=$(cut -f1 "$out" | sort -n | uniq -c | awk '{printf "%sp%s:%s", sep, $2, $1; sep=" "}')
    result "$scen" pass "$N keyed lines with 2 headers via ${zopt[*]:-no -z}, read back identical ($parts)"
}

metadata || rc=1
for c in "${CODECS[@]}"; do
    roundtrip "$c" || rc=1
done
exit $rc
