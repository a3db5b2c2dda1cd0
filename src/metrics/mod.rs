//! Metrics in the Prometheus text format, served on `--metrics-listen` by [`http`].
//!
//! Each shard has its own block of counters ([`ShardMetrics`]), written only by that shard's
//! thread and read by the `/metrics` thread. With a single writer a counter is bumped with a
//! relaxed load and store (a plain `mov` on x86, no locked instruction), and the blocks are
//! 128-byte aligned so that no two shards' counters share a cache line. Nothing on the request
//! path locks, allocates or touches another core's memory. The blocks live as long as the
//! process (they are leaked once at start-up), so the hot path holds a `&'static` and pays no
//! reference counting.
//!
//! A scrape reads every counter once; counters written while it runs may or may not be in it
//! (as with any Prometheus client), but each histogram is consistent with itself: its count is
//! the sum of the buckets it printed, and `kelp_requests_total` is that same sum.

pub mod http;

use crate::protocol::SUPPORTED_APIS;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Finite latency buckets: upper bounds of 8 us x 2^k, k = 0..=21 (8 us to 16.8 s), then +Inf.
pub const DURATION_BUCKETS: usize = 22;
const BUCKET_BASE_NS: u64 = 8_000;

/// One slot per served API (their order in `SUPPORTED_APIS`), plus one for frames whose API key
/// kelp does not serve (counted as failed requests of api="Unknown").
const API_SLOTS: usize = SUPPORTED_APIS.len() + 1;
const UNKNOWN_SLOT: usize = SUPPORTED_APIS.len();
/// API keys below this are looked up in [`SLOT_OF_KEY`]; the rest are unknown.
const KEY_TABLE_LEN: usize = 128;

const SLOT_OF_KEY: [u8; KEY_TABLE_LEN] = {
    let mut t = [UNKNOWN_SLOT as u8; KEY_TABLE_LEN];
    let mut i = 0;
    while i < SUPPORTED_APIS.len() {
        t[SUPPORTED_APIS[i].0 as i16 as usize] = i as u8;
        i += 1;
    }
    t
};

/// The metrics slot of a raw API key.
fn slot_of(key: i16) -> usize {
    if (0..KEY_TABLE_LEN as i16).contains(&key) {
        SLOT_OF_KEY[key as usize] as usize
    } else {
        UNKNOWN_SLOT
    }
}

/// The slot of the request in `frame` (without its size prefix), from the API key in its first
/// two bytes.
pub fn slot_of_frame(frame: &[u8]) -> usize {
    match frame {
        [a, b, ..] => slot_of(i16::from_be_bytes([*a, *b])),
        _ => UNKNOWN_SLOT,
    }
}

/// The histogram bucket of a duration: the first whose bound is at or above it.
fn bucket_of(ns: u64) -> usize {
    let q = ns.saturating_sub(1) / BUCKET_BASE_NS;
    ((u64::BITS - q.leading_zeros()) as usize).min(DURATION_BUCKETS)
}

/// A counter or gauge with exactly one writing thread (see the module docs).
#[derive(Default)]
struct Cell64(AtomicU64);

