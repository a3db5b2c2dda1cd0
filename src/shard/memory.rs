//! Partition ops on the embedded backend: every op is answered at once, on the owning shard,
//! from its [`Partition`]s' in-memory logs.

use super::ops::{PartitionOp, PartitionReply};
use super::{OwnedPartition, Shard, TopicPartition};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::partition::Partition;
use crate::topics::TopicSettings;
use crate::util::{now_ms, Notify};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use uuid::Uuid;

/// The memory partitions one shard owns.
#[derive(Default)]
pub(crate) struct MemoryPartitions {
    pub partitions: RefCell<HashMap<TopicPartition, Partition>>,
}

impl MemoryPartitions {
    /// Applies one partition op on the owner.
    pub fn apply(&self, tp: &TopicPartition, op: PartitionOp) -> PartitionReply {
        let mut partitions = self.partitions.borrow_mut();
        let Some(p) = partitions.get_mut(tp) else {
            return PartitionReply::failed(&op, ErrorCode::UnknownTopicOrPartition);
        };
        match op {
            PartitionOp::Produce { records } => {
                PartitionReply::Produce(p.produce(records.as_ref(), now_ms()))
            }
            PartitionOp::Read {
                offset,
                max_bytes,
                at_least_one,
            } => PartitionReply::Read(p.log.read(offset, max_bytes, at_least_one)),
            PartitionOp::ListOffset { timestamp } => {
                PartitionReply::ListOffset(p.log.list_offset(timestamp))
            }
            PartitionOp::DeleteRecords { offset } => {
                PartitionReply::DeleteRecords(p.log.delete_records(offset))
            }
            PartitionOp::EndOffset => {
                PartitionReply::EndOffset(Ok((p.log.log_start_offset(), p.log.next_offset())))
            }
            // Nothing to hold open in memory.
            PartitionOp::Attach => PartitionReply::Attached(Ok(())),
        }
    }

    /// Applies time- and size-based retention to every partition.
    fn sweep_retention(&self) {
        let now = now_ms();
        for (tp, p) in self.partitions.borrow_mut().iter_mut() {
            p.log.enforce_retention(now);
            let c = p.log.compact(now);
            if c.records_removed + c.batches_rewritten + c.batches_dropped > 0 {
                log::debug!("{}[{}]: compacted: {c:?}", tp.topic, tp.partition);
            }
        }
    }
}

impl OwnedPartition for Partition {
    fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    fn next_offset(&self) -> i64 {
        self.log.next_offset()
    }

    fn appended(&self) -> &Notify {
        &self.appended
    }

    fn set_settings(&mut self, settings: TopicSettings) {
        Partition::set_settings(self, settings)
    }
}

/// Runs retention and a compaction pass every `RETENTION_SWEEP_MS` on the shard's memory partitions.
pub(super) fn start_sweeper(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            shard
                .pause(Duration::from_millis(limits::RETENTION_SWEEP_MS))
                .await;
            if shard.stopping.get() {
                break;
            }
            if let super::Backend::Memory(m) = &shard.backend {
                m.sweep_retention();
            }
        }
    })
    .detach();
}
