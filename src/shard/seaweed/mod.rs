//! What a shard does on the SeaweedMQ backend: partition ops as calls to the gRPC core
//! (`crate::seaweedmq`), topics kept in line with SeaweedMQ's, and committed offsets stored
//! there.
//!
//! - [`partition`]: a SeaweedMQ partition on its owner (produce in two halves), [`cache`]: what
//!   the owner knows of its range and the batches kelp published;
//! - [`read`]: fetch, ListOffsets and the partition's range from the broker;
//! - [`topics`]: create, load and adopt topics (shard 0), hold every partition open;
//! - [`offsets`]: committed offsets, stored per group in the filer ([`offset_entries`]) or,
//!   without one, in the topic [`OFFSETS_TOPIC`] (layouts in [`offset_records`]);
//! - [`serving`]: what this instance serves, in line with the cluster view;
//! - [`membership`]: the cluster's members, found in the filer (shard 0).
//!
//! Answers from the gRPC core complete `futures` oneshots on a foreign thread; every wait here
//! goes through [`Shard::foreign`], which the shard's spinner pokes.

pub mod cache;
mod membership;
mod offset_entries;
mod offset_records;
mod offsets;
pub mod partition;
mod producers;
mod read;
mod serving;
mod topics;

pub use serving::{group_key, offsets_partition};

use super::ops::{Applied, PartitionOp, PartitionReply};
use super::{Shard, TopicPartition};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::partition::ProduceOutcome;
use crate::seaweedmq::{SeaweedError, SeaweedHandle, SeaweedResult};
use crate::topics::TopicSettings;
use crate::util::now_ms;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::FutureExt;
use partition::{Role, SeaweedPartition, Submitted};
use serving::OffsetsPart;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// SeaweedMQ topics kelp keeps for itself (hidden from Kafka clients) start with this.
pub const INTERNAL_TOPIC_PREFIX: &str = "__kelp_";

/// The SeaweedMQ topic (namespace `kafka`) that holds committed offsets.
pub const OFFSETS_TOPIC: &str = "__kelp_consumer_offsets";

/// A shard's SeaweedMQ backend.
pub(crate) struct SeaweedShard {
    /// The gRPC core.
    pub handle: SeaweedHandle,
    /// The partitions this shard owns, led by this instance or not (see their `role`).
    pub partitions: RefCell<HashMap<TopicPartition, SeaweedPartition>>,
    /// The partitions of [`OFFSETS_TOPIC`] whose groups this instance serves: this shard's
    /// share of those groups is served once their commits are replayed.
    pub offsets: RefCell<HashMap<i32, OffsetsPart>>,
    /// Groups whose committed offsets are being written, each with the lock that puts their
    /// writes in line (`Shard::one_write_at_a_time`).
    pub group_writes: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// Shard 0: the offsets partitions whose publish streams it holds open.
    pub offsets_attached: RefCell<HashSet<i32>>,
    /// Counts partition terms (see `SeaweedPartition::incarnation`).
    incarnations: Cell<u64>,
    /// Topics a CreateTopics is making in SeaweedMQ right now (shard 0): until the registry
    /// has them, the topic refresh and lookups must not adopt them (the create would then
    /// find its own topic and answer TOPIC_ALREADY_EXISTS, without its configs).
    pub(super) creating: RefCell<std::collections::HashSet<String>>,
    /// When this shard last warned that the broker answered a read below its high-water mark
    /// with nothing (`Shard::seaweed_read`).
    pub(super) empty_read_warned: Cell<Option<std::time::Instant>>,
}

impl SeaweedShard {
    pub fn new(handle: SeaweedHandle) -> Self {
        SeaweedShard {
            handle,
            partitions: RefCell::default(),
            offsets: RefCell::default(),
            group_writes: RefCell::default(),
            offsets_attached: RefCell::default(),
            incarnations: Cell::new(0),
            creating: RefCell::default(),
            empty_read_warned: Cell::new(None),
        }
    }

