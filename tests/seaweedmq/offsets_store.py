#!/usr/bin/env python3
"""Where kelp keeps committed offsets on SeaweedMQ, with confluent-kafka, across kelp versions
of the store and restarts.

    offsets_store.py legacy STATE     # kelp without a filer: commits are records of the topic
                                      # __kelp_consumer_offsets, as every kelp before wrote them
    offsets_store.py migrated STATE   # kelp with a filer, a cluster id no kelp used: its
                                      # coordinators move the topic's commits to the filer
    offsets_store.py restarted STATE  # the same kelp, restarted

legacy: a 4-partition topic; groups keep-1 and keep-2 commit 5 rounds of offsets each (the last
with metadata), group gone commits once and is deleted (DeleteGroups). STATE records the final
offsets.

migrated: keep-1 and keep-2 read back their last commits, metadata included, and gone has none
(its deletion migrated too). Then keep-1 commits 300 more rounds: the filer holds one entry per
live group for the cluster, however many commits were made, and the entry stays small
(`KELP_FILER_HTTP`, `KELP_CLUSTER_ID` say where to look). keep-2 is deleted: its entry becomes
a tombstone and its offsets are gone.

restarted: keep-1 reads back its 300th round, keep-2 has no offsets.

Prints RESULT|confluent-kafka|<scenario>|pass/fail|detail lines like the interop suites.
"""

import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop", "python"))

from confluent_kafka import TopicPartition  # noqa: E402

from confluent_util import CLIENT, admin_client, create_topics, with_group_consumer  # noqa: E402
from interop_common import Fail, Reporter, env, main_wrapper  # noqa: E402

PARTITIONS = 4
ROUNDS_BEFORE = 5
ROUNDS_AFTER = 300
# One group's entry: 4 offsets of ~40 bytes and a short metadata string. Far below what 300
# commits stored as records would take.
ENTRY_BYTES_MAX = 1024


def names(prefix):
    return {
        "topic": f"{prefix}-offsets-store",
        "keep-1": f"{prefix}-keep-1",
        "keep-2": f"{prefix}-keep-2",
        "gone": f"{prefix}-gone",
    }


def round_offsets(topic, round_no, metadata=None):
    if metadata is None:
        return [TopicPartition(topic, p, 10 * round_no + p) for p in range(PARTITIONS)]
    return [TopicPartition(topic, p, 10 * round_no + p, metadata=metadata) for p in range(PARTITIONS)]


def commit_rounds(c, topic, first, last, metadata_last=None):
    for n in range(first, last + 1):
        meta = metadata_last if n == last else None
        c.commit(offsets=round_offsets(topic, n, meta), asynchronous=False)


def committed(bootstrap, group, topic):
    def read(c):
        got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        return [(tp.offset, tp.metadata) for tp in got]

    return with_group_consumer(bootstrap, group, "reading committed offsets", read)


def expect_committed(bootstrap, group, topic, round_no, metadata):
    want = [(10 * round_no + p, metadata) for p in range(PARTITIONS)]
    got = committed(bootstrap, group, topic)
    # librdkafka reports "no metadata" as an empty string.
    got = [(o, m or None) for o, m in got]
    if got != want:
        raise Fail(f"group {group}: committed {got}, expected {want}")


def expect_none(bootstrap, group, topic):
    got = committed(bootstrap, group, topic)
    if any(o >= 0 for o, _ in got):
        raise Fail(f"group {group} was deleted but has committed offsets {got}")


def delete_group(bootstrap, group):
    # The client must outlive its futures: a collected AdminClient never resolves them.
    admin = admin_client(bootstrap)
    futures = admin.delete_consumer_groups([group], request_timeout=30)
    for f in futures.values():
        f.result(timeout=60)


