//! A shard: one pinned glommio executor owning its connections, the partitions
//! [`shard_for_partition`] gives it and (later) its groups. Shards share nothing but messages.
//!
//! ## The mesh
//! Each shard has an inbox (a bounded crossbeam channel) that its inbox task busy-polls while
//! the shard is active. Glommio's own channels are not the transport because they are serviced
//! only when the executor polls io_uring, which a shard that spins on its sockets does only every
//! preemption interval. When idle, the inbox task parks on doorbells: a glommio channel mesh of
//! `()` that a sender rings only if the receiver said it was parked. Two earlier doorbells lost
//! wake-ups on these VMs (a socket pair read through glommio, and a foreign `Waker`): both
//! executors slept with a message waiting. `examples/mesh_probe.rs` reproduces that test. Glommio's own
//! channel mesh is not used because it is serviced only when the executor polls io_uring, which
//! a shard that spins on its sockets does only every preemption interval.
//!
//! Replies travel back through the requester's inbox and complete a shard-local oneshot, so a
//! waiting task is woken by its own executor, never from a foreign thread.

use crate::config::{limits, Config};
use crate::error::ErrorCode;
use crate::group::{self, Coordinator, GroupConfig, GroupOp, GroupReply};
use crate::metrics::ShardMetrics;
use crate::partition::{Partition, ProduceOutcome};
use crate::seaweedmq::SeaweedHandle;
use crate::storage::{OffsetAndTimestamp, ReadResult};
use crate::topics::{Registry, RegistryError, TopicMeta, TopicSettings, TopicTable};
use crate::util::{now_ms, Notify};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::channel::oneshot;
use futures::FutureExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The shard that owns partition `partition` of `topic`: a pure function of the two, the same
/// on every shard and across restarts (FNV-1a over the name, mixed with the partition).
pub fn shard_for_partition(topic: &str, partition: i32, shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in topic.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= partition as u32 as u64;
    h = h.wrapping_mul(0x100000001b3);
    h ^= h >> 29;
    (h % shards as u64) as usize
}

/// The shard that owns consumer group `group` (used from the group-coordinator issue on).
pub fn shard_for_group(group: &str, shards: usize) -> usize {
    shard_for_partition(group, -1, shards)
}

/// A partition named by topic and index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// Work for the owner of one partition.
#[derive(Debug)]
pub enum PartitionOp {
    Produce {
        records: Option<Bytes>,
    },
    Read {
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    },
    ListOffset {
        timestamp: i64,
    },
    DeleteRecords {
        offset: i64,
    },
    EndOffset,
    /// SeaweedMQ backend: open (and keep open) the partition's publish stream.
    Attach,
}

/// The owner's answer to a [`PartitionOp`].
#[derive(Debug)]
pub enum PartitionReply {
    Produce(ProduceOutcome),
    Read(Result<ReadResult, ErrorCode>),
    ListOffset(Result<OffsetAndTimestamp, ErrorCode>),
    DeleteRecords(Result<i64, ErrorCode>),
    EndOffset(Result<(i64, i64), ErrorCode>),
    Attached(Result<(), ErrorCode>),
}

