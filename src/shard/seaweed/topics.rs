//! Topics on the SeaweedMQ backend. Shard 0 creates topics in SeaweedMQ before its table has
//! them, loads every Kafka topic SeaweedMQ has at start and adopts topics another gateway made
//! when a client asks for them; every shard keeps a publish stream open to each partition it
//! owns (see [`Shard::seaweed_keep_attached`]).

use super::{INTERNAL_TOPIC_PREFIX, OFFSETS_TOPIC};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::seaweedmq::{SeaweedError, SeaweedResult};
use crate::shard::{PartitionOp, PartitionReply, RegistryOp, Shard, TopicPartition};
use crate::topics::{topic_id_for, RegistryError, TopicMeta};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn too_many_partitions() -> RegistryError {
    RegistryError {
        code: ErrorCode::InvalidPartitions,
        message: format!(
            "SeaweedMQ topics have at most {} partitions",
            limits::SEAWEEDMQ_PARTITIONS_MAX
        ),
    }
}

impl Shard {
    /// The registry's SeaweedMQ step, before the table changes (shard 0): a topic is created
    /// in SeaweedMQ first, so that only what it accepted enters the table; deleting topics and
    /// adding partitions are refused; a lookup adopts what SeaweedMQ has. `Ok(Some(meta))`
    /// answers the op; `Ok(None)` lets the table apply it.
    pub(in crate::shard) async fn seaweed_before_registry(
        self: &Rc<Self>,
        op: &RegistryOp,
    ) -> Result<Option<Arc<TopicMeta>>, RegistryError> {
        match op {
            RegistryOp::Create {
                name,
                partitions,
                configs,
                validate_only,
            } => {
                // The table's own checks (name, count, configs, existing) come first.
                let registry = self.registry.as_ref().expect("registry ops go to shard 0");
                registry
                    .borrow_mut()
                    .create(name, *partitions, configs.clone(), true)?;
                if *partitions > limits::SEAWEEDMQ_PARTITIONS_MAX || !*validate_only {
                    if *validate_only {
                        return Err(too_many_partitions());
                    }
                    self.seaweed_create(name, *partitions).await?;
                }
                Ok(None)
            }
            RegistryOp::Delete { .. } => Err(RegistryError {
                code: ErrorCode::TopicDeletionDisabled,
                message: "SeaweedMQ has no topic deletion call; kelp cannot delete topics on the seaweedmq backend".into(),
            }),
            RegistryOp::Grow { .. } => Err(RegistryError {
                code: ErrorCode::InvalidPartitions,
                message: "SeaweedMQ re-divides its partition ring when a topic's partition count changes, which would move existing records between Kafka partitions; kelp does not add partitions on the seaweedmq backend".into(),
            }),
            RegistryOp::Lookup { name } => match self.seaweed_adopt(name).await {
                Ok(Some(meta)) => Ok(Some(meta)),
                Ok(None) => Err(RegistryError {
                    code: ErrorCode::UnknownTopicOrPartition,
                    message: format!("topic {name:?} does not exist"),
                }),
                Err(e) => Err(RegistryError {
                    code: ErrorCode::from_seaweed(&e, false),
                    message: format!("SeaweedMQ: {e}"),
                }),
            },
            RegistryOp::AlterConfigs { .. } => Ok(None),
        }
    }

    /// Shard 0: a topic SeaweedMQ has, as a table entry (id derived from the name).
    pub(crate) async fn seaweed_adopt(
        self: &Rc<Self>,
        name: &str,
    ) -> SeaweedResult<Option<Arc<TopicMeta>>> {
        let handle = self.sw().handle.clone();
        if !self.foreign(handle.topic_exists(name)).await? {
            return Ok(None);
        }
        let config = self.foreign(handle.topic_config(name)).await?;
        let meta = {
            let registry = self.registry.as_ref().expect("shard 0");
            let mut r = registry.borrow_mut();
            r.adopt(name, topic_id_for(name), config.partition_count)
        };
        let table = self.registry.as_ref().expect("shard 0").borrow().snapshot();
        self.install_everywhere(table).await;
        Ok(Some(meta))
    }

