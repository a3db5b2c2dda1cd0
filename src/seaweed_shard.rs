//! What a shard does for partitions stored in SeaweedMQ: produce, fetch and offset lookups as
//! calls to the gRPC core (`crate::seaweedmq`), and, on shard 0, keeping the topic table in
//! line with the topics SeaweedMQ has.
//!
//! Answers from the gRPC core complete `futures` oneshots on a foreign thread, and a foreign
//! thread must not wake glommio tasks: glommio 0.9 sees such wake-ups only when it polls
//! io_uring (once per preemption interval while a shard spins), and under load they corrupted
//! a task's waker count ("Waker invariant broken"). So every wait here goes through
//! [`Shard::grpc`], which polls the answer with a no-op waker whenever the shard's spinner
//! pokes it: on each turn, and every `PARKED_GRPC_CHECK_US` while the shard is parked.

use crate::config::limits;
use crate::error::ErrorCode;
use crate::partition::{ProduceOutcome, SeaweedSubmit};
use crate::seaweedmq::{records, SeaweedError, SeaweedHandle, SeaweedResult};
use crate::shard::{Applied, PartitionOp, PartitionReply, Shard, TopicPartition};
use crate::storage::{
    OffsetAndTimestamp, ReadResult, EARLIEST_LOCAL_TIMESTAMP, EARLIEST_TIMESTAMP,
    LATEST_TIERED_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP,
};
use crate::topics::{RegistryError, TopicMeta};
use crate::util::now_ms;
use futures::channel::oneshot;
use futures::FutureExt;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// SeaweedMQ topics kelp keeps for itself (hidden from Kafka clients) start with this.
pub const INTERNAL_TOPIC_PREFIX: &str = "__kelp_";

