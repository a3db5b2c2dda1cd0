//! Log compaction of the embedded backend (`cleanup.policy=compact`): every key keeps only its
//! latest record; a tombstone (null value) that is its key's latest goes once
//! `delete.retention.ms` has passed since it was appended; batches younger than
//! `min.compaction.lag.ms`, and the newest batch (Kafka's active segment), are left alone.
//! Offsets never move: a cleaned batch keeps its base offset and last offset delta, an emptied
//! one is dropped, and the log's end stays where it was.
//!
//! The work is bounded per pass (`COMPACTION_BATCHES_PER_PASS` batches read to index keys and
//! as many to clean) and runs on the shard that owns the partition, from its retention sweep.
//! The key index (key -> offset of its latest record) is kept between passes and extended as
//! batches arrive; a cleaning cycle walks the cleanable batches from the log start and runs
//! only while something may be removable. The index holds only keys the log still has: a key
//! whose latest record is a tombstone that expired, or whose latest record left with the log
//! start (retention on `compact,delete`, DeleteRecords), is forgotten, so the index is bounded
//! by the log's live keys, not by every key ever written.

use super::{MemoryLog, StoredBatch};
use crate::config::limits;
use crate::protocol::batch::{self, RecordView};
use crate::storage::CompactionConfig;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// What compaction remembers of a log between passes.
#[derive(Default)]
pub(super) struct KeyIndex {
    /// Each key's latest offset, over the offsets below `indexed_end`.
    latest: HashMap<Bytes, i64>,
    /// The same keys by their latest offset (sharing the key bytes), so that those the log
    /// start passed are found without walking every key.
    by_offset: BTreeMap<i64, Bytes>,
    indexed_end: i64,
    /// Where the running cleaning cycle goes on.
    cursor: Option<i64>,
    /// A record became obsolete, or a tombstone waits to expire, since the last cycle began.
    dirty: bool,
}

impl KeyIndex {
    /// Records `key`'s latest offset; whether it had an older one.
    fn note(&mut self, key: Bytes, offset: i64) -> bool {
        let older = self.latest.insert(key.clone(), offset);
        if let Some(o) = older {
            self.by_offset.remove(&o);
        }
        self.by_offset.insert(offset, key);
        older.is_some()
    }

    /// Forgets a key whose last record left the log.
    fn forget(&mut self, key: &[u8]) {
        if let Some(o) = self.latest.remove(key) {
            self.by_offset.remove(&o);
        }
    }

    /// Forgets the keys whose latest record is below `log_start`: no record of theirs is left.
    fn forget_below(&mut self, log_start: i64) {
        while let Some(first) = self.by_offset.first_entry() {
            if *first.key() >= log_start {
                return;
            }
            let key = first.remove();
            self.latest.remove(&key);
        }
    }

    /// Keys indexed now.
    pub(super) fn len(&self) -> usize {
        self.latest.len()
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub records_removed: usize,
    pub batches_rewritten: usize,
    pub batches_dropped: usize,
}

impl MemoryLog {
    /// One bounded compaction pass (a no-op unless the topic is compacted).
    pub fn compact(&mut self, now_ms: i64) -> Compacted {
        let Some(cfg) = self.config.compaction else {
            if self.keys.len() > 0 {
                self.keys = KeyIndex::default(); // no longer compacted
            }
            return Compacted::default();
        };
        self.keys.forget_below(self.log_start);
        self.index_keys(limits::COMPACTION_BATCHES_PER_PASS);
        if !self.keys.dirty && self.keys.cursor.is_none() {
            return Compacted::default();
        }
        self.clean(cfg, now_ms, limits::COMPACTION_BATCHES_PER_PASS)
    }