impl Cell64 {
    /// Only the owning shard calls this: a load and a store, not a locked read-modify-write.
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The counters of one API on one shard. The request count is the sum of the buckets.
#[derive(Default)]
struct ApiMetrics {
    errors: Cell64,
    bytes_in: Cell64,
    bytes_out: Cell64,
    duration_ns: Cell64,
    buckets: [Cell64; DURATION_BUCKETS + 1],
}

/// Everything one shard counts. Written only by that shard's thread.
#[repr(align(128))]
pub struct ShardMetrics {
    apis: [ApiMetrics; API_SLOTS],
    connections: Cell64,
    connections_accepted: Cell64,
    connections_refused: Cell64,
    sasl_failures: Cell64,
    connections_moved_in: Cell64,
    partitions: Cell64,
    topics: Cell64,
    /// SeaweedMQ: partitions this shard leads, groups it coordinates.
    partitions_led: Cell64,
    groups: Cell64,
    /// Shard 0, in a cluster: live members, and when the lease was last renewed (wall-clock
    /// milliseconds; 0: never).
    cluster_members: Cell64,
    lease_renewed_ms: Cell64,
    /// Shard 0: how often the shards stopped spinning because their cores were shared, and
    /// whether they park when idle now.
    spin_backoffs: Cell64,
    spin_backed_off: Cell64,
    /// The core the shard is pinned to.
    core: Cell64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: std::array::from_fn(|_| ApiMetrics::default()),
            connections: Cell64::default(),
            connections_accepted: Cell64::default(),
            connections_refused: Cell64::default(),
            sasl_failures: Cell64::default(),
            connections_moved_in: Cell64::default(),
            partitions: Cell64::default(),
            topics: Cell64::default(),
            partitions_led: Cell64::default(),
            groups: Cell64::default(),
            cluster_members: Cell64::default(),
            lease_renewed_ms: Cell64::default(),
            spin_backoffs: Cell64::default(),
            spin_backed_off: Cell64::default(),
            core: Cell64::default(),
        }
    }
}

impl ShardMetrics {
    fn record(&self, slot: usize, bytes_in: u64, bytes_out: u64, ns: u64, error: bool) {
        let a = &self.apis[slot];
        a.buckets[bucket_of(ns)].add(1);
        a.duration_ns.add(ns);
        a.bytes_in.add(bytes_in);
        a.bytes_out.add(bytes_out);
        if error {
            a.errors.add(1);
        }
    }

    /// A connection was accepted; `open` is how many this shard serves now.
    pub fn connection_accepted(&self, open: usize) {
        self.connections_accepted.add(1);
        self.connections.set(open as u64);
    }

    /// The core the shard runs on (set once, at start).
    pub fn set_core(&self, core: usize) {
        self.core.set(core as u64);
    }

    /// Shard 0: the shards' spin backoffs so far, and whether they are backed off now.
    pub fn set_spin(&self, backoffs: u64, backed_off: bool) {
        self.spin_backoffs.set(backoffs);
        self.spin_backed_off.set(backed_off as u64);
    }

    /// A connection another shard handed over; `open` is how many this shard serves now.
    pub fn connection_moved_in(&self, open: usize) {
        self.connections_moved_in.add(1);
        self.connections.set(open as u64);
    }

    pub fn connection_refused(&self) {
        self.connections_refused.add(1);
    }

    /// A SASL login failed (wrong password, unknown user, malformed exchange).
    pub fn sasl_failure(&self) {
        self.sasl_failures.add(1);
    }

    /// A connection closed; `open` is how many this shard serves now.
    pub fn connection_closed(&self, open: usize) {
        self.connections.set(open as u64);
    }

    /// SeaweedMQ: the shard leads `partitions` and coordinates `groups`.
    pub fn set_led(&self, partitions: usize, groups: usize) {
        self.partitions_led.set(partitions as u64);
        self.groups.set(groups as u64);
    }

    /// Shard 0 in a cluster: `members` live, the lease last renewed at `renewed_ms` (wall
    /// clock; 0: not held).
    pub fn set_cluster(&self, members: usize, renewed_ms: i64) {
        self.cluster_members.set(members as u64);
        self.lease_renewed_ms.set(renewed_ms.max(0) as u64);
    }

    /// This shard installed a topic table: it owns `partitions` of its `topics`.
    pub fn set_ownership(&self, partitions: usize, topics: usize) {
        self.partitions.set(partitions as u64);
        self.topics.set(topics as u64);
    }
}

/// Times one request from the moment its frame is taken off the read buffer. It records when
/// dropped: as finished with [`RequestTimer::finish`], or else as failed (the request could not
/// be decoded, or its connection closed before it was answered).
pub struct RequestTimer {
    metrics: &'static ShardMetrics,
    slot: usize,
    bytes_in: usize,
    started: Instant,
    bytes_out: usize,
    error: bool,
}

