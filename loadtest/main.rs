//! `loadtest`: a lean Kafka load generator built on kelp's codec, usable against any Kafka
//! broker, and the physical floor to compare it with.
//!
//! Map:
//! - `main.rs`: flags, and one function per subcommand that sets up connections and a [`Plan`].
//! - [`kafka`]: framing, setup requests (ApiVersions, Metadata, CreateTopics, ListOffsets).
//! - [`records`]: hand-built magic-2 batches and pre-encoded Produce frames, re-stamped per send.
//! - [`engine`]: the busy-polling connection loop every measured request goes through.
//! - [`floor`]: the loopback echo server that measures the machine's own round trip.
//! - [`stats`]: histograms, the progress line and the report (table, JSON, `.hgrm`).
//! - [`plot`] and [`json`]: SVG charts drawn by hand, and the JSON they are drawn from.
//!
//! Every latency is per request (per record for `end-to-end`), in microseconds, from the
//! request's intended send time to the moment its response was read. Throughput counts record
//! value bytes (MB = 10^6 bytes).

mod engine;
mod floor;
mod json;
mod kafka;
mod placement;
mod plot;
mod records;
mod stats;
mod util;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use engine::{Conn, FetchPart, Fetcher, Plan, Reply, Role, Sender, WaitMode};
use json::Json;
use stats::{Collector, Report};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Kafka load generator on kelp's codec, with a loopback floor to compare against"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce records and measure request latency (Produce sent -> response read).
    Produce {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        produce: ProduceOpts,
        /// Cover every partition: connection i cycles through partitions i, i + connections,
        /// i + 2 x connections, ... one per request (instead of always producing to partition
        /// i % partitions). Partitions led by another broker than the connection's first one
        /// are left out, with a warning.
        #[arg(long)]
        spread_partitions: bool,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Fetch records and measure fetch round trips and consume throughput.
    Consume {
        #[command(flatten)]
        target: Target,
        /// Connections; partitions are spread over them.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        #[command(flatten)]
        fetch: FetchOpts,
        /// Start from the earliest or the latest offset.
        #[arg(long, value_parser = ["earliest", "latest"], default_value = "earliest")]
        from: String,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Produce and consume at once; latency is producer timestamp -> consumer read, per record.
    EndToEnd {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        produce: ProduceOpts,
        /// Consumer connections; partitions are spread over them.
        #[arg(long, default_value_t = 1)]
        consumers: usize,
        #[command(flatten)]
        fetch: FetchOpts,
        #[command(flatten)]
        run: RunOpts,
    },
    /// The same request/response sizes over a raw loopback TCP echo (the physical floor).
    Floor {
        #[command(flatten)]
        load: Load,
        /// Topic name used to size the frames like a Produce to that topic.
        #[arg(long, default_value = "loadtest")]
        topic: String,
        /// Override the request frame size in bytes (default: the Produce request's).
        #[arg(long)]
        request_bytes: Option<usize>,
        /// Override the response frame size in bytes (default: a Produce response's).
        #[arg(long)]
        response_bytes: Option<usize>,
        /// Core for the echo server thread.
        #[arg(long, default_value_t = 0)]
        server_core: usize,
        /// Both sides sleep in ppoll instead of busy-polling (the wake-up cost included).
        #[arg(long)]
        blocking: bool,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Draw several runs (`--json` outputs) as latency-by-percentile curves on one chart.
    Plot {
        /// SVG file to write.
        #[arg(long)]
        svg: String,
        /// Chart title.
        #[arg(long, default_value = "Latency by percentile")]
        title: String,
        /// Files written from `--json` output.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct Target {
    /// Broker to start from (host:port).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use; created if missing (except by `consume`).
    #[arg(long, default_value = "loadtest")]
    topic: String,
    /// Partitions to create the topic with.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

#[derive(Args, Clone)]
struct Load {
    /// Connections; connection i produces to partition i % partitions.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Bytes of each record value (at least 8 for end-to-end: the send time is stamped there).
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Records per request (one batch).
    #[arg(long, default_value_t = 1)]
    batch_records: usize,
    /// Open loop: records per second over all connections, sent on a fixed schedule; latency
    /// is measured from the scheduled time (coordinated-omission correction). Default: closed
    /// loop (send as soon as the in-flight window allows).
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Args, Clone)]
struct ProduceOpts {
    /// acks: 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    acks: i16,
    /// The Produce request's timeout_ms.
    #[arg(long, default_value_t = 30_000)]
    produce_timeout_ms: i32,
}

#[derive(Args, Clone)]
struct FetchOpts {
    /// max_wait_ms of each Fetch (long poll).
    #[arg(long, default_value_t = 500)]
    fetch_wait_ms: i32,
    /// min_bytes of each Fetch.
    #[arg(long, default_value_t = 1)]
    fetch_min_bytes: i32,
    /// max_bytes of each Fetch.
    #[arg(long, default_value_t = 16 << 20)]
    fetch_max_bytes: i32,
    /// partition_max_bytes of each Fetch.
    #[arg(long, default_value_t = 4 << 20)]
    partition_max_bytes: i32,
}

#[derive(Args, Clone)]
struct RunOpts {
    /// Measured time after warm-up (e.g. 10s, 500ms, 2m).
    #[arg(long, value_parser = util::parse_duration)]
    duration: Option<Duration>,
    /// Records to send after warm-up (instead of, or as well as, --duration).
    #[arg(long)]
    records: Option<u64>,
    /// Warm-up before measuring (its samples are discarded).
    #[arg(long, value_parser = util::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Cores to pin client threads to, e.g. "1" or "2,3" (thread i takes core i % count).
    #[arg(long, value_parser = parse_core_list)]
    core: Option<CoreList>,
    /// Client threads; connections are dealt out round-robin.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Sleep in ppoll when idle instead of busy-polling (adds the wake-up latency).
    #[arg(long)]
    no_spin: bool,
    /// The broker's /metrics URL (kelp: http://HOST:PORT/metrics of --metrics-listen): warns
    /// when spinning client threads may share cores with its shards, and reports whether its
    /// shards stopped spinning during the run (kelp_spin_backoffs_total).
    #[arg(long, env = "LOADTEST_BROKER_METRICS")]
    broker_metrics: Option<String>,
    /// A request unanswered this long fails its connection.
    #[arg(long, value_parser = util::parse_duration, default_value = "30s")]
    request_timeout: Duration,
    /// Print one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write the HdrHistogram percentile distribution (microseconds) here.
    #[arg(long)]
    hgrm: Option<String>,
    /// Draw the latency-by-percentile curve here.
    #[arg(long)]
    svg: Option<String>,
    /// Name of this run in the JSON and on charts.
    #[arg(long)]
    label: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

/// A `--core` list (a newtype so that clap takes it as one value).
#[derive(Clone, Debug)]
struct CoreList(Vec<usize>);

fn parse_core_list(s: &str) -> Result<CoreList, String> {
    util::parse_cores(s).map(CoreList)
}

/// With neither --duration nor --records, a run lasts this long.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long to wait for outstanding answers after the sending phase.
const DRAIN: Duration = Duration::from_secs(5);

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("loadtest: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Produce {
            target,
            load,
            produce,
            spread_partitions,
            run,
        } => cmd_produce(target, load, produce, spread_partitions, run),
        Cmd::Consume {
            target,
            connections,
            fetch,
            from,
            run,
        } => cmd_consume(target, connections, fetch, &from, run),
        Cmd::EndToEnd {
            target,
            load,
            produce,
            consumers,
            fetch,
            run,
        } => cmd_end_to_end(target, load, produce, consumers, fetch, run),
        Cmd::Floor {
            load,
            topic,
            request_bytes,
            response_bytes,
            server_core,
            blocking,
            mut run,
        } => {
            if blocking {
                run.no_spin = true;
            }
            cmd_floor(
                load,
                &topic,
                request_bytes,
                response_bytes,
                server_core,
                blocking,
                run,
            )
        }
        Cmd::Plot { svg, title, files } => {
            let mut series = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?;
                let j = Json::parse(text.trim()).map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
                series.push(plot::Series::from_json(&j, f).map_err(anyhow::Error::msg)?);
            }
            std::fs::write(&svg, plot::render_svg(&series, &title))
                .with_context(|| format!("writing {svg}"))?;
            eprintln!("loadtest: wrote {svg}");
            Ok(())
        }
    }
}

fn check_load(load: &Load) -> anyhow::Result<()> {
    if load.connections == 0 || load.in_flight == 0 || load.batch_records == 0 {
        bail!("--connections, --in-flight and --batch-records must be at least 1");
    }
    if let Some(r) = load.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of records per second");
        }
    }
    Ok(())
}

