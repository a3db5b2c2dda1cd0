//! Reads on the SeaweedMQ backend: what the cache does not hold is fetched by offset
//! (`FetchMessage`) and rebuilt as one uncompressed batch; ListOffsets from the broker's range,
//! or by timestamp through a binary search over single-record fetches (SeaweedMQ keeps no time
//! index).

use crate::config::limits;
use crate::error::ErrorCode;
use crate::seaweedmq::{records, SeaweedError, SeaweedResult};
use crate::shard::{Shard, TopicPartition};
use crate::storage::{
    OffsetAndTimestamp, ReadResult, EARLIEST_LOCAL_TIMESTAMP, EARLIEST_TIMESTAMP,
    LATEST_TIERED_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP,
};
use std::rc::Rc;

impl Shard {
    /// Log start and high-water mark from the broker, remembered by the partition.
    pub(super) async fn seaweed_range(
        self: &Rc<Self>,
        tp: &TopicPartition,
    ) -> SeaweedResult<(i64, i64)> {
        let handle = self.sw().handle.clone();
        let r = self
            .foreign(handle.partition_range(&tp.topic, tp.partition))
            .await?;
        Ok((
            r.earliest.max(0),
            self.observe_range(tp, r.earliest, r.high_water_mark),
        ))
    }

    /// Tells the partition a high-water mark the broker reported; returns the log start and
    /// high-water mark as the partition now knows them.
    fn observe_high_watermark(&self, tp: &TopicPartition, high_watermark: i64) -> (i64, i64) {
        let mut partitions = self.sw().partitions.borrow_mut();
        match partitions.get_mut(tp) {
            Some(p) => {
                let start = p.cache.log_start_offset();
                p.cache.observe_range(start, high_watermark);
                (start, p.cache.high_watermark())
            }
            None => (0, high_watermark),
        }
    }

    /// Tells the partition what the broker said of its range; returns the high-water mark
    /// as the partition now knows it.
    fn observe_range(&self, tp: &TopicPartition, log_start: i64, high_watermark: i64) -> i64 {
        let mut partitions = self.sw().partitions.borrow_mut();
        match partitions.get_mut(tp) {
            Some(p) => {
                p.cache.observe_range(log_start, high_watermark);
                p.cache.high_watermark()
            }
            None => high_watermark,
        }
    }

    /// Reads from SeaweedMQ what the cache does not hold, as one uncompressed batch.
    pub(super) async fn seaweed_read(
        self: &Rc<Self>,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult, ErrorCode> {
        let handle = self.sw().handle.clone();
        let max_bytes = max_bytes.clamp(1, i32::MAX as usize) as i32;
        let fetched = self
            .foreign(handle.fetch(
                &tp.topic,
                tp.partition,
                offset,
                max_bytes,
                limits::SEAWEEDMQ_FETCH_MESSAGES_MAX,
            ))
            .await;
        match fetched {
            Ok(f) => {
                // FetchMessage's log start is the start of the broker's memory buffer, not of
                // the log: the log start stays what the range calls said.
                let (log_start, mut hw) = self.observe_high_watermark(tp, f.high_water_mark);
                let mut out = ReadResult {
                    high_watermark: hw,
                    log_start_offset: log_start,
                    ..ReadResult::default()
                };
                if f.messages.is_empty() && offset < f.high_water_mark {
                    self.warn_empty_read(tp, offset, f.high_water_mark);
                }
                if !f.messages.is_empty() {
                    let mut recs: Vec<_> = f.messages.iter().map(records::decode).collect();
                    hw = hw.max(offset + recs.len() as i64);
                    // The broker's max_bytes is a hint (it answers in whole log windows): the
                    // partition's limit is kept here, with at least one record (KIP-74).
                    recs.truncate(records::fitting(&recs, max_bytes as usize));
                    let batch = records::to_batch(offset, &recs);
                    out.high_watermark = hw;
                    out.bytes = batch.len();
                    out.batches.push(batch);
                }
                Ok(out)
            }
            Err(SeaweedError::OffsetOutOfRange {
                high_water_mark, ..
            }) => {
                // The fetch handler then asks the range for the answer's log start.
                self.observe_high_watermark(tp, high_water_mark);
                Err(ErrorCode::OffsetOutOfRange)
            }
            Err(e) => {
                log::debug!("fetch {}[{}] at {offset}: {e}", tp.topic, tp.partition);
                Err(ErrorCode::from_seaweed(&e, false))
            }
        }
    }

    /// The broker answered a read below its high-water mark with no records and no error
    /// (its `FetchMessage` does so when its log buffer or disk read comes back empty; see
    /// `seaweedmq-interface.md`). A consumer positioned there gets empty answers and fetches the
    /// same offset again and again, so an operator must hear of it; at most one line per shard
    /// every `SEAWEEDMQ_EMPTY_READ_WARN_MS`.
    fn warn_empty_read(&self, tp: &TopicPartition, offset: i64, high_watermark: i64) {
        let warned = &self.sw().empty_read_warned;
        let every = std::time::Duration::from_millis(limits::SEAWEEDMQ_EMPTY_READ_WARN_MS);
        if warned.get().is_some_and(|t| t.elapsed() < every) {
            return;
        }
        warned.set(Some(std::time::Instant::now()));
        log::warn!(
            "SeaweedMQ answered a read of {}[{}] at offset {offset} with no records, below its \
             high-water mark {high_watermark}: a consumer there makes no progress until the \
             broker serves that offset",
            tp.topic,
            tp.partition
        );
    }

    /// The timestamp of the record at `offset`, or `None` past the end.
    async fn seaweed_timestamp_at(
        self: &Rc<Self>,
        tp: &TopicPartition,
        offset: i64,
    ) -> SeaweedResult<Option<i64>> {
        let handle = self.sw().handle.clone();
        let f = self
            .foreign(handle.fetch(&tp.topic, tp.partition, offset, 1, 1))
            .await?;
        Ok(f.messages.first().map(|m| records::decode(m).timestamp_ms))
    }

    /// ListOffsets on SeaweedMQ: earliest and latest from the broker's range; a timestamp by
    /// binary search over the records' timestamps (SeaweedMQ keeps no time index; timestamps
    /// are taken to grow with offsets, as Kafka's own index assumes per segment).
    pub(super) async fn seaweed_list_offset(
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
}
