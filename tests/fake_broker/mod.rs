//! A **fake** SeaweedMQ broker, in process: a tonic server generated from kelp's own `proto/`
//! files (build.rs writes the server side to OUT_DIR/fake_broker). It stands in for the real
//! broker only where the real one cannot do what is measured or tested:
//! - `benches/seaweedmq_publish.rs`: the gRPC core's own cost, without a broker's storage;
//! - `tests/seaweedmq_fake.rs`: a broker that stores records and then drops the stream before
//!   acking them, which a real broker does only by chance when it dies.
//!
//! It serves one topic of `partitions` partitions (all led by itself): `FindBrokerLeader`,
//! `LookupTopicBrokers`, `PublishMessage` (acks each record with the next offset of its
//! partition), `FetchMessage` (by offset, from what it stored) and `GetPartitionRangeInfo`.
//! Everything else answers "unimplemented".

#![allow(dead_code)]

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status, Streaming};

#[allow(clippy::all, clippy::pedantic, dead_code, unreachable_pub)]
pub mod pb {
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

use fpb::seaweed_filer_server::{SeaweedFiler, SeaweedFilerServer};
use mpb::seaweed_messaging_server::{SeaweedMessaging, SeaweedMessagingServer};
use pb::filer_pb as fpb;
use pb::messaging_pb as mpb;
use pb::schema_pb as spb;

const RING: i32 = 2520;

/// A fault to play once: partition `partition` stores records until its log holds `at`, acks
/// none of the last `unacked` of them, and then ends the stream with UNAVAILABLE, reading
/// nothing more from it: like a broker that dies after storing records and before acking them
/// (with `unacked` 0 it acks them all first). With `forget` > 0 it then also forgets the last
/// `forget` records it had acked, and the unacked ones after them, as a SeaweedMQ broker that
/// dies before its buffer reached the filer comes back without them. With `renumber` > 0 it
/// keeps its log but numbers the next records from `renumber` below its end, as a stock 4.53
/// broker resumes from a stale checkpoint after a crash.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropStream {
    pub partition: usize,
    pub at: usize,
    pub unacked: usize,
    pub forget: usize,
    pub renumber: usize,
    /// After the drop, refuse this many `PublishMessage` calls (the broker stays down).
    pub down_for: usize,
    /// After the drop, fail this many `FetchMessage` calls (the broker is back but does not
    /// serve reads yet).
    pub reads_down_for: usize,
}

#[derive(Default)]
struct State {
    /// Per partition, the stored records (offset = index); empty unless `store`.
    logs: Vec<Vec<mpb::DataMessage>>,
    /// Per partition, the next offset.
    next: Vec<i64>,
    store: bool,
    fault: Option<DropStream>,
    streams_opened: usize,
    /// `PublishMessage` calls still to refuse (UNAVAILABLE), as a broker that is down.
    refuse_streams: usize,
    /// Most messages one `FetchMessage` returns (0: as many as asked), as a broker that
    /// returns one log file's worth at a time.
    fetch_max: usize,
    /// `FetchMessage` calls still to fail (UNAVAILABLE), as a broker that just restarted and
    /// does not serve reads yet.
    fail_fetches: usize,
    /// The fake filer's key-value store (the same server answers as a filer).
    kv: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Per partition: its offset counter restarted at 0 while its files stay (see
    /// [`FakeBroker::restart_counter`]).
    stale_counter: std::collections::HashSet<usize>,
}

/// A handle on a running fake broker.
#[derive(Clone)]
pub struct FakeBroker {
    pub addr: String,
    partitions: i32,
    created_ns: i64,
    state: Arc<Mutex<State>>,
}

impl FakeBroker {
    /// Starts a fake broker on its own thread (pinned to `core` when given) with a topic of
    /// `partitions` partitions. `store`: keep records for `FetchMessage` (the bench does not).
    pub fn start(partitions: i32, store: bool, core: Option<usize>) -> FakeBroker {
        let state = Arc::new(Mutex::new(State {
            logs: vec![Vec::new(); partitions as usize],
            next: vec![0; partitions as usize],
            store,
            ..State::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_state = state.clone();
        std::thread::spawn(move || {
            if let Some(id) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let broker = FakeBroker {
                    addr: listener.local_addr().expect("addr").to_string(),
                    partitions,
                    created_ns: 1,
                    state: thread_state,
                };
                tx.send(broker.clone()).expect("the starter waits");
                // As a real broker's gRPC server does: no Nagle delay on the acks.
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
                    s.and_then(|s| {
                        s.set_nodelay(true)?;
                        Ok(s)
                    })
                });
                tonic::transport::Server::builder()
                    .add_service(SeaweedFilerServer::new(broker.clone()))
                    .add_service(SeaweedMessagingServer::new(broker))
                    .serve_with_incoming(incoming)
                    .await
                    .expect("serve");
            });
        });
        rx.recv().expect("fake broker started")
    }

