#!/usr/bin/env bash
# kelp against its peers, on this machine, in one run: the same `loadtest produce` workloads
# against kelp, Apache Kafka (KRaft, single node, jars from Maven Central), Tansu (memory
# storage, if `cargo install tansu --features dynostore` works) and the physical floor
# (`loadtest floor`, a loopback echo with the same frame sizes).
#
# Workloads (acks=1, closed loop):
#   a: 1 connection, 1 request in flight, 100-byte records, 1 record per request
#   b: 8 connections (8 partitions), 1 request in flight each, 16 x 1 KiB records per request
#      (16 KiB batches)
#   c: a real client in open loop: librdkafka (confluent-kafka, scripts/rdkafka-probe.py), one
#      100-byte record per request every 1/N s whatever the answers do, at 1,000 and 5,000
#      records/s (c1000, c5000); latency from the time a record was due to its delivery report
# Placement: every broker is pinned to core $BENCH_BROKER_CORE (kelp with --cores, the JVM and
# Tansu with taskset), the loadtest client to $BENCH_CLIENT_CORE, the floor's echo server to the
# broker core. On a 2-core machine that gives each broker one core and the client the other.
#
# Output: bench-results/<date>.md (table, targets, machine), bench-results/<date>-a.svg and
# -b.svg (latency by percentile), printed at the end; raw JSON/.hgrm/logs under
# target/bench-peers/<date>/.
#
# Usage: scripts/bench-peers.sh
# Environment:
#   BENCH_DURATION (15s), BENCH_WARMUP (5s)  measured time and warm-up per workload
#   BENCH_PEERS ("floor kelp kafka tansu")   which systems to run
#   BENCH_BROKER_CORE (0), BENCH_CLIENT_CORE (1)
#   BENCH_KAFKA_VERSION (4.1.1)              org.apache.kafka:kafka_2.13 version
#   BENCH_TANSU_INSTALL (1)                  0 = do not try `cargo install tansu` (it is built
#                                            with --features dynostore, for memory:// storage;
#                                            the default features have no in-memory engine)
#   KELP_BIN, LOADTEST_BIN                   use these binaries instead of `cargo build --release`
#   BENCH_NOTE                               a line added to the report's machine section
#   BENCH_KELP_SPIN_US                       kelp's --spin-us for the run (default 2000: the broker has its core to itself)
#   BENCH_PROBE_RATES ("1000 5000")          workload c's rates; empty: no workload c
#   KELP_PYTHON_VENV                         a venv with confluent-kafka (default
#                                            target/interop/venv-python; made when missing)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/bench-lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/bench-lib.sh"

DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-5s}
PEERS=${BENCH_PEERS:-"floor kelp kafka tansu"}
BROKER_CORE=${BENCH_BROKER_CORE:-0}
CLIENT_CORE=${BENCH_CLIENT_CORE:-1}
KAFKA_VERSION=${BENCH_KAFKA_VERSION:-4.1.1}
TANSU_INSTALL=${BENCH_TANSU_INSTALL:-1}

STAMP=$(date -u +%Y-%m-%d-%H%M)
RESULTS_DIR=$ROOT/bench-results
WORK=$ROOT/target/bench-peers
RUN_DIR=$WORK/$STAMP
mkdir -p "$RESULTS_DIR" "$RUN_DIR"
bench_notes "$RUN_DIR"

# --- binaries ------------------------------------------------------------------------------------
bench_binaries

# --- machine -------------------------------------------------------------------------------------
{
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores ($(lscpu | sed -n 's/^Hypervisor vendor: *//p') guest)"
    echo "- kernel: $(uname -r); memory: $(free -g | awk '/^Mem:/{print $2}') GiB"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- busiest other processes at start: $(ps -eo pcpu,comm --sort=-pcpu --no-headers | head -4 | awk '{printf "%s %s%%; ", $2, $1}')"
    echo "- placement: brokers on core $BROKER_CORE, loadtest client on core $CLIENT_CORE (busy-polling), floor server on core $BROKER_CORE"
    echo "- per workload: ${WARMUP} warm-up, then ${DURATION} measured"
    echo "- kelp binary: $KELP_BIN (built $(date -u -r "$KELP_BIN" '+%Y-%m-%d %H:%M UTC')); repo at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' with uncommitted changes in src/ or Cargo.toml')"
    if [[ -n ${BENCH_NOTE:-} ]]; then echo "- note: $BENCH_NOTE"; fi
} >"$RUN_DIR/machine.md"