    /// How a newly owned partition is made: idle until the cluster view lets this instance
    /// take it (`Shard::seaweed_apply_view`).
    pub fn partition_maker(
        &self,
        cache_bytes: usize,
    ) -> impl Fn(&crate::topics::TopicMeta, TopicSettings) -> SeaweedPartition {
        move |meta, settings| SeaweedPartition::new(meta.id, settings, cache_bytes, Role::Idle, 0)
    }
}

/// Starts the shard's SeaweedMQ tasks: loading topics and running the cluster membership
/// (shard 0), and holding its partitions open. Committed offsets are replayed when the view
/// gives this instance their offsets partitions.
pub(super) fn start(shard: &Rc<Shard>) {
    if shard.id == 0 {
        let loader = shard.clone();
        glommio::spawn_local(async move { loader.seaweed_load_topics().await }).detach();
        let cluster = shard.clone();
        glommio::spawn_local(async move { cluster.seaweed_run_cluster().await }).detach();
    }
    let keeper = shard.clone();
    glommio::spawn_local(async move { keeper.seaweed_keep_attached().await }).detach();
}

impl Shard {
    /// This shard's SeaweedMQ backend (only called on that backend).
    pub(crate) fn sw(&self) -> &SeaweedShard {
        match &self.backend {
            super::Backend::Seaweed(s) => s,
            super::Backend::Memory(_) => unreachable!("SeaweedMQ code runs on that backend only"),
        }
    }

    /// A partition op, answered at once or after a SeaweedMQ call.
    pub(super) fn seaweed_apply(self: &Rc<Self>, tp: TopicPartition, op: PartitionOp) -> Applied {
        let sw = self.sw();
        if !sw.partitions.borrow().contains_key(&tp) {
            return Applied::Now(PartitionReply::failed(
                &op,
                ErrorCode::UnknownTopicOrPartition,
            ));
        }
        if let Some(code) = self.not_served(&tp) {
            return Applied::Now(PartitionReply::failed(&op, code));
        }
        let this = self.clone();
        match op {
            PartitionOp::Produce { records } => self.seaweed_produce(tp, records),
            PartitionOp::Read {
                offset,
                max_bytes,
                at_least_one,
            } => {
                let cached = sw
                    .partitions
                    .borrow()
                    .get(&tp)
                    .and_then(|p| p.cache.read_cached(offset, max_bytes, at_least_one));
                match cached {
                    Some(r) => Applied::Now(PartitionReply::Read(Ok(r))),
                    None => later(async move {
                        PartitionReply::Read(this.seaweed_read(&tp, offset, max_bytes).await)
                    }),
                }
            }
            PartitionOp::ListOffset { timestamp } => later(async move {
                PartitionReply::ListOffset(this.seaweed_list_offset(&tp, timestamp).await)
            }),
            PartitionOp::EndOffset => later(async move {
                let range = this.seaweed_range(&tp).await;
                PartitionReply::EndOffset(range.map_err(|e| ErrorCode::from_seaweed(&e, false)))
            }),
            PartitionOp::Attach => later(async move {
                let handle = this.sw().handle.clone();
                let attached = this.foreign(handle.attach(&tp.topic, tp.partition)).await;
                PartitionReply::Attached(attached.map_err(|e| ErrorCode::from_seaweed(&e, false)))
            }),
            // SeaweedMQ has no call to drop a partition's head.
            PartitionOp::DeleteRecords { .. } => Applied::Now(PartitionReply::DeleteRecords(Err(
                ErrorCode::PolicyViolation,
            ))),
        }
    }

