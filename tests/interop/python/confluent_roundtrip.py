#!/usr/bin/env python3
"""confluent-kafka: create-topic, roundtrip-<codec> (none/gzip/snappy/lz4/zstd), admin,
fetch-limits, compacted-keys, compaction.

Per codec: a fresh 3-partition topic; a Producer with compression.type=<codec> produces
1,000 keyed records with headers (a repeated header key) and explicit timestamps; a
Consumer with assign() (group.id set but never used to commit) reads every partition from
OFFSET_BEGINNING and compares record by record.

fetch-limits: 96 records of 200 kB over 4 partitions (about 19 MB, one record per batch), read
by a consumer whose responses may be at most about 1 MB (fetch.max.bytes 1,000,000,
receive.message.max.bytes 1,000,512) while it allows 8 MB per partition: kelp must keep each
Fetch answer within fetch.max.bytes (KIP-74), or librdkafka refuses the response ("Invalid
response size") and never gets past it. Then by a consumer allowing 100 kB per partition,
less than one record: every answer must still carry a record, or it never gets past the first.
"""

import os
import sys
import time

import confluent_kafka
from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from confluent_util import CLIENT, admin_client, create_topics, produce, verify_topic
from interop_common import CODECS, Fail, Reporter, env, log, main_wrapper, make_records

N = int(os.environ.get("KELP_INTEROP_ROUNDTRIP_N", "1000"))
PARTITIONS = 3


def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    log(f"confluent-kafka {confluent_kafka.version()} librdkafka {confluent_kafka.libversion()}")
    admin = admin_client(bootstrap)
    topics = {c: f"{prefix}-ck-rt-{c}" for c in CODECS}

    def create():
        create_topics(admin, list(topics.values()), PARTITIONS)
        return f"{len(topics)} topics x {PARTITIONS} partitions created and visible in metadata"

    if not r.run("create-topic", create):
        r.fail_rest("create-topic failed, topics for this scenario do not exist")
        return

    for i, codec in enumerate(CODECS):
        topic = topics[codec]

        def roundtrip(codec=codec, topic=topic, seed=i):
            recs = make_records(N, f"ck-{codec}", seed=1000 + seed)
            produce(bootstrap, topic, recs, extra_conf={"compression.type": codec})
            summary = verify_topic(bootstrap, topic, recs, PARTITIONS,
                                   group_id=f"{prefix}-ck-unused-{codec}")
            return f"{N} records, compression.type={codec}, {summary}"

        r.run(f"roundtrip-{codec}", roundtrip)

    def admin_checks():
        topic = topics["none"]
        host, port = bootstrap.rsplit(":", 1)
        md = admin.list_topics(timeout=30)
        if len(md.brokers) != 1:
            raise Fail(f"metadata lists {len(md.brokers)} brokers, expected 1: {md.brokers}")
        (b,) = md.brokers.values()
        if (b.host, int(b.port)) != (host, int(port)):
            raise Fail(f"metadata broker is {b.host}:{b.port}, expected {bootstrap}")
        if topic not in md.topics:
            raise Fail(f"list_topics does not show {topic}; shows {sorted(md.topics)[:10]}")
        t = md.topics[topic]
        if sorted(t.partitions) != list(range(PARTITIONS)):
            raise Fail(f"{topic} partitions {sorted(t.partitions)}")
        for p, pm in t.partitions.items():
            if pm.leader != b.id or list(pm.replicas) != [b.id] or list(pm.isrs) != [b.id]:
                raise Fail(f"{topic} partition {p}: leader {pm.leader} replicas {pm.replicas} "
                           f"isrs {pm.isrs}, expected broker {b.id}")
        for other in topics.values():
            if other not in md.topics:
                raise Fail(f"list_topics does not show {other}")

        res = ConfigResource(ResourceType.TOPIC, topic)
        fs = admin.describe_configs([res], request_timeout=30)
        try:
            configs = list(fs.values())[0].result(timeout=60)
        except KafkaException as e:
            raise Fail(f"describe_configs({topic}) failed: {e}") from e
        if "retention.ms" not in configs:
            raise Fail(f"describe_configs({topic}) has no retention.ms; got {sorted(configs)[:20]}")
        rv = configs["retention.ms"].value
        try:
            int(rv)
        except (TypeError, ValueError):
            raise Fail(f"describe_configs({topic}) retention.ms = {rv!r}, not an integer") from None
        also = [k for k in ("cleanup.policy", "segment.bytes", "retention.bytes",
                            "max.message.bytes", "message.timestamp.type") if k in configs]
        detail = (f"list_topics ok (1 broker {b.host}:{b.port}, {len(topics)} topics seen); "
                  f"describe_configs: {len(configs)} entries, retention.ms={rv}, also {also}")

        if hasattr(admin, "describe_cluster"):
            try:
                cl = admin.describe_cluster(request_timeout=30).result(timeout=60)
            except KafkaException as e:
                raise Fail(f"describe_cluster failed: {e}") from e
            nodes = [(n.host, int(n.port)) for n in cl.nodes]
            if nodes != [(host, int(port))]:
                raise Fail(f"describe_cluster nodes {nodes}, expected [{bootstrap}]")
            if cl.controller is None:
                raise Fail("describe_cluster has no controller")
            detail += f"; describe_cluster: cluster_id={cl.cluster_id} controller={cl.controller.id}"
        else:
            detail += "; describe_cluster not in this confluent-kafka version"
        return detail

    r.run("admin", admin_checks)

    r.run("fetch-limits", lambda: fetch_limits(bootstrap, prefix, admin))
    r.run("compacted-keys", lambda: compacted_keys(bootstrap, prefix, admin))
    r.run("compaction", lambda: compaction(bootstrap, prefix, admin))


