#!/usr/bin/env python3
"""An idempotent confluent-kafka producer through kelp while the SeaweedMQ broker is killed.

    broker_restart.py SIGNAL_DIR

Produces KELP_SWMQ_KILL_RECORDS (100,000) records, paced at KELP_SWMQ_KILL_RATE records/s, to a
fresh 3-partition topic with enable.idempotence=true and acks=all; record i goes to partition
i % 3 and its value starts with i. When KELP_SWMQ_KILL_AT records have been acknowledged it
creates SIGNAL_DIR/kill; the calling script (scripts/test-seaweedmq.sh) then kills the MQ broker
with SIGKILL, starts it again and creates SIGNAL_DIR/restarted. Production goes on throughout:
librdkafka retries what kelp answers with retriable errors while the broker is away.

Then a plain consumer reads every partition from the start to its high-water mark, and:
  broker-kill-produce   every record was acknowledged (none failed for good);
  broker-kill-no-loss   every acknowledged record is read back, at the offset its
                        acknowledgement gave, with its value unchanged;
  broker-kill-no-dups   no record is read twice, and each partition holds its records in the
                        order they were produced, with no gaps in the offsets.

Prints RESULT|confluent-kafka|<scenario>|pass/fail|detail lines like the interop suites.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from confluent_util import CLIENT, ErrorLog, admin_client, base_conf, create_topics  # noqa: E402
from interop_common import Fail, Progress, Reporter, env, log, main_wrapper  # noqa: E402

N = int(os.environ.get("KELP_SWMQ_KILL_RECORDS", "100000"))
KILL_AT = int(os.environ.get("KELP_SWMQ_KILL_AT", str(N * 3 // 10)))
RATE = int(os.environ.get("KELP_SWMQ_KILL_RATE", "10000"))
PARTITIONS = 3
VALUE_PAD = b"." * 92


def value_of(i):
    return b"%08d" % i + VALUE_PAD


def index_of(value):
    if value is None or len(value) != 8 + len(VALUE_PAD) or value[8:] != VALUE_PAD:
        raise Fail(f"a record that this program did not produce: {value!r:.60}")
    return int(value[:8])


def wait_file(path, what, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise Fail(f"{what}: {path} did not appear within {timeout_s}s")
        time.sleep(0.05)


class Produced:
    def __init__(self):
        self.acked = {}  # i -> (partition, offset)
        self.failed = {}  # i -> error
        self.errors = ErrorLog("producer")


def produce(bootstrap, topic, signal_dir, out):
    conf = base_conf(bootstrap)
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        # Ride out the broker's absence: retry for up to ten minutes.
        "message.timeout.ms": 600000,
        "request.timeout.ms": 30000,
        "retry.backoff.ms": 100,
        "error_cb": out.errors,
    })
    p = Producer(conf)

    def on_delivery(err, msg):
        i = index_of(msg.value())
        if err is not None:
            out.failed[i] = str(err)
        else:
            out.acked[i] = (msg.partition(), msg.offset())

    kill_file = os.path.join(signal_dir, "kill")
    signalled = False
    t0 = time.monotonic()
    last_log = t0
    for i in range(N):
        # Pace the producer so that the kill lands in the middle of the stream.
        ahead = i / RATE - (time.monotonic() - t0)
        if ahead > 0:
            p.poll(ahead)
        while True:
            try:
                p.produce(topic, value_of(i), partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if not signalled and len(out.acked) >= KILL_AT:
            open(kill_file, "w").close()
            signalled = True
            log(f"{len(out.acked)} records acknowledged, {i + 1} produced: kill the broker now")
        if time.monotonic() - last_log > 5:
            last_log = time.monotonic()
            log(f"produced {i + 1}/{N}, acknowledged {len(out.acked)}, failed {len(out.failed)}")
    prog = Progress("delivery of every record", progress_s=300, hard_s=900)
    while len(out.acked) + len(out.failed) < N:
        p.poll(0.5)
        if not signalled and len(out.acked) >= KILL_AT:
            open(kill_file, "w").close()
            signalled = True
        prog.update(len(out.acked) + len(out.failed))
        if time.monotonic() - last_log > 5:
            last_log = time.monotonic()
            log(f"waiting for acknowledgements: {len(out.acked)} acked, {len(out.failed)} failed")
        why = prog.expired()
        if why:
            raise Fail(why + out.errors.summary())
    p.flush(30)
    if not signalled:
        raise Fail(f"only {len(out.acked)} records were acknowledged; the kill never happened")


def read_all(bootstrap, topic):
    """{partition: [(offset, i)]} from the log start to the high-water mark."""
    conf = base_conf(bootstrap)
    conf.update({"group.id": f"{topic}-reader", "enable.auto.commit": False,
                 "auto.offset.reset": "earliest", "enable.partition.eof": False})
    c = Consumer(conf)
    try:
        highs = {}
        for part in range(PARTITIONS):
            low, high = c.get_watermark_offsets(TopicPartition(topic, part), timeout=30)
            highs[part] = (low, high)
        c.assign([TopicPartition(topic, part, lo) for part, (lo, _) in highs.items()])
        got = {part: [] for part in range(PARTITIONS)}
        pos = {part: lo for part, (lo, _) in highs.items()}
        prog = Progress("reading the topic back")
        while any(pos[part] < highs[part][1] for part in got):
            for m in c.consume(500, timeout=1.0):
                if m.error():
                    raise Fail(f"consume error: {m.error()}")
                got[m.partition()].append((m.offset(), index_of(m.value())))
                pos[m.partition()] = m.offset() + 1
            prog.update(sum(len(v) for v in got.values()))
            why = prog.expired()
            if why:
                raise Fail(f"{why}; positions {pos}, watermarks {highs}")
        return got, highs
    finally:
        c.close()


def main():
    signal_dir = sys.argv[1]
    bootstrap = env("KELP_BOOTSTRAP")
    topic = f"{env('KELP_TOPIC_PREFIX')}-swmq-broker-kill"
    r = Reporter(CLIENT, ["broker-kill-produce", "broker-kill-no-loss", "broker-kill-no-dups"])
    out = Produced()

    def body(r):
        def setup_and_produce():
            create_topics(admin_client(bootstrap), [topic], PARTITIONS)
            t0 = time.monotonic()
            produce(bootstrap, topic, signal_dir, out)
            wait_file(os.path.join(signal_dir, "restarted"), "broker restart", 300)
            if out.failed:
                first = sorted(out.failed.items())[:3]
                raise Fail(f"{len(out.failed)} of {N} records failed for good, e.g. {first}"
                           + out.errors.summary())
            return (f"{N} records acknowledged in {time.monotonic() - t0:.1f}s across a broker "
                    f"SIGKILL after {KILL_AT}")

        if not r.run("broker-kill-produce", setup_and_produce):
            r.fail_rest("the produce did not complete")
            return
        got, highs = read_all(bootstrap, topic)

        def no_loss():
            where = {}
            for part, recs in got.items():
                for off, i in recs:
                    where.setdefault(i, (part, off))
            missing = [i for i in out.acked if i not in where]
            moved = [(i, out.acked[i], where[i]) for i in out.acked
                     if i in where and where[i] != out.acked[i]]
            if missing:
                raise Fail(f"{len(missing)} acknowledged records are not in the log, e.g. "
                           f"{[(i, out.acked[i]) for i in sorted(missing)[:5]]}; watermarks {highs}")
            if moved:
                raise Fail(f"{len(moved)} records are not at the offset their acknowledgement "
                           f"gave, e.g. (i, acked at, read at) {moved[:5]}")
            return f"all {len(out.acked)} acknowledged records read back at their offsets"

        def no_dups():
            seen = {}
            problems = []
            for part, recs in got.items():
                prev_off, prev_i = None, None
                for off, i in recs:
                    if i in seen:
                        problems.append(f"record {i} at {seen[i]} and at {(part, off)}")
                    seen[i] = (part, off)
                    if i % PARTITIONS != part:
                        problems.append(f"record {i} in partition {part}")
                    if prev_off is not None and off != prev_off + 1:
                        problems.append(f"partition {part}: offset {prev_off} then {off}")
                    if prev_i is not None and i <= prev_i:
                        problems.append(f"partition {part}: record {prev_i} then {i}")
                    prev_off, prev_i = off, i
            if problems:
                raise Fail(f"{len(problems)} problems: {problems[:5]}")
            return f"{len(seen)} records, each once, in order, offsets dense"

        r.run("broker-kill-no-loss", no_loss)
        r.run("broker-kill-no-dups", no_dups)

    main_wrapper(r, body)


if __name__ == "__main__":
    main()
