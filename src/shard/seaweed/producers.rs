//! An owner taking a SeaweedMQ partition (kelp started, or, with several instances, the
//! partition moved to this one) rebuilds the partition's idempotence table from what is stored:
//! the first record of every idempotent producer's batch carries the producer's id, epoch and
//! sequence (`seaweedmq::records::ProducerStamp`). It reads the last
//! `SEAWEEDMQ_PRODUCER_SCAN_RECORDS` records; until it has, produces to the partition wait, in
//! arrival order, so that a producer's retry of a batch stored before the owner changed is
//! answered with where it went instead of being stored twice.

use super::partition::{ProducersState, Torn};
use crate::config::limits;
use crate::seaweedmq::records::{self, ProducerStamp};
use crate::seaweedmq::SeaweedResult;
use crate::shard::{Shard, TopicPartition};
use std::rc::Rc;

impl Shard {
    /// Whether the partition's idempotence table is rebuilt; starts rebuilding it if nobody
    /// has. A partition this shard does not own counts as rebuilt (its ops fail elsewhere).
    pub(super) fn producers_ready(self: &Rc<Self>, tp: &TopicPartition) -> bool {
        {
            let mut partitions = self.sw().partitions.borrow_mut();
            let Some(p) = partitions.get_mut(tp) else {
                return true;
            };
            match p.producers_state {
                ProducersState::Loaded => return true,
                ProducersState::Loading => return false,
                ProducersState::NotLoaded => p.producers_state = ProducersState::Loading,
            }
        }
        // Spawned with the partitions released: glommio may run a new task right away, inside
        // this call, and the load borrows them at once (a kelp panicked with "RefCell already
        // borrowed" when a taken partition's range answer was already there).
        let this = self.clone();
        let tp = tp.clone();
        glommio::spawn_local(async move { this.load_producers(tp).await }).detach();
        false
    }

    async fn load_producers(self: Rc<Self>, tp: TopicPartition) {
        let scanned = self.scan_producers(&tp).await;
        let waiting = {
            let mut partitions = self.sw().partitions.borrow_mut();
            let Some(p) = partitions.get_mut(&tp) else {
                return;
            };
            match &scanned {
                Ok((stamps, records, end)) => {
                    for (stamp, offset) in stamps {
                        if offset + stamp.records as i64 > *end {
                            // Only the last batch can be torn: the records of one partition
                            // reach SeaweedMQ in order, on one stream.
                            let stored = (end - offset) as usize;
                            p.torn = Some(Torn {
                                stamp: *stamp,
                                base_offset: *offset,
                                stored,
                            });
                            log::info!(
                                "{}[{}]: the last batch of producer {} is torn ({stored} of its {} records stored at offset {offset}); its retry will complete it",
                                tp.topic,
                                tp.partition,
                                stamp.producer_id,
                                stamp.records
                            );
                            continue;
                        }
                        log::trace!(
                            "{}[{}]: stored batch of producer {} epoch {} sequences {}+{} at offset {offset}",
                            tp.topic,
                            tp.partition,
                            stamp.producer_id,
                            stamp.epoch,
                            stamp.base_sequence,
                            stamp.records
                        );
                        p.restore(stamp, *offset);
                    }
                    p.producers_state = ProducersState::Loaded;
                    log::debug!(
                        "{}[{}]: producer state rebuilt from the last {records} records ({} batches)",
                        tp.topic,
                        tp.partition,
                        stamps.len()
                    );
                }
                Err(e) => {
                    // Tried again by the next produce or the keeper's next round.
                    p.producers_state = ProducersState::NotLoaded;
                    log::warn!(
                        "{}[{}]: cannot read the stored producer state yet: {e}",
                        tp.topic,
                        tp.partition
                    );
                }
            }
            std::mem::take(&mut p.waiting)
        };
        for (records, tx) in waiting {
            let Err(e) = &scanned else {
                // In arrival order, each queued on the gRPC core before the next.
                match self.submit_produce(&tp, records) {
                    Ok(done) => {
                        let _ = tx.send(done);
                    }
                    Err(outcome) => {
                        glommio::spawn_local(async move {
                            if let Ok(done) = outcome.await {
                                let _ = tx.send(done);
                            }
                        })
                        .detach();
                    }
                }
                continue;
            };
            let _ = tx.send(super::partition::failure(e));
        }
    }

    /// The producer stamps of the partition's last records, oldest first, with their offsets,
    /// how many records were read, and the offset the read ended at (the log's end).
    async fn scan_producers(
        self: &Rc<Self>,
        tp: &TopicPartition,
    ) -> SeaweedResult<(Vec<(ProducerStamp, i64)>, i64, i64)> {
        let (start, end) = self.seaweed_range(tp).await?;
        let from = start.max(end - limits::SEAWEEDMQ_PRODUCER_SCAN_RECORDS);
        let handle = self.sw().handle.clone();
        let mut at = from;
        let mut stamps = Vec::new();
        while at < end {
            let fetched = handle.fetch(
                &tp.topic,
                tp.partition,
                at,
                limits::SEAWEEDMQ_SCAN_FETCH_BYTES,
                limits::SEAWEEDMQ_FETCH_MESSAGES_MAX,
            );
            let f = self.foreign(fetched).await?;
            if f.messages.is_empty() {
                // Stored records the broker does not serve: a batch could not be told whole
                // from torn. Tried again later.
                return Err(crate::seaweedmq::SeaweedError::Broker {
                    code: crate::seaweedmq::broker_codes::UNKNOWN,
                    message: format!("no records served at offset {at}, below the log's end {end}"),
                });
            }
            for (i, m) in f.messages.iter().enumerate() {
                if let Some(stamp) = records::decode(m).producer {
                    stamps.push((stamp, at + i as i64));
                }
            }
            at += f.messages.len() as i64;
        }
        Ok((stamps, at - from, at))
    }
}
