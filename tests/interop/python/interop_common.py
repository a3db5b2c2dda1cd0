"""Shared helpers for the Python interop programs (see tests/interop/README.md).

Every program prints one line per scenario on stdout:
    RESULT|<client>|<scenario>|<pass|fail|skip>|<detail>
Diagnostics go to stderr.
"""

import os
import random
import sys
import time
import traceback

# How long we wait for an observable condition (records read, topic visible) to make
# progress before giving up. Generous on purpose: CI machines have 2 cores.
PROGRESS_DEADLINE_S = float(os.environ.get("KELP_INTEROP_DEADLINE_S", "60"))
# Absolute cap for one wait loop, so a trickle of progress cannot hang a suite forever.
HARD_DEADLINE_S = float(os.environ.get("KELP_INTEROP_HARD_DEADLINE_S", "600"))

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env(name):
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"{name} is not set (see tests/interop/README.md)")
    return v


def short(x, n=160):
    s = repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


class Fail(Exception):
    """A scenario failed; the message is the detail."""


class Skip(Exception):
    """A scenario cannot run here; the message is the reason."""


class Reporter:
    """Prints RESULT lines, and guarantees every declared scenario gets exactly one."""

    def __init__(self, client, scenarios):
        self.client = client
        self.scenarios = list(scenarios)
        self.done = {}

    def report(self, scenario, status, detail=""):
        assert status in ("pass", "fail", "skip"), status
        if scenario in self.done:
            log(f"scenario {scenario} reported twice; keeping the first result")
            return
        detail = " ".join(str(detail).split())
        if len(detail) > 900:
            detail = detail[:897] + "..."
        if status == "skip" and not detail:
            detail = "skipped (no reason given)"
        self.done[scenario] = status
        print(f"RESULT|{self.client}|{scenario}|{status}|{detail}", flush=True)

    def run(self, scenario, fn, *args, **kwargs):
        """Run fn; its return value is the pass detail. Fail/Skip/any exception map to results."""
        log(f"--- {self.client} {scenario}: start")
        t0 = time.monotonic()
        try:
            detail = fn(*args, **kwargs)
        except Skip as e:
            self.report(scenario, "skip", str(e))
            return False
        except Fail as e:
            self.report(scenario, "fail", str(e))
            return False
        except Exception as e:  # noqa: BLE001 - any client error is a scenario failure
            traceback.print_exc(file=sys.stderr)
            self.report(scenario, "fail", f"{type(e).__name__}: {e}")
            return False
        dt = time.monotonic() - t0
        self.report(scenario, "pass", f"{detail or 'ok'} ({dt:.1f}s)")
        return True

    def fail_rest(self, why):
        for s in self.scenarios:
            if s not in self.done:
                self.report(s, "fail", why)

    def skip_rest(self, why):
        for s in self.scenarios:
            if s not in self.done:
                self.report(s, "skip", why)

    def exit_code(self):
        self.fail_rest("scenario never reported (program ended early)")
        return 1 if any(v == "fail" for v in self.done.values()) else 0


def main_wrapper(reporter, body):
    """Run body(reporter); crash -> remaining scenarios fail with the exception."""
    try:
        body(reporter)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        reporter.fail_rest(f"program crashed before this scenario: {type(e).__name__}: {e}")
    sys.exit(reporter.exit_code())


# ---------------------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------------------


class Rec:
    __slots__ = ("i", "key", "value", "headers", "ts", "partition", "offset")

    def __init__(self, i, key, value, headers, ts):
        self.i = i
        self.key = key
        self.value = value
        self.headers = headers
        self.ts = ts
        self.partition = None
        self.offset = None


_WORDS = [b"kelp", b"kafka", b"seaweed", b"record", b"batch", b"offset", b"partition", b"zstd",
          b"lz4", b"snappy", b"gzip", b"header", b"\x00\x01\x02", b"\xff\xfe", "ünïcødé".encode()]


def make_records(n, tag, seed, null_header_values=True, now_ms=None):
    """Deterministic keyed records with headers and explicit timestamps.

    - keys are unique: b"<tag>-key-<i>"
    - values: mostly compressible text of varied length, some random bytes, some empty,
      some null (tombstones)
    - headers: two headers with the SAME key "dup" (order and duplicates must be kept);
      every 7th record gets a third header with a non-ASCII key; every 50th record has
      empty/null header values (null only when the client can express it)
    - timestamps: explicit, one hour in the past, 1 ms apart (distinct from broker time)
    """
    rnd = random.Random(seed)
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    base_ts = now_ms - 3_600_000
    out = []
    for i in range(n):
        key = f"{tag}-key-{i:07d}".encode()
        if i % 97 == 13:
            value = None
        elif i % 89 == 7:
            value = b""
        elif i % 5 == 0:
            value = rnd.randbytes(rnd.randint(1, 600))
        else:
            parts = [rnd.choice(_WORDS) for _ in range(rnd.randint(1, 200))]
            value = f"{tag}|{i}|".encode() + b" ".join(parts)
        if i % 50 == 3:
            headers = [("dup", None if null_header_values else b""), ("dup", b"")]
        else:
            headers = [("dup", f"first-{i}".encode()), ("dup", f"second-{i}".encode())]
        if i % 7 == 0:
            headers.append(("trace-ü", rnd.randbytes(8)))
        out.append(Rec(i, key, value, headers, base_ts + i))
    return out