    /// Arms a fault (once).
    pub fn drop_stream(&self, fault: DropStream) {
        self.state.lock().unwrap().fault = Some(fault);
    }

    /// What partition `p` stored, in offset order.
    pub fn log(&self, p: usize) -> Vec<mpb::DataMessage> {
        self.state.lock().unwrap().logs[p].clone()
    }

    /// Forgets everything partition `p` stored and numbers it from 0 again, as a stock SeaweedFS
    /// broker does when it loads a partition whose log files carry no offsets.
    pub fn reset(&self, p: usize) {
        let mut st = self.state.lock().unwrap();
        st.logs[p].clear();
        st.next[p] = 0;
    }

    /// Keeps what partition `p` stored but numbers from 0 again, as a stock SeaweedFS broker
    /// does when it reloads a partition whose first log file carries no offsets: the range
    /// call still reports the files' end, `FetchMessage` reports the counter (0) and serves
    /// nothing below it.
    pub fn restart_counter(&self, p: usize) {
        let mut st = self.state.lock().unwrap();
        st.next[p] = 0;
        st.stale_counter.insert(p);
    }

    /// Makes every `FetchMessage` return at most `n` messages.
    pub fn set_fetch_max(&self, n: usize) {
        self.state.lock().unwrap().fetch_max = n;
    }

    /// `FetchMessage` calls still to fail.
    pub fn fetches_to_fail(&self) -> usize {
        self.state.lock().unwrap().fail_fetches
    }

