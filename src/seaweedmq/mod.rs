//! The SeaweedMQ backend's gRPC core: the only code in kelp that talks to SeaweedMQ.
//!
//! ## Threads
//! [`SeaweedCore::start`] spawns one OS thread (pinned to `--grpc-core` when given) that runs a
//! current-thread tokio runtime and owns every gRPC connection. Shards (glommio executors whose
//! futures are `!Send`) reach it through a [`SeaweedHandle`]: each call pushes a request into a
//! bounded crossbeam channel, signals a `tokio::sync::Notify`, and awaits its own
//! `futures::channel::oneshot` reply, which any executor can await. The core drains the channel
//! with `try_recv` and sleeps on the `Notify` (which keeps a permit, so a signal sent while it
//! drains is never lost): its event loop never blocks inside async code.
//!
//! ## What it does for a shard
//! - topic admin: [`SeaweedHandle::configure_topic`], [`SeaweedHandle::list_topics`],
//!   [`SeaweedHandle::topic_exists`], [`SeaweedHandle::topic_config`];
//! - offsets: [`SeaweedHandle::partition_range`] (log start and high-water mark);
//! - produce: [`SeaweedHandle::publish`] keeps one `PublishMessage` stream per partition to the
//!   partition's leader, coalesces records from many callers onto it, pipelines them, and maps
//!   the broker's per-record acks (`assigned_offset`) back to each caller;
//! - consume: [`SeaweedHandle::fetch`], a unary `FetchMessage` by offset.
//!
//! Kafka topics live in the SeaweedMQ namespace [`SeaweedOptions::namespace`] (`kafka`, as
//! SeaweedFS's own gateway does) and Kafka partition `i` is the `i`-th range of the broker's
//! partition ring ([`ring`]).
//!
//! ## When SeaweedMQ is away
//! Nothing blocks: the core connects in the background, reconnects with exponential backoff, and
//! meanwhile answers every request at once with [`SeaweedError::Unavailable`] (retriable).

mod core;
pub mod error;
pub mod filer;
mod links;
pub mod marks;
pub mod pb;
mod publisher;
pub mod records;
pub mod ring;

pub use error::{broker_codes, SeaweedError, SeaweedResult};
pub use pb::messaging_pb::DataMessage;
pub use pb::schema_pb::Partition;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use futures::channel::oneshot;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Knobs of the gRPC core. Every queue and wait has a limit here; the defaults favour latency.
#[derive(Debug, Clone)]
pub struct SeaweedOptions {
    /// SeaweedMQ namespace that holds the Kafka topics.
    pub namespace: String,
    /// `publisher_name` sent in each publish stream's `init` (shows up in broker logs).
    pub publisher_name: String,
    /// Requests waiting in the channel into the core; a full channel answers
    /// [`SeaweedError::Overloaded`] instead of blocking a shard.
    pub queue_depth: usize,
    /// Unary calls (admin, fetch, offsets) the core runs at once; beyond that it stops draining
    /// its channel, which then fills and pushes back on the shards.
    pub max_concurrent_calls: usize,
    /// How long records wait for more to share their partition's write. 0 sends at once, and
    /// records that arrive together (one drain of the channel) are still sent together.
    pub linger_us: u64,
    /// Lingering records go out as soon as this many bytes wait.
    pub batch_bytes: usize,
    /// Records sent on one publish stream and not acked yet.
    pub max_in_flight_records: usize,
    /// Bytes of records one partition's publisher holds (waiting or unacked) before it answers
    /// new publishes with [`SeaweedError::Overloaded`].
    pub max_partition_bytes: usize,
    /// TCP connect plus the first health check of a broker.
    pub connect_timeout_ms: u64,
    /// A unary call, the opening of a publish stream, or a publish's wait for its acks.
    pub request_timeout_ms: u64,
    /// Reconnect backoff: first wait, doubled after each failure up to the max.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a topic's partition-to-broker assignment is trusted before looking it up again
    /// (errors such as "not leader" drop it at once).
    pub route_ttl_ms: u64,
    /// `LookupTopicBrokers` rounds a publish stream tries when brokers answer "not leader".
    pub leader_lookup_attempts: u32,
    /// Times a partition's records are re-sent on a new stream after the stream broke with no
    /// ack in between, before its callers get the error.
    pub publish_retries: u32,
    /// Largest gRPC message the core decodes (a fetch may return up to 100 MiB).
    pub max_message_bytes: usize,
    /// The filer's gRPC address (`host:port`), where each partition's mark is kept so that
    /// a restarted kelp can tell whether the broker kept every record it acknowledged (see
    /// [`marks`]). `None`: no marks; the checks then cover only what this process saw.
    pub filer: Option<String>,
    /// How often changed marks are written to the filer.
    pub mark_interval_ms: u64,
    /// The core's loop polls for work this long after its last request before it sleeps (0:
    /// sleep at once). Spinning saves the ~80 us wake-up of a sleeping thread on a VM.
    pub spin_us: u64,
}