/// Open loop: time between one connection's sends.
fn send_interval(load: &Load) -> Option<Duration> {
    load.rate.map(|r| {
        let per_conn_requests = r / load.batch_records as f64 / load.connections as f64;
        Duration::from_secs_f64(1.0 / per_conn_requests)
    })
}

fn common_config(load: &Load, run: &RunOpts) -> Json {
    let mut c = Json::obj();
    c.set("connections", load.connections);
    c.set("in_flight", load.in_flight);
    c.set("record_bytes", load.record_bytes);
    c.set("batch_records", load.batch_records);
    c.set("rate", load.rate);
    c.set("warmup_s", run.warmup.as_secs_f64());
    c.set("threads", run.threads);
    c.set("spin", !run.no_spin);
    c.set(
        "core",
        run.core.as_ref().map(|v| {
            v.0.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }),
    );
    c
}

fn loop_kind(load: &Load) -> String {
    match load.rate {
        Some(r) => format!("open loop at {r} records/s"),
        None => "closed loop".into(),
    }
}

/// The partitions each producer connection sends to: `[i % partitions]` for connection i, or
/// with `spread` every partition dealt out over the connections (those led by another broker
/// than a connection's first partition left out, with a warning).
fn producer_partitions(
    layout: &kafka::TopicLayout,
    connections: usize,
    spread: bool,
) -> Vec<Vec<i32>> {
    let n = layout.leaders.len();
    if !spread || connections >= n {
        return (0..connections).map(|i| vec![(i % n) as i32]).collect();
    }
    let mut left_out = 0;
    let out: Vec<Vec<i32>> = self::spread(n, connections)
        .into_iter()
        .map(|parts| {
            let leader = &layout.leaders[parts[0] as usize];
            let kept: Vec<i32> = parts
                .iter()
                .copied()
                .filter(|&p| &layout.leaders[p as usize] == leader)
                .collect();
            left_out += parts.len() - kept.len();
            kept
        })
        .collect();
    if left_out > 0 {
        eprintln!(
            "loadtest: --spread-partitions: {left_out} partitions led by another broker than their connection's are not produced to"
        );
    }
    out
}

