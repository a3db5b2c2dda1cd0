#!/usr/bin/env python3
"""Checks from kelp's logs that no SeaweedMQ partition ever had two kelp writers at once.

    cluster_writers.py check MANIFEST
    cluster_writers.py selftest

Each kelp instance, run with RUST_LOG=...,kelp::shard::seaweed::serving=debug, logs
`writer TOPIC[P] starts at ms N` when it starts leading a partition and `writer TOPIC[P] ends at
ms N` once its publisher there has stopped (wall-clock milliseconds). A process that dies
without letting go logs no end: its open intervals end when the process ended.

MANIFEST (written by scripts/test-seaweedmq-cluster.sh) has one line per kelp process:
    LABEL LOG END_MS HOW
LABEL names the process (e.g. node2-a), LOG is its log file, END_MS the wall-clock ms at which
it was seen gone, HOW how it ended (kill, term). Every process is its own writer: two processes
of one node id (before and after a restart) must not overlap either.

The check fails if, for any partition, two processes' intervals overlap (a start strictly
before the other's end, both ways), or if a log's lines are inconsistent (a start while
already writing, an end without a start, a time after the process ended). Intervals left open
by a process that ended on SIGTERM (it should have let go first) are closed at its end and
named in the detail.

Prints RESULT|kelp|cluster-single-writer|pass/fail|detail. `selftest` runs the checker on
synthetic logs (overlapping ones must fail, disjoint ones pass) and prints
RESULT|kelp|cluster-single-writer-selftest|...
"""

import os
import re
import sys
import tempfile

LINE = re.compile(r"writer (?P<topic>\S+)\[(?P<part>\d+)\] (?P<ev>starts|ends) at ms (?P<ms>\d+)")
SCENARIO = "cluster-single-writer"


class Proc:
    def __init__(self, label, log, end_ms, how):
        self.label = label
        self.log = log
        self.end_ms = end_ms
        self.how = how


def read_manifest(path):
    procs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4:
                raise ValueError(f"{path}:{n}: expected 'LABEL LOG END_MS HOW', got {line!r}")
            procs.append(Proc(fields[0], fields[1], int(fields[2]), fields[3]))
    return procs