impl RequestTimer {
    /// `bytes_in` is the frame's size on the wire (size prefix included).
    pub fn start(metrics: &'static ShardMetrics, slot: usize, bytes_in: usize) -> RequestTimer {
        RequestTimer {
            metrics,
            slot,
            bytes_in,
            started: Instant::now(),
            bytes_out: 0,
            error: true,
        }
    }

    /// The request was answered with a `bytes_out`-byte frame (0: no frame, acks=0).
    pub fn finish(mut self, bytes_out: usize, error: bool) {
        self.bytes_out = bytes_out;
        self.error = error;
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let ns = self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.metrics.record(
            self.slot,
            self.bytes_in as u64,
            self.bytes_out as u64,
            ns,
            self.error,
        );
    }
}

/// The metrics of every shard.
pub struct Metrics {
    shards: Box<[ShardMetrics]>,
    /// The SeaweedMQ publishers' counters, once the backend's gRPC core runs.
    seaweedmq: std::sync::OnceLock<std::sync::Arc<crate::seaweedmq::PublishStats>>,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            seaweedmq: std::sync::OnceLock::new(),
        }
    }

    /// Adds the SeaweedMQ publishers' counters to what `/metrics` shows.
    pub fn set_seaweedmq(&self, stats: std::sync::Arc<crate::seaweedmq::PublishStats>) {
        let _ = self.seaweedmq.set(stats);
    }

    /// One set per process: the shards and the `/metrics` thread keep `&'static`s to it.
    pub fn leak(self) -> &'static Metrics {
        Box::leak(Box::new(self))
    }

    pub fn shard(&self, id: usize) -> &ShardMetrics {
        &self.shards[id]
    }

    /// Writes every metric in the Prometheus text format (0.0.4). A (shard, API) pair appears
    /// from its first request on, as labelled series do in Prometheus client libraries.
    pub fn render(&self, out: &mut String) {
        let names = api_names();
        // Read each (shard, API) once so that all families print the same numbers.
        let rows = self.read_rows(&names);
        render_per_api(out, &rows);
        render_durations(out, &rows);
        self.render_per_shard(out);
        self.render_seaweedmq(out);
        header(
            out,
            "kelp_build_info",
            "Always 1; the version label is kelp's.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "kelp_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
    }

    /// Every (shard, API) pair that has served a request, each counter read once.
    fn read_rows<'a>(&self, names: &'a [String]) -> Vec<Row<'a>> {
        let mut rows = Vec::new();
        for (shard, m) in self.shards.iter().enumerate() {
            for (slot, a) in m.apis.iter().enumerate() {
                let buckets: [u64; DURATION_BUCKETS + 1] =
                    std::array::from_fn(|i| a.buckets[i].get());
                let count = buckets.iter().sum();
                if count == 0 {
                    continue;
                }
                rows.push(Row {
                    shard,
                    api: &names[slot],
                    buckets,
                    count,
                    errors: a.errors.get(),
                    bytes_in: a.bytes_in.get(),
                    bytes_out: a.bytes_out.get(),
                    duration_ns: a.duration_ns.get(),
                });
            }
        }
        rows
    }

    fn render_per_shard(&self, out: &mut String) {
        let per_shard: [(&str, &str, &str, ShardValue); 7] = [
            (
                "kelp_connections",
                "Client connections the shard serves now.",
                "gauge",
                |m| m.connections.get(),
            ),
            (
                "kelp_connections_accepted_total",
                "Client connections the shard accepted and served.",
                "counter",
                |m| m.connections_accepted.get(),
            ),
            (
                "kelp_connections_refused_total",
                "Client connections the shard closed on accept because --max-connections was \
                 reached.",
                "counter",
                |m| m.connections_refused.get(),
            ),
            (
                "kelp_sasl_authentication_failures_total",
                "SASL logins that failed on the shard's connections (wrong password, unknown \
                 user, malformed exchange).",
                "counter",
                |m| m.sasl_failures.get(),
            ),
            (
                "kelp_connections_moved_in_total",
                "Client connections another shard handed to this one, because this one owns \
                 the partitions they use.",
                "counter",
                |m| m.connections_moved_in.get(),
            ),
            (
                "kelp_partitions",
                "Partitions the shard owns.",
                "gauge",
                |m| m.partitions.get(),
            ),
            (
                "kelp_shard_core",
                "The CPU core the shard is pinned to (while its spinning is backed off it may \
                 also run on kelp's other cores).",
                "gauge",
                |m| m.core.get(),
            ),
        ];
        for (name, help, kind, value) in per_shard {
            header(out, name, help, kind);
            for (shard, m) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(m));
            }
        }
        // Every shard holds the same table once a change is acknowledged; shard 0 holds the
        // registry, so its copy is never behind.
        header(out, "kelp_topics", "Topics the broker holds.", "gauge");
        let topics = self.shards.first().map_or(0, |m| m.topics.get());
        let _ = writeln!(out, "kelp_topics {topics}");
        // Process-wide, kept by shard 0 (`shard::spin`).
        let first = self.shards.first();
        header(
            out,
            "kelp_spin_backoffs_total",
            "Times the shards stopped busy-polling because one waited for a core (the cores are \
             shared; see --dedicated-cores).",
            "counter",
        );
        let backoffs = first.map_or(0, |m| m.spin_backoffs.get());
        let _ = writeln!(out, "kelp_spin_backoffs_total {backoffs}");
        header(
            out,
            "kelp_spin_backed_off",
            "1 while the shards park when idle instead of busy-polling, their cores shared.",
            "gauge",
        );
        let now = first.map_or(0, |m| m.spin_backed_off.get());
        let _ = writeln!(out, "kelp_spin_backed_off {now}");
    }

    /// Who leads what, and the cluster as shard 0 sees it (SeaweedMQ backend).
    fn render_cluster(&self, out: &mut String) {
        let per_shard: [(&str, &str, ShardValue); 2] = [
            (
                "kelp_partitions_led",
                "SeaweedMQ partitions the shard leads now (this instance's share of the cluster's).",
                |m| m.partitions_led.get(),
            ),
            (
                "kelp_groups",
                "Consumer groups the shard coordinates now.",
                |m| m.groups.get(),
            ),
        ];
        for (name, help, value) in per_shard {
            header(out, name, help, "gauge");
            for (shard, m) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(m));
            }
        }
        let Some(first) = self.shards.first() else {
            return;
        };
        let renewed = first.lease_renewed_ms.get();
        if renewed == 0 && first.cluster_members.get() == 0 {
            return;
        }
        header(
            out,
            "kelp_cluster_members",
            "Live kelp instances in this one's cluster view (itself included).",
            "gauge",
        );
        let _ = writeln!(out, "kelp_cluster_members {}", first.cluster_members.get());
        header(
            out,
            "kelp_cluster_lease_age_seconds",
            "Seconds since this instance last renewed its membership lease in the filer (it \
             stops serving at half the lease).",
            "gauge",
        );
        let age = (crate::util::now_ms().max(0) as u64).saturating_sub(renewed);
        let _ = writeln!(
            out,
            "kelp_cluster_lease_age_seconds {:.3}",
            age as f64 / 1000.0
        );
    }

    fn render_seaweedmq(&self, out: &mut String) {
        let Some(stats) = self.seaweedmq.get() else {
            return;
        };
        self.render_cluster(out);
        let (sends, records) = stats.read();
        header(
            out,
            "kelp_seaweedmq_publish_sends_total",
            "Times a SeaweedMQ publisher handed records to its stream at once (one write).",
            "counter",
        );
        let _ = writeln!(out, "kelp_seaweedmq_publish_sends_total {sends}");
        header(
            out,
            "kelp_seaweedmq_published_records_total",
            "Records sent to SeaweedMQ (one DataMessage each; resends included).",
            "counter",
        );
        let _ = writeln!(out, "kelp_seaweedmq_published_records_total {records}");
        header(
            out,
            "kelp_seaweedmq_fenced_partitions",
            "SeaweedMQ partitions kelp refuses to write to or read from because their log lost \
             records the broker had acknowledged, or the broker numbered a record below one it \
             had acknowledged (the log names each; fences last until kelp restarts).",
            "gauge",
        );
        let fenced = stats
            .fenced_partitions
            .load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "kelp_seaweedmq_fenced_partitions {fenced}");
    }
}

