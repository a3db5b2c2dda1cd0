#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumer-group scenarios.

- group-split: 3 members of one group on a 6-partition topic; the group becomes Stable (per
  DescribeGroups) and every partition is owned by exactly one member; each member's
  assignment (from its rebalance callbacks) equals what the broker reports for its member id,
  all in the same generation. Throughout every scenario no two members of a group may own a
  partition at the same time (checked after every poll round).
- group-leave: after group-split one member closes (LeaveGroup); the other two own all 6
  partitions well before any session timeout, and the group consumes everything produced
  before and after, each record exactly once (members commit what they processed after every
  batch and in on_revoke), committed offsets at the end of every partition.
- group-kill: a member in a child process is SIGKILLed; after its session timeout (6 s) its
  partitions move to the two survivors (not earlier), which then read what is produced.
- group-resume: a member processes and commits part of a topic (different offsets per
  partition, 0 and end included), closes; the group goes Empty; a new member (with
  auto.offset.reset=latest, so a lost commit shows as a gap) resumes exactly at the committed
  offsets: no gap, no re-read.
- group-static: 3 static members (group.instance.id); one restarts within its session
  timeout; it gets its old partitions back in the same generation and resumes at its commits,
  while the other two see no rebalance: no callback, same generation, same rebalance count,
  over several heartbeats and while consuming new records.
- group-two-groups: two groups on one topic each read everything; one commits the end, the
  other half; each group's committed offsets are its own, and new members of each resume at
  their own group's offsets.
- acceptance-groups: 3 members split 6 partitions exactly once; one closes; the remaining two
  consume all 6,000 records (exactly once); the committed offsets, read by a fresh member
  (committed()) and by AdminClient.list_consumer_group_offsets, sum to 6,000.

Every member uses enable.auto.commit=false and commits explicitly; heartbeat.interval.ms=500
so rebalances are noticed quickly.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             TopicPartition)

from confluent_util import (CLIENT, ErrorLog, admin_client, base_conf, check_delivery,
                            create_topics, produce)
from interop_common import (ConsumedLog, Fail, Reporter, env, fmt_owned, log, main_wrapper,
                            make_records, short, split_problem, wait_until)

SCENARIOS = ["group-split", "group-leave", "group-kill", "group-resume", "group-static",
             "group-two-groups", "acceptance-groups"]
ACCEPTANCE_N = int(os.environ.get("KELP_INTEROP_ACCEPTANCE_GROUPS_N", "6000"))
HEARTBEAT_MS = 500


def produce_spread(bootstrap, topic, n, partitions, tag, seed, before=None):
    """Produce n records, record i to partition i % partitions; returns {(p, offset): key}.
    Delivery offsets must continue densely after what `before` ({(p, offset): key}) holds."""
    recs = make_records(n, tag, seed)
    produce(bootstrap, topic, recs, partition_of=lambda rec: rec.i % partitions)
    if not before:
        check_delivery(recs, topic)
    else:
        for p in range(partitions):
            start = sum(1 for (pp, _o) in before if pp == p)
            offs = sorted(r.offset for r in recs if r.partition == p)
            if offs != list(range(start, start + len(offs))):
                raise Fail(f"{topic} partition {p}: delivery offsets {offs[:3]}...{offs[-3:]}, "
                           f"expected {start}..{start + len(offs) - 1}")
    return {(r.partition, r.offset): r.key for r in recs}


def parse_cgmd(b):
    """librdkafka's serialized consumer group metadata: b"CGMDv2:" <generation int32, host
    order> <group id> NUL <member id> NUL ... -> (generation, member id)."""
    if not isinstance(b, (bytes, bytearray)) or not b.startswith(b"CGMDv2:") or len(b) < 11:
        return None, None
    gen = struct.unpack("=i", b[7:11])[0]
    rest = bytes(b[11:])
    _gid, _, rest = rest.partition(b"\0")
    mid, _, _ = rest.partition(b"\0")
    return gen, mid.decode("utf-8", "replace")