def fetch_limits(bootstrap, prefix, admin):
    topic = f"{prefix}-ck-fetch-limits"
    create_topics(admin, [topic], 4)
    recs = make_records(96, "ck-big", seed=2000)
    for rec in recs:
        rec.value = (rec.value or b"") + bytes([rec.i % 251]) * 200_000
    # One record per batch: batches stay far below the limit, so a broker that honours
    # it never needs KIP-74's oversized-first-batch exception.
    produce(bootstrap, topic, recs, partition_of=lambda rec: rec.i % 4,
            extra_conf={"linger.ms": 0, "batch.num.messages": 1})
    conf = {"fetch.max.bytes": 1_000_000, "receive.message.max.bytes": 1_000_512,
            "max.partition.fetch.bytes": 8 << 20, "fetch.wait.max.ms": 100}
    summary = verify_topic(bootstrap, topic, recs, 4, group_id=f"{prefix}-ck-unused-big",
                           consumer_conf=conf)
    # Records larger than the partition limit: each answer still carries one (KIP-74), so the
    # consumer makes progress.
    verify_topic(bootstrap, topic, recs, 4, group_id=f"{prefix}-ck-unused-big2",
                 consumer_conf={"max.partition.fetch.bytes": 100_000, "fetch.wait.max.ms": 100})
    total = sum(len(rec.value) for rec in recs)
    return (f"96 records, {total / 1e6:.1f} MB, read back whole through Fetch answers of at "
            f"most 1 MB, and with a partition limit of 100 kB, below a record ({summary})")


