#!/usr/bin/env python3
"""confluent-kafka checks of a cluster of kelp instances (scripts/test-seaweedmq-cluster.sh).

    cluster.py create PREFIX PARTITIONS LEADERS_JSON
        Creates a topic of PARTITIONS partitions through KELP_BOOTSTRAP, waits until metadata
        names a live leader for each, and writes {"topic": ..., "leaders": {p: node}} to
        LEADERS_JSON. Rendezvous hashing may leave one of three instances without any of 12
        partitions (about 2% of names): then the next name (PREFIX-spread-2, ...) is tried, up
        to 5, each logged. RESULT ...|cluster-create-topic.
    cluster.py metadata TOPIC PARTITIONS
        Bootstrapped from KELP_BOOTSTRAP (one instance): Metadata and DescribeCluster list
        every instance of KELP_CLUSTER_BROKERS with its address, and every partition of TOPIC
        has a leader among them, each instance leading at least one. RESULT ...|cluster-metadata.
    cluster.py metrics URL...
        Each instance's /metrics (one URL each, in KELP_CLUSTER_BROKERS order): every instance
        counts all members live and a fresh lease, and the partitions it says it leads
        (kelp_partitions_led) are exactly those Metadata names it leader of, over all topics.
        RESULT|kelp|cluster-metrics.
    cluster.py failover LEADERS_JSON DEAD KILL_MS LIMIT_S
        Right after node DEAD was SIGKILLed at wall-clock KILL_MS: polls until Metadata (from
        KELP_BOOTSTRAP, every instance) lists only the live instances and names one of them
        leader of every partition of the topic in LEADERS_JSON, and a produce (acks=all) to
        each partition is acknowledged. The time from the kill is reported; more than LIMIT_S
        seconds fails. RESULT ...|cluster-failover-time.

KELP_CLUSTER_BROKERS: "1=127.0.0.1:PORT,2=...,3=..." (node id = advertised address).
Every wait polls an observable condition under a generous deadline.
"""

import json
import os
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from confluent_kafka import KafkaException, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from confluent_util import CLIENT, base_conf  # noqa: E402
from interop_common import Fail, Reporter, env, log, main_wrapper  # noqa: E402


def expected_brokers():
    out = {}
    for item in env("KELP_CLUSTER_BROKERS").split(","):
        node, addr = item.split("=", 1)
        out[int(node)] = addr
    return out


def admin(bootstrap):
    return AdminClient(base_conf(bootstrap))


def topic_leaders(md, topic):
    """{partition: leader} of topic in a ClusterMetadata, or a string saying what is wrong."""
    t = md.topics.get(topic)
    if t is None:
        return "the topic is not in the metadata"
    if t.error is not None:
        return f"topic error {t.error}"
    errs = {p: str(pm.error) for p, pm in t.partitions.items() if pm.error is not None}
    if errs:
        return f"partition errors {errs}"
    return {p: pm.leader for p, pm in t.partitions.items()}


def brokers_of(md):
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def spread(leaders):
    counts = {}
    for node in leaders.values():
        counts[node] = counts.get(node, 0) + 1
    return dict(sorted(counts.items()))


def wait_for(what, deadline_s, probe):
    """Calls probe() until it returns (True, value); probe returns (False, why) meanwhile."""
    t0 = time.monotonic()
    last = None
    while True:
        try:
            ok, value = probe()
        except KafkaException as e:
            ok, value = False, f"{e}"
        if ok:
            return value, time.monotonic() - t0
        if value != last:
            log(f"{what}: {value}")
            last = value
        if time.monotonic() - t0 > deadline_s:
            raise Fail(f"{what}: not within {deadline_s:.0f}s; last: {value}")
        time.sleep(0.2)


# ---- create --------------------------------------------------------------------------------

