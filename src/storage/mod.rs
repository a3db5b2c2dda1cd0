//! What partition reads answer with, on either backend ([`ReadResult`], [`OffsetAndTimestamp`],
//! ListOffsets' special timestamps), and the embedded backend's log ([`memory::MemoryLog`]).
//!
//! The backends are chosen once per shard (`crate::shard::Backend`): the memory backend's
//! partitions (`crate::partition::Partition`) keep a [`memory::MemoryLog`] each; the SeaweedMQ
//! backend's (`crate::shard::seaweed`) keep their records in SeaweedMQ and answer with these
//! same types. The conformance scenarios below run against the memory log; the SeaweedMQ
//! backend runs the real-stack tests (`tests/seaweedmq*.rs`, `scripts/test-seaweedmq.sh`).

pub mod memory;

use bytes::Bytes;

/// Topic-level settings a partition log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// retention.bytes: -1 keeps everything.
    pub retention_bytes: i64,
    /// retention.ms: -1 keeps everything.
    pub retention_ms: i64,
    /// cleanup.policy includes `delete`: the two retentions apply (a compact-only topic keeps
    /// every key's latest record whatever its age or size, as on Kafka).
    pub delete: bool,
    /// cleanup.policy includes `compact`.
    pub compaction: Option<CompactionConfig>,
}

/// How a compacted log is cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionConfig {
    /// delete.retention.ms: a tombstone (null value) that is its key's latest record is removed
    /// this long after it was appended.
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms: batches appended less than this ago are left alone.
    pub min_lag_ms: i64,
}

/// A record batch ready to be appended: validated, with its record count.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    pub data: Bytes,
    pub records_count: i32,
    pub max_timestamp: i64,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// What a read returns: whole stored batches, byte for byte.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    pub bytes: usize,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// The offset and timestamp a ListOffsets lookup found (-1, -1 when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// ListOffsets' special timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
pub const LATEST_TIERED_TIMESTAMP: i64 = -5;

#[cfg(test)]
pub(crate) mod tests {
    //! Conformance scenarios every backend must pass.
    use super::*;
    use crate::error::ErrorCode;
    use crate::protocol::batch;

    pub fn batch_at(base: i64, n: usize, ts: i64) -> AppendBatch {
        let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
            .collect();
        let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let raw = crate::protocol::batch::tests_support::build_batch(&refs, ts);
        let data = batch::stamp(&raw, base, None);
        AppendBatch {
            data,
            records_count: n as i32,
            max_timestamp: ts + n as i64 - 1,
        }
    }

    fn logs() -> Vec<memory::MemoryLog> {
        vec![memory::MemoryLog::new(LogConfig {
            retention_bytes: -1,
            retention_ms: -1,
            delete: true,
            compaction: None,
        })]
    }

    #[test]
    fn append_then_read_returns_the_same_bytes() {
        for mut log in logs() {
            let b = batch_at(0, 3, 1000);
            let bytes = b.data.clone();
            let a = log.append(vec![b], 0);
            assert_eq!(a.base_offset, 0);
            assert_eq!(log.next_offset(), 3);
            let r = log.read(0, 1 << 20, true).unwrap();
            assert_eq!(r.batches, vec![bytes.clone()]);
            // A fetch inside the batch returns the whole batch.
            let r = log.read(2, 1 << 20, true).unwrap();
            assert_eq!(r.batches, vec![bytes]);
            // At the end: nothing, no error.
            assert!(log.read(3, 1 << 20, true).unwrap().batches.is_empty());
            assert_eq!(
                log.read(4, 1 << 20, true).unwrap_err(),
                ErrorCode::OffsetOutOfRange
            );
        }
    }

    #[test]
    fn max_bytes_is_respected_but_one_batch_always_comes() {
        for mut log in logs() {
            log.append(vec![batch_at(0, 2, 0)], 0);
            log.append(vec![batch_at(2, 2, 0)], 0);
            let r = log.read(0, 1, true).unwrap();
            assert_eq!(r.batches.len(), 1);
            let r = log.read(0, 1, false).unwrap();
            assert!(r.batches.is_empty());
            let r = log.read(0, 1 << 20, false).unwrap();
            assert_eq!(r.batches.len(), 2);
        }
    }

    #[test]
    fn list_offsets_by_time() {
        for mut log in logs() {
            log.append(vec![batch_at(0, 3, 100)], 0); // ts 100,101,102
            log.append(vec![batch_at(3, 3, 200)], 0); // ts 200,201,202
            assert_eq!(log.list_offset(EARLIEST_TIMESTAMP).unwrap().offset, 0);
            assert_eq!(log.list_offset(LATEST_TIMESTAMP).unwrap().offset, 6);
            assert_eq!(
                log.list_offset(101).unwrap(),
                OffsetAndTimestamp {
                    offset: 1,
                    timestamp: 101
                }
            );
            assert_eq!(log.list_offset(150).unwrap().offset, 3);
            assert_eq!(log.list_offset(999).unwrap().offset, -1);
            assert_eq!(
                log.list_offset(MAX_TIMESTAMP).unwrap(),
                OffsetAndTimestamp {
                    offset: 5,
                    timestamp: 202
                }
            );
        }
    }

    #[test]
    fn retention_and_delete_records_advance_log_start() {
        for mut log in logs() {
            for i in 0..10 {
                log.append(vec![batch_at(i * 2, 2, 0)], 0);
            }
            let one = log.size_bytes() / 10;
            log.set_config(LogConfig {
                retention_bytes: (one * 3) as i64,
                retention_ms: -1,
                delete: true,
                compaction: None,
            });
            log.enforce_retention(0);
            assert_eq!(log.log_start_offset(), 14);
            assert_eq!(
                log.read(0, 100, true).unwrap_err(),
                ErrorCode::OffsetOutOfRange
            );
            assert_eq!(log.delete_records(17).unwrap(), 17);
            assert_eq!(
                log.read(16, 100, true).unwrap_err(),
                ErrorCode::OffsetOutOfRange
            );
            assert_eq!(log.read(17, 1 << 20, true).unwrap().batches.len(), 2);
            assert_eq!(log.delete_records(-1).unwrap(), 20);
            assert_eq!(
                log.delete_records(25).unwrap_err(),
                ErrorCode::OffsetOutOfRange
            );
        }
    }
}