/// A stable topic id for a SeaweedMQ topic, derived from its name, so that it survives kelp
/// restarts and is the same on every kelp in front of the same SeaweedMQ.
pub fn topic_id_for(name: &str) -> uuid::Uuid {
    let mut a: u64 = 0xcbf29ce484222325;
    let mut b: u64 = 0x84222325cbf29ce4;
    for &c in name.as_bytes() {
        a = (a ^ c as u64).wrapping_mul(0x100000001b3);
        b = (b ^ c as u64).wrapping_mul(0x0100_0193_0000_01b3);
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    // Version 8 (custom) and the RFC variant bits, so it reads as a proper UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

impl Shard {
    /// Awaits a gRPC core answer (see the module notes). The future is polled with a waker
    /// that never reaches glommio: the gRPC thread completing an answer must not wake a glommio
    /// task from a foreign thread (in glommio 0.9 that broke a task's waker count and
    /// panicked the shard). The shard's spinner pokes the waiting tasks instead, on every turn
    /// while any wait, and a parked shard wakes every `PARKED_GRPC_CHECK_US` to do so.
    pub(crate) async fn grpc<F: Future>(self: &Rc<Self>, fut: F) -> F::Output {
        struct Waiting<'a>(&'a Shard);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.grpc_waiting.set(self.0.grpc_waiting.get() - 1);
            }
        }
        self.grpc_waiting.set(self.grpc_waiting.get() + 1);
        if self.grpc_waiting.get() == 1 {
            self.grpc_started.notify_all();
        }
        let _waiting = Waiting(self);
        futures::pin_mut!(fut);
        let noop = futures::task::noop_waker();
        loop {
            let poke = self.grpc_poke.notified();
            let mut cx = std::task::Context::from_waker(&noop);
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            poke.await;
        }
    }

    fn handle(&self) -> SeaweedHandle {
        self.seaweed.clone().expect("SeaweedMQ backend")
    }

    /// A partition op, answered at once or after a SeaweedMQ call.
    pub(crate) fn apply_any(self: &Rc<Self>, tp: TopicPartition, op: PartitionOp) -> Applied {
        let Some(handle) = &self.seaweed else {
            return Applied::Now(self.apply(&tp, op));
        };
        let mut partitions = self.partitions.borrow_mut();
        let Some(p) = partitions.get_mut(&tp).filter(|p| p.is_seaweed()) else {
            drop(partitions);
            return Applied::Now(self.apply(&tp, op));
        };
        match op {
            PartitionOp::Produce { records } => {
                match p.seaweed_submit(handle, &tp.topic, tp.partition, records.as_ref(), now_ms())
                {
                    SeaweedSubmit::Done(o) => Applied::Now(PartitionReply::Produce(o)),
                    SeaweedSubmit::Pending(pending, answer) => {
                        drop(partitions);
                        let this = self.clone();
                        Applied::Later(
                            async move {
                                let result = this
                                    .grpc(answer)
                                    .await
                                    .unwrap_or(Err(SeaweedError::Shutdown));
                                let mut partitions = this.partitions.borrow_mut();
                                PartitionReply::Produce(match partitions.get_mut(&tp) {
                                    Some(p) => p.seaweed_finish(pending, result),
                                    None => ProduceOutcome::error(
                                        ErrorCode::UnknownTopicOrPartition,
                                        None,
                                    ),
                                })
                            }
                            .boxed_local(),
                        )
                    }
                }
            }
            PartitionOp::Read {
                offset,
                max_bytes,
                at_least_one,
            } => {
                let log = p.seaweed_log().expect("checked");
                if let Some(r) = log.read_cached(offset, max_bytes, at_least_one) {
                    return Applied::Now(PartitionReply::Read(Ok(r)));
                }
                drop(partitions);
                let this = self.clone();
                Applied::Later(
                    async move { PartitionReply::Read(this.seaweed_read(&tp, offset, max_bytes).await) }
                        .boxed_local(),
                )
            }
            PartitionOp::ListOffset { timestamp } => {
                drop(partitions);
                let this = self.clone();
                Applied::Later(
                    async move {
                        PartitionReply::ListOffset(this.seaweed_list_offset(&tp, timestamp).await)
                    }
                    .boxed_local(),
                )
            }
            PartitionOp::EndOffset => {
                drop(partitions);
                let this = self.clone();
                Applied::Later(
                    async move {
                        PartitionReply::EndOffset(
                            this.seaweed_range(&tp)
                                .await
                                .map_err(|e| ErrorCode::from_seaweed(&e, false)),
                        )
                    }
                    .boxed_local(),
                )
            }
            PartitionOp::Attach => {
                drop(partitions);
                let this = self.clone();
                Applied::Later(
                    async move {
                        let handle = this.handle();
                        PartitionReply::Attached(
                            this.grpc(handle.attach(&tp.topic, tp.partition))
                                .await
                                .map_err(|e| ErrorCode::from_seaweed(&e, false)),
                        )
                    }
                    .boxed_local(),
                )
            }
            op @ PartitionOp::DeleteRecords { .. } => {
                drop(partitions);
                Applied::Now(self.apply(&tp, op))
            }
        }
    }

    /// Log start and high-water mark from the broker, remembered by the partition.
    async fn seaweed_range(self: &Rc<Self>, tp: &TopicPartition) -> SeaweedResult<(i64, i64)> {
        let handle = self.handle();
        let r = self
            .grpc(handle.partition_range(&tp.topic, tp.partition))
            .await?;
        Ok((
            r.earliest.max(0),
            self.observe_range(tp, r.earliest, r.high_water_mark),
        ))
    }

    /// Tells the partition what the broker said of its range; returns the high-water mark
    /// as the partition now knows it.
    fn observe_range(&self, tp: &TopicPartition, log_start: i64, high_watermark: i64) -> i64 {
        let mut partitions = self.partitions.borrow_mut();
        match partitions.get_mut(tp).and_then(|p| p.seaweed_log()) {
            Some(log) => {
                log.observe_range(log_start, high_watermark);
                log.high_watermark()
            }
            None => high_watermark,
        }
    }

    /// Reads from SeaweedMQ what the cache does not hold, as one uncompressed batch.
    async fn seaweed_read(
        self: &Rc<Self>,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult, ErrorCode> {
        let handle = self.handle();
        let max_bytes = max_bytes.clamp(1, i32::MAX as usize) as i32;
        let fetched = self
            .grpc(handle.fetch(
                &tp.topic,
                tp.partition,
                offset,
                max_bytes,
                limits::SEAWEEDMQ_FETCH_MESSAGES_MAX,
            ))
            .await;
        match fetched {
            Ok(f) => {
                let log_start = f.log_start.max(0);
                let mut hw = self.observe_range(tp, log_start, f.high_water_mark);
                let mut out = ReadResult {
                    high_watermark: hw,
                    log_start_offset: log_start,
                    ..ReadResult::default()
                };
                if !f.messages.is_empty() {
                    let recs: Vec<_> = f.messages.iter().map(records::decode).collect();
                    hw = hw.max(offset + recs.len() as i64);
                    let batch = records::to_batch(offset, &recs);
                    out.high_watermark = hw;
                    out.bytes = batch.len();
                    out.batches.push(batch);
                }
                Ok(out)
            }
            Err(SeaweedError::OffsetOutOfRange {
                log_start,
                high_water_mark,
                ..
            }) => {
                self.observe_range(tp, log_start, high_water_mark);
                Err(ErrorCode::OffsetOutOfRange)
            }
            Err(e) => {
                log::debug!("fetch {}[{}] at {offset}: {e}", tp.topic, tp.partition);
                Err(ErrorCode::from_seaweed(&e, false))
            }
        }
    }

    /// The timestamp of the record at `offset`, or `None` past the end.
    async fn seaweed_timestamp_at(
        self: &Rc<Self>,
        tp: &TopicPartition,
        offset: i64,
    ) -> SeaweedResult<Option<i64>> {
        let handle = self.handle();
        let f = self
            .grpc(handle.fetch(&tp.topic, tp.partition, offset, 1, 1))
            .await?;
        Ok(f.messages.first().map(|m| records::decode(m).timestamp_ms))
    }

    /// ListOffsets on SeaweedMQ: earliest and latest from the broker's range; a timestamp by
    /// binary search over the records' timestamps (SeaweedMQ keeps no time index; timestamps
    /// are taken to grow with offsets, as Kafka's own index assumes per segment).
    async fn seaweed_list_offset(
        self: &Rc<Self>,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<OffsetAndTimestamp, ErrorCode> {
        let err = |e: SeaweedError| ErrorCode::from_seaweed(&e, false);
        let (start, end) = self.seaweed_range(tp).await.map_err(err)?;
        let none = OffsetAndTimestamp {
            offset: -1,
            timestamp: -1,
        };
        match timestamp {
            EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok(OffsetAndTimestamp {
                offset: start,
                timestamp: -1,
            }),
            LATEST_TIMESTAMP | LATEST_TIERED_TIMESTAMP => Ok(OffsetAndTimestamp {
                offset: end,
                timestamp: -1,
            }),
            MAX_TIMESTAMP => {
                if end <= start {
                    return Ok(none);
                }
                match self.seaweed_timestamp_at(tp, end - 1).await.map_err(err)? {
                    Some(ts) => Ok(OffsetAndTimestamp {
                        offset: end - 1,
                        timestamp: ts,
                    }),
                    None => Ok(none),
                }
            }
            ts if ts >= 0 => {
                let (mut lo, mut hi) = (start, end);
                let mut found = None;
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match self.seaweed_timestamp_at(tp, mid).await.map_err(err)? {
                        Some(t) if t >= ts => {
                            found = Some((mid, t));
                            hi = mid;
                        }
                        Some(_) => lo = mid + 1,
                        None => hi = mid,
                    }
                }
                Ok(
                    found.map_or(none, |(offset, timestamp)| OffsetAndTimestamp {
                        offset,
                        timestamp,
                    }),
                )
            }
            _ => Ok(none),
        }
    }

    /// Shard 0: a topic SeaweedMQ has, as a table entry (id derived from the name).
    pub(crate) async fn seaweed_adopt(
        self: &Rc<Self>,
        name: &str,
    ) -> SeaweedResult<Option<Arc<TopicMeta>>> {
        let handle = self.handle();
        if !self.grpc(handle.topic_exists(name)).await? {
            return Ok(None);
        }
        let config = self.grpc(handle.topic_config(name)).await?;
        let meta = {
            let registry = self.registry.as_ref().expect("shard 0");
            let mut r = registry.borrow_mut();
            r.adopt(name, topic_id_for(name), config.partition_count)
        };
        let table = self.registry.as_ref().expect("shard 0").borrow().snapshot();
        self.install_everywhere(table).await;
        Ok(Some(meta))
    }

    /// Shard 0: creates a topic in SeaweedMQ, then in the table. A topic SeaweedMQ already
    /// has (made by another gateway, or by kelp before a restart) is adopted and reported as
    /// existing.
    pub(crate) async fn seaweed_create(
        self: &Rc<Self>,
        name: &str,
        partitions: i32,
    ) -> Result<(), RegistryError> {
        let fail = |e: SeaweedError| RegistryError {
            code: if e.is_retriable() {
                ErrorCode::RequestTimedOut
            } else {
                ErrorCode::from_seaweed(&e, false)
            },
            message: format!("SeaweedMQ: {e}"),
        };
        if partitions > limits::SEAWEEDMQ_PARTITIONS_MAX {
            return Err(RegistryError {
                code: ErrorCode::InvalidPartitions,
                message: format!(
                    "SeaweedMQ topics have at most {} partitions",
                    limits::SEAWEEDMQ_PARTITIONS_MAX
                ),
            });
        }
        if let Some(meta) = self.seaweed_adopt(name).await.map_err(fail)? {
            return Err(RegistryError {
                code: ErrorCode::TopicAlreadyExists,
                message: format!(
                    "topic {name:?} already exists in SeaweedMQ ({} partitions)",
                    meta.partitions
                ),
            });
        }
        let handle = self.handle();
        self.grpc(handle.configure_topic(name, partitions))
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Shard 0, at start: loads every Kafka topic SeaweedMQ has into the table, retrying with
    /// backoff while SeaweedMQ is unreachable.
    pub(crate) async fn seaweed_load_topics(self: &Rc<Self>) {
        let handle = self.handle();
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.stopping.get() {
                return;
            }
            match self.grpc(handle.list_topics()).await {
                Ok(names) => {
                    let mut loaded = 0;
                    let mut failed = false;
                    for name in names.iter().filter(|n| !n.starts_with(INTERNAL_TOPIC_PREFIX)) {
                        if crate::topics::validate_topic_name(name).is_err() {
                            log::warn!("SeaweedMQ topic {name:?} is not a valid Kafka topic name; not served");
                            continue;
                        }
                        match self.seaweed_adopt(name).await {
                            Ok(Some(_)) => loaded += 1,
                            Ok(None) => {}
                            Err(e) => {
                                log::warn!("loading SeaweedMQ topic {name:?}: {e}");
                                failed = true;
                            }
                        }
                    }
                    if !failed {
                        // Hold every partition open before saying so: another kelp may be
                        // about to stop (a rolling restart), and SeaweedMQ must not see the
                        // partitions without a publisher in between.
                        let table = self.topics();
                        let ops: Vec<_> = table
                            .by_name
                            .values()
                            .flat_map(|m| {
                                (0..m.partitions).map(move |p| {
                                    (
                                        TopicPartition {
                                            topic: m.name.clone(),
                                            partition: p,
                                        },
                                        PartitionOp::Attach,
                                    )
                                })
                            })
                            .collect();
                        let total = ops.len() + 1;
                        let offsets_held = self
                            .grpc(handle.attach(crate::seaweed_offsets::OFFSETS_TOPIC, 0))
                            .await
                            .is_ok();
                        let held = self
                            .route(ops)
                            .await
                            .into_iter()
                            .filter(|r| matches!(r, PartitionReply::Attached(Ok(()))))
                            .count()
                            + usize::from(offsets_held);
                        log::info!(
                            "SeaweedMQ: serving {loaded} existing topics; holding {held} of their {total} partitions open (with the offsets topic)"
                        );
                        return;
                    }
                }
                Err(e) => log::warn!(
                    "SeaweedMQ not reachable yet ({e}); topics load when it is (retrying in {backoff:?})"
                ),
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

impl Shard {
    /// Keeps a publish stream open to every SeaweedMQ partition this shard owns (and, on shard
    /// 0, to the offsets topic), checking every `SEAWEEDMQ_ATTACH_CHECK_MS`. A SeaweedMQ
    /// broker unloads a partition as soon as its last publisher and subscriber leave, and
    /// SeaweedFS 4.44-4.53 can reload it with its offsets reset (see ARCHITECTURE.md).
    pub(crate) async fn seaweed_keep_attached(self: &Rc<Self>) {
        let handle = self.handle();
        let mut failing = false;
        loop {
            if self.stopping.get() {
                return;
            }
            let mut parts: Vec<(Arc<str>, i32)> = self
                .partitions
                .borrow()
                .iter()
                .filter(|(_, p)| p.is_seaweed())
                .map(|(tp, _)| (tp.topic.clone(), tp.partition))
                .collect();
            if self.id == 0 {
                parts.push((Arc::from(crate::seaweed_offsets::OFFSETS_TOPIC), 0));
            }
            let results = futures::future::join_all(
                parts.iter().map(|(t, p)| self.grpc(handle.attach(t, *p))),
            )
            .await;
            let errors: Vec<String> = parts
                .iter()
                .zip(&results)
                .filter_map(|((t, p), r)| r.as_ref().err().map(|e| format!("{t}[{p}]: {e}")))
                .collect();
            if !errors.is_empty() && !failing {
                log::warn!(
                    "shard {}: cannot hold {} SeaweedMQ partitions open (first: {}); retrying",
                    self.id,
                    errors.len(),
                    errors[0]
                );
            } else if errors.is_empty() && failing {
                log::info!("shard {}: SeaweedMQ partitions held open again", self.id);
            }
            failing = !errors.is_empty();
            self.pause(Duration::from_millis(limits::SEAWEEDMQ_ATTACH_CHECK_MS))
                .await;
        }
    }
}

/// Waits for a gRPC core answer given as a receiver (a dropped sender means shutdown).
pub(crate) async fn answer<T>(
    shard: &Rc<Shard>,
    rx: oneshot::Receiver<SeaweedResult<T>>,
) -> SeaweedResult<T> {
    shard.grpc(rx).await.unwrap_or(Err(SeaweedError::Shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_stable_and_distinct() {
        assert_eq!(topic_id_for("orders"), topic_id_for("orders"));
        assert_ne!(topic_id_for("orders"), topic_id_for("orders2"));
        assert_eq!(topic_id_for("a").get_version_num(), 8);
        assert!(!topic_id_for("").is_nil());
    }
}
