//! The Kafka wire codec as kelp uses it: frames, request headers, the versions kelp serves, and
//! response encoding. Built on the `kafka-protocol` crate. Nothing here does I/O, so it can be
//! unit-tested and fuzzed without a runtime.

pub mod batch;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Bytes of the length prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// The APIs kelp serves and the version range it advertises for each: exactly what Apache Kafka
/// 4.1 accepts (see `shared/kafka-versions.md`). Produce is advertised from 0 because librdkafka
/// disables compression when the minimum is higher (KAFKA-18659); v0-2 are refused if sent.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

/// Produce versions that are advertised (for librdkafka's sake) but refused when sent.
pub const PRODUCE_MIN_ACCEPTED_VERSION: i16 = 3;

/// The advertised range of an API, if kelp serves it.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Why a frame could not become a request. Every variant closes the connection, except
/// `ApiVersionsTooNew`, which Kafka answers (KIP-511) and keeps the connection open.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    ShortFrame(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {api:?} version {version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("ApiVersions v{version} is newer than this broker knows")]
    ApiVersionsTooNew { version: i16, correlation_id: i32 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Decodes one frame (without its length prefix) into a request.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::ShortFrame(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let Some((min, max)) = supported_range(api_key) else {
        return Err(DecodeError::UnknownApiKey(raw_key));
    };
    if api_key == ApiKey::ApiVersions && version > max {
        return Err(DecodeError::ApiVersionsTooNew {
            version,
            correlation_id,
        });
    }
    let accepted_min = if api_key == ApiKey::Produce {
        PRODUCE_MIN_ACCEPTED_VERSION
    } else {
        min
    };
    if version < accepted_min || version > max {
        return Err(DecodeError::UnsupportedVersion {
            api: api_key,
            version,
        });
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed {
        api: api_key,
        version,
        reason: format!("{e:#}"),
    };
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}

/// Encodes a response frame (length prefix included) into `out`.
pub fn encode_response(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<()> {
    let start = out.len();
    out.put_i32(0);
    // ApiVersions always answers with header v0 so that a client that sent a too-new version
    // can still read the error (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(out, header_version)?;
    body.encode(out, version)?;
    let len = (out.len() - start - FRAME_PREFIX_BYTES) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Whether a response carries a non-zero error code anywhere: at the top level, or for any
/// topic, partition, resource, member or group it lists. (`/metrics` counts these answers as
/// errors; so it counts the codes the protocol uses in normal operation too, such as
/// MEMBER_ID_REQUIRED or REBALANCE_IN_PROGRESS.)
pub fn response_has_error(body: &ResponseKind) -> bool {
    fn any<T>(items: &[T], f: impl Fn(&T) -> bool) -> bool {
        items.iter().any(f)
    }
    match body {
        ResponseKind::ApiVersions(r) => r.error_code != 0,
        ResponseKind::Metadata(r) => {
            r.error_code != 0
                || any(&r.topics, |t| {
                    t.error_code != 0 || any(&t.partitions, |p| p.error_code != 0)
                })
        }
        ResponseKind::Produce(r) => any(&r.responses, |t| {
            any(&t.partition_responses, |p| p.error_code != 0)
        }),
        ResponseKind::Fetch(r) => {
            r.error_code != 0 || any(&r.responses, |t| any(&t.partitions, |p| p.error_code != 0))
        }
        ResponseKind::ListOffsets(r) => {
            any(&r.topics, |t| any(&t.partitions, |p| p.error_code != 0))
        }
        ResponseKind::OffsetForLeaderEpoch(r) => {
            any(&r.topics, |t| any(&t.partitions, |p| p.error_code != 0))
        }
        ResponseKind::FindCoordinator(r) => {
            r.error_code != 0 || any(&r.coordinators, |c| c.error_code != 0)
        }
        ResponseKind::DescribeCluster(r) => r.error_code != 0,
        ResponseKind::InitProducerId(r) => r.error_code != 0,
        ResponseKind::CreateTopics(r) => any(&r.topics, |t| t.error_code != 0),
        ResponseKind::DeleteTopics(r) => any(&r.responses, |t| t.error_code != 0),
        ResponseKind::CreatePartitions(r) => any(&r.results, |t| t.error_code != 0),
        ResponseKind::DeleteRecords(r) => {
            any(&r.topics, |t| any(&t.partitions, |p| p.error_code != 0))
        }
        ResponseKind::DescribeConfigs(r) => any(&r.results, |c| c.error_code != 0),
        ResponseKind::AlterConfigs(r) => any(&r.responses, |c| c.error_code != 0),
        ResponseKind::IncrementalAlterConfigs(r) => any(&r.responses, |c| c.error_code != 0),
        ResponseKind::JoinGroup(r) => r.error_code != 0,
        ResponseKind::SyncGroup(r) => r.error_code != 0,
        ResponseKind::Heartbeat(r) => r.error_code != 0,
        ResponseKind::LeaveGroup(r) => r.error_code != 0 || any(&r.members, |m| m.error_code != 0),
        ResponseKind::OffsetCommit(r) => {
            any(&r.topics, |t| any(&t.partitions, |p| p.error_code != 0))
        }
        ResponseKind::OffsetFetch(r) => {
            r.error_code != 0
                || any(&r.topics, |t| any(&t.partitions, |p| p.error_code != 0))
                || any(&r.groups, |g| {
                    g.error_code != 0
                        || any(&g.topics, |t| any(&t.partitions, |p| p.error_code != 0))
                })
        }
        ResponseKind::DescribeGroups(r) => any(&r.groups, |g| g.error_code != 0),
        ResponseKind::ListGroups(r) => r.error_code != 0,
        ResponseKind::DeleteGroups(r) => any(&r.results, |g| g.error_code != 0),
        ResponseKind::OffsetDelete(r) => {
            r.error_code != 0 || any(&r.topics, |t| any(&t.partitions, |p| p.error_code != 0))
        }
        // Not served (the codec refuses their requests), so never answered.
        _ => false,
    }
}

/// The body of the answer to a too-new ApiVersions: error 35 (UNSUPPORTED_VERSION) and the
/// supported ranges, encoded as v0 (KIP-511).
pub fn encode_api_versions_too_new(out: &mut BytesMut, correlation_id: i32) {
    let body = ResponseKind::ApiVersions(api_versions_response(
        crate::error::ErrorCode::UnsupportedVersion.code(),
    ));
    encode_response(out, ApiKey::ApiVersions, 0, correlation_id, &body)
        .expect("an ApiVersions v0 response always encodes");
}

/// The ApiVersions response body listing every supported API.
pub fn api_versions_response(error_code: i16) -> kafka_protocol::messages::ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    let mut resp = kafka_protocol::messages::ApiVersionsResponse::default();
    resp.error_code = error_code;
    resp.api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    resp.finalized_features_epoch = -1;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::StrBytes;

    fn frame_for(key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut b = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = 7;
        h.client_id = Some(StrBytes::from_static_str("t"));
        h.encode(&mut b, key.request_header_version(version))
            .unwrap();
        body.encode(&mut b, version).unwrap();
        b.freeze()
    }

    #[test]
    fn every_supported_version_of_api_versions_round_trips() {
        for v in 0..=4 {
            let mut req = ApiVersionsRequest::default();
            if v >= 3 {
                req.client_software_name = StrBytes::from_static_str("x");
                req.client_software_version = StrBytes::from_static_str("1");
            }
            let r = decode_request(frame_for(
                ApiKey::ApiVersions,
                v,
                &RequestKind::ApiVersions(req),
            ))
            .unwrap();
            assert_eq!(r.header.correlation_id, 7);
            assert_eq!(r.version, v);
        }
    }

    #[test]
    fn unknown_key_and_old_produce_are_refused() {
        let mut f = BytesMut::new();
        f.put_i16(9999);
        f.put_i16(0);
        f.put_i32(1);
        assert!(matches!(
            decode_request(f.freeze()),
            Err(DecodeError::UnknownApiKey(9999))
        ));
        let mut f = BytesMut::new();
        f.put_i16(0);
        f.put_i16(2);
        f.put_i32(1);
        f.put_i16(-1);
        assert!(matches!(
            decode_request(f.freeze()),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn too_new_api_versions_is_answered_not_dropped() {
        let mut f = BytesMut::new();
        f.put_i16(18);
        f.put_i16(99);
        f.put_i32(42);
        match decode_request(f.freeze()) {
            Err(DecodeError::ApiVersionsTooNew { correlation_id, .. }) => {
                let mut out = BytesMut::new();
                encode_api_versions_too_new(&mut out, correlation_id);
                assert_eq!(&out[4..8], &42i32.to_be_bytes());
                assert_eq!(&out[8..10], &35i16.to_be_bytes());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_are_found_at_every_level() {
        use kafka_protocol::messages::offset_fetch_response::{
            OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
        };
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        use kafka_protocol::messages::{OffsetFetchResponse, ProduceResponse};
        let mut p = PartitionProduceResponse::default();
        let mut t = TopicProduceResponse::default();
        t.partition_responses = vec![p.clone()];
        let mut ok = ProduceResponse::default();
        ok.responses = vec![t.clone()];
        assert!(!response_has_error(&ResponseKind::Produce(ok)));
        p.error_code = 3;
        t.partition_responses.push(p);
        let mut bad = ProduceResponse::default();
        bad.responses = vec![t];
        assert!(response_has_error(&ResponseKind::Produce(bad)));

        let mut part = OffsetFetchResponsePartitions::default();
        part.error_code = 16;
        let mut topic = OffsetFetchResponseTopics::default();
        topic.partitions = vec![part];
        let mut group = OffsetFetchResponseGroup::default();
        group.topics = vec![topic];
        let mut r = OffsetFetchResponse::default();
        r.groups = vec![group];
        assert!(response_has_error(&ResponseKind::OffsetFetch(r)));
        assert!(!response_has_error(&ResponseKind::OffsetFetch(
            OffsetFetchResponse::default()
        )));
        assert!(response_has_error(&ResponseKind::ApiVersions(
            api_versions_response(35)
        )));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..2000usize {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push(seed as u8);
            }
            // Make some of them look like real API keys so the body decoders run too.
            if len >= 4 {
                v[0] = 0;
                v[1] = (len % 61) as u8;
                v[2] = 0;
                v[3] = (len % 14) as u8;
            }
            let _ = decode_request(Bytes::from(v));
        }
    }
}