# --- workloads -----------------------------------------------------------------------------------
LOAD_A=(--connections 1 --in-flight 1 --record-bytes 100 --batch-records 1)
LOAD_B=(--connections 8 --in-flight 1 --record-bytes 1024 --batch-records 16)
PARTS_A=(--partitions 1)
PARTS_B=(--partitions 8)
RUN_FLAGS=(--warmup "$WARMUP" --duration "$DURATION" --core "$CLIENT_CORE" --json)

# run_loadtest NAME LABEL ARGS...: one loadtest run; JSON to $RUN_DIR/NAME.json on success.
run_loadtest() {
    local name=$1 label=$2
    shift 2
    echo "bench: $name: loadtest $*" >&2
    if "$LOADTEST" "$@" "${RUN_FLAGS[@]}" --label "$label" --hgrm "$RUN_DIR/$name.hgrm" \
        >"$RUN_DIR/$name.json.tmp" 2>"$RUN_DIR/$name.log"; then
        mv "$RUN_DIR/$name.json.tmp" "$RUN_DIR/$name.json"
        sed -n '/^loadtest /,$p' "$RUN_DIR/$name.log" >&2
    else
        rm -f "$RUN_DIR/$name.json.tmp"
        note "$name failed: $(tail -n 1 "$RUN_DIR/$name.log")"
    fi
}

PROBE_RATES=${BENCH_PROBE_RATES-"1000 5000"}
if [[ -n $PROBE_RATES ]]; then
    probe_venv
fi

# run_probe NAME LABEL BOOTSTRAP RATE: workload c at RATE, the client pinned to the client core.
run_probe() {
    echo "bench: $1: rdkafka-probe --rate $4" >&2
    if taskset -c "$CLIENT_CORE" "$VENV/bin/python" scripts/rdkafka-probe.py --bootstrap "$3" \
        --topic "bench-c$4" --rate "$4" --duration "${DURATION%s}" --warmup "${WARMUP%s}" \
        --label "$2" >"$RUN_DIR/$1.json.tmp" 2>"$RUN_DIR/$1.log"; then
        mv "$RUN_DIR/$1.json.tmp" "$RUN_DIR/$1.json"
        tail -n 1 "$RUN_DIR/$1.log" >&2
    else
        rm -f "$RUN_DIR/$1.json.tmp"
        note "$1 failed: $(tail -n 1 "$RUN_DIR/$1.log")"
    fi
}

produce_both() { # system bootstrap
    run_loadtest "$1-a" "$1" produce --bootstrap "$2" --topic bench-a "${PARTS_A[@]}" --acks 1 "${LOAD_A[@]}"
    run_loadtest "$1-b" "$1" produce --bootstrap "$2" --topic bench-b "${PARTS_B[@]}" --acks 1 "${LOAD_B[@]}"
    local rate
    for rate in $PROBE_RATES; do
        run_probe "$1-c$rate" "$1" "$2" "$rate"
    done
}

# wait_kafka_ready NAME BOOTSTRAP SECONDS: a broker can accept TCP before it can create topics.
wait_kafka_ready() {
    local deadline=$((SECONDS + $3))
    until "$LOADTEST" produce --bootstrap "$2" --topic bench-ready --records 1 --warmup 0s \
        --quiet >/dev/null 2>"$RUN_DIR/$1-ready.log"; do
        if ((SECONDS >= deadline)); then
            note "$1 not ready within $3 s: $(tail -n 1 "$RUN_DIR/$1-ready.log")"
            return 1
        fi
        sleep 1
    done
}

has_peer() { [[ " $PEERS " == *" $1 "* ]]; }

# --- floor ---------------------------------------------------------------------------------------
if has_peer floor; then
    banner "bench: floor (loopback echo)"
    run_loadtest floor-a "floor (busy-poll)" floor "${LOAD_A[@]}" --topic bench-a --server-core "$BROKER_CORE"
    run_loadtest floor-b "floor (busy-poll)" floor "${LOAD_B[@]}" --topic bench-b --server-core "$BROKER_CORE"
    run_loadtest floor-blocking-a "floor (blocking)" floor "${LOAD_A[@]}" --topic bench-a --server-core "$BROKER_CORE" --blocking