def check_delivery(expected, topic, order_group=lambda rec: None):
    """Delivery reports: every record acked, per partition offsets dense from 0, and
    production order kept within a partition for records of the same order_group (one
    group per producer). Returns {partition: [Rec sorted by offset]}."""
    by_p = {}
    for r in expected:
        if r.partition is None or r.offset is None or r.offset < 0:
            raise Fail(f"{topic}: record {r.i} has no delivery offset "
                       f"(partition={r.partition} offset={r.offset})")
        by_p.setdefault(r.partition, []).append(r)
    for p, recs in by_p.items():
        # production order within a partition, per producer
        groups = {}
        for rec in recs:
            groups.setdefault(order_group(rec), []).append(rec)
        for g, grecs in groups.items():
            for a, b in zip(grecs, grecs[1:]):
                if b.offset <= a.offset:
                    raise Fail(f"{topic} partition {p}: record {b.i} was produced after record "
                               f"{a.i}{'' if g is None else f' by producer {g}'} but got offset "
                               f"{b.offset} <= {a.offset} (order not kept)")
        recs.sort(key=lambda rec: rec.offset)
        offs = [r.offset for r in recs]
        if offs != list(range(len(recs))):
            first = next(k for k, o in enumerate(offs) if o != k)
            raise Fail(f"{topic} partition {p}: delivery-report offsets not dense from 0: "
                       f"position {first} has offset {offs[first]} (expected {first}); "
                       f"{len(recs)} records, offsets {offs[:3]}...{offs[-3:]}")
    return by_p


def compare_partition(topic, p, exp_recs, got, check_ts=True, ts_type_create=None):
    """got: list of (offset, key, value, headers, ts_type, ts) in consumption order.
    ts_type_create: the client's constant for CreateTime (None = do not check type)."""
    for idx, g in enumerate(got):
        off, key, value, headers, ts_type, ts = g
        if off != idx:
            raise Fail(f"{topic} partition {p}: consumed record #{idx} has offset {off} "
                       f"(offsets must be dense from 0; previous offset "
                       f"{got[idx - 1][0] if idx else None})")
        if idx >= len(exp_recs):
            raise Fail(f"{topic} partition {p}: extra record at offset {off} beyond the "
                       f"{len(exp_recs)} produced: key={short(key)} value={short(value, 60)}")
        e = exp_recs[idx]
        where = f"{topic} partition {p} offset {off} (record {e.i})"
        if key != e.key:
            raise Fail(f"{where}: key differs: expected {short(e.key)} got {short(key)}")
        if value != e.value:
            raise Fail(f"{where}: value differs: expected {short(e.value)} got {short(value)} "
                       f"(len {None if e.value is None else len(e.value)} vs "
                       f"{None if value is None else len(value)})")
        if list(headers) != list(e.headers):
            raise Fail(f"{where}: headers differ: expected {short(e.headers, 300)} "
                       f"got {short(headers, 300)}")
        if check_ts:
            if ts_type_create is not None and ts_type != ts_type_create:
                raise Fail(f"{where}: timestamp type {ts_type}, expected CreateTime "
                           f"({ts_type_create})")
            if ts != e.ts:
                raise Fail(f"{where}: timestamp differs: expected {e.ts} got {ts}")
    if len(got) < len(exp_recs):
        e = exp_recs[len(got)]
        raise Fail(f"{topic} partition {p}: only {len(got)} of {len(exp_recs)} records read; "
                   f"first missing is offset {len(got)} (record {e.i}, key {short(e.key)})")


class Progress:
    """Deadline helper: PROGRESS_DEADLINE_S without progress, HARD_DEADLINE_S overall."""

    def __init__(self, what, progress_s=PROGRESS_DEADLINE_S, hard_s=HARD_DEADLINE_S):
        self.what = what
        self.progress_s = progress_s
        self.t0 = time.monotonic()
        self.hard = self.t0 + hard_s
        self.last = self.t0
        self.mark = None

    def update(self, mark):
        if mark != self.mark:
            self.mark = mark
            self.last = time.monotonic()

    def expired(self):
        now = time.monotonic()
        if now - self.last > self.progress_s:
            return f"{self.what}: no progress for {self.progress_s:.0f}s (state: {self.mark})"
        if now > self.hard:
            return f"{self.what}: not done after {now - self.t0:.0f}s (state: {self.mark})"
        return None


