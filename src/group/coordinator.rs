//! The classic consumer-group coordinator for the groups one shard owns
//! ([`crate::shard::shard_for_group`]). Membership, rebalances, static members and committed
//! offsets follow Kafka's `GroupCoordinator`; time is passed in (`now`) so the state machine can
//! be driven deterministically in tests, and the shard's ticker calls [`Coordinator::tick`] for
//! every timeout (no global scanning thread).
//!
//! Requests that must wait (JoinGroup until the rebalance completes, SyncGroup until the leader
//! sends the assignment) get a oneshot receiver; the coordinator completes it later.

use super::{CommittedOffset, GroupDescription, JoinArgs, MemberDescription};
use crate::error::ErrorCode;
use bytes::Bytes;
use futures::channel::oneshot;
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Settings of the coordinator (from flags and named limits).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention: Duration,
    pub max_members: usize,
    pub offset_metadata_max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Only the leader gets the members: (member id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub(crate) fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinResult {
            error,
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub(crate) fn error(error: ErrorCode) -> Self {
        SyncResult {
            error,
            ..Default::default()
        }
    }
}

/// An answer now, or later through the receiver.
pub enum Pending<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

pub(super) struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    pub(super) last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// One consumer group.
pub struct Group {
    pub state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    pub(super) members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, with when they expire.
    pending_members: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    /// When the current join phase ends at the latest.
    rebalance_deadline: Option<Instant>,
    /// During the initial delay: when the delay ends and how far it may be pushed back.
    initial_delay_end: Option<Instant>,
    initial_delay_limit: Option<Instant>,
    /// Committed offsets by (topic, partition). This table is the coordinator's answer on both
    /// backends; on SeaweedMQ a commit is written there first (`shard::seaweed::offsets`) and
    /// replayed into this table at start.
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    empty_since: Option<Instant>,
}

impl Group {
    pub(super) fn new(now: Instant) -> Self {
        Group {
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_end: None,
            initial_delay_limit: None,
            offsets: BTreeMap::new(),
            empty_since: Some(now),
        }
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol must be supported by every member, the newcomer included.
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in self.members.values() {
            if let Some((first, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == first) {
                    v.0 += 1;
                }
            }
        }
        // Ties go to the earliest candidate in the first member's preference order.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.clone())
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    /// Subscribed topics of every member, read from the consumer protocol's metadata.
    pub(super) fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut out = HashSet::new();
        for m in self.members.values() {
            out.extend(parse_subscription(&m.metadata_for(protocol))?);
        }
        Some(out)
    }
}

/// Reads the topic list of a ConsumerProtocolSubscription (version, then an array of strings).
fn parse_subscription(b: &[u8]) -> Option<Vec<String>> {
    let mut at = 2usize;
    let n = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let len = i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2;
        out.push(String::from_utf8(b.get(at..at + len)?.to_vec()).ok()?);
        at += len;
    }
    Some(out)
}

/// The groups one shard owns.
pub struct Coordinator {
    pub config: GroupConfig,
    pub groups: HashMap<String, Group>,
    next_member: u64,
}

