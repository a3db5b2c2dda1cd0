#!/usr/bin/env python3
"""kafka-python consumer-group scenarios (KafkaConsumer(group_id=...), subscribe()).

- group-split: 3 members of one group on a 6-partition topic; the group becomes Stable (per
  KafkaAdminClient.describe_consumer_groups) and every partition is owned by exactly one
  member; each member's assignment (from its ConsumerRebalanceListener) equals what the broker
  reports for its client id. Throughout, no two members own a partition at the same time.
- group-leave: the 3 members read 600 records, committing only when giving partitions up (in
  on_partitions_revoked); one member closes (LeaveGroup); the other two own all 6 partitions
  well before the session timeout, and the group consumes everything produced before and
  after, each record exactly once; committed offsets end at the end of every partition.
- group-resume: a member processes and commits part of a topic (different offsets per
  partition, 0 and end included), closes; the group goes Empty; a new member (with
  auto_offset_reset=latest, so a lost commit shows as a gap) resumes exactly at the committed
  offsets: no gap, no re-read.
- group-two-groups: two groups on one topic each read everything; one commits the end, the
  other half; each group's committed offsets are its own, and new members of each resume at
  their own group's offsets.

The members of a group are polled in turn from one thread (kafka-python's heartbeat thread
keeps each session alive); rebalance callbacks run inside poll().
"""

import logging
import sys
import time

import kafka
from kafka import (ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer,
                   OffsetAndMetadata, TopicPartition)
from kafka.admin import NewTopic

from interop_common import (ConsumedLog, Fail, Reporter, env, fmt_owned, log, main_wrapper,
                            make_records, short, split_problem, wait_until)
from kafka_python_roundtrip import wait_topics

CLIENT = "kafka-python"
SCENARIOS = ["group-split", "group-leave", "group-resume", "group-two-groups"]
HEARTBEAT_MS = 500


def create_topic(admin, bootstrap, topic, partitions):
    try:
        admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)],
                            timeout_ms=30000)
    except Exception as e:  # noqa: BLE001
        raise Fail(f"create_topics({topic}) failed: {type(e).__name__}: {e}") from e
    wait_topics(bootstrap, [topic], partitions)


def produce_spread(bootstrap, topic, n, partitions, tag, seed, before=None):
    """Produce n records, record i to partition i % partitions; returns {(p, offset): key}.
    Offsets must continue densely after what `before` ({(p, offset): key}) holds."""
    recs = make_records(n, tag, seed, null_header_values=False)
    prod = KafkaProducer(bootstrap_servers=bootstrap, client_id="kelp-interop-kafka-python",
                         acks="all", linger_ms=5, retries=5, request_timeout_ms=30000,
                         max_block_ms=60000)
    try:
        futs = [(rec, prod.send(topic, key=rec.key, value=rec.value, headers=rec.headers,
                                partition=rec.i % partitions, timestamp_ms=rec.ts))
                for rec in recs]
        prod.flush(timeout=150)
        for rec, f in futs:
            try:
                md = f.get(timeout=60)
            except Exception as e:  # noqa: BLE001
                raise Fail(f"{topic}: send of record {rec.i} failed: {type(e).__name__}: {e}") from e
            rec.partition, rec.offset = md.partition, md.offset
    finally:
        prod.close(timeout=30)
    before = before or {}
    for p in range(partitions):
        start = sum(1 for (pp, _o) in before if pp == p)
        offs = sorted(r.offset for r in recs if r.partition == p)
        if offs != list(range(start, start + len(offs))):
            raise Fail(f"{topic} partition {p}: delivery offsets {offs[:3]}...{offs[-3:]}, "
                       f"expected {start}..{start + len(offs) - 1}")
    return {(r.partition, r.offset): r.key for r in recs}


class Listener(ConsumerRebalanceListener):
    def __init__(self, member):
        self.m = member

    def on_partitions_revoked(self, revoked):
        self.m.on_revoke(revoked)

    def on_partitions_assigned(self, assigned):
        self.m.on_assign(assigned)


