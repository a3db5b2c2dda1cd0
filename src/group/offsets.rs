//! Committed offsets in the coordinator: who may commit, storing and restoring them, OffsetFetch
//! and deleting them. The table is the coordinator's on both backends; on SeaweedMQ each change
//! is written there first (`crate::shard::seaweed::offsets`).

use super::coordinator::{Coordinator, Group, GroupState};
use super::{CommittedOffset, FetchedOffsets, PartitionOffset};
use crate::error::ErrorCode;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

impl Coordinator {
    /// Checks that a commit is allowed; `Ok` means store the offsets.
    pub fn check_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(now));
        if generation < 0 && member_id.is_empty() {
            // A commit from outside any generation (simple consumers, admin tools) is allowed
            // while the group has no members; with members, Kafka answers UNKNOWN_MEMBER_ID.
            return if group.state == GroupState::Empty {
                Ok(())
            } else {
                Err(ErrorCode::UnknownMemberId)
            };
        }
        Self::check_member(group, member_id, instance, generation)?;
        // Like Kafka, a member of the current generation may commit while the group prepares a
        // rebalance (clients commit on revoke before they rejoin); only once the new generation
        // is being assigned is it too late.
        match group.state {
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat = now;
                }
                Ok(())
            }
            GroupState::CompletingRebalance => Err(ErrorCode::RebalanceInProgress),
            GroupState::Empty => Err(ErrorCode::UnknownMemberId),
        }
    }

    pub fn store_offset(
        &mut self,
        group_id: &str,
        topic: &str,
        partition: i32,
        offset: CommittedOffset,
    ) -> ErrorCode {
        if offset
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > self.config.offset_metadata_max_bytes)
        {
            return ErrorCode::OffsetMetadataTooLarge;
        }
        if let Some(g) = self.groups.get_mut(group_id) {
            g.offsets.insert((topic.to_string(), partition), offset);
        }
        ErrorCode::None
    }

    /// Stores an offset whether or not the group exists yet (a replayed or already checked
    /// commit); creates the group, empty, when needed.
    pub fn restore_offset(
        &mut self,
        group_id: &str,
        topic: &str,
        partition: i32,
        offset: CommittedOffset,
        now: Instant,
    ) -> ErrorCode {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(now));
        self.store_offset(group_id, topic, partition, offset)
    }

    /// Stores a checked commit's offsets (creating the group, empty, if it went meanwhile);
    /// one error code per offset, in order.
    pub fn commit_offsets(
        &mut self,
        group_id: &str,
        offsets: Vec<(String, i32, i64, i32, Option<String>)>,
        now: Instant,
    ) -> Vec<ErrorCode> {
        offsets
            .into_iter()
            .map(|(t, p, offset, leader_epoch, metadata)| {
                self.restore_offset(
                    group_id,
                    &t,
                    p,
                    CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_time: now,
                    },
                    now,
                )
            })
            .collect()
    }

    /// Whether a commit's metadata string is within the limit.
    pub fn metadata_ok(&self, metadata: Option<&str>) -> bool {
        metadata.is_none_or(|m| m.len() <= self.config.offset_metadata_max_bytes)
    }

    /// The (topic, partition) keys a group has offsets for.
    pub fn offset_keys(&self, group_id: &str) -> Vec<(String, i32)> {
        self.groups
            .get(group_id)
            .map(|g| g.offsets.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&CommittedOffset> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
    }

    /// OffsetFetch: the asked partitions (-1 where nothing is committed), or with `None` every
    /// committed offset of the group, by topic.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> FetchedOffsets {
        let Some(topics) = topics else {
            let mut by_topic: BTreeMap<String, Vec<PartitionOffset>> = BTreeMap::new();
            if let Some(g) = self.groups.get(group_id) {
                for ((t, p), o) in &g.offsets {
                    by_topic.entry(t.clone()).or_default().push((
                        *p,
                        o.offset,
                        o.leader_epoch,
                        o.metadata.clone(),
                    ));
                }
            }
            return by_topic.into_iter().collect();
        };
        topics
            .into_iter()
            .map(|(t, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| match self.committed(group_id, &t, p) {
                        Some(o) => (p, o.offset, o.leader_epoch, o.metadata.clone()),
                        None => (p, -1, -1, None),
                    })
                    .collect();
                (t, rows)
            })
            .collect()
    }

    /// Deletes an empty group and its offsets.
    pub fn delete_group(&mut self, group_id: &str) -> ErrorCode {
        match self.groups.get(group_id) {
            None => ErrorCode::GroupIdNotFound,
            Some(g) if g.state != GroupState::Empty => ErrorCode::NonEmptyGroup,
            Some(_) => {
                self.groups.remove(group_id);
                ErrorCode::None
            }
        }
    }

    /// Deletes committed offsets of topics no member subscribes to.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        parts: &[(String, i32)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        let subscribed = if g.state == GroupState::Empty {
            Some(HashSet::new())
        } else {
            g.subscribed_topics()
        };
        Ok(parts
            .iter()
            .map(|(t, p)| match &subscribed {
                Some(s) if s.contains(t) => ErrorCode::GroupSubscribedToTopic,
                None => ErrorCode::GroupSubscribedToTopic,
                Some(_) => {
                    g.offsets.remove(&(t.clone(), *p));
                    ErrorCode::None
                }
            })
            .collect())
    }
}
