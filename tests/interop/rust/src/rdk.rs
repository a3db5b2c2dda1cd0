//! `rdkafka-rs` client: the `rdkafka` crate over librdkafka (built from source with cmake).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Timestamp, TopicPartitionList};

use crate::{make_value, now_ms, show, Ctx, Outcome, Report, CODECS};

const CLIENT: &str = "rdkafka-rs";
const PARTITIONS: i32 = 3;
const ROUNDTRIP_RECORDS: usize = 300;
const IDEMPOTENT_RECORDS: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// Client context: keeps librdkafka warnings/errors so failure details can quote them.

#[derive(Clone)]
pub struct LogCtx {
    name: &'static str,
    lines: Arc<Mutex<Vec<String>>>,
    verbose: bool,
}

impl LogCtx {
    pub(crate) fn new(name: &'static str) -> Self {
        LogCtx {
            name,
            lines: Arc::new(Mutex::new(Vec::new())),
            verbose: std::env::var_os("KELP_INTEROP_RDKAFKA_DEBUG").is_some(),
        }
    }

    fn push(&self, line: String) {
        eprintln!("[{}] {}", self.name, line);
        let mut l = self.lines.lock().unwrap();
        if l.len() < 10_000 {
            l.push(line);
        }
    }

    /// The last few warnings/errors librdkafka reported, for a failure detail.
    pub(crate) fn tail(&self) -> String {
        let l = self.lines.lock().unwrap();
        if l.is_empty() {
            return String::new();
        }
        let start = l.len().saturating_sub(3);
        format!("; librdkafka said: {}", l[start..].join(" // "))
    }
}

impl ClientContext for LogCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        );
        if serious {
            self.push(format!("{level:?} {fac}: {msg}"));
        } else if self.verbose {
            eprintln!("[{}] {level:?} {fac}: {msg}", self.name);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching the end of a partition is reported here too; it is not a problem.
        if let KafkaError::Global(RDKafkaErrorCode::PartitionEOF) = error {
            return;
        }
        self.push(format!("error {error}: {reason}"));
    }
}

impl ConsumerContext for LogCtx {}

