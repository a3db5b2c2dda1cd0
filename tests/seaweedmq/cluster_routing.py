#!/usr/bin/env python3
"""Requests sent to the wrong kelp instance (scripts/test-seaweedmq-cluster.sh).

    cluster_routing.py TOPIC PARTITIONS
        Bootstrapped from KELP_BOOTSTRAP with kafka-python's low-level client, which sends each
        request to the node it is told to (a client library would route it to the owner).
        For every partition of TOPIC, a Produce (acks=1) and a Fetch sent to each instance
        that Metadata does not name leader are answered NOT_LEADER_OR_FOLLOWER and store
        nothing; the same requests sent to the leader succeed. For a group, FindCoordinator
        names one instance; OffsetCommit and OffsetFetch sent to every other instance are
        answered NOT_COORDINATOR, and the commit made at the coordinator is what it answers.
        RESULT|kafka-python|cluster-wrong-instance.

Every wait polls an observable condition under a generous deadline.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from kafka.client_async import KafkaClient  # noqa: E402
from kafka.protocol.commit import OffsetCommitRequest, OffsetFetchRequest  # noqa: E402
from kafka.protocol.fetch import FetchRequest  # noqa: E402
from kafka.protocol.find_coordinator import FindCoordinatorRequest  # noqa: E402
from kafka.protocol.produce import ProduceRequest  # noqa: E402
from kafka.record.memory_records import MemoryRecordsBuilder  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402

from interop_common import Fail, Reporter, env, log, main_wrapper  # noqa: E402

NONE = 0
NOT_LEADER_OR_FOLLOWER = 6
NOT_COORDINATOR = 16
DEADLINE_S = 60


def call(client, node, request):
    """Sends request to node and waits for its answer."""
    deadline = time.monotonic() + DEADLINE_S
    while not client.ready(node):
        client.poll(timeout_ms=100)
        if time.monotonic() > deadline:
            raise Fail(f"no connection to node {node} within {DEADLINE_S}s")
    future = client.send(node, request)
    client.poll(future=future, timeout_ms=DEADLINE_S * 1000)
    if not future.is_done:
        raise Fail(f"node {node} did not answer {type(request).__name__} in {DEADLINE_S}s")
    if future.failed():
        raise Fail(f"node {node}: {type(request).__name__} failed: {future.exception!r}")
    return future.value


def one_record(tag):
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    b.append(timestamp=None, key=tag.encode(), value=b"routing-" + tag.encode(), headers=[])
    b.close()
    return b.buffer()


def produce(client, node, topic, p, tag):
    req = ProduceRequest[3](transactional_id=None, required_acks=1, timeout=10_000,
                            topics=[(topic, [(p, one_record(tag))])])
    resp = call(client, node, req)
    _, parts = resp.topics[0]
    _, error, offset = parts[0][:3]
    return error, offset


def fetch_error(client, node, topic, p):
    req = FetchRequest[4](replica_id=-1, max_wait_time=10, min_bytes=0, max_bytes=1 << 20,
                          isolation_level=0, topics=[(topic, [(p, 0, 1 << 20)])])
    resp = call(client, node, req)
    _, parts = resp.topics[0]
    return parts[0][1], parts[0][2]  # error code, high watermark


def leaders(client, topic, partitions):
    deadline = time.monotonic() + DEADLINE_S
    client.add_topic(topic)
    while True:
        future = client.cluster.request_update()
        client.poll(future=future, timeout_ms=10_000)
        got = {p: client.cluster.leader_for_partition(TopicPartition(topic, p))
               for p in range(partitions)}
        if all(n is not None and n >= 0 for n in got.values()):
            return got
        if time.monotonic() > deadline:
            raise Fail(f"no leader for every partition of {topic} within {DEADLINE_S}s: {got}")
        time.sleep(0.5)


def serving_leader(client, topic, partitions, p):
    """The leader Metadata names for p, once a produce there is taken (an instance may name
    itself leader while it waits out a previous owner's lease, answering the retriable
    NOT_LEADER_OR_FOLLOWER meanwhile)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        leader = leaders(client, topic, partitions)[p]
        error, _ = produce(client, leader, topic, p, f"warm-{leader}-{p}")
        if error == NONE:
            return leader
        if error != NOT_LEADER_OR_FOLLOWER or time.monotonic() > deadline:
            raise Fail(f"Produce to partition {p} at its leader {leader}: error {error}")
        time.sleep(0.5)