def compacted_keys(bootstrap, prefix, admin):
    """A compacted topic refuses records without a key: sent one per batch, exactly the 10
    key-less ones of 100 fail with INVALID_RECORD; sent as one batch, the whole batch fails (as
    on Kafka); the topic then holds the 90."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import NewTopic

    topic = f"{prefix}-ck-compacted"
    fut = admin.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"})])
    fut[topic].result(30)
    keyless = {i for i in range(100) if i % 10 == 3}

    def send(conf):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **conf})
        outcome = {}
        for i in range(100):
            def cb(err, _msg, i=i):
                outcome[i] = err
            key = None if i in keyless else f"k{i}".encode()
            p.produce(topic, value=f"v{i}".encode(), key=key, on_delivery=cb)
        p.flush(60)
        return outcome

    one_each = send({"linger.ms": 0, "batch.num.messages": 1, "max.in.flight": 1})
    failed = {i for i, e in one_each.items() if e is not None}
    codes = {e.code() for e in one_each.values() if e is not None}
    if len(one_each) != 100 or failed != keyless or codes != {KafkaError.INVALID_RECORD}:
        raise Fail(f"one record per batch: failed {sorted(failed)} with {codes}, expected "
                   f"{sorted(keyless)} with INVALID_RECORD ({len(one_each)} reports)")
    # As one batch all 100 fail; librdkafka reads the answer's record errors (KIP-467): the
    # named records get INVALID_RECORD, the others "an invalid record in the same batch".
    batched = send({"linger.ms": 2000, "batch.num.messages": 1000})
    other = getattr(KafkaError, "_INVALID_DIFFERENT_RECORD", -138)
    wrong = {i: (e.code() if e else None) for i, e in batched.items()
             if (e.code() if e else None) != (KafkaError.INVALID_RECORD if i in keyless else other)}
    if len(batched) != 100 or wrong:
        raise Fail(f"one batch: {len(wrong)} records with an unexpected outcome, e.g. "
                   f"{sorted(wrong.items())[:5]} ({len(batched)} reports)")
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-ck-compacted-wm"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)
    finally:
        c.close()
    if (lo, hi) != (0, 90):
        raise Fail(f"watermarks ({lo}, {hi}), expected (0, 90): only the keyed records stored")
    return ("one per batch: exactly the 10 key-less records of 100 failed with INVALID_RECORD; "
            "as one batch: all 100 failed, the 10 named by the answer's record errors "
            "(INVALID_RECORD, the rest _INVALID_DIFFERENT_RECORD); the topic holds the 90")


def compaction(bootstrap, prefix, admin):
    """Memory backend: 1,000 records over 50 keys and tombstones for 5 of them, on a compacted
    topic (delete.retention.ms 2 s); a consumer reading from offset 0 comes to see exactly the
    latest value of each live key, at the offset its produce was acknowledged with, in offset
    order, and no tombstone (kelp compacts on the owning shard every few seconds)."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    topic = f"{prefix}-ck-compaction"
    config = {"cleanup.policy": "compact", "delete.retention.ms": "2000",
              "min.compaction.lag.ms": "0"}
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.num.messages": 40})
    acked = {}

    def cb(err, msg):
        if err is not None:
            raise Fail(f"produce: {err}")
        acked[msg.offset()] = (msg.key(), msg.value())

    for i in range(1000):
        p.produce(topic, key=f"key-{i % 50}".encode(), value=f"value-{i}".encode(),
                  on_delivery=cb)
        p.poll(0)
    p.flush(60)
    for k in range(5):
        p.produce(topic, key=f"key-{k}".encode(), value=None, on_delivery=cb)
    p.flush(60)
    # The newest batch is never compacted (Kafka's active segment): one more, on its own.
    p.produce(topic, key=b"last", value=b"last", on_delivery=cb)
    p.flush(60)
    latest = {}
    for off in sorted(acked):
        latest[acked[off][0]] = (off, acked[off][1])
    want = sorted((off, k, v) for k, (off, v) in latest.items() if v is not None)

    def read_from_zero():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-ck-compaction-r",
                      "enable.auto.commit": False, "enable.partition.eof": True})
        got = []
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            while True:
                m = c.poll(10)
                if m is None:
                    raise Fail("no EOF within 10 s")
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        return got
                    raise Fail(f"consume: {m.error()}")
                got.append((m.offset(), m.key(), m.value()))
        finally:
            c.close()

    deadline = time.monotonic() + 90
    while True:
        got = read_from_zero()
        if got == want:
            break
        if time.monotonic() > deadline:
            raise Fail(f"after 90 s a reader from offset 0 sees {len(got)} records "
                       f"(first {got[:3]}), expected the {len(want)} latest of each live key")
        time.sleep(1)
    return (f"{len(acked)} records over 51 keys and 5 tombstones compacted to the {len(want)} "
            f"latest, read from offset 0 at their own offsets, in order")


ALONE = {"fetch-limits": fetch_limits, "compacted-keys": compacted_keys}


def some(names):
    def body_some(r):
        bootstrap = env("KELP_BOOTSTRAP")
        admin = admin_client(bootstrap)
        for name in names:
            r.run(name, lambda f=ALONE[name]: f(bootstrap, env("KELP_TOPIC_PREFIX"), admin))
    return body_some


if __name__ == "__main__":
    # `confluent_roundtrip.py fetch-limits compacted-keys`: those scenarios alone (the SeaweedMQ
    # suite runs them).
    if sys.argv[1:] and set(sys.argv[1:]) <= set(ALONE):
        main_wrapper(Reporter(CLIENT, sys.argv[1:]), some(sys.argv[1:]))
    main_wrapper(Reporter(CLIENT, ["create-topic"] + [f"roundtrip-{c}" for c in CODECS]
                          + ["admin", "fetch-limits", "compacted-keys", "compaction"]), body)