class Member:
    """One KafkaConsumer in a group, subscribed to one topic, with its view of the group."""

    def __init__(self, name, bootstrap, group, topic, consumed, produced, commit="batch",
                 extra=None):
        self.name = name
        self.client_id = f"kelp-interop-kp-{name}"
        self.group = group
        self.topic = topic
        self.consumed = consumed
        self.produced = produced
        # "batch": commit after every batch and on revoke; "revoke": only on revoke (and when
        # told); "manual": only when told
        self.commit_mode = commit
        self.owned = set()
        self.events = []
        self.pending = {}
        self.commit_errors = []
        self.read = {}
        self.closed = False
        conf = dict(bootstrap_servers=bootstrap, client_id=self.client_id, group_id=group,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    session_timeout_ms=45000, heartbeat_interval_ms=HEARTBEAT_MS,
                    request_timeout_ms=60000)
        conf.update(extra or {})
        self.c = KafkaConsumer(**conf)
        self.c.subscribe(topics=[topic], listener=Listener(self))

    def on_assign(self, parts):
        ps = sorted(tp.partition for tp in parts if tp.topic == self.topic)
        self.events.append(("assign", ps, time.monotonic()))
        self.owned = set(ps)
        log(f"{self.name}: assigned {ps}")

    def on_revoke(self, parts):
        ps = sorted(tp.partition for tp in parts if tp.topic == self.topic)
        self.events.append(("revoke", ps, time.monotonic()))
        log(f"{self.name}: revoked {ps}")
        if self.commit_mode in ("batch", "revoke"):
            self.commit_pending("in on_partitions_revoked")
        self.pending.clear()
        self.owned -= set(ps)

    def poll(self):
        if self.closed:
            return
        for tp, msgs in self.c.poll(timeout_ms=50, max_records=500).items():
            for m in msgs:
                self.consumed.add(self.name, tp.partition, m.offset, m.key, self.produced)
                self.read.setdefault(tp.partition, []).append(m.offset)
                self.pending[tp.partition] = m.offset + 1
        if self.commit_mode == "batch":
            self.commit_pending("after a batch")

    def commit_pending(self, why):
        if not self.pending:
            return
        offs = dict(self.pending)
        self.pending.clear()
        self.commit(offs, why)

    def commit(self, offs, why):
        try:
            self.c.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                           for p, o in offs.items()})
        except Exception as e:  # noqa: BLE001
            self.commit_errors.append(f"{self.name} commit {why} of {sorted(offs.items())}: "
                                      f"{type(e).__name__}: {e}")
            log(self.commit_errors[-1])
            return False
        return True

    def generation(self):
        """kafka-python's own (generation, member id); diagnostics only (private API)."""
        g = getattr(getattr(self.c, "_coordinator", None), "_generation", None)
        return (getattr(g, "generation_id", None), getattr(g, "member_id", None))

    def committed(self, partitions):
        return {p: self.c.committed(TopicPartition(self.topic, p)) for p in partitions}

    def positions(self):
        return {p: self.c.position(TopicPartition(self.topic, p), timeout_ms=10000)
                for p in sorted(self.owned)}

    def close(self):
        if not self.closed:
            self.closed = True
            log(f"{self.name}: close()")
            # kafka-python's close() does not call on_partitions_revoked: commit first
            if self.commit_mode in ("batch", "revoke"):
                self.commit_pending("before close()")
            self.c.close(autocommit=False)  # sends LeaveGroup