def create(prefix, partitions, out_path):
    bootstrap = env("KELP_BOOTSTRAP")
    want = expected_brokers()
    a = admin(bootstrap)
    tried = []
    for k in range(1, 6):
        topic = f"{prefix}-spread-{k}"
        fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                             operation_timeout=30, request_timeout=60)
        try:
            fs[topic].result(timeout=90)
        except Exception as e:  # noqa: BLE001
            raise Fail(f"create_topics({topic}, {partitions} partitions): {e}") from e

        def led():
            got = topic_leaders(a.list_topics(topic, timeout=30), topic)
            if isinstance(got, str):
                return False, got
            if len(got) != partitions:
                return False, f"{len(got)} partitions listed, want {partitions}"
            bad = {p: n for p, n in got.items() if n not in want}
            if bad:
                return False, f"leaders not among the instances {sorted(want)}: {bad}"
            return True, got

        leaders, _ = wait_for(f"leaders of {topic}", 60, led)
        counts = spread(leaders)
        if set(counts) == set(want):
            with open(out_path, "w") as f:
                json.dump({"topic": topic, "partitions": partitions,
                           "leaders": {str(p): n for p, n in sorted(leaders.items())}}, f)
            note = f" (names tried before: {tried})" if tried else ""
            return (f"{topic}: {partitions} partitions created through {bootstrap}, leaders "
                    f"per node {counts}{note}")
        log(f"{topic}: leaders per node {counts} leave out "
            f"{sorted(set(want) - set(counts))}; trying another name")
        tried.append(f"{topic} {counts}")
    raise Fail(f"5 topics of {partitions} partitions never had leaders on every instance: {tried}")


# ---- metadata ------------------------------------------------------------------------------

def metadata(topic, partitions):
    bootstrap = env("KELP_BOOTSTRAP")
    want = expected_brokers()
    a = admin(bootstrap)

    def seen():
        md = a.list_topics(topic, timeout=30)
        brokers = brokers_of(md)
        if brokers != want:
            return False, f"Metadata lists brokers {brokers}, want {want}"
        got = topic_leaders(md, topic)
        if isinstance(got, str):
            return False, got
        if sorted(got) != list(range(partitions)):
            return False, f"partitions {sorted(got)}, want 0..{partitions - 1}"
        bad = {p: n for p, n in got.items() if n not in want}
        if bad:
            return False, f"leaders not among the instances: {bad}"
        counts = spread(got)
        if set(counts) != set(want):
            return False, f"leaders per node {counts}: not every instance leads a partition"
        dc = a.describe_cluster(request_timeout=30).result(timeout=40)
        nodes = {n.id: f"{n.host}:{n.port}" for n in dc.nodes}
        if nodes != want:
            return False, f"DescribeCluster lists {nodes}, want {want}"
        if dc.controller is None or dc.controller.id not in want:
            return False, f"DescribeCluster controller {dc.controller} is not an instance"
        return True, (md.orig_broker_id, counts, dc.controller.id, dc.cluster_id)

    (answered_by, counts, controller, cluster_id), took = wait_for(
        f"the cluster through {bootstrap}", 60, seen)
    return (f"bootstrapped from {bootstrap} only (answered by node {answered_by}): Metadata and "
            f"DescribeCluster list nodes {sorted(want)} at their addresses (cluster "
            f"{cluster_id}, controller {controller}); {topic}'s {partitions} partitions led per "
            f"node {counts}; seen after {took:.1f}s")


# ---- metrics -------------------------------------------------------------------------------

def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        values.setdefault(name, 0.0)
        values[name] += float(value)  # summed over shards
    return values


def metrics(urls):
    bootstrap = env("KELP_BOOTSTRAP")
    want = expected_brokers()
    nodes = list(want)
    if len(urls) != len(nodes):
        raise Fail(f"{len(urls)} metrics URLs for {len(nodes)} instances")
    lease_s = float(env("KELP_CLUSTER_LEASE_MS")) / 1000
    a = admin(bootstrap)

    def consistent():
        md = a.list_topics(timeout=30)
        led = {n: 0 for n in nodes}
        total = 0
        for name, t in md.topics.items():
            if t.error is not None:
                return False, f"topic {name}: {t.error}"
            for pm in t.partitions.values():
                total += 1
                if pm.leader in led:
                    led[pm.leader] += 1
        got = {}
        for node, url in zip(nodes, urls):
            v = scrape(url)
            members = v.get("kelp_cluster_members")
            age = v.get("kelp_cluster_lease_age_seconds")
            if members != len(nodes):
                return False, f"node {node}: kelp_cluster_members {members}, want {len(nodes)}"
            if age is None or age >= lease_s / 2:
                return False, f"node {node}: kelp_cluster_lease_age_seconds {age}"
            got[node] = int(v.get("kelp_partitions_led", -1))
        if got != led:
            return False, (f"kelp_partitions_led per node {got}, Metadata names leaders "
                           f"{led} (of {total} partitions)")
        return True, (got, total)

    (got, total), took = wait_for("metrics and metadata agreeing", 60, consistent)
    return (f"every instance counts {len(nodes)} members with a fresh lease; "
            f"kelp_partitions_led per node {got} matches Metadata's leaders of all {total} "
            f"partitions (after {took:.1f}s)")


