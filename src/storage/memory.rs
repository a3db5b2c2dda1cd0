//! The embedded backend: each partition's batches kept in memory on the owning shard, exactly
//! as stamped (base offset written in), with an offset index for fetches.

use super::{
    AppendBatch, Appended, LogConfig, OffsetAndTimestamp, ReadResult, EARLIEST_LOCAL_TIMESTAMP,
    EARLIEST_TIMESTAMP, LATEST_TIERED_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP,
};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::protocol::batch;
use bytes::Bytes;
use std::collections::VecDeque;

mod compaction;
pub use compaction::Compacted;

struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    append_ms: i64,
    data: Bytes,
}

pub struct MemoryLog {
    /// Batches in offset order; the front is the oldest retained.
    batches: VecDeque<StoredBatch>,
    /// First offset a consumer may read; may lie inside the first batch after DeleteRecords.
    log_start: i64,
    /// Offset the next record gets (the high watermark: there are no followers to wait for).
    next_offset: i64,
    /// Sum of stored batch sizes, for retention.bytes.
    bytes: usize,
    config: LogConfig,
    /// Compaction's key index (compacted topics).
    keys: compaction::KeyIndex,
}

impl MemoryLog {
    pub fn new(config: LogConfig) -> Self {
        MemoryLog {
            batches: VecDeque::new(),
            log_start: 0,
            next_offset: 0,
            bytes: 0,
            config,
            keys: Default::default(),
        }
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    pub fn append(&mut self, batches: Vec<AppendBatch>, now_ms: i64) -> Appended {
        let base_offset = self.next_offset;
        for b in batches {
            debug_assert_eq!(batch::base_offset(&b.data), self.next_offset);
            let last = self.next_offset + b.records_count as i64 - 1;
            self.bytes += b.data.len();
            self.batches.push_back(StoredBatch {
                base_offset: self.next_offset,
                last_offset: last,
                max_timestamp: b.max_timestamp,
                append_ms: now_ms,
                data: b.data,
            });
            self.next_offset = last + 1;
        }
        self.enforce_retention(now_ms);
        Appended {
            base_offset,
            log_start_offset: self.log_start,
        }
    }

    /// Index of the batch holding `offset`, if any.
    fn find(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.last_offset < offset)
    }

    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadResult, ErrorCode> {
        if offset < self.log_start || offset > self.next_offset {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let mut out = ReadResult {
            high_watermark: self.next_offset,
            log_start_offset: self.log_start,
            ..Default::default()
        };
        let max_bytes = max_bytes.min(limits::FETCH_RESPONSE_BYTES_MAX);
        for b in self.batches.range(self.find(offset)..) {
            let n = b.data.len();
            if out.bytes + n > max_bytes && !(at_least_one && out.batches.is_empty()) {
                break;
            }
            out.bytes += n;
            out.batches.push(b.data.clone());
        }
        Ok(out)
    }

    pub fn list_offset(&self, timestamp: i64) -> Result<OffsetAndTimestamp, ErrorCode> {
        let none = OffsetAndTimestamp {
            offset: -1,
            timestamp: -1,
        };
        match timestamp {
            EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok(OffsetAndTimestamp {
                offset: self.log_start,
                timestamp: -1,
            }),
            LATEST_TIMESTAMP | LATEST_TIERED_TIMESTAMP => Ok(OffsetAndTimestamp {
                offset: self.next_offset,
                timestamp: -1,
            }),
            MAX_TIMESTAMP => {
                // The first batch holding the largest timestamp, then the record within it.
                let mut best: Option<&StoredBatch> = None;
                for b in &self.batches {
                    if best.is_none_or(|x| b.max_timestamp > x.max_timestamp) {
                        best = Some(b);
                    }
                }
                let Some(b) = best else { return Ok(none) };
                Ok(self
                    .record_at_or_after(b, b.max_timestamp, true)
                    .unwrap_or(none))
            }
            ts if ts >= 0 => {
                for b in &self.batches {
                    if b.max_timestamp >= ts {
                        if let Some(found) = self.record_at_or_after(b, ts, false) {
                            return Ok(found);
                        }
                    }
                }
                Ok(none)
            }
            _ => Err(ErrorCode::InvalidRequest),
        }
    }

    /// The first record of `b` (at or past the log start) whose timestamp is >= `ts` (or == when
    /// `exact`).
    fn record_at_or_after(
        &self,
        b: &StoredBatch,
        ts: i64,
        exact: bool,
    ) -> Option<OffsetAndTimestamp> {
        if batch::is_log_append_time(&b.data) {
            let offset = b.base_offset.max(self.log_start);
            return Some(OffsetAndTimestamp {
                offset,
                timestamp: b.max_timestamp,
            });
        }
        let section = batch::records_section(&b.data, limits::BATCH_DECOMPRESSED_BYTES_MAX).ok()?;
        let records = batch::parse_records(&section).ok()?;
        let base_ts = batch::base_timestamp(&b.data);
        records.iter().find_map(|r| {
            let offset = b.base_offset + r.offset_delta;
            let t = base_ts + r.timestamp_delta;
            let hit = if exact { t == ts } else { t >= ts };
            (offset >= self.log_start && hit).then_some(OffsetAndTimestamp {
                offset,
                timestamp: t,
            })
        })
    }

    pub fn delete_records(&mut self, offset: i64) -> Result<i64, ErrorCode> {
        let target = if offset == -1 {
            self.next_offset
        } else {
            offset
        };
        if target < 0 || target > self.next_offset {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if target > self.log_start {
            self.log_start = target;
            while self
                .batches
                .front()
                .is_some_and(|b| b.last_offset < self.log_start)
            {
                self.pop_front();
            }
        }
        Ok(self.log_start)
    }

    fn pop_front(&mut self) {
        if let Some(b) = self.batches.pop_front() {
            self.bytes -= b.data.len();
            self.log_start = self.log_start.max(b.last_offset + 1);
        }
    }

    pub fn enforce_retention(&mut self, now_ms: i64) -> usize {
        let mut dropped = 0;
        if !self.config.delete {
            return 0; // compact only: kept by key, not by age or size
        }
        // The newest batch always stays, like Kafka's active segment.
        while self.batches.len() > 1 {
            let front = self.batches.front().expect("non-empty");
            let over_bytes =
                self.config.retention_bytes >= 0 && self.bytes as i64 > self.config.retention_bytes;
            let too_old = self.config.retention_ms >= 0
                && now_ms - front.append_ms > self.config.retention_ms;
            if !(over_bytes || too_old) {
                break;
            }
            self.pop_front();
            dropped += 1;
        }
        dropped
    }
}
