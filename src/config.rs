//! Command-line flags (each with a `KELP_*` environment twin) and the named limits.

use crate::auth::scram::{Mechanism, ITERATIONS_MAX, ITERATIONS_MIN};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Limits that are not operator flags. Every queue, buffer and table has one, named with its
/// unit last, and they live here so that they can be read together.
pub mod limits {
    /// Messages that may wait in one shard's inbox before senders back off.
    pub const MESH_QUEUE_DEPTH: usize = 4096;
    /// Requests one connection may have in flight before kelp stops reading from it.
    pub const CONNECTION_IN_FLIGHT_MAX: usize = 64;
    /// Consecutive produce/fetch requests that all go to one other shard before a connection
    /// moves there (`conn`): enough to tell a client bound to one partition's owner from one
    /// that wanders.
    pub const CONNECTION_HANDOFF_STREAK: u32 = 16;
    /// A connection that moved moves again only after this long, so that one alternating
    /// between owners does not bounce at every streak.
    pub const CONNECTION_HANDOFF_INTERVAL_MS: u64 = 1_000;
    /// Initial size of a connection's read buffer; it grows to the largest frame seen.
    pub const READ_BUFFER_BYTES: usize = 64 * 1024;
    /// A compressed batch may not expand beyond this while being validated.
    pub const BATCH_DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;
    /// A Fetch response never carries more record bytes than this, whatever the client asks.
    pub const FETCH_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
    /// Idempotent-producer entries one partition remembers; the least recently used go first.
    pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
    /// Batches remembered per producer and partition for duplicate detection (Kafka uses 5).
    pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;
    /// Topics the broker holds; CreateTopics past it fails with POLICY_VIOLATION.
    pub const TOPICS_MAX: usize = 100_000;
    /// Partitions one topic may have.
    pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;
    /// Longest `max_wait_ms` honoured for a Fetch long-poll.
    pub const FETCH_MAX_WAIT_MS: i32 = 60_000;
    /// How long shutdown waits for in-flight requests before exiting anyway.
    pub const SHUTDOWN_GRACE_MS: u64 = 4_000;
    /// Members one consumer group may have.
    pub const GROUP_MEMBERS_MAX: usize = 10_000;
    /// Longest metadata string stored with a committed offset (Kafka's default).
    pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
    /// How often each shard checks its groups' session and rebalance timeouts.
    pub const GROUP_TICK_MS: u64 = 100;
    /// Each shard judges every this many milliseconds whether the cores are shared
    /// (`shard::spin`).
    pub const SPIN_SAMPLE_MS: u64 = 20;
    /// Time a shard's thread spent waiting for a core, in thousandths of a sample window, that
    /// means the cores are shared, when it lasts `SPIN_CONTENDED_WINDOWS` windows in a row.
    /// Measured here: pinned on a core of its own a shard waited at most 48 per mille of a window
    /// (p99 6); behind a spinning client on 2 cores, 280-490 (p90 to max).
    pub const SPIN_WAIT_PER_MILLE_TO_BACK_OFF: u64 = 150;
    pub const SPIN_CONTENDED_WINDOWS: u64 = 2;
    pub const SPIN_BACKOFF_MIN_MS: u64 = 250;
    pub const SPIN_BACKOFF_MAX_MS: u64 = 8_000;
    /// Partitions named in one log line about partitions moving between instances (the rest
    /// are counted).
    pub const LOGGED_PARTITIONS_MAX: usize = 64;
    /// A parked shard looks at its inbox at least this often, whatever its doorbells say.
    pub const PARKED_INBOX_CHECK_MS: u64 = 100;
    /// A parked shard with calls to the gRPC core outstanding checks for their answers this
    /// often (the gRPC thread never wakes a shard's tasks itself; see `seaweed_shard`).
    pub const PARKED_GRPC_CHECK_US: u64 = 200;
    /// A shard that may spin keeps spinning this long after it last called the gRPC core while
    /// an answer is due, if answers lately came within it (a stock broker acks in 0.3-0.7 ms),
    /// instead of parking and checking every `PARKED_GRPC_CHECK_US` (which added up to 200 us
    /// to each round trip at one request in flight). Slower answers (durable acks take 3-5 ms)
    /// are waited for parked: spinning through them took the cores SeaweedFS needed beside kelp.
    pub const GRPC_WAIT_SPIN_US: u64 = 1_000;
    /// Most messages one SeaweedMQ `FetchMessage` returns (the broker's cap is 10,000).
    pub const SEAWEEDMQ_FETCH_MESSAGES_MAX: i32 = 10_000;
    /// A shard warns at most this often that SeaweedMQ answered a read below its high-water
    /// mark with nothing (`shard::seaweed::read`).
    pub const SEAWEEDMQ_EMPTY_READ_WARN_MS: u64 = 10_000;
    /// How often each shard makes sure it holds a publish stream open to every SeaweedMQ
    /// partition it owns.
    pub const SEAWEEDMQ_ATTACH_CHECK_MS: u64 = 1_000;
    /// Records at the end of a SeaweedMQ partition its new owner reads to rebuild which
    /// idempotent producers' batches it holds (retries come for the last few of each).
    pub const SEAWEEDMQ_PRODUCER_SCAN_RECORDS: i64 = 20_000;
    /// Produces one SeaweedMQ partition holds while its new owner rebuilds its idempotence
    /// table; more get a retriable error.
    pub const SEAWEEDMQ_PRODUCES_WAITING_MAX: usize = 1024;
    /// Bytes one fetch of such a scan (or of the offsets topic's replay) may return.
    pub const SEAWEEDMQ_SCAN_FETCH_BYTES: i32 = 8 << 20;
    /// How often the gRPC core writes the partition marks that moved to the filer (a crash of
    /// kelp loses at most this much of them; see `seaweedmq::marks`).
    pub const SEAWEEDMQ_MARK_INTERVAL_MS: u64 = 1_000;
    /// SeaweedMQ's partition ring has 2520 slots, so a topic there has at most 2520 partitions.
    pub const SEAWEEDMQ_PARTITIONS_MAX: i32 = 2520;
    /// How long a publisher leaving a partition (it moved to another kelp) waits for the acks
    /// of the records it has in flight before it closes its stream anyway.
    pub const SEAWEEDMQ_LEAVE_ACK_WAIT_MS: u64 = 2_000;
    /// Partitions of kelp's offsets topic when kelp creates it (groups are spread over them,
    /// and over the instances of a cluster with them). A topic that exists keeps its count.
    pub const SEAWEEDMQ_OFFSETS_PARTITIONS: i32 = 8;
    /// Filer entries read per call when a coordinator loads its groups' committed offsets.
    pub const SEAWEEDMQ_OFFSETS_LIST_PAGE: u32 = 1_024;
    /// Largest filer entry of one group's committed offsets (with their metadata); a commit
    /// that would make it larger is refused with OFFSET_METADATA_TOO_LARGE. Under the 4 MiB a
    /// gRPC client decodes by default, with room to spare.
    pub const SEAWEEDMQ_GROUP_ENTRY_BYTES_MAX: usize = 2 << 20;
    /// How often shard 0 looks for topics made elsewhere (another kelp, another gateway).
    pub const SEAWEEDMQ_TOPICS_REFRESH_MS: u64 = 5_000;
    /// Largest `--node-id` (producer ids carry it in 10 bits, so that instances never hand
    /// out the same one).
    pub const NODE_ID_MAX: i32 = 1023;
    /// Member entries one cluster lists (more are not seen).
    pub const CLUSTER_MEMBERS_MAX: usize = 1_000;
    /// Longest wait between two membership polls (renewing the lease, listing the members);
    /// shorter leases poll at a fifth of the lease.
    pub const CLUSTER_POLL_MS_MAX: u64 = 1_000;
    /// Shortest `--member-lease-ms`: the filer's locks count whole seconds.
    pub const CLUSTER_LEASE_MS_MIN: u64 = 2_000;
    /// How long a leaving member waits for its shards to let go of everything before it
    /// deletes its entry and releases its lock anyway.
    pub const CLUSTER_LEAVE_WAIT_MS: u64 = 3_000;
    /// How often each shard applies time-based retention, and a compaction pass, to the
    /// partitions it owns.
    pub const RETENTION_SWEEP_MS: u64 = 5_000;
    /// Batches a compaction pass reads to index keys, and again to clean, per partition: the
    /// bound on the work one pass does on the owning shard (memory backend).
    pub const COMPACTION_BATCHES_PER_PASS: usize = 256;
    /// Largest HTTP request head the `/metrics` endpoint reads; a longer one gets 400.
    pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;
    /// Time one `/metrics` client gets to send its request and take the answer.
    pub const METRICS_CLIENT_DEADLINE_MS: u64 = 2_000;
    /// How often the idle `/metrics` thread checks for shutdown.
    pub const METRICS_ACCEPT_POLL_MS: u64 = 100;
    /// Longest SASL user name kelp stores or accepts.
    pub const SASL_USER_BYTES_MAX: usize = 256;
    /// Largest frame a client on a SASL listener may send before it has logged in (Kafka's
    /// `sasl.server.max.receive.size`).
    pub const SASL_FRAME_BYTES_MAX: usize = 512 * 1024;
    /// Largest password `kelp user add` reads from standard input.
    pub const SASL_PASSWORD_BYTES_MAX: usize = 1024;
    /// Largest salt AlterUserScramCredentials may set (it is stored in the users file; clients
    /// send 16 to 64 bytes).
    pub const SCRAM_SALT_BYTES_MAX: usize = 1024;
    /// How long an admin alteration of SCRAM credentials waits for every shard to take the new
    /// users before it answers anyway.
    pub const SHARD_ACK_TIMEOUT_MS: u64 = 5_000;
    /// Plaintext a TLS connection encrypts at a time (four 16 KiB records); no more is
    /// encrypted until those records have reached the socket, so a client that does not read
    /// holds at most this much sealed beside its unsent answers.
    pub const TLS_SEAL_BYTES: usize = 64 * 1024;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Partition logs held in memory on the owning shard (the default; nothing to set up).
    Memory,
    /// SeaweedMQ over gRPC (`--seaweedmq`): records, topics and committed offsets live there.
    Seaweedmq,
}