    /// Shard 0: creates a topic in SeaweedMQ, then in the table. A topic SeaweedMQ already
    /// has (made by another gateway, or by kelp before a restart) is adopted and reported as
    /// existing.
    pub(crate) async fn seaweed_create(
        self: &Rc<Self>,
        name: &str,
        partitions: i32,
    ) -> Result<(), RegistryError> {
        let fail = |e: SeaweedError| RegistryError {
            code: if e.is_retriable() {
                ErrorCode::RequestTimedOut
            } else {
                ErrorCode::from_seaweed(&e, false)
            },
            message: format!("SeaweedMQ: {e}"),
        };
        if partitions > limits::SEAWEEDMQ_PARTITIONS_MAX {
            return Err(too_many_partitions());
        }
        if let Some(meta) = self.seaweed_adopt(name).await.map_err(fail)? {
            return Err(RegistryError {
                code: ErrorCode::TopicAlreadyExists,
                message: format!(
                    "topic {name:?} already exists in SeaweedMQ ({} partitions)",
                    meta.partitions
                ),
            });
        }
        let handle = self.sw().handle.clone();
        self.foreign(handle.configure_topic(name, partitions))
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Shard 0, at start: loads every Kafka topic SeaweedMQ has into the table, retrying with
    /// backoff while SeaweedMQ is unreachable, then holds every partition open.
    pub(crate) async fn seaweed_load_topics(self: &Rc<Self>) {
        let handle = self.sw().handle.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.stopping.get() {
                return;
            }
            match self.foreign(handle.list_topics()).await {
                Ok(names) => {
                    if let Some(loaded) = self.adopt_all(&names).await {
                        self.hold_all_open(loaded).await;
                        return;
                    }
                }
                Err(e) => log::warn!(
                    "SeaweedMQ not reachable yet ({e}); topics load when it is (retrying in {backoff:?})"
                ),
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Adopts every Kafka topic among `names`; how many, or `None` if any failed to load.
    async fn adopt_all(self: &Rc<Self>, names: &[String]) -> Option<usize> {
        let mut loaded = 0;
        let mut failed = false;
        for name in names
            .iter()
            .filter(|n| !n.starts_with(INTERNAL_TOPIC_PREFIX))
        {
            if crate::topics::validate_topic_name(name).is_err() {
                log::warn!("SeaweedMQ topic {name:?} is not a valid Kafka topic name; not served");
                continue;
            }
            match self.seaweed_adopt(name).await {
                Ok(Some(_)) => loaded += 1,
                Ok(None) => {}
                Err(e) => {
                    log::warn!("loading SeaweedMQ topic {name:?}: {e}");
                    failed = true;
                }
            }
        }
        (!failed).then_some(loaded)
    }

    /// Holds every partition of the table (and the offsets topic) open before saying so:
    /// another kelp may be about to stop (a rolling restart), and SeaweedMQ must not see the
    /// partitions without a publisher in between.
    async fn hold_all_open(self: &Rc<Self>, loaded: usize) {
        let table = self.topics();
        let ops: Vec<_> = table
            .by_name
            .values()
            .flat_map(|m| {
                (0..m.partitions).map(move |p| {
                    let tp = TopicPartition {
                        topic: m.name.clone(),
                        partition: p,
                    };
                    (tp, PartitionOp::Attach)
                })
            })
            .collect();
        let total = ops.len() + 1;
        let handle = self.sw().handle.clone();
        let offsets_held = self.foreign(handle.attach(OFFSETS_TOPIC, 0)).await.is_ok();
        let held = self
            .route(ops)
            .await
            .into_iter()
            .filter(|r| matches!(r, PartitionReply::Attached(Ok(()))))
            .count()
            + usize::from(offsets_held);
        log::info!(
            "SeaweedMQ: serving {loaded} existing topics; holding {held} of their {total} partitions open (with the offsets topic)"
        );
    }

    /// Keeps a publish stream open to every SeaweedMQ partition this shard owns (and, on shard
    /// 0, to the offsets topic), checking every `SEAWEEDMQ_ATTACH_CHECK_MS`. A SeaweedMQ
    /// broker unloads a partition as soon as its last publisher and subscriber leave, and
    /// SeaweedFS 4.44-4.53 can reload it with its offsets reset (see ARCHITECTURE.md).
    pub(crate) async fn seaweed_keep_attached(self: &Rc<Self>) {
        let handle = self.sw().handle.clone();
        let mut failing = false;
        loop {
            if self.stopping.get() {
                return;
            }
            let mut parts: Vec<(Arc<str>, i32)> = self
                .sw()
                .partitions
                .borrow()
                .keys()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect();
            if self.id == 0 {
                parts.push((Arc::from(OFFSETS_TOPIC), 0));
            }
            let results = futures::future::join_all(
                parts
                    .iter()
                    .map(|(t, p)| self.foreign(handle.attach(t, *p))),
            )
            .await;
            let errors: Vec<String> = parts
                .iter()
                .zip(&results)
                .filter_map(|((t, p), r)| r.as_ref().err().map(|e| format!("{t}[{p}]: {e}")))
                .collect();
            if !errors.is_empty() && !failing {
                log::warn!(
                    "shard {}: cannot hold {} SeaweedMQ partitions open (first: {}); retrying",
                    self.id,
                    errors.len(),
                    errors[0]
                );
            } else if errors.is_empty() && failing {
                log::info!("shard {}: SeaweedMQ partitions held open again", self.id);
            }
            failing = !errors.is_empty();
            // Partitions taken over get their idempotence tables from storage before their
            // first produce, rather than making it wait.
            for ((topic, partition), attached) in parts.iter().zip(&results) {
                if attached.is_ok() && topic.as_ref() != OFFSETS_TOPIC {
                    let tp = TopicPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    self.producers_ready(&tp);
                }
            }
            self.pause(Duration::from_millis(limits::SEAWEEDMQ_ATTACH_CHECK_MS))
                .await;
        }
    }
}
