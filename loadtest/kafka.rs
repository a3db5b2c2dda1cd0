//! The Kafka side of the client that is not on the hot path: frame encoding and decoding, a
//! blocking request/response connection for setup (ApiVersions, Metadata, CreateTopics,
//! ListOffsets), version negotiation, and topic layout.

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest,
    RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The client id every request carries.
pub const CLIENT_ID: &str = "kelp-loadtest";

/// Highest version of each API this client speaks. Produce and Fetch stop at 12: v13 names
/// topics by id, which would add a Metadata round trip for no difference on the wire that
/// matters here.
pub const PRODUCE_VERSION_MAX: i16 = 12;
pub const PRODUCE_VERSION_MIN: i16 = 3;
pub const FETCH_VERSION_MAX: i16 = 12;
pub const FETCH_VERSION_MIN: i16 = 4;
const METADATA_VERSION_MAX: i16 = 12;
const METADATA_VERSION_MIN: i16 = 1;
const CREATE_TOPICS_VERSION_MAX: i16 = 7;
const CREATE_TOPICS_VERSION_MIN: i16 = 2;
const LIST_OFFSETS_VERSION_MAX: i16 = 7;
const LIST_OFFSETS_VERSION_MIN: i16 = 1;

/// Kafka error codes the client treats specially.
pub const ERR_UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const ERR_TOPIC_ALREADY_EXISTS: i16 = 36;
const ERR_UNSUPPORTED_VERSION: i16 = 35;

/// How long setup waits for a topic to have a leader for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Socket timeout of the blocking setup connection.
const SETUP_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A short name for a Kafka error code, for error tallies.
pub fn error_name(code: i16) -> String {
    let name = match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        21 => "INVALID_REQUIRED_ACKS",
        32 => "INVALID_TIMESTAMP",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        42 => "INVALID_REQUEST",
        87 => "INVALID_RECORD",
        _ => return format!("error code {code}"),
    };
    format!("{name} ({code})")
}

/// Encodes a request frame (length prefix included) into `out`.
pub fn encode_request(
    out: &mut BytesMut,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> anyhow::Result<()> {
    let start = out.len();
    out.put_i32(0);
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = version;
    h.correlation_id = correlation_id;
    h.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    h.encode(out, key.request_header_version(version))?;
    body.encode(out, version)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The correlation id of a response frame (without its length prefix).
pub fn response_correlation(frame: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(..4)?.try_into().ok()?))
}

/// Decodes a response frame (without its length prefix) to a `key` request sent at `version`.
pub fn decode_response(
    mut frame: Bytes,
    key: ApiKey,
    version: i16,
) -> anyhow::Result<ResponseKind> {
    // ApiVersions answers with header v0 whatever the version (KIP-511).
    let hv = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    ResponseHeader::decode(&mut frame, hv).context("response header")?;
    let body = ResponseKind::decode(key, &mut frame, version)
        .with_context(|| format!("{key:?} v{version} response body"))?;
    Ok(body)
}

/// The version ranges a broker advertised, keyed by API key.
#[derive(Debug, Clone, Default)]
pub struct BrokerApis(HashMap<i16, (i16, i16)>);

impl BrokerApis {
    /// The highest version both sides speak, or an error naming the gap.
    pub fn pick(&self, key: ApiKey, ours_min: i16, ours_max: i16) -> anyhow::Result<i16> {
        let Some(&(min, max)) = self.0.get(&(key as i16)) else {
            bail!("the broker does not serve {key:?}");
        };
        let v = max.min(ours_max);
        if v < min.max(ours_min) {
            bail!("no common {key:?} version: broker {min}-{max}, loadtest {ours_min}-{ours_max}");
        }
        Ok(v)
    }

    pub fn produce(&self) -> anyhow::Result<i16> {
        self.pick(ApiKey::Produce, PRODUCE_VERSION_MIN, PRODUCE_VERSION_MAX)
    }

    pub fn fetch(&self) -> anyhow::Result<i16> {
        self.pick(ApiKey::Fetch, FETCH_VERSION_MIN, FETCH_VERSION_MAX)
    }
}

/// A blocking connection for setup requests, one at a time.
pub struct SyncClient {
    stream: TcpStream,
    next_correlation: i32,
    pub apis: BrokerApis,
    pub addr: String,
}

