//! A partition on its owning shard: the log (through the storage seam), idempotent-producer
//! state, and the notifier that wakes fetches waiting for data. Everything here runs on the
//! owner only, so nothing is locked.

use crate::config::limits;
use crate::error::ErrorCode;
use crate::protocol::batch::{self, BatchInfo};
use crate::seaweedmq::{records as sw_records, SeaweedError, SeaweedHandle, SeaweedResult};
use crate::storage::seaweed::SeaweedLog;
use crate::storage::{AppendBatch, LogConfig, PartitionLog};
use crate::topics::TopicSettings;
use crate::util::Notify;
use bytes::Bytes;
use futures::channel::oneshot;
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

/// What a produce to one partition returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    pub fn error(error: ErrorCode, message: Option<String>) -> Self {
        ProduceOutcome {
            error,
            message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// What [`Partition::seaweed_submit`] did with a produce.
pub enum SeaweedSubmit {
    /// Answered at once (an error, or every batch a duplicate).
    Done(ProduceOutcome),
    /// Queued on the gRPC core: await the receiver, then [`Partition::seaweed_finish`].
    Pending(PendingProduce, oneshot::Receiver<SeaweedResult<Vec<i64>>>),
}

/// The batches of a produce waiting for SeaweedMQ's acks.
pub struct PendingProduce {
    batches: Vec<(Bytes, BatchInfo)>,
    log_append_time: Option<i64>,
}

/// The produce answer for a failed SeaweedMQ call.
pub fn seaweed_failure(e: &SeaweedError) -> ProduceOutcome {
    ProduceOutcome::error(ErrorCode::from_seaweed(e, true), Some(e.to_string()))
}

/// A batch remembered for duplicate detection.
#[derive(Debug, Clone, Copy)]
struct SeenBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    log_append_time_ms: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    /// The last batches appended, oldest first.
    batches: VecDeque<SeenBatch>,
    /// For least-recently-used eviction.
    last_used: u64,
}

pub struct Partition {
    pub topic_id: Uuid,
    pub log: PartitionLog,
    pub settings: TopicSettings,
    /// Woken on every append, for long-polling fetches.
    pub appended: Notify,
    producers: HashMap<i64, ProducerEntry>,
    producer_clock: u64,
}

enum SeqCheck {
    Append,
    Duplicate(SeenBatch),
}

impl Partition {
    pub fn new(topic_id: Uuid, settings: TopicSettings) -> Self {
        Partition {
            topic_id,
            log: PartitionLog::new_memory(log_config(&settings)),
            settings,
            appended: Notify::default(),
            producers: HashMap::new(),
            producer_clock: 0,
        }
    }

    /// A partition stored in SeaweedMQ; `cache_bytes` bounds the cache of what kelp published.
    pub fn new_seaweed(topic_id: Uuid, settings: TopicSettings, cache_bytes: usize) -> Self {
        Partition {
            log: PartitionLog::Seaweed(SeaweedLog::new(cache_bytes)),
            ..Partition::new(topic_id, settings)
        }
    }

    pub fn is_seaweed(&self) -> bool {
        matches!(self.log, PartitionLog::Seaweed(_))
    }

    pub fn seaweed_log(&mut self) -> Option<&mut SeaweedLog> {
        match &mut self.log {
            PartitionLog::Seaweed(s) => Some(s),
            _ => None,
        }
    }