# ---------------------------------------------------------------------------------------
# Consumer groups (confluent_groups.py, kafka_python_groups.py)
# ---------------------------------------------------------------------------------------

# How long a group may take to reach an expected state (joined, rebalanced, consumed).
# Generous: a rebalance after a member leaves or dies takes a few heartbeats (plus the
# session timeout when it dies), the first join of an empty group waits the broker's initial
# rebalance delay (3 s by default), and CI machines are slow.
GROUP_DEADLINE_S = float(os.environ.get("KELP_INTEROP_GROUP_DEADLINE_S", "75"))


def wait_until(what, check, between=None, timeout_s=None):
    """Call between() (e.g. poll every member: rebalance callbacks only run inside poll) and
    then check() -> (done, state) until done. Returns (seconds waited, state). Raises Fail
    with the last state when not done within timeout_s (GROUP_DEADLINE_S)."""
    timeout_s = GROUP_DEADLINE_S if timeout_s is None else timeout_s
    t0 = time.monotonic()
    state = None
    while True:
        if between is not None:
            between()
        else:
            time.sleep(0.1)
        done, state = check()
        if done:
            return time.monotonic() - t0, state
        if time.monotonic() - t0 > timeout_s:
            raise Fail(f"{what}: not reached within {timeout_s:.0f}s; last state: {state}")


def split_problem(owned, partitions, allow_empty_member=False):
    """owned: {member name: iterable of partition numbers} of one topic. None when partitions
    0..partitions-1 are each owned by exactly one member (and, unless allow_empty_member,
    every member owns at least one); otherwise what is wrong."""
    owners = {}
    for m, ps in owned.items():
        for p in ps:
            owners.setdefault(p, []).append(m)
    problems = []
    twice = {p: ms for p, ms in sorted(owners.items()) if len(ms) > 1}
    if twice:
        problems.append(f"owned by more than one member: {twice}")
    missing = [p for p in range(partitions) if p not in owners]
    if missing:
        problems.append(f"owned by nobody: {missing}")
    extra = sorted(p for p in owners if not 0 <= p < partitions)
    if extra:
        problems.append(f"unknown partitions owned: {extra}")
    if not allow_empty_member:
        idle = sorted(m for m, ps in owned.items() if not list(ps))
        if idle:
            problems.append(f"members owning nothing: {idle}")
    return "; ".join(problems) or None


def fmt_owned(owned):
    return "{" + ", ".join(f"{m}: {sorted(ps)}" for m, ps in sorted(owned.items())) + "}"


class ConsumedLog:
    """What the members of one group consumed: (partition, offset) -> [member names], checked
    against what was produced ({(partition, offset): key})."""

    def __init__(self, topic):
        self.topic = topic
        self.seen = {}
        self.bad = []  # (member, partition, offset, key, why)

    def add(self, member, partition, offset, key, produced):
        want = produced.get((partition, offset), "<not produced>")
        if want != key:
            self.bad.append((member, partition, offset, key,
                             f"key {short(key)} but {short(want)} was produced there"))
        self.seen.setdefault((partition, offset), []).append(member)

    def missing(self, produced):
        return sorted(k for k in produced if k not in self.seen)

    def complete(self, produced):
        return len(produced) - len(self.missing(produced)), len(produced)

    def check(self, produced, exactly_once=True, what="the group"):
        """Raise Fail on a wrong record, a record never consumed, or (exactly_once) a record
        consumed twice."""
        if self.bad:
            m, p, o, _k, why = self.bad[0]
            raise Fail(f"{self.topic}: member {m} read partition {p} offset {o} with {why}")
        miss = self.missing(produced)
        if miss:
            raise Fail(f"{self.topic}: {len(miss)} of {len(produced)} records never consumed by "
                       f"{what}; first (partition, offset): {miss[:5]}")
        extra = sorted(k for k in self.seen if k not in produced)
        if extra:
            raise Fail(f"{self.topic}: {what} read records that were not produced: {extra[:5]}")
        if exactly_once:
            dups = {k: v for k, v in sorted(self.seen.items()) if len(v) > 1}
            if dups:
                first = list(dups.items())[:4]
                raise Fail(f"{self.topic}: {len(dups)} records consumed more than once by {what} "
                           f"although every member commits what it processed before giving a "
                           f"partition up; first (partition, offset): readers: {first}")