    /// Adds up to `budget` batches past `indexed_end` to the key index.
    fn index_keys(&mut self, budget: usize) {
        let from = self.find(self.keys.indexed_end);
        let mut seen = Vec::new();
        for b in self.batches.range(from..).take(budget) {
            if let Ok(body) = batch::records_section(&b.data, limits::BATCH_DECOMPRESSED_BYTES_MAX)
            {
                if let Ok(records) = batch::parse_records(&body) {
                    for r in &records {
                        if let Some(k) = r.key {
                            seen.push((
                                Bytes::copy_from_slice(k),
                                b.base_offset + r.offset_delta,
                                r.value.is_none(),
                            ));
                        }
                    }
                }
            }
            self.keys.indexed_end = b.last_offset + 1;
        }
        for (key, offset, tombstone) in seen {
            let replaced = self.keys.note(key, offset);
            self.keys.dirty |= replaced || tombstone;
        }
    }

    /// Cleans up to `budget` batches of the running cycle (starting one if none runs).
    fn clean(&mut self, cfg: CompactionConfig, now_ms: i64, budget: usize) -> Compacted {
        let mut done = Compacted::default();
        let start = self.keys.cursor.unwrap_or_else(|| {
            // A new cycle: what is dirtied from now on needs the next one.
            self.keys.dirty = false;
            self.log_start
        });
        let mut i = self.find(start);
        let mut tombstones_left = false;
        for _ in 0..budget {
            let cleanable = i + 1 < self.batches.len() // never the newest batch
                && self.batches[i].last_offset < self.keys.indexed_end;
            let young = cleanable && now_ms - self.batches[i].append_ms < cfg.min_lag_ms;
            if !cleanable || young {
                // The cycle is over; tombstones not yet expired, and batches not yet old
                // enough, need another.
                self.keys.cursor = None;
                self.keys.dirty |= tombstones_left || young;
                return done;
            }
            let next_offset = self.batches[i].last_offset + 1;
            match self.clean_batch(i, cfg, now_ms, &mut tombstones_left) {
                Some((0, removed)) => {
                    let b = self.batches.remove(i).expect("index in range");
                    self.bytes -= b.data.len();
                    done.batches_dropped += 1;
                    done.records_removed += removed;
                }
                Some((_, removed)) => {
                    done.batches_rewritten += 1;
                    done.records_removed += removed;
                    i += 1;
                }
                None => i += 1,
            }
            self.keys.cursor = Some(next_offset);
        }
        self.keys.dirty |= tombstones_left;
        done
    }

