#!/usr/bin/env python3
"""confluent-kafka against kelp on a real SeaweedMQ stack, across a kelp restart.

    kelp_acceptance.py produce STATE   # before the restart
    kelp_acceptance.py verify STATE    # after it

produce: per codec (none/gzip/snappy/lz4/zstd) a fresh 3-partition topic gets 1,000 keyed
records with headers (repeated keys, null values), explicit client timestamps, empty and null
values (5,000 records in all); each topic is read back record by record. Then a group commits
the middle offset of every partition (a simple consumer's commit, as kafka-python or admin
tools make), and the committed offsets are read back. STATE records what was produced where.

verify (kelp restarted, so nothing is served from its cache): every record reads back
unchanged from SeaweedMQ; the group's committed offsets are all still there; a member that
joins the group resumes exactly at them (it receives the second half of every partition, no
record twice, none missing).

Prints RESULT|confluent-kafka|<scenario>|pass/fail|detail lines like the interop suites.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from confluent_util import (CLIENT, ErrorLog, admin_client, base_conf, create_topics,  # noqa: E402
                            produce, verify_topic, with_group_consumer)
from interop_common import (CODECS, Fail, Progress, Reporter, env, main_wrapper,  # noqa: E402
                            make_records)

N = int(os.environ.get("KELP_SWMQ_RECORDS_PER_CODEC", "1000"))
PARTITIONS = 3


def topics_of(prefix):
    return {c: f"{prefix}-swmq-{c}" for c in CODECS}


def records_for(state, codec):
    recs = make_records(N, f"swmq-{codec}", seed=state["seeds"][codec], now_ms=state["now_ms"])
    for rec, (p, off) in zip(recs, state["placed"][codec]):
        rec.partition, rec.offset = p, off
    return recs


def commit_group(bootstrap, group, offsets):
    """Commit offsets {(topic, p): offset} as a consumer outside any generation."""
    tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]

    def commit(c):
        c.assign(tps)
        c.commit(offsets=tps, asynchronous=False)

    with_group_consumer(bootstrap, group, "commit", commit)


def read_committed(bootstrap, group, keys):
    def committed(c):
        got = c.committed([TopicPartition(t, p) for t, p in sorted(keys)], timeout=30)
        return {(tp.topic, tp.partition): tp.offset for tp in got}

    return with_group_consumer(bootstrap, group, "reading committed offsets", committed)


def phase_produce(r, bootstrap, prefix, state_path):
    topics = topics_of(prefix)
    state = {"now_ms": int(time.time() * 1000), "seeds": {}, "placed": {}, "group": f"{prefix}-swmq-group"}

    def create():
        create_topics(admin_client(bootstrap), list(topics.values()), PARTITIONS)
        return f"{len(topics)} topics x {PARTITIONS} partitions created in SeaweedMQ through kelp"

    if not r.run("create-topics", create):
        r.fail_rest("create-topics failed")
        return
    for i, codec in enumerate(CODECS):
        def roundtrip(codec=codec, seed=2000 + i):
            topic = topics[codec]
            state["seeds"][codec] = seed
            recs = make_records(N, f"swmq-{codec}", seed=seed, now_ms=state["now_ms"])
            produce(bootstrap, topic, recs, extra_conf={"compression.type": codec})
            state["placed"][codec] = [(rec.partition, rec.offset) for rec in recs]
            summary = verify_topic(bootstrap, topic, recs, PARTITIONS, group_id=f"{prefix}-swmq-reader")
            return f"{N} records with headers, compression.type={codec}, {summary}"

        r.run(f"roundtrip-{codec}", roundtrip)

    def commit():
        if len(state["placed"]) != len(CODECS):
            raise Fail("not every codec's records were produced")
        offsets = {}
        for codec in CODECS:
            counts = [0] * PARTITIONS
            for p, _ in state["placed"][codec]:
                counts[p] += 1
            for p in range(PARTITIONS):
                offsets[(topics[codec], p)] = counts[p] // 2
        commit_group(bootstrap, state["group"], offsets)
        got = read_committed(bootstrap, state["group"], offsets)
        if got != offsets:
            raise Fail(f"committed offsets read back {got}, committed {offsets}")
        state["committed"] = [[t, p, o] for (t, p), o in sorted(offsets.items())]
        return f"group {state['group']} committed {len(offsets)} offsets (sum {sum(offsets.values())}) and read them back"

    r.run("group-commit", commit)
    with open(state_path, "w") as f:
        json.dump(state, f)


def phase_verify(r, bootstrap, prefix, state_path):
    with open(state_path) as f:
        state = json.load(f)
    topics = topics_of(prefix)
    for codec in CODECS:
        def readback(codec=codec):
            if codec not in state["placed"]:
                raise Fail(f"the produce phase did not produce {codec}")
            recs = records_for(state, codec)
            summary = verify_topic(bootstrap, topics[codec], recs, PARTITIONS,
                                   group_id=f"{prefix}-swmq-reader2")
            return f"after the kelp restart all {N} records ({codec}) read back unchanged from SeaweedMQ, {summary}"

        r.run(f"restart-readback-{codec}", readback)

    def offsets_kept():
        want = {(t, p): o for t, p, o in state.get("committed", [])}
        if not want:
            raise Fail("the produce phase committed nothing")
        got = read_committed(bootstrap, state["group"], want)
        if got != want:
            diff = {k: (want[k], got.get(k)) for k in want if got.get(k) != want[k]}
            raise Fail(f"after the kelp restart committed offsets differ (want, got): {diff}")
        return f"all {len(want)} committed offsets of {state['group']} survived the kelp restart (sum {sum(want.values())})"

    r.run("restart-committed-offsets", offsets_kept)

    def resume():
        want = {(t, p): o for t, p, o in state.get("committed", [])}
        expect = {}
        for codec in CODECS:
            for i, (p, off) in enumerate(state["placed"][codec]):
                if off >= want[(topics[codec], p)]:
                    expect[(topics[codec], p, off)] = f"swmq-{codec}-key-{i:07d}".encode()
        errlog = ErrorLog("resume consumer")
        conf = base_conf(bootstrap)
        conf.update({"group.id": state["group"], "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "error_cb": errlog,
                     "session.timeout.ms": 10000})
        c = Consumer(conf)
        seen = {}
        try:
            c.subscribe(list(topics.values()))
            prog = Progress("resuming the group")
            while len(seen) < len(expect):
                for m in c.consume(num_messages=1000, timeout=0.5):
                    if m.error() is not None:
                        continue
                    k = (m.topic(), m.partition(), m.offset())
                    if k not in expect:
                        raise Fail(f"the resumed member got {k}, before its group's commit {want[(k[0], k[1])]}")
                    if k in seen:
                        raise Fail(f"the resumed member got {k} twice")
                    if m.key() != expect[k]:
                        raise Fail(f"{k}: key {m.key()!r}, expected {expect[k]!r}")
                    seen[k] = True
                prog.update(len(seen))
                why = prog.expired()
                if why:
                    raise Fail(f"{why}; {len(seen)}/{len(expect)} records after the commits received{errlog.summary()}")
        finally:
            c.close()
        return f"a new member resumed at the committed offsets: exactly the {len(expect)} later records, none twice"

    r.run("restart-group-resume", resume)


def main():
    mode, state_path = sys.argv[1], sys.argv[2]
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    if mode == "produce":
        scenarios = ["create-topics"] + [f"roundtrip-{c}" for c in CODECS] + ["group-commit"]
        r = Reporter(CLIENT, scenarios)
        main_wrapper(r, lambda r: phase_produce(r, bootstrap, prefix, state_path))
    elif mode == "verify":
        scenarios = [f"restart-readback-{c}" for c in CODECS] + ["restart-committed-offsets", "restart-group-resume"]
        r = Reporter(CLIENT, scenarios)
        main_wrapper(r, lambda r: phase_verify(r, bootstrap, prefix, state_path))
    else:
        sys.exit(f"usage: {sys.argv[0]} produce|verify STATE")


if __name__ == "__main__":
    main()