    /// Validates a produce for a SeaweedMQ partition, checks idempotence, and queues its
    /// records on the gRPC core, all before returning, so that produces reach SeaweedMQ in the
    /// order the owner saw them. The caller awaits the answer and calls
    /// [`Self::seaweed_finish`].
    pub fn seaweed_submit(
        &mut self,
        handle: &SeaweedHandle,
        topic: &str,
        partition: i32,
        records: Option<&Bytes>,
        now_ms: i64,
    ) -> SeaweedSubmit {
        let batches = match self.validate(records) {
            Ok(b) => b,
            Err(o) => return SeaweedSubmit::Done(o),
        };
        let log_append_time = self.settings.log_append_time.then_some(now_ms);
        let mut to_send: Vec<(Bytes, BatchInfo)> = Vec::with_capacity(batches.len());
        let mut duplicate = None;
        let mut out = Vec::new();
        for (data, info) in batches {
            if info.producer_id >= 0 {
                match self.check_sequence(&info) {
                    Err(e) => {
                        self.forget(&to_send);
                        return SeaweedSubmit::Done(e);
                    }
                    Ok(SeqCheck::Duplicate(seen)) if seen.base_offset < 0 => {
                        // The original is still on its way to SeaweedMQ: its outcome decides.
                        self.forget(&to_send);
                        return SeaweedSubmit::Done(ProduceOutcome::error(
                            ErrorCode::RequestTimedOut,
                            Some("this batch is still being written to SeaweedMQ; retry".into()),
                        ));
                    }
                    Ok(SeqCheck::Duplicate(seen)) => {
                        duplicate = Some(seen);
                        continue;
                    }
                    Ok(SeqCheck::Append) => self.remember(&info, -1, -1),
                }
            }
            match sw_records::from_batch(
                &data,
                limits::BATCH_DECOMPRESSED_BYTES_MAX,
                log_append_time,
            ) {
                Ok(r) => out.extend(r),
                Err(e) => {
                    to_send.push((data, info));
                    self.forget(&to_send);
                    return SeaweedSubmit::Done(ProduceOutcome::error(
                        ErrorCode::from(&e),
                        Some(e.to_string()),
                    ));
                }
            }
            to_send.push((data, info));
        }
        if to_send.is_empty() {
            let seen = duplicate.expect("every batch was a duplicate");
            return SeaweedSubmit::Done(ProduceOutcome {
                error: ErrorCode::None,
                message: None,
                base_offset: seen.base_offset,
                log_append_time_ms: seen.log_append_time_ms,
                log_start_offset: self.log.log_start_offset(),
            });
        }
        match handle.publish_now(topic, partition, out) {
            Ok(answer) => {
                if let Some(log) = self.seaweed_log() {
                    for _ in &to_send {
                        log.publish_started();
                    }
                }
                SeaweedSubmit::Pending(
                    PendingProduce {
                        batches: to_send,
                        log_append_time,
                    },
                    answer,
                )
            }
            Err(e) => {
                self.forget(&to_send);
                SeaweedSubmit::Done(seaweed_failure(&e))
            }
        }
    }

