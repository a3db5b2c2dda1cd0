//! Kafka error codes, and the one place where internal errors become them.

use crate::protocol::batch::BatchError;

/// The Kafka error codes kelp answers with (numbers from Kafka's `Errors` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ErrorCode {
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    CoordinatorNotAvailable = 15,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    InvalidRequiredAcks = 21,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    PolicyViolation = 44,
    OutOfOrderSequenceNumber = 45,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    TransactionalIdAuthorizationFailed = 53,
    UnknownProducerId = 59,
    ClusterAuthorizationFailed = 31,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    NotController = 41,
    FetchSessionIdNotFound = 70,
    InvalidFetchSessionEpoch = 71,
    InvalidRecord = 87,
    UnknownTopicId = 100,
    UnknownServerError = -1,
}

impl ErrorCode {
    pub fn code(self) -> i16 {
        self as i16
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
