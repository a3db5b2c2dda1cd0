//! The consumer-group APIs. Each request is sent to the shard that owns its group
//! ([`crate::shard::shard_for_group`]); ListGroups asks every shard.

use super::str_bytes;
use crate::error::ErrorCode;
use crate::group::{GroupOp, GroupReply, JoinArgs};
use crate::shard::Shard;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|v| v.to_string())
}

pub async fn join_group(
    shard: &Rc<Shard>,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    let args = JoinArgs {
        group_id: group.clone(),
        member_id: req.member_id.to_string(),
        group_instance_id: opt(&req.group_instance_id),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        require_known_member_id: version >= 4,
    };
    let r = match shard.group(&group, GroupOp::Join(args)).await {
        GroupReply::Join(r) => r,
        other => crate::group::JoinResult {
            error: code_of(other),
            generation_id: -1,
            ..Default::default()
        },
    };
    let mut resp = JoinGroupResponse::default();
    resp.error_code = r.error.code();
    resp.generation_id = r.generation_id;
    if version >= 7 {
        resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
    } else {
        resp.protocol_name = Some(str_bytes(r.protocol_name.as_deref().unwrap_or("")));
    }
    resp.leader = str_bytes(&r.leader);
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp.member_id = str_bytes(&r.member_id);
    resp.members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            if version >= 5 {
                m.group_instance_id = instance.as_deref().map(str_bytes);
            }
            m.metadata = metadata;
            m
        })
        .collect();
    resp
}

pub async fn sync_group(
    shard: &Rc<Shard>,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let op = GroupOp::Sync {
        group: group.clone(),
        member: req.member_id.to_string(),
        instance: opt(&req.group_instance_id),
        generation: req.generation_id,
        protocol_type: opt(&req.protocol_type),
        protocol_name: opt(&req.protocol_name),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let mut resp = SyncGroupResponse::default();
    match shard.group(&group, op).await {
        GroupReply::Sync(r) => {
            resp.error_code = r.error.code();
            resp.assignment = r.assignment;
            if version >= 5 {
                resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
                resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
            }
        }
        other => resp.error_code = code_of(other).code(),
    }
    resp
}

/// The error code of a group op's answer, for ops answered with a code alone and for answers that
/// are not the kind the request expects: the code itself when the owner answered with one (on
/// SeaweedMQ, NOT_COORDINATOR from an instance that does not own the group, which makes clients
/// look the coordinator up again), otherwise COORDINATOR_NOT_AVAILABLE (the owning shard's answer
/// was lost).
fn code_of(reply: GroupReply) -> ErrorCode {
    match reply {
        GroupReply::Code(c) => c,
        _ => ErrorCode::CoordinatorNotAvailable,
    }
}

pub async fn heartbeat(shard: &Rc<Shard>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let op = GroupOp::Heartbeat {
        group: group.clone(),
        member: req.member_id.to_string(),
        instance: opt(&req.group_instance_id),
        generation: req.generation_id,
    };
    let mut resp = HeartbeatResponse::default();
    resp.error_code = code_of(shard.group(&group, op).await).code();
    resp
}

pub async fn leave_group(
    shard: &Rc<Shard>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    match shard
        .group(
            &group,
            GroupOp::Leave {
                group: group.clone(),
                members: members.clone(),
            },
        )
        .await
    {
        GroupReply::Codes(Ok(codes)) => {
            if version >= 3 {
                resp.members = members
                    .iter()
                    .zip(codes)
                    .map(|((id, inst), code)| {
                        let mut m = MemberResponse::default();
                        m.member_id = str_bytes(id);
                        m.group_instance_id = inst.as_deref().map(str_bytes);
                        m.error_code = code.code();
                        m
                    })
                    .collect();
            } else {
                resp.error_code = codes.first().map_or(0, |c| c.code());
            }
        }
        GroupReply::Codes(Err(e)) => resp.error_code = e.code(),
        other => resp.error_code = code_of(other).code(),
    }
    resp
}

pub async fn offset_commit(
    shard: &Rc<Shard>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let table = shard.topics();
    // Unknown topics and partitions are answered here; the rest go to the group's owner.
    let mut slots = Vec::new();
    let mut offsets = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = table.get(t.name.0.as_str());
        for p in &t.partitions {
            let ok =
                meta.is_some_and(|m| p.partition_index >= 0 && p.partition_index < m.partitions);
            slots.push((ti, p.partition_index, ok));
            if ok {
                offsets.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    opt(&p.committed_metadata),
                ));
            }
        }
    }
    let op = GroupOp::Commit {
        group: group.clone(),
        member: req.member_id.to_string(),
        instance: opt(&req.group_instance_id),
        generation: req.generation_id_or_member_epoch,
        offsets,
    };
    let result = match shard.group(&group, op).await {
        GroupReply::Codes(r) => r,
        other => Err(code_of(other)),
    };
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt
        })
        .collect();
    let mut stored = match &result {
        Ok(c) => c.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    for (ti, p, ok) in slots {
        let mut rp = OffsetCommitResponsePartition::default();
        rp.partition_index = p;
        rp.error_code = match (&result, ok) {
            (_, false) => ErrorCode::UnknownTopicOrPartition.code(),
            (Err(e), true) => e.code(),
            (Ok(_), true) => stored.next().map_or(0, |c| c.code()),
        };
        resp.topics[ti].partitions.push(rp);
    }
    resp
}

