"""confluent-kafka (librdkafka) helpers shared by the confluent_*.py programs."""

import time

from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from interop_common import Fail, Progress, check_delivery, compare_partition, log, short

CLIENT = "confluent-kafka"


def base_conf(bootstrap):
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "kelp-interop-python",
        "socket.timeout.ms": 30000,
    }


class ErrorLog:
    """Collects librdkafka global errors (error_cb) so failures can cite them."""

    def __init__(self, who):
        self.who = who
        self.errors = []

    def __call__(self, err):
        self.errors.append(str(err))
        log(f"{self.who} error_cb: {err}")

    def summary(self):
        if not self.errors:
            return ""
        return f" [client errors: {'; '.join(self.errors[:3])}{' ...' if len(self.errors) > 3 else ''}]"


def admin_client(bootstrap):
    return AdminClient(base_conf(bootstrap))


def create_topics(admin, names, partitions):
    """CreateTopics, then wait until metadata shows every topic with all partitions led."""
    fs = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        operation_timeout=30, request_timeout=60)
    for name, f in fs.items():
        try:
            f.result(timeout=90)
        except Exception as e:  # noqa: BLE001
            raise Fail(f"create_topics({name}, {partitions} partitions) failed: {e}") from e
    wait_topics_visible(admin, names, partitions)


def wait_topics_visible(admin, names, partitions):
    prog = Progress(f"metadata for {names}")
    while True:
        md = admin.list_topics(timeout=30)
        state = {}
        for n in names:
            t = md.topics.get(n)
            if t is None:
                state[n] = "absent"
            elif t.error is not None:
                state[n] = f"error {t.error}"
            else:
                led = sum(1 for pm in t.partitions.values() if pm.leader >= 0 and pm.error is None)
                state[n] = f"{len(t.partitions)} partitions, {led} with leader"
                if len(t.partitions) == partitions and led == partitions:
                    state[n] = "ok"
        if all(v == "ok" for v in state.values()):
            return md
        for n, v in state.items():
            t = md.topics.get(n)
            if t is not None and t.error is None and len(t.partitions) > partitions:
                raise Fail(f"topic {n} has {len(t.partitions)} partitions, asked for {partitions}")
        prog.update(repr(sorted(state.items())))
        why = prog.expired()
        if why:
            raise Fail(why)
        time.sleep(0.2)


def new_producer(bootstrap, topic, extra_conf=None):
    errlog = ErrorLog(f"producer({topic})")
    conf = base_conf(bootstrap)
    conf.update({"acks": "all", "linger.ms": 5, "message.timeout.ms": 120000,
                 "error_cb": errlog})
    conf.update(extra_conf or {})
    return Producer(conf), errlog


def enqueue(producer, topic, records, failures, partition_of=None):
    """produce() every record; delivery reports fill rec.partition/rec.offset, or append
    (i, error) to failures."""

    def cb_for(rec):
        def cb(err, msg):
            if err is not None:
                failures.append((rec.i, str(err)))
            else:
                rec.partition = msg.partition()
                rec.offset = msg.offset()
        return cb

    for rec in records:
        kw = {"key": rec.key, "value": rec.value, "headers": rec.headers,
              "timestamp": rec.ts, "on_delivery": cb_for(rec)}
        if partition_of is not None:
            kw["partition"] = partition_of(rec)
        while True:
            try:
                producer.produce(topic, **kw)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)


def check_failures(topic, failures, n, errlog):
    if failures:
        i, err = failures[0]
        raise Fail(f"{topic}: {len(failures)} of {n} deliveries failed; "
                   f"first: record {i}: {err}{errlog.summary()}")


def produce(bootstrap, topic, records, extra_conf=None, partition_of=None):
    """Produce records (Rec objects) with a fresh Producer and wait for every delivery
    report. Raises Fail on any delivery error or timeout."""
    producer, errlog = new_producer(bootstrap, topic, extra_conf)
    failures = []
    enqueue(producer, topic, records, failures, partition_of)
    flush(producer, topic, len(records), records, errlog)
    check_failures(topic, failures, len(records), errlog)


def flush(producer, topic, n, records, errlog=None):
    prog = Progress(f"{topic}: flushing {n} records", progress_s=150)
    while True:
        remaining = producer.flush(1.0)
        if remaining == 0:
            return
        prog.update(remaining)
        why = prog.expired()
        if why:
            acked = sum(1 for r in records if r.offset is not None)
            raise Fail(f"{why}; {acked}/{n} acked{errlog.summary() if errlog else ''}")


