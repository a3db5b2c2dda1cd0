//! Consumer groups: the ops a shard's coordinator answers ([`GroupOp`], [`GroupReply`]) and
//! [`apply`], which runs one against the coordinator of the shard that owns the group
//! ([`crate::shard::shard_for_group`]), waiting where the protocol waits. The state machine
//! itself is [`coordinator`].
//!
//! On the SeaweedMQ backend, commits and deletions are written to SeaweedMQ before they reach
//! [`apply`]'s coordinator (`crate::shard::seaweed::offsets`); everything else is the same on
//! both backends.

mod coordinator;
mod offsets;

pub use coordinator::{Coordinator, GroupConfig, GroupState, JoinResult, Pending, SyncResult};

use crate::error::ErrorCode;
use bytes::Bytes;
use std::time::Instant;

/// Everything a JoinGroup carries that the coordinator needs.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// v4+: a new member must first get its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time: Instant,
}

/// A group as DescribeGroups reports it.
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group request addressed to the group's owning shard.
#[derive(Debug)]
pub enum GroupOp {
    Join(JoinArgs),
    Sync {
        group: String,
        member: String,
        instance: Option<String>,
        generation: i32,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group: String,
        member: String,
        instance: Option<String>,
        generation: i32,
    },
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    /// (topic, partition, offset, leader epoch, metadata) to store.
    Commit {
        group: String,
        member: String,
        instance: Option<String>,
        generation: i32,
        offsets: Vec<(String, i32, i64, i32, Option<String>)>,
    },
    /// `None` asks for every committed offset of the group.
    FetchOffsets {
        group: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe {
        group: String,
    },
    List,
    Delete {
        group: String,
    },
    DeleteOffsets {
        group: String,
        parts: Vec<(String, i32)>,
    },
}

impl GroupOp {
    /// The group the op is for (`None` for List, which covers them all).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupOp::Join(a) => Some(&a.group_id),
            GroupOp::Sync { group, .. }
            | GroupOp::Heartbeat { group, .. }
            | GroupOp::Leave { group, .. }
            | GroupOp::Commit { group, .. }
            | GroupOp::FetchOffsets { group, .. }
            | GroupOp::Describe { group }
            | GroupOp::Delete { group }
            | GroupOp::DeleteOffsets { group, .. } => Some(group),
            GroupOp::List => None,
        }
    }
}

/// (partition, offset, leader epoch, metadata) as OffsetFetch reports them.
pub type PartitionOffset = (i32, i64, i32, Option<String>);
/// Committed offsets by topic.
pub type FetchedOffsets = Vec<(String, Vec<PartitionOffset>)>;

pub enum GroupReply {
    Join(JoinResult),
    Sync(SyncResult),
    Code(ErrorCode),
    Codes(Result<Vec<ErrorCode>, ErrorCode>),
    Offsets(FetchedOffsets),
    Describe(Option<GroupDescription>),
    List(Vec<(String, String, GroupState)>),
}

impl std::fmt::Debug for GroupReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupReply")
    }
}

/// Runs a group op against the owning shard's coordinator, waiting where the protocol waits.
pub async fn apply(coordinator: &std::cell::RefCell<Coordinator>, op: GroupOp) -> GroupReply {
    let now = Instant::now();
    match op {
        GroupOp::Join(a) => {
            let member = a.member_id.clone();
            let pending = coordinator.borrow_mut().join(a, now);
            GroupReply::Join(match pending {
                Pending::Now(r) => r,
                Pending::Later(rx) => rx.await.unwrap_or_else(|_| {
                    JoinResult::error(ErrorCode::CoordinatorNotAvailable, &member)
                }),
            })
        }
        GroupOp::Sync {
            group,
            member,
            instance,
            generation,
            protocol_type,
            protocol_name,
            assignments,
        } => {
            let pending = coordinator.borrow_mut().sync(
                &group,
                &member,
                instance.as_deref(),
                generation,
                protocol_type.as_deref(),
                protocol_name.as_deref(),
                assignments,
                now,
            );
            GroupReply::Sync(match pending {
                Pending::Now(r) => r,
                Pending::Later(rx) => rx
                    .await
                    .unwrap_or_else(|_| SyncResult::error(ErrorCode::CoordinatorNotAvailable)),
            })
        }
        GroupOp::Heartbeat {
            group,
            member,
            instance,
            generation,
        } => GroupReply::Code(coordinator.borrow_mut().heartbeat(
            &group,
            &member,
            instance.as_deref(),
            generation,
            now,
        )),
        GroupOp::Leave { group, members } => {
            GroupReply::Codes(coordinator.borrow_mut().leave(&group, &members, now))
        }
        GroupOp::Commit {
            group,
            member,
            instance,
            generation,
            offsets,
        } => {
            let mut c = coordinator.borrow_mut();
            if let Err(e) = c.check_commit(&group, &member, instance.as_deref(), generation, now) {
                return GroupReply::Codes(Err(e));
            }
            GroupReply::Codes(Ok(c.commit_offsets(&group, offsets, now)))
        }
        GroupOp::FetchOffsets { group, topics } => {
            GroupReply::Offsets(coordinator.borrow().fetch_offsets(&group, topics))
        }
        GroupOp::Describe { group } => GroupReply::Describe(coordinator.borrow().describe(&group)),
        GroupOp::List => GroupReply::List(coordinator.borrow().list()),
        GroupOp::Delete { group } => {
            GroupReply::Code(coordinator.borrow_mut().delete_group(&group))
        }
        GroupOp::DeleteOffsets { group, parts } => {
            GroupReply::Codes(coordinator.borrow_mut().delete_offsets(&group, &parts))
        }
    }
}
