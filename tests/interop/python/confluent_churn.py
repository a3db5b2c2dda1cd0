#!/usr/bin/env python3
"""confluent-kafka (librdkafka): group-churn-cooperative.

Eight members of one group, cooperative-sticky (KIP-429), over two topics of 16 partitions
each (32 in all). For 30 s each member changes its subscription every 1-3 s (seeded random):
topic A, topic B, or both; meanwhile no partition may be owned by two members at once (checked
after every poll round, from each member's own assignment). Then every member subscribes to
both topics, and within 60 s (a few rebalances: session timeout 10 s, heartbeats every 500 ms)
every one of the 32 partitions is owned by exactly one member, the broker's DescribeGroups
agrees with the members, and the assignment stays put for a further 3 s.
"""

import random
import threading
import time

from confluent_kafka import Consumer, KafkaException

from confluent_util import CLIENT, admin_client, base_conf, create_topics
from interop_common import Fail, Reporter, env, log, main_wrapper

MEMBERS = 8
PARTITIONS = 16
CHURN_S = 30
SETTLE_S = 60


class Member(threading.Thread):
    def __init__(self, k, bootstrap, group, topics, seed):
        super().__init__(name=f"member-{k}", daemon=True)
        conf = base_conf(bootstrap)
        conf.update({"group.id": group, "partition.assignment.strategy": "cooperative-sticky",
                     "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.c = Consumer(conf)
        self.topics = topics
        self.rnd = random.Random(seed)
        self.lock = threading.Lock()
        self.owned = set()
        self.wanted = None  # a subscription to switch to, set by the driver
        self.churning = True
        self.stop = threading.Event()
        self.errors = []
        self.changes = 0

    # The callbacks run inside poll(): a partition leaves `owned` before this member rejoins
    # (so before any other member can be given it) and enters it once the broker gave it here.
    def on_assign(self, _c, parts):
        with self.lock:
            self.owned |= {(tp.topic, tp.partition) for tp in parts}

    def on_revoke(self, _c, parts):
        with self.lock:
            self.owned -= {(tp.topic, tp.partition) for tp in parts}

    def subscribe(self, topics):
        self.c.subscribe(list(topics), on_assign=self.on_assign, on_revoke=self.on_revoke,
                         on_lost=self.on_revoke)

    def run(self):
        try:
            self.subscribe(self.topics)
            next_change = time.monotonic() + self.rnd.uniform(1, 3)
            while not self.stop.is_set():
                now = time.monotonic()
                if self.churning and now >= next_change:
                    choice = self.rnd.choice([self.topics[:1], self.topics[1:], self.topics])
                    self.subscribe(choice)
                    self.changes += 1
                    next_change = now + self.rnd.uniform(1, 3)
                with self.lock:
                    wanted, self.wanted = self.wanted, None
                if wanted is not None:
                    self.subscribe(wanted)
                self.c.poll(0.1)
                # The callbacks' view must be librdkafka's own.
                actual = {(tp.topic, tp.partition) for tp in self.c.assignment()}
                with self.lock:
                    if actual != self.owned:
                        self.errors.append(f"callbacks say {sorted(self.owned)[:4]}..., "
                                           f"assignment() says {sorted(actual)[:4]}...")
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))
        finally:
            try:
                self.c.close()
            except Exception:  # noqa: BLE001
                pass

    def snapshot(self):
        with self.lock:
            return set(self.owned)


def doubly_owned(members):
    seen = {}
    twice = []
    for m in members:
        for tp in m.snapshot():
            if tp in seen:
                twice.append((tp, seen[tp], m.name))
            seen[tp] = m.name
    return seen, twice


def churn(bootstrap, prefix):
    topics = [f"{prefix}-ck-churn-a", f"{prefix}-ck-churn-b"]
    create_topics(admin_client(bootstrap), topics, PARTITIONS)
    group = f"{prefix}-ck-churn"
    members = [Member(k, bootstrap, group, topics, seed=7000 + k) for k in range(MEMBERS)]
    for m in members:
        m.start()
    try:
        t0 = time.monotonic()
        overlaps = 0
        while time.monotonic() - t0 < CHURN_S:
            _, twice = doubly_owned(members)
            if twice:
                raise Fail(f"during the churn {len(twice)} partitions were owned by two members "
                           f"at once, e.g. {twice[:3]}")
            time.sleep(0.05)
        changes = sum(m.changes for m in members)
        for m in members:
            with m.lock:
                m.churning = False
                m.wanted = topics
        t1 = time.monotonic()
        everything = {(t, p) for t in topics for p in range(PARTITIONS)}
        stable_since = None
        while True:
            errors = [e for m in members for e in m.errors]
            if errors:
                raise Fail(f"member errors: {errors[:3]}")
            seen, twice = doubly_owned(members)
            if twice:
                raise Fail(f"after the churn {len(twice)} partitions owned twice, e.g. {twice[:3]}")
            whole = set(seen) == everything
            if whole and stable_since is None:
                stable_since = (time.monotonic(), dict(seen))
            elif not whole or (stable_since and stable_since[1] != seen):
                stable_since = None
            if stable_since and time.monotonic() - stable_since[0] >= 3:
                break
            if time.monotonic() - t1 > SETTLE_S:
                raise Fail(f"{SETTLE_S} s after the churn ended the members own "
                           f"{len(seen)} of 32 partitions (missing e.g. "
                           f"{sorted(everything - set(seen))[:4]})")
            time.sleep(0.05)
        settled = stable_since[0] - t1
        per_member = sorted(len(m.snapshot()) for m in members)
        check_broker_view(bootstrap, group, members, everything)
        return (f"{changes} subscription changes by {MEMBERS} members over {CHURN_S} s, never a "
                f"partition owned twice; then all 32 partitions owned exactly once {settled:.1f} s "
                f"after the last change (per member {per_member}), as DescribeGroups says")
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(30)


def check_broker_view(bootstrap, group, members, everything):
    """DescribeGroups: Stable, eight members, their assignments the 32 partitions once."""
    admin = admin_client(bootstrap)
    try:
        desc = admin.describe_consumer_groups([group])[group].result(30)
    except KafkaException as e:
        raise Fail(f"describe_consumer_groups: {e}") from e
    owned = {}
    for mem in desc.members:
        for tp in mem.assignment.topic_partitions:
            key = (tp.topic, tp.partition)
            if key in owned:
                raise Fail(f"DescribeGroups gives {key} to two members")
            owned[key] = mem.member_id
    if set(owned) != everything or len(desc.members) != len(members):
        raise Fail(f"DescribeGroups: {len(desc.members)} members owning {len(owned)} of 32 "
                   f"partitions (state {desc.state})")
    log(f"DescribeGroups: {desc.state}, {len(desc.members)} members, 32 partitions once")


def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    r.run("group-churn-cooperative", lambda: churn(bootstrap, prefix))


if __name__ == "__main__":
    main_wrapper(Reporter(CLIENT, ["group-churn-cooperative"]), body)