fi

# --- kelp ----------------------------------------------------------------------------------------
if has_peer kelp; then
    banner "bench: kelp"
    port=$(free_port)
    "$KELP_BIN" --listen "127.0.0.1:$port" --cores "$BROKER_CORE" --spin-us "${BENCH_KELP_SPIN_US:-2000}" >"$RUN_DIR/kelp.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if wait_port "$port" "$pid" kelp 60 "$RUN_DIR/kelp.log"; then
        produce_both kelp "127.0.0.1:$port"
    fi
    stop_pid "$pid" kelp
fi

# --- Apache Kafka --------------------------------------------------------------------------------
if has_peer kafka; then
    banner "bench: Apache Kafka $KAFKA_VERSION (KRaft)"
    KDIR=$WORK/kafka-$KAFKA_VERSION
    mkdir -p "$KDIR"
    kafka_ok=1
    if ! ls "$KDIR"/lib/kafka_2.13-*.jar >/dev/null 2>&1; then
        cat >"$KDIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kelp.bench</groupId>
  <artifactId>kafka-peer</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
EOF
        echo "bench: fetching Kafka jars with Maven (log: $RUN_DIR/kafka-mvn.log)" >&2
        if ! (cd "$KDIR" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib) \
            >"$RUN_DIR/kafka-mvn.log" 2>&1; then
            note "Kafka: Maven could not fetch the jars: $(grep -m1 ERROR "$RUN_DIR/kafka-mvn.log" || tail -n 1 "$RUN_DIR/kafka-mvn.log")"
            kafka_ok=0
        fi
    fi
    if ((kafka_ok)); then
        kport=$(free_port)
        cport=$(free_port)
        kdata=$RUN_DIR/kafka-data
        cat >"$RUN_DIR/kafka-server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$kport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$kport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kdata
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
        cat >"$RUN_DIR/kafka-log4j2.yaml" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
