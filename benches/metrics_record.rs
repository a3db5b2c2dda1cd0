//! What `/metrics` costs: recording one request on the hot path (the timer's two clock reads,
//! the bucket index and the stores), finding error codes in a Produce response, and rendering
//! a scrape (on the metrics thread). Run: `cargo bench --bench metrics_record`.

mod common;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceResponse, ResponseKind};
use kelp::metrics::{slot_of_frame, Metrics, RequestTimer};
use std::time::Instant;

fn main() {
    common::pin(0);
    let m = Metrics::new(2).leak();
    let produce_frame = [0u8, 0, 0, 9];
    let slot = slot_of_frame(&produce_frame);
    // Per call, timed in bulk: one clock read around a single ~20 ns call would measure the clock.
    let iters = 20_000_000u64;
    for _ in 0..iters / 10 {
        RequestTimer::start(m.shard(0), slot, 190).finish(55, false);
    }
    let t = Instant::now();
    for i in 0..iters {
        RequestTimer::start(m.shard(0), std::hint::black_box(slot), 190).finish(55, i % 64 == 0);
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!(
        "{:<44} {ns:>6.1} ns per request",
        "RequestTimer start + finish (record)"
    );
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(Instant::now());
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!(
        "{:<44} {ns:>6.1} ns per call",
        "(for scale: one Instant::now)"
    );

    let mut p = PartitionProduceResponse::default();
    p.base_offset = 42;
    let mut t = TopicProduceResponse::default();
    t.partition_responses = vec![p];
    let mut r = ProduceResponse::default();
    r.responses = vec![t];
    let body = ResponseKind::Produce(r);
    common::bench(
        "response_has_error, 1-partition Produce",
        100_000,
        1_000_000,
        None,
        || kelp::protocol::response_has_error(std::hint::black_box(&body)),
    );

    let mut out = String::new();
    common::bench(
        "render a scrape (2 shards, 3 APIs used)",
        100,
        5_000,
        None,
        || {
            for (shard, key) in [(0, 0u8), (0, 3), (1, 18)] {
                RequestTimer::start(m.shard(shard), slot_of_frame(&[0, key]), 100)
                    .finish(80, false);
            }
            out.clear();
            m.render(&mut out);
            out.len()
        },
    );
}