/// A change only the registry (shard 0) may make.
#[derive(Debug)]
pub enum RegistryOp {
    Create {
        name: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    Delete {
        name: Option<String>,
        id: Option<Uuid>,
    },
    Grow {
        name: String,
        count: i32,
        validate_only: bool,
    },
    AlterConfigs {
        name: String,
        ops: Vec<(String, i8, Option<String>)>,
        incremental: bool,
        validate_only: bool,
    },
    /// SeaweedMQ backend: take in a topic the table lacks but SeaweedMQ may have (made by
    /// another gateway); fails with UNKNOWN_TOPIC_OR_PARTITION when it has not.
    Lookup { name: String },
}

/// A partition op's answer: at once, or once the gRPC core has answered.
pub(crate) enum Applied {
    Now(PartitionReply),
    Later(futures::future::LocalBoxFuture<'static, PartitionReply>),
}

/// What crosses between shards.
pub enum Op {
    Partitions(Vec<(TopicPartition, PartitionOp)>),
    /// Completes when any of these partitions has data past the offset, or after the timeout.
    WaitForData(Vec<(TopicPartition, i64)>, Duration),
    Registry(RegistryOp),
    InstallTopics(Arc<TopicTable>),
    Group(GroupOp),
}

pub enum Reply {
    Partitions(Vec<PartitionReply>),
    Registry(Result<Arc<TopicMeta>, RegistryError>),
    Group(GroupReply),
    Done,
}

pub enum Envelope {
    Request { id: u64, from: usize, op: Op },
    Reply { id: u64, reply: Reply },
    Shutdown,
}

/// The cross-shard plumbing every shard holds a handle to (`Send + Sync`).
pub struct Mesh {
    inboxes: Vec<Sender<Envelope>>,
    parked: Vec<AtomicBool>,
    /// Each shard's id in the glommio doorbell mesh (join order, not shard order).
    peer_of: Vec<AtomicUsize>,
    joined: AtomicUsize,
    /// Connections open over all shards, for `--max-connections` (touched on accept only).
    pub connections: AtomicUsize,
}

/// The receiving end a shard takes when it starts.
pub struct ShardEnds {
    pub inbox: Receiver<Envelope>,
}

impl Mesh {
    pub fn new(shards: usize) -> std::io::Result<(Arc<Mesh>, Vec<ShardEnds>)> {
        let mut inboxes = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = crossbeam_channel::bounded(limits::MESH_QUEUE_DEPTH);
            inboxes.push(tx);
            ends.push(ShardEnds { inbox: rx });
        }
        let mesh = Mesh {
            inboxes,
            parked: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            peer_of: (0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect(),
            joined: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        };
        Ok((Arc::new(mesh), ends))
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Asks every shard to shut down (from the signal thread, which cannot ring doorbells: a
    /// parked shard sees the message at its next safety check).
    pub fn shutdown_all(&self) {
        for i in 0..self.shards() {
            // A blocking send: shutdown must not be lost to a full inbox.
            let _ = self.inboxes[i].send(Envelope::Shutdown);
        }
    }
}

/// Everything one shard owns. Lives in an `Rc` on the shard's thread.
pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    pub advertised: (String, i32),
    pub mesh: Arc<Mesh>,
    /// This shard's copy of the topic table.
    pub topics: RefCell<Arc<TopicTable>>,
    /// The partitions this shard owns.
    pub partitions: RefCell<HashMap<TopicPartition, Partition>>,
    /// The consumer groups this shard owns.
    pub groups: RefCell<Coordinator>,
    /// Only on shard 0: the single writer of topic metadata.
    pub(crate) registry: Option<RefCell<Registry>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    /// This shard's ends of the glommio doorbell mesh, set by [`Shard::join_doorbells`].
    doorbells: RefCell<Option<Senders<()>>>,
    next_request_id: Cell<u64>,
    next_producer_id: Cell<i64>,
    pub stopping: Cell<bool>,
    pub stop: Notify,
    /// Connections this shard serves now.
    pub connections: Cell<usize>,
    /// This shard's counters for `/metrics` (written only here).
    pub metrics: &'static ShardMetrics,
    /// When any task of this shard last did work; the spinner keeps polling until `--spin-us`
    /// after it.
    last_active: Cell<Instant>,
    /// Sockets of parked connections (and the listener), polled by the spinner while the shard
    /// is active; each entry wakes its task.
    watched: RefCell<HashMap<RawFd, Notify>>,
    /// The gRPC core, with `--backend seaweedmq`.
    pub seaweed: Option<SeaweedHandle>,
    /// Tasks of this shard waiting for the gRPC core, and their local wake-up: the core's
    /// answers wake them from a foreign thread, which glommio notices only when it polls
    /// io_uring, so the spinner also pokes them on every turn (see `Shard::grpc`).
    pub(crate) grpc_waiting: Cell<usize>,
    pub(crate) grpc_poke: Notify,
    /// Rung when a task starts waiting on the gRPC core while none did: a parked spinner
    /// then moves from its long safety timer to `PARKED_GRPC_CHECK_US`.
    pub(crate) grpc_started: Notify,
    /// Whether the committed offsets of this shard's groups are loaded (always, on the memory
    /// backend; after the replay of SeaweedMQ's offsets topic, on the seaweedmq backend).
    pub(crate) offsets_loaded: Cell<bool>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        mesh: Arc<Mesh>,
        metrics: &'static ShardMetrics,
        seaweed: Option<SeaweedHandle>,
    ) -> Rc<Shard> {
        let shards = mesh.shards() as i64;
        // Producer ids: unique across shards (id modulo shard count) and, since the embedded
        // backend forgets everything on restart, started from the clock so that a producer
        // that outlived a restart does not collide with a new one.
        let base = (now_ms() & 0xff_ffff_ffff) << 16;
        let groups = RefCell::new(Coordinator::new(GroupConfig {
            initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            offsets_retention: Duration::from_secs(config.offsets_retention_minutes * 60),
            max_members: limits::GROUP_MEMBERS_MAX,
            offset_metadata_max_bytes: limits::OFFSET_METADATA_BYTES_MAX,
        }));
        Rc::new(Shard {
            id,
            advertised: config.advertised(),
            groups,
            config,
            registry: (id == 0).then(|| RefCell::new(Registry::default())),
            mesh,
            topics: RefCell::new(Arc::new(TopicTable::default())),
            partitions: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            doorbells: RefCell::new(None),
            next_request_id: Cell::new(1),
            next_producer_id: Cell::new(base - base % shards + id as i64),
            stopping: Cell::new(false),
            stop: Notify::default(),
            connections: Cell::new(0),
            metrics,
            last_active: Cell::new(Instant::now()),
            watched: RefCell::new(HashMap::new()),
            grpc_waiting: Cell::new(0),
            grpc_poke: Notify::default(),
            grpc_started: Notify::default(),
            offsets_loaded: Cell::new(seaweed.is_none()),
            seaweed,
        })
    }

    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    /// Sleeps for `d`, or less if the shard is asked to stop meanwhile.
    pub async fn pause(&self, d: Duration) {
        let stop = self.stop.notified();
        let tick = glommio::timer::sleep(d);
        futures::pin_mut!(tick);
        futures::future::select(tick, stop).await;
    }