/// The `api` label of each metrics slot: the served APIs, then `Unknown`.
fn api_names() -> Vec<String> {
    SUPPORTED_APIS
        .iter()
        .map(|(k, _, _)| format!("{k:?}"))
        .chain(std::iter::once("Unknown".to_string()))
        .collect()
}

fn render_per_api(out: &mut String, rows: &[Row]) {
    let per_api: [(&str, &str, RowValue); 4] = [
        (
            "kelp_requests_total",
            "Requests finished, by the shard that read them and their API. A request counts \
                 when it is answered (or, for acks=0 produce, handled), fails to decode, or is \
                 abandoned because its connection closed.",
            |r| r.count,
        ),
        (
            "kelp_request_errors_total",
            "Requests that failed: frames that could not be decoded (the connection is \
                 closed; api=\"Unknown\" for API keys kelp does not serve), requests abandoned \
                 because their connection closed, and answers carrying any non-zero error code \
                 (top level, per topic, per partition or per group; this includes codes clients \
                 expect in normal operation, such as MEMBER_ID_REQUIRED and \
                 REBALANCE_IN_PROGRESS).",
            |r| r.errors,
        ),
        (
            "kelp_request_bytes_total",
            "Bytes of request frames, size prefix included.",
            |r| r.bytes_in,
        ),
        (
            "kelp_response_bytes_total",
            "Bytes of response frames, size prefix included (0 for acks=0 produce).",
            |r| r.bytes_out,
        ),
    ];
    for (name, help, value) in per_api {
        header(out, name, help, "counter");
        for r in rows {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",api=\"{}\"}} {}",
                r.shard,
                r.api,
                value(r)
            );
        }
    }
}

