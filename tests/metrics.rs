//! `/metrics` on `--metrics-listen`, against the real `kelp` binary: real Kafka requests, then
//! scrapes checked line by line. Nothing sleeps for a fixed time: conditions that settle after
//! an answer (a connection closing) are polled with a deadline.
//!
//! Run: `cargo test --release --test metrics`

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kelp::protocol::batch::tests_support::build_batch;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a condition that follows from something already done may take to show.
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// HTTP and the exposition format.

struct Http {
    status: u16,
    headers: String,
    body: String,
}

/// Sends `request` raw and reads the answer to EOF (kelp closes every connection).
fn http_raw(addr: &str, request: &[u8]) -> Http {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).expect("send HTTP request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read HTTP answer to EOF");
    let text = String::from_utf8(raw).expect("HTTP answer is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of HTTP head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert_eq!(length, body.len(), "Content-Length against the body read");
    Http {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

fn http_get(addr: &str, path: &str) -> Http {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses one sample line, `name{k="v",...} value` or `name value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no space before the value")?;
    let name = &line[..name_end];
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (k, r) = rest.split_once("=\"").ok_or("label without =\"")?;
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {k:?}"));
            }
            let (v, r) = r.split_once('"').ok_or("unterminated label value")?;
            labels.insert(k.to_string(), v.to_string());
            rest = r.strip_prefix(',').unwrap_or(r);
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

struct Scrape {
    samples: Vec<Sample>,
    text: String,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            assert!(!line.is_empty(), "empty line in the exposition");
            match parse_sample(line) {
                Ok(s) => samples.push(s),
                Err(e) => panic!("line {line:?} does not parse: {e}"),
            }
        }
        Scrape { samples, text }
    }

    /// Sum of `name` over the series whose labels include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn api(&self, name: &str, api: &str) -> f64 {
        self.sum(name, &[("api", api)])
    }

    /// Every histogram series: buckets in increasing `le`, cumulative, ending in +Inf equal to
    /// `_count`, which equals the series' `kelp_requests_total`.
    fn check_histograms(&self) {
        let mut by_series: BTreeMap<(String, String), Vec<&Sample>> = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == "kelp_request_duration_seconds_bucket")
        {
            by_series
                .entry((s.labels["shard"].clone(), s.labels["api"].clone()))
                .or_default()
                .push(s);
        }
        let requests = self
            .samples
            .iter()
            .filter(|s| s.name == "kelp_requests_total")
            .count();
        assert_eq!(
            by_series.len(),
            requests,
            "one histogram per requests series"
        );
        for ((shard, api), buckets) in by_series {
            let want = [("shard", shard.as_str()), ("api", api.as_str())];
            let les: Vec<f64> = buckets
                .iter()
                .map(|b| match b.labels["le"].as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap_or_else(|_| panic!("bad le {le:?}")),
                })
                .collect();
            assert!(
                les.windows(2).all(|w| w[0] < w[1]),
                "le not increasing for {want:?}: {les:?}"
            );
            assert_eq!(les.last(), Some(&f64::INFINITY), "last bucket of {want:?}");
            assert!(
                les[0] <= 10e-6 && les[les.len() - 2] >= 10.0,
                "buckets of {want:?} do not span 10 us .. 10 s: {les:?}"
            );
            let counts: Vec<f64> = buckets.iter().map(|b| b.value).collect();
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "buckets of {want:?} are not cumulative: {counts:?}"
            );
            let count = self.sum("kelp_request_duration_seconds_count", &want);
            assert_eq!(
                counts.last(),
                Some(&count),
                "+Inf bucket vs _count of {want:?}"
            );
            assert_eq!(
                count,
                self.sum("kelp_requests_total", &want),
                "_count vs kelp_requests_total of {want:?}"
            );
            assert!(self.sum("kelp_request_duration_seconds_sum", &want) > 0.0);
        }
    }
}

fn scrape(addr: &str) -> Scrape {
    let r = http_get(addr, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.headers);
    let ct = header(&r.headers, "content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "Content-Type {ct:?}"
    );
    assert_eq!(
        header(&r.headers, "connection").map(str::to_ascii_lowercase),
        Some("close".into())
    );
    Scrape::parse(r.body)
}

/// Scrapes until `ok` holds, or fails after [`SETTLE`] showing the last scrape.
fn scrape_until(addr: &str, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = scrape(addr);
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {SETTLE:?}; last scrape:\n{}",
            s.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connections(s: &Scrape) -> f64 {
    s.sum("kelp_connections", &[])
}

/// kelp on two shards with metrics on a free port; returns it with the metrics address, once
/// the start-up probe connection is gone.
fn start(test: &str) -> (Kelp, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let k = Kelp::start_with(test, &["--shards", "2", "--metrics-listen", &metrics]);
    scrape_until(&metrics, "no connection open after start-up", |s| {
        connections(s) == 0.0
    });
    (k, metrics)
}

// ---------------------------------------------------------------------------------------------
// Kafka requests.

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(s: &mut (impl Read + Write), corr: i32, name: &str, partitions: i32) {
    let mut t = CreatableTopic::default();
    t.name = topic_name(name);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let resp = call(s, 5, corr, &req);
    assert_eq!(resp.topics[0].error_code, 0, "CreateTopics {name}");
}

fn metadata(s: &mut TcpStream, corr: i32, name: &str) -> i16 {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name(name));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = false;
    call(s, 9, corr, &req).topics[0].error_code
}

/// Produces one record to `partition` with acks=1; returns the partition's error code.
fn produce(s: &mut TcpStream, corr: i32, name: &str, partition: i32) -> i16 {
    produce_at(s, corr, name, partition).0
}

/// Produces one record to `partition` with acks=1; returns the error code and base offset.
fn produce_at(s: &mut (impl Read + Write), corr: i32, name: &str, partition: i32) -> (i16, i64) {
    let batch = build_batch(&[(b"key", b"a metrics test record")], 1_700_000_000_000);
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(batch));
    let mut t = TopicProduceData::default();
    t.name = topic_name(name);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    let resp = call(s, 9, corr, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Fetches `partition` from offset 0 without waiting; returns its error code.
fn fetch(s: &mut TcpStream, corr: i32, name: &str, partition: i32) -> i16 {
    fetch_hwm(s, corr, name, partition).0
}

/// Fetches `partition` from offset 0 without waiting; returns its error code and high-water
/// mark.
fn fetch_hwm(s: &mut (impl Read + Write), corr: i32, name: &str, partition: i32) -> (i16, i64) {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = topic_name(name);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 1 << 20;
    req.session_epoch = -1;
    req.topics = vec![t];
    let resp = call(s, 12, corr, &req);
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.high_watermark)
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// A connection whose produce requests all go to a partition of the other shard moves to that
/// shard (`kelp_connections_moved_in_total`), and nothing it sent is lost or reordered: offsets
/// stay consecutive on both partitions across the move, and read back in full.
#[test]
fn a_connection_moves_to_the_shard_that_owns_its_partition() {
    let (k, m) = start("handoff");
    let mut s = k.connect();
    moves_to_the_owner(&mut s, &m, "handoff");
    drop(s);
    scrape_until(&m, "the moved connection closed", |s| connections(s) == 0.0);
}

/// A TLS connection moves the same way, its session with it: what it sends after the move
/// goes on through the same session (no new handshake), and nothing is lost or reordered.
#[test]
fn a_tls_connection_moves_to_the_owner_with_its_session() {
    let tls = tls_files("handoff-tls");
    let metrics = format!("127.0.0.1:{}", free_port());
    let (cert, key) = (tls.cert.to_str().unwrap(), tls.key.to_str().unwrap());
    let args = [
        "--shards",
        "2",
        "--metrics-listen",
        &metrics,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    let k = Kelp::start_on("handoff-tls", "SSL", &args);
    scrape_until(&metrics, "no connection open after start-up", |s| {
        connections(s) == 0.0
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(tls.client, name).unwrap();
    let mut s = rustls::StreamOwned::new(session, k.connect());
    moves_to_the_owner(&mut s, &metrics, "handoff-tls");
    assert_eq!(
        s.conn.peer_certificates().map(<[_]>::len),
        Some(1),
        "still the one TLS session"
    );
    drop(s);
    scrape_until(&metrics, "the moved connection closed", |s| {
        connections(s) == 0.0
    });
}

/// A self-signed certificate for "localhost" in PEM files, and a client that trusts it.
struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client: std::sync::Arc<rustls::ClientConfig>,
}

fn tls_files(test: &str) -> TlsFiles {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(kelp::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsFiles {
        cert,
        key,
        client: std::sync::Arc::new(client),
    }
}

/// Produces runs of records to a partition of each shard on one connection (one of the runs
/// goes to the shard the connection is not on) and checks the move and the records.
fn moves_to_the_owner(s: &mut (impl Read + Write), m: &str, topic: &str) {
    create_topic(s, 1, topic, 8);
    let owner = |p| kelp::shard::shard_for_partition(topic, p, 2);
    let on_0 = (0..8)
        .find(|&p| owner(p) == 0)
        .expect("a partition of shard 0");
    let on_1 = (0..8)
        .find(|&p| owner(p) == 1)
        .expect("a partition of shard 1");
    // The kernel gave the connection to one of the two shards; one of these runs of requests
    // goes to the other one.
    let n = 2 * i64::from(kelp::config::limits::CONNECTION_HANDOFF_STREAK);
    let mut corr = 2;
    for p in [on_0, on_1] {
        for expected in 0..n {
            corr += 1;
            let (code, base) = produce_at(s, corr, topic, p);
            assert_eq!(
                (code, base),
                (0, expected),
                "produce {corr} to partition {p}"
            );
        }
    }
    let after = scrape(m);
    let moved = after.sum("kelp_connections_moved_in_total", &[]);
    // A second move (back) may follow once CONNECTION_HANDOFF_INTERVAL_MS has passed.
    assert!((1.0..=2.0).contains(&moved), "moves: {moved}");
    assert_eq!(connections(&after), 1.0, "the moved connection counts once");
    for p in [on_0, on_1] {
        corr += 1;
        assert_eq!(fetch_hwm(s, corr, topic, p), (0, n), "partition {p}");
    }
}

#[test]
fn requests_bytes_latency_connections_and_partitions_are_counted() {
    let (k, m) = start("counted");
    let before = scrape(&m);
    let apis = [
        "ApiVersions",
        "CreateTopics",
        "Metadata",
        "Produce",
        "Fetch",
    ];

    let mut s = k.connect();
    for corr in 1..=3 {
        let r = api_versions_v0(&mut s, corr).expect("ApiVersions v0");
        assert_eq!(r.error_code, 0);
    }
    create_topic(&mut s, 10, "metrics-a", 4);
    create_topic(&mut s, 11, "metrics-b", 3);
    assert_eq!(metadata(&mut s, 20, "metrics-a"), 0);
    assert_eq!(metadata(&mut s, 21, "metrics-b"), 0);
    for (i, p) in [0, 1, 2, 3, 0].into_iter().enumerate() {
        assert_eq!(
            produce(&mut s, 30 + i as i32, "metrics-a", p),
            0,
            "produce to {p}"
        );
    }
    assert_eq!(fetch(&mut s, 40, "metrics-a", 0), 0);
    // A partition the topic does not have.
    assert_ne!(produce(&mut s, 50, "metrics-a", 99), 0);
    assert_ne!(fetch(&mut s, 51, "metrics-a", 99), 0);

    let open = scrape(&m);
    assert_eq!(connections(&open), 1.0, "connections while one is open");
    let sent = [
        ("ApiVersions", 3.0, 0.0),
        ("CreateTopics", 2.0, 0.0),
        ("Metadata", 2.0, 0.0),
        ("Produce", 6.0, 1.0),
        ("Fetch", 2.0, 1.0),
    ];
    for (api, requests, errors) in sent {
        let delta = |name: &str| open.api(name, api) - before.api(name, api);
        assert_eq!(delta("kelp_requests_total"), requests, "{api} requests");
        assert_eq!(delta("kelp_request_errors_total"), errors, "{api} errors");
        assert!(
            delta("kelp_request_bytes_total") > 0.0,
            "{api} request bytes"
        );
        assert!(
            delta("kelp_response_bytes_total") > 0.0,
            "{api} response bytes"
        );
        assert_eq!(
            delta("kelp_request_duration_seconds_count"),
            requests,
            "{api} histogram count"
        );
    }
    // Each request frame is at least its 4-byte size and 8-byte header.
    assert!(open.api("kelp_request_bytes_total", "ApiVersions") >= 3.0 * 12.0);
    for s in open
        .samples
        .iter()
        .filter(|s| s.name == "kelp_requests_total")
    {
        assert!(
            apis.contains(&s.labels["api"].as_str()),
            "requests of an API not sent: {s:?}"
        );
    }
    open.check_histograms();
    assert_eq!(
        open.sum("kelp_partitions", &[]),
        7.0,
        "partitions over shards"
    );
    assert_eq!(
        open.samples
            .iter()
            .filter(|s| s.name == "kelp_partitions")
            .count(),
        2,
        "one partitions gauge per shard"
    );
    assert_eq!(open.sum("kelp_topics", &[]), 2.0);
    let build = open
        .samples
        .iter()
        .find(|s| s.name == "kelp_build_info")
        .expect("kelp_build_info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        open.sum("kelp_connections_accepted_total", &[])
            > before.sum("kelp_connections_accepted_total", &[])
    );
    for name in [
        "kelp_requests_total",
        "kelp_request_errors_total",
        "kelp_request_bytes_total",
        "kelp_response_bytes_total",
        "kelp_request_duration_seconds",
        "kelp_connections",
        "kelp_connections_accepted_total",
        "kelp_connections_refused_total",
        "kelp_partitions",
        "kelp_topics",
        "kelp_build_info",
    ] {
        assert!(
            open.text.contains(&format!("# HELP {name} ")),
            "HELP {name}"
        );
        assert!(
            open.text.contains(&format!("# TYPE {name} ")),
            "TYPE {name}"
        );
    }

    drop(s);
    let closed = scrape_until(&m, "connections back to 0 after closing", |s| {
        connections(s) == 0.0
    });
    // Nothing was counted twice or late.
    for (api, requests, _) in sent {
        assert_eq!(
            closed.api("kelp_requests_total", api) - before.api("kelp_requests_total", api),
            requests,
            "{api} requests after closing"
        );
    }
}

#[test]
fn undecodable_requests_count_as_errors_and_refused_connections_are_counted() {
    let (k, m) = start("undecodable");
    let before = scrape(&m);
    // An API key kelp does not serve: counted under api="Unknown", connection closed.
    let mut s = k.connect();
    write_ignoring_close(&mut s, &frame(&header_v1(9999, 0, 1, "metrics-test")));
    assert_closed_by_kelp(&mut s, "api key 9999");
    // A Metadata v1 header with a body cut short.
    let mut s = k.connect();
    let mut req = header_v1(3, 1, 2, "metrics-test");
    req.extend_from_slice(&[0, 0]);
    write_ignoring_close(&mut s, &frame(&req));
    assert_closed_by_kelp(&mut s, "truncated Metadata v1 body");

    let after = scrape_until(&m, "connections closed", |s| connections(s) == 0.0);
    for api in ["Unknown", "Metadata"] {
        let delta = |name: &str| after.api(name, api) - before.api(name, api);
        assert_eq!(delta("kelp_requests_total"), 1.0, "{api} requests");
        assert_eq!(delta("kelp_request_errors_total"), 1.0, "{api} errors");
        assert_eq!(
            delta("kelp_response_bytes_total"),
            0.0,
            "{api} response bytes"
        );
    }
    after.check_histograms();
    drop(k);

    // With --max-connections 1 a second connection is refused and counted.
    let metrics = format!("127.0.0.1:{}", free_port());
    let k = Kelp::start_with(
        "refused",
        &["--max-connections", "1", "--metrics-listen", &metrics],
    );
    // The probe must have been accepted (a shard may not have taken it yet when the gauge
    // first reads 0) and closed again before the slot is free.
    scrape_until(&metrics, "start-up probe accepted and gone", |s| {
        s.sum("kelp_connections_accepted_total", &[]) >= 1.0 && connections(s) == 0.0
    });
    let mut first = k.connect();
    api_versions_v0(&mut first, 1).expect("the first connection is served");
    let mut second = k.connect();
    assert_closed_by_kelp(&mut second, "a connection over --max-connections");
    let s = scrape(&metrics);
    assert_eq!(s.sum("kelp_connections_refused_total", &[]), 1.0);
    assert_eq!(connections(&s), 1.0);
}

#[test]
fn other_paths_methods_and_oversized_heads_are_refused_and_a_silent_client_is_cut_off() {
    let (_k, m) = start("http");
    assert_eq!(http_get(&m, "/nope").status, 404);
    assert_eq!(http_get(&m, "/").status, 404);
    assert_eq!(http_get(&m, "/metrics?name[]=x").status, 200);
    let post = http_raw(
        &m,
        format!("POST /metrics HTTP/1.1\r\nHost: {m}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(post.status, 405);
    let mut huge = format!("GET /metrics HTTP/1.1\r\nHost: {m}\r\nX-Pad: ").into_bytes();
    huge.resize(64 * 1024, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    // kelp stops reading at its limit and answers; the rest of the write may be refused.
    let mut s = TcpStream::connect(&m).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.write_all(&huge);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "oversized head: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );

    // A client that connects and says nothing is dropped after the deadline; scrapes go on.
    let mut silent = TcpStream::connect(&m).unwrap();
    silent.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let started = Instant::now();
    scrape(&m);
    assert!(
        started.elapsed() < SETTLE,
        "a scrape behind a silent client took {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the silent client gets no answer, only a close");
}

#[test]
fn a_taken_metrics_address_stops_kelp_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &taken_addr])
        .stdin(Stdio::null())
        .output()
        .expect("run kelp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {taken_addr}")),
        "stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
}

#[test]
fn sigterm_with_a_silent_scraper_still_exits_zero_within_five_seconds() {
    let (mut k, m) = start("sigterm");
    let mut s = k.connect();
    api_versions_v0(&mut s, 1).expect("ApiVersions before shutdown");
    scrape(&m);
    // Holds the metrics thread inside a request until its deadline.
    let _silent = TcpStream::connect(&m).unwrap();
    let started = Instant::now();
    k.signal(15);
    let status = loop {
        if let Some(status) = k.child.try_wait().expect("waiting for kelp") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "kelp still running 5 s after SIGTERM\n{}",
            k.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "kelp exited with {status} after SIGTERM");
    assert!(
        TcpStream::connect(&m).is_err(),
        "the metrics address still accepts after kelp exited"
    );
}
