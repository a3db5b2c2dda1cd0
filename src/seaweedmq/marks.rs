//! Marks and fences: how the gRPC core makes sure kelp never acknowledges a record at an offset
//! another record holds, and never serves a partition that lost records as if it were whole.
//!
//! A SeaweedMQ broker numbers records itself. A stock 4.44-4.53 broker acknowledges records
//! before the filer has them (a crash forgets them), resumes numbering from a checkpoint up to
//! 2 s old after a crash, and renumbers a partition from 0 when it loads it again after every
//! publisher left (see ARCHITECTURE.md, "SeaweedMQ backend"). kelp cannot repair that; it
//! detects it and refuses:
//!
//! - **Marks.** For every partition the core remembers the end of what the broker acknowledged
//!   (`acked_end`: the last acked offset + 1) and keeps it in the filer's key-value store
//!   ([`mark_key`]), written at most every `SEAWEEDMQ_MARK_INTERVAL_MS` and at shutdown, so that
//!   it outlives kelp. Before a partition is first used by this process (published to, read,
//!   ranged) the core reads its mark and the broker's range ([`Marks::check`]): a log that ends
//!   below the mark lost acknowledged records.
//! - **Fences.** A partition whose log ends below an offset it acknowledged, or whose broker
//!   numbers a new record below one it acknowledged before, is fenced: publishes and reads of it
//!   fail with [`SeaweedError::Fenced`] (retriable for clients, so nothing is lost on their
//!   side), one error line names the cause and the fix, and `/metrics` counts it. A fence lasts
//!   until kelp restarts and finds the partition whole again.
//!
//! Without a filer (`--seaweedmq-filer` unset) there are no marks: the checks run only against
//! what this process saw acknowledged.

use super::error::{SeaweedError, SeaweedResult};
use super::filer::Filer;
use super::PublishStats;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// First byte of a stored mark.
const MARK_VERSION: u8 = 1;

/// Where a partition's mark lives in the filer's key-value store.
pub fn mark_key(namespace: &str, topic: &str, partition: i32) -> String {
    format!("kelp/marks/{namespace}/{topic}/{partition}")
}

/// A mark as stored: `version (1) | acked end: i64 BE`.
pub fn encode_mark(acked_end: i64) -> Bytes {
    let mut b = Vec::with_capacity(9);
    b.push(MARK_VERSION);
    b.extend_from_slice(&acked_end.to_be_bytes());
    Bytes::from(b)
}

/// A stored mark: `Ok(None)` when there is none, `Err` for bytes kelp did not write.
pub fn decode_mark(b: &[u8]) -> Result<Option<i64>, String> {
    match b {
        [] => Ok(None),
        [MARK_VERSION, end @ ..] if end.len() == 8 => {
            let end = i64::from_be_bytes(end.try_into().expect("8 bytes"));
            if end < 0 {
                return Err(format!("a negative mark {end}"));
            }
            Ok(Some(end))
        }
        _ => Err(format!("{} bytes that are not a kelp mark", b.len())),
    }
}

/// What the core knows of one partition. Shared (`Rc`) with the partition's publisher, which
/// moves `acked_end` on every ack without a map lookup.
#[derive(Default)]
pub(crate) struct PartitionMark {
    /// Checked against its mark since this process started.
    checked: Cell<bool>,
    fenced: RefCell<Option<Rc<str>>>,
    /// The last offset the broker acknowledged, plus one (or the mark read at the check).
    acked_end: Cell<i64>,
    /// What the filer holds (0: nothing yet).
    stored: Cell<i64>,
}

impl PartitionMark {
    /// The broker acknowledged records up to `end` (exclusive).
    pub(crate) fn acked(&self, end: i64) {
        if end > self.acked_end.get() {
            self.acked_end.set(end);
        }
    }

    /// The end of what was acknowledged, as far as this process knows (its own acks and the
    /// mark it read).
    pub(crate) fn acked_end(&self) -> i64 {
        self.acked_end.get()
    }

    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.borrow().is_some()
    }
}

/// The marks and fences of every partition the core has touched.
pub(crate) struct Marks {
    filer: Option<Filer>,
    namespace: String,
    parts: RefCell<HashMap<(String, i32), Rc<PartitionMark>>>,
    /// `fenced_partitions` is the `/metrics` gauge.
    stats: Arc<PublishStats>,
}

impl Marks {
    pub(crate) fn new(filer: Option<Filer>, namespace: String, stats: Arc<PublishStats>) -> Self {
        Marks {
            filer,
            namespace,
            parts: RefCell::new(HashMap::new()),
            stats,
        }
    }

