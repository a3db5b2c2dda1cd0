//! The owning shard's view of a partition stored in SeaweedMQ: what it knows of the offsets,
//! and a bounded cache of the batches kelp itself published, so that tailing consumers are
//! served without a gRPC round trip. The log itself lives in SeaweedMQ; the async calls to it
//! are made by the shard (`super::read`), never from here.

use crate::protocol::batch;
use crate::storage::ReadResult;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

pub struct SeaweedCache {
    /// Stamped batches at consecutive offsets, oldest first.
    cache: VecDeque<Bytes>,
    cache_bytes: usize,
    /// Largest `cache_bytes` kept (`--seaweedmq-cache-bytes`); the oldest batches go first.
    cache_limit: usize,
    /// The offset after the last cached batch.
    cache_end: i64,
    /// The highest high-water mark seen (our acks, the broker's answers); -1 when unknown.
    high_watermark: i64,
    /// The log start last reported by the broker (0 until one answers).
    log_start: i64,
    /// Publishes handed to the gRPC core and not answered yet.
    in_flight: usize,
    /// Acked batches waiting for an earlier publish to be answered, so that the cache is built
    /// in offset order however the answers are scheduled.
    stash: BTreeMap<i64, (Bytes, i64)>,
    stash_bytes: usize,
}

impl SeaweedCache {
    pub fn new(cache_limit: usize) -> Self {
        SeaweedCache {
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit,
            cache_end: -1,
            high_watermark: -1,
            log_start: 0,
            in_flight: 0,
            stash: BTreeMap::new(),
            stash_bytes: 0,
        }
    }

