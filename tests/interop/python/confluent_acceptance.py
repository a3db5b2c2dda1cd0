#!/usr/bin/env python3
"""confluent-kafka acceptance test (scenario acceptance-20k).

A 6-partition topic; 20,000 keyed records with headers, spread round-robin over the codecs
none/gzip/snappy/lz4/zstd, each codec with its own idempotent Producer (all five producing
at the same time); then every partition is read back from the beginning and every record
must come back unchanged, with nothing missing and nothing duplicated.
"""

import os

from confluent_util import (CLIENT, admin_client, check_failures, create_topics, enqueue, flush,
                            new_producer, verify_topic)
from interop_common import CODECS, Fail, Reporter, env, main_wrapper, make_records, short

N = int(os.environ.get("KELP_INTEROP_ACCEPTANCE_N", "20000"))
PARTITIONS = 6


def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    topic = f"{prefix}-ck-acceptance"

    def acceptance():
        create_topics(admin_client(bootstrap), [topic], PARTITIONS)
        recs = make_records(N, "acc", seed=20000)
        codec_of = {rec.i: CODECS[rec.i % len(CODECS)] for rec in recs}
        producers = {}
        failures = {c: [] for c in CODECS}
        for c in CODECS:
            producers[c] = new_producer(bootstrap, topic,
                                        {"compression.type": c, "enable.idempotence": True})
        # Interleave: chunks of 200 records per producer in turn, so all five producers have
        # batches in flight to the same partitions at once.
        chunk = 200
        for start in range(0, N, chunk * len(CODECS)):
            for c in CODECS:
                part = [rec for rec in recs[start:start + chunk * len(CODECS)]
                        if codec_of[rec.i] == c]
                enqueue(producers[c][0], topic, part, failures[c])
        for c in CODECS:
            p, errlog = producers[c]
            mine = [rec for rec in recs if codec_of[rec.i] == c]
            flush(p, topic, len(mine), mine, errlog)
            check_failures(topic, failures[c], len(mine), errlog)

        def keys_once(got):
            want = {rec.key: rec for rec in recs}
            seen = {}
            for p, msgs in got.items():
                for (off, key, value, _h, _tt, _ts) in msgs:
                    if key in seen:
                        raise Fail(f"duplicate: key {short(key)} read at partition {seen[key][0]} "
                                   f"offset {seen[key][1]} and again at partition {p} offset {off}")
                    if key not in want:
                        raise Fail(f"unknown record at partition {p} offset {off}: key {short(key)} "
                                   f"value {short(value, 60)}")
                    seen[key] = (p, off)
            missing = [k for k in want if k not in seen]
            if missing:
                rec = want[missing[0]]
                raise Fail(f"{len(missing)} of {N} records missing after reading all partitions; "
                           f"first: record {rec.i} key {short(rec.key)} codec {codec_of[rec.i]} "
                           f"(acked at partition {rec.partition} offset {rec.offset})")

        summary = verify_topic(bootstrap, topic, recs, PARTITIONS,
                               group_id=f"{prefix}-ck-unused-acceptance",
                               order_group=lambda rec: codec_of[rec.i],
                               extra_check=keys_once)
        return (f"{N} records over {len(CODECS)} idempotent producers "
                f"({'/'.join(CODECS)}), {PARTITIONS} partitions, {summary}")

    r.run("acceptance-20k", acceptance)


if __name__ == "__main__":
    main_wrapper(Reporter(CLIENT, ["acceptance-20k"]), body)