    /// Records that this shard just did work (keeps its spinner polling).
    pub fn touch(&self) {
        self.last_active.set(Instant::now());
    }

    /// Asks the spinner to watch `fd` for readability; the returned notifier fires when it is.
    pub fn watch_fd(&self, fd: RawFd) -> Notify {
        self.watched.borrow_mut().entry(fd).or_default().clone()
    }

    pub fn unwatch_fd(&self, fd: RawFd) {
        self.watched.borrow_mut().remove(&fd);
    }

    /// One non-blocking poll(2) over the watched sockets; wakes the tasks of the ready ones.
    fn poll_watched(&self, fds: &mut Vec<libc::pollfd>) -> usize {
        fds.clear();
        fds.extend(self.watched.borrow().keys().map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        if fds.is_empty() {
            return 0;
        }
        // SAFETY: poll reads and writes exactly fds.len() pollfd structs we own; timeout 0.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if n <= 0 {
            return 0;
        }
        let watched = self.watched.borrow();
        let mut woke = 0;
        for p in fds.iter().filter(|p| p.revents != 0) {
            if let Some(n) = watched.get(&p.fd) {
                n.notify_all();
                woke += 1;
            }
        }
        woke
    }

    pub fn topics(&self) -> Arc<TopicTable> {
        self.topics.borrow().clone()
    }

    pub fn allocate_producer_id(&self) -> i64 {
        let id = self.next_producer_id.get();
        self.next_producer_id.set(id + self.shards() as i64);
        id
    }

    /// Sends `op` to shard `to` and waits for its reply. Never blocks the thread: a full inbox
    /// makes this task yield and retry.
    pub async fn call(self: &Rc<Self>, to: usize, op: Op) -> Reply {
        if to == self.id {
            return self.execute(op).await;
        }
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        self.send_to(
            to,
            Envelope::Request {
                id,
                from: self.id,
                op,
            },
        )
        .await;
        match rx.await {
            Ok(reply) => reply,
            // The pending entry is dropped only at shutdown.
            Err(_) => Reply::Done,
        }
    }

