#!/usr/bin/env python3
"""An idempotent, acks=all confluent-kafka producer and a consumer group through kelp, while
the calling script injects faults (SeaweedMQ broker SIGKILL or SIGTERM and restart, kelp
SIGKILL and restart).

    faults.py SIGNAL_DIR NAME

Produces KELP_FAULT_RECORDS (100,000) records as fast as the producer goes to a fresh topic of
KELP_FAULT_PARTITIONS (4) partitions: record i goes to partition i % P and its value starts with
i. When the acknowledged count passes each fraction of KELP_FAULT_AT (e.g. "0.25 0.5 0.75") it
creates SIGNAL_DIR/fault-K (K = 1, 2...); the script injects fault K and creates
SIGNAL_DIR/done-K. Production never pauses: librdkafka retries whatever kelp answers with
retriable errors while SeaweedMQ or kelp is away.

With KELP_FAULT_RATE (records per second; default 0: no limit) production is paced, so that
faults that take a while (kelp instances leaving, restarting and rejoining a cluster) happen
while records are still being produced; the produce result says how many faults were over
before the last acknowledgement. KELP_BOOTSTRAP may list several kelp instances (a cluster).

Meanwhile KELP_FAULT_CONSUMERS (3) members of one consumer group read the topic (auto-commit),
and after production they read on until the group's committed offsets reach every partition's
end. With KELP_FAULT_RESUME_CHECK=1 the members also note every commit the coordinator
acknowledged and the first offset they read after each assignment: an assignment must start at
or after every commit of that partition acknowledged before it (the group resumes at its
commits, also when its coordinator moved). Then:
  NAME-produce       every record was acknowledged (none failed for good);
  NAME-no-loss       every acknowledged record is in the log, at the offset its ack gave, with
                     its value unchanged;
  NAME-no-dups       no record is stored twice, no two records share an offset, each partition
                     holds its records in produce order with dense offsets;
  NAME-consumers     the group read every record and committed every partition's end (and,
                     with KELP_FAULT_RESUME_CHECK=1, resumed at its commits).

With KELP_FAULT_EXPECT=fenced (stock SeaweedFS, which loses acknowledged records and reuses
offsets) the program checks only what kelp promises there: no record is ever acknowledged at an
offset another acknowledged record holds, and the log holds no record at an acknowledged offset
other than the one acknowledged there (NAME-no-reuse); production is cut short once the
partition refuses writes.

Prints RESULT|confluent-kafka|<scenario>|pass/fail|detail lines like the interop suites.
"""

import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from confluent_kafka import (  # noqa: E402
    Consumer, KafkaError, KafkaException, Producer, TopicPartition)

from confluent_util import CLIENT, ErrorLog, admin_client, base_conf, create_topics  # noqa: E402
from interop_common import Fail, Progress, Reporter, env, log, main_wrapper  # noqa: E402

N = int(os.environ.get("KELP_FAULT_RECORDS", "100000"))
PARTITIONS = int(os.environ.get("KELP_FAULT_PARTITIONS", "4"))
AT = [float(x) for x in os.environ.get("KELP_FAULT_AT", "0.3").split()]
CONSUMERS = int(os.environ.get("KELP_FAULT_CONSUMERS", "3"))
RATE = float(os.environ.get("KELP_FAULT_RATE", "0"))
RESUME_CHECK = os.environ.get("KELP_FAULT_RESUME_CHECK", "0") == "1"
EXPECT_FENCED = os.environ.get("KELP_FAULT_EXPECT", "whole") == "fenced"
# How long production may take in all, faults included.
PRODUCE_DEADLINE_S = float(os.environ.get("KELP_FAULT_DEADLINE_S", "900"))
VALUE_PAD = b"." * 92


def value_of(i):
    return b"%08d" % i + VALUE_PAD


def index_of(value):
    if value is None or len(value) != 8 + len(VALUE_PAD) or value[8:] != VALUE_PAD:
        raise Fail(f"a record that this program did not produce: {value!r:.60}")
    return int(value[:8])


class Produced:
    def __init__(self):
        self.acked = {}  # i -> (partition, offset)
        self.failed = {}  # i -> error
        self.errors = ErrorLog("producer")
        self.faults_signalled = 0
        # Faults whose done-K existed when the last record was acknowledged.
        self.faults_done_while_producing = 0


def signal_faults(signal_dir, out):
    """Creates fault-K for every threshold the acknowledged count passed."""
    while out.faults_signalled < len(AT) and len(out.acked) >= AT[out.faults_signalled] * N:
        out.faults_signalled += 1
        k = out.faults_signalled
        open(os.path.join(signal_dir, f"fault-{k}"), "w").close()
        log(f"{len(out.acked)} records acknowledged: fault {k} now")


