#!/usr/bin/env python3
"""kelp and SeaweedFS's own Kafka gateway (`weed mq.kafka.gateway`) on one SeaweedMQ stack.

    gateway_interop.py    # env: KELP_BOOTSTRAP, GATEWAY_BOOTSTRAP, KELP_TOPIC_PREFIX

kelp-to-gateway: a topic created through kelp gets keyed records produced through kelp; a
consumer on the gateway reads them back with equal keys and values, in order.
gateway-to-kelp: the other way round (the topic is created through the gateway).

Both gateways keep Kafka topics in SeaweedMQ's namespace `kafka` with the same partition
mapping, so they see one set of topics. The gateway drops record headers and client timestamps,
so only keys and values are compared. Topic names start with `_`: the gateway refuses other
names when its schema registry does not answer (none runs here).

Prints RESULT|kelp+weed-gateway|<scenario>|pass/fail|detail lines.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from interop_common import Fail, Progress, Reporter, env, log, main_wrapper  # noqa: E402

N = int(os.environ.get("KELP_GATEWAY_RECORDS", "500"))
PARTITIONS = 2


def conf(bootstrap):
    return {"bootstrap.servers": bootstrap, "client.id": "kelp-gateway-interop",
            "socket.timeout.ms": 30000}


def create(bootstrap, topic):
    admin = AdminClient(conf(bootstrap))
    fs = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                             operation_timeout=30, request_timeout=60)
    try:
        fs[topic].result(timeout=90)
    except Exception as e:  # noqa: BLE001
        raise Fail(f"create {topic} through {bootstrap}: {e}") from e


def produce(bootstrap, topic):
    """N keyed records, round-robin over the partitions; returns {partition: [(key, value)]}."""
    c = conf(bootstrap)
    c.update({"acks": "all", "linger.ms": 5, "message.timeout.ms": 120000,
              "enable.idempotence": False})
    p = Producer(c)
    sent = {i: [] for i in range(PARTITIONS)}
    failures = []

    def cb(err, msg):
        if err is not None:
            failures.append(str(err))

    for i in range(N):
        part = i % PARTITIONS
        key = f"{topic}-k-{i:05d}".encode()
        value = f"value {i} via {bootstrap} ".encode() * (1 + i % 7)
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=part, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.1)
        sent[part].append((key, value))
        p.poll(0)
    left = p.flush(120)
    if left or failures:
        raise Fail(f"produce to {topic} through {bootstrap}: {left} unflushed, {len(failures)} failed "
                   f"(first: {failures[:1]})")
    return sent


def consume(bootstrap, topic, sent):
    c = conf(bootstrap)
    c.update({"group.id": f"{topic}-reader", "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer = Consumer(c)
    got = {p: [] for p in sent}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sent])
        prog = Progress(f"{topic}: reading through {bootstrap}")
        while any(len(got[p]) < len(sent[p]) for p in sent):
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        log(f"consumer error: {m.error()}")
                    continue
                got[m.partition()].append((m.key(), m.value()))
            prog.update(tuple(len(got[p]) for p in sorted(got)))
            why = prog.expired()
            if why:
                raise Fail(f"{why}; read " + ", ".join(f"p{p}: {len(got[p])}/{len(sent[p])}" for p in sorted(sent)))
    finally:
        consumer.close()
    for p in sent:
        if got[p][: len(sent[p])] != sent[p]:
            first = next(i for i, (a, b) in enumerate(zip(got[p], sent[p])) if a != b)
            raise Fail(f"{topic} partition {p} record #{first}: read {got[p][first]!r}, "
                       f"produced {sent[p][first]!r}")
        if len(got[p]) != len(sent[p]):
            raise Fail(f"{topic} partition {p}: {len(got[p])} records read, {len(sent[p])} produced")


def main():
    kelp = env("KELP_BOOTSTRAP")
    gateway = env("GATEWAY_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    r = Reporter("kelp+weed-gateway", ["kelp-to-gateway", "gateway-to-kelp"])

    def body(r):
        def one(src, dst, topic, src_name, dst_name):
            create(src, topic)
            sent = produce(src, topic)
            # The other gateway learns of the topic from SeaweedMQ; give it time to appear.
            deadline = time.monotonic() + 60
            while True:
                md = AdminClient(conf(dst)).list_topics(topic=topic, timeout=30)
                t = md.topics.get(topic)
                if t is not None and t.error is None and len(t.partitions) == PARTITIONS:
                    break
                if time.monotonic() > deadline:
                    raise Fail(f"{dst_name} does not show {topic} with {PARTITIONS} partitions: {t}")
                time.sleep(0.5)
            consume(dst, topic, sent)
            return (f"{N} records produced through {src_name} to {topic} ({PARTITIONS} partitions) "
                    f"read back through {dst_name} with equal keys and values, in order")

        r.run("kelp-to-gateway", one, kelp, gateway, f"_{prefix}-from-kelp", "kelp", "the weed gateway")
        r.run("gateway-to-kelp", one, gateway, kelp, f"_{prefix}-from-gateway", "the weed gateway", "kelp")

    main_wrapper(r, body)


if __name__ == "__main__":
    main()