impl Default for SeaweedOptions {
    fn default() -> Self {
        SeaweedOptions {
            namespace: "kafka".to_string(),
            publisher_name: "kelp".to_string(),
            queue_depth: 8192,
            max_concurrent_calls: 1024,
            linger_us: 0,
            batch_bytes: 1 << 20,
            max_in_flight_records: 16_384,
            max_partition_bytes: 64 << 20,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
            backoff_min_ms: 50,
            backoff_max_ms: 2_000,
            route_ttl_ms: 30_000,
            leader_lookup_attempts: 5,
            publish_retries: 3,
            max_message_bytes: 128 << 20,
            filer: None,
            mark_interval_ms: 1_000,
            spin_us: 0,
        }
    }
}

/// One record to publish. SeaweedMQ stores only key, value and a timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Bytes,
    pub value: Bytes,
    pub ts_ns: i64,
}

impl Record {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>, ts_ns: i64) -> Self {
        Record {
            key: key.into(),
            value: value.into(),
            ts_ns,
        }
    }

    /// Bytes the record occupies on the wire, near enough for batching limits.
    pub fn size_bytes(&self) -> usize {
        self.key.len() + self.value.len() + 16
    }
}

/// Which broker serves one Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// `None` when the broker's range does not match any Kafka partition of the topic.
    pub kafka_partition: Option<i32>,
    /// The broker's partition, to be sent back verbatim.
    pub partition: Partition,
    pub leader: String,
    pub follower: String,
}

/// A topic as SeaweedMQ has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub partition_count: i32,
    /// Sorted by Kafka partition (ring order).
    pub assignments: Vec<PartitionAssignment>,
}

/// A partition's offsets: records live at `[earliest, high_water_mark)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub earliest: i64,
    pub high_water_mark: i64,
}

/// What one fetch returned. `messages[i]` is the record at offset `offset + i`.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchResult {
    pub messages: Vec<DataMessage>,
    pub high_water_mark: i64,
    pub log_start: i64,
    /// The offset after the last message returned (where the next fetch starts).
    pub next_offset: i64,
    pub end_of_partition: bool,
}

/// Starts the gRPC core.
pub struct SeaweedCore;

impl SeaweedCore {
    /// Spawns the core thread (pinned to `grpc_core` when given) and returns a handle at once,
    /// whether or not `broker_addr` (`host:port` of a SeaweedMQ broker) answers.
    pub fn start(
        broker_addr: String,
        grpc_core: Option<usize>,
        opts: SeaweedOptions,
    ) -> std::io::Result<SeaweedHandle> {
        let (tx, rx) = crossbeam_channel::bounded(opts.queue_depth.max(1));
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            stats: Arc::new(PublishStats::default()),
        });
        let capacity = opts.queue_depth;
        let core_shared = shared.clone();
        let core_rx = rx.clone();
        std::thread::Builder::new()
            .name("kelp-grpc".to_string())
            .spawn(move || {
                // However the core ends (even by a panic), callers must not wait forever.
                let _close = CloseOnExit {
                    shared: core_shared.clone(),
                    rx: core_rx.clone(),
                };
                if let Some(id) = grpc_core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        log::warn!("gRPC core: could not pin to core {id}");
                    }
                }
                core::run(core_rx, core_shared, broker_addr, opts);
            })?;
        Ok(SeaweedHandle {
            inner: Arc::new(HandleInner {
                tx: Some(tx),
                rx,
                shared,
                capacity,
            }),
        })
    }
}

