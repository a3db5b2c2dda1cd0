//! Metadata, FindCoordinator and DescribeCluster: who the broker is and what topics exist.

use super::{str_bytes, topic_or_create};
use crate::error::ErrorCode;
use crate::shard::Shard;
use crate::topics::{validate_topic_name, TopicMeta};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse, TopicName,
};
use std::rc::Rc;
use uuid::Uuid;

/// Kafka's "authorized operations were not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// With no ACLs every client may do everything: the bit sets Kafka reports then (bits are
/// AclOperation codes). Topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS.
pub const TOPIC_AUTHORIZED_OPERATIONS: i32 = 3576;
/// Cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 = 8096;
/// Group: READ, DELETE, DESCRIBE.
pub const GROUP_AUTHORIZED_OPERATIONS: i32 = 328;

fn topic_entry(shard: &Shard, meta: &TopicMeta, ops: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(str_bytes(&meta.name)));
    t.topic_id = meta.id;
    t.topic_authorized_operations = ops;
    t.partitions = (0..meta.partitions)
        .map(|i| {
            // With no live owner known (this instance has not joined yet, or lost its
            // lease), it names itself, as `brokers` does: a request sent here gets the
            // retriable NOT_LEADER_OR_FOLLOWER until an owner serves, and the client asks
            // again. Answering LEADER_NOT_AVAILABLE instead left librdkafka's offset queries
            // failing with "Unknown partition" for minutes after a kelp restart: it kept the
            // leaderless answer cached.
            let leader = match shard.leader_of(&meta.name, i) {
                -1 => shard.config.node_id,
                id => id,
            };
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i;
            p.leader_id = BrokerId(leader);
            p.leader_epoch = 0;
            p.replica_nodes = vec![BrokerId(leader)];
            p.isr_nodes = vec![BrokerId(leader)];
            p
        })
        .collect();
    t
}

/// The live brokers (this one alone on the memory backend) and the controller named to
/// clients: the lowest node id, the same from every instance.
fn brokers(shard: &Shard) -> (Vec<crate::cluster::Member>, i32) {
    let view = shard.cluster();
    let mut members = view.members.clone();
    if members.is_empty() {
        // Not (or no longer) a member: name itself, so that clients keep a way in.
        let (host, port) = shard.advertised.clone();
        members.push(crate::cluster::Member {
            id: shard.config.node_id,
            host,
            port,
        });
    }
    let controller = members.iter().map(|m| m.id).min().unwrap_or(-1);
    (members, controller)
}

fn topic_error(name: Option<&str>, id: Uuid, code: ErrorCode) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = name.map(|n| TopicName(str_bytes(n)));
    t.topic_id = id;
    t.error_code = code.code();
    t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    t
}

pub async fn metadata(shard: &Rc<Shard>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    let (members, controller) = brokers(shard);
    resp.brokers = members
        .iter()
        .map(|m| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(m.id);
            b.host = str_bytes(&m.host);
            b.port = m.port;
            b
        })
        .collect();
    resp.cluster_id = Some(str_bytes(&shard.config.cluster_id));
    resp.controller_id = BrokerId(controller);
    resp.cluster_authorized_operations =
        if req.include_cluster_authorized_operations && (8..=10).contains(&version) {
            CLUSTER_AUTHORIZED_OPERATIONS
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        };
    let topic_ops = if req.include_topic_authorized_operations && version >= 8 {
        TOPIC_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    // v0 asks for every topic with an empty list; v1+ with a null one.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    if all {
        let table = shard.topics();
        let mut topics: Vec<_> = table.by_name.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        resp.topics = topics
            .iter()
            .map(|m| topic_entry(shard, m, topic_ops))
            .collect();
        return resp;
    }
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    for t in req.topics.unwrap_or_default() {
        let entry = match t.name.as_ref().map(|n| n.0.as_str()) {
            Some(name) => {
                if let Err(_why) = validate_topic_name(name) {
                    topic_error(Some(name), Uuid::nil(), ErrorCode::InvalidTopicException)
                } else {
                    match topic_or_create(shard, name, allow_create).await {
                        Ok(meta) => topic_entry(shard, &meta, topic_ops),
                        Err(code) => topic_error(Some(name), Uuid::nil(), code),
                    }
                }
            }
            None => match shard.topics().get_by_id(&t.topic_id) {
                Some(meta) => topic_entry(shard, meta, topic_ops),
                None => topic_error(None, t.topic_id, ErrorCode::UnknownTopicId),
            },
        };
        resp.topics.push(entry);
    }
    resp
}

pub fn find_coordinator(
    shard: &Shard,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // key_type 0 is a consumer group; 1 a transactional id, which kelp does not coordinate.
    let find = |key: &str| -> Result<crate::cluster::Member, (ErrorCode, &'static str)> {
        if req.key_type != 0 {
            return Err((
                ErrorCode::CoordinatorNotAvailable,
                "transactions are not supported",
            ));
        }
        shard.coordinator_of(key).ok_or((
            ErrorCode::CoordinatorNotAvailable,
            "no kelp instance coordinates this group yet",
        ))
    };
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = Coordinator::default();
                c.key = k.clone();
                match find(k) {
                    Ok(m) => {
                        c.node_id = BrokerId(m.id);
                        c.host = str_bytes(&m.host);
                        c.port = m.port;
                    }
                    Err((code, why)) => {
                        c.error_code = code.code();
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_message = Some(str_bytes(why));
                    }
                }
                c
            })
            .collect();
    } else {
        match find(&req.key) {
            Ok(m) => {
                resp.node_id = BrokerId(m.id);
                resp.host = str_bytes(&m.host);
                resp.port = m.port;
            }
            Err((code, why)) => {
                resp.error_code = code.code();
                resp.node_id = BrokerId(-1);
                resp.port = -1;
                resp.error_message = Some(str_bytes(why));
            }
        }
    }
    resp
}

pub fn describe_cluster(shard: &Shard, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let (members, controller) = brokers(shard);
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&shard.config.cluster_id);
    resp.controller_id = BrokerId(controller);
    resp.brokers = members
        .iter()
        .map(|m| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(m.id);
            b.host = str_bytes(&m.host);
            b.port = m.port;
            b
        })
        .collect();
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = if req.include_cluster_authorized_operations {
        CLUSTER_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    resp
}
