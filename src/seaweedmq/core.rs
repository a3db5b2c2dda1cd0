//! The gRPC core's thread: a current-thread tokio runtime with a `LocalSet`, so that its state
//! is plain `Rc`/`RefCell` owned by this one thread.
//!
//! - The dispatcher drains the request channel and starts one local task per unary call, or
//!   hands a publish to its partition's [`Publisher`] task.
//! - One link per broker address keeps a connected `Channel` and its health (`links.rs`).
//! - Routes (a topic's partition assignments from `LookupTopicBrokers`) are cached per topic
//!   and dropped on any sign that they moved.

use super::error::{broker_codes, SeaweedError, SeaweedResult};
use super::filer::{Filer, LockAnswer};
use super::links::{is_transport_failure, LinkOptions, Links};
use super::marks::Marks;
use super::pb::messaging_pb::{
    BrokerPartitionAssignment, ConfigureTopicRequest, FetchMessageRequest,
    GetPartitionRangeInfoRequest, GetTopicConfigurationRequest, ListTopicsRequest,
    LookupTopicBrokersRequest, TopicExistsRequest,
};
use super::pb::schema_pb::{Partition, Topic};
use super::publisher::{PublishJob, Publisher};
use super::{
    ring, FetchResult, PartitionAssignment, PartitionRange, Record, SeaweedOptions, TopicConfig,
};
use crate::config::limits;
use crossbeam_channel::{Receiver, TryRecvError};
use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tonic::{Code, Status};

pub(crate) use super::links::Client;
pub(crate) type Reply<T> = oneshot::Sender<SeaweedResult<T>>;

/// What a [`super::SeaweedHandle`] asks of the core.
pub(crate) enum Request {
    ConfigureTopic {
        name: String,
        partitions: i32,
        reply: Reply<TopicConfig>,
    },
    ListTopics {
        reply: Reply<Vec<String>>,
    },
    TopicExists {
        name: String,
        reply: Reply<bool>,
    },
    TopicConfig {
        name: String,
        reply: Reply<TopicConfig>,
    },
    PartitionRange {
        name: String,
        partition: i32,
        reply: Reply<PartitionRange>,
    },
    Publish {
        name: String,
        partition: i32,
        records: Vec<Record>,
        reply: Reply<Vec<i64>>,
    },
    Fetch {
        name: String,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_messages: i32,
        reply: Reply<FetchResult>,
    },
    /// Closes a partition's publish stream once its callers are answered (the partition moved
    /// to another kelp).
    Detach {
        name: String,
        partition: i32,
        reply: Reply<()>,
    },
    /// A filer call for membership, bounded by its own timeout (shorter than the lease).
    Filer(FilerCall, Duration),
    Shutdown,
}

/// A call to the filer (see `super::filer`), for kelp's cluster membership.
pub(crate) enum FilerCall {
    Lock {
        name: String,
        seconds: i64,
        renew_token: String,
        owner: String,
        reply: Reply<LockAnswer>,
    },
    Unlock {
        name: String,
        renew_token: String,
        reply: Reply<()>,
    },
    LockOwner {
        name: String,
        reply: Reply<String>,
    },
    PutEntry {
        directory: String,
        name: String,
        content: bytes::Bytes,
        exclusive: bool,
        reply: Reply<bool>,
    },
    ListEntries {
        directory: String,
        start_after: String,
        limit: u32,
        reply: Reply<Vec<(String, bytes::Bytes)>>,
    },
    DeleteEntry {
        directory: String,
        name: String,
        reply: Reply<()>,
    },
}

/// Requests handled per drain before the dispatcher lets other tasks (acks, calls) run.
const DRAIN_BATCH_MAX: usize = 256;