class Member:
    """One group member (a confluent_kafka.Consumer subscribed to one topic) with its view of
    the group: owned partitions from its rebalance callbacks, rebalance events, what it read,
    and librdkafka statistics (rebalance count, Heartbeat requests sent)."""

    def __init__(self, name, bootstrap, group, topic, consumed, produced, commit="batch",
                 extra=None):
        self.name = name
        self.group = group
        self.topic = topic
        self.consumed = consumed  # ConsumedLog shared by the group's members
        self.produced = produced  # {(p, offset): key}; grows as scenarios produce
        # "batch": commit what was processed after every batch and in on_revoke; "revoke": only
        # in on_revoke (and when told); "manual": only when told
        self.commit_mode = commit
        self.owned = set()
        self.events = []  # (kind, partitions, monotonic time)
        self.pending = {}  # partition -> next offset, processed but not committed
        self.commit_errors = []
        self.msg_errors = []
        self.read = {}  # partition -> [offsets] in the order read
        self.eof = {}  # partition -> offset of the last end-of-partition event
        self.stats = {}
        self.closed = False
        self.errlog = ErrorLog(name)
        conf = base_conf(bootstrap)
        conf.update({
            "client.id": f"kelp-interop-{name}",
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 45000,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "enable.partition.eof": True,
            "statistics.interval.ms": 200,
            "stats_cb": self._on_stats,
            "error_cb": self.errlog,
        })
        conf.update(extra or {})
        self.conf = conf
        self.c = Consumer(conf)
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)

    # -- callbacks (run inside poll/consume/close) --
    def _parts(self, parts):
        return sorted(tp.partition for tp in parts if tp.topic == self.topic)

    def _on_assign(self, _c, parts):
        ps = self._parts(parts)
        self.events.append(("assign", ps, time.monotonic()))
        self.owned = set(ps)
        log(f"{self.name}: assigned {ps}")

    def _on_revoke(self, _c, parts):
        ps = self._parts(parts)
        self.events.append(("revoke", ps, time.monotonic()))
        log(f"{self.name}: revoked {ps}")
        if self.commit_mode in ("batch", "revoke"):
            self.commit_pending("in on_revoke")
        self.pending.clear()
        self.owned -= set(ps)

    def _on_lost(self, _c, parts):
        ps = self._parts(parts)
        self.events.append(("lost", ps, time.monotonic()))
        log(f"{self.name}: LOST {ps}")
        self.pending.clear()
        self.owned -= set(ps)

    def _on_stats(self, js):
        try:
            s = json.loads(js)
        except ValueError:
            return
        cg = s.get("cgrp") or {}
        reqs = {}
        for b in (s.get("brokers") or {}).values():
            for k, v in (b.get("req") or {}).items():
                reqs[k] = reqs.get(k, 0) + v
        self.stats = {"rebalance_cnt": cg.get("rebalance_cnt"), "state": cg.get("state"),
                      "join_state": cg.get("join_state"), "heartbeats": reqs.get("Heartbeat", 0),
                      "joins": reqs.get("JoinGroup", 0), "at": time.monotonic()}

    # -- actions --
    def poll(self, timeout=0.05):
        if self.closed:
            return
        for m in self.c.consume(num_messages=500, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof[m.partition()] = m.offset()
                else:
                    self.msg_errors.append(str(err))
                    log(f"{self.name}: message error {err}")
                continue
            p, o = m.partition(), m.offset()
            self.consumed.add(self.name, p, o, m.key(), self.produced)
            self.read.setdefault(p, []).append(o)
            self.pending[p] = o + 1
        if self.commit_mode == "batch":
            self.commit_pending("after a batch")

    def commit_pending(self, why):
        if not self.pending:
            return
        offs = [TopicPartition(self.topic, p, o) for p, o in sorted(self.pending.items())]
        self.pending.clear()
        self.commit(offs, why)

    def commit(self, offs, why):
        try:
            res = self.c.commit(offsets=offs, asynchronous=False)
        except KafkaException as e:
            self.commit_errors.append(f"{self.name} commit {why} of "
                                      f"{[(tp.partition, tp.offset) for tp in offs]}: {e.args[0]}")
            log(self.commit_errors[-1])
            return False
        bad = [f"p{tp.partition}: {tp.error}" for tp in (res or []) if tp.error is not None]
        if bad:
            self.commit_errors.append(f"{self.name} commit {why}: {bad}")
            log(self.commit_errors[-1])
            return False
        return True

    def cgmd(self):
        """(generation, member id) as librdkafka knows them now."""
        return parse_cgmd(self.c.consumer_group_metadata())

    def committed(self, partitions):
        tps = self.c.committed([TopicPartition(self.topic, p) for p in partitions], timeout=30)
        for tp in tps:
            if tp.error is not None:
                raise Fail(f"{self.name}: committed() partition {tp.partition}: {tp.error}")
        return {tp.partition: tp.offset for tp in tps}

    def close(self):
        if not self.closed:
            self.closed = True
            log(f"{self.name}: close()")
            self.c.close()  # runs on_revoke (commits what is pending), then leaves the group

    def problems(self):
        out = self.commit_errors[:2] + self.msg_errors[:2]
        if self.errlog.errors:
            out.append(f"{self.name} client errors: {self.errlog.errors[:2]}")
        return out


class Fleet:
    """The members of one group, polled in turn; after each round it checks that no two live
    members own the same partition (eager rebalancing revokes before it reassigns)."""

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
            out.extend(m.problems())
        return f" [{'; '.join(out[:4])}]" if out else ""

    def check(self, produced, what=None):
        """Every produced record consumed exactly once by the group (see ConsumedLog)."""
        try:
            self.members[0].consumed.check(produced, what=what or f"group {self.group}")
        except Fail as e:
            raise Fail(f"{e}{self.problems()}") from None

    def describe(self):
        """(state name, {member id: (instance id, [partitions of our topic])}) or raises."""
        fs = self.admin.describe_consumer_groups([self.group], request_timeout=30)
        d = fs[self.group].result(timeout=60)
        members = {}
        for mb in d.members:
            parts = []
            if mb.assignment is not None:
                parts = sorted(tp.partition for tp in mb.assignment.topic_partitions
                               if tp.topic == self.topic)
            members[mb.member_id] = (mb.group_instance_id, parts)
        state = getattr(d.state, "name", str(d.state))
        return state, members

    def group_state(self):
        """Everything we know of the group now: broker view, member views; a readable state."""
        ids, gens = {}, {}
        for m in self.live():
            gens[m.name], ids[m.name] = m.cgmd()
        owned = {m.name: sorted(m.owned) for m in self.live()}
        try:
            state, bmembers = self.describe()
        except Exception as e:  # noqa: BLE001
            state, bmembers = f"describe failed: {e}", {}
        txt = (f"broker: {state}, members {{{', '.join(f'{short(k, 40)}: {v[1]}' for k, v in bmembers.items())}}}; "
               f"clients: owned {fmt_owned(owned)}, generations {gens}")
        return {"state": state, "bmembers": bmembers, "ids": ids, "gens": gens, "owned": owned,
                "txt": txt}

    def settled(self):
        """(ok, state): the broker says Stable with exactly the live members, each member's
        own view of its assignment equals the broker's, all in one generation, and every
        partition is owned by exactly one member."""
        g = self.group_state()
        live = self.live()
        ok = (g["state"] == "STABLE"
              and set(g["bmembers"]) == set(g["ids"].values())
              and len(set(g["gens"].values())) == 1
              and all(g["bmembers"][g["ids"][m.name]][1] == g["owned"][m.name] for m in live)
              and split_problem(g["owned"], self.partitions) is None)
        return ok, g

    def wait_settled(self, what, timeout_s=None, also=None):
        """Wait until settled() (and also(group state), if given)."""
        def check():
            ok, g = self.settled()
            if ok and also is not None:
                ok = also(g)
            return ok, g
        return self._wait(what, check, timeout_s)

    def _wait(self, what, check, timeout_s):
        last = {}

        def chk():
            ok, g = check()
            last["g"] = g
            return ok, g["txt"]
        try:
            dt, _ = wait_until(what, chk, self.poll, timeout_s=timeout_s)
        except Fail as e:
            raise Fail(f"{e}{self.problems()}") from None
        return dt, last["g"]

    def wait_consumed(self, what, produced, timeout_s=None):
        def chk():
            got, total = self.members[0].consumed.complete(produced)
            return got == total, f"{got}/{total} records consumed; owned " \
                                 f"{fmt_owned({m.name: m.owned for m in self.live()})}"
        try:
            return wait_until(what, chk, self.poll, timeout_s=timeout_s)[0]
        except Fail as e:
            raise Fail(f"{e}{self.problems()}") from None


def split_txt(g, fleet):
    return ", ".join(f"{m.name}: {g['owned'][m.name]}" for m in fleet.live())


# -------------------------------------------------------------------------------- child

def kill_child_main(conf_json, topic):
    """A group member in its own process (group-kill); reports its assignment on stdout."""
    conf = json.loads(conf_json)

    def report(kind, parts):
        gen, mid = parse_cgmd(c.consumer_group_metadata())
        print(json.dumps({"event": kind, "partitions": sorted(tp.partition for tp in parts),
                          "generation": gen, "member_id": mid}), flush=True)

    conf["error_cb"] = lambda err: print(json.dumps({"event": "error", "error": str(err)}),
                                         flush=True)
    c = Consumer(conf)
    c.subscribe([topic], on_assign=lambda _c, ps: report("assign", ps),
                on_revoke=lambda _c, ps: report("revoke", ps))
    parent = os.getppid()
    while os.getppid() == parent:
        c.consume(num_messages=100, timeout=0.2)
    os._exit(0)


class Child:
    def __init__(self, conf, topic):
        conf = {k: v for k, v in conf.items() if not callable(v)}
        self.p = subprocess.Popen([sys.executable, "-u", os.path.abspath(__file__), "--kill-child",
                                   json.dumps(conf), topic], stdout=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True)
        self.events = []
        self.owned = set()
        self.member_id = None
        self.generation = None
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.events.append(ev)
            log(f"child: {ev}")
            if ev["event"] == "assign":
                self.owned = set(ev["partitions"])
                self.member_id, self.generation = ev["member_id"], ev["generation"]
            elif ev["event"] == "revoke":
                self.owned -= set(ev["partitions"])

    def kill(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=30)


# -------------------------------------------------------------------------------- scenarios

def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    admin = admin_client(bootstrap)

    def fleet(name, partitions, produced, n_members, commit="batch", extra=None, topic=None,
              group=None):
        topic = topic or f"{prefix}-ck-g-{name}"
        group = group or f"{prefix}-ck-g-{name}"
        fl = Fleet(admin, group, topic, partitions)
        consumed = ConsumedLog(topic)
        for i in range(n_members):
            fl.add(Member(f"{name}-{i + 1}", bootstrap, group, topic, consumed, produced,
                          commit=commit, extra=extra))
        return fl

    # ---- group-split, then group-leave on the same group
    split_state = {}
    leave_fl = []

    def group_split():
        topic = f"{prefix}-ck-g-split"
        create_topics(admin, [topic], 6)
        produced = produce_spread(bootstrap, topic, 600, 6, "ck-gs-a", 31)
        # Members commit what they processed when they give partitions up (on_revoke), like
        # applications that commit on rebalance; group-leave relies on those commits.
        fl = fleet("split", 6, produced, 3, commit="revoke")
        leave_fl.append(fl)
        dt, g = fl.wait_settled("3 members splitting 6 partitions")
        split_state.update(produced=produced, fl=fl, g=g)
        gen = next(iter(g["gens"].values()))
        return f"3 members, generation {gen}, split {split_txt(g, fl)}, stable after {dt:.1f}s"

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
        # A clean LeaveGroup rebalances at once; the session timeout (45 s) must not matter.
        dt, g = fl.wait_settled("the 2 remaining members owning all 6 partitions after a "
                                "LeaveGroup (session.timeout.ms=45000; a leave must not wait "
                                "for it)", timeout_s=40)
        gen0, gen1 = next(iter(g0["gens"].values())), next(iter(g["gens"].values()))
        if gen1 <= gen0:
            raise Fail(f"generation {gen1} after the leave, was {gen0} before")
        more = produce_spread(bootstrap, fl.topic, 600, 6, "ck-gs-b", 32, before=produced)
        produced.update(more)
        fl.wait_consumed("consuming everything produced before and after the leave", produced)
        fl.poll()
        fl.check(produced)
        for m in fl.live():
            m.commit_pending("at the end")
        survivor = fl.live()[0]
        committed = survivor.committed(range(6))
        if committed != {p: 200 for p in range(6)}:
            raise Fail(f"committed offsets {committed} after everything was consumed, expected "
                       f"200 in every partition{fl.problems()}")
        return (f"all read the first 600 records; {leaver.name} (owning {had}) left; the others "
                f"committed in on_revoke; {split_txt(g, fl)} in generation {gen1} "
                f"{dt:.1f}s later; 1200 records consumed exactly once "
                f"(per member {[sum(len(v) for v in m.read.values()) for m in fl.members]}), "
                f"committed 200 x 6")

    # ---- group-kill
    def group_kill():
        topic = f"{prefix}-ck-g-kill"
        group = f"{prefix}-ck-g-kill"
        create_topics(admin, [topic], 6)
        produced = {}
        session_ms = 6000
        extra = {"session.timeout.ms": session_ms}
        child_conf = dict(base_conf(bootstrap))
        child_conf.update({"client.id": "kelp-interop-kill-child", "group.id": group,
                           "enable.auto.commit": False, "auto.offset.reset": "earliest",
                           "session.timeout.ms": session_ms,
                           "heartbeat.interval.ms": HEARTBEAT_MS})
        child = Child(child_conf, topic)
        fl = None
        try:
            fl = fleet("kill", 6, produced, 2, extra=extra)

            def with_child(g):
                ids = set(g["ids"].values()) | {child.member_id}
                owned = dict(g["owned"], child=sorted(child.owned))
                return (child.member_id is not None
                        and set(g["bmembers"]) == ids and len(ids) == 3
                        and g["bmembers"][child.member_id][1] == sorted(child.owned)
                        and child.generation == next(iter(g["gens"].values()))
                        and split_problem(owned, 6) is None)

            def settled3():
                g = fl.group_state()
                ok = g["state"] == "STABLE" and len(set(g["gens"].values())) == 1 and all(
                    m.name in g["ids"] and g["ids"][m.name] in g["bmembers"]
                    and g["bmembers"][g["ids"][m.name]][1] == g["owned"][m.name]
                    for m in fl.live()) and with_child(g)
                g["txt"] += f"; child: member {short(child.member_id, 40)} generation " \
                            f"{child.generation} owns {sorted(child.owned)}"
                return ok, g

            dt1, g1 = fl._wait("3 members (one in a child process) splitting 6 partitions",
                               settled3, None)
            child_parts = sorted(child.owned)
            gen1 = next(iter(g1["gens"].values()))
            t_kill = time.monotonic()
            child.kill()
            log(f"child (member {child.member_id}, owning {child_parts}) killed with SIGKILL")
            dt2, g2 = fl.wait_settled(f"the 2 survivors owning all 6 partitions after the "
                                      f"SIGKILL (session.timeout.ms={session_ms})")
            moved = time.monotonic() - t_kill
            gen2 = next(iter(g2["gens"].values()))
            if child.member_id in g2["bmembers"]:
                raise Fail(f"killed member {child.member_id} is still in the group: {g2['txt']}")
            # Its last heartbeat was at most one heartbeat interval before the kill.
            earliest = (session_ms - HEARTBEAT_MS) / 1000 - 1.0
            if moved < earliest:
                raise Fail(f"partitions moved {moved:.1f}s after the SIGKILL, before the session "
                           f"timeout of {session_ms / 1000:.0f}s could have expired (expected "
                           f">= {earliest:.1f}s)")
            if gen2 <= gen1:
                raise Fail(f"generation {gen2} after the kill, was {gen1}")
            more = produce_spread(bootstrap, topic, 120, 6, "ck-gk", 33)
            produced.update(more)
            fl.wait_consumed("the survivors consuming records produced after the move", produced)
            fl.check(produced, what=f"the survivors of group {group}")
            return (f"child owned {child_parts} (generation {gen1}); SIGKILL; "
                    f"{split_txt(g2, fl)} in generation {gen2} {moved:.1f}s later "
                    f"(session timeout {session_ms / 1000:.0f}s); survivors read all 120 new "
                    f"records once")
        finally:
            child.kill()
            if fl is not None:
                fl.close_all()

    # ---- group-resume
    def group_resume():
        topic = f"{prefix}-ck-g-resume"
        create_topics(admin, [topic], 4)
        produced = produce_spread(bootstrap, topic, 400, 4, "ck-gr", 34)
        target = {0: 37, 1: 100, 2: 1, 3: 0}
        fl1 = fleet("resume", 4, produced, 1, commit="manual")
        try:
            first = fl1.members[0]

            def processed():
                mine = {p: sorted(o for o in first.read.get(p, []) if o < target[p])
                        for p in target}
                ok = all(mine[p] == list(range(target[p])) for p in target)
                return ok, f"processed {[len(mine[p]) for p in sorted(target)]} of " \
                           f"{[target[p] for p in sorted(target)]}; owned {sorted(first.owned)}"
            wait_until("the first member reading up to the offsets it will commit", processed,
                       fl1.poll)
            if not first.commit([TopicPartition(topic, p, o) for p, o in sorted(target.items())],
                                "of the processed part"):
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
            return state == "EMPTY" and not members, f"{state} with {len(members)} members"
        wait_until(f"group {fl1.group} Empty after its only member closed", empty)

        # auto.offset.reset=latest: a lost commit would start at the end (a gap), not re-read.
        rest = {k: v for k, v in produced.items() if k[1] >= target[k[0]]}
        fl2 = fleet("resume", 4, rest, 0)
        second = fl2.add(Member("resume-new", bootstrap, fl2.group, topic, ConsumedLog(topic),
                                rest, extra={"auto.offset.reset": "latest"}))
        try:
            seen = second.committed(range(4))
            if seen != target:
                raise Fail(f"a new member of the group reads committed offsets {seen}, "
                           f"expected {target}")

            def at_end():
                # end-of-partition events at offset 100 = read up to the end
                return (sorted(second.owned) == [0, 1, 2, 3]
                        and all(second.eof.get(p) == 100 for p in range(4))), \
                    f"owned {sorted(second.owned)}, end of partition reached at {second.eof}"
            wait_until("the new member reading to the end of every partition", at_end, fl2.poll)
            firsts = {p: (second.read.get(p) or ["-"])[0] for p in range(4)}
            for p in range(4):
                offs = second.read.get(p, [])
                if offs != list(range(target[p], 100)):
                    raise Fail(f"partition {p} committed at {target[p]}: the new member read "
                               f"offsets {offs[:3]}..{offs[-3:]} ({len(offs)} records), expected "
                               f"{target[p]}..99 ({100 - target[p]} records)")
            second.consumed.check(rest, what="the new member")
        finally:
            fl2.close_all()
        return (f"committed {target} of 4x100 records; the group went Empty; a new member "
                f"read committed {seen} and started at {firsts}, read "
                f"{sum(100 - o for o in target.values())} records, none twice, none missing")

    # ---- group-static
    def group_static():
        topic = f"{prefix}-ck-g-static"
        group = f"{prefix}-ck-g-static"
        create_topics(admin, [topic], 6)
        produced = produce_spread(bootstrap, topic, 120, 6, "ck-gst-a", 35)
        session_ms = 30000
        consumed = ConsumedLog(topic)

        def static_member(i, name):
            return Member(name, bootstrap, group, topic, consumed, produced, extra={
                "group.instance.id": f"{prefix}-ck-static-{i}", "session.timeout.ms": session_ms})
        fl = Fleet(admin, group, topic, 6)
        for i in range(3):
            fl.add(static_member(i, f"static-{i + 1}"))
        try:
            dt, g0 = fl.wait_settled("3 static members splitting 6 partitions")
            fl.wait_consumed("reading the first records", produced)
            fl.poll()
            old = fl.members[1]
            old_parts = sorted(old.owned)
            gen0, old_id = old.cgmd()
            others = [fl.members[0], fl.members[2]]
            before = {m.name: (m.cgmd(), len(m.events), m.stats.get("rebalance_cnt"))
                      for m in others}
            t_close = time.monotonic()
            old.close()  # a static member does not send LeaveGroup on close
            new = fl.add(static_member(1, "static-2-restarted"))

            def back(g):
                for m in others:
                    (gen, mid), nev, _ = before[m.name]
                    if len(m.events) != nev or g["gens"].get(m.name) != gen:
                        raise Fail(f"{m.name} saw a rebalance when static member {old.name} "
                                   f"restarted: callbacks {m.events[nev:]}, generation {gen} -> "
                                   f"{g['gens'].get(m.name)}; group: {g['txt']}")
                return sorted(new.owned) == old_parts and g["gens"].get(new.name) == gen0
            dt2, g1 = fl.wait_settled(f"the restarted static member back in generation {gen0} "
                                      f"with {old_parts} (session.timeout.ms={session_ms})",
                                      also=back)
            restart_s = time.monotonic() - t_close
            t_back = time.monotonic()
            hb0 = {m.name: m.stats.get("heartbeats", 0) for m in others}
            more = produce_spread(bootstrap, topic, 120, 6, "ck-gst-b", 36, before=produced)
            produced.update(more)
            fl.wait_consumed("all members reading records produced after the restart", produced)

            def heartbeats():
                n = {m.name: m.stats.get("heartbeats", 0) - hb0[m.name] for m in others}
                return all(v >= 4 for v in n.values()) and \
                    all(m.stats.get("at", 0) > t_back for m in others), \
                    f"Heartbeat requests since the restart: {n}"
            wait_until("4 heartbeats of each other member after the restart", heartbeats,
                       fl.poll)
            for m in others:
                (gen, mid), nev, rcnt = before[m.name]
                now = (m.cgmd(), len(m.events), m.stats.get("rebalance_cnt"))
                if now[0] != (gen, mid) or now[1] != nev or now[2] != rcnt:
                    raise Fail(f"{m.name} saw a rebalance when a static member restarted: "
                               f"(generation, member id) {(gen, mid)} -> {now[0]}, rebalance "
                               f"callbacks {m.events[nev:]}, librdkafka rebalance_cnt {rcnt} -> "
                               f"{now[2]}")
            ok, g2 = fl.settled()
            if not ok:
                raise Fail(f"group not settled at the end: {g2['txt']}")
            inst = {v[0]: k for k, v in g2["bmembers"].items()}
            new_gen, new_id = new.cgmd()
            if inst.get(f"{prefix}-ck-static-1") != new_id:
                raise Fail(f"broker maps instance {prefix}-ck-static-1 to "
                           f"{inst.get(f'{prefix}-ck-static-1')}, the restarted member is {new_id}")
            fl.check(produced)
            return (f"{old.name} owning {old_parts} in generation {gen0} restarted "
                    f"(member id {short(old_id, 30)} -> {short(new_id, 30)}); back with the same "
                    f"partitions in generation {new_gen} after {restart_s:.1f}s; the 2 others: no "
                    f"rebalance callback, same generation, same rebalance_cnt over >= 4 heartbeats; "
                    f"240 records read exactly once")
        finally:
            fl.close_all()

    # ---- group-two-groups
    def group_two_groups():
        topic = f"{prefix}-ck-g-two"
        create_topics(admin, [topic], 3)
        produced = produce_spread(bootstrap, topic, 300, 3, "ck-g2", 37)
        fa = fleet("two-a", 3, produced, 2, topic=topic)
        fb = fleet("two-b", 3, produced, 1, commit="manual", topic=topic)
        half = {p: 50 for p in range(3)}
        try:
            def both():
                fa.poll()
                fb.poll()

            def done():
                a = fa.members[0].consumed.complete(produced)
                b = fb.members[0].consumed.complete(produced)
                return a[0] == a[1] and b[0] == b[1], f"group a read {a[0]}/{a[1]}, group b " \
                                                      f"{b[0]}/{b[1]}"
            wait_until("both groups reading the whole topic", done, both)
            both()
            fa.check(produced)
            fb.check(produced)
            if not fb.members[0].commit([TopicPartition(topic, p, o) for p, o in half.items()],
                                        "of half the topic"):
                raise Fail(f"group b commit failed: {fb.members[0].commit_errors[-1]}")
            ca = fa.members[0].committed(range(3))
            cb = fb.members[0].committed(range(3))
            if ca != {p: 100 for p in range(3)} or cb != half:
                raise Fail(f"committed offsets: group a {ca} (expected 100 each), group b {cb} "
                           f"(expected 50 each)")
            listed = {}
            for fl in (fa, fb):
                fs = admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(fl.group, [TopicPartition(topic, p)
                                                            for p in range(3)])])
                res = fs[fl.group].result(timeout=60)
                listed[fl.group] = {tp.partition: tp.offset for tp in res.topic_partitions}
            if listed[fa.group] != ca or listed[fb.group] != cb:
                raise Fail(f"AdminClient.list_consumer_group_offsets: {listed}, committed(): "
                           f"a {ca} b {cb}")
            sa, ma = fa.describe()
            sb, mb = fb.describe()
            if len(ma) != 2 or len(mb) != 1 or set(ma) & set(mb):
                raise Fail(f"describe: group a {sa} members {list(ma)}, group b {sb} members "
                           f"{list(mb)}")
        finally:
            fa.close_all()
            fb.close_all()
        # New members of both groups: each resumes at its own group's offsets.
        rest_b = {k: v for k, v in produced.items() if k[1] >= 50}
        na = fleet("two-a", 3, {}, 0, topic=topic)
        nb = fleet("two-b", 3, rest_b, 0, topic=topic)
        a2 = na.add(Member("two-a-new", bootstrap, na.group, topic, ConsumedLog(topic), {},
                           extra={"auto.offset.reset": "latest"}))
        b2 = nb.add(Member("two-b-new", bootstrap, nb.group, topic, ConsumedLog(topic), rest_b,
                           extra={"auto.offset.reset": "latest"}))
        try:
            def at_end():
                out, ok = {}, True
                for m in (a2, b2):
                    # end-of-partition events at offset 100 = read up to the end
                    out[m.name] = f"owned {sorted(m.owned)}, end of partition at {m.eof}"
                    ok = ok and sorted(m.owned) == [0, 1, 2] and \
                        all(m.eof.get(p) == 100 for p in range(3))
                return ok, "; ".join(out.values())

            def both2():
                na.poll()
                nb.poll()
            wait_until("new members of both groups reading to the end", at_end, both2)
            if a2.read:
                raise Fail(f"a new member of group a (committed 100 x 3) read records again: "
                           f"{ {p: (o[0], len(o)) for p, o in a2.read.items()} }")
            b2.consumed.check(rest_b, what="a new member of group b")
            bfirst = {p: b2.read[p][0] for p in sorted(b2.read)}
        finally:
            na.close_all()
            nb.close_all()
        return (f"group a (2 members) and group b (1 member) each read all 300 records once; "
                f"committed a {ca}, b {cb} (also per list_consumer_group_offsets); new members: "
                f"a read nothing, b resumed at {bfirst}")

    # ---- acceptance-groups
    def acceptance_groups():
        topic = f"{prefix}-ck-g-acceptance"
        create_topics(admin, [topic], 6)
        produced = {}
        fl = fleet("acceptance", 6, produced, 3)
        try:
            dt1, g1 = fl.wait_settled("3 members splitting 6 partitions")
            split1 = split_txt(g1, fl)
            leaver = fl.live()[2]
            leaver.close()
            dt2, g2 = fl.wait_settled("the 2 remaining members owning all 6 partitions")
            split2 = split_txt(g2, fl)
            produced.update(produce_spread(bootstrap, topic, ACCEPTANCE_N, 6, "ck-acc-g", 38))
            fl.wait_consumed(f"the 2 remaining members consuming all {ACCEPTANCE_N} records",
                             produced)
            fl.poll()
            fl.check(produced, what="the 2 remaining members")
            per = [sum(len(v) for v in m.read.values()) for m in fl.live()]
        finally:
            fl.close_all()
        end = {p: sum(1 for (pp, _o) in produced if pp == p) for p in range(6)}
        # A fresh member of the group (never subscribed: OffsetFetch only, no rebalance).
        conf = base_conf(bootstrap)
        conf.update({"group.id": fl.group, "client.id": "kelp-interop-acceptance-fresh",
                     "enable.auto.commit": False})
        fresh = Consumer(conf)
        try:
            tps = fresh.committed([TopicPartition(topic, p) for p in range(6)], timeout=30)
        finally:
            fresh.close()
        errs = [f"p{tp.partition}: {tp.error}" for tp in tps if tp.error is not None]
        if errs:
            raise Fail(f"a fresh member's committed(): {errs}")
        committed = {tp.partition: tp.offset for tp in tps}
        fs = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(fl.group, [TopicPartition(topic, p) for p in range(6)])])
        listed = {tp.partition: tp.offset for tp in fs[fl.group].result(timeout=60).topic_partitions}
        if committed != end or sum(committed.values()) != ACCEPTANCE_N:
            raise Fail(f"a fresh member reads committed offsets {committed} (sum "
                       f"{sum(committed.values())}), expected {end} (sum {ACCEPTANCE_N})")
        if listed != end:
            raise Fail(f"AdminClient.list_consumer_group_offsets: {listed}, expected {end}")
        return (f"split {split1} ({dt1:.1f}s); one left; {split2} ({dt2:.1f}s); "
                f"{ACCEPTANCE_N} records consumed exactly once ({per[0]}+{per[1]}); committed "
                f"offsets sum to {sum(committed.values())} (fresh member and AdminClient)")

    try:
        r.run("group-split", group_split)
        try:
            r.run("group-leave", group_leave)
        finally:
            for fl in leave_fl:
                fl.close_all()
        r.run("group-kill", group_kill)
        r.run("group-resume", group_resume)
        r.run("group-static", group_static)
        r.run("group-two-groups", group_two_groups)
        r.run("acceptance-groups", acceptance_groups)
    finally:
        for fl in leave_fl:
            fl.close_all()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--kill-child"]:
        kill_child_main(sys.argv[2], sys.argv[3])
    main_wrapper(Reporter(CLIENT, SCENARIOS), body)
