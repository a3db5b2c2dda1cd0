//! The SeaweedMQ gRPC core's enqueue-to-ack time against an in-process **fake** broker.
//!
//! The fake (`tests/fake_broker`, a tonic server generated from the same `proto/` files) answers
//! `LookupTopicBrokers` and acks every `PublishMessage` data message at once with the next
//! offset: no storage, no filer. What is left is kelp's own cost: the crossbeam channel and
//! `Notify` into the gRPC core, the publisher, tonic/HTTP/2 over loopback both ways, and the
//! reply back. The real broker adds its own time on top (`scripts/bench-seaweedmq.sh`).
//!
//! Measured, each with 100-byte records:
//! - `floor`: a bare tonic client on its own runtime, one record at a time on one
//!   `PublishMessage` stream, waiting for each ack: the gRPC round trip kelp cannot beat;
//! - `core, 1 in flight`: `SeaweedHandle::publish_now` of one record, the caller spinning on
//!   the reply as a busy shard does, then the next;
//! - `core, 64 in flight`: 64 one-record publishes queued before waiting for the first, kept
//!   at 64 (the coalescing case); it also prints records per stream write
//!   ([`kelp::seaweedmq::PublishStats`]).
//!
//! Threads: the caller on core 0; the gRPC core and the fake broker on core 1 (on a 2-core
//! machine, the fake broker and the gRPC core share it). Run: `cargo bench --bench
//! seaweedmq_publish`.

mod common;

use bytes::Bytes;
use futures::StreamExt;
use kelp::seaweedmq::{Record, SeaweedCore, SeaweedOptions};
use std::collections::VecDeque;
use std::time::Instant;

#[path = "../tests/fake_broker/mod.rs"]
mod fake_broker;

const TOPIC: &str = "bench";

fn record() -> Record {
    Record::new(Bytes::from_static(b"key"), Bytes::from(vec![b'v'; 100]), 1)
}

/// The floor: one tonic `PublishMessage` stream driven directly, one record at a time.
fn floor(addr: &str, warmup: u64, iters: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        let mut client = kelp::seaweedmq::pb::messaging_pb::seaweed_messaging_client::SeaweedMessagingClient::new(channel);
        use kelp::seaweedmq::pb::messaging_pb::publish_message_request::{InitMessage, Message};
        use kelp::seaweedmq::pb::messaging_pb::{DataMessage, PublishMessageRequest};
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(PublishMessageRequest {
            message: Some(Message::Init(InitMessage {
                ack_interval: 1,
                ..Default::default()
            })),
        })
        .expect("open");
        let mut acks = client
            .publish_message(rx)
            .await
            .expect("stream")
            .into_inner();
        acks.next().await.expect("hello").expect("hello ok");
        let r = record();
        let mut h = common::hist();
        let all = Instant::now();
        for i in 0..warmup + iters {
            let t = Instant::now();
            tx.unbounded_send(PublishMessageRequest {
                message: Some(Message::Data(DataMessage {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    ts_ns: r.ts_ns,
                    ctrl: None,
                })),
            })
            .expect("send");
            // Busy-poll the ack, as the gRPC core's caller does: yielding keeps the runtime
            // polling its sockets without parking the thread.
            loop {
                match futures::poll!(acks.next()) {
                    std::task::Poll::Ready(ack) => {
                        ack.expect("ack").expect("ack ok");
                        break;
                    }
                    std::task::Poll::Pending => tokio::task::yield_now().await,
                }
            }
            if i >= warmup {
                h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
            }
        }
        let rate = (warmup + iters) as f64 / all.elapsed().as_secs_f64();
        common::print("floor: bare tonic stream, spinning, 1 in flight", &h, rate, None);
    });
}

/// Waits for a reply by polling it, as a busy shard does between its other work.
fn spin<T>(rx: &mut futures::channel::oneshot::Receiver<T>) -> T {
    loop {
        match rx.try_recv() {
            Ok(Some(v)) => return v,
            Ok(None) => std::hint::spin_loop(),
            Err(_) => panic!("the gRPC core dropped a reply"),
        }
    }
}

fn main() {
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let (caller_core, other_core) = (0, if cores > 1 { 1 } else { 0 });
    let addr = fake_broker::FakeBroker::start(1, false, Some(other_core)).addr;
    println!(
        "SeaweedMQ publish against an in-process fake broker at {addr}: caller on core \
         {caller_core}, gRPC core and fake broker on core {other_core}; 100-byte records"
    );
    common::pin(caller_core);
    const WARMUP: u64 = 20_000;
    const ITERS: u64 = 200_000;

    floor(&addr, WARMUP, ITERS);

    let handle = SeaweedCore::start(
        addr.clone(),
        Some(other_core),
        SeaweedOptions {
            publisher_name: "bench".into(),
            ..SeaweedOptions::default()
        },
    )
    .expect("gRPC core");
    // The first publish opens the stream (lookup, init, hello).
    let mut first = handle
        .publish_now(TOPIC, 0, vec![record()])
        .expect("queued");
    spin(&mut first).expect("first publish");

    let mut h = common::hist();
    let all = Instant::now();
    for i in 0..WARMUP + ITERS {
        let t = Instant::now();
        let mut rx = handle
            .publish_now(TOPIC, 0, vec![record()])
            .expect("queued");
        spin(&mut rx).expect("acked");
        if i >= WARMUP {
            h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
        }
    }
    let rate = (WARMUP + ITERS) as f64 / all.elapsed().as_secs_f64();
    common::print("core: enqueue to ack, 1 in flight", &h, rate, None);

    const DEPTH: usize = 64;
    let stats = handle.publish_stats();
    let (sends0, records0) = stats.read();
    let mut h = common::hist();
    let mut window = VecDeque::with_capacity(DEPTH);
    let all = Instant::now();
    let total = WARMUP + ITERS;
    let mut issued = 0u64;
    let mut done = 0u64;
    while done < total {
        while window.len() < DEPTH && issued < total {
            let rx = handle
                .publish_now(TOPIC, 0, vec![record()])
                .expect("queued");
            window.push_back((Instant::now(), rx));
            issued += 1;
        }
        let (t, mut rx) = window.pop_front().expect("window not empty");
        spin(&mut rx).expect("acked");
        if done >= WARMUP {
            h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
        }
        done += 1;
    }
    let rate = total as f64 / all.elapsed().as_secs_f64();
    common::print(
        &format!("core: enqueue to ack, {DEPTH} in flight"),
        &h,
        rate,
        None,
    );
    let (sends, records) = stats.read();
    let (sends, records) = (sends - sends0, records - records0);
    println!(
        "  records per stream write at {DEPTH} in flight: {:.1} ({records} records in {sends} writes; \
         one record per gRPC DataMessage)",
        records as f64 / sends.max(1) as f64
    );
    handle.shutdown();
}
