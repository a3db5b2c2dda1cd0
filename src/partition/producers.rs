//! Idempotent-producer state of one partition, the same on both backends: the last
//! `PRODUCER_BATCHES_REMEMBERED` batches of each producer (least recently used producers are
//! forgotten past `PRODUCERS_PER_PARTITION_MAX`), so that a retried batch gets its original
//! offset and a gap or an old epoch is refused as Kafka refuses it.

use super::ProduceOutcome;
use crate::config::limits;
use crate::error::ErrorCode;
use crate::protocol::batch::BatchInfo;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// A batch remembered for duplicate detection.
#[derive(Debug, Clone, Copy)]
pub struct SeenBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    /// -1 while the batch is still being written (SeaweedMQ: its offset is not known yet).
    pub base_offset: i64,
    pub log_append_time_ms: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    /// The last batches appended, oldest first.
    batches: VecDeque<SeenBatch>,
    /// For least-recently-used eviction.
    last_used: u64,
}

/// What [`Producers::check`] found a batch to be.
pub enum SeqCheck {
    /// The next batch of its producer: append it.
    Append,
    /// A retry of a batch already seen: answer with where it went.
    Duplicate(SeenBatch),
}

/// The producers of one partition.
#[derive(Default)]
pub struct Producers {
    entries: HashMap<i64, ProducerEntry>,
    /// Ticks on every remembered batch, for least-recently-used eviction.
    clock: u64,
}

impl Producers {
    /// Checks a batch of an idempotent producer against what this partition has seen of it.
    pub fn check(&self, info: &BatchInfo) -> Result<SeqCheck, ProduceOutcome> {
        let Some(entry) = self.entries.get(&info.producer_id) else {
            // A producer this partition has no state for (new to it, or forgotten: evicted,
            // or written before the state kept here) is taken at whatever sequence it sends,
            // as Kafka does since KIP-360.
            return Ok(SeqCheck::Append);
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
            return Err(out_of_order(format!(
                "a new producer epoch must start at sequence 0, not {}",
                info.base_sequence
            )));
        }
        let last_seq = info.last_sequence();
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == info.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate(*seen));
        }
        let expected = entry.batches.back().map_or(0, |b| {
            // Sequences wrap to 0 after i32::MAX.
            if b.last_seq == i32::MAX {
                0
            } else {
                b.last_seq + 1
            }
        });
        if info.base_sequence != expected {
            return Err(out_of_order(format!(
                "expected sequence {expected}, got {}",
                info.base_sequence
            )));
        }
        Ok(SeqCheck::Append)
    }

    /// Records an appended batch (`base_offset` -1 while its offset is not known yet).
    pub fn remember(&mut self, info: &BatchInfo, base_offset: i64, log_append_time_ms: i64) {
        let seen = SeenBatch {
            first_seq: info.base_sequence,
            last_seq: info.last_sequence(),
            base_offset,
            log_append_time_ms,
        };
        self.remember_seen(info.producer_id, info.producer_epoch, seen);
    }

    /// Records a batch found in storage (an owner rebuilding the table), in offset order.
    pub fn restore(&mut self, producer_id: i64, epoch: i16, seen: SeenBatch) {
        self.remember_seen(producer_id, epoch, seen);
    }

    fn remember_seen(&mut self, producer_id: i64, epoch: i16, seen: SeenBatch) {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(&producer_id)
            && self.entries.len() >= limits::PRODUCERS_PER_PARTITION_MAX
        {
            if let Some((&oldest, _)) = self.entries.iter().min_by_key(|(_, e)| e.last_used) {
                self.entries.remove(&oldest);
            }
        }
        let entry = self
            .entries
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::new(),
                last_used: clock,
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_used = clock;
        if entry.batches.len() == limits::PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(seen);
    }

    /// Drops the remembered batches of failed writes (and any later ones of the same
    /// producer), so that the client's retry is appended rather than taken for a duplicate.
    pub fn forget(&mut self, batches: &[(Bytes, BatchInfo)]) {
        for (_, info) in batches.iter().filter(|(_, i)| i.producer_id >= 0) {
            if let Some(entry) = self.entries.get_mut(&info.producer_id) {
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

    /// Sets the offset of a batch remembered before its offset was known.
    pub fn set_base(&mut self, info: &BatchInfo, base_offset: i64, log_append_time_ms: i64) {
        if let Some(entry) = self.entries.get_mut(&info.producer_id) {
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
}

fn out_of_order(message: String) -> ProduceOutcome {
    ProduceOutcome::error(ErrorCode::OutOfOrderSequenceNumber, Some(message))
}
