#!/usr/bin/env python3
"""kafka-python: create-topic, roundtrip-<codec>, admin.

KafkaAdminClient.create_topics; KafkaProducer with compression_type none/gzip/snappy/lz4/zstd
(a codec whose Python extra is not importable is a skip with the reason); KafkaConsumer with
assign() + seek_to_beginning() (no group), compared record by record.
"""

import logging
import os
import sys
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

from interop_common import (CODECS, Fail, Progress, Reporter, Skip, check_delivery,
                            compare_partition, env, log, main_wrapper, make_records, short)

CLIENT = "kafka-python"
N = int(os.environ.get("KELP_INTEROP_ROUNDTRIP_N", "1000"))
PARTITIONS = 3

CODEC_AVAILABLE = {
    "none": (True, ""),
    "gzip": (has_gzip(), "gzip module not importable"),
    "snappy": (has_snappy(), "python-snappy (module snappy) not installed"),
    "lz4": (has_lz4(), "lz4 package not installed"),
    "zstd": (has_zstd(), "zstandard package not installed"),
}


def wait_topics(bootstrap, names, partitions):
    """Wait until a client's metadata shows every topic with all partitions led. (Uses the
    consumer's cluster metadata; the admin Metadata calls are checked in the admin scenario.)"""
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id="kelp-interop-kafka-python",
                      group_id=None, enable_auto_commit=False)
    try:
        prog = Progress(f"metadata for {names}")
        while True:
            state = {}
            for name in names:
                parts = c.partitions_for_topic(name)
                if not parts:
                    state[name] = "absent"
                    continue
                leaders = [c._client.cluster.leader_for_partition(TopicPartition(name, p))
                           for p in parts]
                led = sum(1 for ld in leaders if ld is not None and ld >= 0)
                state[name] = "ok" if (sorted(parts) == list(range(partitions)) and led == partitions) \
                    else f"partitions {sorted(parts)}, {led} led"
            if all(state.get(n) == "ok" for n in names):
                return
            prog.update(repr(sorted(state.items())))
            why = prog.expired()
            if why:
                raise Fail(why)
            c._client.cluster.request_update()
            time.sleep(0.2)
    finally:
        c.close()


def produce(bootstrap, topic, codec, recs):
    prod = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="kelp-interop-kafka-python",
        compression_type=None if codec == "none" else codec,
        acks="all",
        linger_ms=5,
        retries=5,
        request_timeout_ms=30000,
        max_block_ms=60000,
    )
    try:
        futs = [(rec, prod.send(topic, key=rec.key, value=rec.value, headers=rec.headers,
                                timestamp_ms=rec.ts)) for rec in recs]
        prod.flush(timeout=150)
        for rec, f in futs:
            try:
                md = f.get(timeout=60)
            except Exception as e:  # noqa: BLE001
                raise Fail(f"{topic}: send of record {rec.i} failed: {type(e).__name__}: {e}") from e
            rec.partition, rec.offset = md.partition, md.offset
            if md.topic != topic:
                raise Fail(f"record {rec.i}: metadata topic {md.topic!r}")
    finally:
        prod.close(timeout=30)


