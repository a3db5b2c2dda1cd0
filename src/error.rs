//! Kafka error codes, and the one place where internal errors become them.

use crate::protocol::batch::BatchError;
use crate::seaweedmq::{broker_codes, SeaweedError};

/// The Kafka error codes kelp answers with (numbers from Kafka's `Errors` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(i16)]
pub enum ErrorCode {
    UnknownServerError = -1,
    #[default]
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    NotEnoughReplicas = 19,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    ClusterAuthorizationFailed = 31,
    UnsupportedSaslMechanism = 33,
    IllegalSaslState = 34,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    NotController = 41,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    PolicyViolation = 44,
    OutOfOrderSequenceNumber = 45,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    TransactionalIdAuthorizationFailed = 53,
    KafkaStorageError = 56,
    SaslAuthenticationFailed = 58,
    UnknownProducerId = 59,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    FetchSessionIdNotFound = 70,
    InvalidFetchSessionEpoch = 71,
    TopicDeletionDisabled = 73,
    MemberIdRequired = 79,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    GroupSubscribedToTopic = 86,
    InvalidRecord = 87,
    ResourceNotFound = 91,
    DuplicateResource = 92,
    UnacceptableCredential = 93,
    UnknownTopicId = 100,
}

impl ErrorCode {
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The Kafka error for a failed SeaweedMQ call. Whatever may pass with time maps to a code
    /// every client retries: NOT_ENOUGH_REPLICAS for produce (clients resend without a metadata
    /// storm), KAFKA_STORAGE_ERROR for reads.
    pub fn from_seaweed(e: &SeaweedError, produce: bool) -> ErrorCode {
        let retriable = if produce {
            ErrorCode::NotEnoughReplicas
        } else {
            ErrorCode::KafkaStorageError
        };
        match e {
            SeaweedError::TopicNotFound { .. } | SeaweedError::PartitionNotFound { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            SeaweedError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            // A read that timed out is storage trouble to the client: librdkafka handed
            // REQUEST_TIMED_OUT on a Fetch to the application as a consumer error.
            SeaweedError::Timeout { .. } if produce => ErrorCode::RequestTimedOut,
            SeaweedError::NotLeader { .. } | SeaweedError::Moved { .. } => {
                ErrorCode::NotLeaderOrFollower
            }
            SeaweedError::Broker { code, .. } if *code == broker_codes::MESSAGE_TOO_LARGE => {
                ErrorCode::MessageTooLarge
            }
            SeaweedError::Broker { code, .. } if *code == broker_codes::INVALID_RECORD => {
                ErrorCode::InvalidRecord
            }
            SeaweedError::InvalidArgument(_) => ErrorCode::InvalidRequest,
            // Unavailable, overloaded, shutting down, and broker or gRPC failures kelp cannot
            // tell apart from an outage: the client should try again.
            _ => retriable,
        }
    }
}

impl From<&BatchError> for ErrorCode {
    fn from(e: &BatchError) -> Self {
        match e {
            BatchError::CrcMismatch { .. } | BatchError::Truncated => ErrorCode::CorruptMessage,
            BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
            BatchError::UnknownCodec(_)
            | BatchError::Decompress(_)
            | BatchError::MalformedRecords(_)
            | BatchError::CountMismatch { .. }
            | BatchError::OffsetDeltaMismatch { .. } => ErrorCode::CorruptMessage,
            BatchError::DecompressedTooLarge { .. } => ErrorCode::RecordListTooLarge,
            BatchError::ControlBatch => ErrorCode::InvalidRecord,
        }
    }
}
