//! A shard: one pinned glommio executor owning its connections, the partitions
//! [`shard_for_partition`] gives it and the groups [`shard_for_group`] gives it. Shards share
//! nothing but messages.
//!
//! - [`ops`]: the vocabulary that crosses between shards;
//! - [`mesh`]: inboxes, doorbells, the spinner, waiting on foreign threads;
//! - [`route`]: partition and group work sent to its owner, the backend chosen once;
//! - [`registry`]: the topic table's single writer (shard 0) and installing its snapshots;
//! - [`memory`]: partition ops on the embedded backend;
//! - [`seaweed`]: everything a shard does on the SeaweedMQ backend.
//!
//! The embedded path never enters [`seaweed`]: a shard's [`Backend`] is set once at start and
//! every partition or group op is dispatched on it in one place ([`route`]).

mod memory;
mod mesh;
mod ops;
pub use ops::Handoff;
mod registry;
mod route;
pub(crate) mod seaweed;
pub mod spin;
mod watch;

pub use mesh::{Mesh, ShardEnds};
pub use ops::{Applied, Envelope, Op, PartitionOp, PartitionReply, RegistryOp, Reply};

use crate::cluster::{ClusterView, Member};
use crate::config::{limits, Config};
use crate::group::{Coordinator, GroupConfig};
use crate::metrics::ShardMetrics;
use crate::seaweedmq::SeaweedHandle;
use crate::topics::{Registry, TopicSettings, TopicTable};
use crate::util::{now_ms, Notify};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
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

/// The shard that owns consumer group `group`.
pub fn shard_for_group(group: &str, shards: usize) -> usize {
    shard_for_partition(group, -1, shards)
}

/// A partition named by topic and index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// Where a shard keeps its partitions' records; set once at start.
pub(crate) enum Backend {
    /// The embedded backend: records in memory on the owning shard.
    Memory(memory::MemoryPartitions),
    /// Records in SeaweedMQ, reached through the gRPC core.
    Seaweed(Box<seaweed::SeaweedShard>),
}

/// What the shard's backend-neutral code (installing topic tables, long-poll waits) needs of
/// an owned partition, whatever the backend.
pub(crate) trait OwnedPartition {
    fn topic_id(&self) -> Uuid;
    /// The offset the next record gets, as far as the owner knows.
    fn next_offset(&self) -> i64;
    /// Woken on every append, for long-polling fetches.
    fn appended(&self) -> &Notify;
    fn set_settings(&mut self, settings: TopicSettings);
}

