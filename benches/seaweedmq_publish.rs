//! The SeaweedMQ gRPC core's enqueue-to-ack time against an in-process **fake** broker.
//!
//! The fake (`FakeBroker` below, a tonic server generated from the same `proto/` files) answers
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
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[allow(clippy::all, clippy::pedantic, dead_code, unreachable_pub)]
mod fake_pb {
    pub mod schema_pb {
        include!(concat!(env!("OUT_DIR"), "/fake_broker/schema_pb.rs"));
    }
    pub mod filer_pb {
        include!(concat!(env!("OUT_DIR"), "/fake_broker/filer_pb.rs"));
    }
    pub mod messaging_pb {
        include!(concat!(env!("OUT_DIR"), "/fake_broker/messaging_pb.rs"));
    }
}

use fake_pb::messaging_pb as mpb;
use fake_pb::schema_pb as spb;
use mpb::seaweed_messaging_server::{SeaweedMessaging, SeaweedMessagingServer};
use tonic::{Request, Response, Status, Streaming};

const TOPIC: &str = "bench";
const PARTITIONS: i32 = 1;
const RING: i32 = 2520;

/// A fake SeaweedMQ broker: acks every record at once with the next offset of its partition.
struct FakeBroker {
    addr: String,
    created_ns: i64,
    /// The next offset, shared by all streams of the (one) partition.
    next: Arc<AtomicI64>,
}

#[tonic::async_trait]
impl SeaweedMessaging for FakeBroker {
    async fn find_broker_leader(
        &self,
        _: Request<mpb::FindBrokerLeaderRequest>,
    ) -> Result<Response<mpb::FindBrokerLeaderResponse>, Status> {
        Ok(Response::new(mpb::FindBrokerLeaderResponse {
            broker: self.addr.clone(),
        }))
    }

    async fn lookup_topic_brokers(
        &self,
        request: Request<mpb::LookupTopicBrokersRequest>,
    ) -> Result<Response<mpb::LookupTopicBrokersResponse>, Status> {
        let width = RING / PARTITIONS;
        let assignments = (0..PARTITIONS)
            .map(|i| mpb::BrokerPartitionAssignment {
                partition: Some(spb::Partition {
                    ring_size: RING,
                    range_start: i * width,
                    range_stop: if i == PARTITIONS - 1 {
                        RING
                    } else {
                        (i + 1) * width
                    },
                    unix_time_ns: self.created_ns,
                }),
                leader_broker: self.addr.clone(),
                follower_broker: String::new(),
            })
            .collect();
        Ok(Response::new(mpb::LookupTopicBrokersResponse {
            topic: request.into_inner().topic,
            broker_partition_assignments: assignments,
        }))
    }

    async fn publish_message(
        &self,
        request: Request<Streaming<mpb::PublishMessageRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<mpb::PublishMessageResponse>>, Status> {
        use mpb::publish_message_request::Message;
        let next = self.next.clone();
        let acks = request.into_inner().filter_map(move |m| {
            let answer = match m {
                Ok(mpb::PublishMessageRequest {
                    message: Some(Message::Init(_)),
                }) => Some(Ok(mpb::PublishMessageResponse::default())),
                Ok(mpb::PublishMessageRequest {
                    message: Some(Message::Data(d)),
                }) => Some(Ok(mpb::PublishMessageResponse {
                    ack_ts_ns: d.ts_ns,
                    assigned_offset: next.fetch_add(1, Ordering::Relaxed),
                    ..Default::default()
                })),
                Ok(_) => None,
                Err(status) => Some(Err(status)),
            };
            futures::future::ready(answer)
        });
        Ok(Response::new(Box::pin(acks)))
    }
}

/// Starts the fake broker on its own pinned thread; returns its `host:port`.
fn start_fake_broker(core: usize) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        common::pin(core);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let broker = FakeBroker {
                addr: addr.clone(),
                created_ns: 1,
                next: Arc::new(AtomicI64::new(0)),
            };
            tx.send(addr).expect("main waits");
            // As a real broker's gRPC server does: no Nagle delay on the acks.
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
                s.and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(s)
                })
            });
            tonic::transport::Server::builder()
                .add_service(SeaweedMessagingServer::new(broker))
                .serve_with_incoming(incoming)
                .await
                .expect("serve");
        });
    });
    rx.recv().expect("fake broker started")
}

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
    let addr = start_fake_broker(other_core);
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