def check_partitions(client, nodes, topic, partitions):
    led = {}
    refused = 0
    for p in range(partitions):
        leader = serving_leader(client, topic, partitions, p)
        led[p] = leader
        _, hw_before = fetch_error(client, leader, topic, p)
        for other in nodes - {leader}:
            error, _ = produce(client, other, topic, p, f"wrong-{other}-{p}")
            if error != NOT_LEADER_OR_FOLLOWER:
                raise Fail(f"Produce to partition {p} at node {other} (leader {leader}): error "
                           f"{error}, want NOT_LEADER_OR_FOLLOWER ({NOT_LEADER_OR_FOLLOWER})")
            error, _ = fetch_error(client, other, topic, p)
            if error != NOT_LEADER_OR_FOLLOWER:
                raise Fail(f"Fetch of partition {p} at node {other} (leader {leader}): error "
                           f"{error}, want NOT_LEADER_OR_FOLLOWER")
            refused += 2
        error, offset = produce(client, leader, topic, p, f"right-{leader}-{p}")
        if error != NONE:
            raise Fail(f"Produce to partition {p} at its leader {leader}: error {error}")
        error, hw_after = fetch_error(client, leader, topic, p)
        if error != NONE or hw_after != hw_before + 1 or offset != hw_before:
            raise Fail(f"partition {p} at its leader {leader}: high watermark {hw_before} -> "
                       f"{hw_after}, record at {offset} (error {error}): the refused produces "
                       f"must store nothing, the leader's must store one record")
    return led, refused


def check_group(client, nodes, topic, group):
    resp = call(client, next(iter(nodes)), FindCoordinatorRequest[0](group))
    if resp.error_code != NONE:
        raise Fail(f"FindCoordinator({group}): error {resp.error_code}")
    coordinator = resp.coordinator_id
    commit = OffsetCommitRequest[2](group, -1, "", -1, [(topic, [(0, 1, "")])])
    fetch = OffsetFetchRequest[3](group, [(topic, [0])])
    for other in nodes - {coordinator}:
        got = call(client, other, commit).topics[0][1][0][1]
        if got != NOT_COORDINATOR:
            raise Fail(f"OffsetCommit for {group} at node {other} (coordinator {coordinator}):"
                       f" error {got}, want NOT_COORDINATOR ({NOT_COORDINATOR})")
        resp = call(client, other, fetch)
        if resp.error_code != NOT_COORDINATOR:
            raise Fail(f"OffsetFetch for {group} at node {other}: error {resp.error_code}, "
                       f"want NOT_COORDINATOR")
    got = call(client, coordinator, commit).topics[0][1][0][1]
    if got != NONE:
        raise Fail(f"OffsetCommit at the coordinator {coordinator}: error {got}")
    resp = call(client, coordinator, fetch)
    committed = resp.topics[0][1][0][1]
    if resp.error_code != NONE or committed != 1:
        raise Fail(f"OffsetFetch at the coordinator: error {resp.error_code}, offset "
                   f"{committed}, want 1")
    return coordinator


def wrong_instance(topic, partitions):
    bootstrap = env("KELP_BOOTSTRAP")
    client = KafkaClient(bootstrap_servers=bootstrap, client_id="kelp-cluster-routing")
    try:
        future = client.cluster.request_update()
        client.poll(future=future, timeout_ms=30_000)
        nodes = {b.nodeId for b in client.cluster.brokers()}
        if len(nodes) < 2:
            raise Fail(f"Metadata lists {sorted(nodes)}: the check needs two instances or more")
        led, refused = check_partitions(client, nodes, topic, partitions)
        group = f"{topic}-routing"
        coordinator = check_group(client, nodes, topic, group)
        log(f"leaders {led}, coordinator of {group}: {coordinator}")
        return (f"{refused} Produce/Fetch requests sent to instances that do not lead the "
                f"partition answered NOT_LEADER_OR_FOLLOWER and stored nothing; each leader "
                f"took its record; OffsetCommit/OffsetFetch at every instance but the group's "
                f"coordinator ({len(nodes) - 1} of {len(nodes)}) answered NOT_COORDINATOR, the "
                f"coordinator (node {coordinator}) kept the commit")
    finally:
        client.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    r = Reporter("kafka-python", ["cluster-wrong-instance"])
    main_wrapper(r, lambda r: r.run("cluster-wrong-instance", wrong_instance, sys.argv[1],
                                    int(sys.argv[2])))


if __name__ == "__main__":
    main()