def consume(bootstrap, topic, counts):
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="kelp-interop-kafka-python",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=40000,
    )
    try:
        tps = [TopicPartition(topic, p) for p in counts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        for tp in tps:
            if end[tp] != counts[tp.partition]:
                raise Fail(f"{topic} partition {tp.partition}: end offset (high watermark) "
                           f"{end[tp]}, expected {counts[tp.partition]}")
        beg = c.beginning_offsets(tps)
        for tp in tps:
            if beg[tp] != 0:
                raise Fail(f"{topic} partition {tp.partition}: beginning offset {beg[tp]}, expected 0")
        got = {p: [] for p in counts}
        prog = Progress(f"{topic}: consuming")
        while True:
            if all(c.position(tp) >= end[tp] for tp in tps):
                break
            for tp, msgs in c.poll(timeout_ms=500, max_records=1000).items():
                for m in msgs:
                    got[tp.partition].append((m.offset, m.key, m.value, m.headers or [],
                                              m.timestamp_type, m.timestamp))
            prog.update(tuple(len(got[p]) for p in sorted(got)))
            why = prog.expired()
            if why:
                detail = ", ".join(f"p{p}: {len(got[p])}/{counts[p]}" for p in sorted(counts))
                raise Fail(f"{why}; read {detail}")
        return got
    finally:
        c.close()


def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    log(f"kafka-python {kafka.__version__}")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kelp-interop-kafka-python",
                             request_timeout_ms=60000)
    topics = {c: f"{prefix}-kp-rt-{c}" for c in CODECS}

    def create():
        try:
            admin.create_topics([NewTopic(name=t, num_partitions=PARTITIONS, replication_factor=1)
                                 for t in topics.values()], timeout_ms=30000)
        except Exception as e:  # noqa: BLE001
            raise Fail(f"create_topics failed: {type(e).__name__}: {e}") from e
        wait_topics(bootstrap, list(topics.values()), PARTITIONS)
        return f"{len(topics)} topics x {PARTITIONS} partitions created and visible in metadata"

    if not r.run("create-topic", create):
        r.fail_rest("create-topic failed, topics for this scenario do not exist")
        return

    for i, codec in enumerate(CODECS):
        topic = topics[codec]

        def roundtrip(codec=codec, topic=topic, seed=i):
            ok, why = CODEC_AVAILABLE[codec]
            if not ok:
                raise Skip(f"kafka-python cannot compress {codec}: {why}")
            recs = make_records(N, f"kp-{codec}", seed=2000 + seed, null_header_values=False)
            produce(bootstrap, topic, codec, recs)
            by_p = check_delivery(recs, topic)
            counts = {p: len(by_p.get(p, [])) for p in range(PARTITIONS)}
            got = consume(bootstrap, topic, counts)
            for p in range(PARTITIONS):
                # kafka-python: timestamp_type 0 == CreateTime
                compare_partition(topic, p, by_p.get(p, []), got[p], ts_type_create=0)
            return (f"{N} records, compression_type={codec}, partition counts "
                    + "/".join(str(counts[p]) for p in range(PARTITIONS)))

        r.run(f"roundtrip-{codec}", roundtrip)

    def admin_checks():
        topic = topics["none"]
        host, port = bootstrap.rsplit(":", 1)

        def call(what, fn, *a):
            try:
                return fn(*a)
            except Exception as e:  # noqa: BLE001
                raise Fail(f"{what} raised {type(e).__name__}: {e}") from e

        names = call("KafkaAdminClient.list_topics()", admin.list_topics)
        missing = [t for t in topics.values() if t not in names]
        if missing:
            raise Fail(f"list_topics misses {missing}")
        desc = call(f"KafkaAdminClient.describe_topics([{topic}])", admin.describe_topics, [topic])
        if len(desc) != 1 or desc[0]["topic"] != topic or desc[0]["error_code"] != 0:
            raise Fail(f"describe_topics([{topic}]) returned {short(desc, 300)}")
        parts = sorted(p["partition"] for p in desc[0]["partitions"])
        if parts != list(range(PARTITIONS)):
            raise Fail(f"describe_topics: {topic} partitions {parts}")
        cl = call("KafkaAdminClient.describe_cluster()", admin.describe_cluster)
        brokers = [(b["host"], int(b["port"])) for b in cl["brokers"]]
        if brokers != [(host, int(port))]:
            raise Fail(f"describe_cluster brokers {brokers}, expected [{bootstrap}]")
        resps = call(f"KafkaAdminClient.describe_configs({topic})", admin.describe_configs,
                     [ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {}
        for resp in resps:
            for res in resp.resources:
                err, msg, _rtype, rname, cfgs = res[0], res[1], res[2], res[3], res[4]
                if err != 0:
                    raise Fail(f"describe_configs({rname}) error {err}: {msg}")
                for e in cfgs:
                    entries[e[0]] = e[1]
        if "retention.ms" not in entries:
            raise Fail(f"describe_configs({topic}) has no retention.ms; got {short(sorted(entries))}")
        return (f"list_topics ok, describe_topics ok, describe_cluster 1 broker "
                f"{brokers[0][0]}:{brokers[0][1]} controller {cl.get('controller_id')}, "
                f"describe_configs {len(entries)} entries, retention.ms={entries['retention.ms']}")

    r.run("admin", admin_checks)
    admin.close()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main_wrapper(Reporter(CLIENT, ["create-topic"] + [f"roundtrip-{c}" for c in CODECS]
                          + ["admin"]), body)