def intervals(proc, problems, unclosed):
    """{(topic, part): [(start, end)]} of one process, from its log."""
    open_at = {}
    out = {}
    with open(proc.log, errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = LINE.search(line)
            if not m:
                continue
            key = (m["topic"], int(m["part"]))
            ms = int(m["ms"])
            if ms > proc.end_ms:
                problems.append(f"{proc.label}: {key[0]}[{key[1]}] {m['ev']} at ms {ms}, after "
                                f"the process ended at {proc.end_ms} ({proc.log}:{n})")
            if m["ev"] == "starts":
                if key in open_at:
                    problems.append(f"{proc.label}: {key[0]}[{key[1]}] starts again at {ms} "
                                    f"while writing since {open_at[key]} ({proc.log}:{n})")
                    continue
                open_at[key] = ms
            else:
                if key not in open_at:
                    problems.append(f"{proc.label}: {key[0]}[{key[1]}] ends at {ms} without a "
                                    f"start ({proc.log}:{n})")
                    continue
                start = open_at.pop(key)
                if ms < start:
                    problems.append(f"{proc.label}: {key[0]}[{key[1]}] ends at {ms} before it "
                                    f"started at {start} ({proc.log}:{n})")
                out.setdefault(key, []).append((start, ms))
    for key, start in open_at.items():
        out.setdefault(key, []).append((start, proc.end_ms))
        if proc.how != "kill":
            unclosed.append(f"{proc.label} {key[0]}[{key[1]}] (open since {start}, the process "
                            f"ended at {proc.end_ms} after SIG{proc.how.upper()})")
    return out


def check(procs):
    """Returns (ok, detail)."""
    problems = []
    unclosed = []
    by_part = {}  # (topic, part) -> [(start, end, label)]
    starts = 0
    for proc in procs:
        for key, ivs in intervals(proc, problems, unclosed).items():
            starts += len(ivs)
            by_part.setdefault(key, []).extend((s, e, proc.label) for s, e in ivs)
    overlaps = []
    handoffs = 0
    gaps = []
    for key, ivs in sorted(by_part.items()):
        ivs.sort()
        for (s1, e1, l1), (s2, e2, l2) in zip(ivs, ivs[1:]):
            if l1 != l2:
                handoffs += 1
                gaps.append(s2 - e1)
        # Any two intervals of different processes that overlap (not only neighbours: one long
        # interval may cover several later ones).
        for i, (s1, e1, l1) in enumerate(ivs):
            for s2, e2, l2 in ivs[i + 1:]:
                if s2 >= e1:
                    break
                if l1 != l2:
                    overlaps.append(f"{key[0]}[{key[1]}]: {l1} wrote {s1}..{e1} and {l2} "
                                    f"{s2}..{e2} ({min(e1, e2) - s2} ms together)")
                else:
                    problems.append(f"{l1}: two intervals of {key[0]}[{key[1]}] overlap: "
                                    f"{s1}..{e1} and {s2}..{e2}")
    if not by_part:
        return False, "no 'writer ... starts at ms' line in any log (was the debug logging on?)"
    if overlaps or problems:
        parts = []
        if overlaps:
            parts.append(f"{len(overlaps)} overlapping writer pairs, e.g. {overlaps[:4]}")
        if problems:
            parts.append(f"{len(problems)} inconsistent log lines, e.g. {problems[:4]}")
        return False, "; ".join(parts)
    detail = (f"{len(procs)} kelp processes, {len(by_part)} partitions, {starts} writer terms, "
              f"{handoffs} handoffs between processes, none overlapping")
    if gaps:
        gaps.sort()
        detail += (f" (gap between one writer's end and the next one's start: min {gaps[0]} ms, "
                   f"median {gaps[len(gaps) // 2]} ms)")
    if unclosed:
        detail += (f"; {len(unclosed)} terms logged no end before a SIGTERM exit and were closed "
                   f"at the exit, e.g. {unclosed[:3]}")
    return True, detail


def result(scenario, ok, detail):
    detail = " ".join(detail.replace("|", "/").split())
    if len(detail) > 1500:
        detail = detail[:1497] + "..."
    print(f"RESULT|kelp|{scenario}|{'pass' if ok else 'fail'}|{detail}", flush=True)


def selftest():
    """The checker on synthetic logs: each case must come out as expected."""
    line = "2026-12-07T03:50:00Z DEBUG kelp::shard::seaweed::serving] writer {}[{}] {} at ms {}\n"
    cases = [
        # (name, {label: (lines, end_ms, how)}, expected ok)
        ("handoff in order", {
            "a": ([("t", 0, "starts", 100), ("t", 0, "ends", 200)], 1000, "term"),
            "b": ([("t", 0, "starts", 200), ("t", 0, "ends", 300)], 1000, "term")}, True),
        ("overlap", {
            "a": ([("t", 0, "starts", 100), ("t", 0, "ends", 250)], 1000, "term"),
            "b": ([("t", 0, "starts", 200), ("t", 0, "ends", 300)], 1000, "term")}, False),
        ("killed writer open until its kill", {
            "a": ([("t", 3, "starts", 100)], 500, "kill"),
            "b": ([("t", 3, "starts", 400)], 1000, "term")}, False),
        ("killed writer, taken after the kill", {
            "a": ([("t", 3, "starts", 100)], 500, "kill"),
            "b": ([("t", 3, "starts", 600), ("t", 3, "ends", 700)], 1000, "term")}, True),
        ("one long term covering two others", {
            "a": ([("t", 1, "starts", 100), ("t", 1, "ends", 900)], 1000, "term"),
            "b": ([("t", 1, "starts", 900), ("t", 1, "ends", 950)], 1000, "term"),
            "c": ([("t", 1, "starts", 300), ("t", 1, "ends", 400)], 1000, "term")}, False),
        ("other partitions do not interfere", {
            "a": ([("t", 1, "starts", 100), ("t", 1, "ends", 900)], 1000, "term"),
            "b": ([("t", 2, "starts", 100), ("u", 1, "starts", 100)], 1000, "kill")}, True),
        ("a start while writing", {
            "a": ([("t", 1, "starts", 100), ("t", 1, "starts", 200)], 1000, "kill")}, False),
        ("no lines at all", {"a": ([], 1000, "term")}, False),
    ]
    failures = []
    with tempfile.TemporaryDirectory() as d:
        for name, spec, want in cases:
            procs = []
            for label, (lines, end, how) in spec.items():
                path = os.path.join(d, f"{len(failures)}-{label}.log")
                with open(path, "w") as f:
                    f.write("2026-12-07T03:49:59Z INFO kelp] some other line\n")
                    for topic, part, ev, ms in lines:
                        f.write(line.format(topic, part, ev, ms))
                procs.append(Proc(label, path, end, how))
            ok, detail = check(procs)
            if ok != want:
                failures.append(f"{name}: expected {'pass' if want else 'fail'}, got "
                                f"{'pass' if ok else 'fail'} ({detail})")
    if failures:
        result(SCENARIO + "-selftest", False, "; ".join(failures))
        return 1
    result(SCENARIO + "-selftest", True,
           f"{len(cases)} synthetic cases (overlaps, a killed writer's open term, a long term "
           f"covering others, inconsistent lines) judged as expected")
    return 0


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "selftest":
        return selftest()
    if len(sys.argv) != 3 or sys.argv[1] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ok, detail = check(read_manifest(sys.argv[2]))
    except (OSError, ValueError) as e:
        ok, detail = False, f"cannot read the logs: {e}"
    result(SCENARIO, ok, detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
