//! The mesh's vocabulary: the work one shard asks of another ([`Op`]) and the answers
//! ([`Reply`]), wrapped in the [`Envelope`]s that cross between shards.

use super::TopicPartition;
use crate::cluster::ClusterView;
use crate::error::ErrorCode;
use crate::group::{GroupOp, GroupReply};
use crate::partition::ProduceOutcome;
use crate::storage::{OffsetAndTimestamp, ReadResult};
use crate::topics::{RegistryError, TopicMeta, TopicTable};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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

impl PartitionReply {
    /// The answer to `op` for a partition that cannot take it at all.
    pub fn failed(op: &PartitionOp, e: ErrorCode) -> PartitionReply {
        match op {
            PartitionOp::Produce { .. } => PartitionReply::Produce(ProduceOutcome::error(e, None)),
            PartitionOp::Read { .. } => PartitionReply::Read(Err(e)),
            PartitionOp::ListOffset { .. } => PartitionReply::ListOffset(Err(e)),
            PartitionOp::DeleteRecords { .. } => PartitionReply::DeleteRecords(Err(e)),
            PartitionOp::EndOffset => PartitionReply::EndOffset(Err(e)),
            PartitionOp::Attach => PartitionReply::Attached(Err(e)),
        }
    }
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
    /// A topic the table lacks but the backend may have (SeaweedMQ: made by another gateway);
    /// fails with UNKNOWN_TOPIC_OR_PARTITION when it has not.
    Lookup { name: String },
}

/// A partition op's answer: at once, or once the backend has answered.
pub enum Applied {
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
    /// A new picture of the cluster (see `crate::cluster`).
    InstallView(Arc<ClusterView>),
    /// Whether the shard has the view with this member-set hash and has let go of everything
    /// that view took from it.
    Drained(u64),
    /// A quiet connection moving to this shard, which owns what it asks for (`crate::conn`).
    AdoptConnection(Handoff),
}

/// A connection handed from one shard to another between requests: nothing in flight,
/// nothing buffered, so the new shard simply reads on from the socket.
pub struct Handoff {
    /// The socket (a duplicate: the old shard closes its own descriptor).
    pub fd: std::os::fd::OwnedFd,
    /// When it moved (a connection moves again only after `CONNECTION_HANDOFF_INTERVAL_MS`).
    pub moved_at: std::time::Instant,
    /// Its TLS session and SASL login, as they stood.
    pub security: crate::auth::Security,
}

pub enum Reply {
    Partitions(Vec<PartitionReply>),
    Registry(Result<Arc<TopicMeta>, RegistryError>),
    Group(GroupReply),
    Drained(bool),
    Done,
}

pub enum Envelope {
    Request {
        id: u64,
        from: usize,
        op: Op,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
    Shutdown,
    /// The users file was read again (SIGHUP): new SASL logins check against these.
    /// Taking them is acknowledged on the sender, if any (an admin alteration waits for every
    /// shard before it answers).
    Users(
        std::sync::Arc<crate::auth::Users>,
        Option<crossbeam_channel::Sender<()>>,
    ),
    /// The TLS certificate and key were read again (SIGHUP): new TLS connections use these.
    Tls(std::sync::Arc<rustls::ServerConfig>),
}
