//! kelp: a Kafka wire-protocol broker, thread-per-core, in front of SeaweedMQ.
//!
//! Map of the crate:
//! - [`auth`]: SASL mechanisms (PLAIN, SCRAM-SHA-256/512), salted credentials, the users file
//!   and `kelp user`.
//! - [`alloc`]: the binary's allocator, which survives the codec's lying array counts.
//! - [`config`]: flags (each with a `KELP_*` twin) and every named limit.
//! - [`cluster`]: several kelp instances: the live members and who owns each partition and
//!   group (rendezvous hashing); no I/O.
//! - [`protocol`]: frames, request decoding, the versions served, record batch validation.
//!   Never does I/O.
//! - [`seaweedmq`]: the gRPC core that talks to SeaweedMQ (the only code that does).
//! - [`server`]: starts one pinned glommio executor per shard; graceful shutdown.
//! - [`shard`]: what a shard owns, the cross-shard mesh, routing of partition and group work to
//!   the owning shard ([`shard::shard_for_partition`]), the topic registry, and each backend's
//!   partition ops (`shard::seaweed`: everything a shard does on SeaweedMQ).
//! - [`tls`]: TLS on SSL and SASL_SSL listeners (rustls), between a connection's socket and its
//!   plaintext buffers.
//! - [`conn`]: one connection: busy-polled non-blocking socket I/O, pipelined requests,
//!   responses in request order.
//! - [`handlers`]: one function per Kafka API, reached from one dispatcher.
//! - [`partition`]: a memory partition on its owner; validation and idempotent producers, which
//!   SeaweedMQ partitions share.
//! - [`storage`]: what reads answer with, and the embedded backend's in-memory log.
//! - [`topics`]: topic metadata, its single writer on shard 0, topic configs.
//! - [`group`]: the consumer-group coordinator of the groups a shard owns.
//! - [`error`]: Kafka error codes and the mapping into them.
//! - [`metrics`]: per-shard counters (single writer, no locks) and the `/metrics` endpoint.

pub mod alloc;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod error;
pub mod group;
pub mod handlers;
pub mod metrics;
pub mod partition;
pub mod protocol;
pub mod seaweedmq;
pub mod server;
pub mod shard;
pub mod storage;
pub mod tls;
pub mod topics;
pub mod util;