pub(crate) fn base_config(ctx: &Ctx, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &ctx.bootstrap)
        .set("client.id", client_id)
        .set("broker.address.family", "v4");
    if let Ok(d) = std::env::var("KELP_INTEROP_RDKAFKA_DEBUG") {
        c.set("debug", if d.is_empty() { "protocol,broker,msg,fetch" } else { &d });
        c.set_log_level(RDKafkaLogLevel::Debug);
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Expected records and comparison.

#[derive(Clone, Debug)]
struct Expected {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// Explicit CreateTime, if the scenario set one.
    ts: Option<i64>,
}

#[derive(Debug)]
struct Got {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    ts: Timestamp,
}

fn show_headers(h: &[(String, Option<Vec<u8>>)]) -> String {
    let parts: Vec<String> = h
        .iter()
        .map(|(k, v)| format!("{k:?}={}", show(v.as_deref())))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn owned_headers(h: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(h.len());
    for (k, v) in h {
        out = out.insert(Header {
            key: k.as_str(),
            value: v.as_deref(),
        });
    }
    out
}

/// Compares what was read from each partition with what was produced to it (production order),
/// returning the first difference.
fn compare(expected: &[Vec<&Expected>], got: &[Vec<Got>]) -> Result<(), String> {
    for (p, (exp, got)) in expected.iter().zip(got).enumerate() {
        for (j, g) in got.iter().enumerate() {
            if g.offset != j as i64 {
                return Err(format!(
                    "partition {p}: record #{j} read back has offset {} (offsets must be dense from 0)",
                    g.offset
                ));
            }
            let Some(e) = exp.get(j) else {
                return Err(format!(
                    "partition {p}: unexpected extra record at offset {} (produced {} to this partition): key={} value={}",
                    g.offset,
                    exp.len(),
                    show(g.key.as_deref()),
                    show(g.value.as_deref())
                ));
            };
            if g.key.as_deref() != Some(e.key.as_slice()) {
                return Err(format!(
                    "partition {p} offset {}: key {} != produced {}",
                    g.offset,
                    show(g.key.as_deref()),
                    show(Some(&e.key))
                ));
            }
            if g.value.as_deref() != Some(e.value.as_slice()) {
                return Err(format!(
                    "partition {p} offset {}: value {} != produced {} (key {})",
                    g.offset,
                    show(g.value.as_deref()),
                    show(Some(&e.value)),
                    show(Some(&e.key))
                ));
            }
            if g.headers != e.headers {
                return Err(format!(
                    "partition {p} offset {}: headers {} != produced {}",
                    g.offset,
                    show_headers(&g.headers),
                    show_headers(&e.headers)
                ));
            }
            if let Some(ts) = e.ts {
                if g.ts != Timestamp::CreateTime(ts) {
                    return Err(format!(
                        "partition {p} offset {}: timestamp {:?} != produced CreateTime({ts})",
                        g.offset, g.ts
                    ));
                }
            }
        }
        if got.len() < exp.len() {
            return Err(format!(
                "partition {p}: read back {} records, produced {}",
                got.len(),
                exp.len()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

async fn create_topic(ctx: &Ctx, topic: &str, logs: &LogCtx) -> Result<String, String> {
    create_topic_with(ctx, topic, PARTITIONS, logs).await
}

/// Creates `topic` with `partitions` partitions and waits until Metadata shows each with a leader.
pub(crate) async fn create_topic_with(
    ctx: &Ctx,
    topic: &str,
    partitions: i32,
    logs: &LogCtx,
) -> Result<String, String> {
    let admin: AdminClient<LogCtx> = base_config(ctx, "kelp-interop-rdkafka-admin")
        .create_with_context(logs.clone())
        .map_err(|e| format!("AdminClient creation: {e}"))?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let results = match tokio::time::timeout(
        Duration::from_secs(60),
        admin.create_topics([&new_topic], &opts),
    )
    .await
    {
        Err(_) => return Err(format!("CreateTopics {topic}: no answer within 60s{}", logs.tail())),
        Ok(Err(e)) => return Err(format!("CreateTopics {topic}: request failed: {e}{}", logs.tail())),
        Ok(Ok(r)) => r,
    };
    if results.len() != 1 {
        return Err(format!("CreateTopics {topic}: {} topic results, expected 1", results.len()));
    }
    if let Err((name, code)) = &results[0] {
        return Err(format!("CreateTopics {name}: error {code:?} ({code})"));
    }

    // The topic must show up in Metadata with its partitions, each with a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last;
    loop {
        let md = tokio::task::block_in_place(|| {
            admin.inner().fetch_metadata(Some(topic), Duration::from_secs(5))
        });
        last = match md {
            Err(e) => format!("Metadata request failed: {e}"),
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                None => format!("Metadata has no topic {topic}"),
                Some(t) => {
                    if let Some(err) = t.error() {
                        format!("Metadata topic error {}", RDKafkaErrorCode::from(err))
                    } else if t.partitions().len() != partitions as usize {
                        format!(
                            "Metadata reports {} partitions, created with {partitions}",
                            t.partitions().len()
                        )
                    } else if let Some(bad) = t
                        .partitions()
                        .iter()
                        .find(|p| p.error().is_some() || p.leader() < 0)
                    {
                        format!(
                            "Metadata partition {} has leader {} error {:?}",
                            bad.id(),
                            bad.leader(),
                            bad.error().map(RDKafkaErrorCode::from)
                        )
                    } else {
                        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                        ids.sort();
                        if ids != (0..partitions).collect::<Vec<_>>() {
                            format!("Metadata partition ids {ids:?}")
                        } else {
                            return Ok(format!(
                                "created {topic} with {partitions} partitions; metadata brokers {:?}",
                                md.brokers()
                                    .iter()
                                    .map(|b| format!("{}@{}:{}", b.id(), b.host(), b.port()))
                                    .collect::<Vec<_>>()
                            ));
                        }
                    }
                }
            },
        };
        if Instant::now() >= deadline {
            return Err(format!("after CreateTopics succeeded: {last}{}", logs.tail()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for every delivery report (until `deadline`); returns (partition, offset) per record.
async fn await_deliveries(
    futs: Vec<DeliveryFuture>,
    deadline: tokio::time::Instant,
    logs: &LogCtx,
) -> Result<Vec<(i32, i64)>, String> {
    let total = futs.len();
    let mut out = Vec::with_capacity(total);
    for (i, f) in futs.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, f).await {
            Err(_) => {
                return Err(format!(
                    "only {i} of {total} deliveries reported before the deadline{}",
                    logs.tail()
                ))
            }
            Ok(Err(_)) => return Err(format!("delivery of record {i}: producer dropped")),
            Ok(Ok(Err((e, _)))) => {
                return Err(format!("delivery of record {i} failed: {e}{}", logs.tail()))
            }
            Ok(Ok(Ok(d))) => out.push((d.partition, d.offset)),
        }
    }
    Ok(out)
}

/// Reads every partition of `topic` from the beginning with assign() (no group membership, no
/// commits) until each partition has at least `want[p]` records and librdkafka reported EOF at
/// that position, or the deadline passes.
fn consume_all(
    ctx: &Ctx,
    topic: &str,
    want: &[usize],
    deadline: Instant,
    logs: &LogCtx,
) -> Result<Vec<Vec<Got>>, String> {
    let consumer: BaseConsumer<LogCtx> = base_config(ctx, "kelp-interop-rdkafka-consumer")
        // assign() needs a group.id in librdkafka, but nothing joins or commits.
        .set("group.id", format!("{topic}-assign"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        .set("check.crcs", "true")
        .create_with_context(logs.clone())
        .map_err(|e| format!("consumer creation: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..want.len() as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| format!("assignment: {e}"))?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign(): {e}"))?;

    let n = want.len();
    let mut got: Vec<Vec<Got>> = (0..n).map(|_| Vec::new()).collect();
    let mut eof_at: Vec<Option<usize>> = vec![None; n];
    let mut errors: Vec<String> = Vec::new();
    loop {
        let done = (0..n).all(|p| got[p].len() >= want[p] && eof_at[p] == Some(got[p].len()));
        if done {
            return Ok(got);
        }
        if Instant::now() >= deadline {
            let state: Vec<String> = (0..n)
                .map(|p| format!("p{p}: read {} of {} (eof at {:?})", got[p].len(), want[p], eof_at[p]))
                .collect();
            let errs = if errors.is_empty() {
                String::new()
            } else {
                format!("; consumer errors: {}", errors.join(" // "))
            };
            return Err(format!(
                "consume deadline passed: {}{errs}{}",
                state.join(", "),
                logs.tail()
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition();
                if m.topic() != topic || p < 0 || p as usize >= n {
                    return Err(format!("message from unexpected {}/{p}", m.topic()));
                }
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default();
                got[p as usize].push(Got {
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    headers,
                    ts: m.timestamp(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if p >= 0 && (p as usize) < n {
                    eof_at[p as usize] = Some(got[p as usize].len());
                }
            }
            Some(Err(e)) => {
                if errors.len() < 5 {
                    errors.push(e.to_string());
                }
            }
        }
    }
}

/// Groups produced records by the partition librdkafka delivered them to, in production order,
/// and checks the delivery-report offsets are dense from 0 in each partition.
fn by_partition<'a>(
    sent: &'a [Expected],
    delivered: &[(i32, i64)],
) -> Result<Vec<Vec<&'a Expected>>, String> {
    let mut per: Vec<Vec<&Expected>> = (0..PARTITIONS).map(|_| Vec::new()).collect();
    for (i, (p, off)) in delivered.iter().enumerate() {
        if *p < 0 || *p >= PARTITIONS {
            return Err(format!("record {i} delivered to partition {p}"));
        }
        let list = &mut per[*p as usize];
        if *off != list.len() as i64 {
            return Err(format!(
                "record {i} (key {}) delivery report says partition {p} offset {off}, expected {} (dense from 0 in production order)",
                show(Some(&sent[i].key)),
                list.len()
            ));
        }
        list.push(&sent[i]);
    }
    if let Some(p) = per.iter().position(|l| l.is_empty()) {
        return Err(format!(
            "no record landed in partition {p} ({} keyed records over {PARTITIONS} partitions)",
            sent.len()
        ));
    }
    Ok(per)
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn scenario_create_topic(ctx: Arc<Ctx>) -> Outcome {
    let logs = LogCtx::new("rdkafka create-topic");
    let topic = ctx.topic("rdkafka", "create");
    create_topic(&ctx, &topic, &logs).await
}

async fn scenario_roundtrip(ctx: Arc<Ctx>, codec: &'static str) -> Outcome {
    let logs = LogCtx::new(match codec {
        "none" => "rdkafka roundtrip-none",
        "gzip" => "rdkafka roundtrip-gzip",
        "snappy" => "rdkafka roundtrip-snappy",
        "lz4" => "rdkafka roundtrip-lz4",
        _ => "rdkafka roundtrip-zstd",
    });
    let topic = ctx.topic("rdkafka", &format!("rt-{codec}"));
    create_topic(&ctx, &topic, &logs).await?;

    let producer: FutureProducer<LogCtx> = base_config(&ctx, "kelp-interop-rdkafka-producer")
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "20")
        .set("message.timeout.ms", "60000")
        .create_with_context(logs.clone())
        .map_err(|e| format!("producer creation: {e}"))?;

    let base_ts = now_ms() - 3_600_000;
    let sent: Vec<Expected> = (0..ROUNDTRIP_RECORDS)
        .map(|i| Expected {
            key: format!("key-{codec}-{i:04}").into_bytes(),
            value: make_value(codec, i),
            // Two headers with the same key: order and duplicates must survive.
            headers: vec![
                ("trace".to_string(), Some(format!("first-{i}").into_bytes())),
                ("trace".to_string(), Some(format!("second-{i}").into_bytes())),
            ],
            ts: Some(base_ts + i as i64 * 7),
        })
        .collect();
    let mut futs = Vec::with_capacity(sent.len());
    for (i, e) in sent.iter().enumerate() {
        let rec = FutureRecord::to(&topic)
            .key(&e.key)
            .payload(&e.value)
            .timestamp(e.ts.unwrap())
            .headers(owned_headers(&e.headers));
        let f = producer
            .send_result(rec)
            .map_err(|(err, _)| format!("enqueue record {i}: {err}"))?;
        futs.push(f);
    }
    let delivered = await_deliveries(
        futs,
        tokio::time::Instant::now() + Duration::from_secs(60),
        &logs,
    )
    .await?;
    let per = by_partition(&sent, &delivered)?;
    let want: Vec<usize> = per.iter().map(|l| l.len()).collect();

    let c = ctx.clone();
    let t = topic.clone();
    let w = want.clone();
    let l = logs.clone();
    let got = tokio::task::spawn_blocking(move || {
        consume_all(&c, &t, &w, Instant::now() + Duration::from_secs(60), &l)
    })
    .await
    .map_err(|e| format!("consumer thread: {e}"))??;
    compare(&per, &got)?;
    Ok(format!(
        "{} records ({:?} per partition), keys/values/2 same-key headers/timestamps/offsets match",
        sent.len(),
        want
    ))
}

async fn scenario_idempotent(ctx: Arc<Ctx>) -> Outcome {
    let logs = LogCtx::new("rdkafka idempotent-100k");
    let topic = ctx.topic("rdkafka", "idem100k");
    create_topic(&ctx, &topic, &logs).await?;

    let producer: FutureProducer<LogCtx> = base_config(&ctx, "kelp-interop-rdkafka-idempotent")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "300000")
        .set("message.timeout.ms", "120000")
        .create_with_context(logs.clone())
        .map_err(|e| format!("producer creation: {e}"))?;

    let sent: Vec<Expected> = (0..IDEMPOTENT_RECORDS)
        .map(|seq| Expected {
            key: format!("k{}", seq % 1000).into_bytes(),
            value: format!("seq={seq:07};payload-{}", seq % 97).into_bytes(),
            headers: Vec::new(),
            ts: None,
        })
        .collect();
    let started = Instant::now();
    let mut futs = Vec::with_capacity(sent.len());
    for (i, e) in sent.iter().enumerate() {
        let rec = FutureRecord::to(&topic).key(&e.key).payload(&e.value);
        let f = producer
            .send_result(rec)
            .map_err(|(err, _)| format!("enqueue record {i}: {err}"))?;
        futs.push(f);
    }
    let delivered = await_deliveries(
        futs,
        tokio::time::Instant::now() + Duration::from_secs(180),
        &logs,
    )
    .await?;
    let produce_secs = started.elapsed().as_secs_f64();
    let per = by_partition(&sent, &delivered)?;
    let want: Vec<usize> = per.iter().map(|l| l.len()).collect();

    let c = ctx.clone();
    let t = topic.clone();
    let w = want.clone();
    let l = logs.clone();
    let got = tokio::task::spawn_blocking(move || {
        consume_all(&c, &t, &w, Instant::now() + Duration::from_secs(120), &l)
    })
    .await
    .map_err(|e| format!("consumer thread: {e}"))??;

    // No duplicate, no gap: every seq exactly once; per partition seqs strictly increasing.
    let mut seen: HashSet<usize> = HashSet::with_capacity(IDEMPOTENT_RECORDS);
    for (p, recs) in got.iter().enumerate() {
        let mut prev: Option<usize> = None;
        for g in recs {
            let v = g.value.as_deref().unwrap_or_default();
            let seq = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.strip_prefix("seq="))
                .and_then(|s| s.get(..7))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!("partition {p} offset {}: unparsable value {}", g.offset, show(Some(v)))
                })?;
            if !seen.insert(seq) {
                return Err(format!("duplicate: seq {seq} read again at partition {p} offset {}", g.offset));
            }
            if let Some(prev) = prev {
                if seq <= prev {
                    return Err(format!(
                        "partition {p} order: seq {seq} at offset {} after seq {prev}",
                        g.offset
                    ));
                }
            }
            prev = Some(seq);
        }
    }
    if seen.len() != IDEMPOTENT_RECORDS {
        let missing: Vec<usize> = (0..IDEMPOTENT_RECORDS).filter(|s| !seen.contains(s)).take(5).collect();
        return Err(format!(
            "gap: read {} distinct seqs of {IDEMPOTENT_RECORDS}; first missing {missing:?}",
            seen.len()
        ));
    }
    compare(&per, &got)?;
    Ok(format!(
        "{IDEMPOTENT_RECORDS} records ({want:?} per partition) produced in {produce_secs:.1}s, read back exactly once in order"
    ))
}

pub async fn run_all(ctx: &Arc<Ctx>, report: &mut Report) {
    report
        .run(CLIENT, "create-topic", Duration::from_secs(120), scenario_create_topic(ctx.clone()))
        .await;
    for codec in CODECS {
        let scenario = format!("roundtrip-{codec}");
        report
            .run(CLIENT, &scenario, Duration::from_secs(240), scenario_roundtrip(ctx.clone(), codec))
            .await;
    }
    report
        .run(CLIENT, "idempotent-100k", Duration::from_secs(420), scenario_idempotent(ctx.clone()))
        .await;
}