/// What the handles and the core thread share.
pub(crate) struct Shared {
    /// Set once the core has stopped taking requests.
    closed: AtomicBool,
    /// Signalled after each request is queued; the core sleeps on it when idle. A `Notify`
    /// keeps a permit when nobody waits, so a request queued while the core drains is not
    /// missed.
    pub(crate) wake: Notify,
    pub(crate) stats: Arc<PublishStats>,
}

/// How well the publishers coalesce: each `send` hands every record a partition's publisher
/// could send at that moment to its stream at once (tonic then encodes them into one write).
/// A SeaweedMQ `DataMessage` holds one record, so `records / sends` is the number of records
/// that share a write. Written only by the core thread.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub sends: AtomicU64,
    pub records: AtomicU64,
    /// Partitions fenced since start (a gauge: fences last until restart); see [`marks`].
    pub fenced_partitions: AtomicU64,
}

impl PublishStats {
    /// Counts one send of `records` records (core thread only: a load and a store).
    pub(crate) fn count(&self, records: u64) {
        let bump =
            |c: &AtomicU64, by: u64| c.store(c.load(Ordering::Relaxed) + by, Ordering::Relaxed);
        bump(&self.sends, 1);
        bump(&self.records, records);
    }

    /// (sends, records) so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.sends.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }
}

/// Marks the core closed and drops whatever is still queued, which answers those callers
/// [`SeaweedError::Shutdown`] (their oneshot senders are dropped).
struct CloseOnExit {
    shared: Arc<Shared>,
    rx: crossbeam_channel::Receiver<core::Request>,
}

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        while self.rx.try_recv().is_ok() {}
    }
}

/// How shards reach the gRPC core. Cheap to clone, `Send + Sync`; its futures can be awaited
/// from any executor. The core stops when the last handle is dropped or on [`Self::shutdown`].
#[derive(Clone)]
pub struct SeaweedHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    /// `Option` only so that `drop` can release the sender before waking the core, which then
    /// sees the channel disconnected instead of sleeping again.
    tx: Option<Sender<core::Request>>,
    /// Crossbeam keeps queued messages until both sides are gone, so a request queued after
    /// the core stopped would never be answered. The handle drops such requests itself,
    /// through this receiver, once it sees the core closed.
    rx: crossbeam_channel::Receiver<core::Request>,
    shared: Arc<Shared>,
    capacity: usize,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.tx.take();
        self.shared.wake.notify_one();
    }
}