    /// Runs partition ops where their owners are: local ones directly, the rest in one message
    /// per owning shard, all in parallel; answers come back in the order asked.
    pub async fn route(
        self: &Rc<Self>,
        ops: Vec<(TopicPartition, PartitionOp)>,
    ) -> Vec<PartitionReply> {
        let n = self.shards();
        if n == 1 {
            return self.apply_all(ops).await;
        }
        let mut by_shard: Vec<Vec<(usize, (TopicPartition, PartitionOp))>> =
            (0..n).map(|_| Vec::new()).collect();
        let total = ops.len();
        for (i, (tp, op)) in ops.into_iter().enumerate() {
            let s = shard_for_partition(&tp.topic, tp.partition, n);
            by_shard[s].push((i, (tp, op)));
        }
        let mut out: Vec<Option<PartitionReply>> = (0..total).map(|_| None).collect();
        let mut remote = Vec::new();
        let mut local = None;
        for (s, group) in by_shard.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (idx, ops): (Vec<usize>, Vec<_>) = group.into_iter().unzip();
            if s == self.id {
                local = Some((idx, ops));
            } else {
                let this = self.clone();
                remote.push(
                    async move { (idx, this.call(s, Op::Partitions(ops)).await) }.boxed_local(),
                );
            }
        }
        if let Some((idx, ops)) = local {
            // Applied (or queued on the gRPC core) before the remote answers are awaited.
            let this = self.clone();
            let applied = self.apply_all(ops);
            remote.push(
                async move {
                    let _keep = this;
                    (idx, Reply::Partitions(applied.await))
                }
                .boxed_local(),
            );
        }
        for (idx, reply) in futures::future::join_all(remote).await {
            if let Reply::Partitions(replies) = reply {
                for (i, r) in idx.into_iter().zip(replies) {
                    out[i] = Some(r);
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(PartitionReply::Read(Err(ErrorCode::RequestTimedOut))))
            .collect()
    }

    /// Applies ops owned by this shard, in order. Memory partitions answer at once; SeaweedMQ
    /// ones are queued on the gRPC core in order, then awaited together.
    fn apply_all(
        self: &Rc<Self>,
        ops: Vec<(TopicPartition, PartitionOp)>,
    ) -> impl std::future::Future<Output = Vec<PartitionReply>> + 'static {
        let mut now = Vec::with_capacity(ops.len());
        let mut later = Vec::new();
        for (i, (tp, op)) in ops.into_iter().enumerate() {
            match self.apply_any(tp, op) {
                Applied::Now(r) => now.push(Some(r)),
                Applied::Later(f) => {
                    now.push(None);
                    later.push(async move { (i, f.await) });
                }
            }
        }
        async move {
            if !later.is_empty() {
                for (i, r) in futures::future::join_all(later).await {
                    now[i] = Some(r);
                }
            }
            now.into_iter()
                .map(|r| r.expect("every op answered"))
                .collect()
        }
    }

    /// Waits until any of `parts` has data past its offset, or `timeout`.
    pub async fn wait_for_data(
        self: &Rc<Self>,
        parts: Vec<(TopicPartition, i64)>,
        timeout: Duration,
    ) {
        let n = self.shards();
        let mut by_shard: Vec<Vec<(TopicPartition, i64)>> = (0..n).map(|_| Vec::new()).collect();
        for (tp, off) in parts {
            let s = shard_for_partition(&tp.topic, tp.partition, n);
            by_shard[s].push((tp, off));
        }
        let mut waits = Vec::new();
        for (s, group) in by_shard.into_iter().enumerate() {
            if !group.is_empty() {
                let this = self.clone();
                waits.push(
                    async move { this.call(s, Op::WaitForData(group, timeout)).await }
                        .boxed_local(),
                );
            }
        }
        if waits.is_empty() {
            return;
        }
        let timer = glommio::timer::sleep(timeout);
        futures::pin_mut!(timer);
        let first = futures::future::select_all(waits);
        let _ = futures::future::select(first, timer).await;
    }

    /// Executes an op addressed to this shard.
    async fn execute(self: &Rc<Self>, op: Op) -> Reply {
        match op {
            Op::Partitions(ops) => Reply::Partitions(self.apply_all(ops).await),
            Op::WaitForData(parts, timeout) => {
                self.wait_local(parts, timeout).await;
                Reply::Done
            }
            Op::Registry(op) => Reply::Registry(self.registry_apply(op).await),
            Op::InstallTopics(table) => {
                self.install_topics(table);
                Reply::Done
            }
            Op::Group(op) => Reply::Group(if self.seaweed.is_some() {
                self.seaweed_group_op(op).await
            } else {
                group::apply(&self.groups, op).await
            }),
        }
    }

