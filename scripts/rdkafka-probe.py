#!/usr/bin/env python3
"""An open-loop produce probe with a real client: librdkafka through confluent-kafka.

    rdkafka-probe.py --bootstrap HOST:PORT --topic T --rate N [--duration S] [--warmup S]
                     [--conf KEY=VALUE ...] [--flood N]

Sends one record of 100 bytes every 1/N s (acks=1, linger.ms=0, one record per request), on
schedule whatever the broker does: a slow answer does not delay the next send, so stalls show
as latency instead of vanishing (no coordinated omission). A record's latency runs from the
time it was due to be sent to its delivery report; between sends the probe waits in
librdkafka's poll, which returns as soon as a report is there, as an application would. Prints one JSON object: percentiles in
microseconds, records/s acknowledged, and errors.

--conf sets a librdkafka property of the admin client and the producer (security.protocol,
ssl.ca.location, sasl.* for a TLS or SASL listener). --flood N instead sends N records as fast
as the producer takes them, with librdkafka's default batching (closed loop: throughput, not
latency), and reports records/s from the first send to the last delivery report.
"""

import argparse
import json
import sys
import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_us, q):
    if not sorted_us:
        return None
    return sorted_us[min(len(sorted_us) - 1, int(q / 100.0 * len(sorted_us)))]


def ensure_topic(bootstrap, topic, conf):
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf})
    for f in admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=30).values():
        try:
            f.result(timeout=60)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--rate", type=float, required=True, help="records per second")
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds sent but not measured")
    ap.add_argument("--label", default="")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka property (repeatable)")
    ap.add_argument("--flood", type=int, default=0, metavar="N",
                    help="send N records closed loop and report throughput instead")
    args = ap.parse_args()
    conf = dict(kv.split("=", 1) for kv in args.conf)

    ensure_topic(args.bootstrap, args.topic, conf)
    if args.flood:
        return flood(args, conf)
    producer = Producer({
        **conf,
        "bootstrap.servers": args.bootstrap,
        "acks": 1,
        "linger.ms": 0,
        "batch.num.messages": 1,
        "enable.idempotence": False,
    })
    value = b"x" * 100
    latencies_us = []
    errors = [0]
    measuring = [False]

    def delivered(due):
        def report(err, _msg):
            if err is not None:
                errors[0] += 1
            elif measuring[0]:
                latencies_us.append((time.perf_counter() - due) * 1e6)
        return report

    interval = 1.0 / args.rate
    start = time.perf_counter()
    warm_end = start + args.warmup
    end = warm_end + args.duration
    i = 0
    while True:
        due = start + i * interval
        if due >= end:
            break
        # Wait in librdkafka's poll, not in a spin: its broker threads need the CPU this
        # thread would take (pinned to one core, a spinning loop left them only time slices
        # and put a few ms on the p99 of every broker alike). poll returns early to serve
        # delivery reports, which are timed as they are served.
        while (left := due - time.perf_counter()) > 0:
            producer.poll(left)
        measuring[0] = due >= warm_end
        producer.produce(args.topic, value, on_delivery=delivered(due) if due >= warm_end else None)
        producer.poll(0)
        i += 1
    left = producer.flush(30)
    measured = latencies_us
    measured.sort()
    out = {
        "label": args.label,
        "client": "librdkafka (confluent-kafka), open loop",
        "rate": args.rate,
        "records": len(measured),
        "records_per_sec": len(measured) / args.duration,
        "errors": errors[0] + left,
        "p50_us": percentile(measured, 50),
        "p90_us": percentile(measured, 90),
        "p99_us": percentile(measured, 99),
        "p999_us": percentile(measured, 99.9),
        "max_us": measured[-1] if measured else None,
    }
    json.dump(out, sys.stdout)
    print()
    print(f"rdkafka-probe {args.label} at {args.rate:.0f}/s: p50 {out['p50_us']:.0f} us, p90 {out['p90_us']:.0f} us, "
          f"p99 {out['p99_us']:.0f} us, {out['records_per_sec']:.0f} records/s, {out['errors']} errors",
          file=sys.stderr)
    return 0 if measured and out["errors"] == 0 else 1


def flood(args, conf):
    producer = Producer({**conf, "bootstrap.servers": args.bootstrap})
    value = b"x" * 100
    done = [0, 0]  # delivered, failed

    def report(err, _msg):
        done[1 if err is not None else 0] += 1

    start = time.perf_counter()
    for _ in range(args.flood):
        while True:
            try:
                producer.produce(args.topic, value, on_delivery=report)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    took = time.perf_counter() - start
    out = {
        "label": args.label,
        "client": "librdkafka (confluent-kafka), closed loop, default batching",
        "records": done[0],
        "records_per_sec": done[0] / took,
        "errors": done[1] + left,
    }
    json.dump(out, sys.stdout)
    print()
    print(f"rdkafka-probe {args.label} flood: {out['records_per_sec']:.0f} records/s, "
          f"{out['errors']} errors", file=sys.stderr)
    return 0 if done[0] == args.flood else 1


if __name__ == "__main__":
    sys.exit(main())