    /// The partition's entry, created on first use.
    pub(crate) fn of(&self, topic: &str, partition: i32) -> Rc<PartitionMark> {
        self.parts
            .borrow_mut()
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// Drops what this process knows of a partition that moved to another kelp (its mark is
    /// written first, if it moved on). Used again, it is checked against the filer afresh.
    pub(crate) fn forget(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        let unwritten = self
            .parts
            .borrow()
            .get(&key)
            .is_some_and(|p| p.acked_end.get() > p.stored.get() || p.is_fenced());
        if !unwritten {
            self.parts.borrow_mut().remove(&key);
        }
    }

    /// The error a fenced partition answers with, if it is fenced.
    pub(crate) fn fenced(&self, topic: &str, partition: i32) -> Option<SeaweedError> {
        let reason = self
            .parts
            .borrow()
            .get(&(topic.to_string(), partition))?
            .fenced
            .borrow()
            .clone()?;
        Some(SeaweedError::Fenced {
            topic: topic.to_string(),
            partition,
            reason: reason.to_string(),
        })
    }

    /// Fences a partition (logged once; later causes at debug level) and returns the error
    /// its callers get.
    pub(crate) fn fence(&self, topic: &str, partition: i32, reason: String) -> SeaweedError {
        let p = self.of(topic, partition);
        if !p.is_fenced() {
            log::error!(
                "SeaweedMQ partition {topic}[{partition}] fenced: {reason}. kelp no longer \
                 writes to or reads from it (clients get retriable errors) until a restart \
                 finds it whole. Stock SeaweedFS 4.44-4.53 acknowledges records before the \
                 filer has them, resumes offsets from a stale checkpoint after a crash and \
                 renumbers a reloaded partition from 0; run the weed that scripts/seaweedmq-up.sh \
                 builds with kelp's patches (scripts/seaweedfs/patches, see ARCHITECTURE.md)"
            );
            *p.fenced.borrow_mut() = Some(Rc::from(reason.as_str()));
            self.stats.fenced_partitions.fetch_add(1, Ordering::Relaxed);
        } else {
            log::debug!("{topic}[{partition}]: already fenced; also {reason}");
        }
        SeaweedError::Fenced {
            topic: topic.to_string(),
            partition,
            reason,
        }
    }

    /// Whether the partition was checked against its mark since start.
    pub(crate) fn is_checked(&self, topic: &str, partition: i32) -> bool {
        self.parts
            .borrow()
            .get(&(topic.to_string(), partition))
            .is_some_and(|p| p.checked.get())
    }

    /// Reads the partition's mark (0 without a filer or a mark).
    pub(crate) async fn read_mark(&self, topic: &str, partition: i32) -> SeaweedResult<i64> {
        let Some(filer) = &self.filer else {
            return Ok(0);
        };
        let key = mark_key(&self.namespace, topic, partition);
        let value = filer.kv_get(&key).await?;
        match decode_mark(&value) {
            Ok(end) => Ok(end.unwrap_or(0)),
            Err(e) => {
                // Not ours: a mark that cannot be read protects nothing, and refusing the
                // partition for it would let a foreign key deny service.
                log::warn!("filer key {key}: {e}; taken as no mark");
                Ok(0)
            }
        }
    }

    /// Compares the partition's log end (`high_water_mark`, from the broker) with what was
    /// acknowledged before (`mark`, and this process's own acks): fences it when the log lost
    /// records, otherwise records it as checked.
    pub(crate) fn settle(
        &self,
        topic: &str,
        partition: i32,
        mark: i64,
        high_water_mark: i64,
    ) -> SeaweedResult<()> {
        let p = self.of(topic, partition);
        p.acked(mark);
        if mark > p.stored.get() {
            p.stored.set(mark);
        }
        let known = p.acked_end();
        if high_water_mark < known {
            return Err(self.fence(
                topic,
                partition,
                format!(
                    "its log ends at offset {high_water_mark}, but records up to offset {} were \
                     acknowledged",
                    known - 1
                ),
            ));
        }
        p.checked.set(true);
        Ok(())
    }

    /// Writes the marks that moved since they were last written; returns how many were.
    pub(crate) async fn flush(&self) -> usize {
        let Some(filer) = &self.filer else {
            return 0;
        };
        let dirty: Vec<((String, i32), Rc<PartitionMark>)> = self
            .parts
            .borrow()
            .iter()
            .filter(|(_, p)| p.acked_end.get() > p.stored.get() && !p.is_fenced())
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        let mut written = 0;
        for ((topic, partition), p) in dirty {
            let end = p.acked_end.get();
            let key = mark_key(&self.namespace, &topic, partition);
            match filer.kv_put(&key, encode_mark(end)).await {
                Ok(()) => {
                    p.stored.set(p.stored.get().max(end));
                    written += 1;
                }
                Err(e) => {
                    log::warn!("cannot store the mark of {topic}[{partition}] in the filer: {e}");
                    break;
                }
            }
        }
        written
    }

    pub(crate) fn filer_addr(&self) -> Option<&str> {
        self.filer.as_ref().map(Filer::addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> Marks {
        Marks::new(None, "kafka".into(), Arc::default())
    }

    #[test]
    fn a_log_below_what_was_acked_is_fenced_once() {
        let m = marks();
        m.of("t", 0).acked(100);
        assert!(m.settle("t", 0, 0, 100).is_ok());
        assert!(m.is_checked("t", 0));
        // A mark from an earlier process above the log's end.
        let e = m.settle("t", 1, 50, 0).unwrap_err();
        assert!(
            matches!(e, SeaweedError::Fenced { partition: 1, .. }),
            "{e}"
        );
        assert!(m.fenced("t", 1).is_some());
        assert!(m.fenced("t", 0).is_none());
        m.fence("t", 1, "again".into());
        assert_eq!(m.stats.fenced_partitions.load(Ordering::Relaxed), 1);
        // This process's own acks count too: a log that ends below them lost records.
        m.of("t", 2).acked(10);
        assert!(m.settle("t", 2, 0, 9).is_err());
    }

    proptest::proptest! {
        #[test]
        fn marks_round_trip(end in 0i64..i64::MAX) {
            proptest::prop_assert_eq!(decode_mark(&encode_mark(end)), Ok(Some(end)));
        }

        #[test]
        fn foreign_bytes_are_never_a_mark(bytes in proptest::collection::vec(proptest::num::u8::ANY, 1..20)) {
            let ours = bytes.len() == 9 && bytes[0] == MARK_VERSION && bytes[1] & 0x80 == 0;
            proptest::prop_assert_eq!(decode_mark(&bytes).is_ok(), ours);
        }
    }
}