/// How a listener talks to clients (Kafka's `security.protocol` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Clients must log in with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// A listener: `[PROTOCOL://]HOST:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listener {
    type Err = String;

    fn from_str(s: &str) -> Result<Listener, String> {
        let (protocol, addr) = match s.split_once("://") {
            Some((p, a)) => {
                let p = p.to_ascii_uppercase();
                let protocol = SecurityProtocol::ALL
                    .into_iter()
                    .find(|x| x.name() == p)
                    .ok_or_else(|| {
                        format!("unknown protocol {p:?} (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
                    })?;
                (protocol, a)
            }
            None => (SecurityProtocol::Plaintext, s),
        };
        let addr = addr
            .parse()
            .map_err(|e| format!("{addr:?} is not HOST:PORT with an IP address: {e}"))?;
        Ok(Listener { protocol, addr })
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.protocol.name(), self.addr)
    }
}

/// What `kelp user` does.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Adds a user, or replaces their credentials, for each mechanism named. The password is
    /// read from standard input (its first line), and stored salted and hashed, never in
    /// clear.
    Add {
        /// The users file (created if missing; replaced atomically).
        #[arg(long, env = "KELP_USERS_FILE")]
        users_file: PathBuf,
        /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; repeat for several.
        #[arg(long, required = true, value_parser = parse_mechanism)]
        mechanism: Vec<Mechanism>,
        /// PBKDF2 iterations of the salted credential.
        #[arg(long, default_value_t = ITERATIONS_MIN,
              value_parser = clap::value_parser!(u32).range(ITERATIONS_MIN as i64..=ITERATIONS_MAX as i64))]
        iterations: u32,
        /// The user's name.
        name: String,
    },
    /// Deletes a user's credentials: those of one mechanism, or all of them.
    Delete {
        /// The users file.
        #[arg(long, env = "KELP_USERS_FILE")]
        users_file: PathBuf,
        /// Only this mechanism's credential (default: every one).
        #[arg(long, value_parser = parse_mechanism)]
        mechanism: Option<Mechanism>,
        /// The user's name.
        name: String,
    },
}