    /// Rewrites batch `i` without its obsolete records: `None` if it keeps them all, else how
    /// many it kept (0: drop it) and removed.
    fn clean_batch(
        &mut self,
        i: usize,
        cfg: CompactionConfig,
        now_ms: i64,
        tombstones_left: &mut bool,
    ) -> Option<(usize, usize)> {
        let b: &StoredBatch = &self.batches[i];
        let body = batch::records_section(&b.data, limits::BATCH_DECOMPRESSED_BYTES_MAX).ok()?;
        let records = batch::parse_records(&body).ok()?;
        let expired = now_ms - b.append_ms >= cfg.delete_retention_ms;
        // Keys whose expiring tombstone was their last record: the log has nothing of them left.
        let mut gone: Vec<Bytes> = Vec::new();
        let kept: Vec<RecordView<'_>> = records
            .iter()
            .filter(|r| {
                let Some(key) = r.key else {
                    return true; // written before the topic was compacted
                };
                let latest = self.keys.latest.get(key) == Some(&(b.base_offset + r.offset_delta));
                let tombstone = r.value.is_none();
                *tombstones_left |= latest && tombstone && !expired;
                if latest && tombstone && expired {
                    gone.push(Bytes::copy_from_slice(key));
                }
                latest && !(tombstone && expired)
            })
            .cloned()
            .collect();
        for key in &gone {
            self.keys.forget(key);
        }
        if kept.len() == records.len() {
            return None;
        }
        let n = kept.len();
        let removed = records.len() - n;
        if n > 0 {
            let data = batch::rebuild(&b.data, &kept);
            let b = &mut self.batches[i];
            self.bytes = self.bytes - b.data.len() + data.len();
            b.data = data;
        }
        Some((n, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests_support::{build_batch_nullable, TestRecord};
    use crate::storage::{AppendBatch, LogConfig};

    const DAY: i64 = 86_400_000;

    fn log(min_lag_ms: i64) -> MemoryLog {
        MemoryLog::new(LogConfig {
            retention_bytes: -1,
            retention_ms: -1,
            delete: false,
            compaction: Some(CompactionConfig {
                delete_retention_ms: DAY,
                min_lag_ms,
            }),
        })
    }

    /// Appends one batch of (key, value) records at `now`.
    fn append(log: &mut MemoryLog, records: &[(&str, Option<&str>)], now: i64) {
        let recs: Vec<TestRecord<'_>> = records
            .iter()
            .map(|(k, v)| (Some(k.as_bytes()), v.map(str::as_bytes)))
            .collect();
        let raw = build_batch_nullable(&recs, 1_700_000_000_000);
        let data = batch::stamp(&raw, log.next_offset(), None);
        log.append(
            vec![AppendBatch {
                data,
                records_count: records.len() as i32,
                max_timestamp: 1_700_000_000_000,
            }],
            now,
        );
    }

    /// Every (offset, key, value) a consumer reading from the start sees.
    fn read_all(log: &MemoryLog) -> Vec<(i64, String, Option<String>)> {
        let r = log.read(log.log_start_offset(), usize::MAX, true).unwrap();
        let mut out = Vec::new();
        for b in &r.batches {
            // What a consumer checks: the CRC (a cleaned batch's offset deltas have gaps, which
            // only a produce would refuse).
            let stored = u32::from_be_bytes(
                b[batch::OFFSET_CRC..batch::OFFSET_ATTRIBUTES]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(
                crc32c::crc32c(&b[batch::OFFSET_ATTRIBUTES..]),
                stored,
                "CRC"
            );
            let body = batch::records_section(b, 1 << 20).unwrap();
            for rec in batch::parse_records(&body).unwrap() {
                out.push((
                    batch::base_offset(b) + rec.offset_delta,
                    String::from_utf8(rec.key.unwrap().to_vec()).unwrap(),
                    rec.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                ));
            }
        }
        out
    }

    fn until_done(log: &mut MemoryLog, now: i64) {
        for _ in 0..20 {
            log.compact(now);
        }
    }

    #[test]
    fn the_latest_record_of_every_key_stays_at_its_offset() {
        let mut l = log(0);
        append(
            &mut l,
            &[("a", Some("a1")), ("b", Some("b1")), ("a", Some("a2"))],
            0,
        );
        append(&mut l, &[("c", Some("c1")), ("b", Some("b2"))], 0);
        append(&mut l, &[("a", Some("a3"))], 0);
        // The newest batch is never cleaned: add one more so the others are all cleanable.
        append(&mut l, &[("d", Some("d1"))], 0);
        until_done(&mut l, 10);
        let got = read_all(&l);
        let want = vec![
            (3, "c".into(), Some("c1".into())),
            (4, "b".into(), Some("b2".into())),
            (5, "a".into(), Some("a3".into())),
            (6, "d".into(), Some("d1".into())),
        ];
        assert_eq!(got, want);
        // Offsets are never reused, and reads from a removed offset go to the next record.
        assert_eq!(l.next_offset(), 7);
        assert_eq!(l.log_start_offset(), 0);
        let r = l.read(1, usize::MAX, true).unwrap();
        assert_eq!(batch::base_offset(&r.batches[0]), 3);
    }

    #[test]
    fn tombstones_go_after_delete_retention_and_not_before() {
        let mut l = log(0);
        append(&mut l, &[("a", Some("a1")), ("b", Some("b1"))], 0);
        append(&mut l, &[("a", None)], 0);
        append(&mut l, &[("z", Some("z1"))], 0);
        until_done(&mut l, 1_000);
        // a1 is gone, the tombstone stays for consumers to see, for delete.retention.ms.
        let keys: Vec<_> = read_all(&l)
            .into_iter()
            .map(|(o, k, v)| (o, k, v.is_some()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (1, "b".into(), true),
                (2, "a".into(), false),
                (3, "z".into(), true)
            ]
        );
        until_done(&mut l, DAY + 1);
        let offsets: Vec<_> = read_all(&l).into_iter().map(|(o, ..)| o).collect();
        assert_eq!(offsets, vec![1, 3]);
    }

    #[test]
    fn young_batches_wait_for_the_minimum_lag() {
        let mut l = log(60_000);
        append(&mut l, &[("a", Some("a1"))], 0);
        append(&mut l, &[("a", Some("a2"))], 50_000);
        append(&mut l, &[("a", Some("a3"))], 50_000);
        until_done(&mut l, 59_000);
        assert_eq!(read_all(&l).len(), 3, "nothing is old enough yet");
        until_done(&mut l, 70_000);
        // a1 (70 s old) goes; a2 (20 s old) stays; a3 is the newest batch.
        let offsets: Vec<_> = read_all(&l).into_iter().map(|(o, ..)| o).collect();
        assert_eq!(offsets, vec![1, 2]);
        until_done(&mut l, 120_000);
        let offsets: Vec<_> = read_all(&l).into_iter().map(|(o, ..)| o).collect();
        assert_eq!(offsets, vec![2]);
    }

    #[test]
    fn a_pass_does_bounded_work_and_later_passes_finish() {
        let mut l = log(0);
        let n = limits::COMPACTION_BATCHES_PER_PASS * 3;
        for i in 0..n {
            append(&mut l, &[("k", Some(&format!("v{i}")))], 0);
        }
        let first = l.compact(1);
        assert!(first.batches_dropped <= limits::COMPACTION_BATCHES_PER_PASS);
        until_done(&mut l, 1);
        let got = read_all(&l);
        assert_eq!(
            got,
            vec![((n - 1) as i64, "k".into(), Some(format!("v{}", n - 1)))]
        );
        assert_eq!(l.size_bytes(), l.read(0, usize::MAX, true).unwrap().bytes);
    }

    #[test]
    fn keys_deleted_by_expired_tombstones_leave_the_index() {
        let mut l = log(0);
        for i in 0..50 {
            append(&mut l, &[(&format!("k{i}"), Some("v"))], 0);
        }
        for i in 0..50 {
            append(&mut l, &[(&format!("k{i}"), None)], 0);
        }
        append(&mut l, &[("z", Some("z1"))], 0);
        until_done(&mut l, 1_000);
        assert_eq!(
            l.keys.len(),
            51,
            "tombstones still readable: their keys stay"
        );
        until_done(&mut l, DAY + 1);
        assert_eq!(read_all(&l), vec![(100, "z".into(), Some("z1".into()))]);
        assert_eq!(
            l.keys.len(),
            1,
            "only z is left in the log, so only z is indexed"
        );
        assert_eq!(l.keys.by_offset.len(), 1);
    }

    #[test]
    fn keys_that_left_with_retention_leave_the_index() {
        // compact,delete with a byte bound: every batch a new key, as an event log keyed by id.
        let mut l = MemoryLog::new(LogConfig {
            retention_bytes: 4_096,
            retention_ms: -1,
            delete: true,
            compaction: Some(CompactionConfig {
                delete_retention_ms: DAY,
                min_lag_ms: 0,
            }),
        });
        for i in 0..2_000 {
            append(&mut l, &[(&format!("id-{i}"), Some("event"))], 0);
            l.enforce_retention(0);
            l.compact(0);
        }
        until_done(&mut l, 0);
        let live = read_all(&l).len();
        assert!(live < 100, "retention keeps a few batches, not {live}");
        assert_eq!(
            l.keys.len(),
            live,
            "the index holds the log's keys, not all 2,000"
        );
        assert_eq!(l.keys.by_offset.len(), live);
    }

    #[test]
    fn topics_that_are_not_compacted_are_left_alone() {
        let mut l = MemoryLog::new(LogConfig {
            retention_bytes: -1,
            retention_ms: -1,
            delete: true,
            compaction: None,
        });
        append(&mut l, &[("a", Some("a1"))], 0);
        append(&mut l, &[("a", Some("a2"))], 0);
        append(&mut l, &[("a", Some("a3"))], 0);
        assert_eq!(l.compact(DAY), Compacted::default());
        assert_eq!(read_all(&l).len(), 3);
    }
}