    /// Produce: queued on the gRPC core now, answered once SeaweedMQ acks every record. While
    /// the partition's idempotence table is being rebuilt from storage, produces wait for it in
    /// arrival order (answering them with a retriable error would let a producer's later batch
    /// overtake an earlier one's retry).
    fn seaweed_produce(self: &Rc<Self>, tp: TopicPartition, records: Option<Bytes>) -> Applied {
        let outcome = if self.producers_ready(&tp) {
            match self.submit_produce(&tp, records) {
                Ok(done) => return Applied::Now(PartitionReply::Produce(done)),
                Err(later) => later,
            }
        } else {
            let (tx, rx) = oneshot::channel();
            if let Err(full) = self.queue_produce(&tp, records, tx) {
                return Applied::Now(PartitionReply::Produce(full));
            }
            rx
        };
        later(async move {
            PartitionReply::Produce(
                outcome
                    .await
                    .unwrap_or_else(|_| ProduceOutcome::error(ErrorCode::UnknownServerError, None)),
            )
        })
    }

    /// Submits a produce to the gRPC core: `Ok` with an answer known at once, otherwise the
    /// receiver of the answer, which a task of its own applies, so that it is applied even if
    /// the client goes away meanwhile: the idempotence table must learn where the batch went
    /// (or that it failed) for the producer's retry to be answered right.
    pub(super) fn submit_produce(
        self: &Rc<Self>,
        tp: &TopicPartition,
        records: Option<Bytes>,
    ) -> Result<ProduceOutcome, oneshot::Receiver<ProduceOutcome>> {
        let sw = self.sw();
        let submitted = {
            let mut partitions = sw.partitions.borrow_mut();
            let Some(p) = partitions.get_mut(tp) else {
                return Ok(ProduceOutcome::error(
                    ErrorCode::UnknownTopicOrPartition,
                    None,
                ));
            };
            p.submit(
                &sw.handle,
                &tp.topic,
                tp.partition,
                records.as_ref(),
                now_ms(),
            )
        };
        let (pending, rx) = match submitted {
            Submitted::Done(o) => return Ok(o),
            Submitted::Pending(pending, rx) => (pending, rx),
        };
        let (tx, outcome) = oneshot::channel();
        let this = self.clone();
        let tp = tp.clone();
        glommio::spawn_local(async move {
            let result = answer(&this, rx).await;
            let mut partitions = this.sw().partitions.borrow_mut();
            let _ = tx.send(match partitions.get_mut(&tp) {
                Some(p) if p.incarnation == pending.incarnation => p.finish(pending, result),
                // Let go of meanwhile: the answer stands, the next term's state is not touched.
                _ => pending.outcome_after_leaving(result),
            });
        })
        .detach();
        Err(outcome)
    }

    /// Queues a produce until the partition's idempotence table is rebuilt; refuses it
    /// (retriable) when `SEAWEEDMQ_PRODUCES_WAITING_MAX` already wait.
    fn queue_produce(
        &self,
        tp: &TopicPartition,
        records: Option<Bytes>,
        tx: oneshot::Sender<ProduceOutcome>,
    ) -> Result<(), ProduceOutcome> {
        let mut partitions = self.sw().partitions.borrow_mut();
        let Some(p) = partitions.get_mut(tp) else {
            return Err(ProduceOutcome::error(
                ErrorCode::UnknownTopicOrPartition,
                None,
            ));
        };
        if p.waiting.len() >= limits::SEAWEEDMQ_PRODUCES_WAITING_MAX {
            return Err(ProduceOutcome::error(
                ErrorCode::NotEnoughReplicas,
                Some("kelp is still reading this partition's stored producer state".into()),
            ));
        }
        p.waiting.push_back((records, tx));
        Ok(())
    }
}

fn later(f: impl std::future::Future<Output = PartitionReply> + 'static) -> Applied {
    Applied::Later(f.boxed_local())
}

/// Waits for a gRPC core answer given as a receiver (a dropped sender means shutdown).
pub(crate) async fn answer<T>(
    shard: &Rc<Shard>,
    rx: oneshot::Receiver<SeaweedResult<T>>,
) -> SeaweedResult<T> {
    shard
        .foreign(rx)
        .await
        .unwrap_or(Err(SeaweedError::Shutdown))
}
