//! Committed offsets on the SeaweedMQ backend: every commit is written to the internal
//! SeaweedMQ topic [`OFFSETS_TOPIC`] (in the Kafka namespace, hidden from Kafka clients) before
//! the client hears it succeeded. A group's commits go to one partition of it
//! ([`super::offsets_partition`]); the instance that leads that partition coordinates the
//! group, and when it takes the partition each of its shards replays it to rebuild the offsets
//! of its share of the groups. The latest record per key wins; an empty value is a tombstone
//! (DeleteGroups, OffsetDelete). The record layout is [`super::offset_records`].
//!
//! Until a shard's replay is done, the partition's groups answer COORDINATOR_LOAD_IN_PROGRESS,
//! which every client retries; groups another instance coordinates answer NOT_COORDINATOR. The
//! topic only grows; SeaweedMQ's retention (or a future snapshot record) bounds replay time.

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
type Latest = HashMap<(String, String, i32), Option<StoredCommit>>;

/// One commit as the coordinator is asked to store it: (topic, partition, offset, leader epoch,
/// metadata).
type Commit = (String, i32, i64, i32, Option<String>);

impl Shard {
    /// Group ops on the SeaweedMQ backend: commits and deletions are written to SeaweedMQ
    /// first; everything else is the coordinator's as on the memory backend.
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
            }
            GroupOp::Delete { group } => {
                let keys = self.groups.borrow().offset_keys(&group);
                let code = self.groups.borrow_mut().delete_group(&group);
                if code == ErrorCode::None {
                    self.write_tombstones(&group, keys).await;
                }
                GroupReply::Code(code)
            }
            GroupOp::DeleteOffsets { group, parts } => {
                let r = self.groups.borrow_mut().delete_offsets(&group, &parts);
                if let Ok(codes) = &r {
                    let gone = parts
                        .iter()
                        .zip(codes)
                        .filter(|(_, c)| **c == ErrorCode::None)
                        .map(|(k, _)| k.clone())
                        .collect();
                    self.write_tombstones(&group, gone).await;
                }
                GroupReply::Codes(r)
            }
            other => group::apply(&self.groups, other).await,
        }
    }

    /// Writes a checked commit to SeaweedMQ, then to the coordinator.
    async fn store_commit(
        self: &Rc<Self>,
        group: &str,
        offsets: Vec<Commit>,
        now: Instant,
    ) -> GroupReply {
        let ms = now_ms();
        // A too-long metadata string is refused per partition by the coordinator; never stored.
        let records: Vec<Record> = offsets
            .iter()
            .filter(|(_, _, _, _, m)| self.groups.borrow().metadata_ok(m.as_deref()))
            .map(|(t, p, offset, epoch, metadata)| Record {
                key: encode_key(group, t, *p),
                value: encode_value(*offset, *epoch, ms, metadata.as_deref()),
                ts_ns: ms.saturating_mul(1_000_000),
            })
            .collect();
        if let Err(e) = self.write_offsets(group, records).await {
            log::warn!("group {group:?}: commit not stored in SeaweedMQ: {e}");
            return GroupReply::Codes(Ok(vec![ErrorCode::CoordinatorNotAvailable; offsets.len()]));
        }
        let codes = self.groups.borrow_mut().commit_offsets(group, offsets, now);
        GroupReply::Codes(Ok(codes))
    }

    /// Writes a group's commit records to its offsets partition (counted, so that the
    /// partition is let go of only once no write is in flight).
    async fn write_offsets(
        self: &Rc<Self>,
        group: &str,
        records: Vec<Record>,
    ) -> Result<(), SeaweedError> {
        if records.is_empty() {
            return Ok(());
        }
        let q = offsets_partition(group, self.cluster().offsets_partitions);
        let count = |d: isize| {
            if let Some(p) = self.sw().offsets.borrow_mut().get_mut(&q) {
                p.writes = p.writes.saturating_add_signed(d);
            }
        };
        count(1);
        let written = match self.sw().handle.publish_now(OFFSETS_TOPIC, q, records) {
            Ok(rx) => answer(self, rx).await.map(|_| ()),
            Err(e) => Err(e),
        };
        count(-1);
        written
    }

    /// Deleted offsets must stay deleted after a restart; a failure is logged (the offsets
    /// would come back on the next start).
    async fn write_tombstones(self: &Rc<Self>, group: &str, keys: Vec<(String, i32)>) {
        let ms = now_ms();
        let records = keys
            .iter()
            .map(|(t, p)| Record {
                key: encode_key(group, t, *p),
                value: Bytes::new(),
                ts_ns: ms.saturating_mul(1_000_000),
            })
            .collect();
        if let Err(e) = self.write_offsets(group, records).await {
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
            match self.replay_offsets(&handle, q).await {
                Ok((records, kept)) if wanted(self) => {
                    log::info!(
                        "shard {}: committed offsets of {OFFSETS_TOPIC}[{q}] loaded ({records} records replayed, {kept} offsets kept)",
                        self.id
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

    /// Reads offsets partition `q` whole and restores the latest commit of each of this
    /// shard's groups' partitions; returns (records read, offsets kept).
    async fn replay_offsets(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
        q: i32,
    ) -> Result<(usize, usize), SeaweedError> {
        let mut latest = Latest::new();
        let mut offset = 0i64;
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
                self.take_commit(&mut latest, &m.key, &m.value);
            }
            offset += f.messages.len() as i64;
        }
        Ok((replayed, self.restore_commits(latest)))
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

    /// Keeps one replayed record if its group is this shard's.
    fn take_commit(&self, latest: &mut Latest, key: &[u8], value: &[u8]) {
        let Some(key) = decode_key(key) else {
            log::warn!("{OFFSETS_TOPIC}: skipping a record with an unreadable key");
            return;
        };
        if shard_for_group(&key.0, self.shards()) != self.id {
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

    /// Restores the replayed commits younger than the offsets retention; returns how many.
    fn restore_commits(&self, latest: Latest) -> usize {
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
