//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and the broker.

use super::str_bytes;
use crate::error::ErrorCode;
use crate::shard::{RegistryOp, Shard};
use crate::topics::{ConfigType, TopicMeta, RETENTION_BYTES, TOPIC_CONFIGS};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// One effective config value and where it came from.
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub kind: ConfigType,
    pub read_only: bool,
}

/// Every config of a topic: its overrides, else the defaults.
pub fn topic_config_entries(meta: &TopicMeta, default_retention_bytes: i64) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| match meta.configs.get(def.name) {
            Some(v) => ConfigEntry {
                name: def.name.to_string(),
                value: v.clone(),
                source: SOURCE_DYNAMIC_TOPIC,
                kind: def.kind,
                read_only: false,
            },
            None if def.name == RETENTION_BYTES => ConfigEntry {
                name: def.name.to_string(),
                value: default_retention_bytes.to_string(),
                source: if default_retention_bytes == -1 {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_STATIC_BROKER
                },
                kind: def.kind,
                read_only: false,
            },
            None => ConfigEntry {
                name: def.name.to_string(),
                value: def.default.to_string(),
                source: SOURCE_DEFAULT,
                kind: def.kind,
                read_only: false,
            },
        })
        .collect()
}

fn broker_config_entries(shard: &Shard) -> Vec<ConfigEntry> {
    let c = &shard.config;
    let (host, port) = &shard.advertised;
    let e = |name: &str, value: String, kind: ConfigType| ConfigEntry {
        name: name.to_string(),
        value,
        source: SOURCE_STATIC_BROKER,
        kind,
        read_only: true,
    };
    vec![
        e(
            "advertised.listeners",
            format!("PLAINTEXT://{host}:{port}"),
            ConfigType::List,
        ),
        e(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        e("broker.id", c.node_id.to_string(), ConfigType::Int),
        e("default.replication.factor", "1".into(), ConfigType::Int),
        e("listeners", c.listen.to_string(), ConfigType::List),
        e(
            "log.retention.bytes",
            c.retention_bytes.to_string(),
            ConfigType::Long,
        ),
        e("log.retention.ms", "604800000".into(), ConfigType::Long),
        e("message.max.bytes", "1048588".into(), ConfigType::Int),
        e("min.insync.replicas", "1".into(), ConfigType::Int),
        e(
            "num.partitions",
            c.default_partitions.to_string(),
            ConfigType::Int,
        ),
        e(
            "offsets.topic.replication.factor",
            "1".into(),
            ConfigType::Int,
        ),
        e(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            ConfigType::Int,
        ),
    ]
}

pub fn describe_configs(
    shard: &Rc<Shard>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let table = shard.topics();
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let entries = match res.resource_type {
            RESOURCE_TOPIC => match table.get(res.resource_name.as_str()) {
                Some(meta) => Ok(topic_config_entries(meta, shard.config.retention_bytes)),
                None => Err((
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {:?} does not exist", res.resource_name.as_str()),
                )),
            },
            RESOURCE_BROKER => {
                let name = res.resource_name.as_str();
                if name.is_empty() || name == shard.config.node_id.to_string() {
                    Ok(broker_config_entries(shard))
                } else {
                    Err((
                        ErrorCode::InvalidRequest,
                        format!("there is no broker {name:?}"),
                    ))
                }
            }
            other => Err((
                ErrorCode::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                let keys = res.configuration_keys.as_ref();
                r.configs = entries
                    .into_iter()
                    .filter(|e| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == e.name)))
                    .map(|e| {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = str_bytes(&e.name);
                        c.value = Some(str_bytes(&e.value));
                        c.read_only = e.read_only;
                        c.config_source = e.source;
                        c.is_sensitive = false;
                        if version >= 3 {
                            c.config_type = e.kind.wire();
                        }
                        c
                    })
                    .collect();
            }
            Err((code, msg)) => {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(&msg));
            }
        }
        resp.results.push(r);
    }
    resp
}

/// Runs one topic config change through the registry, or explains why it cannot be done.
async fn alter_one(
    shard: &Rc<Shard>,
    resource_type: i8,
    name: &str,
    ops: Vec<(String, i8, Option<String>)>,
    incremental: bool,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    match resource_type {
        RESOURCE_TOPIC => shard
            .registry(RegistryOp::AlterConfigs {
                name: name.to_string(),
                ops,
                incremental,
                validate_only,
            })
            .await
            .map(|_| ())
            .map_err(|e| (e.code, e.message)),
        RESOURCE_BROKER => Err((
            ErrorCode::InvalidConfig,
            "broker configs are set by kelp's flags and cannot be altered".into(),
        )),
        other => Err((
            ErrorCode::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

/// A config change asked of one resource: its type, its name, and (config, operation, value)
/// per config (operation 0, SET, for the non-incremental AlterConfigs).
type AlterResource = (i8, String, Vec<(String, i8, Option<String>)>);

/// The core both AlterConfigs and IncrementalAlterConfigs run: one result per resource, in
/// order.
async fn alter(
    shard: &Rc<Shard>,
    resources: Vec<AlterResource>,
    incremental: bool,
    validate_only: bool,
) -> Vec<Result<(), (ErrorCode, String)>> {
    let mut out = Vec::with_capacity(resources.len());
    for (resource_type, name, ops) in resources {
        out.push(alter_one(shard, resource_type, &name, ops, incremental, validate_only).await);
    }
    out
}

/// A resource's error code and message, as both alter responses carry them.
fn error_fields(result: Result<(), (ErrorCode, String)>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err((code, msg)) => (code.code(), Some(str_bytes(&msg))),
    }
}

pub async fn alter_configs(shard: &Rc<Shard>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let asked = req
        .resources
        .iter()
        .map(|res| {
            let ops = res
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        0i8,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            (res.resource_type, res.resource_name.to_string(), ops)
        })
        .collect();
    let results = alter(shard, asked, false, req.validate_only).await;
    let mut resp = AlterConfigsResponse::default();
    for (res, result) in req.resources.iter().zip(results) {
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        (r.error_code, r.error_message) = error_fields(result);
        resp.responses.push(r);
    }
    resp
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let asked = req
        .resources
        .iter()
        .map(|res| {
            let ops = res
                .configs
                .iter()
                .map(|c| {
                    let value = c.value.as_ref().map(|v| v.to_string());
                    (c.name.to_string(), c.config_operation, value)
                })
                .collect();
            (res.resource_type, res.resource_name.to_string(), ops)
        })
        .collect();
    let results = alter(shard, asked, true, req.validate_only).await;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for (res, result) in req.resources.iter().zip(results) {
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        (r.error_code, r.error_message) = error_fields(result);
        resp.responses.push(r);
    }
    resp
}
