#!/usr/bin/env python3
"""confluent-kafka idempotent producer (scenario idempotent-100k).

enable.idempotence=true, 100,000 records to a 3-partition topic; each value carries a
unique sequence number. Read back: no duplicate, no gap, per-partition order kept, offsets
dense, and every record identical to what was produced.
"""

import os
import random
import time

from confluent_util import CLIENT, admin_client, create_topics, produce, verify_topic
from interop_common import Fail, Rec, Reporter, env, main_wrapper

N = int(os.environ.get("KELP_INTEROP_IDEMPOTENT_N", "100000"))
PARTITIONS = 3


def make(n):
    rnd = random.Random(100_000)
    base_ts = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        value = f"seq={i:08d}|".encode() + bytes(rnd.choice(b"abcdefgh") for _ in range(rnd.randint(0, 120)))
        out.append(Rec(i, f"k-{i % 997}".encode(), value, [("seq", str(i).encode())], base_ts + i // 10))
    return out


def seq_of(value):
    if not value or not value.startswith(b"seq="):
        raise Fail(f"record value without sequence number: {value[:40]!r}")
    return int(value[4:12])


def body(r):
    bootstrap = env("KELP_BOOTSTRAP")
    prefix = env("KELP_TOPIC_PREFIX")
    topic = f"{prefix}-ck-idempotent"

    def idempotent():
        create_topics(admin_client(bootstrap), [topic], PARTITIONS)
        recs = make(N)
        t0 = time.monotonic()
        produce(bootstrap, topic, recs, extra_conf={"enable.idempotence": True})
        dt = time.monotonic() - t0

        def no_dup_no_gap(got):
            seen = {}
            for p, msgs in got.items():
                last = -1
                for (off, _k, value, _h, _tt, _ts) in msgs:
                    s = seq_of(value)
                    if s in seen:
                        raise Fail(f"duplicate: seq {s} at partition {seen[s][0]} offset "
                                   f"{seen[s][1]} and at partition {p} offset {off}")
                    seen[s] = (p, off)
                    if s <= last:
                        raise Fail(f"partition {p} offset {off}: seq {s} after seq {last} "
                                   f"(per-partition order not kept)")
                    last = s
            if len(seen) != N:
                missing = [s for s in range(N) if s not in seen]
                rec = recs[missing[0]]
                raise Fail(f"gap: {len(missing)} of {N} sequence numbers missing; first {missing[0]} "
                           f"(acked at partition {rec.partition} offset {rec.offset})")

        summary = verify_topic(bootstrap, topic, recs, PARTITIONS,
                               group_id=f"{prefix}-ck-unused-idempotent",
                               extra_check=no_dup_no_gap)
        return f"{N} records, produced in {dt:.1f}s, no duplicate/gap, {summary}"

    r.run("idempotent-100k", idempotent)


if __name__ == "__main__":
    main_wrapper(Reporter(CLIENT, ["idempotent-100k"]), body)