impl SeaweedHandle {
    fn submit(&self, request: core::Request) -> SeaweedResult<()> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(SeaweedError::Shutdown);
        }
        let tx = self
            .inner
            .tx
            .as_ref()
            .expect("sender lives as long as the handle");
        match tx.try_send(request) {
            Ok(()) => {
                fence(Ordering::SeqCst);
                if shared.closed.load(Ordering::SeqCst) {
                    // The core may have drained for the last time before this request went
                    // in: drop it (and any other late one) so that its caller hears `Shutdown`.
                    while self.inner.rx.try_recv().is_ok() {}
                } else {
                    shared.wake.notify_one();
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SeaweedError::Overloaded {
                capacity: self.inner.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(SeaweedError::Shutdown),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(core::Reply<T>) -> core::Request,
    ) -> SeaweedResult<T> {
        let (reply, answer) = oneshot::channel();
        self.submit(make(reply))?;
        answer.await.unwrap_or(Err(SeaweedError::Shutdown))
    }

    /// Creates `name` with `partitions` partitions, or changes its partition count.
    pub async fn configure_topic(&self, name: &str, partitions: i32) -> SeaweedResult<TopicConfig> {
        if partitions <= 0 || partitions > ring::RING_SIZE {
            return Err(SeaweedError::InvalidArgument(format!(
                "partition count {partitions} not in 1..={}",
                ring::RING_SIZE
            )));
        }
        let name = name.to_string();
        self.call(|reply| core::Request::ConfigureTopic {
            name,
            partitions,
            reply,
        })
        .await
    }

    /// Names of the topics in the Kafka namespace.
    pub async fn list_topics(&self) -> SeaweedResult<Vec<String>> {
        self.call(|reply| core::Request::ListTopics { reply }).await
    }

    pub async fn topic_exists(&self, name: &str) -> SeaweedResult<bool> {
        let name = name.to_string();
        self.call(|reply| core::Request::TopicExists { name, reply })
            .await
    }

    /// Partition count and which broker leads each partition.
    pub async fn topic_config(&self, name: &str) -> SeaweedResult<TopicConfig> {
        let name = name.to_string();
        self.call(|reply| core::Request::TopicConfig { name, reply })
            .await
    }

    /// Log start and high-water mark of one Kafka partition.
    pub async fn partition_range(
        &self,
        name: &str,
        kafka_partition: i32,
    ) -> SeaweedResult<PartitionRange> {
        let name = name.to_string();
        self.call(|reply| core::Request::PartitionRange {
            name,
            partition: kafka_partition,
            reply,
        })
        .await
    }

    /// Appends `records` to one Kafka partition and returns the offset the broker assigned to
    /// each, in order. Answers only when every record is acked. Records of concurrent callers
    /// may interleave with these in the log, so the offsets are increasing but need not be
    /// consecutive.
    pub async fn publish(
        &self,
        name: &str,
        kafka_partition: i32,
        records: Vec<Record>,
    ) -> SeaweedResult<Vec<i64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let name = name.to_string();
        self.call(|reply| core::Request::Publish {
            name,
            partition: kafka_partition,
            records,
            reply,
        })
        .await
    }

    /// Opens the partition's publish stream if it is not open, and keeps it open. A SeaweedMQ
    /// broker unloads a partition that has no publisher and no subscriber, and (4.44 to 4.53)
    /// forgets its offsets when it loads it again: new records are numbered from 0 while the
    /// old ones are still on disk. kelp therefore stays attached to every partition it serves.
    pub async fn attach(&self, name: &str, kafka_partition: i32) -> SeaweedResult<()> {
        let name = name.to_string();
        self.call(|reply| core::Request::Publish {
            name,
            partition: kafka_partition,
            records: Vec::new(),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Like [`Self::publish`], but the records are queued before this returns, so that two
    /// calls made one after the other reach the partition's stream in that order (the caller
    /// then awaits the answer). An `Err` means nothing was queued.
    pub fn publish_now(
        &self,
        name: &str,
        kafka_partition: i32,
        records: Vec<Record>,
    ) -> SeaweedResult<oneshot::Receiver<SeaweedResult<Vec<i64>>>> {
        let (reply, answer) = oneshot::channel();
        self.submit(core::Request::Publish {
            name: name.to_string(),
            partition: kafka_partition,
            records,
            reply,
        })?;
        Ok(answer)
    }

    /// Closes the partition's publish stream (the partition moved to another kelp).
    pub async fn detach(&self, name: &str, kafka_partition: i32) -> SeaweedResult<()> {
        let name = name.to_string();
        self.call(|reply| core::Request::Detach {
            name,
            partition: kafka_partition,
            reply,
        })
        .await
    }

    /// Takes or renews a lock in the filer (see [`filer::Filer::lock`]); every filer call
    /// here is bounded by `timeout`.
    pub async fn lock(
        &self,
        name: &str,
        seconds: i64,
        renew_token: &str,
        owner: &str,
        timeout: Duration,
    ) -> SeaweedResult<filer::LockAnswer> {
        let (name, renew_token, owner) =
            (name.to_string(), renew_token.to_string(), owner.to_string());
        self.filer_call(timeout, |reply| core::FilerCall::Lock {
            name,
            seconds,
            renew_token,
            owner,
            reply,
        })
        .await
    }

    /// Lets go of a lock held with `renew_token`.
    pub async fn unlock(
        &self,
        name: &str,
        renew_token: &str,
        timeout: Duration,
    ) -> SeaweedResult<()> {
        let (name, renew_token) = (name.to_string(), renew_token.to_string());
        self.filer_call(timeout, |reply| core::FilerCall::Unlock {
            name,
            renew_token,
            reply,
        })
        .await
    }

    /// Who holds a lock in the filer now (empty: nobody).
    pub async fn lock_owner(&self, name: &str, timeout: Duration) -> SeaweedResult<String> {
        let name = name.to_string();
        self.filer_call(timeout, |reply| core::FilerCall::LockOwner { name, reply })
            .await
    }

    /// Writes (or replaces) a small file in the filer.
    pub async fn put_entry(
        &self,
        directory: &str,
        name: &str,
        content: Bytes,
        timeout: Duration,
    ) -> SeaweedResult<()> {
        self.create_entry(directory, name, content, false, timeout)
            .await
            .map(|_| ())
    }

    /// Writes a small file in the filer; with `exclusive`, only if it does not exist yet.
    /// Whether it was written.
    pub async fn create_entry(
        &self,
        directory: &str,
        name: &str,
        content: Bytes,
        exclusive: bool,
        timeout: Duration,
    ) -> SeaweedResult<bool> {
        let (directory, name) = (directory.to_string(), name.to_string());
        self.filer_call(timeout, |reply| core::FilerCall::PutEntry {
            directory,
            name,
            content,
            exclusive,
            reply,
        })
        .await
    }

    /// The files of a filer directory (at most `limits::CLUSTER_MEMBERS_MAX`), with their
    /// contents.
    pub async fn list_entries(
        &self,
        directory: &str,
        timeout: Duration,
    ) -> SeaweedResult<Vec<(String, Bytes)>> {
        let limit = crate::config::limits::CLUSTER_MEMBERS_MAX as u32;
        self.list_entries_after(directory, "", limit, timeout).await
    }

    /// Up to `limit` files of a filer directory named after `start_after`, in name order,
    /// with their contents: a page of a directory too large to list at once.
    pub async fn list_entries_after(
        &self,
        directory: &str,
        start_after: &str,
        limit: u32,
        timeout: Duration,
    ) -> SeaweedResult<Vec<(String, Bytes)>> {
        let (directory, start_after) = (directory.to_string(), start_after.to_string());
        self.filer_call(timeout, |reply| core::FilerCall::ListEntries {
            directory,
            start_after,
            limit,
            reply,
        })
        .await
    }

    /// Removes a file from the filer.
    pub async fn delete_entry(
        &self,
        directory: &str,
        name: &str,
        timeout: Duration,
    ) -> SeaweedResult<()> {
        let (directory, name) = (directory.to_string(), name.to_string());
        self.filer_call(timeout, |reply| core::FilerCall::DeleteEntry {
            directory,
            name,
            reply,
        })
        .await
    }

    async fn filer_call<T>(
        &self,
        timeout: Duration,
        make: impl FnOnce(oneshot::Sender<SeaweedResult<T>>) -> core::FilerCall,
    ) -> SeaweedResult<T> {
        self.call(|reply| core::Request::Filer(make(reply), timeout))
            .await
    }

    /// Reads from `offset` up to `max_bytes` / `max_messages` (0 for the broker's defaults:
    /// 4 MiB, 100 messages). Never waits for data: long polling is the caller's.
    pub async fn fetch(
        &self,
        name: &str,
        kafka_partition: i32,
        offset: i64,
        max_bytes: i32,
        max_messages: i32,
    ) -> SeaweedResult<FetchResult> {
        let name = name.to_string();
        self.call(|reply| core::Request::Fetch {
            name,
            partition: kafka_partition,
            offset,
            max_bytes,
            max_messages,
            reply,
        })
        .await
    }

    /// Asks the core to stop: requests in flight are answered with [`SeaweedError::Shutdown`].
    pub fn shutdown(&self) {
        let _ = self.submit(core::Request::Shutdown);
    }

    /// The publishers' coalescing counters.
    pub fn publish_stats(&self) -> Arc<PublishStats> {
        self.inner.shared.stats.clone()
    }
}