    /// What the fake filer holds under `key`.
    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().kv.get(key.as_bytes()).cloned()
    }

    /// `PublishMessage` streams opened so far.
    pub fn streams_opened(&self) -> usize {
        self.state.lock().unwrap().streams_opened
    }

    fn partition_of(&self, p: &spb::Partition) -> usize {
        let width = RING / self.partitions;
        ((p.range_start / width) as usize).min(self.partitions as usize - 1)
    }
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
        let width = RING / self.partitions;
        let assignments = (0..self.partitions)
            .map(|i| mpb::BrokerPartitionAssignment {
                partition: Some(spb::Partition {
                    ring_size: RING,
                    range_start: i * width,
                    range_stop: if i == self.partitions - 1 {
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
        let me = self.clone();
        {
            let mut st = me.state.lock().unwrap();
            if st.refuse_streams > 0 {
                st.refuse_streams -= 1;
                return Err(Status::unavailable("fake broker: down"));
            }
            st.streams_opened += 1;
        }
        // (partition, ended)
        let acks = request
            .into_inner()
            .scan((None::<usize>, false), move |(partition, ended), m| {
                if *ended {
                    return futures::future::ready(None);
                }
                let answers = match m {
                    Ok(mpb::PublishMessageRequest {
                        message: Some(Message::Init(init)),
                    }) => {
                        *partition = init.partition.as_ref().map(|p| me.partition_of(p));
                        vec![Ok(mpb::PublishMessageResponse::default())]
                    }
                    Ok(mpb::PublishMessageRequest {
                        message: Some(Message::Data(d)),
                    }) => {
                        let p = partition.unwrap_or(0);
                        let mut st = me.state.lock().unwrap();
                        let offset = st.next[p];
                        st.next[p] += 1;
                        let ts_ns = d.ts_ns;
                        if st.store {
                            st.logs[p].push(d);
                        }
                        let stored = (offset + 1) as usize;
                        let ack = mpb::PublishMessageResponse {
                            ack_ts_ns: ts_ns,
                            assigned_offset: offset,
                            ..Default::default()
                        };
                        match st.fault {
                            Some(f) if f.partition == p && stored >= f.at => {
                                st.fault = None;
                                *ended = true;
                                if f.forget > 0 {
                                    let keep = f.at - f.unacked - f.forget;
                                    st.logs[p].truncate(keep);
                                    st.next[p] = keep as i64;
                                }
                                st.next[p] -= f.renumber as i64;
                                st.refuse_streams = f.down_for;
                                st.fail_fetches = f.reads_down_for;
                                let dropped =
                                    Err(Status::unavailable("fake broker: stream dropped"));
                                if f.unacked == 0 {
                                    vec![Ok(ack), dropped]
                                } else {
                                    vec![dropped]
                                }
                            }
                            Some(f) if f.partition == p && stored + f.unacked > f.at => Vec::new(),
                            _ => vec![Ok(ack)],
                        }
                    }
                    Ok(_) => Vec::new(),
                    Err(status) => {
                        *ended = true;
                        vec![Err(status)]
                    }
                };
                futures::future::ready(Some(answers))
            })
            .flat_map(futures::stream::iter);
        Ok(Response::new(Box::pin(acks)))
    }

    async fn get_partition_range_info(
        &self,
        request: Request<mpb::GetPartitionRangeInfoRequest>,
    ) -> Result<Response<mpb::GetPartitionRangeInfoResponse>, Status> {
        let req = request.into_inner();
        let p = req
            .partition
            .as_ref()
            .map_or(0, |part| self.partition_of(part));
        let hwm = self.state.lock().unwrap().logs[p].len() as i64;
        Ok(Response::new(mpb::GetPartitionRangeInfoResponse {
            offset_range: Some(mpb::OffsetRangeInfo {
                earliest_offset: 0,
                latest_offset: hwm - 1,
                high_water_mark: hwm,
            }),
            record_count: hwm,
            ..Default::default()
        }))
    }

    async fn fetch_message(
        &self,
        request: Request<mpb::FetchMessageRequest>,
    ) -> Result<Response<mpb::FetchMessageResponse>, Status> {
        let req = request.into_inner();
        let p = req
            .partition
            .as_ref()
            .map_or(0, |part| self.partition_of(part));
        let mut st = self.state.lock().unwrap();
        if st.fail_fetches > 0 {
            st.fail_fetches -= 1;
            return Err(Status::unavailable("fake broker: not serving reads yet"));
        }
        let log = &st.logs[p];
        let hwm = if st.stale_counter.contains(&p) {
            st.next[p].min(log.len() as i64)
        } else {
            log.len() as i64
        };
        let log = &log[..hwm as usize];
        if req.start_offset < 0 || req.start_offset > hwm {
            return Ok(Response::new(mpb::FetchMessageResponse {
                error_code: 2,
                error: "offset out of range".into(),
                high_water_mark: hwm,
                next_offset: hwm,
                ..Default::default()
            }));
        }
        let mut max = if req.max_messages > 0 {
            req.max_messages as usize
        } else {
            100
        };
        if st.fetch_max > 0 {
            max = max.min(st.fetch_max);
        }
        let from = req.start_offset as usize;
        let messages: Vec<_> = log[from..(from + max).min(log.len())].to_vec();
        let next_offset = (from + messages.len()) as i64;
        Ok(Response::new(mpb::FetchMessageResponse {
            messages,
            high_water_mark: hwm,
            next_offset,
            end_of_partition: next_offset == hwm,
            ..Default::default()
        }))
    }
}

/// The filer's key-value store, as the same fake server.
#[tonic::async_trait]
impl SeaweedFiler for FakeBroker {
    async fn kv_get(
        &self,
        request: Request<fpb::KvGetRequest>,
    ) -> Result<Response<fpb::KvGetResponse>, Status> {
        let key = request.into_inner().key;
        let value = self.state.lock().unwrap().kv.get(&key).cloned();
        Ok(Response::new(fpb::KvGetResponse {
            value: value.unwrap_or_default(),
            error: String::new(),
        }))
    }

    async fn kv_put(
        &self,
        request: Request<fpb::KvPutRequest>,
    ) -> Result<Response<fpb::KvPutResponse>, Status> {
        let r = request.into_inner();
        let mut st = self.state.lock().unwrap();
        if r.value.is_empty() {
            st.kv.remove(&r.key);
        } else {
            st.kv.insert(r.key, r.value);
        }
        Ok(Response::new(fpb::KvPutResponse::default()))
    }
}
