//! Topic metadata: the table every shard holds a copy of, the registry on shard 0 that alone
//! changes it, and topic configs with their defaults.
//!
//! The registry is the single writer: CreateTopics, DeleteTopics, CreatePartitions and config
//! changes go to shard 0, which builds a new immutable [`TopicTable`] and sends it to every shard;
//! the admin request is answered only after every shard has installed it, so Metadata on any
//! connection is never behind a completed CreateTopics.

use crate::config::limits;
use crate::error::ErrorCode;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// A stable topic id derived from the topic's name, for backends whose topics outlive kelp
/// (SeaweedMQ): it survives restarts and is the same on every kelp in front of the same store.
pub fn topic_id_for(name: &str) -> Uuid {
    let mut a: u64 = 0xcbf29ce484222325;
    let mut b: u64 = 0x84222325cbf29ce4;
    for &c in name.as_bytes() {
        a = (a ^ c as u64).wrapping_mul(0x100000001b3);
        b = (b ^ c as u64).wrapping_mul(0x0100_0193_0000_01b3);
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    // Version 8 (custom) and the RFC variant bits, so it reads as a proper UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// One topic as every shard sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: i32,
    /// Configs set on the topic (overrides); defaults are not stored.
    pub configs: BTreeMap<String, String>,
}

/// An immutable snapshot of all topics; a new one replaces the old on every change.
#[derive(Debug, Default, Clone)]
pub struct TopicTable {
    pub version: u64,
    pub by_name: HashMap<Arc<str>, Arc<TopicMeta>>,
    pub by_id: HashMap<Uuid, Arc<str>>,
}

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.by_name.get(name)
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.by_id.get(id).and_then(|n| self.by_name.get(n))
    }

    fn insert(&mut self, meta: TopicMeta) {
        self.by_id.insert(meta.id, meta.name.clone());
        self.by_name.insert(meta.name.clone(), Arc::new(meta));
    }

    fn remove(&mut self, name: &str) -> Option<Arc<TopicMeta>> {
        let meta = self.by_name.remove(name)?;
        self.by_id.remove(&meta.id);
        Some(meta)
    }
}

/// The kind of value a config takes, as DescribeConfigs v3+ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// A topic config kelp knows: its name, type and Kafka's default.
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: &'static str,
    /// Allowed values for enumerated configs.
    pub allowed: &'static [&'static str],
}

/// retention.bytes' default comes from `--retention-bytes`; the table holds Kafka's.
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const RETENTION_MS: &str = "retention.ms";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";

/// Every topic config accepted. kelp enforces retention.*, max.message.bytes and
/// message.timestamp.type; the others are stored and reported so that tools that set them work.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        kind: ConfigType::List,
        default: "delete",
        allowed: &["delete", "compact", "compact,delete", "delete,compact"],
    },
    ConfigDef {
        name: "compression.type",
        kind: ConfigType::String,
        default: "producer",
        allowed: &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"],
    },
    ConfigDef {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        default: "86400000",
        allowed: &[],
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        kind: ConfigType::Long,
        default: "60000",
        allowed: &[],
    },
    ConfigDef {
        name: "flush.messages",
        kind: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
    },
    ConfigDef {
        name: "flush.ms",
        kind: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
    },
    ConfigDef {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        default: "4096",
        allowed: &[],
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        kind: ConfigType::Int,
        default: "1048588",
        allowed: &[],
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        kind: ConfigType::Long,
        default: "3600000",
        allowed: &[],
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        kind: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
    },
    ConfigDef {
        name: TIMESTAMP_TYPE,
        kind: ConfigType::String,
        default: "CreateTime",
        allowed: &["CreateTime", "LogAppendTime"],
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double,
        default: "0.5",
        allowed: &[],
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        default: "0",
        allowed: &[],
    },
    ConfigDef {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        default: "1",
        allowed: &[],
    },
    ConfigDef {
        name: "preallocate",
        kind: ConfigType::Boolean,
        default: "false",
        allowed: &["true", "false"],
    },
    ConfigDef {
        name: RETENTION_BYTES,
        kind: ConfigType::Long,
        default: "-1",
        allowed: &[],
    },
    ConfigDef {
        name: RETENTION_MS,
        kind: ConfigType::Long,
        default: "604800000",
        allowed: &[],
    },
    ConfigDef {
        name: "segment.bytes",
        kind: ConfigType::Int,
        default: "1073741824",
        allowed: &[],
    },
    ConfigDef {
        name: "segment.index.bytes",
        kind: ConfigType::Int,
        default: "10485760",
        allowed: &[],
    },
    ConfigDef {
        name: "segment.jitter.ms",
        kind: ConfigType::Long,
        default: "0",
        allowed: &[],
    },
    ConfigDef {
        name: "segment.ms",
        kind: ConfigType::Long,
        default: "604800000",
        allowed: &[],
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        default: "false",
        allowed: &["true", "false"],
    },
];