/// Connects the producer connections: connection i to the leader of the first of its
/// partitions (see [`producer_partitions`]).
#[allow(clippy::too_many_arguments)]
fn producer_conns(
    layout: &kafka::TopicLayout,
    version: i16,
    load: &Load,
    produce: &ProduceOpts,
    spread: bool,
    measure: bool,
    acked: Option<&[Arc<AtomicI64>]>,
    first_send: Instant,
) -> anyhow::Result<Vec<Conn>> {
    let batch = records::Batch::new(load.batch_records, load.record_bytes);
    let interval = send_interval(load);
    let mut conns = Vec::with_capacity(load.connections);
    for (i, partitions) in producer_partitions(layout, load.connections, spread)
        .into_iter()
        .enumerate()
    {
        let p = partitions[0] as usize;
        let t = records::produce_template(
            &layout.name,
            p as i32,
            produce.acks,
            produce.produce_timeout_ms,
            version,
            batch.clone(),
        )?;
        let addr = &layout.leaders[p];
        let stream = kafka::connect_tcp(addr)?;
        // Stagger open-loop schedules so connections do not fire in bursts.
        let next_intended =
            interval.map(|iv| first_send + iv.mul_f64(i as f64 / load.connections as f64));
        let sender = Sender {
            frame: t.frame,
            batch_start: t.batch_start,
            partitions,
            partition_at: t.partition_at,
            next_partition: 0,
            batch: Some(t.batch),
            records_per_request: load.batch_records as u64,
            value_bytes_per_request: (load.batch_records * load.record_bytes) as u64,
            reply: if produce.acks == 0 {
                Reply::None
            } else {
                Reply::Produce { version }
            },
            measure,
            acked_end: acked.map(|a| a[p].clone()),
            next_intended,
        };
        conns.push(Conn::new(
            format!("produce#{i}->{addr}"),
            stream,
            Role::Send(sender),
        )?);
    }
    Ok(conns)
}

