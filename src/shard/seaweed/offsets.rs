//! Committed offsets on the SeaweedMQ backend: every commit is stored before the client hears
//! it succeeded. A group belongs to one partition q of the offsets topic [`OFFSETS_TOPIC`]
//! ([`super::offsets_partition`]); the instance that leads q coordinates the group, and when it
//! takes q each of its shards loads the offsets of its share of q's groups.
//!
//! Where they are stored:
//! - with a filer (`--seaweedmq-filer`, which a cluster has): one filer entry per group,
//!   rewritten on every commit ([`super::offset_entries`]); storage and load time are bounded
//!   by the groups alive;
//! - without one: one record per commit in q itself (the latest record per key wins; an empty
//!   value is a tombstone, layout [`super::offset_records`]). That topic only grows, and a load
//!   replays it all.
//!
//! Until a shard's load is done, q's groups answer COORDINATOR_LOAD_IN_PROGRESS, which every
//! client retries; groups another instance coordinates answer NOT_COORDINATOR.

use super::offset_records::{decode_key, decode_value, encode_key, encode_value, StoredCommit};
use super::{answer, offsets_partition, OFFSETS_TOPIC};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::group::{self, CommittedOffset, GroupOp, GroupReply};
use crate::seaweedmq::{Record, SeaweedError, SeaweedHandle};
use crate::shard::{shard_for_group, Shard};
use crate::util::now_ms;
use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The latest commit (or tombstone) per (group, topic, partition) found in a replay.
pub(super) type Latest = HashMap<(String, String, i32), Option<StoredCommit>>;

/// One commit as the coordinator is asked to store it: (topic, partition, offset, leader epoch,
/// metadata).
pub(super) type Commit = (String, i32, i64, i32, Option<String>);

impl Shard {
    /// Group ops on the SeaweedMQ backend: commits and deletions are stored first (one write
    /// of a group at a time); everything else is the coordinator's as on the memory backend.
    pub(in crate::shard) async fn seaweed_group_op(self: &Rc<Self>, op: GroupOp) -> GroupReply {
        if let Some(code) = op.group_id().and_then(|g| self.group_not_served(g)) {
            return GroupReply::Code(code);
        }
        match op {
            GroupOp::Commit {
                group,
                member,
                instance,
                generation,
                offsets,
            } => {
                let work = async {
                    let now = Instant::now();
                    let checked = self.groups.borrow_mut().check_commit(
                        &group,
                        &member,
                        instance.as_deref(),
                        generation,
                        now,
                    );
                    match checked {
                        Err(e) => GroupReply::Codes(Err(e)),
                        Ok(()) => self.store_commit(&group, offsets, now).await,
                    }
                };
                self.one_write_at_a_time(&group, work).await
            }
            GroupOp::Delete { group } => {
                let work = async {
                    let keys = self.groups.borrow().offset_keys(&group);
                    let code = self.groups.borrow_mut().delete_group(&group);
                    if code == ErrorCode::None {
                        self.store_deletion(&group, keys).await;
                    }
                    GroupReply::Code(code)
                };
                self.one_write_at_a_time(&group, work).await
            }
            GroupOp::DeleteOffsets { group, parts } => {
                let work = async {
                    let r = self.groups.borrow_mut().delete_offsets(&group, &parts);
                    if let Ok(codes) = &r {
                        let gone = parts
                            .iter()
                            .zip(codes)
                            .filter(|(_, c)| **c == ErrorCode::None)
                            .map(|(k, _)| k.clone())
                            .collect();
                        self.store_deletion(&group, gone).await;
                    }
                    GroupReply::Codes(r)
                };
                self.one_write_at_a_time(&group, work).await
            }
            other => group::apply(&self.groups, other).await,
        }
    }