fn parse_mechanism(s: &str) -> Result<Mechanism, String> {
    Mechanism::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<_> = Mechanism::ALL.iter().map(|m| m.name()).collect();
        format!("one of {}", names.join(", "))
    })
}

/// What kelp runs when given a subcommand instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Manages the users file (salted SASL credentials): `kelp user add`, `kelp user delete`.
    #[command(subcommand)]
    User(UserCommand),
}

/// kelp: a Kafka wire-protocol broker, thread-per-core, in front of SeaweedMQ.
#[derive(Debug, Clone, Parser)]
#[command(name = "kelp", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where to serve Kafka: [PROTOCOL://]HOST:PORT, PROTOCOL one of PLAINTEXT (the default),
    /// SSL (TLS with --tls-cert and --tls-key), SASL_PLAINTEXT (logins checked against
    /// --users-file) or SASL_SSL (both).
    #[arg(long, env = "KELP_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: Listener,

    /// PEM certificate chain an SSL or SASL_SSL listener presents (the server's certificate
    /// first). Read at start and again on SIGHUP; connections already open keep theirs.
    #[arg(long, env = "KELP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KELP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificates of the CAs client certificates must chain to: with it, a TLS
    /// listener requires a client certificate (mutual TLS).
    #[arg(long, env = "KELP_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// The users file SASL listeners check logins against (made with `kelp user add`; read
    /// at start and again on SIGHUP).
    #[arg(long, env = "KELP_USERS_FILE")]
    pub users_file: Option<PathBuf>,

    /// Principals allowed to describe and alter SCRAM credentials with the Kafka admin APIs
    /// (`kafka-configs.sh --entity-type users`), separated by `;` as Kafka's `super.users`:
    /// SASL user names, or client certificate subjects (RFC 2253, e.g. "CN=admin,O=example")
    /// on an SSL listener with --tls-client-ca. Nobody by default.
    #[arg(long, env = "KELP_SUPER_USERS", value_delimiter = ';')]
    pub super_users: Vec<String>,

    /// How long a SASL login holds before the client must authenticate again on the same
    /// connection (KIP-368; the client learns it from SaslAuthenticate). 0: for the
    /// connection's life.
    #[arg(long, env = "KELP_SASL_REAUTH_MS", default_value_t = 0)]
    pub sasl_reauth_ms: u64,

    /// A connection to a TLS or SASL listener that has not finished its TLS handshake and
    /// SASL login within this long is closed.
    #[arg(long, env = "KELP_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub auth_timeout_ms: u64,

    /// HOST:PORT clients are told to connect to (default: the listen address; 0.0.0.0 is never
    /// advertised: the host's name is used instead).
    #[arg(long, env = "KELP_ADVERTISE")]
    pub advertise: Option<String>,

    /// CPU cores to run shards on, e.g. "0,1" or "0-3" (default: every core).
    #[arg(long, env = "KELP_CORES", conflicts_with = "shards")]
    pub cores: Option<String>,

    /// Number of shards, placed on the first N cores (default: one per core).
    #[arg(long, env = "KELP_SHARDS")]
    pub shards: Option<usize>,

    /// Storage backend.
    #[arg(long, env = "KELP_BACKEND", value_enum, default_value = "memory")]
    pub backend: Backend,

    /// The SeaweedMQ broker's gRPC address (its `SeaweedMessaging` service), for
    /// `--backend seaweedmq`.
    #[arg(long, env = "KELP_SEAWEEDMQ", default_value = "127.0.0.1:17777")]
    pub seaweedmq: String,

    /// Core to pin the gRPC thread to (the one thread that talks to SeaweedMQ); default: not
    /// pinned.
    #[arg(long, env = "KELP_GRPC_CORE")]
    pub grpc_core: Option<usize>,

    /// How long records wait for others to share their partition's write to SeaweedMQ (0:
    /// send at once; records arriving together still go together).
    #[arg(long, env = "KELP_SEAWEEDMQ_LINGER_US", default_value_t = 0)]
    pub seaweedmq_linger_us: u64,

    /// Lingering records go to SeaweedMQ as soon as this many bytes wait.
    #[arg(long, env = "KELP_SEAWEEDMQ_BATCH_BYTES", default_value_t = 1024 * 1024)]
    pub seaweedmq_batch_bytes: usize,

    /// Bytes of recently produced batches each SeaweedMQ partition keeps on its shard, so that
    /// tailing consumers are served without a round trip (0: no cache).
    #[arg(long, env = "KELP_SEAWEEDMQ_CACHE_BYTES", default_value_t = 1024 * 1024)]
    pub seaweedmq_cache_bytes: usize,

    /// The SeaweedFS filer, named as SeaweedFS names it: HOST:PORT (its HTTP port; kelp talks
    /// gRPC to PORT+10000) or HOST:PORT.GRPCPORT. kelp keeps each partition's mark there (how
    /// far its acknowledged records reach), so that after a restart it can tell whether
    /// SeaweedMQ kept them all, and fence a partition that lost records instead of serving it.
    /// Committed offsets live there too (one entry per group). Without it, kelp checks only
    /// what it saw itself since it started, runs alone, and stores every commit as a record
    /// of a topic that only grows.
    #[arg(long, env = "KELP_SEAWEEDMQ_FILER")]
    pub seaweedmq_filer: Option<String>,

    /// How long one SeaweedMQ call (or a publish's wait for its acks) may take.
    #[arg(long, env = "KELP_SEAWEEDMQ_TIMEOUT_MS", default_value_t = 10_000)]
    pub seaweedmq_timeout_ms: u64,

    /// Partitions of a topic created without a count (auto-creation, or -1 in CreateTopics).
    #[arg(long, env = "KELP_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,

    /// Create a topic when a client asks for metadata of (or produces to) one that is missing.
    #[arg(long, env = "KELP_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Largest request frame accepted; a larger one closes the connection before any allocation.
    #[arg(long, env = "KELP_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Most client connections served at once (over all shards); more are closed on accept.
    #[arg(long, env = "KELP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Default retention.bytes per partition (embedded backend); -1 keeps everything.
    #[arg(long, env = "KELP_RETENTION_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub retention_bytes: i64,

    /// Microseconds a shard keeps busy-polling its sockets and inbox after the last activity
    /// before it parks. Spinning takes a wake-up (tens of microseconds on a VM) off every
    /// request that arrives within the window, at the price of the core's time: give kelp
    /// dedicated cores before raising it (the latency benchmarks use 2000). 0 parks at once.
    #[arg(long, env = "KELP_SPIN_US", default_value_t = 50)]
    pub spin_us: u64,

    /// The shards' cores are kelp's alone: keep spinning even when shards wait for cores.
    /// Without it, when a shard keeps waiting for a core (more busy threads than cores: a small
    /// VM, a client on the same host), every shard parks when idle for a while and may run on
    /// any of kelp's cores, instead of time-slicing with the clients in scheduler quanta.
    #[arg(long, env = "KELP_DEDICATED_CORES")]
    pub dedicated_cores: bool,

    /// Glommio's preemption interval in microseconds: how often a spinning shard also polls
    /// io_uring (accepts, timers, idle connections). Short intervals made glommio 0.9 lose
    /// wake-ups here (executors slept with work pending; see ARCHITECTURE.md), so the default is
    /// glommio's own 100 ms.
    #[arg(long, env = "KELP_PREEMPT_US", default_value_t = 100_000)]
    pub preempt_us: u64,

    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "KELP_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// Smallest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KELP_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub group_min_session_timeout_ms: i32,

    /// Largest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KELP_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: i32,

    /// How long committed offsets of an empty group are kept.
    #[arg(long, env = "KELP_OFFSETS_RETENTION_MINUTES", default_value_t = 10080)]
    pub offsets_retention_minutes: u64,

    /// Address to serve Prometheus metrics on (`GET /metrics`, text format), e.g.
    /// 127.0.0.1:9644. Per-shard and per-API request counts, errors, bytes, latency
    /// histograms, connections and partitions. Not served unless given; kelp does not start if
    /// the address cannot be bound.
    #[arg(long, env = "KELP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Node id of this broker in metadata (0-1023); on the SeaweedMQ backend with a filer,
    /// each instance of a cluster needs its own.
    #[arg(long, env = "KELP_NODE_ID", default_value_t = 0)]
    pub node_id: i32,

    /// Cluster id reported to clients. On the SeaweedMQ backend with a filer, instances with
    /// the same cluster id in front of the same SeaweedFS form one cluster: they find each
    /// other in the filer (`/kelp/clusters/<id>/members`) and share the partitions and groups.
    #[arg(long, env = "KELP_CLUSTER_ID", default_value = "kelp-cluster")]
    pub cluster_id: String,

    /// How long a cluster member stays alive without renewing its lease in the filer (whole
    /// seconds). A member stops serving half a lease after its last renewal; the others take
    /// its partitions over once the lease has run out. Shorter: faster failover, more
    /// sensitivity to filer pauses.
    #[arg(long, env = "KELP_MEMBER_LEASE_MS", default_value_t = 10_000)]
    pub member_lease_ms: u64,
}

