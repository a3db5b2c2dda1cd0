//! The storage seam: what the partition owner asks of a backend. Handlers never touch a
//! backend directly; they go through the owning shard's [`crate::partition::Partition`], which
//! holds one [`PartitionLog`] per partition.
//!
//! Two backends: the embedded memory log, and SeaweedMQ, whose variant here is only the owning
//! shard's knowledge of the partition (offsets seen, a cache of what kelp published); its
//! produce, fetch and offset lookups are async calls to the gRPC core made by the shard.
//! Dispatch is static (an enum); the memory backend runs the conformance tests in `tests`
//! below, the SeaweedMQ backend the real-stack tests (`tests/seaweedmq*.rs`).

pub mod memory;
pub mod seaweed;

use crate::error::ErrorCode;
use bytes::Bytes;

/// Topic-level settings a partition log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// retention.bytes: -1 keeps everything.
    pub retention_bytes: i64,
    /// retention.ms: -1 keeps everything.
    pub retention_ms: i64,
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

/// One partition's log, whatever the backend.
pub enum PartitionLog {
    Memory(memory::MemoryLog),
    Seaweed(seaweed::SeaweedLog),
}

impl PartitionLog {
    pub fn new_memory(config: LogConfig) -> Self {
        PartitionLog::Memory(memory::MemoryLog::new(config))
    }

    /// Appends stamped batches (the caller assigns offsets through `next_offset` and writes
    /// them into the batches first).
    pub fn append(
        &mut self,
        batches: Vec<AppendBatch>,
        now_ms: i64,
    ) -> Result<Appended, ErrorCode> {
        match self {
            PartitionLog::Memory(m) => Ok(m.append(batches, now_ms)),
            // SeaweedMQ appends go through the gRPC core (`Shard::seaweed_produce`).
            PartitionLog::Seaweed(_) => Err(ErrorCode::UnknownServerError),
        }
    }

    pub fn next_offset(&self) -> i64 {
        match self {
            PartitionLog::Memory(m) => m.next_offset(),
            PartitionLog::Seaweed(s) => s.high_watermark(),
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        match self {
            PartitionLog::Memory(m) => m.log_start_offset(),
            PartitionLog::Seaweed(s) => s.log_start_offset(),
        }
    }

    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadResult, ErrorCode> {
        match self {
            PartitionLog::Memory(m) => m.read(offset, max_bytes, at_least_one),
            PartitionLog::Seaweed(s) => s
                .read_cached(offset, max_bytes, at_least_one)
                .ok_or(ErrorCode::KafkaStorageError),
        }
    }

    pub fn list_offset(&self, timestamp: i64) -> Result<OffsetAndTimestamp, ErrorCode> {
        match self {
            PartitionLog::Memory(m) => m.list_offset(timestamp),
            PartitionLog::Seaweed(_) => Err(ErrorCode::KafkaStorageError),
        }
    }

    /// Moves the log start forward to `offset` (-1: the high watermark); returns the new start.
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, ErrorCode> {
        match self {
            PartitionLog::Memory(m) => m.delete_records(offset),
            // SeaweedMQ has no call to drop a partition's head.
            PartitionLog::Seaweed(_) => Err(ErrorCode::PolicyViolation),
        }
    }

    pub fn set_config(&mut self, config: LogConfig) {
        match self {
            PartitionLog::Memory(m) => m.set_config(config),
            PartitionLog::Seaweed(_) => {}
        }
    }

    /// Applies retention; returns how many batches were dropped.
    pub fn enforce_retention(&mut self, now_ms: i64) -> usize {
        match self {
            PartitionLog::Memory(m) => m.enforce_retention(now_ms),
            // SeaweedMQ applies its own retention.
            PartitionLog::Seaweed(_) => 0,
        }
    }

    pub fn size_bytes(&self) -> usize {
        match self {
            PartitionLog::Memory(m) => m.size_bytes(),
            PartitionLog::Seaweed(s) => s.cached_bytes(),
        }
    }
}

/// The committed offsets of one consumer group, whatever the backend. The group coordinator
/// reads and writes offsets only through this; the embedded backend keeps them in memory, a
/// persistent backend writes each change through before the commit is answered.
pub enum GroupOffsets<V> {
    Memory(std::collections::BTreeMap<(String, i32), V>),
}

impl<V> Default for GroupOffsets<V> {
    fn default() -> Self {
        GroupOffsets::Memory(std::collections::BTreeMap::new())
    }
}

impl<V> GroupOffsets<V> {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&V> {
        match self {
            GroupOffsets::Memory(m) => m.get(&(topic.to_string(), partition)),
        }
    }

    pub fn insert(&mut self, topic: &str, partition: i32, value: V) {
        match self {
            GroupOffsets::Memory(m) => {
                m.insert((topic.to_string(), partition), value);
            }
        }
    }

    pub fn remove(&mut self, topic: &str, partition: i32) {
        match self {
            GroupOffsets::Memory(m) => {
                m.remove(&(topic.to_string(), partition));
            }
        }
    }

    pub fn retain(&mut self, keep: impl FnMut(&(String, i32), &mut V) -> bool) {
        match self {
            GroupOffsets::Memory(m) => m.retain(keep),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GroupOffsets::Memory(m) => m.is_empty(),
        }
    }

    /// Every (topic, partition) and its value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&(String, i32), &V)> {
        match self {
            GroupOffsets::Memory(m) => m.iter(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Conformance scenarios every backend must pass.
    use super::*;
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

    fn logs() -> Vec<PartitionLog> {
        vec![PartitionLog::new_memory(LogConfig {
            retention_bytes: -1,
            retention_ms: -1,
        })]
    }

    #[test]
    fn append_then_read_returns_the_same_bytes() {
        for mut log in logs() {
            let b = batch_at(0, 3, 1000);
            let bytes = b.data.clone();
            let a = log.append(vec![b], 0).unwrap();
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
            log.append(vec![batch_at(0, 2, 0)], 0).unwrap();
            log.append(vec![batch_at(2, 2, 0)], 0).unwrap();
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
            log.append(vec![batch_at(0, 3, 100)], 0).unwrap(); // ts 100,101,102
            log.append(vec![batch_at(3, 3, 200)], 0).unwrap(); // ts 200,201,202
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
    fn group_offsets_round_trip() {
        // One backend today; each new one gets its own constructor here.
        let backends: Vec<fn() -> GroupOffsets<i64>> = vec![GroupOffsets::default];
        for make in backends {
            let mut o = make();
            assert!(o.is_empty());
            o.insert("t", 1, 10);
            o.insert("t", 0, 5);
            o.insert("t", 1, 11);
            assert_eq!(o.get("t", 1), Some(&11));
            assert_eq!(o.get("u", 1), None);
            let keys: Vec<_> = o.iter().map(|(k, v)| (k.1, *v)).collect();
            assert_eq!(keys, vec![(0, 5), (1, 11)]);
            o.remove("t", 0);
            o.retain(|_, v| *v > 100);
            assert!(o.is_empty());
        }
    }

    #[test]
    fn retention_and_delete_records_advance_log_start() {
        for mut log in logs() {
            for i in 0..10 {
                log.append(vec![batch_at(i * 2, 2, 0)], 0).unwrap();
            }
            let one = log.size_bytes() / 10;
            log.set_config(LogConfig {
                retention_bytes: (one * 3) as i64,
                retention_ms: -1,
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
