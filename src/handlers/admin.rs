//! CreateTopics, DeleteTopics, CreatePartitions and DeleteRecords. Topic changes go to the
//! registry on shard 0 and are answered once every shard has them.

use super::configs::topic_config_entries;
use super::fan_out::{fan_out, target};
use super::str_bytes;
use crate::error::ErrorCode;
use crate::shard::{PartitionOp, PartitionReply, RegistryOp, Shard};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use uuid::Uuid;

pub async fn create_topics(
    shard: &Rc<Shard>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let node = shard.config.node_id;
    let mut seen = HashSet::new();
    let dupes: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        r.num_partitions = -1;
        r.replication_factor = -1;
        let fail = |r: &mut CreatableTopicResult, code: ErrorCode, msg: String| {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&msg));
        };
        if dupes.contains(&name) {
            fail(
                &mut r,
                ErrorCode::InvalidRequest,
                format!("topic {name:?} is named twice"),
            );
            resp.topics.push(r);
            continue;
        }
        let partitions = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                fail(
                    &mut r,
                    ErrorCode::InvalidRequest,
                    "give either assignments or counts".into(),
                );
                resp.topics.push(r);
                continue;
            }
            if t.assignments
                .iter()
                .any(|a| a.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>() != vec![node])
            {
                fail(
                    &mut r,
                    ErrorCode::InvalidReplicaAssignment,
                    format!("the only broker is {node}"),
                );
                resp.topics.push(r);
                continue;
            }
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            shard.config.default_partitions
        } else {
            t.num_partitions
        };
        if t.replication_factor != -1 && t.replication_factor != 1 {
            fail(
                &mut r,
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is larger than the 1 available broker",
                    t.replication_factor
                ),
            );
            resp.topics.push(r);
            continue;
        }
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        match shard
            .registry(RegistryOp::Create {
                name: name.clone(),
                partitions,
                configs,
                validate_only: req.validate_only,
            })
            .await
        {
            Ok(meta) => {
                if !req.validate_only {
                    log::info!("created topic {name:?} with {} partitions", meta.partitions);
                }
                r.topic_id = if req.validate_only {
                    Uuid::nil()
                } else {
                    meta.id
                };
                r.num_partitions = meta.partitions;
                r.replication_factor = 1;
                if version >= 5 {
                    r.configs = Some(
                        topic_config_entries(&meta, shard.config.retention_bytes)
                            .into_iter()
                            .map(|e| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(&e.name);
                                c.value = Some(str_bytes(&e.value));
                                c.config_source = e.source;
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => fail(&mut r, e.code, e.message),
        }
        resp.topics.push(r);
    }
    resp
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Option<Uuid>)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.0.to_string()),
                    (!t.topic_id.is_nil()).then_some(t.topic_id),
                )
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), None))
            .collect()
    };
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.name = name.as_deref().map(|n| TopicName(str_bytes(n)));
        r.topic_id = id.unwrap_or_default();
        match shard.registry(RegistryOp::Delete { name, id }).await {
            Ok(meta) => {
                log::info!("deleted topic {:?}", meta.name);
                r.name = Some(TopicName(str_bytes(&meta.name)));
                r.topic_id = meta.id;
            }
            Err(e) => {
                r.error_code = e.code.code();
                r.error_message = Some(str_bytes(&e.message));
            }
        }
        resp.responses.push(r);
    }
    resp
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = shard.config.node_id;
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let bad_assignment = t.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .any(|x| x.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>() != vec![node])
        });
        if bad_assignment {
            r.error_code = ErrorCode::InvalidReplicaAssignment.code();
            r.error_message = Some(str_bytes(&format!("the only broker is {node}")));
        } else if let Err(e) = shard
            .registry(RegistryOp::Grow {
                name: t.name.0.to_string(),
                count: t.count,
                validate_only: req.validate_only,
            })
            .await
        {
            r.error_code = e.code.code();
            r.error_message = Some(str_bytes(&e.message));
        }
        resp.results.push(r);
    }
    resp
}

pub async fn delete_records(shard: &Rc<Shard>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let table = shard.topics();
    let mut resp = DeleteRecordsResponse::default();
    // (topic index, partition index, offset) per requested partition.
    let mut items = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = table.get(t.name.0.as_str());
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        resp.topics.push(tr);
        for p in &t.partitions {
            let key = (ti, p.partition_index, p.offset);
            items.push((key, target(meta, p.partition_index, false)));
        }
    }
    let replies = fan_out(shard, &mut items, |(_, _, offset)| {
        PartitionOp::DeleteRecords { offset: *offset }
    })
    .await;
    for (((ti, index, _), _), reply) in items.iter().zip(replies) {
        let mut pr = DeleteRecordsPartitionResult::default();
        pr.partition_index = *index;
        pr.low_watermark = -1;
        match reply {
            Ok(PartitionReply::DeleteRecords(Ok(lw))) => pr.low_watermark = lw,
            Ok(PartitionReply::DeleteRecords(Err(e))) | Err(e) => pr.error_code = e.code(),
            Ok(_) => pr.error_code = ErrorCode::UnknownServerError.code(),
        }
        resp.topics[*ti].partitions.push(pr);
    }
    resp
}