def filer_entries(filer, path):
    req = urllib.request.Request(f"http://{filer}{path}/?limit=10000", headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        listing = json.load(r)
    return listing.get("Entries") or []


def group_entries(filer, cluster, prefix):
    """(name, size) of the entries of this run's groups under the cluster's offsets
    directory (the test's groups are named `prefix-...`, in entries `g.prefix-...`)."""
    out = []
    base = f"/kelp/clusters/{cluster}/offsets"
    for d in filer_entries(filer, base):
        q = d["FullPath"].rsplit("/", 1)[1]
        for e in filer_entries(filer, f"{base}/{q}"):
            name = e["FullPath"].rsplit("/", 1)[1]
            if name.startswith(f"g.{prefix}-"):
                out.append((name, e.get("FileSize", 0)))
    return sorted(out)


def phase_legacy(r, bootstrap, prefix, state_path):
    n = names(prefix)

    def legacy():
        create_topics(admin_client(bootstrap), [n["topic"]], PARTITIONS)

        def commit_keep(c, meta):
            commit_rounds(c, n["topic"], 1, ROUNDS_BEFORE, meta)

        with_group_consumer(bootstrap, n["keep-1"], "commit", lambda c: commit_keep(c, "m1"))
        with_group_consumer(bootstrap, n["keep-2"], "commit", lambda c: commit_keep(c, "m2"))
        with_group_consumer(bootstrap, n["gone"], "commit", lambda c: commit_rounds(c, n["topic"], 1, 1))
        delete_group(bootstrap, n["gone"])
        expect_committed(bootstrap, n["keep-1"], n["topic"], ROUNDS_BEFORE, "m1")
        expect_none(bootstrap, n["gone"], n["topic"])
        return f"2 groups committed {ROUNDS_BEFORE} rounds on {PARTITIONS} partitions, a third was deleted (offsets stored as topic records)"

    r.run("offsets-legacy-topic", legacy)
    with open(state_path, "w") as f:
        json.dump({"prefix": prefix}, f)


def phase_migrated(r, bootstrap, prefix, filer, cluster):
    n = names(prefix)

    def migrated():
        expect_committed(bootstrap, n["keep-1"], n["topic"], ROUNDS_BEFORE, "m1")
        expect_committed(bootstrap, n["keep-2"], n["topic"], ROUNDS_BEFORE, "m2")
        expect_none(bootstrap, n["gone"], n["topic"])
        entries = group_entries(filer, cluster, prefix)
        if len(entries) != 2:
            raise Fail(f"expected the entries of keep-1 and keep-2 in the filer, found {entries}")
        return f"the topic's commits moved to the filer: 2 groups' last commits with metadata, the deleted group still deleted; entries {entries}"

    r.run("offsets-migrated-to-filer", migrated)

    def bounded():
        with_group_consumer(bootstrap, n["keep-1"], "commit",
                            lambda c: commit_rounds(c, n["topic"], ROUNDS_BEFORE + 1, ROUNDS_BEFORE + ROUNDS_AFTER, "m3"))
        expect_committed(bootstrap, n["keep-1"], n["topic"], ROUNDS_BEFORE + ROUNDS_AFTER, "m3")
        entries = group_entries(filer, cluster, prefix)
        if len(entries) != 2 or any(size > ENTRY_BYTES_MAX for _, size in entries):
            raise Fail(f"after {ROUNDS_AFTER} more commits: expected 2 entries of at most {ENTRY_BYTES_MAX} bytes, found {entries}")
        before = dict(entries)
        delete_group(bootstrap, n["keep-2"])
        expect_none(bootstrap, n["keep-2"], n["topic"])
        after = dict(group_entries(filer, cluster, prefix))
        tomb = [k for k in after if after[k] < before.get(k, 0)]
        if len(after) != 2 or len(tomb) != 1:
            raise Fail(f"after deleting keep-2: expected its entry to shrink to a tombstone, entries {before} -> {after}")
        return f"{ROUNDS_AFTER} more commits of keep-1 rewrote its entry in place ({entries}); keep-2 deleted, its entry a tombstone"

    r.run("offsets-bounded-in-filer", bounded)


def phase_restarted(r, bootstrap, prefix):
    n = names(prefix)

    def restarted():
        expect_committed(bootstrap, n["keep-1"], n["topic"], ROUNDS_BEFORE + ROUNDS_AFTER, "m3")
        expect_none(bootstrap, n["keep-2"], n["topic"])
        expect_none(bootstrap, n["gone"], n["topic"])
        return "after a restart: keep-1 at its last commit, keep-2 and gone without offsets"

    r.run("offsets-after-restart", restarted)


def main():
    mode, state_path = sys.argv[1], sys.argv[2]
    bootstrap = env("KELP_BOOTSTRAP")
    if mode == "legacy":
        prefix = env("KELP_TOPIC_PREFIX")
        r = Reporter(CLIENT, ["offsets-legacy-topic"])
        main_wrapper(r, lambda r: phase_legacy(r, bootstrap, prefix, state_path))
        return
    with open(state_path) as f:
        prefix = json.load(f)["prefix"]
    if mode == "migrated":
        filer, cluster = env("KELP_FILER_HTTP"), env("KELP_CLUSTER_ID")
        r = Reporter(CLIENT, ["offsets-migrated-to-filer", "offsets-bounded-in-filer"])
        main_wrapper(r, lambda r: phase_migrated(r, bootstrap, prefix, filer, cluster))
    elif mode == "restarted":
        r = Reporter(CLIENT, ["offsets-after-restart"])
        main_wrapper(r, lambda r: phase_restarted(r, bootstrap, prefix))
    else:
        sys.exit(f"usage: {sys.argv[0]} legacy|migrated|restarted STATE")


if __name__ == "__main__":
    main()