def faults_done(signal_dir):
    return sum(1 for k in range(1, len(AT) + 1)
               if os.path.exists(os.path.join(signal_dir, f"done-{k}")))


def produce(bootstrap, topic, signal_dir, out):
    conf = base_conf(bootstrap)
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Ride out the faults: keep retrying for as long as the test may take (on a stock
        # broker, a fenced partition never takes the rest: give up on it after a minute).
        "message.timeout.ms": 60000 if EXPECT_FENCED else int(PRODUCE_DEADLINE_S * 1000),
        "request.timeout.ms": 30000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 1000,
        "error_cb": out.errors,
    })
    p = Producer(conf)

    def on_delivery(err, msg):
        i = index_of(msg.value())
        if err is not None:
            out.failed[i] = str(err)
        else:
            out.acked[i] = (msg.partition(), msg.offset())

    t0 = time.monotonic()
    last_log = t0
    for i in range(N):
        if RATE > 0:
            # Paced: record i leaves no earlier than i / RATE seconds after the start.
            while (ahead := t0 + i / RATE - time.monotonic()) > 0:
                p.poll(min(ahead, 0.05))
                signal_faults(signal_dir, out)
        while True:
            try:
                p.produce(topic, value_of(i), partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        signal_faults(signal_dir, out)
        if time.monotonic() - last_log > 5:
            last_log = time.monotonic()
            log(f"produced {i + 1}/{N}, acknowledged {len(out.acked)}, failed {len(out.failed)}")
        if EXPECT_FENCED and out.failed:
            break
    prog = Progress("delivery of every record", progress_s=300, hard_s=PRODUCE_DEADLINE_S)
    while len(out.acked) + len(out.failed) < N:
        p.poll(0.5)
        signal_faults(signal_dir, out)
        prog.update(len(out.acked) + len(out.failed))
        if time.monotonic() - last_log > 5:
            last_log = time.monotonic()
            log(f"waiting for acknowledgements: {len(out.acked)} acked, {len(out.failed)} failed")
        if EXPECT_FENCED and out.failed and time.monotonic() - t0 > 180:
            # On a stock broker a fenced partition never takes the rest: stop asking.
            break
        why = prog.expired()
        if why:
            raise Fail(why + out.errors.summary())
    out.faults_done_while_producing = faults_done(signal_dir)
    p.flush(5 if EXPECT_FENCED else 30)
    log(f"production over after {time.monotonic() - t0:.1f}s: {len(out.acked)} acked, "
        f"{len(out.failed)} failed, {out.faults_signalled} faults, "
        f"{out.faults_done_while_producing} of them over by then")


class Commits:
    """Commits the group's coordinator acknowledged, by any member: (when, partition, offset)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = []

    def add(self, when, partition, offset):
        with self.lock:
            self.acked.append((when, partition, offset))


class Group(threading.Thread):
    """One member of the consumer group: reads and remembers what it saw (and, with
    KELP_FAULT_RESUME_CHECK=1, the commits acknowledged and where each assignment began)."""

    def __init__(self, bootstrap, topic, group, name, stop, commits=None):
        super().__init__(name=name, daemon=True)
        conf = base_conf(bootstrap)
        conf.update({"group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": True, "auto.commit.interval.ms": 500,
                     "session.timeout.ms": 15000, "heartbeat.interval.ms": 1000,
                     "partition.assignment.strategy": "cooperative-sticky"})
        self.commits = commits
        # partition -> when it was assigned, until its first record is read
        self.pending = {}
        # (partition, when assigned, first offset read)
        self.resumes = []
        self.read = 0
        if commits is not None:
            conf["on_commit"] = self.on_commit
        self.consumer = Consumer(conf)
        if commits is not None:
            self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                    on_lost=self.on_revoke)
        else:
            self.consumer.subscribe([topic])
        self.stop = stop
        self.seen = set()
        self.errors = []

    # The callbacks run in this member's thread, inside consume(): a commit's callback comes
    # after the coordinator acknowledged it, an assignment's before its OffsetFetch.
    def on_commit(self, err, partitions):
        when = time.monotonic()
        if err is not None:
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self.commits.add(when, tp.partition, tp.offset)

    def on_assign(self, consumer, partitions):
        when = time.monotonic()
        for tp in partitions:
            self.pending[tp.partition] = when

    def on_revoke(self, consumer, partitions):
        for tp in partitions:
            self.pending.pop(tp.partition, None)

    def run(self):
        try:
            while not self.stop.is_set():
                for m in self.consumer.consume(500, timeout=0.5):
                    e = m.error()
                    if e is not None:
                        if e.code() != KafkaError._PARTITION_EOF and not e.retriable():
                            self.errors.append(str(e))
                        continue
                    self.seen.add(index_of(m.value()))
                    self.read += 1
                    when = self.pending.pop(m.partition(), None)
                    if when is not None:
                        self.resumes.append((m.partition(), when, m.offset()))
        finally:
            try:
                self.consumer.close()
            except Exception as e:  # noqa: BLE001 - closing across faults may fail; reported
                self.errors.append(f"close: {e}")


def members_state(members):
    """Each member's assignment and positions, for a stalled group's failure message (stop
    19's CI saw two partitions stop short after a fault and could not tell whose they were)."""
    out = []
    for m in members:
        try:
            positions = m.consumer.position(m.consumer.assignment())
            where = {tp.partition: tp.offset for tp in positions}
        except Exception as e:  # noqa: BLE001 - a diagnostic: never hide the failure itself
            where = f"? ({e})"
        out.append(f"{m.name} alive={m.is_alive()} read={m.read} positions={where}")
    return "; ".join(out)


def committed(bootstrap, topic, group):
    conf = base_conf(bootstrap)
    conf.update({"group.id": group, "enable.auto.commit": False})
    c = Consumer(conf)
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        c.close()


def watermarks(bootstrap, topic):
    """Each partition's (low, high); retried while kelp answers with retriable errors (a
    SeaweedMQ broker takes a while after a restart before it serves every call)."""
    conf = base_conf(bootstrap)
    conf.update({"group.id": f"{topic}-watermarks"})
    c = Consumer(conf)
    try:
        out = {}
        prog = Progress("the partitions' watermarks")
        for p in range(PARTITIONS):
            while p not in out:
                try:
                    out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                except KafkaException as e:
                    # librdkafka does not mark errors of this call retriable; kelp answers only
                    # retriable codes (KAFKA_STORAGE_ERROR while SeaweedMQ is not ready yet).
                    log(f"watermarks of partition {p}: {e}; retrying")
                    why = prog.expired()
                    if why:
                        raise Fail(f"{why}: {e}")
                    time.sleep(0.5)
        return out
    finally:
        c.close()


def read_all(bootstrap, topic):
    """{partition: [(offset, i)]} from the log start to the high-water mark."""
    highs = watermarks(bootstrap, topic)
    conf = base_conf(bootstrap)
    conf.update({"group.id": f"{topic}-reader", "enable.auto.commit": False,
                 "auto.offset.reset": "earliest", "enable.partition.eof": False})
    c = Consumer(conf)
    try:
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


def check_no_loss(out, got, highs):
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
        raise Fail(f"{len(moved)} records are not at the offset their acknowledgement gave, "
                   f"e.g. (i, acked at, read at) {moved[:5]}")
    return f"all {len(out.acked)} acknowledged records read back at their offsets"


def check_no_dups(got):
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


def check_no_reuse(out, bootstrap, topic):
    """Stock broker: acknowledged offsets are unique, and what the log shows at an acknowledged
    offset (where kelp still serves it) is the record acknowledged there."""
    at = {}
    for i, where in out.acked.items():
        if where in at:
            raise Fail(f"records {at[where]} and {i} were both acknowledged at {where}")
        at[where] = i
    shown = 0
    try:
        got, _ = read_all(bootstrap, topic)
    except Fail as e:
        # A fenced partition answers reads with an error: kelp refuses rather than serving a
        # renumbered log. Nothing more to compare then.
        log(f"reading back: {e}")
        got = {}
    for part, recs in got.items():
        for off, i in recs:
            if (part, off) in at and at[(part, off)] != i:
                raise Fail(f"offset {off} of partition {part} was acknowledged for record "
                           f"{at[(part, off)]} but holds record {i}")
            shown += 1
    return (f"{len(out.acked)} records acknowledged at {len(at)} distinct offsets; "
            f"{shown} read back, none at an offset acknowledged for another; "
            f"{len(out.failed)} refused")


def main():
    signal_dir, name = sys.argv[1], sys.argv[2]
    bootstrap = env("KELP_BOOTSTRAP")
    topic = f"{env('KELP_TOPIC_PREFIX')}-{name}"
    group = f"{topic}-group"
    scenarios = ([f"{name}-produce", f"{name}-no-reuse"] if EXPECT_FENCED else
                 [f"{name}-produce", f"{name}-no-loss", f"{name}-no-dups", f"{name}-consumers"])
    r = Reporter(CLIENT, scenarios)
    out = Produced()

    def body(r):
        stop = threading.Event()
        members = []
        commits = Commits() if RESUME_CHECK else None

        def setup_and_produce():
            create_topics(admin_client(bootstrap), [topic], PARTITIONS)
            members.extend(Group(bootstrap, topic, group, f"m{k}", stop, commits)
                           for k in range(0 if EXPECT_FENCED else CONSUMERS))
            for m in members:
                m.start()
            t0 = time.monotonic()
            produce(bootstrap, topic, signal_dir, out)
            for k in range(1, out.faults_signalled + 1):
                wait_file(os.path.join(signal_dir, f"done-{k}"), f"fault {k}", 300)
            if out.faults_signalled < len(AT):
                raise Fail(f"only {out.faults_signalled} of {len(AT)} faults happened "
                           f"({len(out.acked)} records acknowledged)")
            if EXPECT_FENCED:
                return (f"{len(out.acked)} acknowledged, {len(out.failed)} refused across "
                        f"{len(AT)} faults")
            if out.failed:
                first = sorted(out.failed.items())[:3]
                raise Fail(f"{len(out.failed)} of {N} records failed for good, e.g. {first}"
                           + out.errors.summary())
            return (f"{N} records acknowledged in {time.monotonic() - t0:.1f}s across "
                    f"{len(AT)} faults ({out.faults_done_while_producing} of them over before "
                    f"the last acknowledgement)")

        try:
            if not r.run(f"{name}-produce", setup_and_produce):
                r.fail_rest("the produce did not complete")
                return
            if EXPECT_FENCED:
                r.run(f"{name}-no-reuse", check_no_reuse, out, bootstrap, topic)
                return
            got, highs = read_all(bootstrap, topic)
            r.run(f"{name}-no-loss", check_no_loss, out, got, highs)
            r.run(f"{name}-no-dups", check_no_dups, got)

            def consumers_done():
                ends = {p: hi for p, (_, hi) in highs.items()}
                prog = Progress("the group's commits reaching every partition's end")
                while True:
                    c = committed(bootstrap, topic, group)
                    seen = set().union(*(m.seen for m in members))
                    if c == ends and len(seen) >= len(out.acked):
                        break
                    prog.update(sum(max(v, 0) for v in c.values()) + len(seen))
                    why = prog.expired()
                    if why:
                        raise Fail(f"{why}: committed {c}, ends {ends}, read {len(seen)} of "
                                   f"{len(out.acked)}; members: {members_state(members)}")
                    time.sleep(0.5)
                missing = [i for i in out.acked if i not in seen]
                if missing:
                    raise Fail(f"the group never read {len(missing)} records, e.g. {missing[:5]}")
                errors = [e for m in members for e in m.errors]
                if errors:
                    raise Fail(f"consumer errors: {errors[:3]}")
                resumed = ""
                if commits is not None:
                    resumed = "; " + check_resumes(members, commits, len(seen))
                return (f"{len(members)} members read all {len(seen)} records and committed "
                        f"every partition's end {ends}{resumed}")

            r.run(f"{name}-consumers", consumers_done)
        finally:
            stop.set()
            for m in members:
                m.join(30)

    main_wrapper(r, body)


def check_resumes(members, commits, distinct):
    """Every assignment began at or after each commit of its partition that the coordinator
    had acknowledged before the assignment."""
    with commits.lock:
        acked = sorted(commits.acked)
    resumes = sorted(r for m in members for r in m.resumes)
    behind = []
    after_commits = 0
    for part, when, first in resumes:
        floor = max((off for t, q, off in acked if q == part and t < when), default=None)
        if floor is None:
            continue
        after_commits += 1
        if first < floor:
            behind.append(f"partition {part} assigned at +{when - resumes[0][1]:.1f}s began at "
                          f"offset {first}, behind its commit {floor}")
    if behind:
        raise Fail(f"{len(behind)} of {after_commits} assignments did not resume at the "
                   f"group's commits: {behind[:4]}")
    if after_commits == 0:
        raise Fail(f"no assignment came after a commit ({len(resumes)} assignments, "
                   f"{len(acked)} commits acknowledged): the resume was never exercised")
    reread = sum(m.read for m in members) - distinct
    return (f"{after_commits} assignments after commits (of {len(resumes)}; "
            f"{len(acked)} partition commits acknowledged) each began at or after the last "
            f"commit acknowledged before it; {reread} records read again (at least once)")


def wait_file(path, what, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise Fail(f"{what}: {path} did not appear within {timeout_s}s")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
