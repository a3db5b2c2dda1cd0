//! A SeaweedMQ partition on its owning shard: the same validation and idempotent-producer
//! state as a memory partition (`crate::partition`), a cache of what kelp published
//! ([`SeaweedCache`]), and the produce path in two halves: [`SeaweedPartition::submit`] queues
//! the records on the gRPC core before it returns (so produces reach SeaweedMQ in the order the
//! owner saw them), [`SeaweedPartition::finish`] applies SeaweedMQ's acks.

use super::cache::SeaweedCache;
use crate::config::limits;
use crate::error::ErrorCode;
use crate::partition::producers::{Producers, SeenBatch, SeqCheck};
use crate::partition::{validate, ProduceOutcome};
use crate::protocol::batch::{self, BatchInfo};
use crate::seaweedmq::records::{self, ProducerStamp};
use crate::seaweedmq::{Record, SeaweedError, SeaweedHandle, SeaweedResult};
use crate::shard::OwnedPartition;
use crate::topics::TopicSettings;
use crate::util::Notify;
use bytes::Bytes;
use futures::channel::oneshot;
use std::collections::VecDeque;
use uuid::Uuid;

/// What [`SeaweedPartition::submit`] did with a produce.
pub enum Submitted {
    /// Answered at once (an error, or every batch a duplicate).
    Done(ProduceOutcome),
    /// Queued on the gRPC core: await the receiver, then [`SeaweedPartition::finish`].
    Pending(PendingProduce, oneshot::Receiver<SeaweedResult<Vec<i64>>>),
}

/// The batches of a produce waiting for SeaweedMQ's acks.
pub struct PendingProduce {
    /// The partition's incarnation it was submitted to (see [`SeaweedPartition::incarnation`]).
    pub incarnation: u64,
    batches: Vec<(Bytes, BatchInfo)>,
    /// Per batch: a torn batch's stored head (its base offset, records stored), whose tail is
    /// all that was sent.
    heads: Vec<Option<(i64, usize)>>,
    log_append_time: Option<i64>,
}

/// An idempotent producer's batch of which only the first records are stored: kelp died
/// between publishing its records (SeaweedMQ stores them one by one). It is the last batch in
/// the log; its producer's retry sends only the rest, so the batch ends up whole and once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    pub stamp: ProducerStamp,
    /// The offset of its first record.
    pub base_offset: i64,
    /// How many of its records are stored.
    pub stored: usize,
}

/// A produce's batches after the idempotence check.
struct Prepared {
    /// The batches to publish (not duplicates), as the client sent them.
    to_send: Vec<(Bytes, BatchInfo)>,
    /// Per batch to publish: the stored head of a torn batch.
    heads: Vec<Option<(i64, usize)>>,
    /// Their records as SeaweedMQ messages.
    records: Vec<Record>,
    /// The last batch that was a retry of one already written.
    duplicate: Option<SeenBatch>,
}

impl PendingProduce {
    /// The answer for a produce whose partition was let go meanwhile: its offsets as the
    /// broker gave them, no state of a later term touched.
    pub fn outcome_after_leaving(&self, result: SeaweedResult<Vec<i64>>) -> ProduceOutcome {
        match result {
            Ok(offsets) if self.heads.iter().all(Option::is_none) && !offsets.is_empty() => {
                ProduceOutcome {
                    error: ErrorCode::None,
                    message: None,
                    record_errors: Vec::new(),
                    base_offset: offsets[0],
                    log_append_time_ms: self.log_append_time.unwrap_or(-1),
                    log_start_offset: -1,
                }
            }
            Ok(_) => ProduceOutcome::error(ErrorCode::NotLeaderOrFollower, None),
            Err(e) => failure(&e),
        }
    }
}

/// The produce answer for a failed SeaweedMQ call.
pub fn failure(e: &SeaweedError) -> ProduceOutcome {
    ProduceOutcome::error(ErrorCode::from_seaweed(e, true), Some(e.to_string()))
}

/// Whether a partition's idempotence table holds what its stored tail says (see
/// `super::producers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducersState {
    NotLoaded,
    Loading,
    Loaded,
}

/// Whether this kelp instance serves the partition (see `crate::cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another instance leads it (or nobody may yet): ops answer NOT_LEADER_OR_FOLLOWER.
    Idle,
    Serving,
    /// Letting go: its publisher finishes what it has in flight; ops answer as `Idle`.
    Leaving,
}

