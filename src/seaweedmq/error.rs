//! What can go wrong between a shard and SeaweedMQ, typed so that the Kafka layer can map each
//! case to one Kafka error code (and know whether the client should retry).

/// Broker error codes carried in `error_code` fields (SeaweedFS `broker_errors.go`).
pub mod broker_codes {
    pub const UNKNOWN: i32 = 1;
    pub const TOPIC_NOT_FOUND: i32 = 2;
    pub const PARTITION_NOT_FOUND: i32 = 3;
    pub const NOT_LEADER: i32 = 6;
    pub const TIMEOUT: i32 = 7;
    pub const BROKER_NOT_AVAILABLE: i32 = 8;
    pub const MESSAGE_TOO_LARGE: i32 = 10;
    pub const NETWORK_EXCEPTION: i32 = 13;
    pub const OFFSET_LOAD_IN_PROGRESS: i32 = 14;
    pub const TOPIC_EXISTS: i32 = 36;
    pub const INVALID_PARTITIONS: i32 = 37;
    pub const INVALID_CONFIG: i32 = 40;
    pub const INVALID_RECORD: i32 = 42;

    /// Codes after which the same request may succeed on a later try.
    pub fn is_retriable(code: i32) -> bool {
        matches!(
            code,
            NOT_LEADER
                | TIMEOUT
                | BROKER_NOT_AVAILABLE
                | NETWORK_EXCEPTION
                | OFFSET_LOAD_IN_PROGRESS
        )
    }
}

/// An error answered by the gRPC core. `Clone` because one failure (a broken publish stream)
/// answers many callers at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeaweedError {
    /// The broker cannot be reached now; the core keeps reconnecting with backoff. Retriable.
    #[error("SeaweedMQ broker {addr} unavailable: {reason}")]
    Unavailable { addr: String, reason: String },
    /// The bounded request queue into the gRPC core is full. Retriable.
    #[error("SeaweedMQ core queue full ({capacity} requests waiting)")]
    Overloaded { capacity: usize },
    /// The broker did not answer within the request timeout. Retriable.
    #[error("SeaweedMQ request timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The partition's leader kept moving while we looked it up. Retriable.
    #[error("no leader accepted {topic}[{partition}] after {attempts} lookups: {reason}")]
    NotLeader {
        topic: String,
        partition: i32,
        attempts: u32,
        reason: String,
    },
    #[error("topic {topic} not found in SeaweedMQ")]
    TopicNotFound { topic: String },
    #[error("partition {partition} of topic {topic} not found ({partitions} partitions)")]
    PartitionNotFound {
        topic: String,
        partition: i32,
        partitions: usize,
    },
    /// A fetch outside `[log_start, high_water_mark]`.
    #[error("offset {offset} out of range [{log_start}, {high_water_mark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_water_mark: i64,
    },
    /// The broker answered with an `error_code` (see [`broker_codes`]) or an error text.
    #[error("SeaweedMQ broker error {code}: {message}")]
    Broker { code: i32, message: String },
    /// A gRPC status that none of the cases above explains (`code` is the gRPC code number).
    #[error("SeaweedMQ gRPC status {code}: {message}")]
    Rpc { code: i32, message: String },
    #[error("invalid SeaweedMQ request: {0}")]
    InvalidArgument(String),
    /// The partition lost records the broker had acknowledged, or its broker numbered a new
    /// record below an acknowledged one: kelp neither writes to nor reads from it (see
    /// `seaweedmq::marks`). Retriable for clients: nothing they sent was acknowledged.
    #[error("SeaweedMQ partition {topic}[{partition}] is fenced: {reason}")]
    Fenced {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// The partition moved to another kelp instance (or this one lost its membership) while
    /// the call waited. Retriable: the client asks the new leader.
    #[error("{topic}[{partition}] moved to another kelp instance")]
    Moved { topic: String, partition: i32 },
    /// The gRPC core has stopped (shutdown, or its thread died).
    #[error("SeaweedMQ core has shut down")]
    Shutdown,
}

impl SeaweedError {
    /// Whether the same request may succeed if the caller tries again later (maps to Kafka's
    /// retriable error codes).
    pub fn is_retriable(&self) -> bool {
        match self {
            SeaweedError::Unavailable { .. }
            | SeaweedError::Overloaded { .. }
            | SeaweedError::Timeout { .. }
            | SeaweedError::NotLeader { .. }
            | SeaweedError::Moved { .. }
            | SeaweedError::Fenced { .. } => true,
            SeaweedError::Broker { code, .. } => broker_codes::is_retriable(*code),
            SeaweedError::Rpc { code, .. } => {
                let code = tonic::Code::from_i32(*code);
                matches!(
                    code,
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Aborted
                )
            }
            _ => false,
        }
    }
}

pub type SeaweedResult<T> = Result<T, SeaweedError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_cases() {
        assert!(SeaweedError::Unavailable {
            addr: "a".into(),
            reason: "r".into()
        }
        .is_retriable());
        assert!(SeaweedError::Broker {
            code: broker_codes::NOT_LEADER,
            message: String::new()
        }
        .is_retriable());
        assert!(!SeaweedError::Broker {
            code: broker_codes::INVALID_RECORD,
            message: String::new()
        }
        .is_retriable());
        assert!(!SeaweedError::TopicNotFound { topic: "t".into() }.is_retriable());
        assert!(SeaweedError::Rpc {
            code: tonic::Code::Unavailable as i32,
            message: String::new()
        }
        .is_retriable());
    }
}