class Fleet:
    """The members of one group, polled in turn; no two live members may own one partition."""

    def __init__(self, admin, group, topic, partitions):
        self.admin = admin
        self.group = group
        self.topic = topic
        self.partitions = partitions
        self.members = []
        self.overlap = None

    def add(self, m):
        self.members.append(m)
        return m

    def live(self):
        return [m for m in self.members if not m.closed]

    def poll(self):
        for m in self.live():
            m.poll()
        owners = {}
        for m in self.live():
            for p in m.owned:
                owners.setdefault(p, []).append(m.name)
        both = {p: ms for p, ms in owners.items() if len(ms) > 1}
        if both and self.overlap is None:
            self.overlap = f"{both} (owned: {fmt_owned({m.name: m.owned for m in self.live()})})"
        if self.overlap is not None:
            raise Fail(f"group {self.group}: two members owned a partition at the same time: "
                       f"{self.overlap}")

    def close_all(self):
        for m in self.live():
            try:
                m.close()
            except Exception as e:  # noqa: BLE001
                log(f"{m.name}: close failed: {e}")

    def problems(self):
        out = []
        for m in self.members:
            out.extend(m.commit_errors[:2])
        return f" [{'; '.join(out[:4])}]" if out else ""

    def describe(self):
        """(state, {client id: (member id, [partitions of our topic])})."""
        (d,) = self.admin.describe_consumer_groups([self.group])
        members = {}
        for mb in d.members:
            parts = []
            if mb.member_assignment:
                parts = sorted(p for t, ps in mb.member_assignment.assignment if t == self.topic
                               for p in ps)
            members[mb.client_id] = (mb.member_id, parts)
        return d.state, members

    def settled(self):
        owned = {m.name: sorted(m.owned) for m in self.live()}
        gens = {m.name: m.generation() for m in self.live()}
        try:
            state, bmembers = self.describe()
        except Exception as e:  # noqa: BLE001
            state, bmembers = f"describe failed: {type(e).__name__}: {e}", {}
        txt = (f"broker: {state}, members {{{', '.join(f'{k}: {v[1]}' for k, v in bmembers.items())}}}; "
               f"clients: owned {fmt_owned(owned)}, (generation, member id) "
               f"{ {k: (v[0], short(v[1], 30)) for k, v in gens.items()} }")
        live = self.live()
        ok = (state == "Stable"
              and set(bmembers) == {m.client_id for m in live}
              and all(bmembers[m.client_id][1] == owned[m.name] for m in live)
              and all(bmembers[m.client_id][0] == gens[m.name][1] or gens[m.name][1] is None
                      for m in live)
              and len({g[0] for g in gens.values()}) == 1
              and split_problem(owned, self.partitions) is None)
        return ok, {"txt": txt, "owned": owned, "gens": gens, "state": state}

    def wait_settled(self, what, timeout_s=None):
        last = {}

        def chk():
            ok, g = self.settled()
            last["g"] = g
            return ok, g["txt"]
        try:
            dt, _ = wait_until(what, chk, self.poll, timeout_s=timeout_s)
        except Fail as e:
            raise Fail(f"{e}{self.problems()}") from None
        return dt, last["g"]

    def wait_consumed(self, what, produced):
        def chk():
            got, total = self.members[0].consumed.complete(produced)
            return got == total, f"{got}/{total} records consumed; owned " \
                                 f"{fmt_owned({m.name: m.owned for m in self.live()})}"
        try:
            return wait_until(what, chk, self.poll)[0]
        except Fail as e:
            raise Fail(f"{e}{self.problems()}") from None

    def check(self, produced, what=None):
        try:
            self.members[0].consumed.check(produced, what=what or f"group {self.group}")
        except Fail as e:
            raise Fail(f"{e}{self.problems()}") from None


def split_txt(g):
    return ", ".join(f"{k}: {v}" for k, v in g["owned"].items())


def gen_of(g):
    return next(iter(g["gens"].values()))[0]


