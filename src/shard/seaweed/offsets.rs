//! Committed offsets on the SeaweedMQ backend: every commit is written to the internal
//! SeaweedMQ topic [`OFFSETS_TOPIC`] (one partition, in the Kafka namespace, hidden from Kafka
//! clients) before the client hears it succeeded, and each shard rebuilds the offsets of the
//! groups it owns by replaying that topic when it starts. The latest record per key wins; an
//! empty value is a tombstone (DeleteGroups, OffsetDelete). The record layout is
//! [`super::offset_records`].
//!
//! Until a shard's replay is done, its groups answer COORDINATOR_LOAD_IN_PROGRESS, which every
//! client retries. The topic only grows; SeaweedMQ's retention (or a future snapshot record)
//! bounds replay time.

use super::offset_records::{decode_key, decode_value, encode_key, encode_value, StoredCommit};
use super::{answer, OFFSETS_TOPIC};
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
        if !self.sw().offsets_loaded.get() {
            return GroupReply::Code(ErrorCode::CoordinatorLoadInProgress);
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
        if let Err(e) = self.write_offsets(records).await {
            log::warn!("group {group:?}: commit not stored in SeaweedMQ: {e}");
            return GroupReply::Codes(Ok(vec![ErrorCode::CoordinatorNotAvailable; offsets.len()]));
        }
        let codes = self.groups.borrow_mut().commit_offsets(group, offsets, now);
        GroupReply::Codes(Ok(codes))
    }

    async fn write_offsets(self: &Rc<Self>, records: Vec<Record>) -> Result<(), SeaweedError> {
        if records.is_empty() {
            return Ok(());
        }
        let rx = self.sw().handle.publish_now(OFFSETS_TOPIC, 0, records)?;
        answer(self, rx).await.map(|_| ())
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
        if let Err(e) = self.write_offsets(records).await {
            log::error!("group {group:?}: deleted offsets not recorded in SeaweedMQ ({e}); they return after a restart");
        }
    }

    /// At start: replays the offsets topic into the coordinator (the groups this shard owns),
    /// retrying with backoff while SeaweedMQ is unreachable; then group requests are served.
    pub(crate) async fn seaweed_load_offsets(self: &Rc<Self>) {
        let handle = self.sw().handle.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.stopping.get() {
                return;
            }
            match self.replay_offsets(&handle).await {
                Ok((records, kept)) => {
                    log::info!(
                        "shard {}: committed offsets loaded from SeaweedMQ ({records} records replayed, {kept} offsets kept)",
                        self.id
                    );
                    self.sw().offsets_loaded.set(true);
                    return;
                }
                Err(e) => log::warn!(
                    "shard {}: cannot load committed offsets from SeaweedMQ yet ({e}); groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile (retrying in {backoff:?})",
                    self.id
                ),
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Reads the whole offsets topic (creating it if needed) and restores the latest commit
    /// of each of this shard's groups' partitions; returns (records read, offsets kept).
    async fn replay_offsets(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
    ) -> Result<(usize, usize), SeaweedError> {
        self.ensure_offsets_topic(handle).await?;
        let mut latest = Latest::new();
        let mut offset = 0i64;
        let mut replayed = 0usize;
        loop {
            let fetched = self
                .foreign(handle.fetch(
                    OFFSETS_TOPIC,
                    0,
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

    async fn ensure_offsets_topic(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
    ) -> Result<(), SeaweedError> {
        if self.foreign(handle.topic_exists(OFFSETS_TOPIC)).await? {
            return Ok(());
        }
        match self.foreign(handle.configure_topic(OFFSETS_TOPIC, 1)).await {
            Ok(_) => {
                log::info!("created the SeaweedMQ topic {OFFSETS_TOPIC} for committed offsets");
                Ok(())
            }
            // Another shard (or kelp) made it meanwhile.
            Err(e) if self.foreign(handle.topic_exists(OFFSETS_TOPIC)).await == Ok(true) => {
                log::debug!("configure {OFFSETS_TOPIC}: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
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