/// The timing of a run that starts now.
fn plan(run: &RunOpts, in_flight: usize, interval: Option<Duration>, start: Instant) -> Plan {
    let measured_for = match (run.duration, run.records) {
        (Some(d), _) => d,
        (None, Some(_)) => Duration::from_secs(365 * 24 * 3600),
        (None, None) => DEFAULT_DURATION,
    };
    let warmup_end = start + run.warmup;
    let warmup_end_unix_ns = util::unix_nanos() + run.warmup.as_nanos() as i64;
    Plan {
        started: start,
        warmup_end,
        warmup_end_unix_ns,
        end: warmup_end + measured_for,
        records_target: run.records,
        records_started: AtomicU64::new(0),
        in_flight,
        send_interval: interval,
        wait: if run.no_spin {
            WaitMode::Sleep
        } else {
            WaitMode::Spin
        },
        request_timeout: run.request_timeout,
        drain: DRAIN.min(run.request_timeout),
        stop: AtomicBool::new(false),
    }
}

/// What a run is, for its report.
struct Meta {
    command: &'static str,
    description: String,
    latency_of: &'static str,
    label: String,
    config: Json,
}

/// Runs `conns` over `run.threads` pinned workers and prints the report.
fn execute(conns: Vec<Conn>, plan: Plan, run: &RunOpts, meta: Meta) -> anyhow::Result<Report> {
    let before = broker_placement(run);
    if let Some(b) = &before {
        let cores = run.core.as_ref().map(|c| c.0.as_slice());
        if let Some(w) = placement::overlap_warning(b, cores, !run.no_spin) {
            eprintln!("loadtest: {w}");
        }
    }
    let report = execute_threads(conns, plan, run, meta)?;
    let after = broker_placement(run);
    if let (Some(b), Some(a)) = (before.and_then(|b| b.spin_backoffs), after) {
        let backoffs = a.spin_backoffs.unwrap_or(b).saturating_sub(b);
        if backoffs > 0 {
            eprintln!(
                "loadtest: the broker's shards stopped spinning {backoffs} times during the run: \
                 they waited for cores (shared with this client or other work)"
            );
        }
    }
    Ok(report)
}

/// The broker's placement from --broker-metrics, if given and reachable (a failure is said).
fn broker_placement(run: &RunOpts) -> Option<placement::BrokerPlacement> {
    let url = run.broker_metrics.as_deref()?;
    match placement::scrape(url) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("loadtest: --broker-metrics: {e}");
            None
        }
    }
}

fn execute_threads(
    conns: Vec<Conn>,
    plan: Plan,
    run: &RunOpts,
    meta: Meta,
) -> anyhow::Result<Report> {
    let threads = run.threads.max(1).min(conns.len().max(1));
    let mut groups: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % threads].push(c);
    }
    let plan = Arc::new(plan);
    let collector = Collector::new();
    let mut handles = Vec::new();
    for (t, group) in groups.into_iter().enumerate() {
        let rep = collector.reporter(t);
        let plan = plan.clone();
        let core = run.core.as_ref().map(|c| c.0[t % c.0.len()]);
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadtest-{t}"))
                .spawn(move || {
                    if let Some(c) = core {
                        util::pin_current_thread(c);
                    }
                    engine::run_worker(group, plan, rep);
                })?,
        );
    }
    let summary = collector.run(threads, plan.started, plan.warmup_end, run.quiet);
    for h in handles {
        let _ = h.join();
    }
    let report = Report {
        label: meta.label,
        command: meta.command,
        description: meta.description,
        latency_of: meta.latency_of,
        config: meta.config,
        summary,
    };
    emit(&report, run)?;
    Ok(report)
}