pub struct SeaweedPartition {
    pub topic_id: Uuid,
    pub role: Role,
    /// Changes every time the partition is let go, so that an answer for a produce submitted
    /// before is not applied to the state of a later term.
    pub incarnation: u64,
    pub settings: TopicSettings,
    /// Woken on every acked produce, for long-polling fetches.
    pub appended: Notify,
    /// What this shard knows of the partition's range, and what it published.
    pub cache: SeaweedCache,
    producers: Producers,
    /// Whether the idempotence table was rebuilt from storage since this shard took the
    /// partition.
    pub producers_state: ProducersState,
    /// The torn batch at the end of the log, found when the table was rebuilt.
    pub torn: Option<Torn>,
    /// Produces waiting for that, in arrival order, with where their answer goes.
    pub waiting: VecDeque<(Option<Bytes>, oneshot::Sender<ProduceOutcome>)>,
}

impl OwnedPartition for SeaweedPartition {
    fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    fn next_offset(&self) -> i64 {
        self.cache.high_watermark()
    }

    fn appended(&self) -> &Notify {
        &self.appended
    }

    fn set_settings(&mut self, settings: TopicSettings) {
        self.settings = settings;
    }
}

impl SeaweedPartition {
    /// `cache_bytes` bounds the cache of what kelp published (`--seaweedmq-cache-bytes`).
    /// A new partition is served at once when `role` says so.
    pub fn new(
        topic_id: Uuid,
        settings: TopicSettings,
        cache_bytes: usize,
        role: Role,
        incarnation: u64,
    ) -> Self {
        SeaweedPartition {
            topic_id,
            role,
            incarnation,
            settings,
            appended: Notify::default(),
            cache: SeaweedCache::new(cache_bytes),
            producers: Producers::default(),
            producers_state: ProducersState::NotLoaded,
            torn: None,
            waiting: VecDeque::new(),
        }
    }

    /// Takes in a batch found in the partition's stored tail, oldest first.
    pub fn restore(&mut self, stamp: &ProducerStamp, base_offset: i64) {
        let last = stamp.base_sequence as i64 + stamp.records.max(1) as i64 - 1;
        let seen = SeenBatch {
            first_seq: stamp.base_sequence,
            // Sequences wrap to 0 after i32::MAX, as Kafka's do.
            last_seq: (last % (i32::MAX as i64 + 1)) as i32,
            base_offset,
            log_append_time_ms: -1,
        };
        self.producers.restore(stamp.producer_id, stamp.epoch, seen);
    }

    /// Validates a produce, checks idempotence, and queues its records on the gRPC core, all
    /// before returning. The caller awaits the answer and calls [`Self::finish`].
    pub fn submit(
        &mut self,
        handle: &SeaweedHandle,
        topic: &str,
        partition: i32,
        records: Option<&Bytes>,
        now_ms: i64,
    ) -> Submitted {
        let batches = match validate(&self.settings, records) {
            Ok(b) => b,
            Err(o) => return Submitted::Done(o),
        };
        let log_append_time = self.settings.log_append_time.then_some(now_ms);
        let Prepared {
            to_send,
            heads,
            records: messages,
            duplicate,
        } = match self.prepare(batches, log_append_time) {
            Ok(prepared) => prepared,
            Err(o) => return Submitted::Done(o),
        };
        if to_send.is_empty() {
            let seen = duplicate.expect("every batch was a duplicate");
            return Submitted::Done(ProduceOutcome::duplicate(
                seen,
                self.cache.log_start_offset(),
            ));
        }
        match handle.publish_now(topic, partition, messages) {
            Ok(answer) => {
                for _ in &to_send {
                    self.cache.publish_started();
                }
                let pending = PendingProduce {
                    incarnation: self.incarnation,
                    batches: to_send,
                    heads,
                    log_append_time,
                };
                Submitted::Pending(pending, answer)
            }
            Err(e) => {
                self.producers.forget(&to_send);
                Submitted::Done(failure(&e))
            }
        }
    }