/// Fetches one group's offsets: `None` topics means all. `Err` is a group-level error (the
/// coordinator is loading or unavailable), never an empty answer a client would take for "no
/// commits".
async fn fetch_group_offsets(
    shard: &Rc<Shard>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<crate::group::FetchedOffsets, ErrorCode> {
    match shard
        .group(
            group,
            GroupOp::FetchOffsets {
                group: group.to_string(),
                topics,
            },
        )
        .await
    {
        GroupReply::Offsets(o) => Ok(o),
        other => Err(code_of(other)),
    }
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &req.groups {
            let group = g.group_id.0.to_string();
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            let fetched = match fetch_group_offsets(shard, &group, topics).await {
                Ok(f) => f,
                Err(e) => {
                    rg.error_code = e.code();
                    resp.groups.push(rg);
                    continue;
                }
            };
            rg.topics = fetched
                .into_iter()
                .map(|(t, parts)| {
                    let mut rt = OffsetFetchResponseTopics::default();
                    rt.name = TopicName(str_bytes(&t));
                    rt.partitions = parts
                        .into_iter()
                        .map(|(p, off, epoch, meta)| {
                            let mut rp = OffsetFetchResponsePartitions::default();
                            rp.partition_index = p;
                            rp.committed_offset = off;
                            rp.committed_leader_epoch = epoch;
                            rp.metadata = Some(str_bytes(meta.as_deref().unwrap_or("")));
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            resp.groups.push(rg);
        }
        return resp;
    }
    let group = req.group_id.0.to_string();
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let fetched = match fetch_group_offsets(shard, &group, topics.clone()).await {
        Ok(f) => f,
        Err(e) if version >= 2 => {
            resp.error_code = e.code();
            return resp;
        }
        // v0-1 have no top-level error: every asked partition carries it.
        Err(e) => {
            resp.topics = topics
                .unwrap_or_default()
                .into_iter()
                .map(|(t, parts)| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = TopicName(str_bytes(&t));
                    rt.partitions = parts
                        .into_iter()
                        .map(|p| {
                            let mut rp = OffsetFetchResponsePartition::default();
                            rp.partition_index = p;
                            rp.committed_offset = -1;
                            rp.error_code = e.code();
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            return resp;
        }
    };
    resp.topics = fetched
        .into_iter()
        .map(|(t, parts)| {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = TopicName(str_bytes(&t));
            rt.partitions = parts
                .into_iter()
                .map(|(p, off, epoch, meta)| {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = p;
                    rp.committed_offset = off;
                    if version >= 5 {
                        rp.committed_leader_epoch = epoch;
                    }
                    rp.metadata = Some(str_bytes(meta.as_deref().unwrap_or("")));
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for g in &req.groups {
        let group = g.0.to_string();
        let mut d = DescribedGroup::default();
        d.group_id = g.clone();
        d.authorized_operations = if req.include_authorized_operations {
            super::metadata::GROUP_AUTHORIZED_OPERATIONS
        } else {
            i32::MIN
        };
        match shard
            .group(
                &group,
                GroupOp::Describe {
                    group: group.clone(),
                },
            )
            .await
        {
            GroupReply::Describe(Some(desc)) => {
                d.group_state = str_bytes(desc.state.name());
                d.protocol_type = str_bytes(&desc.protocol_type);
                d.protocol_data = str_bytes(&desc.protocol);
                d.members = desc
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = str_bytes(&m.member_id);
                        if version >= 4 {
                            dm.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                        }
                        dm.client_id = str_bytes(&m.client_id);
                        dm.client_host = str_bytes(&m.client_host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
            _ => {
                d.group_state = str_bytes("Dead");
                if version >= 6 {
                    d.error_code = ErrorCode::GroupIdNotFound.code();
                    d.error_message = Some(str_bytes("group does not exist"));
                }
            }
        }
        resp.groups.push(d);
    }
    resp
}

pub async fn list_groups(
    shard: &Rc<Shard>,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut resp = ListGroupsResponse::default();
    for reply in shard.group_everywhere(|| GroupOp::List).await {
        if let GroupReply::List(groups) = reply {
            for (id, protocol_type, state) in groups {
                if !states.is_empty() && !states.contains(&state.name().to_lowercase()) {
                    continue;
                }
                if !types.is_empty() && !types.contains(&"classic".to_string()) {
                    continue;
                }
                let mut g = ListedGroup::default();
                g.group_id = GroupId(str_bytes(&id));
                g.protocol_type = str_bytes(&protocol_type);
                if version >= 4 {
                    g.group_state = str_bytes(state.name());
                }
                if version >= 5 {
                    g.group_type = str_bytes("classic");
                }
                resp.groups.push(g);
            }
        }
    }
    resp.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    resp
}

pub async fn delete_groups(shard: &Rc<Shard>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for g in &req.groups_names {
        let group = g.0.to_string();
        let mut r = DeletableGroupResult::default();
        r.group_id = g.clone();
        let op = GroupOp::Delete {
            group: group.clone(),
        };
        r.error_code = code_of(shard.group(&group, op).await).code();
        resp.results.push(r);
    }
    resp
}

pub async fn offset_delete(shard: &Rc<Shard>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut resp = OffsetDeleteResponse::default();
    match shard
        .group(
            &group,
            GroupOp::DeleteOffsets {
                group: group.clone(),
                parts,
            },
        )
        .await
    {
        GroupReply::Codes(Ok(codes)) => {
            let mut codes = codes.into_iter();
            for t in &req.topics {
                let mut rt = OffsetDeleteResponseTopic::default();
                rt.name = t.name.clone();
                for p in &t.partitions {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.next().map_or(0, |c| c.code());
                    rt.partitions.push(rp);
                }
                resp.topics.push(rt);
            }
        }
        GroupReply::Codes(Err(e)) => resp.error_code = e.code(),
        other => resp.error_code = code_of(other).code(),
    }
    resp
}