fn emit(report: &Report, run: &RunOpts) -> anyhow::Result<()> {
    if run.json {
        eprint!("{}", report.table());
        println!("{}", report.json().render());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &run.hgrm {
        std::fs::write(path, report.hgrm()).with_context(|| format!("writing {path}"))?;
    }
    if let Some(path) = &run.svg {
        let j = report.json();
        let s = plot::Series::from_json(&j, &report.label).map_err(anyhow::Error::msg)?;
        std::fs::write(path, plot::render_svg(&[s], &report.description))
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn cmd_produce(
    target: Target,
    load: Load,
    produce: ProduceOpts,
    spread_partitions: bool,
    run: RunOpts,
) -> anyhow::Result<()> {
    check_load(&load)?;
    let mut setup = kafka::SyncClient::connect(&target.bootstrap)?;
    let version = setup.apis.produce()?;
    let layout = kafka::ensure_topic(&mut setup, &target.topic, target.partitions, true)?;
    drop(setup);
    let start = Instant::now();
    let conns = producer_conns(
        &layout,
        version,
        &load,
        &produce,
        spread_partitions,
        true,
        None,
        start,
    )?;
    let start = Instant::now();
    let plan = plan(&run, load.in_flight, send_interval(&load), start);
    let description = format!(
        "{} topic {} ({} partitions{}), {} conn x {} in flight, {} B records x {} per request, acks={}, Produce v{version}, {}",
        target.bootstrap,
        layout.name,
        layout.leaders.len(),
        if spread_partitions { ", spread" } else { "" },
        load.connections,
        load.in_flight,
        load.record_bytes,
        load.batch_records,
        produce.acks,
        loop_kind(&load)
    );
    let mut config = common_config(&load, &run);
    config.set("bootstrap", target.bootstrap.as_str());
    config.set("topic", target.topic.as_str());
    config.set("partitions", layout.leaders.len());
    config.set("spread_partitions", spread_partitions);
    config.set("acks", produce.acks as i64);
    config.set("produce_version", version as i64);
    let label = run
        .label
        .clone()
        .unwrap_or_else(|| format!("produce {}", target.bootstrap));
    execute(
        conns,
        plan,
        &run,
        Meta {
            command: "produce",
            description,
            latency_of: "Produce request sent -> response read",
            label,
            config,
        },
    )?;
    Ok(())
}

/// Partitions `0..n` dealt out over `k` connections.
fn spread(n: usize, k: usize) -> Vec<Vec<i32>> {
    let k = k.clamp(1, n.max(1));
    let mut out = vec![Vec::new(); k];
    for p in 0..n {
        out[p % k].push(p as i32);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn fetcher_conns(
    layout: &kafka::TopicLayout,
    version: i16,
    connections: usize,
    fetch: &FetchOpts,
    latest: bool,
    end_to_end: bool,
    acked: Option<&[Arc<AtomicI64>]>,
) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    for (i, parts) in spread(layout.leaders.len(), connections)
        .into_iter()
        .enumerate()
    {
        // One connection fetches from one leader: keep only partitions led by the first's.
        let addr = layout.leaders[parts[0] as usize].clone();
        let parts: Vec<i32> = parts
            .into_iter()
            .filter(|&p| layout.leaders[p as usize] == addr)
            .collect();
        let offsets = kafka::list_offsets(&addr, &layout.name, &parts, latest)?;
        let fparts = parts
            .iter()
            .zip(offsets)
            .map(|(&p, o)| FetchPart {
                index: p,
                offset: o,
                acked_end: acked.map(|a| a[p as usize].clone()),
            })
            .collect();
        let f = Fetcher {
            topic: layout.name.clone(),
            version,
            parts: fparts,
            max_wait_ms: fetch.fetch_wait_ms,
            min_bytes: fetch.fetch_min_bytes,
            max_bytes: fetch.fetch_max_bytes,
            partition_max_bytes: fetch.partition_max_bytes,
            end_to_end,
        };
        let stream = kafka::connect_tcp(&addr)?;
        conns.push(Conn::new(
            format!("fetch#{i}->{addr}"),
            stream,
            Role::Fetch(f),
        )?);
    }
    Ok(conns)
}

fn cmd_consume(
    target: Target,
    connections: usize,
    fetch: FetchOpts,
    from: &str,
    run: RunOpts,
) -> anyhow::Result<()> {
    let mut setup = kafka::SyncClient::connect(&target.bootstrap)?;
    let version = setup.apis.fetch()?;
    let layout = kafka::ensure_topic(&mut setup, &target.topic, target.partitions, false)?;
    drop(setup);
    let conns = fetcher_conns(
        &layout,
        version,
        connections,
        &fetch,
        from == "latest",
        false,
        None,
    )?;
    let n_conns = conns.len();
    let start = Instant::now();
    let plan = plan(&run, 1, None, start);
    let description = format!(
        "{} topic {} ({} partitions) from {from}, {n_conns} conn, max_wait {} ms, Fetch v{version}",
        target.bootstrap,
        layout.name,
        layout.leaders.len(),
        fetch.fetch_wait_ms
    );
    let mut config = Json::obj();
    config.set("bootstrap", target.bootstrap.as_str());
    config.set("topic", target.topic.as_str());
    config.set("connections", n_conns);
    config.set("from", from);
    config.set("fetch_wait_ms", fetch.fetch_wait_ms);
    config.set("fetch_version", version as i64);
    config.set("warmup_s", run.warmup.as_secs_f64());
    let label = run
        .label
        .clone()
        .unwrap_or_else(|| format!("consume {}", target.bootstrap));
    execute(
        conns,
        plan,
        &run,
        Meta {
            command: "consume",
            description,
            latency_of: "Fetch request sent -> response read",
            label,
            config,
        },
    )?;
    Ok(())
}

fn cmd_end_to_end(
    target: Target,
    load: Load,
    produce: ProduceOpts,
    consumers: usize,
    fetch: FetchOpts,
    run: RunOpts,
) -> anyhow::Result<()> {
    check_load(&load)?;
    if load.record_bytes < records::STAMP_BYTES {
        bail!(
            "end-to-end needs --record-bytes of at least {} (the send time is stamped in the value)",
            records::STAMP_BYTES
        );
    }
    if produce.acks == 0 {
        bail!("end-to-end needs acks 1 or -1 (it waits for acknowledged offsets)");
    }
    let mut setup = kafka::SyncClient::connect(&target.bootstrap)?;
    let pv = setup.apis.produce()?;
    let fv = setup.apis.fetch()?;
    let layout = kafka::ensure_topic(&mut setup, &target.topic, target.partitions, true)?;
    drop(setup);
    let acked: Vec<Arc<AtomicI64>> = (0..layout.leaders.len())
        .map(|_| Arc::new(AtomicI64::new(0)))
        .collect();
    let mut conns = fetcher_conns(&layout, fv, consumers, &fetch, true, true, Some(&acked))?;
    let n_consumers = conns.len();
    let start = Instant::now();
    conns.extend(producer_conns(
        &layout,
        pv,
        &load,
        &produce,
        false,
        false,
        Some(&acked),
        start,
    )?);
    let start = Instant::now();
    let plan = plan(&run, load.in_flight, send_interval(&load), start);
    let description = format!(
        "{} topic {} ({} partitions), {} producer conn x {} in flight, {} B records x {} per request, acks={}, {n_consumers} consumer conn, {}",
        target.bootstrap,
        layout.name,
        layout.leaders.len(),
        load.connections,
        load.in_flight,
        load.record_bytes,
        load.batch_records,
        produce.acks,
        loop_kind(&load)
    );
    let mut config = common_config(&load, &run);
    config.set("bootstrap", target.bootstrap.as_str());
    config.set("topic", target.topic.as_str());
    config.set("partitions", layout.leaders.len());
    config.set("acks", produce.acks as i64);
    config.set("consumers", n_consumers);
    config.set("fetch_wait_ms", fetch.fetch_wait_ms);
    let label = run
        .label
        .clone()
        .unwrap_or_else(|| format!("end-to-end {}", target.bootstrap));
    execute(
        conns,
        plan,
        &run,
        Meta {
            command: "end-to-end",
            description,
            latency_of: "record stamped by the producer -> read by the consumer",
            label,
            config,
        },
    )?;
    Ok(())
}

fn cmd_floor(
    load: Load,
    topic: &str,
    request_bytes: Option<usize>,
    response_bytes: Option<usize>,
    server_core: usize,
    blocking: bool,
    run: RunOpts,
) -> anyhow::Result<()> {
    check_load(&load)?;
    // Frames sized, and built, exactly like the Produce requests a broker run sends.
    let version = kafka::PRODUCE_VERSION_MAX;
    let batch = records::Batch::new(load.batch_records, load.record_bytes);
    let t = records::produce_template(topic, 0, 1, 30_000, version, batch)?;
    let (frame, batch) = match request_bytes {
        Some(n) => {
            let n = n.max(records::REQUEST_CORRELATION_AT + 4);
            let mut f = vec![0u8; n];
            f[..4].copy_from_slice(&((n - 4) as i32).to_be_bytes());
            (f, None)
        }
        None => (t.frame, Some(t.batch)),
    };
    let response_bytes =
        response_bytes.unwrap_or_else(|| records::produce_response_bytes(topic, version));
    let request_len = frame.len();
    let server = floor::EchoServer::start(Some(server_core), blocking, response_bytes)?;
    let addr = server.addr.to_string();
    let interval = send_interval(&load);
    let start = Instant::now();
    let mut conns = Vec::new();
    for i in 0..load.connections {
        let stream = kafka::connect_tcp(&addr)?;
        let sender = Sender {
            frame: frame.clone(),
            batch: batch.clone(),
            batch_start: t.batch_start,
            partitions: Vec::new(),
            partition_at: t.partition_at,
            next_partition: 0,
            records_per_request: load.batch_records as u64,
            value_bytes_per_request: (load.batch_records * load.record_bytes) as u64,
            reply: Reply::Raw,
            measure: true,
            acked_end: None,
            next_intended: interval
                .map(|iv| start + iv.mul_f64(i as f64 / load.connections as f64)),
        };
        conns.push(Conn::new(format!("floor#{i}"), stream, Role::Send(sender))?);
    }
    let start = Instant::now();
    let plan = plan(&run, load.in_flight, interval, start);
    let mode = if blocking {
        "blocking (ppoll)"
    } else {
        "busy-poll"
    };
    let description = format!(
        "loopback echo, {mode}, server core {server_core}, {} conn x {} in flight, {request_len} B requests, {response_bytes} B responses, {}",
        load.connections,
        load.in_flight,
        loop_kind(&load)
    );
    let mut config = common_config(&load, &run);
    config.set("server_core", server_core);
    config.set("blocking", blocking);
    config.set("request_bytes", request_len);
    config.set("response_bytes", response_bytes);
    let label = run
        .label
        .clone()
        .unwrap_or_else(|| format!("floor ({mode})"));
    execute(
        conns,
        plan,
        &run,
        Meta {
            command: "floor",
            description,
            latency_of: "request sent -> echo read",
            label,
            config,
        },
    )?;
    drop(server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(leaders: &[&str]) -> kafka::TopicLayout {
        kafka::TopicLayout {
            name: "t".into(),
            leaders: leaders.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn producer_partitions_cover_the_topic_when_spread() {
        let one = layout(&["a"; 10]);
        assert_eq!(
            producer_partitions(&one, 3, false),
            vec![vec![0], vec![1], vec![2]]
        );
        assert_eq!(
            producer_partitions(&one, 4, true),
            vec![vec![0, 4, 8], vec![1, 5, 9], vec![2, 6], vec![3, 7]]
        );
        // More connections than partitions: one partition each, as without spreading.
        let spread = producer_partitions(&one, 12, true);
        assert_eq!(spread.len(), 12);
        assert_eq!(spread[11], vec![1]);
        // A connection keeps only the partitions its first partition's leader leads.
        let two = layout(&["a", "b", "a", "b"]);
        assert_eq!(producer_partitions(&two, 1, true), vec![vec![0, 2]]);
    }
}