    /// Stores a checked commit (in the group's filer entry, or as records of the offsets
    /// topic without a filer), then gives it to the coordinator.
    async fn store_commit(
        self: &Rc<Self>,
        group: &str,
        offsets: Vec<Commit>,
        now: Instant,
    ) -> GroupReply {
        // A too-long metadata string is refused per partition by the coordinator; never stored.
        let kept: Vec<&Commit> = offsets
            .iter()
            .filter(|(_, _, _, _, m)| self.groups.borrow().metadata_ok(m.as_deref()))
            .collect();
        let stored = if self.offsets_in_filer() {
            let content = self.group_entry(group, &kept).encode();
            if content.len() > limits::SEAWEEDMQ_GROUP_ENTRY_BYTES_MAX {
                log::warn!(
                    "group {group:?}: commit refused, its committed offsets would take {} bytes (limit {})",
                    content.len(),
                    limits::SEAWEEDMQ_GROUP_ENTRY_BYTES_MAX
                );
                let refused = vec![ErrorCode::OffsetMetadataTooLarge; offsets.len()];
                return GroupReply::Codes(Ok(refused));
            }
            self.write_group_entry(group, content).await
        } else {
            let ms = now_ms();
            let records = kept
                .iter()
                .map(|(t, p, offset, epoch, metadata)| Record {
                    key: encode_key(group, t, *p),
                    value: encode_value(*offset, *epoch, ms, metadata.as_deref()),
                    ts_ns: ms.saturating_mul(1_000_000),
                })
                .collect();
            self.write_offsets(group, records).await
        };
        if let Err(e) = stored {
            log::warn!("group {group:?}: commit not stored in SeaweedMQ: {e}");
            return GroupReply::Codes(Ok(vec![ErrorCode::CoordinatorNotAvailable; offsets.len()]));
        }
        let codes = self.groups.borrow_mut().commit_offsets(group, offsets, now);
        GroupReply::Codes(Ok(codes))
    }

    /// Runs a write to offsets partition `q`, counted, so that the partition is let go of only
    /// once no write is in flight.
    pub(super) async fn counting_writes<T>(
        &self,
        q: i32,
        write: impl std::future::Future<Output = T>,
    ) -> T {
        let count = |d: isize| {
            if let Some(p) = self.sw().offsets.borrow_mut().get_mut(&q) {
                p.writes = p.writes.saturating_add_signed(d);
            }
        };
        count(1);
        let out = write.await;
        count(-1);
        out
    }

    /// Writes a group's commit records to its offsets partition.
    async fn write_offsets(
        self: &Rc<Self>,
        group: &str,
        records: Vec<Record>,
    ) -> Result<(), SeaweedError> {
        if records.is_empty() {
            return Ok(());
        }
        let q = offsets_partition(group, self.cluster().offsets_partitions);
        let write = async {
            match self.sw().handle.publish_now(OFFSETS_TOPIC, q, records) {
                Ok(rx) => answer(self, rx).await.map(|_| ()),
                Err(e) => Err(e),
            }
        };
        self.counting_writes(q, write).await
    }

    /// Deleted offsets must stay deleted after a restart (the coordinator has let go of them
    /// already); a failure is logged (the offsets would come back on the next start).
    async fn store_deletion(self: &Rc<Self>, group: &str, keys: Vec<(String, i32)>) {
        let stored = if self.offsets_in_filer() {
            // The entry as the coordinator now has it: without them (none left: a tombstone).
            let content = self.group_entry(group, &[]).encode();
            self.write_group_entry(group, content).await
        } else {
            let ms = now_ms();
            let records = keys
                .iter()
                .map(|(t, p)| Record {
                    key: encode_key(group, t, *p),
                    value: Bytes::new(),
                    ts_ns: ms.saturating_mul(1_000_000),
                })
                .collect();
            self.write_offsets(group, records).await
        };
        if let Err(e) = stored {
            log::error!("group {group:?}: deleted offsets not recorded in SeaweedMQ ({e}); they return after a restart");
        }
    }