fn render_durations(out: &mut String, rows: &[Row]) {
    let name = "kelp_request_duration_seconds";
    header(
        out,
        name,
        "Time from taking a request's frame off the read buffer to its response being \
             ready to write.",
        "histogram",
    );
    for r in rows {
        let mut cumulative = 0;
        for (k, n) in r.buckets.iter().enumerate() {
            cumulative += n;
            let le = if k < DURATION_BUCKETS {
                ((BUCKET_BASE_NS << k) as f64 / 1e9).to_string()
            } else {
                "+Inf".to_string()
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{}\",api=\"{}\",le=\"{le}\"}} {cumulative}",
                r.shard, r.api
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{}\",api=\"{}\"}} {}",
            r.shard,
            r.api,
            r.duration_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "{name}_count{{shard=\"{}\",api=\"{}\"}} {}",
            r.shard, r.api, r.count
        );
    }
}

/// One (shard, API) pair as a scrape read it.
struct Row<'a> {
    shard: usize,
    api: &'a str,
    buckets: [u64; DURATION_BUCKETS + 1],
    count: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    duration_ns: u64,
}

type RowValue = fn(&Row) -> u64;
type ShardValue = fn(&ShardMetrics) -> u64;

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn buckets_are_the_first_bound_at_or_above() {
        let naive = |ns: u64| {
            (0..DURATION_BUCKETS)
                .find(|&k| ns <= BUCKET_BASE_NS << k)
                .unwrap_or(DURATION_BUCKETS)
        };
        for ns in [
            0, 1, 7_999, 8_000, 8_001, 16_000, 16_001, 24_000, 32_000, 32_001,
        ] {
            assert_eq!(bucket_of(ns), naive(ns), "{ns} ns");
        }
        for k in 0..DURATION_BUCKETS {
            let b = BUCKET_BASE_NS << k;
            for ns in [b - 1, b, b + 1] {
                assert_eq!(bucket_of(ns), naive(ns), "{ns} ns");
            }
        }
        assert_eq!(bucket_of(u64::MAX), DURATION_BUCKETS);
        assert_eq!(bucket_of(60_000_000_000), DURATION_BUCKETS);
    }

    #[test]
    fn api_keys_map_to_their_slots() {
        assert_eq!(slot_of(ApiKey::Produce as i16), 0);
        for (i, (k, _, _)) in SUPPORTED_APIS.iter().enumerate() {
            assert_eq!(slot_of(*k as i16), i);
        }
        assert_eq!(slot_of(-1), UNKNOWN_SLOT);
        assert_eq!(slot_of(9999), UNKNOWN_SLOT);
        assert_eq!(slot_of(ApiKey::DescribeAcls as i16), UNKNOWN_SLOT);
        assert_eq!(slot_of_frame(&[0]), UNKNOWN_SLOT);
        assert_eq!(slot_of_frame(&[0, 18, 0, 0]), slot_of(18));
    }

    #[test]
    fn render_prints_consistent_families() {
        let m = Metrics::new(2).leak();
        RequestTimer::start(m.shard(1), slot_of(18), 30).finish(400, false);
        RequestTimer::start(m.shard(1), slot_of(18), 30).finish(400, true);
        drop(RequestTimer::start(m.shard(0), UNKNOWN_SLOT, 12));
        m.shard(0).connection_accepted(1);
        m.shard(1).set_ownership(3, 2);
        m.shard(0).set_ownership(1, 2);
        let mut out = String::new();
        m.render(&mut out);
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(
            has(r#"kelp_requests_total{shard="1",api="ApiVersions"} 2"#),
            "{out}"
        );
        assert!(has(
            r#"kelp_request_errors_total{shard="1",api="ApiVersions"} 1"#
        ));
        assert!(has(
            r#"kelp_request_bytes_total{shard="1",api="ApiVersions"} 60"#
        ));
        assert!(has(
            r#"kelp_response_bytes_total{shard="1",api="ApiVersions"} 800"#
        ));
        assert!(has(
            r#"kelp_request_errors_total{shard="0",api="Unknown"} 1"#
        ));
        assert!(has(
            r#"kelp_request_duration_seconds_count{shard="1",api="ApiVersions"} 2"#
        ));
        assert!(has(
            r#"kelp_request_duration_seconds_bucket{shard="1",api="ApiVersions",le="+Inf"} 2"#
        ));
        assert!(out.contains(r#"le="0.000008""#) && out.contains(r#"le="16.777216""#));
        assert!(!out.contains(r#"shard="0",api="ApiVersions""#));
        assert!(has(r#"kelp_connections{shard="0"} 1"#));
        assert!(has(r#"kelp_connections_accepted_total{shard="0"} 1"#));
        assert!(has(r#"kelp_partitions{shard="1"} 3"#));
        assert!(has("kelp_topics 2"));
        assert!(has(&format!(
            "kelp_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        for name in ["kelp_requests_total", "kelp_request_duration_seconds"] {
            assert!(out.contains(&format!("# HELP {name} ")));
            assert!(out.contains(&format!("# TYPE {name} ")));
        }
    }

    #[test]
    fn seaweedmq_publish_counters_show_only_on_that_backend() {
        let m = Metrics::new(1).leak();
        let mut out = String::new();
        m.render(&mut out);
        assert!(!out.contains("kelp_seaweedmq_"));
        let stats = std::sync::Arc::new(crate::seaweedmq::PublishStats::default());
        stats.count(5);
        stats.count(3);
        m.set_seaweedmq(stats);
        out.clear();
        m.render(&mut out);
        assert!(out
            .lines()
            .any(|l| l == "kelp_seaweedmq_publish_sends_total 2"));
        assert!(out
            .lines()
            .any(|l| l == "kelp_seaweedmq_published_records_total 8"));
    }

    #[test]
    fn blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<ShardMetrics>(), 128);
        assert_eq!(std::mem::size_of::<ShardMetrics>() % 128, 0);
    }
}