impl ConfigType {
    /// The number DescribeConfigs v3+ puts on the wire.
    pub fn wire(self) -> i8 {
        self as i8
    }
}

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one topic config; the error text goes back to the client.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = config_def(name) else {
        return Err(format!("unknown topic config {name:?}"));
    };
    let ok = match def.kind {
        ConfigType::Long => value.parse::<i64>().is_ok_and(|v| v >= -1),
        ConfigType::Int => value.parse::<i32>().is_ok_and(|v| v >= 0),
        ConfigType::Double => value.parse::<f64>().is_ok(),
        ConfigType::Boolean => value == "true" || value == "false",
        ConfigType::String | ConfigType::List => {
            def.allowed.is_empty() || def.allowed.contains(&value)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for topic config {name:?}"))
    }
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is illegal"));
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name {name:?} may only hold ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The effective settings a partition owner needs, resolved from a topic's configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: every record needs a key, and older records of a
    /// key are removed (memory backend).
    pub compacted: bool,
    /// `cleanup.policy` includes `delete`: retention.ms and retention.bytes apply.
    pub delete: bool,
    /// delete.retention.ms: how long a tombstone stays once it is the latest of its key.
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
}

impl TopicSettings {
    pub fn resolve(meta: &TopicMeta, default_retention_bytes: i64) -> Self {
        let get = |k: &str| meta.configs.get(k).map(String::as_str);
        let policy: Vec<&str> = get("cleanup.policy")
            .unwrap_or("delete")
            .split(',')
            .map(str::trim)
            .collect();
        TopicSettings {
            retention_bytes: get(RETENTION_BYTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default_retention_bytes),
            retention_ms: get(RETENTION_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(604_800_000),
            max_message_bytes: get(MAX_MESSAGE_BYTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_048_588),
            log_append_time: get(TIMESTAMP_TYPE) == Some("LogAppendTime"),
            compacted: policy.contains(&"compact"),
            delete: policy.contains(&"delete"),
            delete_retention_ms: get("delete.retention.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(86_400_000),
            min_compaction_lag_ms: get("min.compaction.lag.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// A registry failure: the Kafka error and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
}

impl RegistryError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
        }
    }
}

/// The one writer of topic metadata; lives on shard 0.
#[derive(Default)]
pub struct Registry {
    table: TopicTable,
}

impl Registry {
    pub fn snapshot(&self) -> Arc<TopicTable> {
        Arc::new(self.table.clone())
    }

    /// Creates a topic (or only checks that it could be, with `validate_only`).
    pub fn create(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        self.create_with_id(name, partitions, configs, validate_only, Uuid::new_v4())
    }

    /// [`Self::create`] with the topic id given.
    pub fn create_with_id(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
        id: Uuid,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        validate_topic_name(name)
            .map_err(|m| RegistryError::new(ErrorCode::InvalidTopicException, m))?;
        if self.table.by_name.contains_key(name) {
            return Err(RegistryError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        if !(1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(RegistryError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "number of partitions must be 1..={}",
                    limits::PARTITIONS_PER_TOPIC_MAX
                ),
            ));
        }
        if self.table.by_name.len() >= limits::TOPICS_MAX {
            return Err(RegistryError::new(
                ErrorCode::PolicyViolation,
                format!("the broker already holds {} topics", limits::TOPICS_MAX),
            ));
        }
        for (k, v) in &configs {
            validate_config(k, v).map_err(|m| RegistryError::new(ErrorCode::InvalidConfig, m))?;
        }
        let meta = TopicMeta {
            name: Arc::from(name),
            id,
            partitions,
            configs,
        };
        if !validate_only {
            self.table.insert(meta.clone());
            self.table.version += 1;
        }
        Ok(Arc::new(meta))
    }

    /// Takes in a topic that exists in the backend (SeaweedMQ) under a known id; a no-op when
    /// the table already has it with the same id and partition count.
    pub fn adopt(&mut self, name: &str, id: Uuid, partitions: i32) -> Arc<TopicMeta> {
        if let Some(m) = self.table.get(name) {
            if m.id == id && m.partitions == partitions {
                return m.clone();
            }
        }
        let configs = self
            .table
            .get(name)
            .map(|m| m.configs.clone())
            .unwrap_or_default();
        let meta = TopicMeta {
            name: Arc::from(name),
            id,
            partitions,
            configs,
        };
        self.table.insert(meta.clone());
        self.table.version += 1;
        Arc::new(meta)
    }

    /// Deletes a topic by name or id; returns the deleted topic.
    pub fn delete(
        &mut self,
        name: Option<&str>,
        id: Option<Uuid>,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        let name: Arc<str> =
            match (name, id) {
                (Some(n), _) if !n.is_empty() => Arc::from(n),
                (_, Some(id)) => self.table.by_id.get(&id).cloned().ok_or_else(|| {
                    RegistryError::new(ErrorCode::UnknownTopicId, "unknown topic id")
                })?,
                _ => {
                    return Err(RegistryError::new(
                        ErrorCode::InvalidRequest,
                        "no topic named",
                    ))
                }
            };
        let meta = self.table.remove(&name).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            )
        })?;
        self.table.version += 1;
        Ok(meta)
    }

    /// Raises a topic's partition count.
    pub fn grow(
        &mut self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), RegistryError> {
        let Some(meta) = self.table.get(name) else {
            return Err(RegistryError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        if count <= meta.partitions {
            return Err(RegistryError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic has {} partitions; the new count must be larger",
                    meta.partitions
                ),
            ));
        }
        if count > limits::PARTITIONS_PER_TOPIC_MAX {
            return Err(RegistryError::new(
                ErrorCode::InvalidPartitions,
                format!("at most {} partitions", limits::PARTITIONS_PER_TOPIC_MAX),
            ));
        }
        if !validate_only {
            let mut m = (**meta).clone();
            m.partitions = count;
            self.table.insert(m);
            self.table.version += 1;
        }
        Ok(())
    }

    /// Replaces (`incremental == false`) or edits a topic's configs. `ops` holds
    /// (name, op, value) with Kafka's op codes: 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
    pub fn alter_configs(
        &mut self,
        name: &str,
        ops: &[(String, i8, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<(), RegistryError> {
        let Some(meta) = self.table.get(name) else {
            return Err(RegistryError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        let mut configs = if incremental {
            meta.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, op, v) in ops {
            match (op, v) {
                (0, Some(v)) => {
                    validate_config(k, v)
                        .map_err(|m| RegistryError::new(ErrorCode::InvalidConfig, m))?;
                    configs.insert(k.clone(), v.clone());
                }
                (0, None) | (1, _) => {
                    if config_def(k).is_none() {
                        return Err(RegistryError::new(
                            ErrorCode::InvalidConfig,
                            format!("unknown topic config {k:?}"),
                        ));
                    }
                    configs.remove(k);
                }
                (2 | 3, Some(v)) => {
                    let def = config_def(k)
                        .filter(|d| d.kind == ConfigType::List)
                        .ok_or_else(|| {
                            RegistryError::new(
                                ErrorCode::InvalidConfig,
                                format!("{k:?} is not a list config"),
                            )
                        })?;
                    let current = configs.get(k).map(String::as_str).unwrap_or(def.default);
                    let mut items: Vec<&str> =
                        current.split(',').filter(|s| !s.is_empty()).collect();
                    for item in v.split(',') {
                        if *op == 2 {
                            if !items.contains(&item) {
                                items.push(item);
                            }
                        } else {
                            items.retain(|x| *x != item);
                        }
                    }
                    let joined = items.join(",");
                    validate_config(k, &joined)
                        .map_err(|m| RegistryError::new(ErrorCode::InvalidConfig, m))?;
                    configs.insert(k.clone(), joined);
                }
                _ => {
                    return Err(RegistryError::new(
                        ErrorCode::InvalidRequest,
                        format!("invalid config operation {op} for {k:?}"),
                    ))
                }
            }
        }
        if !validate_only {
            let mut m = (**meta).clone();
            m.configs = configs;
            self.table.insert(m);
            self.table.version += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_stable_and_distinct() {
        assert_eq!(topic_id_for("orders"), topic_id_for("orders"));
        assert_ne!(topic_id_for("orders"), topic_id_for("orders2"));
        assert_eq!(topic_id_for("a").get_version_num(), 8);
        assert!(!topic_id_for("").is_nil());
    }

    #[test]
    fn create_delete_and_grow() {
        let mut r = Registry::default();
        let t = r.create("a", 3, BTreeMap::new(), false).unwrap();
        assert_eq!(t.partitions, 3);
        assert_eq!(
            r.create("a", 3, BTreeMap::new(), false).unwrap_err().code,
            ErrorCode::TopicAlreadyExists
        );
        assert_eq!(
            r.create("b/c", 1, BTreeMap::new(), false).unwrap_err().code,
            ErrorCode::InvalidTopicException
        );
        r.grow("a", 5, false).unwrap();
        assert_eq!(r.snapshot().get("a").unwrap().partitions, 5);
        assert_eq!(
            r.grow("a", 2, false).unwrap_err().code,
            ErrorCode::InvalidPartitions
        );
        let id = r.snapshot().get("a").unwrap().id;
        r.delete(None, Some(id)).unwrap();
        assert!(r.snapshot().get("a").is_none());
    }

    #[test]
    fn configs_are_validated_and_altered() {
        let mut r = Registry::default();
        let mut c = BTreeMap::new();
        c.insert("retention.ms".to_string(), "nope".to_string());
        assert_eq!(
            r.create("t", 1, c, false).unwrap_err().code,
            ErrorCode::InvalidConfig
        );
        r.create("t", 1, BTreeMap::new(), false).unwrap();
        r.alter_configs(
            "t",
            &[("retention.ms".into(), 0, Some("1000".into()))],
            true,
            false,
        )
        .unwrap();
        r.alter_configs(
            "t",
            &[("cleanup.policy".into(), 2, Some("compact".into()))],
            true,
            false,
        )
        .unwrap();
        let t = r.snapshot().get("t").unwrap().clone();
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(t.configs["cleanup.policy"], "delete,compact");
        r.alter_configs("t", &[], false, false).unwrap();
        assert!(r.snapshot().get("t").unwrap().configs.is_empty());
    }
}