    /// The high-water mark as far as this shard knows (-1: not asked yet).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start
    }

    #[cfg(test)]
    pub fn cached_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Records what the broker said about the partition's range.
    pub fn observe_range(&mut self, log_start: i64, high_watermark: i64) {
        self.log_start = log_start.max(0);
        self.high_watermark = self.high_watermark.max(high_watermark);
        // Records before the log start are gone from SeaweedMQ: so must they be here.
        while let Some(front) = self.cache.front() {
            let end = batch::base_offset(front) + batch::last_offset_delta(front) as i64 + 1;
            if end > self.log_start {
                break;
            }
            self.cache_bytes -= front.len();
            self.cache.pop_front();
        }
    }

    /// A publish was handed to the gRPC core.
    pub fn publish_started(&mut self) {
        self.in_flight += 1;
    }

    /// A publish was answered: `Some((stamped, records))` when it was acked with consecutive
    /// offsets (the batch stamped with the first), `None` when it failed or its records were
    /// split by another writer's. Batches enter the cache in offset order; a gap that no
    /// publish in flight can fill (another writer, a failure) starts the cache afresh.
    pub fn publish_done(&mut self, acked: Option<(Bytes, i64)>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some((stamped, records)) = acked {
            let base = batch::base_offset(&stamped);
            self.high_watermark = self.high_watermark.max(base + records);
            if self.cache_limit > 0 && stamped.len() <= self.cache_limit {
                self.stash_bytes += stamped.len();
                self.stash.insert(base, (stamped, records));
            }
        }
        while let Some((&base, _)) = self.stash.first_key_value() {
            if self.cache_end >= 0 && base < self.cache_end {
                self.unstash();
                continue;
            }
            if self.cache_end >= 0 && base > self.cache_end && self.in_flight > 0 {
                break;
            }
            if base != self.cache_end {
                self.clear_cache();
            }
            let (stamped, records) = self.unstash();
            self.cache_bytes += stamped.len();
            self.cache.push_back(stamped);
            self.cache_end = base + records;
        }
        if self.stash_bytes > self.cache_limit {
            self.stash.clear();
            self.stash_bytes = 0;
        }
        while self.cache_bytes > self.cache_limit {
            match self.cache.pop_front() {
                Some(old) => self.cache_bytes -= old.len(),
                None => break,
            }
        }
    }

    fn unstash(&mut self) -> (Bytes, i64) {
        let (_, (b, n)) = self.stash.pop_first().expect("caller saw an entry");
        self.stash_bytes -= b.len();
        (b, n)
    }

    /// Forgets the cache (a publish whose records did not get consecutive offsets, or a
    /// failure that leaves the order uncertain).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
        self.cache_end = -1;
    }

    /// Serves a read from the cache when `offset` falls inside it: whole batches from the one
    /// holding `offset`, like the memory backend.
    pub fn read_cached(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Option<ReadResult> {
        let first = batch::base_offset(self.cache.front()?);
        if offset < first || offset >= self.cache_end {
            return None;
        }
        // Batches are consecutive: find the one holding `offset` by walking back from the end
        // (tailing readers ask for the newest).
        let idx = self
            .cache
            .iter()
            .rposition(|b| batch::base_offset(b) <= offset)?;
        let mut out = ReadResult {
            high_watermark: self.high_watermark.max(self.cache_end),
            log_start_offset: self.log_start,
            ..ReadResult::default()
        };
        for b in self.cache.iter().skip(idx) {
            if out.bytes + b.len() > max_bytes && !(at_least_one && out.batches.is_empty()) {
                break;
            }
            out.bytes += b.len();
            out.batches.push(b.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests_support::build_batch;

    fn stamped(base: i64, n: usize) -> Bytes {
        let recs: Vec<(&[u8], &[u8])> = (0..n).map(|_| (&b"k"[..], &b"v"[..])).collect();
        batch::stamp(&build_batch(&recs, 0), base, None)
    }

    fn done(log: &mut SeaweedCache, b: Bytes, n: i64) {
        log.publish_started();
        log.publish_done(Some((b, n)));
    }

    #[test]
    fn answers_out_of_order_still_build_the_cache_in_order() {
        let mut log = SeaweedCache::new(1 << 20);
        log.publish_started();
        log.publish_started();
        log.publish_started();
        // The second and third answers are handled before the first.
        log.publish_done(Some((stamped(3, 2), 2)));
        log.publish_done(Some((stamped(5, 1), 1)));
        assert_eq!(log.read_cached(3, 1 << 20, true).unwrap().batches.len(), 2);
        log.publish_done(Some((stamped(0, 3), 3)));
        // The cache started at 3 (the first answer it could place); 0..3 is read from SeaweedMQ.
        assert!(log.read_cached(0, 1 << 20, true).is_none());
        assert_eq!(log.read_cached(5, 1 << 20, true).unwrap().batches.len(), 1);
        // With an earlier publish still in flight, a later answer waits for it.
        log.publish_started();
        log.publish_started();
        log.publish_done(Some((stamped(8, 1), 1)));
        assert!(log.read_cached(8, 1 << 20, true).is_none());
        log.publish_done(Some((stamped(6, 2), 2)));
        assert_eq!(log.read_cached(6, 1 << 20, true).unwrap().batches.len(), 2);
        // A failed publish leaves a gap: the next answer restarts the cache once nothing is
        // in flight.
        log.publish_started();
        log.publish_started();
        log.publish_done(Some((stamped(12, 1), 1)));
        log.publish_done(None);
        assert!(log.read_cached(6, 1 << 20, true).is_none());
        assert_eq!(log.read_cached(12, 1 << 20, true).unwrap().batches.len(), 1);
        assert_eq!(log.high_watermark(), 13);
    }

    #[test]
    fn serves_consecutive_batches_and_restarts_on_a_gap() {
        let mut log = SeaweedCache::new(1 << 20);
        assert!(log.read_cached(0, 1 << 20, true).is_none());
        done(&mut log, stamped(10, 2), 2);
        done(&mut log, stamped(12, 3), 3);
        assert_eq!(log.high_watermark(), 15);
        let r = log.read_cached(13, 1 << 20, true).unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(batch::base_offset(&r.batches[0]), 12);
        let r = log.read_cached(10, 1 << 20, true).unwrap();
        assert_eq!(r.batches.len(), 2);
        assert!(log.read_cached(15, 1 << 20, true).is_none());
        assert!(log.read_cached(9, 1 << 20, true).is_none());
        // Someone else wrote 15..20: the next batch of ours starts a new cache.
        done(&mut log, stamped(20, 1), 1);
        assert!(log.read_cached(12, 1 << 20, true).is_none());
        assert_eq!(log.read_cached(20, 1 << 20, true).unwrap().batches.len(), 1);
        assert_eq!(log.high_watermark(), 21);
    }

    #[test]
    fn stays_within_its_byte_limit_and_the_log_start() {
        let one = stamped(0, 1).len();
        let mut log = SeaweedCache::new(one * 3);
        for i in 0..10 {
            done(&mut log, stamped(i, 1), 1);
        }
        assert!(log.cached_bytes() <= one * 3);
        assert!(log.read_cached(6, 1 << 20, true).is_none());
        assert!(log.read_cached(7, 1 << 20, true).is_some());
        log.observe_range(9, 10);
        assert!(log.read_cached(8, 1 << 20, true).is_none());
        assert_eq!(log.read_cached(9, 1, true).unwrap().batches.len(), 1);
        assert_eq!(log.read_cached(9, 1, false).unwrap().batches.len(), 0);
    }
}