def consume_partitions(bootstrap, topic, counts, group_id, extra_conf=None):
    """Assign every partition from OFFSET_BEGINNING (no subscribe, no commit) and read until
    each partition has hit EOF with at least counts[p] records.
    Returns {p: [(offset, key, value, headers, ts_type, ts)]}."""
    errlog = ErrorLog(f"consumer({topic})")
    conf = base_conf(bootstrap)
    conf.update({
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "error_cb": errlog,
    })
    conf.update(extra_conf or {})
    c = Consumer(conf)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in counts])
        got = {p: [] for p in counts}
        eof_at = {p: -1 for p in counts}
        msg_errors = []
        prog = Progress(f"{topic}: consuming")
        while True:
            done = all(eof_at[p] == len(got[p]) and len(got[p]) >= counts[p] for p in counts)
            if done:
                break
            for m in c.consume(num_messages=1000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof_at[m.partition()] = len(got[m.partition()])
                    else:
                        msg_errors.append(str(err))
                        log(f"consumer({topic}) message error: {err}")
                    continue
                p = m.partition()
                if p not in got:
                    raise Fail(f"{topic}: got a record for unassigned partition {p}")
                ts_type, ts = m.timestamp()
                got[p].append((m.offset(), m.key(), m.value(), m.headers() or [], ts_type, ts))
            prog.update(tuple((p, len(got[p]), eof_at[p]) for p in sorted(counts)))
            why = prog.expired()
            if why:
                detail = ", ".join(f"p{p}: {len(got[p])}/{counts[p]}" for p in sorted(counts))
                errs = f" [message errors: {'; '.join(msg_errors[:3])}]" if msg_errors else ""
                raise Fail(f"{why}; read {detail}{errs}{errlog.summary()}")
        return got, c
    except BaseException:
        c.close()
        raise


def verify_topic(bootstrap, topic, expected, partitions, group_id, check_ts=True,
                 order_group=lambda rec: None, extra_check=None, consumer_conf=None):
    """Delivery offsets dense; read back each partition; extra_check(got) if given; compare
    record by record; high watermark == count. Returns a short summary."""
    by_p = check_delivery(expected, topic, order_group)
    counts = {p: len(by_p.get(p, [])) for p in range(partitions)}
    unknown = set(by_p) - set(counts)
    if unknown:
        raise Fail(f"{topic}: delivery reports name partitions {sorted(unknown)} "
                   f"outside 0..{partitions - 1}")
    got, c = consume_partitions(bootstrap, topic, counts, group_id, consumer_conf)
    try:
        if extra_check is not None:
            extra_check(got)
        for p in range(partitions):
            compare_partition(topic, p, by_p.get(p, []), got[p], check_ts=check_ts,
                              ts_type_create=TIMESTAMP_CREATE_TIME)
        for p in range(partitions):
            lo, hi = watermarks(c, topic, p)
            if (lo, hi) != (0, counts[p]):
                raise Fail(f"{topic} partition {p}: watermarks (low, high) = ({lo}, {hi}), "
                           f"expected (0, {counts[p]})")
    finally:
        c.close()
    return "partition counts " + "/".join(str(counts[p]) for p in range(partitions))


# Errors Kafka answers while a partition's leadership moves, which clients retry. librdkafka's
# watermark query raises them with retriable() false, so they are named here.
LEADERSHIP_MOVING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


def watermarks(c, topic, p, within_s=60):
    """(low, high) of a partition, retrying while its leadership moves between kelp instances,
    as a client application would."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
        except KafkaException as e:
            err = e.args[0]
            moving = err.retriable() or err.code() in LEADERSHIP_MOVING
            if not moving or time.monotonic() > deadline:
                raise
            log(f"{topic}[{p}] watermarks, retrying: {e}")
            time.sleep(0.5)


def describe(x):
    return short(x, 200)


def with_group_consumer(bootstrap, group, what, action):
    """action(consumer) with a consumer of `group` outside any generation, retried for up to
    60 s while it raises (COORDINATOR_LOAD_IN_PROGRESS and the like while kelp loads)."""
    conf = base_conf(bootstrap)
    conf.update({"group.id": group, "enable.auto.commit": False})
    c = Consumer(conf)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                return action(c)
            except Exception as e:  # noqa: BLE001 - retriable while the coordinator loads
                if time.monotonic() > deadline:
                    raise Fail(f"{what} for group {group} failed: {e}") from e
                log(f"{what} retry: {e}")
                time.sleep(0.5)
    finally:
        c.close()