fn new_member_id(client_id: &str, n: u64) -> String {
    format!("{client_id}-{}-{n}", uuid::Uuid::new_v4().simple())
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Self {
        Coordinator {
            config,
            groups: HashMap::new(),
            next_member: 0,
        }
    }

    pub fn join(&mut self, a: JoinArgs, now: Instant) -> Pending<JoinResult> {
        if a.group_id.is_empty() {
            return Pending::Now(JoinResult::error(ErrorCode::InvalidGroupId, &a.member_id));
        }
        if a.session_timeout_ms < self.config.min_session_timeout_ms
            || a.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Pending::Now(JoinResult::error(
                ErrorCode::InvalidSessionTimeout,
                &a.member_id,
            ));
        }
        let config = self.config.clone();
        let group = self
            .groups
            .entry(a.group_id.clone())
            .or_insert_with(|| Group::new(now));
        if !group.supports(&a.protocol_type, &a.protocols) {
            return Pending::Now(JoinResult::error(
                ErrorCode::InconsistentGroupProtocol,
                &a.member_id,
            ));
        }
        if a.member_id.is_empty() {
            self.next_member += 1;
            let new_id = new_member_id(&a.client_id, self.next_member);
            let group = self.groups.get_mut(&a.group_id).expect("inserted above");
            if let Some(instance) = &a.group_instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    return Self::replace_static_member(group, &config, &old_id, new_id, a, now);
                }
            } else if a.require_known_member_id {
                group.pending_members.insert(
                    new_id.clone(),
                    now + Duration::from_millis(a.session_timeout_ms as u64),
                );
                return Pending::Now(JoinResult::error(ErrorCode::MemberIdRequired, &new_id));
            }
            if group.members.len() >= config.max_members {
                return Pending::Now(JoinResult::error(ErrorCode::GroupMaxSizeReached, ""));
            }
            return Self::add_member_and_rebalance(group, &config, new_id, a, now);
        }
        let group = self.groups.get_mut(&a.group_id).expect("inserted above");
        if let Some(instance) = &a.group_instance_id {
            if let Some(known) = group.static_members.get(instance) {
                if *known != a.member_id {
                    return Pending::Now(JoinResult::error(
                        ErrorCode::FencedInstanceId,
                        &a.member_id,
                    ));
                }
            }
        }
        if !group.members.contains_key(&a.member_id) {
            if group.pending_members.remove(&a.member_id).is_some() {
                if group.members.len() >= config.max_members {
                    return Pending::Now(JoinResult::error(
                        ErrorCode::GroupMaxSizeReached,
                        &a.member_id,
                    ));
                }
                let id = a.member_id.clone();
                return Self::add_member_and_rebalance(group, &config, id, a, now);
            }
            return Pending::Now(JoinResult::error(ErrorCode::UnknownMemberId, &a.member_id));
        }
        // A known member rejoins.
        let (tx, rx) = oneshot::channel();
        let member = group.members.get_mut(&a.member_id).expect("checked");
        let same_metadata = member.protocols == a.protocols;
        member.protocols = a.protocols.clone();
        member.session_timeout = Duration::from_millis(a.session_timeout_ms as u64);
        member.rebalance_timeout = Duration::from_millis(a.rebalance_timeout_ms as u64);
        member.last_heartbeat = now;
        let is_leader = group.leader.as_deref() == Some(a.member_id.as_str());
        match group.state {
            GroupState::PreparingRebalance => {
                if let Some(old) = member.join_waiter.replace(tx) {
                    let _ = old.send(JoinResult::error(ErrorCode::UnknownMemberId, &a.member_id));
                }
                Self::try_complete_join(group, now);
                Pending::Later(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same_metadata && !(group.state == GroupState::Stable && is_leader) =>
            {
                Pending::Now(Self::join_result_for(group, &a.member_id))
            }
            _ => {
                member.join_waiter = Some(tx);
                Self::prepare_rebalance(group, &config, now);
                Self::try_complete_join(group, now);
                Pending::Later(rx)
            }
        }
    }

    fn add_member_and_rebalance(
        group: &mut Group,
        config: &GroupConfig,
        id: String,
        a: JoinArgs,
        now: Instant,
    ) -> Pending<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if group.members.is_empty() {
            group.protocol_type = Some(a.protocol_type.clone());
        }
        if let Some(instance) = &a.group_instance_id {
            group.static_members.insert(instance.clone(), id.clone());
        }
        group.members.insert(
            id.clone(),
            Member {
                group_instance_id: a.group_instance_id.clone(),
                client_id: a.client_id,
                client_host: a.client_host,
                session_timeout: Duration::from_millis(a.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(a.rebalance_timeout_ms as u64),
                protocols: a.protocols,
                assignment: Bytes::new(),
                last_heartbeat: now,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        if group.leader.is_none() {
            group.leader = Some(id);
        }
        group.empty_since = None;
        if group.state == GroupState::PreparingRebalance {
            // A newcomer during the initial delay pushes it back, up to the rebalance timeout.
            if let (Some(end), Some(limit)) = (group.initial_delay_end, group.initial_delay_limit) {
                group.initial_delay_end =
                    Some((now + config.initial_rebalance_delay).min(limit).max(end));
            }
        } else {
            Self::prepare_rebalance(group, config, now);
        }
        Self::try_complete_join(group, now);
        Pending::Later(rx)
    }

    /// A static member came back under a new member id: swap it in, fence the old id, and
    /// answer from the current generation without a rebalance when the group is stable.
    fn replace_static_member(
        group: &mut Group,
        config: &GroupConfig,
        old_id: &str,
        new_id: String,
        a: JoinArgs,
        now: Instant,
    ) -> Pending<JoinResult> {
        let Some((index, _, mut member)) = group.members.shift_remove_full(old_id) else {
            return Pending::Now(JoinResult::error(ErrorCode::UnknownMemberId, ""));
        };
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(ErrorCode::FencedInstanceId, old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ErrorCode::FencedInstanceId));
        }
        member.last_heartbeat = now;
        member.session_timeout = Duration::from_millis(a.session_timeout_ms as u64);
        member.rebalance_timeout = Duration::from_millis(a.rebalance_timeout_ms as u64);
        member.client_id = a.client_id;
        member.client_host = a.client_host;
        member.protocols = a.protocols;
        // Same place in the member order, so the protocol vote's tie-break is unchanged.
        group.members.shift_insert(index, new_id.clone(), member);
        if let Some(instance) = &a.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        if group.leader.as_deref() == Some(old_id) {
            group.leader = Some(new_id.clone());
        }
        // Like Kafka: the new metadata is stored, and only a change of the protocol the group
        // would select rebalances. A restarted client's metadata always differs (it owns no
        // partitions yet), which alone must not disturb the others.
        let selection_unchanged = group.select_protocol() == group.protocol_name;
        if group.state == GroupState::Stable && selection_unchanged {
            let mut r = Self::join_result_for(group, &new_id);
            // The leader already assigned this generation; it must not assign again.
            if group.leader.as_deref() == Some(new_id.as_str()) {
                r.skip_assignment = true;
            }
            return Pending::Now(r);
        }
        // Anything else (changed metadata, or a rebalance under way whose assignment would
        // name the old id) rebalances, with the member waiting under its new id.
        let (tx, rx) = oneshot::channel();
        if let Some(m) = group.members.get_mut(&new_id) {
            m.join_waiter = Some(tx);
        }
        if group.state != GroupState::PreparingRebalance {
            Self::prepare_rebalance(group, config, now);
        }
        Self::try_complete_join(group, now);
        Pending::Later(rx)
    }

    fn join_result_for(group: &Group, member_id: &str) -> JoinResult {
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let leader = group.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            group
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: ErrorCode::None,
            generation_id: group.generation_id,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
            members,
        }
    }

    fn prepare_rebalance(group: &mut Group, config: &GroupConfig, now: Instant) {
        // Members waiting for an assignment of the old generation must rejoin.
        for m in group.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ErrorCode::RebalanceInProgress));
            }
        }
        let was_empty = group.state == GroupState::Empty;
        group.state = GroupState::PreparingRebalance;
        let timeout = group.max_rebalance_timeout();
        if was_empty && !config.initial_rebalance_delay.is_zero() {
            group.initial_delay_end = Some(now + config.initial_rebalance_delay.min(timeout));
            group.initial_delay_limit = Some(now + timeout);
        } else {
            group.initial_delay_end = None;
            group.initial_delay_limit = None;
        }
        group.rebalance_deadline = Some(now + timeout);
    }

    fn try_complete_join(group: &mut Group, now: Instant) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(end) = group.initial_delay_end {
            if now < end {
                return;
            }
            group.initial_delay_end = None;
            group.initial_delay_limit = None;
        }
        let deadline_passed = group.rebalance_deadline.is_some_and(|d| now >= d);
        if !group.all_joined() && !deadline_passed {
            return;
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = group
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            Self::remove_member(group, &id);
        }
        group.pending_members.clear();
        group.rebalance_deadline = None;
        group.generation_id += 1;
        if group.members.is_empty() {
            // Kafka keeps the protocol type of an emptied group (tools list it as "consumer").
            group.state = GroupState::Empty;
            group.protocol_name = None;
            group.leader = None;
            group.empty_since = Some(now);
            return;
        }
        group.protocol_name = group.select_protocol();
        if group
            .leader
            .as_ref()
            .is_none_or(|l| !group.members.contains_key(l))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let result = Self::join_result_for(group, &id);
            let m = group.members.get_mut(&id).expect("member");
            m.assignment = Bytes::new();
            m.last_heartbeat = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(result);
            }
        }
    }

    fn remove_member(group: &mut Group, id: &str) {
        if let Some(mut m) = group.members.shift_remove(id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(ErrorCode::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ErrorCode::UnknownMemberId));
            }
            if let Some(instance) = &m.group_instance_id {
                if group.static_members.get(instance).map(String::as_str) == Some(id) {
                    group.static_members.remove(instance);
                }
            }
        }
        if group.leader.as_deref() == Some(id) {
            group.leader = group.members.keys().next().cloned();
        }
    }

    /// A member is gone (left, expired): the rest rebalance.
    fn member_gone(group: &mut Group, config: &GroupConfig, id: &str, now: Instant) {
        Self::remove_member(group, id);
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if group.members.is_empty() {
                    group.state = GroupState::Empty;
                    group.generation_id += 1;
                    group.protocol_name = None;
                    group.leader = None;
                    group.empty_since = Some(now);
                } else {
                    Self::prepare_rebalance(group, config, now);
                }
            }
            GroupState::PreparingRebalance => Self::try_complete_join(group, now),
            GroupState::Empty => {}
        }
    }

    pub(super) fn check_member(
        group: &Group,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        if let Some(instance) = instance {
            if let Some(known) = group.static_members.get(instance) {
                if known != member_id {
                    return Err(ErrorCode::FencedInstanceId);
                }
            }
        }
        if !group.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if generation != group.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncResult> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Pending::Now(SyncResult::error(ErrorCode::UnknownMemberId));
        };
        if let Err(e) = Self::check_member(group, member_id, instance, generation) {
            return Pending::Now(SyncResult::error(e));
        }
        if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != group.protocol_name.as_deref())
        {
            return Pending::Now(SyncResult::error(ErrorCode::InconsistentGroupProtocol));
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: ErrorCode::None,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol_name.clone(),
            assignment,
        };
        match group.state {
            GroupState::Empty => Pending::Now(SyncResult::error(ErrorCode::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Pending::Now(SyncResult::error(ErrorCode::RebalanceInProgress))
            }
            GroupState::Stable => {
                let a = group.members[member_id].assignment.clone();
                Pending::Now(ok(group, a))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                {
                    let m = group.members.get_mut(member_id).expect("checked");
                    m.last_heartbeat = now;
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(SyncResult::error(ErrorCode::UnknownMemberId));
                    }
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    group.state = GroupState::Stable;
                    let template = ok(group, Bytes::new());
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                        if let Some(w) = m.sync_waiter.take() {
                            let mut r = template.clone();
                            r.assignment = m.assignment.clone();
                            let _ = w.send(r);
                        }
                    }
                }
                Pending::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        let Some(group) = self.groups.get_mut(group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if let Some(instance) = instance {
            if group
                .static_members
                .get(instance)
                .is_some_and(|k| k != member_id)
            {
                return ErrorCode::FencedInstanceId;
            }
        }
        let Some(m) = group.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        m.last_heartbeat = now;
        if generation != group.generation_id {
            return ErrorCode::IllegalGeneration;
        }
        match group.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::Empty => ErrorCode::UnknownMemberId,
            _ => ErrorCode::None,
        }
    }

    /// Removes members (by id, or by instance id when the id is empty); one error per member.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let config = self.config.clone();
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        let mut out = Vec::with_capacity(members.len());
        for (member_id, instance) in members {
            let id = match instance {
                Some(inst) => match group.static_members.get(inst) {
                    Some(known) if member_id.is_empty() || known == member_id => known.clone(),
                    Some(_) => {
                        out.push(ErrorCode::FencedInstanceId);
                        continue;
                    }
                    None => {
                        out.push(ErrorCode::UnknownMemberId);
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.members.contains_key(&id) {
                Self::member_gone(group, &config, &id, now);
                out.push(ErrorCode::None);
            } else if group.pending_members.remove(&id).is_some() {
                Self::try_complete_join(group, now);
                out.push(ErrorCode::None);
            } else {
                out.push(ErrorCode::UnknownMemberId);
            }
        }
        Ok(out)
    }

    /// Session expiry, rebalance deadlines, the initial delay and offset retention.
    pub fn tick(&mut self, now: Instant) {
        let config = self.config.clone();
        let mut empty_expired = Vec::new();
        for (gid, group) in self.groups.iter_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    // A member parked in JoinGroup or SyncGroup is alive by definition.
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                log::info!(
                    "group {gid:?}: member {id} expired (no heartbeat within its session timeout)"
                );
                Self::member_gone(group, &config, &id, now);
            }
            Self::try_complete_join(group, now);
            if group.state == GroupState::Empty {
                let since = group.empty_since.unwrap_or(now);
                group.offsets.retain(|_, o| {
                    let base = since.max(o.commit_time);
                    now.duration_since(base) < config.offsets_retention
                });
                if group.offsets.is_empty() && now.duration_since(since) >= config.offsets_retention
                {
                    empty_expired.push(gid.clone());
                }
            }
        }
        for gid in empty_expired {
            self.groups.remove(&gid);
        }
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// Everything DescribeGroups reports.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if g.state == GroupState::Stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if g.state == GroupState::Stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn config(delay_ms: u64) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(delay_ms),
            min_session_timeout_ms: 1000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention: Duration::from_secs(3600),
            max_members: 1000,
            offset_metadata_max_bytes: 4096,
        }
    }

    fn args(member: &str, instance: Option<&str>) -> JoinArgs {
        JoinArgs {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: instance.map(String::from),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    fn now_result<T>(p: Pending<T>) -> T {
        match p {
            Pending::Now(t) => t,
            Pending::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(p: Pending<T>) -> oneshot::Receiver<T> {
        match p {
            Pending::Later(rx) => rx,
            Pending::Now(_) => panic!("expected to wait"),
        }
    }

    /// Joins a new dynamic member through MEMBER_ID_REQUIRED; returns its id and receiver.
    fn join_new(c: &mut Coordinator, now: Instant) -> (String, oneshot::Receiver<JoinResult>) {
        let r = now_result(c.join(args("", None), now));
        assert_eq!(r.error, ErrorCode::MemberIdRequired);
        let rx = later(c.join(args(&r.member_id, None), now));
        (r.member_id, rx)
    }

    #[test]
    fn two_members_join_sync_and_a_leave_rebalances() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config(0));
        let (a, mut ra) = join_new(&mut c, t0);
        // With no initial delay and one member, the join completes at once.
        let ja = ra.try_recv().unwrap().unwrap();
        assert_eq!(
            (ja.error, ja.generation_id, ja.leader.clone()),
            (ErrorCode::None, 1, a.clone())
        );
        assert_eq!(ja.members.len(), 1);
        let sa = later(c.sync(
            "g",
            &a,
            None,
            1,
            None,
            None,
            vec![(a.clone(), Bytes::from_static(b"A"))],
            t0,
        ));
        let mut sa = sa;
        assert_eq!(&sa.try_recv().unwrap().unwrap().assignment[..], b"A");
        // A second member triggers a rebalance; the first learns through its heartbeat.
        let (b, mut rb) = join_new(&mut c, t0);
        assert!(rb.try_recv().unwrap().is_none());
        assert_eq!(
            c.heartbeat("g", &a, None, 1, t0),
            ErrorCode::RebalanceInProgress
        );
        let mut ra = later(c.join(args(&a, None), t0));
        let ja = ra.try_recv().unwrap().unwrap();
        let jb = rb.try_recv().unwrap().unwrap();
        assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty());
        let mut sb = later(c.sync("g", &b, None, 2, None, None, vec![], t0));
        let mut sa = later(c.sync(
            "g",
            &a,
            None,
            2,
            Some("consumer"),
            Some("range"),
            vec![
                (a.clone(), Bytes::from_static(b"A2")),
                (b.clone(), Bytes::from_static(b"B2")),
            ],
            t0,
        ));
        assert_eq!(&sb.try_recv().unwrap().unwrap().assignment[..], b"B2");
        assert_eq!(&sa.try_recv().unwrap().unwrap().assignment[..], b"A2");
        assert_eq!(
            c.heartbeat("g", &b, None, 1, t0),
            ErrorCode::IllegalGeneration
        );
        // b leaves: a must rejoin alone.
        assert_eq!(
            c.leave("g", &[(b.clone(), None)], t0).unwrap(),
            vec![ErrorCode::None]
        );
        assert_eq!(
            c.heartbeat("g", &a, None, 2, t0),
            ErrorCode::RebalanceInProgress
        );
        let mut ra = later(c.join(args(&a, None), t0));
        assert_eq!(ra.try_recv().unwrap().unwrap().generation_id, 3);
    }

    #[test]
    fn session_expiry_evicts_and_initial_delay_waits() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config(3000));
        let (a, mut ra) = join_new(&mut c, t0);
        assert!(
            ra.try_recv().unwrap().is_none(),
            "initial delay holds the join"
        );
        c.tick(t0 + Duration::from_millis(2000));
        assert!(ra.try_recv().unwrap().is_none());
        c.tick(t0 + Duration::from_millis(3001));
        let ja = ra.try_recv().unwrap().unwrap();
        assert_eq!(ja.leader, a);
        let t1 = t0 + Duration::from_millis(3001);
        let mut sa = later(c.sync("g", &a, None, 1, None, None, vec![], t1));
        assert_eq!(sa.try_recv().unwrap().unwrap().error, ErrorCode::None);
        c.tick(t1 + Duration::from_millis(10_001));
        assert_eq!(c.groups["g"].state, GroupState::Empty);
        assert_eq!(
            c.heartbeat("g", &a, None, 1, t1),
            ErrorCode::UnknownMemberId
        );
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_fences_the_old_id() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config(0));
        let mut rx = later(c.join(args("", Some("i1")), t0));
        let j = rx.try_recv().unwrap().unwrap();
        let old = j.member_id.clone();
        let mut s = later(c.sync(
            "g",
            &old,
            Some("i1"),
            1,
            None,
            None,
            vec![(old.clone(), Bytes::from_static(b"X"))],
            t0,
        ));
        assert_eq!(s.try_recv().unwrap().unwrap().error, ErrorCode::None);
        // Restart: a new process joins with the same instance id and no member id.
        let j2 = now_result(c.join(args("", Some("i1")), t0));
        assert_eq!((j2.error, j2.generation_id), (ErrorCode::None, 1));
        assert!(j2.skip_assignment);
        assert_ne!(j2.member_id, old);
        assert_eq!(c.groups["g"].state, GroupState::Stable);
        assert_eq!(
            c.heartbeat("g", &old, Some("i1"), 1, t0),
            ErrorCode::FencedInstanceId
        );
        let s2 = now_result(c.sync("g", &j2.member_id, Some("i1"), 1, None, None, vec![], t0));
        assert_eq!(&s2.assignment[..], b"X");
    }

    #[test]
    fn static_restart_with_new_metadata_keeps_the_generation() {
        // A restarted client owns nothing yet, so its subscription bytes differ from the
        // old member's; Kafka keeps the generation unless the selected protocol changes.
        let t0 = Instant::now();
        let mut c = Coordinator::new(config(0));
        let mut r1 = later(c.join(args("", Some("i1")), t0));
        let a = r1.try_recv().unwrap().unwrap().member_id;
        let mut sa = later(c.sync("g", &a, Some("i1"), 1, None, None, vec![], t0));
        assert_eq!(sa.try_recv().unwrap().unwrap().error, ErrorCode::None);
        let (b, mut rb) = join_new(&mut c, t0);
        let mut ra = later(c.join(args(&a, Some("i1")), t0));
        assert_eq!(rb.try_recv().unwrap().unwrap().generation_id, 2);
        assert_eq!(ra.try_recv().unwrap().unwrap().generation_id, 2);
        let mut sb = later(c.sync("g", &b, None, 2, None, None, vec![], t0));
        let mut sa = later(c.sync("g", &a, Some("i1"), 2, None, None, vec![], t0));
        assert_eq!(sa.try_recv().unwrap().unwrap().error, ErrorCode::None);
        assert_eq!(sb.try_recv().unwrap().unwrap().error, ErrorCode::None);
        let mut restart = args("", Some("i1"));
        restart.protocols = vec![("range".into(), Bytes::from_static(b"fresh"))];
        let j = now_result(c.join(restart, t0));
        assert_eq!((j.error, j.generation_id), (ErrorCode::None, 2));
        assert_eq!(c.groups["g"].state, GroupState::Stable);
        assert_eq!(c.heartbeat("g", &b, None, 2, t0), ErrorCode::None);
        // A change of the protocol the group would select does rebalance.
        let mut other = args("", Some("i1"));
        other.protocols = vec![
            ("roundrobin".into(), Bytes::new()),
            ("range".into(), Bytes::new()),
        ];
        let mut c2 = Coordinator::new(config(0));
        let mut r = later(c2.join(args("", Some("i1")), t0));
        let x = r.try_recv().unwrap().unwrap().member_id;
        let mut sx = later(c2.sync("g", &x, Some("i1"), 1, None, None, vec![], t0));
        assert_eq!(sx.try_recv().unwrap().unwrap().error, ErrorCode::None);
        let mut rr = later(c2.join(other, t0));
        let j = rr.try_recv().unwrap().unwrap();
        assert_eq!(
            (j.generation_id, j.protocol_name.as_deref()),
            (2, Some("roundrobin"))
        );
    }

    #[test]
    fn static_member_rejoining_during_a_rebalance_waits_for_it() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config(0));
        let mut rx = later(c.join(args("", Some("i1")), t0));
        let old = rx.try_recv().unwrap().unwrap().member_id;
        let mut s = later(c.sync("g", &old, Some("i1"), 1, None, None, vec![], t0));
        assert_eq!(s.try_recv().unwrap().unwrap().error, ErrorCode::None);
        // A second member starts a rebalance; then the static member restarts.
        let (b, mut rb) = join_new(&mut c, t0);
        let mut r2 = later(c.join(args("", Some("i1")), t0));
        // Both have now joined: generation 2 names the new id, never the old one.
        let j2 = r2.try_recv().unwrap().unwrap();
        let jb = rb.try_recv().unwrap().unwrap();
        assert_eq!((j2.generation_id, jb.generation_id), (2, 2));
        assert_ne!(j2.member_id, old);
        let leader_view = if j2.members.is_empty() { &jb } else { &j2 };
        let ids: Vec<&String> = leader_view.members.iter().map(|(id, _, _)| id).collect();
        assert!(ids.contains(&&j2.member_id) && ids.contains(&&b) && !ids.contains(&&old));
    }

    #[test]
    fn protocols_must_overlap_and_commits_are_checked() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config(0));
        let (a, _ra) = join_new(&mut c, t0);
        let mut other = args("", None);
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        assert_eq!(
            now_result(c.join(other, t0)).error,
            ErrorCode::InconsistentGroupProtocol
        );
        assert_eq!(
            c.check_commit("g", "", None, -1, t0),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit("g", &a, None, 7, t0),
            Err(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            c.check_commit("g", &a, None, 1, t0),
            Err(ErrorCode::RebalanceInProgress)
        );
        // A simple consumer commits to a group with no members.
        assert_eq!(c.check_commit("solo", "", None, -1, t0), Ok(()));
        let off = CommittedOffset {
            offset: 5,
            leader_epoch: -1,
            metadata: Some("m".into()),
            commit_time: t0,
        };
        assert_eq!(c.store_offset("solo", "t", 0, off.clone()), ErrorCode::None);
        assert_eq!(c.committed("solo", "t", 0), Some(&off));
        assert_eq!(c.delete_group("g"), ErrorCode::NonEmptyGroup);
        assert_eq!(c.delete_group("solo"), ErrorCode::None);
        assert!(c.committed("solo", "t", 0).is_none());
    }
}