/// The thread body: runs until shutdown or until every handle is gone.
pub(crate) fn run(
    rx: Receiver<Request>,
    shared: Arc<super::Shared>,
    broker_addr: String,
    opts: SeaweedOptions,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // Requests then fail with `Shutdown` when the receiver is dropped.
            log::error!("gRPC core: cannot build its runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let core = Rc::new(Core::new(broker_addr, opts, shared.stats.clone()));
        // Connect to the bootstrap broker now, so that the first request finds the link up.
        core.links.open(&core.bootstrap);
        tokio::task::spawn_local(write_marks(core.clone()));
        dispatch(core.clone(), rx, shared).await;
        // The shards are done: what was acknowledged last is kept for the next kelp.
        let last = tokio::time::timeout(core.request_timeout(), core.marks.flush()).await;
        if last.is_err() {
            log::warn!("gRPC core: the last marks were not all written to the filer in time");
        }
    });
    log::info!("gRPC core stopped");
}

async fn dispatch(core: Rc<Core>, rx: Receiver<Request>, shared: Arc<super::Shared>) {
    let calls = Arc::new(Semaphore::new(core.opts.max_concurrent_calls.max(1)));
    let spin = Duration::from_micros(core.opts.spin_us);
    let mut last_work = Instant::now();
    loop {
        let mut handled = 0;
        while handled < DRAIN_BATCH_MAX {
            match rx.try_recv() {
                Ok(Request::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Ok(request) => {
                    handled += 1;
                    core.handle(request, &calls).await;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if handled > 0 {
            last_work = Instant::now();
        }
        if handled == DRAIN_BATCH_MAX || last_work.elapsed() < spin {
            // More may be queued (or may come soon): let the other tasks run, poll the
            // sockets without sleeping, and look again.
            tokio::task::yield_now().await;
        } else {
            shared.wake.notified().await;
        }
    }
}

/// A topic's partition assignments, as last looked up.
#[derive(Clone)]
struct Route {
    assignments: Rc<Vec<BrokerPartitionAssignment>>,
    fetched_at: Instant,
}

/// The core's state, shared by its local tasks.
pub(crate) struct Core {
    pub(crate) opts: SeaweedOptions,
    /// The broker named at start: topic admin and lookups go there (brokers forward them to
    /// their balancer), data goes to each partition's leader.
    bootstrap: String,
    links: Links,
    routes: RefCell<HashMap<String, Route>>,
    publishers: RefCell<HashMap<(String, i32), mpsc::UnboundedSender<PublishJob>>>,
    pub(crate) stats: Arc<super::PublishStats>,
    /// Each partition's mark and fence (see [`super::marks`]).
    pub(crate) marks: Marks,
    /// The filer, with `--seaweedmq-filer`.
    filer: Option<Filer>,
}

impl Core {
    fn new(bootstrap: String, opts: SeaweedOptions, stats: Arc<super::PublishStats>) -> Self {
        let filer = opts.filer.as_deref().and_then(|addr| {
            let connect = Duration::from_millis(opts.connect_timeout_ms);
            let timeout = Duration::from_millis(opts.request_timeout_ms);
            match Filer::new(addr, connect, timeout) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::error!("gRPC core: {e}; running without marks");
                    None
                }
            }
        });
        let links = Links::new(LinkOptions::new(&opts));
        Core {
            marks: Marks::new(filer.clone(), opts.namespace.clone(), stats.clone()),
            filer,
            opts,
            bootstrap,
            links,
            routes: RefCell::new(HashMap::new()),
            publishers: RefCell::new(HashMap::new()),
            stats,
        }
    }

    /// Before a partition is first used by this process: fenced already, or does its log still
    /// reach its mark? Returns the broker's high-water mark when it just checked (`None` when
    /// the partition was checked before).
    pub(crate) async fn check(
        self: &Rc<Self>,
        name: &str,
        partition: i32,
    ) -> SeaweedResult<Option<i64>> {
        if let Some(e) = self.marks.fenced(name, partition) {
            return Err(e);
        }
        if self.marks.is_checked(name, partition) {
            return Ok(None);
        }
        let mark = self.marks.read_mark(name, partition).await?;
        let range = self.range_unchecked(name, partition).await?;
        // The range's end is what the broker's files hold; FetchMessage's high-water mark is
        // where it numbers the next record. A stock broker that reloaded a partition written
        // without offset metadata counts from 0 again while its files still reach the end:
        // both must reach the mark.
        let served = self.served_end(name, partition, range.earliest).await?;
        self.marks
            .settle(name, partition, mark, range.high_water_mark.min(served))?;
        Ok(Some(range.high_water_mark))
    }

    /// FetchMessage's high-water mark: the end of what the broker serves and numbers from.
    async fn served_end(
        self: &Rc<Self>,
        name: &str,
        partition: i32,
        from: i64,
    ) -> SeaweedResult<i64> {
        let fetched = self
            .fetch_unchecked(name, partition, from, limits::SEAWEEDMQ_SCAN_FETCH_BYTES, 1)
            .await;
        match fetched {
            Ok(f) => Ok(f.high_water_mark),
            Err(SeaweedError::OffsetOutOfRange {
                high_water_mark, ..
            }) => Ok(high_water_mark),
            Err(e) => Err(e),
        }
    }

    /// Fences the partition when a fetch's high-water mark is below the acknowledged end known
    /// before the fetch was sent (later acks may pass a fetch on the wire).
    fn check_served_end(
        &self,
        name: &str,
        partition: i32,
        high_water_mark: i64,
        acked_before: i64,
    ) -> SeaweedResult<()> {
        if high_water_mark >= acked_before {
            return Ok(());
        }
        Err(self.marks.fence(
            name,
            partition,
            format!(
                "it serves a high-water mark of {high_water_mark} (the offset it would give the \
                 next record), but records up to offset {} were acknowledged",
                acked_before - 1
            ),
        ))
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.opts.request_timeout_ms)
    }

    pub(crate) fn topic(&self, name: &str) -> Topic {
        Topic {
            namespace: self.opts.namespace.clone(),
            name: name.to_string(),
        }
    }

    async fn handle(self: &Rc<Self>, request: Request, calls: &Arc<Semaphore>) {
        if let Request::Publish {
            name,
            partition,
            records,
            reply,
        } = request
        {
            self.publish(name, partition, records, reply);
            return;
        }
        // Waiting here stops the drain, so a flood of calls fills the channel and the shards
        // get `Overloaded` instead of the core holding unbounded work.
        let permit = match calls.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return,
        };
        let core = self.clone();
        tokio::task::spawn_local(async move {
            let _permit = permit;
            match request {
                Request::ConfigureTopic {
                    name,
                    partitions,
                    reply,
                } => answer(reply, core.configure_topic(&name, partitions).await),
                Request::ListTopics { reply } => answer(reply, core.list_topics().await),
                Request::TopicExists { name, reply } => {
                    answer(reply, core.topic_exists(&name).await)
                }
                Request::TopicConfig { name, reply } => {
                    answer(reply, core.topic_config(&name).await)
                }
                Request::PartitionRange {
                    name,
                    partition,
                    reply,
                } => answer(reply, core.partition_range(&name, partition).await),
                Request::Fetch {
                    name,
                    partition,
                    offset,
                    max_bytes,
                    max_messages,
                    reply,
                } => answer(
                    reply,
                    core.fetch(&name, partition, offset, max_bytes, max_messages)
                        .await,
                ),
                Request::Detach {
                    name,
                    partition,
                    reply,
                } => answer(reply, core.detach(&name, partition).await),
                Request::Filer(call, timeout) => core.filer_call(call, timeout).await,
                Request::Publish { .. } | Request::Shutdown => unreachable!("handled above"),
            }
        });
    }

    fn publish(
        self: &Rc<Self>,
        name: String,
        partition: i32,
        records: Vec<Record>,
        reply: Reply<Vec<i64>>,
    ) {
        let job = PublishJob {
            records,
            reply,
            deadline: Instant::now() + self.request_timeout(),
            leave: false,
        };
        let key = (name, partition);
        let mut publishers = self.publishers.borrow_mut();
        let job = match publishers.get(&key) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                // The publisher task ended (it only does so at shutdown); start a new one.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(job);
        let publisher = Publisher::new(self.clone(), key.0.clone(), key.1, rx);
        tokio::task::spawn_local(publisher.run());
        publishers.insert(key, tx);
    }

    /// Ends the partition's publisher (the partition moved to another kelp): it waits for the
    /// acks of what it has in flight and answers everyone else `Moved` (see
    /// `Publisher::leave`). The partition's mark is written before this process forgets it.
    async fn detach(self: &Rc<Self>, name: &str, partition: i32) -> SeaweedResult<()> {
        let tx = self
            .publishers
            .borrow_mut()
            .remove(&(name.to_string(), partition));
        if let Some(tx) = tx {
            let (reply, done) = oneshot::channel();
            let job = PublishJob {
                records: Vec::new(),
                reply,
                deadline: Instant::now(),
                leave: true,
            };
            if tx.send(job).is_ok() {
                let _ = done.await;
            }
            log::debug!("SeaweedMQ: no longer publishing to {name}[{partition}]");
        }
        self.marks.flush().await;
        self.marks.forget(name, partition);
        Ok(())
    }

    async fn filer_call(self: &Rc<Self>, call: FilerCall, timeout: Duration) {
        let Some(filer) = self.filer.as_ref().map(|f| f.with_timeout(timeout)) else {
            let no = || SeaweedError::InvalidArgument("no --seaweedmq-filer".into());
            match call {
                FilerCall::Lock { reply, .. } => answer(reply, Err(no())),
                FilerCall::Unlock { reply, .. } => answer(reply, Err(no())),
                FilerCall::LockOwner { reply, .. } => answer(reply, Err(no())),
                FilerCall::PutEntry { reply, .. } => answer(reply, Err(no())),
                FilerCall::ListEntries { reply, .. } => answer(reply, Err(no())),
                FilerCall::DeleteEntry { reply, .. } => answer(reply, Err(no())),
            }
            return;
        };
        match call {
            FilerCall::Lock {
                name,
                seconds,
                renew_token,
                owner,
                reply,
            } => answer(
                reply,
                filer.lock(&name, seconds, &renew_token, &owner).await,
            ),
            FilerCall::Unlock {
                name,
                renew_token,
                reply,
            } => answer(reply, filer.unlock(&name, &renew_token).await),
            FilerCall::LockOwner { name, reply } => answer(reply, filer.lock_owner(&name).await),
            FilerCall::PutEntry {
                directory,
                name,
                content,
                exclusive,
                reply,
            } => answer(
                reply,
                filer.put_entry(&directory, &name, content, exclusive).await,
            ),
            FilerCall::ListEntries {
                directory,
                start_after,
                limit,
                reply,
            } => answer(
                reply,
                filer.list_entries(&directory, &start_after, limit).await,
            ),
            FilerCall::DeleteEntry {
                directory,
                name,
                reply,
            } => answer(reply, filer.delete_entry(&directory, &name).await),
        }
    }

    /// Called by a publisher task that ends; the next publish to the partition starts a new one.
    pub(crate) fn forget_publisher(&self, name: &str, partition: i32) {
        self.publishers
            .borrow_mut()
            .remove(&(name.to_string(), partition));
    }

    /// A client on the link to `addr` (see [`Links::client`]).
    pub(crate) async fn client(self: &Rc<Self>, addr: &str) -> SeaweedResult<Client> {
        self.links.client(addr).await
    }

    /// Have the link to `addr` checked now (see [`Links::suspect`]).
    pub(crate) fn suspect(&self, addr: &str) {
        self.links.suspect(addr);
    }

    /// Maps a gRPC status from `addr` to our error, flagging the link when the status looks
    /// like a broken connection. `topic` names the topic the call was about, if any.
    pub(crate) fn status_error(
        &self,
        addr: &str,
        topic: Option<&str>,
        status: Status,
    ) -> SeaweedError {
        let message = status.message().to_string();
        // The broker reports a missing topic with whatever code its storage error carried
        // (even `Unavailable`), so the text decides first.
        if let Some(topic) = topic {
            if status.code() != Code::DeadlineExceeded && looks_like_not_found(&message) {
                return SeaweedError::TopicNotFound {
                    topic: topic.to_string(),
                };
            }
        }
        match status.code() {
            Code::DeadlineExceeded => SeaweedError::Timeout {
                timeout_ms: self.opts.request_timeout_ms,
            },
            _ if is_transport_failure(&status) => {
                self.suspect(addr);
                SeaweedError::Unavailable {
                    addr: addr.to_string(),
                    reason: message,
                }
            }
            code => SeaweedError::Rpc {
                code: code as i32,
                message,
            },
        }
    }

    /// One unary call on the link to `addr`, bounded by the request timeout.
    async fn unary<T, F, Fut>(
        self: &Rc<Self>,
        addr: &str,
        topic: Option<&str>,
        call: F,
    ) -> SeaweedResult<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = self.client(addr).await?;
        match tokio::time::timeout(self.request_timeout(), call(client)).await {
            Err(_) => {
                self.suspect(addr);
                Err(SeaweedError::Timeout {
                    timeout_ms: self.opts.request_timeout_ms,
                })
            }
            Ok(Err(status)) => Err(self.status_error(addr, topic, status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    // ---- routes ------------------------------------------------------------------------

    async fn assignments(
        self: &Rc<Self>,
        name: &str,
    ) -> SeaweedResult<Rc<Vec<BrokerPartitionAssignment>>> {
        let ttl = Duration::from_millis(self.opts.route_ttl_ms);
        if let Some(route) = self.routes.borrow().get(name) {
            if route.fetched_at.elapsed() < ttl {
                return Ok(route.assignments.clone());
            }
        }
        let request = LookupTopicBrokersRequest {
            topic: Some(self.topic(name)),
        };
        let bootstrap = self.bootstrap.clone();
        let response = self
            .unary(&bootstrap, Some(name), |mut c| async move {
                c.lookup_topic_brokers(request).await
            })
            .await?;
        if response.broker_partition_assignments.is_empty() {
            return Err(SeaweedError::TopicNotFound {
                topic: name.to_string(),
            });
        }
        let assignments = Rc::new(response.broker_partition_assignments);
        self.routes.borrow_mut().insert(
            name.to_string(),
            Route {
                assignments: assignments.clone(),
                fetched_at: Instant::now(),
            },
        );
        Ok(assignments)
    }

    /// Forgets `name`'s assignments so that the next call looks them up again.
    pub(crate) fn invalidate(&self, name: &str) {
        self.routes.borrow_mut().remove(name);
    }

    /// The broker's partition for Kafka partition `kafka_partition`, and its leader.
    pub(crate) async fn locate(
        self: &Rc<Self>,
        name: &str,
        kafka_partition: i32,
    ) -> SeaweedResult<(Partition, String)> {
        let assignments = self.assignments(name).await?;
        let found = ring::find_assignment(&assignments, kafka_partition)
            .and_then(|a| Some((a.partition?, a.leader_broker.clone())));
        match found {
            Some((partition, leader)) if !leader.is_empty() => Ok((partition, leader)),
            Some(_) => {
                self.invalidate(name);
                Err(SeaweedError::NotLeader {
                    topic: name.to_string(),
                    partition: kafka_partition,
                    attempts: 1,
                    reason: "partition has no leader".to_string(),
                })
            }
            None => {
                self.invalidate(name);
                Err(SeaweedError::PartitionNotFound {
                    topic: name.to_string(),
                    partition: kafka_partition,
                    partitions: assignments.len(),
                })
            }
        }
    }

    // ---- calls -------------------------------------------------------------------------

    async fn configure_topic(
        self: &Rc<Self>,
        name: &str,
        partitions: i32,
    ) -> SeaweedResult<TopicConfig> {
        let request = ConfigureTopicRequest {
            topic: Some(self.topic(name)),
            partition_count: partitions,
            ..Default::default()
        };
        let bootstrap = self.bootstrap.clone();
        let response = self
            .unary(&bootstrap, None, |mut c| async move {
                c.configure_topic(request).await
            })
            .await;
        // Whatever happened, the partitions may have moved.
        self.invalidate(name);
        Ok(topic_config(response?.broker_partition_assignments))
    }

    async fn list_topics(self: &Rc<Self>) -> SeaweedResult<Vec<String>> {
        let bootstrap = self.bootstrap.clone();
        let response = self
            .unary(&bootstrap, None, |mut c| async move {
                c.list_topics(ListTopicsRequest {}).await
            })
            .await?;
        let mut names: Vec<String> = response
            .topics
            .into_iter()
            .filter(|t| t.namespace == self.opts.namespace)
            .map(|t| t.name)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn topic_exists(self: &Rc<Self>, name: &str) -> SeaweedResult<bool> {
        let request = TopicExistsRequest {
            topic: Some(self.topic(name)),
        };
        let bootstrap = self.bootstrap.clone();
        let response = self
            .unary(&bootstrap, None, |mut c| async move {
                c.topic_exists(request).await
            })
            .await?;
        Ok(response.exists)
    }

    async fn topic_config(self: &Rc<Self>, name: &str) -> SeaweedResult<TopicConfig> {
        let request = GetTopicConfigurationRequest {
            topic: Some(self.topic(name)),
        };
        let bootstrap = self.bootstrap.clone();
        let response = self
            .unary(&bootstrap, Some(name), |mut c| async move {
                c.get_topic_configuration(request).await
            })
            .await?;
        let mut config = topic_config(response.broker_partition_assignments);
        if response.partition_count > 0 {
            config.partition_count = response.partition_count;
        }
        Ok(config)
    }

    async fn partition_range(
        self: &Rc<Self>,
        name: &str,
        kafka_partition: i32,
    ) -> SeaweedResult<PartitionRange> {
        self.check(name, kafka_partition).await?;
        self.range_unchecked(name, kafka_partition).await
    }

    pub(crate) async fn range_unchecked(
        self: &Rc<Self>,
        name: &str,
        kafka_partition: i32,
    ) -> SeaweedResult<PartitionRange> {
        let (partition, leader) = self.locate(name, kafka_partition).await?;
        let request = GetPartitionRangeInfoRequest {
            topic: Some(self.topic(name)),
            partition: Some(partition),
        };
        let response = self
            .unary(&leader, Some(name), |mut c| async move {
                c.get_partition_range_info(request).await
            })
            .await?;
        if !response.error.is_empty() {
            return Err(SeaweedError::Broker {
                code: broker_codes::UNKNOWN,
                message: response.error,
            });
        }
        let range = response.offset_range.unwrap_or_default();
        Ok(PartitionRange {
            earliest: range.earliest_offset,
            high_water_mark: range.high_water_mark,
        })
    }

    pub(crate) async fn fetch(
        self: &Rc<Self>,
        name: &str,
        kafka_partition: i32,
        offset: i64,
        max_bytes: i32,
        max_messages: i32,
    ) -> SeaweedResult<FetchResult> {
        self.check(name, kafka_partition).await?;
        let acked_before = self.marks.of(name, kafka_partition).acked_end();
        let first = self
            .fetch_unchecked(name, kafka_partition, offset, max_bytes, max_messages)
            .await?;
        self.check_served_end(name, kafka_partition, first.high_water_mark, acked_before)?;
        if !first.messages.is_empty() || offset >= first.high_water_mark {
            return Ok(first);
        }
        // Nothing served below the high-water mark: the broker holds records it cannot read
        // back (stock SeaweedFS after a reload of files written without offsets). Once more, in
        // case it was passing; then the partition is fenced rather than served as empty.
        let again = self
            .fetch_unchecked(name, kafka_partition, offset, max_bytes, max_messages)
            .await?;
        if !again.messages.is_empty() || offset >= again.high_water_mark {
            return Ok(again);
        }
        Err(self.marks.fence(
            name,
            kafka_partition,
            format!(
                "its log ends at offset {}, but it serves no record at offset {offset}",
                again.high_water_mark
            ),
        ))
    }

    async fn fetch_unchecked(
        self: &Rc<Self>,
        name: &str,
        kafka_partition: i32,
        offset: i64,
        max_bytes: i32,
        max_messages: i32,
    ) -> SeaweedResult<FetchResult> {
        let (partition, leader) = self.locate(name, kafka_partition).await?;
        let request = FetchMessageRequest {
            topic: Some(self.topic(name)),
            partition: Some(partition),
            start_offset: offset,
            max_bytes,
            max_messages,
            ..Default::default()
        };
        let response = self
            .unary(&leader, Some(name), |mut c| async move {
                c.fetch_message(request).await
            })
            .await?;
        let count = response.messages.len() as i64;
        if response.error_code == 0 && count > 0 && response.next_offset > offset + count {
            // `DataMessage` carries no offset: records are numbered from the start, which is
            // right only if the broker skipped none. A log with a gap cannot be served as a
            // Kafka partition without numbering records wrongly; refuse it and say so.
            log::error!(
                "SeaweedMQ {name}[{kafka_partition}]: FetchMessage at offset {offset} returned \
                 {count} records but continues at {} (a gap in the log); not serving them",
                response.next_offset
            );
            return Err(SeaweedError::Broker {
                code: broker_codes::UNKNOWN,
                message: format!(
                    "the log has a gap after offset {offset}: {count} records, next offset {}",
                    response.next_offset
                ),
            });
        }
        match response.error_code {
            0 if response.error.is_empty() => Ok(FetchResult {
                messages: response.messages,
                high_water_mark: response.high_water_mark,
                log_start: response.log_start_offset,
                next_offset: response.next_offset,
                end_of_partition: response.end_of_partition,
            }),
            // FetchMessage's own code for an offset outside the log.
            2 => Err(SeaweedError::OffsetOutOfRange {
                offset,
                log_start: response.log_start_offset,
                high_water_mark: response.high_water_mark,
            }),
            code => {
                if code == broker_codes::UNKNOWN || code == broker_codes::NOT_LEADER {
                    // "partition not found" here usually means the partition moved.
                    self.invalidate(name);
                }
                Err(SeaweedError::Broker {
                    code: if code == 0 {
                        broker_codes::UNKNOWN
                    } else {
                        code
                    },
                    message: response.error,
                })
            }
        }
    }
}

/// Writes the marks that moved, every `mark_interval_ms`, for the life of the core.
async fn write_marks(core: Rc<Core>) {
    let Some(filer) = core.marks.filer_addr().map(str::to_string) else {
        return;
    };
    log::info!("SeaweedMQ: keeping partition marks in the filer at {filer}");
    let every = Duration::from_millis(core.opts.mark_interval_ms.max(1));
    loop {
        tokio::time::sleep(every).await;
        core.marks.flush().await;
    }
}

fn answer<T>(reply: Reply<T>, result: SeaweedResult<T>) {
    // The caller may have stopped waiting; nothing to do then.
    let _ = reply.send(result);
}

fn topic_config(mut assignments: Vec<BrokerPartitionAssignment>) -> TopicConfig {
    let count = assignments.len() as i32;
    assignments.sort_by_key(|a| a.partition.as_ref().map_or(i32::MAX, |p| p.range_start));
    TopicConfig {
        partition_count: count,
        assignments: assignments
            .into_iter()
            .map(|a| {
                let partition = a.partition.unwrap_or_default();
                PartitionAssignment {
                    kafka_partition: ring::kafka_partition_of(&partition, count),
                    partition,
                    leader: a.leader_broker,
                    follower: a.follower_broker,
                }
            })
            .collect(),
    }
}

fn looks_like_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("no such") || m.contains("not exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_sorts_by_ring_and_names_kafka_partitions() {
        let a = |start, stop| BrokerPartitionAssignment {
            partition: Some(Partition {
                ring_size: ring::RING_SIZE,
                range_start: start,
                range_stop: stop,
                unix_time_ns: 7,
            }),
            leader_broker: "127.0.0.1:17777".into(),
            follower_broker: String::new(),
        };
        let config = topic_config(vec![a(1260, 2520), a(0, 1260)]);
        assert_eq!(config.partition_count, 2);
        let kafka: Vec<_> = config
            .assignments
            .iter()
            .map(|a| a.kafka_partition)
            .collect();
        assert_eq!(kafka, vec![Some(0), Some(1)]);
    }

    #[test]
    fn error_text_classifiers() {
        assert!(looks_like_not_found("topic kafka.x: not found"));
        assert!(!looks_like_not_found("timeout"));
    }
}