EOF
        KCP="$KDIR/lib/*"
        # The JVM flags Kafka's own kafka-server-start.sh uses.
        KJVM=(-Xms1g -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
            "-Dlog4j2.configurationFile=$RUN_DIR/kafka-log4j2.yaml")
        cluster_id=$(java -cp "$KCP" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        if ! java "${KJVM[@]}" -cp "$KCP" kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$RUN_DIR/kafka-server.properties" >"$RUN_DIR/kafka-format.log" 2>&1; then
            note "Kafka: kafka-storage format failed: $(tail -n 1 "$RUN_DIR/kafka-format.log")"
        else
            taskset -c "$BROKER_CORE" java "${KJVM[@]}" -cp "$KCP" kafka.Kafka \
                "$RUN_DIR/kafka-server.properties" >"$RUN_DIR/kafka.log" 2>&1 &
            pid=$!
            STARTED_PIDS+=("$pid")
            if wait_port "$kport" "$pid" Kafka 120 "$RUN_DIR/kafka.log" && wait_kafka_ready kafka "127.0.0.1:$kport" 120; then
                produce_both kafka "127.0.0.1:$kport"
            fi
            stop_pid "$pid" Kafka
        fi
    fi
fi

# --- Tansu ---------------------------------------------------------------------------------------
if has_peer tansu; then
    banner "bench: Tansu"
    TANSU=$(command -v tansu || true)
    [[ -z $TANSU && -x $HOME/.cargo/bin/tansu ]] && TANSU=$HOME/.cargo/bin/tansu
    if [[ -z $TANSU && $TANSU_INSTALL == 1 ]]; then
        # dynostore: the in-memory storage engine (memory://), like kelp's memory backend.
        echo "bench: cargo install tansu --locked --features dynostore (log: $RUN_DIR/tansu-install.log)" >&2
        if cargo install tansu --locked --features dynostore >"$RUN_DIR/tansu-install.log" 2>&1; then
            TANSU=$HOME/.cargo/bin/tansu
        else
            note "Tansu: cargo install tansu --locked --features dynostore failed: $(grep -m1 '^error' "$RUN_DIR/tansu-install.log" || tail -n 1 "$RUN_DIR/tansu-install.log")"
        fi
    fi
    if [[ -n $TANSU ]]; then
        tport=$(free_port)
        taskset -c "$BROKER_CORE" "$TANSU" broker \
            --listener-url "tcp://127.0.0.1:$tport" \
            --advertised-listener-url "tcp://127.0.0.1:$tport" \
            --storage-engine memory://tansu/ >"$RUN_DIR/tansu.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        if wait_port "$tport" "$pid" Tansu 60 "$RUN_DIR/tansu.log" && wait_kafka_ready tansu "127.0.0.1:$tport" 60; then
            produce_both tansu "127.0.0.1:$tport"
        fi
        stop_pid "$pid" Tansu
    elif [[ $TANSU_INSTALL != 1 ]]; then
        note "Tansu: not installed and BENCH_TANSU_INSTALL=0"
    fi
fi

# --- report --------------------------------------------------------------------------------------
banner "bench: report"
for w in a b; do
    files=()
    for s in floor floor-blocking kelp kafka tansu; do
        [[ -f $RUN_DIR/$s-$w.json ]] && files+=("$RUN_DIR/$s-$w.json")
    done
    if ((${#files[@]})); then
        title="Workload ($w): $([[ $w == a ]] && echo '1 conn, 100 B x 1 record, acks=1' || echo '8 conns, 16 KiB batches, acks=1')"
        "$LOADTEST" plot --svg "$RESULTS_DIR/$STAMP-$w.svg" --title "$title" "${files[@]}" 2>/dev/null ||
            note "plot for workload $w failed"
    fi
done
REPORT=$RESULTS_DIR/$STAMP.md
python3 - "$RUN_DIR" "$STAMP" >"$REPORT" <<'PY'
import json, os, re, sys
run_dir, stamp = sys.argv[1], sys.argv[2]
def load(name):
    p = os.path.join(run_dir, name + ".json")
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
systems = [("floor", "floor (busy-poll echo)"), ("floor-blocking", "floor (blocking echo)"),
           ("kelp", "kelp"), ("kafka", "Apache Kafka"), ("tansu", "Tansu")]
workloads = {"a": "1 connection, 1 in flight, 100 B records, 1 record/request, acks=1, closed loop",
             "b": "8 connections (8 partitions), 1 in flight each, 16 x 1 KiB records/request (16 KiB batches), acks=1, closed loop"}
def f(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"
out = [f"# kelp vs peers, {stamp}", ""]
with open(os.path.join(run_dir, "machine.md")) as m:
    out += ["## Machine", "", m.read().rstrip(), ""]
out += ["Latency is per Produce request (sent -> response read), in microseconds; throughput counts record values (MB = 10^6 B).",
        "Ratios are kelp / peer: below 1 is better for kelp on latency, above 1 better on throughput.", ""]
checks = []
for w, desc in workloads.items():
    out += [f"## Workload ({w}): {desc}", "",
            "| system | p50 us | p99 us | p99.9 us | max us | records/s | MB/s | errors | kelp/peer p99 | kelp/peer records/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    kelp = load(f"kelp-{w}")
    for key, name in systems:
        r = load(f"{key}-{w}")
        if r is None:
            if os.path.exists(os.path.join(run_dir, f"{key}-{w}.log")):
                out.append(f"| {name} | failed (see notes) | | | | | | | | |")
            continue
        rp99 = kp99 = ""
        if kelp and key != "kelp" and r["p99_us"] and r["records_per_sec"]:
            rp99 = f"{kelp['p99_us'] / r['p99_us']:.2f}"
            kp99 = f"{kelp['records_per_sec'] / r['records_per_sec']:.2f}"
        out.append(f"| {name} | {f(r['p50_us'])} | {f(r['p99_us'])} | {f(r['p999_us'])} | {f(r['max_us'])} | "
                   f"{f(r['records_per_sec'], 0)} | {f(r['mb_per_sec'], 2)} | {r['errors']} | {rp99} | {kp99} |")
    out += ["", f"![workload {w}]({stamp}-{w}.svg)", ""]
    floor, kafka = load(f"floor-{w}"), load(f"kafka-{w}")
    if w == "a":
        if kelp and floor:
            ok = kelp["p99_us"] <= 2 * floor["p99_us"]
            checks.append(f"- (a) kelp p99 within 2x the floor p99: {'PASS' if ok else 'FAIL'} "
                          f"(kelp {kelp['p99_us']:.1f} us, floor {floor['p99_us']:.1f} us, ratio {kelp['p99_us'] / floor['p99_us']:.2f})")
        if kelp and kafka:
            ok = kelp["p99_us"] * 5 <= kafka["p99_us"]
            checks.append(f"- (a) kelp p99 at most 1/5 of Kafka's: {'PASS' if ok else 'FAIL'} "
                          f"(kelp {kelp['p99_us']:.1f} us, Kafka {kafka['p99_us']:.1f} us, ratio {kelp['p99_us'] / kafka['p99_us']:.2f})")
    else:
        if kelp and kafka:
            ok = kelp["records_per_sec"] >= 2 * kafka["records_per_sec"]
            checks.append(f"- (b) kelp throughput at least 2x Kafka's: {'PASS' if ok else 'FAIL'} "
                          f"(kelp {kelp['mb_per_sec']:.1f} MB/s, Kafka {kafka['mb_per_sec']:.1f} MB/s, ratio {kelp['records_per_sec'] / kafka['records_per_sec']:.2f})")
        if kelp:
            ok = kelp["p99_us"] < 1000
            checks.append(f"- (b) kelp p99 under 1 ms: {'PASS' if ok else 'FAIL'} (kelp {kelp['p99_us']:.1f} us)")
    for key, name in systems:
        r = load(f"{key}-{w}")
        if r and (r.get("errors") or r.get("fatal")):
            kinds = "; ".join(f"{v} x {k}" for k, v in r.get("error_kinds", {}).items())
            checks.append(f"- ({w}) {name} errors: {r['errors']} {kinds} {' '.join(r.get('fatal', []))}".rstrip())
        if r and r.get("warmup_errors"):
            checks.append(f"- ({w}) {name}: {r['warmup_errors']} errors during warm-up (not counted; see target/bench-peers/{stamp}/{key}-{w}.log)")
rates = sorted({int(m.group(1)) for m in (re.match(r"^(?:kelp|kafka|tansu)-c(\d+)\.json$", n)
                                          for n in os.listdir(run_dir)) if m})
if rates:
    out += ["## Workload (c): librdkafka (confluent-kafka) in open loop, 1 x 100 B record/request, acks=1", "",
            "Latency from the time a record was due to its delivery report (no coordinated omission).", "",
            "| system | rate/s | p50 us | p90 us | p99 us | p99.9 us | max us | records/s | errors | kelp/peer p99 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        kelp = load(f"kelp-c{rate}")
        for key, name in systems:
            r = load(f"{key}-c{rate}")
            if r is None:
                continue
            ratio = f"{kelp['p99_us'] / r['p99_us']:.2f}" if kelp and key != "kelp" and r["p99_us"] else ""
            out.append(f"| {name} | {rate:,} | {f(r['p50_us'])} | {f(r['p90_us'])} | {f(r['p99_us'])} | {f(r['p999_us'])} | "
                       f"{f(r['max_us'])} | {f(r['records_per_sec'], 0)} | {r['errors']} | {ratio} |")
        kafka = load(f"kafka-c{rate}")
        if kelp and kafka:
            ok = kelp["p99_us"] * 5 <= kafka["p99_us"]
            checks.append(f"- (c) at {rate:,}/s kelp p99 at most 1/5 of Kafka's: {'PASS' if ok else 'FAIL'} "
                          f"(kelp {kelp['p99_us']:.0f} us, Kafka {kafka['p99_us']:.0f} us, ratio {kelp['p99_us'] / kafka['p99_us']:.2f})")
    low, high = load("kelp-c1000"), load("kelp-c5000")
    if low and high:
        ok = high["p99_us"] <= 3 * low["p99_us"]
        checks.append(f"- (c) kelp p99 at 5,000/s within 3x its p99 at 1,000/s: {'PASS' if ok else 'FAIL'} "
                      f"({high['p99_us']:.0f} us against {low['p99_us']:.0f} us, {high['p99_us'] / low['p99_us']:.2f}x)")
    out.append("")
out += ["## Targets", ""] + (checks or ["- (no pair of results to compare)"]) + [""]
with open(os.path.join(run_dir, "notes.txt")) as n:
    notes = [l.strip() for l in n if l.strip()]
if notes:
    out += ["## Notes", ""] + [f"- {l}" for l in notes] + [""]
out += [f"Raw results (JSON, .hgrm, logs): target/bench-peers/{stamp}/ (not committed).", ""]
print("\n".join(out))
PY
banner "bench: $REPORT"
cat "$REPORT"
