//! A partition on its owning shard, on the embedded memory backend: the log, idempotent
//! producer state ([`producers`]), and the notifier that wakes fetches waiting for data.
//! Everything here runs on the owner only, so nothing is locked. The validation and the
//! producer table are shared with the SeaweedMQ backend's partitions
//! (`crate::shard::seaweed::partition`), which keep their records in SeaweedMQ instead.

pub mod producers;

use crate::config::limits;
use crate::error::ErrorCode;
use crate::protocol::batch::{self, BatchInfo};
use crate::storage::memory::MemoryLog;
use crate::storage::{AppendBatch, CompactionConfig, LogConfig};
use crate::topics::TopicSettings;
use crate::util::Notify;
use bytes::Bytes;
use producers::{Producers, SeenBatch, SeqCheck};
use uuid::Uuid;

/// What a produce to one partition returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub error: ErrorCode,
    pub message: Option<String>,
    /// The records (indexes in the partition's batches, counted across them) that made the
    /// batch invalid, answered as Produce v8+'s record errors (KIP-467).
    pub record_errors: Vec<i32>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    pub fn error(error: ErrorCode, message: Option<String>) -> Self {
        ProduceOutcome {
            error,
            message,
            record_errors: Vec::new(),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }

    /// The answer to a produce whose every batch was a retry of one already written.
    pub fn duplicate(seen: SeenBatch, log_start_offset: i64) -> Self {
        ProduceOutcome {
            error: ErrorCode::None,
            message: None,
            record_errors: Vec::new(),
            base_offset: seen.base_offset,
            log_append_time_ms: seen.log_append_time_ms,
            log_start_offset,
        }
    }
}

/// Splits and validates the batches of one produce partition (CRC, codec, framing, size, no
/// transactions), on either backend.
pub fn validate(
    settings: &TopicSettings,
    records: Option<&Bytes>,
) -> Result<Vec<(Bytes, BatchInfo)>, ProduceOutcome> {
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Err(ProduceOutcome::error(
            ErrorCode::CorruptMessage,
            Some("no record batch".into()),
        ));
    };
    let batches = batch::split_and_validate(records, limits::BATCH_DECOMPRESSED_BYTES_MAX)
        .map_err(|e| ProduceOutcome::error(ErrorCode::from(&e), Some(e.to_string())))?;
    for (data, info) in &batches {
        if data.len() > settings.max_message_bytes {
            return Err(ProduceOutcome::error(
                ErrorCode::MessageTooLarge,
                Some(format!(
                    "batch of {} bytes exceeds max.message.bytes {}",
                    data.len(),
                    settings.max_message_bytes
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
    if settings.compacted {
        check_keys(&batches)?;
    }
    Ok(batches)
}

/// A compacted topic keeps the latest record per key, so every record needs one: a batch with
/// key-less records is refused whole with INVALID_RECORD, naming them (as Kafka does).
fn check_keys(batches: &[(Bytes, BatchInfo)]) -> Result<(), ProduceOutcome> {
    let mut keyless = Vec::new();
    let mut index = 0i32;
    for (data, _) in batches {
        let refuse =
            |e: batch::BatchError| ProduceOutcome::error(ErrorCode::from(&e), Some(e.to_string()));
        let body =
            batch::records_section(data, limits::BATCH_DECOMPRESSED_BYTES_MAX).map_err(refuse)?;
        for r in batch::parse_records(&body).map_err(refuse)? {
            if r.key.is_none() {
                keyless.push(index);
            }
            index += 1;
        }
    }
    if keyless.is_empty() {
        return Ok(());
    }
    let mut o = ProduceOutcome::error(
        ErrorCode::InvalidRecord,
        Some(format!(
            "compacted topic cannot accept a record without a key ({} of {index} records)",
            keyless.len()
        )),
    );
    o.record_errors = keyless;
    Err(o)
}

pub struct Partition {
    pub topic_id: Uuid,
    pub log: MemoryLog,
    pub settings: TopicSettings,
    /// Woken on every append, for long-polling fetches.
    pub appended: Notify,
    producers: Producers,
}

impl Partition {
    pub fn new(topic_id: Uuid, settings: TopicSettings) -> Self {
        Partition {
            topic_id,
            log: MemoryLog::new(log_config(&settings)),
            settings,
            appended: Notify::default(),
            producers: Producers::default(),
        }
    }

    pub fn set_settings(&mut self, settings: TopicSettings) {
        if settings != self.settings {
            self.settings = settings;
            self.log.set_config(log_config(&settings));
        }
    }

    /// Validates and appends the batches of one produce partition.
    pub fn produce(&mut self, records: Option<&Bytes>, now_ms: i64) -> ProduceOutcome {
        let batches = match validate(&self.settings, records) {
            Ok(b) => b,
            Err(o) => return o,
        };
        // Idempotence: Kafka clients send one batch per partition per request; a request with
        // several batches is checked batch by batch against the state the earlier ones left.
        let log_append_time = self.settings.log_append_time.then_some(now_ms);
        let mut to_append = Vec::with_capacity(batches.len());
        let mut next = self.log.next_offset();
        let mut duplicate = None;
        for (data, info) in &batches {
            if info.producer_id >= 0 {
                match self.producers.check(info) {
                    Err(e) => return e,
                    Ok(SeqCheck::Duplicate(seen)) => {
                        duplicate = Some(seen);
                        continue;
                    }
                    Ok(SeqCheck::Append) => {
                        self.producers
                            .remember(info, next, log_append_time.unwrap_or(-1))
                    }
                }
            }
            to_append.push(AppendBatch {
                data: batch::stamp(data, next, log_append_time),
                records_count: info.records_count,
                max_timestamp: log_append_time.unwrap_or(info.max_timestamp),
            });
            next += info.records_count as i64;
        }
        if to_append.is_empty() {
            let seen = duplicate.expect("every batch was a duplicate");
            return ProduceOutcome::duplicate(seen, self.log.log_start_offset());
        }
        let appended = self.log.append(to_append, now_ms);
        self.appended.notify_all();
        ProduceOutcome {
            error: ErrorCode::None,
            message: None,
            record_errors: Vec::new(),
            base_offset: appended.base_offset,
            log_append_time_ms: log_append_time.unwrap_or(-1),
            log_start_offset: appended.log_start_offset,
        }
    }
}

fn log_config(s: &TopicSettings) -> LogConfig {
    LogConfig {
        retention_bytes: s.retention_bytes,
        retention_ms: s.retention_ms,
        delete: s.delete,
        compaction: s.compacted.then_some(CompactionConfig {
            delete_retention_ms: s.delete_retention_ms,
            min_lag_ms: s.min_compaction_lag_ms,
        }),
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
            compacted: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
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
