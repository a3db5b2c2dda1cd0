//! Committed offsets on the SeaweedMQ backend: every commit is written to the internal
//! SeaweedMQ topic [`OFFSETS_TOPIC`] (one partition, in the Kafka namespace, hidden from Kafka
//! clients) before the client hears it succeeded, and each shard rebuilds the offsets of the
//! groups it owns by replaying that topic when it starts. The latest record per key wins; an
//! empty value is a tombstone (DeleteGroups, OffsetDelete).
//!
//! Record layout (the key and value of a SeaweedMQ message; `ts_ns` is the commit time):
//! - key: `group length: varint | group | topic length: varint | topic | partition: i32 BE`
//! - value: `version (1): u8 | offset: i64 BE | leader epoch: i32 BE | commit time ms: i64 BE
//!   | metadata flag: u8 (0 = null, 1 = present) | metadata (UTF-8, the rest)`
//!
//! Until a shard's replay is done, its groups answer COORDINATOR_LOAD_IN_PROGRESS, which every
//! client retries. The topic only grows; SeaweedMQ's retention (or a future snapshot record)
//! bounds replay time.

use crate::group::{self, codes, CommittedOffset, GroupOp, GroupReply};
use crate::protocol::batch::{put_varint, read_bytes};
use crate::seaweed_shard::answer;
use crate::seaweedmq::{Record, SeaweedError};
use crate::shard::{shard_for_group, Shard};
use crate::util::now_ms;
use bytes::Bytes;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The SeaweedMQ topic (namespace `kafka`) that holds committed offsets.
pub const OFFSETS_TOPIC: &str = "__kelp_consumer_offsets";

/// A group op's answer while the shard has not replayed the offsets topic yet.
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

const VALUE_VERSION: u8 = 1;

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut k = Vec::with_capacity(group.len() + topic.len() + 8);
    put_varint(&mut k, group.len() as i64);
    k.extend_from_slice(group.as_bytes());
    put_varint(&mut k, topic.len() as i64);
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    Bytes::from(k)
}

pub fn decode_key(k: &[u8]) -> Option<(String, String, i32)> {
    let mut at = 0;
    let string = |at: &mut usize| -> Option<String> {
        let s = read_bytes(k, at).ok()??;
        std::str::from_utf8(s).ok().map(str::to_string)
    };
    let group = string(&mut at)?;
    let topic = string(&mut at)?;
    let p = i32::from_be_bytes(k.get(at..at + 4)?.try_into().ok()?);
    (at + 4 == k.len()).then_some((group, topic, p))
}

pub fn encode_value(
    offset: i64,
    leader_epoch: i32,
    commit_ms: i64,
    metadata: Option<&str>,
) -> Bytes {
    let mut v = Vec::with_capacity(22 + metadata.map_or(0, str::len));
    v.push(VALUE_VERSION);
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&leader_epoch.to_be_bytes());
    v.extend_from_slice(&commit_ms.to_be_bytes());
    match metadata {
        Some(m) => {
            v.push(1);
            v.extend_from_slice(m.as_bytes());
        }
        None => v.push(0),
    }
    Bytes::from(v)
}

/// A stored commit: (offset, leader epoch, commit time ms, metadata).
pub type StoredCommit = (i64, i32, i64, Option<String>);

/// `Some(None)` is a tombstone; `None` a value kelp cannot read (skipped with a warning).
pub fn decode_value(v: &[u8]) -> Option<Option<StoredCommit>> {
    if v.is_empty() {
        return Some(None);
    }
    if v.len() < 22 || v[0] != VALUE_VERSION {
        return None;
    }
    let offset = i64::from_be_bytes(v[1..9].try_into().ok()?);
    let epoch = i32::from_be_bytes(v[9..13].try_into().ok()?);
    let ms = i64::from_be_bytes(v[13..21].try_into().ok()?);
    let metadata = match v[21] {
        0 => None,
        1 => Some(std::str::from_utf8(&v[22..]).ok()?.to_string()),
        _ => return None,
    };
    Some(Some((offset, epoch, ms, metadata)))
}