    /// When this instance takes offsets partition `q`: replays it into the coordinator (this
    /// shard's share of its groups), retrying with backoff while SeaweedMQ is unreachable;
    /// then those groups are served.
    pub(crate) async fn seaweed_load_offsets(self: &Rc<Self>, q: i32) {
        let handle = self.sw().handle.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            let wanted = |s: &Self| s.sw().offsets.borrow().get(&q).is_some_and(|p| !p.leaving);
            if self.stopping.get() || !wanted(self) {
                return;
            }
            match self.load_offsets(&handle, q).await {
                Ok((read, kept)) if wanted(self) => {
                    log::info!(
                        "shard {}: committed offsets of offsets partition {q} loaded ({read} {} read, {kept} offsets kept)",
                        self.id,
                        if self.offsets_in_filer() { "group entries" } else { "records" }
                    );
                    if let Some(p) = self.sw().offsets.borrow_mut().get_mut(&q) {
                        p.loaded = true;
                    }
                    return;
                }
                Ok(_) => return,
                Err(e) => log::warn!(
                    "shard {}: cannot load the committed offsets of {OFFSETS_TOPIC}[{q}] yet ({e}); its groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile (retrying in {backoff:?})",
                    self.id
                ),
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Reads the committed offsets of offsets partition `q` for this shard's groups into the
    /// coordinator; returns (entries or records read, offsets kept).
    async fn load_offsets(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
        q: i32,
    ) -> Result<(usize, usize), SeaweedError> {
        if self.offsets_in_filer() {
            return self.load_group_entries(q).await;
        }
        let mine = |group: &str| shard_for_group(group, self.shards()) == self.id;
        let (latest, replayed, _) = self.replay_offsets(handle, q, 0, mine).await?;
        Ok((replayed, self.restore_commits(latest)))
    }

    /// Reads the topic's partition `q` from `from` to its end and keeps the latest commit of
    /// each partition of the groups `keep` wants; returns them, the records read and the
    /// offset read to.
    pub(super) async fn replay_offsets(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
        q: i32,
        from: i64,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(Latest, usize, i64), SeaweedError> {
        let mut latest = Latest::new();
        let mut offset = from;
        let mut replayed = 0usize;
        loop {
            let fetched = self
                .foreign(handle.fetch(
                    OFFSETS_TOPIC,
                    q,
                    offset,
                    limits::SEAWEEDMQ_SCAN_FETCH_BYTES,
                    limits::SEAWEEDMQ_FETCH_MESSAGES_MAX,
                ))
                .await;
            let f = match fetched {
                Ok(f) => f,
                Err(SeaweedError::OffsetOutOfRange {
                    log_start,
                    high_water_mark,
                    ..
                }) if offset < log_start && log_start <= high_water_mark => {
                    offset = log_start;
                    continue;
                }
                Err(SeaweedError::OffsetOutOfRange { .. }) => break,
                Err(e) => return Err(e),
            };
            if f.messages.is_empty() {
                break;
            }
            for m in &f.messages {
                replayed += 1;
                take_commit(&mut latest, &m.key, &m.value, &keep);
            }
            offset += f.messages.len() as i64;
        }
        Ok((latest, replayed, offset))
    }

    /// Shard 0, at start: makes sure the offsets topic exists (with
    /// `SEAWEEDMQ_OFFSETS_PARTITIONS` partitions when kelp creates it) and returns its
    /// partition count, retrying while SeaweedMQ is unreachable; `None` if kelp stops first.
    pub(in crate::shard) async fn seaweed_offsets_partition_count(self: &Rc<Self>) -> Option<i32> {
        let handle = self.sw().handle.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.stopping.get() {
                return None;
            }
            match self.ensure_offsets_topic(&handle).await {
                Ok(n) => return Some(n),
                Err(e) => log::warn!(
                    "cannot reach kelp's offsets topic in SeaweedMQ yet ({e}); groups answer COORDINATOR_NOT_AVAILABLE meanwhile (retrying in {backoff:?})"
                ),
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The offsets topic's partition count, creating the topic first if needed.
    async fn ensure_offsets_topic(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
    ) -> Result<i32, SeaweedError> {
        if !self.foreign(handle.topic_exists(OFFSETS_TOPIC)).await? {
            let n = limits::SEAWEEDMQ_OFFSETS_PARTITIONS;
            match self.foreign(handle.configure_topic(OFFSETS_TOPIC, n)).await {
                Ok(_) => log::info!(
                    "created the SeaweedMQ topic {OFFSETS_TOPIC} ({n} partitions) for committed offsets"
                ),
                // Another kelp made it meanwhile.
                Err(e) => log::debug!("configure {OFFSETS_TOPIC}: {e}"),
            }
        }
        let config = self.foreign(handle.topic_config(OFFSETS_TOPIC)).await?;
        Ok(config.partition_count)
    }

    /// Restores the replayed commits younger than the offsets retention; returns how many.
    pub(super) fn restore_commits(&self, latest: Latest) -> usize {
        let retention_ms = (self.config.offsets_retention_minutes as i64).saturating_mul(60_000);
        let now = Instant::now();
        let now_wall = now_ms();
        let mut kept = 0;
        let mut c = self.groups.borrow_mut();
        for ((group, topic, p), v) in latest {
            let Some((offset, leader_epoch, ms, metadata)) = v else {
                continue;
            };
            let age = now_wall.saturating_sub(ms).max(0);
            if age >= retention_ms {
                continue;
            }
            let commit_time = now
                .checked_sub(Duration::from_millis(age as u64))
                .unwrap_or(now);
            let committed = CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_time,
            };
            c.restore_offset(&group, &topic, p, committed, now);
            kept += 1;
        }
        kept
    }
}

/// Keeps one replayed record if `keep` wants its group.
fn take_commit(latest: &mut Latest, key: &[u8], value: &[u8], keep: &impl Fn(&str) -> bool) {
    let Some(key) = decode_key(key) else {
        log::warn!("{OFFSETS_TOPIC}: skipping a record with an unreadable key");
        return;
    };
    if !keep(&key.0) {
        return;
    }
    match decode_value(value) {
        Some(v) => {
            latest.insert(key, v);
        }
        None => log::warn!(
            "{OFFSETS_TOPIC}: skipping an unreadable commit of group {:?}",
            key.0
        ),
    }
}