    /// Completes a produce queued by [`Self::seaweed_submit`] with the gRPC core's answer.
    pub fn seaweed_finish(
        &mut self,
        pending: PendingProduce,
        result: SeaweedResult<Vec<i64>>,
    ) -> ProduceOutcome {
        let expected: usize = pending
            .batches
            .iter()
            .map(|(_, i)| i.records_count as usize)
            .sum();
        let offsets = match result {
            Ok(o) if o.len() == expected => o,
            other => {
                self.forget(&pending.batches);
                if let Some(log) = self.seaweed_log() {
                    for _ in &pending.batches {
                        log.publish_done(None);
                    }
                }
                return match other {
                    Err(e) => seaweed_failure(&e),
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
        for (data, info) in &pending.batches {
            let n = info.records_count as usize;
            let offs = &offsets[at..at + n];
            at += n;
            let base = offs[0];
            first_base.get_or_insert(base);
            if info.producer_id >= 0 {
                self.set_seen_base(info, base, append_time);
            }
            let consecutive = offs.windows(2).all(|w| w[1] == w[0] + 1);
            let acked =
                consecutive.then(|| (batch::stamp(data, base, pending.log_append_time), n as i64));
            if let Some(log) = self.seaweed_log() {
                log.publish_done(acked);
            }
        }
        self.appended.notify_all();
        ProduceOutcome {
            error: ErrorCode::None,
            message: None,
            base_offset: first_base.unwrap_or(-1),
            log_append_time_ms: append_time,
            log_start_offset: self.log.log_start_offset(),
        }
    }

    /// Drops the remembered batches of failed publishes (and any later ones of the same
    /// producer), so that the client's retry is appended rather than taken for a duplicate.
    fn forget(&mut self, batches: &[(Bytes, BatchInfo)]) {
        for (_, info) in batches.iter().filter(|(_, i)| i.producer_id >= 0) {
            if let Some(entry) = self.producers.get_mut(&info.producer_id) {
                if let Some(pos) = entry
                    .batches
                    .iter()
                    .position(|b| b.first_seq == info.base_sequence && b.base_offset < 0)
                {
                    entry.batches.truncate(pos);
                }
            }
        }
    }

    fn set_seen_base(&mut self, info: &BatchInfo, base_offset: i64, log_append_time_ms: i64) {
        if let Some(entry) = self.producers.get_mut(&info.producer_id) {
            if let Some(b) = entry
                .batches
                .iter_mut()
                .find(|b| b.first_seq == info.base_sequence && b.base_offset < 0)
            {
                b.base_offset = base_offset;
                b.log_append_time_ms = log_append_time_ms;
            }
        }
    }

    pub fn set_settings(&mut self, settings: TopicSettings) {
        if settings != self.settings {
            self.settings = settings;
            self.log.set_config(log_config(&settings));
        }
    }

    /// Splits and validates the batches of one produce partition (CRC, codec, framing, size,
    /// no transactions).
    fn validate(&self, records: Option<&Bytes>) -> Result<Vec<(Bytes, BatchInfo)>, ProduceOutcome> {
        let Some(records) = records.filter(|r| !r.is_empty()) else {
            return Err(ProduceOutcome::error(
                ErrorCode::CorruptMessage,
                Some("no record batch".into()),
            ));
        };
        let batches = batch::split_and_validate(records, limits::BATCH_DECOMPRESSED_BYTES_MAX)
            .map_err(|e| ProduceOutcome::error(ErrorCode::from(&e), Some(e.to_string())))?;
        for (data, info) in &batches {
            if data.len() > self.settings.max_message_bytes {
                return Err(ProduceOutcome::error(
                    ErrorCode::MessageTooLarge,
                    Some(format!(
                        "batch of {} bytes exceeds max.message.bytes {}",
                        data.len(),
                        self.settings.max_message_bytes
                    )),
                ));
            }
            if info.transactional {
                return Err(ProduceOutcome::error(
                    ErrorCode::InvalidTxnState,
                    Some("transactions are not supported".into()),
                ));
            }
        }
        Ok(batches)
    }

    /// Validates and appends the batches of one produce partition.
    pub fn produce(&mut self, records: Option<&Bytes>, now_ms: i64) -> ProduceOutcome {
        let batches = match self.validate(records) {
            Ok(b) => b,
            Err(o) => return o,
        };
        // Idempotence: Kafka clients send one batch per partition per request; a request with
        // several batches is checked batch by batch against the state the earlier ones left.
        let log_append_time = self.settings.log_append_time.then_some(now_ms);
        let mut to_append = Vec::with_capacity(batches.len());
        let mut next = self.log.next_offset();
        let mut first_base = None;
        let mut duplicate = None;
        for (data, info) in &batches {
            if info.producer_id >= 0 {
                match self.check_sequence(info) {
                    Err(e) => return e,
                    Ok(SeqCheck::Duplicate(seen)) => {
                        duplicate = Some(seen);
                        continue;
                    }
                    Ok(SeqCheck::Append) => {}
                }
            }
            let stamped = batch::stamp(data, next, log_append_time);
            first_base.get_or_insert(next);
            if info.producer_id >= 0 {
                self.remember(info, next, log_append_time.unwrap_or(-1));
            }
            to_append.push(AppendBatch {
                data: stamped,
                records_count: info.records_count,
                max_timestamp: log_append_time.unwrap_or(info.max_timestamp),
            });
            next += info.records_count as i64;
        }
        if to_append.is_empty() {
            let seen = duplicate.expect("every batch was a duplicate");
            return ProduceOutcome {
                error: ErrorCode::None,
                message: None,
                base_offset: seen.base_offset,
                log_append_time_ms: seen.log_append_time_ms,
                log_start_offset: self.log.log_start_offset(),
            };
        }
        match self.log.append(to_append, now_ms) {
            Ok(a) => {
                self.appended.notify_all();
                ProduceOutcome {
                    error: ErrorCode::None,
                    message: None,
                    base_offset: first_base.unwrap_or(a.base_offset),
                    log_append_time_ms: log_append_time.unwrap_or(-1),
                    log_start_offset: a.log_start_offset,
                }
            }
            Err(e) => ProduceOutcome::error(e, None),
        }
    }

    fn check_sequence(&mut self, info: &BatchInfo) -> Result<SeqCheck, ProduceOutcome> {
        let Some(entry) = self.producers.get(&info.producer_id) else {
            // A producer new to this partition starts at sequence 0.
            if info.base_sequence == 0 {
                return Ok(SeqCheck::Append);
            }
            return Err(ProduceOutcome::error(
                ErrorCode::OutOfOrderSequenceNumber,
                Some(format!(
                    "producer {} is new to this partition but sent sequence {}",
                    info.producer_id, info.base_sequence
                )),
            ));
        };
        if info.producer_epoch < entry.epoch {
            return Err(ProduceOutcome::error(
                ErrorCode::InvalidProducerEpoch,
                Some(format!(
                    "producer epoch {} is older than {}",
                    info.producer_epoch, entry.epoch
                )),
            ));
        }
        if info.producer_epoch > entry.epoch {
            if info.base_sequence == 0 {
                return Ok(SeqCheck::Append);
            }
            return Err(ProduceOutcome::error(
                ErrorCode::OutOfOrderSequenceNumber,
                Some(format!(
                    "a new producer epoch must start at sequence 0, not {}",
                    info.base_sequence
                )),
            ));
        }
        let last_seq = info.last_sequence();
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == info.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate(*seen));
        }
        let expected = entry
            .batches
            .back()
            .map(|b| {
                if b.last_seq == i32::MAX {
                    0
                } else {
                    b.last_seq + 1
                }
            })
            .unwrap_or(0);
        if info.base_sequence != expected {
            return Err(ProduceOutcome::error(
                ErrorCode::OutOfOrderSequenceNumber,
                Some(format!(
                    "expected sequence {expected}, got {}",
                    info.base_sequence
                )),
            ));
        }
        Ok(SeqCheck::Append)
    }

    fn remember(&mut self, info: &BatchInfo, base_offset: i64, log_append_time_ms: i64) {
        self.producer_clock += 1;
        let clock = self.producer_clock;
        if !self.producers.contains_key(&info.producer_id)
            && self.producers.len() >= limits::PRODUCERS_PER_PARTITION_MAX
        {
            if let Some((&oldest, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_used) {
                self.producers.remove(&oldest);
            }
        }
        let entry = self
            .producers
            .entry(info.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: info.producer_epoch,
                batches: VecDeque::new(),
                last_used: clock,
            });
        if info.producer_epoch != entry.epoch {
            entry.epoch = info.producer_epoch;
            entry.batches.clear();
        }
        entry.last_used = clock;
        if entry.batches.len() == limits::PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(SeenBatch {
            first_seq: info.base_sequence,
            last_seq: info.last_sequence(),
            base_offset,
            log_append_time_ms,
        });
    }
}

fn log_config(s: &TopicSettings) -> LogConfig {
    LogConfig {
        retention_bytes: s.retention_bytes,
        retention_ms: s.retention_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests_support::build_batch;

    fn settings() -> TopicSettings {
        TopicSettings {
            retention_bytes: -1,
            retention_ms: -1,
            max_message_bytes: 1 << 20,
            log_append_time: false,
        }
    }

    /// A batch from producer `pid`/`epoch` starting at `seq`, with a valid CRC.
    fn idem_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
        let recs: Vec<(&[u8], &[u8])> = (0..n).map(|_| (&b"k"[..], &b"v"[..])).collect();
        let mut b = build_batch(&recs, 0);
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn duplicates_get_their_original_offset_and_gaps_are_refused() {
        let mut p = Partition::new(Uuid::nil(), settings());
        let a = p.produce(Some(&idem_batch(7, 0, 0, 3)), 0);
        assert_eq!((a.error, a.base_offset), (ErrorCode::None, 0));
        let b = p.produce(Some(&idem_batch(7, 0, 3, 2)), 0);
        assert_eq!((b.error, b.base_offset), (ErrorCode::None, 3));
        // A retry of the first batch: same offset, nothing appended.
        let dup = p.produce(Some(&idem_batch(7, 0, 0, 3)), 0);
        assert_eq!((dup.error, dup.base_offset), (ErrorCode::None, 0));
        assert_eq!(p.log.next_offset(), 5);
        let gap = p.produce(Some(&idem_batch(7, 0, 9, 1)), 0);
        assert_eq!(gap.error, ErrorCode::OutOfOrderSequenceNumber);
        let old = p.produce(Some(&idem_batch(7, -1, 5, 1)), 0);
        assert_eq!(old.error, ErrorCode::InvalidProducerEpoch);
        let bumped = p.produce(Some(&idem_batch(7, 1, 0, 1)), 0);
        assert_eq!((bumped.error, bumped.base_offset), (ErrorCode::None, 5));
    }

    #[test]
    fn too_large_and_corrupt_batches_are_refused() {
        let mut s = settings();
        s.max_message_bytes = 10;
        let mut p = Partition::new(Uuid::nil(), s);
        let r = p.produce(Some(&idem_batch(-1, -1, -1, 1)), 0);
        assert_eq!(r.error, ErrorCode::MessageTooLarge);
        let mut p = Partition::new(Uuid::nil(), settings());
        let mut bad = idem_batch(-1, -1, -1, 1).to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let r = p.produce(Some(&Bytes::from(bad)), 0);
        assert_eq!(r.error, ErrorCode::CorruptMessage);
    }
}