    async fn wait_local(&self, parts: Vec<(TopicPartition, i64)>, timeout: Duration) {
        let mut waits = Vec::new();
        {
            let partitions = self.partitions.borrow();
            for (tp, offset) in &parts {
                match partitions.get(tp) {
                    Some(p) if p.log.next_offset() <= *offset => waits.push(p.appended.notified()),
                    // Data already there, or the partition is gone: the fetch must look again.
                    _ => return,
                }
            }
        }
        let stop = self.stop.notified();
        let timer = glommio::timer::sleep(timeout);
        futures::pin_mut!(timer);
        let any = futures::future::select(futures::future::select_all(waits), stop);
        let _ = futures::future::select(any, timer).await;
    }

    /// Applies one partition op on the owner (this shard).
    pub fn apply(&self, tp: &TopicPartition, op: PartitionOp) -> PartitionReply {
        let mut partitions = self.partitions.borrow_mut();
        let Some(p) = partitions.get_mut(tp) else {
            let e = ErrorCode::UnknownTopicOrPartition;
            return match op {
                PartitionOp::Produce { .. } => {
                    PartitionReply::Produce(ProduceOutcome::error(e, None))
                }
                PartitionOp::Read { .. } => PartitionReply::Read(Err(e)),
                PartitionOp::ListOffset { .. } => PartitionReply::ListOffset(Err(e)),
                PartitionOp::DeleteRecords { .. } => PartitionReply::DeleteRecords(Err(e)),
                PartitionOp::EndOffset => PartitionReply::EndOffset(Err(e)),
                PartitionOp::Attach => PartitionReply::Attached(Err(e)),
            };
        };
        match op {
            PartitionOp::Produce { records } => {
                PartitionReply::Produce(p.produce(records.as_ref(), now_ms()))
            }
            PartitionOp::Read {
                offset,
                max_bytes,
                at_least_one,
            } => PartitionReply::Read(p.log.read(offset, max_bytes, at_least_one)),
            PartitionOp::ListOffset { timestamp } => {
                PartitionReply::ListOffset(p.log.list_offset(timestamp))
            }
            PartitionOp::DeleteRecords { offset } => {
                let r = p.log.delete_records(offset);
                PartitionReply::DeleteRecords(r)
            }
            PartitionOp::EndOffset => {
                PartitionReply::EndOffset(Ok((p.log.log_start_offset(), p.log.next_offset())))
            }
            // Nothing to hold open on the memory backend.
            PartitionOp::Attach => PartitionReply::Attached(Ok(())),
        }
    }