/// What a shard checks clients against: the users file and the TLS settings, each read at
/// start and again on SIGHUP.
#[derive(Clone, Default)]
pub struct Credentials {
    pub users: Option<Arc<crate::auth::Users>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Everything one shard owns. Lives in an `Rc` on the shard's thread.
pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    /// The users a SASL listener checks logins against (read at start, again on SIGHUP).
    pub users: RefCell<Option<Arc<crate::auth::Users>>>,
    /// A TLS listener's certificate and settings (read at start, again on SIGHUP).
    pub tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    pub advertised: (String, i32),
    pub mesh: Arc<Mesh>,
    /// This shard's end of the mesh (pending calls, doorbells, the spinner's state).
    link: mesh::Endpoint,
    /// This shard's copy of the topic table.
    pub topics: RefCell<Arc<TopicTable>>,
    /// This shard's copy of the cluster view (a single member on the memory backend).
    pub(crate) cluster: RefCell<Arc<ClusterView>>,
    /// The partitions this shard owns, in its backend.
    pub(crate) backend: Backend,
    /// The consumer groups this shard owns.
    pub groups: RefCell<Coordinator>,
    /// Only on shard 0: the single writer of topic metadata.
    pub(crate) registry: Option<RefCell<Registry>>,
    next_producer_id: Cell<i64>,
    pub stopping: Cell<bool>,
    pub stop: Notify,
    /// Connections this shard serves now.
    pub connections: Cell<usize>,
    /// Connections other shards handed to this one, for its accept loop to serve.
    pub arrivals: RefCell<Vec<ops::Handoff>>,
    pub arrived: Notify,
    /// This shard's counters for `/metrics` (written only here).
    pub metrics: &'static ShardMetrics,
    /// Whether the shard's connections and inbox busy-poll when idle (`spin.rs`).
    pub spin: spin::SpinGovernor,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        mesh: Arc<Mesh>,
        metrics: &'static ShardMetrics,
        seaweed: Option<SeaweedHandle>,
        credentials: Credentials,
    ) -> Rc<Shard> {
        let shards = mesh.shards() as i64;
        // Producer ids: unique across shards (id modulo shard count), across the instances of
        // a cluster (the node id in bits 53-62; ids are validated to fit) and, since a restart
        // forgets which were given, started from the clock (4096 a millisecond) so that a
        // producer that outlived a restart does not collide with a new one.
        let node_bits = ((config.node_id as i64) & limits::NODE_ID_MAX as i64) << 53;
        let base = node_bits | ((now_ms() & 0xff_ffff_ffff) << 12);
        let groups = RefCell::new(Coordinator::new(GroupConfig {
            initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            offsets_retention: Duration::from_secs(config.offsets_retention_minutes * 60),
            max_members: limits::GROUP_MEMBERS_MAX,
            offset_metadata_max_bytes: limits::OFFSET_METADATA_BYTES_MAX,
        }));
        let backend = match seaweed {
            Some(handle) => Backend::Seaweed(Box::new(seaweed::SeaweedShard::new(handle))),
            None => Backend::Memory(memory::MemoryPartitions::default()),
        };
        // On the shard's thread the default core list would be read from its own (pinned)
        // affinity, so only an explicit --cores is passed.
        let cores = config
            .cores
            .as_ref()
            .and_then(|_| config.shard_cores().ok());
        let spin = spin::SpinGovernor::new(config.spin(), config.dedicated_cores, cores.as_deref());
        let (host, port) = config.advertised();
        let me = Member {
            id: config.node_id,
            host,
            port,
        };
        let view = match &backend {
            Backend::Memory(_) => ClusterView::single(me),
            // With a filer: nothing is served before the membership says so.
            Backend::Seaweed(_) if config.seaweedmq_filer.is_some() => ClusterView::none(me.id, 0),
            // On its own: every partition at once, groups once the offsets topic is known.
            Backend::Seaweed(_) => ClusterView {
                offsets_partitions: 0,
                ..ClusterView::single(me)
            },
        };
        Rc::new(Shard {
            id,
            users: RefCell::new(credentials.users),
            tls: RefCell::new(credentials.tls),
            cluster: RefCell::new(Arc::new(view)),
            advertised: config.advertised(),
            groups,
            config,
            registry: (id == 0).then(|| RefCell::new(Registry::default())),
            mesh,
            link: mesh::Endpoint::new(),
            topics: RefCell::new(Arc::new(TopicTable::default())),
            backend,
            next_producer_id: Cell::new(base - base % shards + id as i64),
            stopping: Cell::new(false),
            stop: Notify::default(),
            connections: Cell::new(0),
            arrivals: RefCell::default(),
            arrived: Notify::default(),
            metrics,
            spin,
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

    /// Whether the table may lack topics the backend has (SeaweedMQ topics can be made by
    /// another gateway, or another kelp). Here, not in `seaweed/`, because every request naming
    /// an unknown topic asks it, on either backend.
    pub fn topics_may_exist_elsewhere(&self) -> bool {
        matches!(self.backend, Backend::Seaweed(_))
    }

    pub fn topics(&self) -> Arc<TopicTable> {
        self.topics.borrow().clone()
    }

    pub fn cluster(&self) -> Arc<ClusterView> {
        self.cluster.borrow().clone()
    }

    /// The node id that leads a partition (-1: none alive). On the memory backend, this one.
    pub fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        match self.backend {
            Backend::Memory(_) => self.config.node_id,
            Backend::Seaweed(_) => self
                .cluster()
                .owner(&crate::cluster::partition_key(topic, partition))
                .unwrap_or(-1),
        }
    }

    /// The member that coordinates a consumer group, if any is alive.
    pub fn coordinator_of(&self, group: &str) -> Option<Member> {
        let view = self.cluster();
        match self.backend {
            Backend::Memory(_) => view.member(self.config.node_id).cloned(),
            Backend::Seaweed(_) if view.offsets_partitions == 0 => None,
            Backend::Seaweed(_) => {
                let key = seaweed::group_key(group, view.offsets_partitions);
                view.owner(&key).and_then(|id| view.member(id).cloned())
            }
        }
    }

    pub fn allocate_producer_id(&self) -> i64 {
        let id = self.next_producer_id.get();
        self.next_producer_id.set(id + self.shards() as i64);
        id
    }

    /// Starts the shard's background tasks: the group ticker, the retention sweeper and the
    /// backend's own (SeaweedMQ: loading topics and offsets, holding partitions open).
    pub fn start_background(self: &Rc<Self>) {
        let ticker = self.clone();
        glommio::spawn_local(async move {
            loop {
                ticker
                    .pause(Duration::from_millis(limits::GROUP_TICK_MS))
                    .await;
                if ticker.stopping.get() {
                    break;
                }
                ticker.groups.borrow_mut().tick(std::time::Instant::now());
            }
        })
        .detach();
        match &self.backend {
            Backend::Memory(_) => memory::start_sweeper(self),
            Backend::Seaweed(_) => seaweed::start(self),
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