    /// Checks each batch's sequence and turns the new ones into SeaweedMQ records.
    fn prepare(
        &mut self,
        batches: Vec<(Bytes, BatchInfo)>,
        log_append_time: Option<i64>,
    ) -> Result<Prepared, ProduceOutcome> {
        let mut to_send: Vec<(Bytes, BatchInfo)> = Vec::with_capacity(batches.len());
        let mut heads = Vec::with_capacity(batches.len());
        let mut duplicate = None;
        let mut out = Vec::new();
        for (data, info) in batches {
            if info.producer_id >= 0 {
                match self.producers.check(&info) {
                    Err(e) => {
                        self.producers.forget(&to_send);
                        return Err(e);
                    }
                    Ok(SeqCheck::Duplicate(seen)) if seen.base_offset < 0 => {
                        // The original is still on its way to SeaweedMQ: its outcome decides.
                        self.producers.forget(&to_send);
                        return Err(ProduceOutcome::error(
                            ErrorCode::RequestTimedOut,
                            Some("this batch is still being written to SeaweedMQ; retry".into()),
                        ));
                    }
                    Ok(SeqCheck::Duplicate(seen)) => {
                        log::debug!(
                            "producer {} sequences {}..={}: a retry of the batch at offset {}",
                            info.producer_id,
                            info.base_sequence,
                            info.last_sequence(),
                            seen.base_offset
                        );
                        duplicate = Some(seen);
                        continue;
                    }
                    Ok(SeqCheck::Append) => self.producers.remember(&info, -1, -1),
                }
            }
            let head = if info.producer_id >= 0 {
                self.torn_head(&info)
            } else {
                None
            };
            let skip = head.map_or(0, |(_, stored)| stored);
            let converted = records::from_batch(
                &data,
                limits::BATCH_DECOMPRESSED_BYTES_MAX,
                log_append_time,
                skip,
            );
            to_send.push((data, info));
            heads.push(head);
            match converted {
                Ok(r) => out.extend(r),
                Err(e) => {
                    self.producers.forget(&to_send);
                    return Err(ProduceOutcome::error(
                        ErrorCode::from(&e),
                        Some(e.to_string()),
                    ));
                }
            }
        }
        Ok(Prepared {
            to_send,
            heads,
            records: out,
            duplicate,
        })
    }

    /// When `info` is the producer's retry of the torn batch at the end of the log: its stored
    /// head (base offset, records stored). The torn batch is completed only once.
    fn torn_head(&mut self, info: &BatchInfo) -> Option<(i64, usize)> {
        let t = self.torn?;
        let same = t.stamp.producer_id == info.producer_id
            && t.stamp.epoch == info.producer_epoch
            && t.stamp.base_sequence == info.base_sequence
            && t.stamp.records == info.records_count;
        if !same {
            return None;
        }
        self.torn = None;
        log::info!(
            "producer {} sequences {}+{}: {} of the batch's records were stored at offset {} \
             before kelp stopped; publishing the other {}",
            info.producer_id,
            info.base_sequence,
            info.records_count,
            t.stored,
            t.base_offset,
            info.records_count as usize - t.stored
        );
        Some((t.base_offset, t.stored))
    }

