//! Topic metadata changes: the registry on shard 0 is their single writer. It applies a
//! change to its table (on SeaweedMQ, after SeaweedMQ has accepted it), installs the new
//! snapshot on every shard, and only then answers, so Metadata on any connection is never
//! behind a completed CreateTopics. Installing a snapshot brings the shard's partitions in line
//! with it.

use super::ops::{Op, RegistryOp};
use super::{shard_for_partition, Backend, OwnedPartition, Shard, TopicPartition};
use crate::error::ErrorCode;
use crate::partition::Partition;
use crate::topics::{topic_id_for, Registry, RegistryError, TopicMeta, TopicSettings, TopicTable};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use uuid::Uuid;

impl Shard {
    /// Registry changes (shard 0 only): apply, install everywhere, then answer.
    pub(super) async fn registry_apply(
        self: &Rc<Self>,
        op: RegistryOp,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        let registry = self.registry.as_ref().expect("registry ops go to shard 0");
        let sets_configs = matches!(
            &op,
            RegistryOp::Create {
                validate_only: false,
                ..
            } | RegistryOp::AlterConfigs {
                validate_only: false,
                ..
            }
        );
        // The backend first: on SeaweedMQ, only what it accepted enters the table.
        if let Backend::Seaweed(_) = &self.backend {
            if let Some(answer) = self.seaweed_before_registry(&op).await? {
                return Ok(answer);
            }
        }
        let (result, changed) = {
            let mut r = registry.borrow_mut();
            let before = r.snapshot().version;
            let created = match (&self.backend, &op) {
                (Backend::Seaweed(_), RegistryOp::Create { name, .. }) => Some(name.clone()),
                _ => None,
            };
            let result = self.apply_to_table(&mut r, op);
            if let Some(name) = created {
                // In the table now (or refused by it): refreshes may adopt it again.
                self.sw().creating.borrow_mut().remove(&name);
            }
            let snap = r.snapshot();
            let changed = (snap.version != before).then_some(snap);
            (result, changed)
        };
        if let Some(table) = changed {
            self.install_everywhere(table).await;
        }
        if let (Backend::Seaweed(_), true, Ok(meta)) = (&self.backend, sets_configs, &result) {
            tell_of_compaction(meta);
        }
        result
    }

    /// A new topic's id: derived from its name on SeaweedMQ, where topics outlive kelp and
    /// several kelps must agree on it; random on the embedded backend.
    fn new_topic_id(&self, name: &str) -> Uuid {
        match self.backend {
            Backend::Seaweed(_) => topic_id_for(name),
            Backend::Memory(_) => Uuid::new_v4(),
        }
    }

    fn apply_to_table(
        &self,
        r: &mut Registry,
        op: RegistryOp,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        match op {
            RegistryOp::Create {
                name,
                partitions,
                configs,
                validate_only,
            } => {
                let id = self.new_topic_id(&name);
                r.create_with_id(&name, partitions, configs, validate_only, id)
            }
            RegistryOp::Lookup { name } => r.snapshot().get(&name).cloned().ok_or(RegistryError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic {name:?} does not exist"),
            }),
            RegistryOp::Delete { name, id } => r.delete(name.as_deref(), id),
            RegistryOp::Grow {
                name,
                count,
                validate_only,
            } => r.grow(&name, count, validate_only).map(|_| {
                r.snapshot().get(&name).cloned().unwrap_or_else(|| {
                    Arc::new(TopicMeta {
                        name: Arc::from(name.as_str()),
                        id: Uuid::nil(),
                        partitions: count,
                        configs: BTreeMap::new(),
                    })
                })
            }),
            RegistryOp::AlterConfigs {
                name,
                ops,
                incremental,
                validate_only,
            } => r
                .alter_configs(&name, &ops, incremental, validate_only)
                .map(|_| {
                    r.snapshot()
                        .get(&name)
                        .cloned()
                        .expect("altered topic exists")
                }),
        }
    }

    pub(crate) async fn install_everywhere(self: &Rc<Self>, table: Arc<TopicTable>) {
        let calls: Vec<_> = (0..self.shards())
            .map(|s| {
                let this = self.clone();
                let t = table.clone();
                async move { this.call(s, Op::InstallTopics(t)).await }
            })
            .collect();
        futures::future::join_all(calls).await;
    }

    /// Installs a new topic table and brings the owned partitions in line with it.
    pub(super) fn install_topics(&self, table: Arc<TopicTable>) {
        if table.version <= self.topics.borrow().version {
            return;
        }
        let owned = match &self.backend {
            Backend::Memory(m) => self.sync_partitions(&mut m.partitions.borrow_mut(), &table, {
                |meta: &TopicMeta, settings| Partition::new(meta.id, settings)
            }),
            Backend::Seaweed(s) => {
                let make = s.partition_maker(self.config.seaweedmq_cache_bytes);
                self.sync_partitions(&mut s.partitions.borrow_mut(), &table, make)
            }
        };
        self.metrics.set_ownership(owned, table.by_name.len());
        *self.topics.borrow_mut() = table;
    }

    /// Drops the partitions whose topic is gone (or was re-created under a new id), adds the
    /// ones this shard now owns, updates settings; returns how many it owns.
    fn sync_partitions<P: OwnedPartition>(
        &self,
        partitions: &mut HashMap<TopicPartition, P>,
        table: &TopicTable,
        make: impl Fn(&TopicMeta, TopicSettings) -> P,
    ) -> usize {
        partitions.retain(|tp, p| {
            let keep = table
                .get(&tp.topic)
                .is_some_and(|m| m.id == p.topic_id() && tp.partition < m.partitions);
            if !keep {
                p.appended().notify_all();
            }
            keep
        });
        let n = self.shards();
        for meta in table.by_name.values() {
            let settings = TopicSettings::resolve(meta, self.config.retention_bytes);
            for i in 0..meta.partitions {
                if shard_for_partition(&meta.name, i, n) != self.id {
                    continue;
                }
                let tp = TopicPartition {
                    topic: meta.name.clone(),
                    partition: i,
                };
                partitions
                    .entry(tp)
                    .and_modify(|p| p.set_settings(settings))
                    .or_insert_with(|| make(meta, settings));
            }
        }
        partitions.len()
    }
}

/// SeaweedMQ keeps every record it was given (kelp cannot rewrite a broker's log files under
/// it): a compacted topic there is validated (every record keyed) but never compacted, and
/// the operator who asked for compaction hears it.
fn tell_of_compaction(meta: &TopicMeta) {
    let policy = meta
        .configs
        .get("cleanup.policy")
        .map_or("", String::as_str);
    if policy.contains("compact") {
        log::warn!(
            "topic {:?}: cleanup.policy={policy} accepted, but SeaweedMQ keeps every record: \
             records without a key are refused, older values of a key are not removed \
             (readers from the start see each key's latest value, after older ones)",
            meta.name
        );
    }
}