    /// Registry changes (shard 0 only): apply, install everywhere, then answer.
    async fn registry_apply(
        self: &Rc<Self>,
        op: RegistryOp,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        let registry = self.registry.as_ref().expect("registry ops go to shard 0");
        if self.seaweed.is_some() {
            // SeaweedMQ first: only what it accepted enters the table.
            match &op {
                RegistryOp::Create {
                    name,
                    partitions,
                    configs,
                    validate_only,
                } => {
                    // The table's own checks (name, count, configs, existing) come first.
                    registry
                        .borrow_mut()
                        .create(name, *partitions, configs.clone(), true)?;
                    if *partitions > limits::SEAWEEDMQ_PARTITIONS_MAX || !*validate_only {
                        if *validate_only {
                            return Err(RegistryError {
                                code: ErrorCode::InvalidPartitions,
                                message: format!(
                                    "SeaweedMQ topics have at most {} partitions",
                                    limits::SEAWEEDMQ_PARTITIONS_MAX
                                ),
                            });
                        }
                        self.seaweed_create(name, *partitions).await?;
                    }
                }
                RegistryOp::Delete { .. } => {
                    return Err(RegistryError {
                        code: ErrorCode::TopicDeletionDisabled,
                        message: "SeaweedMQ has no topic deletion call; kelp cannot delete topics on the seaweedmq backend".into(),
                    })
                }
                RegistryOp::Grow { .. } => {
                    return Err(RegistryError {
                        code: ErrorCode::InvalidPartitions,
                        message: "SeaweedMQ re-divides its partition ring when a topic's partition count changes, which would move existing records between Kafka partitions; kelp does not add partitions on the seaweedmq backend".into(),
                    })
                }
                RegistryOp::Lookup { name } => {
                    return match self.seaweed_adopt(name).await {
                        Ok(Some(meta)) => Ok(meta),
                        Ok(None) => Err(RegistryError {
                            code: ErrorCode::UnknownTopicOrPartition,
                            message: format!("topic {name:?} does not exist"),
                        }),
                        Err(e) => Err(RegistryError {
                            code: ErrorCode::from_seaweed(&e, false),
                            message: format!("SeaweedMQ: {e}"),
                        }),
                    };
                }
                RegistryOp::AlterConfigs { .. } => {}
            }
        }
        let (result, changed) = {
            let mut r = registry.borrow_mut();
            let before = r.snapshot().version;
            let result = match op {
                RegistryOp::Create {
                    name,
                    partitions,
                    configs,
                    validate_only,
                } => {
                    if self.seaweed.is_some() {
                        r.create_with_id(
                            &name,
                            partitions,
                            configs,
                            validate_only,
                            crate::seaweed_shard::topic_id_for(&name),
                        )
                    } else {
                        r.create(&name, partitions, configs, validate_only)
                    }
                }
                RegistryOp::Lookup { name } => Err(RegistryError {
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
            };
            let snap = r.snapshot();
            let changed = (snap.version != before).then_some(snap);
            (result, changed)
        };
        if let Some(table) = changed {
            self.install_everywhere(table).await;
        }
        result
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

    /// Runs a group op on the group's owning shard.
    pub async fn group(self: &Rc<Self>, group_id: &str, op: GroupOp) -> GroupReply {
        let owner = shard_for_group(group_id, self.shards());
        match self.call(owner, Op::Group(op)).await {
            Reply::Group(r) => r,
            _ => GroupReply::Code(crate::group::codes::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// Runs a group op on every shard (ListGroups).
    pub async fn group_everywhere(self: &Rc<Self>, make: impl Fn() -> GroupOp) -> Vec<GroupReply> {
        let calls: Vec<_> = (0..self.shards())
            .map(|s| {
                let this = self.clone();
                let op = make();
                async move { this.call(s, Op::Group(op)).await }
            })
            .collect();
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|r| match r {
                Reply::Group(g) => Some(g),
                _ => None,
            })
            .collect()
    }

    /// Asks the registry for a change and returns once every shard has the new table.
    pub async fn registry(
        self: &Rc<Self>,
        op: RegistryOp,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        match self.call(0, Op::Registry(op)).await {
            Reply::Registry(r) => r,
            _ => Err(RegistryError {
                code: ErrorCode::UnknownServerError,
                message: "shutting down".into(),
            }),
        }
    }

    /// Installs a new topic table and brings the owned partitions in line with it.
    fn install_topics(&self, table: Arc<TopicTable>) {
        if table.version <= self.topics.borrow().version {
            return;
        }
        let n = self.shards();
        let mut partitions = self.partitions.borrow_mut();
        // Drop partitions whose topic is gone or was re-created under a new id.
        partitions.retain(|tp, p| {
            let keep = table
                .get(&tp.topic)
                .is_some_and(|m| m.id == p.topic_id && tp.partition < m.partitions);
            if !keep {
                p.appended.notify_all();
            }
            keep
        });
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
                    .or_insert_with(|| match self.seaweed {
                        Some(_) => Partition::new_seaweed(
                            meta.id,
                            settings,
                            self.config.seaweedmq_cache_bytes,
                        ),
                        None => Partition::new(meta.id, settings),
                    });
            }
        }
        self.metrics
            .set_ownership(partitions.len(), table.by_name.len());
        drop(partitions);
        *self.topics.borrow_mut() = table;
    }

    /// Applies time-based retention to every owned partition.
    pub fn sweep_retention(&self) {
        let now = now_ms();
        for p in self.partitions.borrow_mut().values_mut() {
            p.log.enforce_retention(now);
        }
    }

    /// Handles one envelope from the inbox.
    fn dispatch(self: &Rc<Self>, env: Envelope) {
        match env {
            Envelope::Request { id, from, op } => {
                // Partition ops and installs finish without waiting: answer in place.
                // Waits and registry changes get a task of their own.
                let this = self.clone();
                let fut = async move {
                    let reply = this.execute(op).await;
                    this.send_to(from, Envelope::Reply { id, reply }).await;
                };
                let mut fut = Box::pin(fut);
                if (&mut fut).now_or_never().is_none() {
                    glommio::spawn_local(fut).detach();
                }
            }
            Envelope::Reply { id, reply } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Envelope::Shutdown => {
                self.stopping.set(true);
                self.stop.notify_all();
            }
        }
    }

    /// Joins the doorbell mesh; must run on every shard before any message is sent.
    pub async fn join_doorbells(
        &self,
        builder: MeshBuilder<(), Full>,
    ) -> Vec<(usize, ConnectedReceiver<()>)> {
        let (senders, mut receivers) = builder.join().await.expect("joining the doorbell mesh");
        self.mesh.peer_of[self.id].store(senders.peer_id(), Ordering::SeqCst);
        self.mesh.joined.fetch_add(1, Ordering::SeqCst);
        // Peer ids follow join order; wait until every shard has published its own.
        while self.mesh.joined.load(Ordering::SeqCst) < self.shards() {
            futures_lite::future::yield_now().await;
        }
        *self.doorbells.borrow_mut() = Some(senders);
        receivers.streams()
    }

    /// Delivers an envelope to shard `to`, yielding while its inbox is full, and rings its
    /// doorbell if it is parked.
    pub async fn send_to(&self, to: usize, mut env: Envelope) {
        loop {
            match self.mesh.inboxes[to].try_send(env) {
                Ok(()) => break,
                Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => {
                    env = e;
                    futures_lite::future::yield_now().await;
                }
            }
        }
        if self.mesh.parked[to].load(Ordering::SeqCst) {
            if let Some(bells) = self.doorbells.borrow().as_ref() {
                // Full means a ring is already pending: nothing is lost.
                let _ = bells.try_send_to(self.mesh.peer_of[to].load(Ordering::SeqCst), ());
            }
        }
    }

    /// The inbox task: busy-polls the inbox while there is traffic, parks on the doorbells when
    /// idle for longer than `--spin-us`.
    pub async fn run_inbox(
        self: Rc<Self>,
        ends: ShardEnds,
        bells: Vec<(usize, ConnectedReceiver<()>)>,
    ) {
        let spin = self.config.spin();
        let mut pollfds = Vec::new();
        // One task per doorbell keeps a single receive pending and turns each ring into a
        // local notification. Re-polling fresh receives on every idle cycle leaked a waker per
        // poll inside glommio 0.9 and panicked a shard after about 16,000 idle cycles.
        let bell = Notify::default();
        for (_, r) in bells {
            let bell = bell.clone();
            glommio::spawn_local(async move {
                while r.recv().await.is_some() {
                    bell.notify_all();
                }
            })
            .detach();
        }
        loop {
            let mut got = 0;
            while let Ok(env) = ends.inbox.try_recv() {
                self.dispatch(env);
                got += 1;
            }
            got += self.poll_watched(&mut pollfds);
            if got > 0 {
                self.touch();
            }
            if self.grpc_waiting.get() > 0 {
                self.grpc_poke.notify_all();
            }
            if self.stopping.get()
                && self.connections.get() == 0
                && self.pending.borrow().is_empty()
                && ends.inbox.is_empty()
            {
                return;
            }
            if got > 0 || self.last_active.get().elapsed() < spin {
                futures_lite::future::yield_now().await;
                continue;
            }
            let rung = bell.notified();
            // Created before `grpc_waiting` is read below, with no await between: a gRPC wait
            // that starts while this spinner sleeps on the long timer ends that sleep (it left
            // produce answers waiting up to PARKED_INBOX_CHECK_MS, 0.5% of them, before).
            let grpc_started = self.grpc_started.notified();
            self.mesh.parked[self.id].store(true, Ordering::SeqCst);
            if ends.inbox.is_empty() {
                // The safety timer bounds the cost of a wake-up that never comes (and lets the
                // signal thread's shutdown message be seen: it cannot ring).
                // Waiting on the gRPC core, whose answers come from a foreign thread, the check
                // is more frequent.
                let check = if self.grpc_waiting.get() > 0 {
                    Duration::from_micros(limits::PARKED_GRPC_CHECK_US)
                } else {
                    Duration::from_millis(limits::PARKED_INBOX_CHECK_MS)
                };
                let safety = glommio::timer::sleep(check);
                futures::pin_mut!(safety);
                let woken = futures::future::select(rung, grpc_started);
                let _ = futures::future::select(woken, safety).await;
            }
            self.mesh.parked[self.id].store(false, Ordering::SeqCst);
            self.touch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spread() {
        assert_eq!(
            shard_for_partition("t", 3, 4),
            shard_for_partition("t", 3, 4)
        );
        let mut counts = [0usize; 4];
        for p in 0..1000 {
            counts[shard_for_partition("orders", p, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
        assert_eq!(shard_for_partition("x", 0, 1), 0);
    }
}