# ---- failover ------------------------------------------------------------------------------

def failover(leaders_path, dead, kill_ms, limit_s):
    bootstrap = env("KELP_BOOTSTRAP")
    want = expected_brokers()
    live = {n: addr for n, addr in want.items() if n != dead}
    with open(leaders_path) as f:
        spec = json.load(f)
    topic, partitions = spec["topic"], spec["partitions"]
    moved = sorted(int(p) for p, n in spec["leaders"].items() if n == dead)
    a = admin(bootstrap)
    since_kill = lambda: time.time() - kill_ms / 1000  # noqa: E731
    deadline_s = max(120.0, 4 * limit_s)
    start = since_kill()
    if start > 1:
        log(f"the probe starts {start:.1f}s after the kill")

    def leaders_live():
        md = a.list_topics(topic, timeout=10)
        brokers = brokers_of(md)
        if brokers != live:
            return False, f"Metadata lists brokers {brokers}, want the live ones {live}"
        got = topic_leaders(md, topic)
        if isinstance(got, str):
            return False, got
        bad = {p: n for p, n in got.items() if n not in live}
        if bad or len(got) != partitions:
            return False, f"partitions without a live leader: {bad or got}"
        return True, got

    t_meta = None
    attempts = 0
    while True:
        if since_kill() > deadline_s:
            raise Fail(f"the partitions of {topic} had no live leader taking produces "
                       f"{deadline_s:.0f}s after the SIGKILL of node {dead}")
        got, _ = wait_for(f"{topic}: live leaders", deadline_s, leaders_live)
        if t_meta is None:
            t_meta = since_kill()
            log(f"{topic}: every partition led by a live instance {t_meta:.2f}s after the "
                f"kill: {spread(got)}")
        # One record to each partition, acks=all, from a fresh producer (no stale leaders).
        attempts += 1
        conf = base_conf(bootstrap)
        conf.update({"acks": "all", "linger.ms": 0, "message.timeout.ms": 5000,
                     "retry.backoff.ms": 50, "retry.backoff.max.ms": 200})
        p = Producer(conf)
        acked = {}
        errors = {}

        def cb(err, msg):
            if err is None:
                acked[msg.partition()] = time.time()
            else:
                errors[msg.partition()] = str(err)

        for part in range(partitions):
            p.produce(topic, b"failover-probe", partition=part, on_delivery=cb)
        left = p.flush(8)
        if left == 0 and len(acked) == partitions:
            t_done = max(acked.values()) - kill_ms / 1000
            break
        log(f"produce attempt {attempts}: {len(acked)} of {partitions} acknowledged; "
            f"errors {errors}")
    detail = (f"node {dead} SIGKILLed; {len(moved)} of {topic}'s {partitions} partitions "
              f"({moved}) moved: Metadata named live leaders for all after {t_meta:.2f}s, a "
              f"produce to each partition was acknowledged {t_done:.2f}s after the kill "
              f"(attempt {attempts}; limit {limit_s:.0f}s: the lease plus 5s); leaders now "
              f"per node {spread(got)}")
    if t_done > limit_s:
        raise Fail(f"too slow: {detail}")
    return detail


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "create":
        r = Reporter(CLIENT, ["cluster-create-topic"])
        main_wrapper(r, lambda r: r.run("cluster-create-topic", create, args[0], int(args[1]),
                                        args[2]))
    elif mode == "metadata":
        r = Reporter(CLIENT, ["cluster-metadata"])
        main_wrapper(r, lambda r: r.run("cluster-metadata", metadata, args[0], int(args[1])))
    elif mode == "metrics":
        r = Reporter("kelp", ["cluster-metrics"])
        main_wrapper(r, lambda r: r.run("cluster-metrics", metrics, args))
    elif mode == "failover":
        r = Reporter(CLIENT, ["cluster-failover-time"])
        main_wrapper(r, lambda r: r.run("cluster-failover-time", failover, args[0],
                                        int(args[1]), int(args[2]), float(args[3])))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