impl Shard {
    /// Group ops on the SeaweedMQ backend: commits and deletions are written to SeaweedMQ
    /// first; everything else is the coordinator's as on the memory backend.
    pub(crate) async fn seaweed_group_op(self: &Rc<Self>, op: GroupOp) -> GroupReply {
        if !self.offsets_loaded.get() {
            return GroupReply::Code(COORDINATOR_LOAD_IN_PROGRESS);
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
                if let Err(e) = self.groups.borrow_mut().check_commit(
                    &group,
                    &member,
                    instance.as_deref(),
                    generation,
                    now,
                ) {
                    return GroupReply::Codes(Err(e));
                }
                let ms = now_ms();
                // A too-long metadata string is refused per partition below; never stored.
                let records: Vec<Record> = offsets
                    .iter()
                    .filter(|(_, _, _, _, m)| self.groups.borrow().metadata_ok(m.as_deref()))
                    .map(|(t, p, offset, epoch, metadata)| Record {
                        key: encode_key(&group, t, *p),
                        value: encode_value(*offset, *epoch, ms, metadata.as_deref()),
                        ts_ns: ms.saturating_mul(1_000_000),
                    })
                    .collect();
                if let Err(e) = self.write_offsets(records).await {
                    log::warn!("group {group:?}: commit not stored in SeaweedMQ: {e}");
                    return GroupReply::Codes(Ok(vec![
                        codes::COORDINATOR_NOT_AVAILABLE;
                        offsets.len()
                    ]));
                }
                let codes = self
                    .groups
                    .borrow_mut()
                    .commit_offsets(&group, offsets, now);
                GroupReply::Codes(Ok(codes))
            }
            GroupOp::Delete { group } => {
                let keys = self.groups.borrow().offset_keys(&group);
                let code = self.groups.borrow_mut().delete_group(&group);
                if code == codes::NONE {
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
                        .filter(|(_, c)| **c == codes::NONE)
                        .map(|(k, _)| k.clone())
                        .collect();
                    self.write_tombstones(&group, gone).await;
                }
                GroupReply::Codes(r)
            }
            other => group::apply(&self.groups, other).await,
        }
    }

    async fn write_offsets(self: &Rc<Self>, records: Vec<Record>) -> Result<(), SeaweedError> {
        if records.is_empty() {
            return Ok(());
        }
        let handle = self.seaweed.clone().expect("SeaweedMQ backend");
        let rx = handle.publish_now(OFFSETS_TOPIC, 0, records)?;
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
        let handle = self.seaweed.clone().expect("SeaweedMQ backend");
        let mut backoff = Duration::from_millis(200);
        let retention_ms = (self.config.offsets_retention_minutes as i64).saturating_mul(60_000);
        loop {
            if self.stopping.get() {
                return;
            }
            match self.replay_offsets(&handle, retention_ms).await {
                Ok((records, kept)) => {
                    log::info!(
                        "shard {}: committed offsets loaded from SeaweedMQ ({records} records replayed, {kept} offsets kept)",
                        self.id
                    );
                    self.offsets_loaded.set(true);
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

    async fn replay_offsets(
        self: &Rc<Self>,
        handle: &crate::seaweedmq::SeaweedHandle,
        retention_ms: i64,
    ) -> Result<(usize, usize), SeaweedError> {
        if !self.grpc(handle.topic_exists(OFFSETS_TOPIC)).await? {
            match self.grpc(handle.configure_topic(OFFSETS_TOPIC, 1)).await {
                Ok(_) => {
                    log::info!("created the SeaweedMQ topic {OFFSETS_TOPIC} for committed offsets")
                }
                // Another shard (or kelp) made it meanwhile.
                Err(e) if self.grpc(handle.topic_exists(OFFSETS_TOPIC)).await == Ok(true) => {
                    log::debug!("configure {OFFSETS_TOPIC}: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        let shards = self.shards();
        let mut latest: std::collections::HashMap<(String, String, i32), Option<StoredCommit>> =
            std::collections::HashMap::new();
        let mut offset = 0i64;
        let mut replayed = 0usize;
        loop {
            let f = match self
                .grpc(handle.fetch(
                    OFFSETS_TOPIC,
                    0,
                    offset,
                    8 << 20,
                    crate::config::limits::SEAWEEDMQ_FETCH_MESSAGES_MAX,
                ))
                .await
            {
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
                let Some(key) = decode_key(&m.key) else {
                    log::warn!("{OFFSETS_TOPIC}: skipping a record with an unreadable key");
                    continue;
                };
                if shard_for_group(&key.0, shards) != self.id {
                    continue;
                }
                match decode_value(&m.value) {
                    Some(v) => {
                        latest.insert(key, v);
                    }
                    None => log::warn!(
                        "{OFFSETS_TOPIC}: skipping an unreadable commit of group {:?}",
                        key.0
                    ),
                }
            }
            offset += f.messages.len() as i64;
        }
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
            c.restore_offset(
                &group,
                &topic,
                p,
                CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_time,
                },
                now,
            );
            kept += 1;
        }
        Ok((replayed, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = encode_key("g1", "orders", 7);
        assert_eq!(decode_key(&k), Some(("g1".into(), "orders".into(), 7)));
        assert_eq!(decode_key(&k[..k.len() - 1]), None);
        let v = encode_value(42, 3, 1_700_000_000_000, Some("meta"));
        assert_eq!(
            decode_value(&v),
            Some(Some((42, 3, 1_700_000_000_000, Some("meta".into()))))
        );
        let v = encode_value(-1, -1, 0, None);
        assert_eq!(decode_value(&v), Some(Some((-1, -1, 0, None))));
        assert_eq!(decode_value(b""), Some(None));
        assert_eq!(decode_value(b"\x09garbage"), None);
    }
}