impl SyncClient {
    /// Connects and learns the broker's API versions.
    pub fn connect(addr: &str) -> anyhow::Result<SyncClient> {
        let stream = connect_tcp(addr)?;
        stream.set_read_timeout(Some(SETUP_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(SETUP_IO_TIMEOUT))?;
        let mut c = SyncClient {
            stream,
            next_correlation: 1,
            apis: BrokerApis::default(),
            addr: addr.to_string(),
        };
        c.apis = c.api_versions()?;
        Ok(c)
    }

    fn api_versions(&mut self) -> anyhow::Result<BrokerApis> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str(CLIENT_ID);
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut resp = self.call(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(req.clone()),
        )?;
        if let ResponseKind::ApiVersions(r) = &resp {
            if r.error_code == ERR_UNSUPPORTED_VERSION {
                resp = self.call(ApiKey::ApiVersions, 0, RequestKind::ApiVersions(req))?;
            }
        }
        let ResponseKind::ApiVersions(r) = resp else {
            bail!("ApiVersions answered with another response kind");
        };
        if r.error_code != 0 {
            bail!("ApiVersions failed: {}", error_name(r.error_code));
        }
        Ok(BrokerApis(
            r.api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        ))
    }

    /// Sends one request and waits for its response.
    pub fn call(
        &mut self,
        key: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> anyhow::Result<ResponseKind> {
        let corr = self.next_correlation;
        self.next_correlation += 1;
        let mut out = BytesMut::new();
        encode_request(&mut out, key, version, corr, &body)?;
        self.stream
            .write_all(&out)
            .with_context(|| format!("sending {key:?} to {}", self.addr))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .with_context(|| format!("reading the {key:?} response from {}", self.addr))?;
        let len = i32::from_be_bytes(len);
        if !(4..=256 << 20).contains(&len) {
            bail!("{key:?} response frame of {len} bytes from {}", self.addr);
        }
        let mut frame = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut frame)
            .with_context(|| format!("reading the {key:?} response from {}", self.addr))?;
        let frame = Bytes::from(frame);
        let got = response_correlation(&frame).unwrap_or(-1);
        if got != corr {
            bail!("{key:?} response carries correlation id {got}, expected {corr}");
        }
        decode_response(frame, key, version)
    }
}

/// Opens a TCP connection with Nagle off.
pub fn connect_tcp(addr: &str) -> anyhow::Result<TcpStream> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow!("connecting to {addr}: {e}"),
        None => anyhow!("{addr} resolves to no address"),
    })
}