    /// Completes a produce queued by [`Self::submit`] with the gRPC core's answer.
    pub fn finish(
        &mut self,
        pending: PendingProduce,
        result: SeaweedResult<Vec<i64>>,
    ) -> ProduceOutcome {
        let expected: usize = pending
            .batches
            .iter()
            .zip(&pending.heads)
            .map(|((_, i), head)| i.records_count as usize - head.map_or(0, |(_, n)| n))
            .sum();
        let offsets = match result {
            Ok(o) if o.len() == expected => o,
            other => {
                self.producers.forget(&pending.batches);
                for _ in &pending.batches {
                    self.cache.publish_done(None);
                }
                return match other {
                    Err(e) => failure(&e),
                    Ok(o) => ProduceOutcome::error(
                        ErrorCode::UnknownServerError,
                        Some(format!("SeaweedMQ acked {} of {expected} records", o.len())),
                    ),
                };
            }
        };
        let append_time = pending.log_append_time.unwrap_or(-1);
        let mut at = 0;
        let mut first_base = None;
        for ((data, info), head) in pending.batches.iter().zip(&pending.heads) {
            let n = info.records_count as usize;
            let sent = n - head.map_or(0, |(_, stored)| stored);
            let offs = &offsets[at..at + sent];
            at += sent;
            let base = match head {
                Some((head_base, stored)) if offs[0] != head_base + *stored as i64 => {
                    // Another record came between the head and its tail: the batch is not
                    // contiguous, and its offsets cannot be told as one base.
                    log::error!(
                        "producer {}: the tail of a torn batch landed at offset {}, not right \
                         after its head ({head_base}+{stored}); the batch is stored in two parts",
                        info.producer_id,
                        offs[0]
                    );
                    self.producers
                        .forget(std::slice::from_ref(&(data.clone(), info.clone())));
                    return ProduceOutcome::error(ErrorCode::KafkaStorageError, None);
                }
                Some((head_base, _)) => *head_base,
                None => offs[0],
            };
            first_base.get_or_insert(base);
            if info.producer_id >= 0 {
                self.producers.set_base(info, base, append_time);
            }
            let consecutive = head.is_none() && offs.windows(2).all(|w| w[1] == w[0] + 1);
            let acked =
                consecutive.then(|| (batch::stamp(data, base, pending.log_append_time), n as i64));
            self.cache.publish_done(acked);
        }
        self.appended.notify_all();
        ProduceOutcome {
            error: ErrorCode::None,
            message: None,
            record_errors: Vec::new(),
            base_offset: first_base.unwrap_or(-1),
            log_append_time_ms: append_time,
            log_start_offset: self.cache.log_start_offset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests_support::build_batch;
    use crate::seaweedmq::{SeaweedCore, SeaweedOptions};

    fn idempotent(pid: i64, seq: i32, n: usize) -> Bytes {
        let recs: Vec<(&[u8], &[u8])> = (0..n).map(|_| (&b"k"[..], &b"v"[..])).collect();
        let mut b = build_batch(&recs, 0);
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn a_retry_of_a_batch_found_in_storage_gets_its_stored_offset() {
        // No broker behind it: a duplicate must be answered without one.
        let handle = SeaweedCore::start("127.0.0.1:1".into(), None, SeaweedOptions::default())
            .expect("gRPC core");
        let settings = TopicSettings {
            retention_bytes: -1,
            retention_ms: -1,
            max_message_bytes: 1 << 20,
            log_append_time: false,
            compacted: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
        };
        let mut p = SeaweedPartition::new(Uuid::nil(), settings, 1 << 20, Role::Serving, 0);
        let stamp = ProducerStamp {
            producer_id: 7,
            epoch: 0,
            base_sequence: 10,
            records: 3,
        };
        p.restore(&stamp, 40);
        match p.submit(&handle, "t", 0, Some(&idempotent(7, 10, 3)), 0) {
            Submitted::Done(o) => assert_eq!((o.error, o.base_offset), (ErrorCode::None, 40)),
            Submitted::Pending(..) => panic!("a stored batch was sent again"),
        }
        // The producer's next batch goes on to SeaweedMQ.
        assert!(matches!(
            p.submit(&handle, "t", 0, Some(&idempotent(7, 13, 1)), 0),
            Submitted::Pending(..)
        ));
        handle.shutdown();
    }

    #[test]
    fn a_torn_batch_is_completed_by_its_retry_not_stored_twice() {
        let handle = SeaweedCore::start("127.0.0.1:1".into(), None, SeaweedOptions::default())
            .expect("gRPC core");
        let settings = TopicSettings {
            retention_bytes: -1,
            retention_ms: -1,
            max_message_bytes: 1 << 20,
            log_append_time: false,
            compacted: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
        };
        let torn = Torn {
            stamp: ProducerStamp {
                producer_id: 7,
                epoch: 0,
                base_sequence: 10,
                records: 3,
            },
            base_offset: 40,
            stored: 1,
        };
        let mut p = SeaweedPartition::new(Uuid::nil(), settings, 1 << 20, Role::Serving, 0);
        p.torn = Some(torn);
        let (pending, _rx) = match p.submit(&handle, "t", 0, Some(&idempotent(7, 10, 3)), 0) {
            Submitted::Pending(pending, rx) => (pending, rx),
            Submitted::Done(o) => panic!("answered at once: {o:?}"),
        };
        assert_eq!(pending.heads, vec![Some((40, 1))], "only the tail is sent");
        // The tail lands right after the head: the whole batch is at 40.
        let done = p.finish(pending, Ok(vec![41, 42]));
        assert_eq!((done.error, done.base_offset), (ErrorCode::None, 40));
        // Its next retry is a duplicate of the completed batch.
        match p.submit(&handle, "t", 0, Some(&idempotent(7, 10, 3)), 0) {
            Submitted::Done(o) => assert_eq!(o.base_offset, 40),
            Submitted::Pending(..) => panic!("the completed batch was sent again"),
        }

        // A tail that does not land right after its head is not acknowledged.
        let mut p = SeaweedPartition::new(Uuid::nil(), settings, 1 << 20, Role::Serving, 0);
        p.torn = Some(torn);
        let Submitted::Pending(pending, _rx) =
            p.submit(&handle, "t", 0, Some(&idempotent(7, 10, 3)), 0)
        else {
            panic!("answered at once");
        };
        assert_eq!(
            p.finish(pending, Ok(vec![50, 51])).error,
            ErrorCode::KafkaStorageError
        );
        handle.shutdown();
    }
}
