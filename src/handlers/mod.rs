//! One handler per Kafka API, all reached from [`handle`], which checks nothing about versions
//! (the codec already refused what kelp does not serve) and encodes the answer.

mod admin;
mod configs;
mod fan_out;
mod fetch;
mod groups;
pub(crate) mod metadata;
mod offsets;
mod produce;

use crate::error::ErrorCode;
use crate::protocol::{self, Request};
use crate::shard::{RegistryOp, Shard};
use crate::topics::TopicMeta;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// What handling one request produced.
pub struct Handled {
    /// The response frame; `None` means no frame (acks=0 produce, or a response that could
    /// not be encoded).
    pub frame: Option<Bytes>,
    /// The answer carries a non-zero error code ([`protocol::response_has_error`]), or could
    /// not be produced.
    pub error: bool,
}

impl Handled {
    fn failed() -> Handled {
        Handled {
            frame: None,
            error: true,
        }
    }
}

/// Handles one request.
pub async fn handle(shard: Rc<Shard>, req: Request) -> Handled {
    let version = req.version;
    let api_key = req.api_key;
    let correlation_id = req.header.correlation_id;
    let body: ResponseKind = match req.body {
        RequestKind::ApiVersions(_) => {
            ResponseKind::ApiVersions(protocol::api_versions_response(ErrorCode::None.code()))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::metadata(&shard, r, version).await)
        }
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let resp = ResponseKind::Produce(produce::produce(&shard, r, version).await);
            if acks == 0 {
                return Handled {
                    frame: None,
                    error: protocol::response_has_error(&resp),
                };
            }
            resp
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::fetch(&shard, r, version).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(&shard, r, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offsets::offset_for_leader_epoch(&shard, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(metadata::find_coordinator(&shard, r, version))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(&shard, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(produce::init_producer_id(&shard, r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(&shard, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(&shard, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(&shard, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(admin::delete_records(&shard, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(&shard, r, version))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::alter_configs(&shard, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter_configs(&shard, r).await,
        ),
        RequestKind::JoinGroup(r) => {
            let client_id = req
                .header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            ResponseKind::JoinGroup(groups::join_group(&shard, r, version, &client_id).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync_group(&shard, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(&shard, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(&shard, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(&shard, r, version).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(&shard, r, version).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(&shard, r, version).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(&shard, r, version).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(&shard, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(&shard, r).await)
        }
        other => {
            // The codec only lets through what SUPPORTED_APIS lists, and every one of those has
            // an arm above; reaching here is a programming error, answered by closing.
            log::error!("no handler for {:?}", std::mem::discriminant(&other));
            return Handled::failed();
        }
    };
    let mut out = BytesMut::new();
    match protocol::encode_response(&mut out, api_key, version, correlation_id, &body) {
        Ok(()) => Handled {
            frame: Some(out.freeze()),
            error: protocol::response_has_error(&body),
        },
        Err(e) => {
            log::error!("could not encode {api_key:?} v{version} response: {e:#}");
            Handled::failed()
        }
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The topic, auto-created when the broker allows it and the caller asks for it.
pub(crate) async fn topic_or_create(
    shard: &Rc<Shard>,
    name: &str,
    allow_create: bool,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    if let Some(t) = shard.topics().get(name) {
        return Ok(t.clone());
    }
    if shard.topics_may_exist_elsewhere() {
        // Another gateway may have made it in SeaweedMQ.
        if let Ok(meta) = shard
            .registry(RegistryOp::Lookup {
                name: name.to_string(),
            })
            .await
        {
            return Ok(meta);
        }
    }
    if !(allow_create && shard.config.auto_create_topics) {
        return Err(ErrorCode::UnknownTopicOrPartition);
    }
    let created = shard
        .registry(RegistryOp::Create {
            name: name.to_string(),
            partitions: shard.config.default_partitions,
            configs: BTreeMap::new(),
            validate_only: false,
        })
        .await;
    match created {
        Ok(meta) => {
            log::info!(
                "auto-created topic {name:?} with {} partitions",
                meta.partitions
            );
            Ok(meta)
        }
        // Someone else created it meanwhile.
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => shard
            .topics()
            .get(name)
            .cloned()
            .ok_or(ErrorCode::UnknownTopicOrPartition),
        Err(e) => Err(e.code),
    }
}