/// Where each partition of a topic lives.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub name: String,
    /// Leader address of each partition, by partition index.
    pub leaders: Vec<String>,
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Makes sure `topic` exists with at least one partition (creating it with `partitions` if it
/// is missing) and that every partition has a leader; returns its layout.
pub fn ensure_topic(
    c: &mut SyncClient,
    topic: &str,
    partitions: i32,
    create: bool,
) -> anyhow::Result<TopicLayout> {
    let mv = c
        .apis
        .pick(ApiKey::Metadata, METADATA_VERSION_MIN, METADATA_VERSION_MAX)?;
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let mut created = false;
    let mut last_problem = String::new();
    loop {
        if Instant::now() > deadline {
            bail!("topic {topic} not ready after {TOPIC_READY_TIMEOUT:?}: {last_problem}");
        }
        let mut req = MetadataRequest::default();
        let mut t = MetadataRequestTopic::default();
        t.name = Some(topic_name(topic));
        req.topics = Some(vec![t]);
        req.allow_auto_topic_creation = false;
        let ResponseKind::Metadata(m) = c.call(ApiKey::Metadata, mv, RequestKind::Metadata(req))?
        else {
            bail!("Metadata answered with another response kind");
        };
        let brokers: HashMap<i32, String> = m
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let Some(t) = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        else {
            bail!("Metadata response does not mention topic {topic}");
        };
        match t.error_code {
            0 => {}
            ERR_UNKNOWN_TOPIC_OR_PARTITION if create && !created => {
                create_topic(c, topic, partitions)?;
                created = true;
                continue;
            }
            ERR_UNKNOWN_TOPIC_OR_PARTITION if !create => {
                bail!("topic {topic} does not exist")
            }
            code => {
                last_problem = format!("metadata says {}", error_name(code));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut leaders = vec![String::new(); t.partitions.len()];
        let mut ready = !t.partitions.is_empty();
        for p in &t.partitions {
            let idx = p.partition_index as usize;
            if idx >= leaders.len() {
                bail!("partition index {idx} out of range in metadata for {topic}");
            }
            match brokers.get(&p.leader_id.0) {
                Some(a) if p.error_code == 0 => leaders[idx] = a.clone(),
                _ => {
                    ready = false;
                    last_problem = format!(
                        "partition {idx} has leader {} ({})",
                        p.leader_id.0,
                        error_name(p.error_code)
                    );
                }
            }
        }
        if !ready {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if (leaders.len() as i32) < partitions && !created {
            eprintln!(
                "loadtest: topic {topic} exists with {} partitions (asked for {partitions}); using those",
                leaders.len()
            );
        }
        return Ok(TopicLayout {
            name: topic.to_string(),
            leaders,
        });
    }
}

fn create_topic(c: &mut SyncClient, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let v = c.apis.pick(
        ApiKey::CreateTopics,
        CREATE_TOPICS_VERSION_MIN,
        CREATE_TOPICS_VERSION_MAX,
    )?;
    let mut t = CreatableTopic::default();
    t.name = topic_name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let ResponseKind::CreateTopics(r) =
        c.call(ApiKey::CreateTopics, v, RequestKind::CreateTopics(req))?
    else {
        bail!("CreateTopics answered with another response kind");
    };
    for t in &r.topics {
        if t.error_code != 0 && t.error_code != ERR_TOPIC_ALREADY_EXISTS {
            bail!(
                "creating topic {topic}: {}{}",
                error_name(t.error_code),
                t.error_message
                    .as_ref()
                    .map(|m| format!(": {}", m.as_str()))
                    .unwrap_or_default()
            );
        }
    }
    eprintln!("loadtest: created topic {topic} with {partitions} partitions");
    Ok(())
}

/// Error codes after which a setup request is worth repeating: a new topic's partitions take a
/// moment to get a leader that serves them.
const RETRIABLE: &[i16] = &[3, 5, 6, 7, 74, 75];

/// Earliest (`latest == false`) or latest offset of each of `partitions`, asked of `addr`.
/// Retries retriable errors for up to `TOPIC_READY_TIMEOUT`.
pub fn list_offsets(
    addr: &str,
    topic: &str,
    partitions: &[i32],
    latest: bool,
) -> anyhow::Result<Vec<i64>> {
    let mut c = SyncClient::connect(addr)?;
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        match list_offsets_once(&mut c, topic, partitions, latest)? {
            Ok(offsets) => return Ok(offsets),
            Err((p, code)) if RETRIABLE.contains(&code) && Instant::now() < deadline => {
                log_retry(topic, p, code);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((p, code)) => bail!("ListOffsets for {topic}/{p}: {}", error_name(code)),
        }
    }
}

fn log_retry(topic: &str, p: i32, code: i16) {
    eprintln!(
        "loadtest: ListOffsets for {topic}/{p}: {}; retrying",
        error_name(code)
    );
}

/// One ListOffsets round trip: the offsets, or the first partition error.
fn list_offsets_once(
    c: &mut SyncClient,
    topic: &str,
    partitions: &[i32],
    latest: bool,
) -> anyhow::Result<Result<Vec<i64>, (i32, i16)>> {
    let v = c.apis.pick(
        ApiKey::ListOffsets,
        LIST_OFFSETS_VERSION_MIN,
        LIST_OFFSETS_VERSION_MAX,
    )?;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions = partitions
        .iter()
        .map(|&p| {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.current_leader_epoch = -1;
            lp.timestamp = if latest { -1 } else { -2 };
            lp
        })
        .collect();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let ResponseKind::ListOffsets(r) =
        c.call(ApiKey::ListOffsets, v, RequestKind::ListOffsets(req))?
    else {
        bail!("ListOffsets answered with another response kind");
    };
    let mut out = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let found = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|x| x.partition_index == p)
            .ok_or_else(|| anyhow!("ListOffsets response lacks partition {p}"))?;
        if found.error_code != 0 {
            return Ok(Err((p, found.error_code)));
        }
        out.push(found.offset);
    }
    Ok(Ok(out))
}
