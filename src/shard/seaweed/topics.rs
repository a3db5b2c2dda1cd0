//! Topics on the SeaweedMQ backend. Shard 0 creates topics in SeaweedMQ before its table has
//! them, loads every Kafka topic SeaweedMQ has at start and adopts topics another gateway made
//! when a client asks for them (and every few seconds); every shard keeps a publish stream open
//! to each partition it leads (see [`Shard::seaweed_keep_attached`]).

use super::partition::Role;
use super::{INTERNAL_TOPIC_PREFIX, OFFSETS_TOPIC};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::seaweedmq::{SeaweedError, SeaweedResult};
use crate::shard::{RegistryOp, Shard, TopicPartition};
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

/// Whether `seaweed_adopt` checks for a create's own existence check (which must see the
/// topic) or for a refresh or lookup (which must leave a topic being created to its create).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForCreate {
    Yes,
    No,
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
                    // Marked until the registry applies the create (`Shard::registry_apply`
                    // clears it right after, with no await between).
                    self.sw().creating.borrow_mut().insert(name.clone());
                    if let Err(e) = self.seaweed_create(name, *partitions).await {
                        self.sw().creating.borrow_mut().remove(name);
                        return Err(e);
                    }
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
            RegistryOp::Lookup { name } => match self.seaweed_adopt(name, ForCreate::No).await {
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
        for_create: ForCreate,
    ) -> SeaweedResult<Option<Arc<TopicMeta>>> {
        let handle = self.sw().handle.clone();
        if !self.foreign(handle.topic_exists(name)).await? {
            return Ok(None);
        }
        let config = self.foreign(handle.topic_config(name)).await?;
        if for_create == ForCreate::No && self.sw().creating.borrow().contains(name) {
            // Being created here: the create enters it, with its configs.
            return Ok(None);
        }
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
        if let Some(meta) = self
            .seaweed_adopt(name, ForCreate::Yes)
            .await
            .map_err(fail)?
        {
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

    /// Shard 0: loads every Kafka topic SeaweedMQ has into the table, retrying with backoff
    /// while SeaweedMQ is unreachable, then looks again every `SEAWEEDMQ_TOPICS_REFRESH_MS`
    /// for topics made elsewhere (another kelp of the cluster, another gateway), so that
    /// listings agree across instances.
    pub(crate) async fn seaweed_load_topics(self: &Rc<Self>) {
        let handle = self.sw().handle.clone();
        let mut backoff = Duration::from_millis(200);
        let mut loaded_once = false;
        loop {
            if self.stopping.get() {
                return;
            }
            match self.foreign(handle.list_topics()).await {
                Ok(names) => {
                    if let Some(loaded) = self.adopt_all(&names).await {
                        if !loaded_once {
                            log::info!("SeaweedMQ: serving {loaded} existing topics");
                            loaded_once = true;
                        }
                        backoff = Duration::from_millis(limits::SEAWEEDMQ_TOPICS_REFRESH_MS);
                    }
                }
                Err(e) if !loaded_once => log::warn!(
                    "SeaweedMQ not reachable yet ({e}); topics load when it is (retrying in {backoff:?})"
                ),
                Err(e) => log::debug!("SeaweedMQ topic refresh: {e}"),
            }
            self.pause(backoff).await;
            if !loaded_once {
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Adopts every Kafka topic among `names` the table lacks; how many topics SeaweedMQ has,
    /// or `None` if any failed to load.
    async fn adopt_all(self: &Rc<Self>, names: &[String]) -> Option<usize> {
        let mut loaded = 0;
        let mut failed = false;
        for name in names
            .iter()
            .filter(|n| !n.starts_with(INTERNAL_TOPIC_PREFIX))
        {
            if crate::topics::validate_topic_name(name).is_err() {
                continue;
            }
            if self.topics().get(name).is_some() {
                loaded += 1;
                continue;
            }
            match self.seaweed_adopt(name, ForCreate::No).await {
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

    /// Keeps a publish stream open to every SeaweedMQ partition this shard leads (and, on
    /// shard 0, to the offsets partitions this instance serves), checking every
    /// `SEAWEEDMQ_ATTACH_CHECK_MS`, and applies the cluster view's timing (a lease that ran
    /// out, a start-up grace that ended). A SeaweedMQ broker unloads a partition as soon as
    /// its last publisher and subscriber leave, and stock SeaweedFS can reload it with its
    /// offsets reset (see ARCHITECTURE.md).
    pub(crate) async fn seaweed_keep_attached(self: &Rc<Self>) {
        let handle = self.sw().handle.clone();
        let mut failing = false;
        let mut led = usize::MAX;
        loop {
            if self.stopping.get() {
                return;
            }
            self.seaweed_apply_view();
            let parts = self.parts_to_hold();
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
            for ((topic, partition), attached) in parts.iter().zip(&results) {
                if topic.as_ref() == OFFSETS_TOPIC {
                    if attached.is_ok() {
                        self.sw().offsets_attached.borrow_mut().insert(*partition);
                    }
                    continue;
                }
                // Partitions taken over get their idempotence tables from storage before
                // their first produce, rather than making it wait.
                if attached.is_ok() {
                    let tp = TopicPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    self.producers_ready(&tp);
                }
            }
            let now_led = self.sw().serving();
            if now_led != led && errors.is_empty() {
                log::info!(
                    "shard {}: leading {now_led} SeaweedMQ partitions, holding them open",
                    self.id
                );
                led = now_led;
            }
            self.pause(Duration::from_millis(limits::SEAWEEDMQ_ATTACH_CHECK_MS))
                .await;
        }
    }

    /// The partitions whose publish streams this shard holds open: those it leads, and on
    /// shard 0 the offsets partitions this instance serves.
    fn parts_to_hold(&self) -> Vec<(Arc<str>, i32)> {
        let sw = self.sw();
        let mut parts: Vec<(Arc<str>, i32)> = sw
            .partitions
            .borrow()
            .iter()
            .filter(|(_, p)| p.role == Role::Serving)
            .map(|(tp, _)| (tp.topic.clone(), tp.partition))
            .collect();
        if self.id == 0 {
            let topic: Arc<str> = Arc::from(OFFSETS_TOPIC);
            for (q, part) in sw.offsets.borrow().iter() {
                if !part.leaving {
                    parts.push((topic.clone(), *q));
                }
            }
        }
        parts
    }
}