impl Config {
    /// The (host, port) advertised to clients.
    pub fn advertised(&self) -> (String, i32) {
        if let Some(a) = &self.advertise {
            if let Some((h, p)) = a.rsplit_once(':') {
                if let Ok(port) = p.parse::<i32>() {
                    return (h.trim_matches(['[', ']']).to_string(), port);
                }
            }
            return (a.clone(), self.listen.addr.port() as i32);
        }
        let ip = self.listen.addr.ip();
        let host = if ip.is_unspecified() {
            hostname().unwrap_or_else(|| "127.0.0.1".to_string())
        } else {
            ip.to_string()
        };
        (host, self.listen.addr.port() as i32)
    }

    /// The cores to place shards on.
    pub fn shard_cores(&self) -> Result<Vec<usize>, String> {
        let all: Vec<usize> = core_affinity::get_core_ids()
            .map(|v| v.into_iter().map(|c| c.id).collect())
            .unwrap_or_else(|| (0..num_cpus()).collect());
        if let Some(list) = &self.cores {
            let mut out = Vec::new();
            for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if let Some((a, b)) = part.split_once('-') {
                    let a: usize = a.parse().map_err(|_| format!("bad core range {part:?}"))?;
                    let b: usize = b.parse().map_err(|_| format!("bad core range {part:?}"))?;
                    out.extend(a..=b);
                } else {
                    out.push(part.parse().map_err(|_| format!("bad core {part:?}"))?);
                }
            }
            if out.is_empty() {
                return Err("--cores names no core".into());
            }
            return Ok(out);
        }
        let n = self.shards.unwrap_or(all.len()).max(1);
        Ok((0..n).map(|i| all[i % all.len()]).collect())
    }

    /// Checks the flags that depend on each other, once at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_partitions < 1 || self.default_partitions > limits::PARTITIONS_PER_TOPIC_MAX
        {
            return Err(format!(
                "--default-partitions must be 1..={}",
                limits::PARTITIONS_PER_TOPIC_MAX
            ));
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > i32::MAX as usize {
            return Err("--max-request-bytes must be between 1 KiB and 2 GiB".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.preempt_us == 0 {
            return Err("--preempt-us must be at least 1".into());
        }
        if self.listen.protocol.tls() && self.tls_cert.is_none() {
            return Err(format!(
                "--listen {} needs --tls-cert and --tls-key",
                self.listen
            ));
        }
        if self.listen.protocol.sasl() && self.users_file.is_none() {
            return Err(format!(
                "--listen {} needs --users-file (make one with `kelp user add`)",
                self.listen
            ));
        }
        if self.metrics_listen == Some(self.listen.addr) {
            return Err("--metrics-listen must differ from --listen".into());
        }
        if !(0..=limits::NODE_ID_MAX).contains(&self.node_id) {
            return Err(format!("--node-id must be 0..={}", limits::NODE_ID_MAX));
        }
        if self.member_lease_ms < limits::CLUSTER_LEASE_MS_MIN {
            return Err(format!(
                "--member-lease-ms must be at least {}",
                limits::CLUSTER_LEASE_MS_MIN
            ));
        }
        if self.cluster_id.is_empty() || self.cluster_id.contains('/') {
            return Err("--cluster-id must be non-empty and without '/'".into());
        }
        if let Some(f) = &self.seaweedmq_filer {
            crate::seaweedmq::filer::grpc_address(f)
                .map_err(|e| format!("--seaweedmq-filer: {e}"))?;
        }
        Ok(())
    }

    pub fn spin(&self) -> Duration {
        Duration::from_micros(self.spin_us)
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_with_or_without_a_protocol() {
        let l: Listener = "127.0.0.1:9092".parse().unwrap();
        assert_eq!(l.protocol, SecurityProtocol::Plaintext);
        assert_eq!(l.to_string(), "PLAINTEXT://127.0.0.1:9092");
        let l: Listener = "sasl_plaintext://[::1]:9093".parse().unwrap();
        assert_eq!(l.protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(l.addr, "[::1]:9093".parse().unwrap());
        assert!(l.protocol.sasl() && !l.protocol.tls());
        assert_eq!(
            l.to_string().parse::<Listener>(),
            Ok(l),
            "Display reads back"
        );
        for bad in [
            "GSSAPI://127.0.0.1:1",
            "localhost:9092",
            "127.0.0.1",
            "SSL://",
        ] {
            assert!(bad.parse::<Listener>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_without_a_certificate_and_sasl_without_users_are_refused_at_start() {
        let with = |args: &[&str]| Config::parse_from([&["kelp"], args].concat()).validate();
        assert!(with(&["--listen", "SSL://127.0.0.1:9093"]).is_err());
        assert!(with(&["--listen", "SASL_SSL://127.0.0.1:9093"]).is_err());
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        assert!(with(&[&["--listen", "SSL://127.0.0.1:9093"], &tls[..]].concat()).is_ok());
        assert!(
            Config::try_parse_from(["kelp", "--tls-cert", "c.pem"]).is_err(),
            "a certificate without its key"
        );
        assert!(with(&["--listen", "SASL_PLAINTEXT://127.0.0.1:9093"]).is_err());
        assert!(with(&[
            "--listen",
            "SASL_PLAINTEXT://127.0.0.1:9093",
            "--users-file",
            "u"
        ])
        .is_ok());
        assert!(with(&["--listen", "127.0.0.1:9093"]).is_ok());
    }
}