def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    log(f"kafka-python {kafka.__version__}")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kelp-interop-kafka-python",
                             request_timeout_ms=60000)

    def fleet(name, partitions, produced, n, commit="batch", topic=None, extra=None):
        topic = topic or f"{prefix}-kp-g-{name}"
        fl = Fleet(admin, f"{prefix}-kp-g-{name}", topic, partitions)
        consumed = ConsumedLog(topic)
        for i in range(n):
            fl.add(Member(f"{name}-{i + 1}", bootstrap, fl.group, topic, consumed, produced,
                          commit=commit, extra=extra))
        return fl

    fleets = []
    split_state = {}

    def group_split():
        topic = f"{prefix}-kp-g-split"
        create_topic(admin, bootstrap, topic, 6)
        produced = produce_spread(bootstrap, topic, 600, 6, "kp-gs-a", 41)
        fl = fleet("split", 6, produced, 3, commit="revoke")
        fleets.append(fl)
        dt, g = fl.wait_settled("3 members splitting 6 partitions")
        split_state.update(fl=fl, produced=produced, g=g)
        return f"3 members, generation {gen_of(g)}, split {split_txt(g)}, stable after {dt:.1f}s"

    def group_leave():
        if not split_state:
            raise Fail("group-split did not reach a split group; nothing to leave from")
        fl, produced = split_state["fl"], split_state["produced"]
        fl.wait_consumed("the 3 members reading the first 600 records", produced)
        ok, g0 = fl.settled()
        if not ok:
            raise Fail(f"group no longer settled after reading the first records: {g0['txt']}")
        leaver = fl.live()[2]
        had = sorted(leaver.owned)
        leaver.close()
        dt, g = fl.wait_settled("the 2 remaining members owning all 6 partitions after a "
                                "LeaveGroup (session_timeout_ms=45000; a leave must not wait for "
                                "it)", timeout_s=40)
        if gen_of(g) is not None and gen_of(g0) is not None and gen_of(g) <= gen_of(g0):
            raise Fail(f"generation {gen_of(g)} after the leave, was {gen_of(g0)}")
        produced.update(produce_spread(bootstrap, fl.topic, 600, 6, "kp-gs-b", 42,
                                       before=produced))
        fl.wait_consumed("consuming everything produced before and after the leave", produced)
        fl.poll()
        fl.check(produced)
        for m in fl.live():
            m.commit_pending("at the end")
        committed = fl.live()[0].committed(range(6))
        if committed != {p: 200 for p in range(6)}:
            raise Fail(f"committed offsets {committed} after everything was consumed, expected "
                       f"200 in every partition{fl.problems()}")
        return (f"all read the first 600 records; {leaver.name} (owning {had}) left; the others "
                f"committed in on_partitions_revoked; {split_txt(g)} in generation {gen_of(g)} "
                f"{dt:.1f}s later; 1200 records consumed exactly once (per member "
                f"{[sum(len(v) for v in m.read.values()) for m in fl.members]}), committed 200 x 6")

    def group_resume():
        topic = f"{prefix}-kp-g-resume"
        create_topic(admin, bootstrap, topic, 4)
        produced = produce_spread(bootstrap, topic, 400, 4, "kp-gr", 43)
        target = {0: 37, 1: 100, 2: 1, 3: 0}
        fl1 = fleet("resume", 4, produced, 1, commit="manual")
        fleets.append(fl1)
        first = fl1.members[0]
        try:
            def processed():
                mine = {p: sorted(o for o in first.read.get(p, []) if o < target[p])
                        for p in target}
                ok = all(mine[p] == list(range(target[p])) for p in target)
                return ok, f"processed {[len(mine[p]) for p in sorted(target)]} of " \
                           f"{[target[p] for p in sorted(target)]}; owned {sorted(first.owned)}"
            wait_until("the first member reading up to the offsets it will commit", processed,
                       fl1.poll)
            if not first.commit(target, "of the processed part"):
                raise Fail(f"commit failed: {first.commit_errors[-1]}")
            got = first.committed(range(4))
            if got != target:
                raise Fail(f"committed() right after committing {target} returns {got}")
        finally:
            fl1.close_all()

        def empty():
            try:
                state, members = fl1.describe()
            except Exception as e:  # noqa: BLE001
                return False, f"describe failed: {e}"
            return state == "Empty" and not members, f"{state} with {len(members)} members"
        wait_until(f"group {fl1.group} Empty after its only member closed", empty)

        rest = {k: v for k, v in produced.items() if k[1] >= target[k[0]]}
        fl2 = fleet("resume", 4, rest, 0)
        fleets.append(fl2)
        second = fl2.add(Member("resume-new", bootstrap, fl2.group, topic, ConsumedLog(topic),
                                rest, extra={"auto_offset_reset": "latest"}))
        try:
            seen = second.committed(range(4))
            if seen != target:
                raise Fail(f"a new member of the group reads committed offsets {seen}, "
                           f"expected {target}")

            def at_end():
                if sorted(second.owned) != [0, 1, 2, 3]:
                    return False, f"owned {sorted(second.owned)}"
                pos = second.positions()
                return all(pos[p] == 100 for p in range(4)), f"positions {pos}"
            wait_until("the new member reading to the end of every partition", at_end, fl2.poll)
            second.poll()
            firsts = {p: (second.read.get(p) or ["-"])[0] for p in range(4)}
            for p in range(4):
                offs = second.read.get(p, [])
                if offs != list(range(target[p], 100)):
                    raise Fail(f"partition {p} committed at {target[p]}: the new member read "
                               f"offsets {offs[:3]}..{offs[-3:]} ({len(offs)} records), expected "
                               f"{target[p]}..99 ({100 - target[p]} records)")
            fl2.check(rest, what="the new member")
        finally:
            fl2.close_all()
        return (f"committed {target} of 4x100 records; the group went Empty; a new member read "
                f"committed {seen} and started at {firsts}, read "
                f"{sum(100 - o for o in target.values())} records, none twice, none missing")

    def group_two_groups():
        topic = f"{prefix}-kp-g-two"
        create_topic(admin, bootstrap, topic, 3)
        produced = produce_spread(bootstrap, topic, 300, 3, "kp-g2", 44)
        fa = fleet("two-a", 3, produced, 2, topic=topic)
        fb = fleet("two-b", 3, produced, 1, commit="manual", topic=topic)
        fleets.extend([fa, fb])
        half = {p: 50 for p in range(3)}
        try:
            def both():
                fa.poll()
                fb.poll()

            def done():
                a = fa.members[0].consumed.complete(produced)
                b = fb.members[0].consumed.complete(produced)
                return a[0] == a[1] and b[0] == b[1], \
                    f"group a read {a[0]}/{a[1]}, group b {b[0]}/{b[1]}"
            wait_until("both groups reading the whole topic", done, both)
            both()
            fa.check(produced)
            fb.check(produced)
            if not fb.members[0].commit(half, "of half the topic"):
                raise Fail(f"group b commit failed: {fb.members[0].commit_errors[-1]}")
            ca = fa.members[0].committed(range(3))
            cb = fb.members[0].committed(range(3))
            if ca != {p: 100 for p in range(3)} or cb != half:
                raise Fail(f"committed offsets: group a {ca} (expected 100 each), group b {cb} "
                           f"(expected 50 each)")
            listed = {}
            for fl in (fa, fb):
                res = admin.list_consumer_group_offsets(
                    fl.group, partitions=[TopicPartition(topic, p) for p in range(3)])
                listed[fl.group] = {tp.partition: om.offset for tp, om in res.items()}
            if listed[fa.group] != ca or listed[fb.group] != cb:
                raise Fail(f"KafkaAdminClient.list_consumer_group_offsets: {listed}, committed(): "
                           f"a {ca} b {cb}")
            sa, ma = fa.describe()
            sb, mb = fb.describe()
            if len(ma) != 2 or len(mb) != 1:
                raise Fail(f"describe: group a {sa} members {list(ma)}, group b {sb} members "
                           f"{list(mb)}")
        finally:
            fa.close_all()
            fb.close_all()
        rest_b = {k: v for k, v in produced.items() if k[1] >= 50}
        na = fleet("two-a", 3, {}, 0, topic=topic)
        nb = fleet("two-b", 3, rest_b, 0, topic=topic)
        fleets.extend([na, nb])
        a2 = na.add(Member("two-a-new", bootstrap, na.group, topic, ConsumedLog(topic), {},
                           extra={"auto_offset_reset": "latest"}))
        b2 = nb.add(Member("two-b-new", bootstrap, nb.group, topic, ConsumedLog(topic), rest_b,
                           extra={"auto_offset_reset": "latest"}))
        try:
            def both2():
                na.poll()
                nb.poll()

            def at_end():
                out, ok = {}, True
                for m in (a2, b2):
                    if sorted(m.owned) != [0, 1, 2]:
                        out[m.name] = f"owned {sorted(m.owned)}"
                        ok = False
                        continue
                    pos = m.positions()
                    out[m.name] = f"positions {pos}"
                    ok = ok and all(pos[p] == 100 for p in range(3))
                return ok, "; ".join(f"{k}: {v}" for k, v in out.items())
            wait_until("new members of both groups reading to the end", at_end, both2)
            both2()
            if a2.read:
                raise Fail(f"a new member of group a (committed 100 x 3) read records again: "
                           f"{ {p: (o[0], len(o)) for p, o in a2.read.items()} }")
            nb.check(rest_b, what="a new member of group b")
            bfirst = {p: b2.read[p][0] for p in sorted(b2.read)}
        finally:
            na.close_all()
            nb.close_all()
        return (f"group a (2 members) and group b (1 member) each read all 300 records once; "
                f"committed a {ca}, b {cb} (also per list_consumer_group_offsets); new members: "
                f"a read nothing, b resumed at {bfirst}")

    try:
        r.run("group-split", group_split)
        r.run("group-leave", group_leave)
        for fl in fleets:
            fl.close_all()
        r.run("group-resume", group_resume)
        r.run("group-two-groups", group_two_groups)
    finally:
        for fl in fleets:
            fl.close_all()
        admin.close()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main_wrapper(Reporter(CLIENT, SCENARIOS), body)
