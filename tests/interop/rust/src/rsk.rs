//! `rskafka` client (pure Rust). Its `Record::headers` is a `BTreeMap`, so repeated header keys
//! cannot be expressed with this client; the roundtrip uses two distinct header keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::chrono::{DateTime, TimeZone, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use rskafka::BackoffConfig;

use crate::{make_value, now_ms, show, Ctx, Outcome, Report, CODECS};

const CLIENT: &str = "rskafka";
const PARTITIONS: i32 = 3;
/// Produce calls per partition, and records per call: several batches per partition.
const BATCHES: usize = 3;
const PER_BATCH: usize = 15;

async fn client(ctx: &Ctx) -> Result<Client, String> {
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
        deadline: Some(Duration::from_secs(30)),
    };
    tokio::time::timeout(
        Duration::from_secs(40),
        ClientBuilder::new(vec![ctx.bootstrap.clone()])
            .client_id("kelp-interop-rskafka")
            .backoff_config(backoff)
            .build(),
    )
    .await
    .map_err(|_| "client build (ApiVersions/Metadata): no answer within 40s".to_string())?
    .map_err(|e| format!("client build: {e}"))
}

async fn create_topic(client: &Client, topic: &str) -> Result<String, String> {
    let controller = client
        .controller_client()
        .map_err(|e| format!("controller client: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(60),
        controller.create_topic(topic, PARTITIONS, 1, 30_000),
    )
    .await
    .map_err(|_| format!("CreateTopics {topic}: no answer within 60s"))?
    .map_err(|e| format!("CreateTopics {topic}: {e}"))?;

    // The topic must be listed with partitions 0..3.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client.list_topics().await {
            Err(e) => format!("Metadata (list_topics) failed: {e}"),
            Ok(topics) => match topics.iter().find(|t| t.name == topic) {
                None => format!("Metadata does not list {topic}"),
                Some(t) => {
                    let ids: Vec<i32> = t.partitions.iter().copied().collect();
                    if ids == (0..PARTITIONS).collect::<Vec<_>>() {
                        return Ok(format!("created {topic}; metadata lists partitions {ids:?}"));
                    }
                    format!("Metadata lists partitions {ids:?} for {topic}, created with {PARTITIONS}")
                }
            },
        };
        if Instant::now() >= deadline {
            return Err(format!("after CreateTopics succeeded: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("valid timestamp")
}

fn show_headers(h: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = h.iter().map(|(k, v)| format!("{k:?}={}", show(Some(v)))).collect();
    format!("{{{}}}", parts.join(", "))
}

fn compare_record(p: i32, exp: &Record, got: &RecordAndOffset) -> Result<(), String> {
    let off = got.offset;
    let g = &got.record;
    if g.key != exp.key {
        return Err(format!(
            "partition {p} offset {off}: key {} != produced {}",
            show(g.key.as_deref()),
            show(exp.key.as_deref())
        ));
    }
    if g.value != exp.value {
        return Err(format!(
            "partition {p} offset {off}: value {} != produced {} (key {})",
            show(g.value.as_deref()),
            show(exp.value.as_deref()),
            show(exp.key.as_deref())
        ));
    }
    if g.headers != exp.headers {
        return Err(format!(
            "partition {p} offset {off}: headers {} != produced {}",
            show_headers(&g.headers),
            show_headers(&exp.headers)
        ));
    }
    if g.timestamp != exp.timestamp {
        return Err(format!(
            "partition {p} offset {off}: timestamp {} ms != produced {} ms",
            g.timestamp.timestamp_millis(),
            exp.timestamp.timestamp_millis()
        ));
    }
    Ok(())
}

/// Fetches partition records from `from` until `want` records were read or the deadline passes;
/// checks offsets are dense from `from`.
async fn fetch_from(
    pc: &PartitionClient,
    from: i64,
    want: usize,
    deadline: Instant,
) -> Result<(Vec<RecordAndOffset>, i64), String> {
    let p = pc.partition();
    let mut out: Vec<RecordAndOffset> = Vec::new();
    let mut next = from;
    let mut hwm = -1;
    let mut empty_fetches = 0usize;
    while out.len() < want {
        if Instant::now() >= deadline {
            return Err(format!(
                "partition {p}: fetched {} of {want} records from offset {from} before the deadline (high watermark {hwm}, {empty_fetches} empty fetches)",
                out.len()
            ));
        }
        let (recs, hw) = tokio::time::timeout(
            Duration::from_secs(30),
            pc.fetch_records(next, 1..4_000_000, 500),
        )
        .await
        .map_err(|_| format!("partition {p}: Fetch at offset {next}: no answer within 30s"))?
        .map_err(|e| format!("partition {p}: Fetch at offset {next}: {e}"))?;
        hwm = hw;
        if recs.is_empty() {
            empty_fetches += 1;
        }
        for r in recs {
            if r.offset != next {
                return Err(format!(
                    "partition {p}: fetch at offset {next} returned record with offset {} (offsets must be dense)",
                    r.offset
                ));
            }
            next += 1;
            out.push(r);
        }
    }
    Ok((out, hwm))
}

async fn scenario_create_topic(ctx: Arc<Ctx>) -> Outcome {
    let c = client(&ctx).await?;
    create_topic(&c, &ctx.topic("rskafka", "create")).await
}

fn compression(codec: &str) -> Compression {
    match codec {
        "none" => Compression::NoCompression,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => panic!("unknown codec {other}"),
    }
}

async fn scenario_roundtrip(ctx: Arc<Ctx>, codec: &'static str) -> Outcome {
    let c = client(&ctx).await?;
    let topic = ctx.topic("rskafka", &format!("rt-{codec}"));
    create_topic(&c, &topic).await?;
    let base_ts = now_ms() - 3_600_000;
    let n = BATCHES * PER_BATCH;

    for p in 0..PARTITIONS {
        let pc = tokio::time::timeout(
            Duration::from_secs(40),
            c.partition_client(topic.clone(), p, UnknownTopicHandling::Retry),
        )
        .await
        .map_err(|_| format!("partition client {p}: no answer within 40s"))?
        .map_err(|e| format!("partition client {p}: {e}"))?;

        let expected: Vec<Record> = (0..n)
            .map(|i| {
                let mut headers = BTreeMap::new();
                headers.insert("trace".to_string(), format!("t-{p}-{i}").into_bytes());
                headers.insert("origin".to_string(), b"rskafka".to_vec());
                Record {
                    key: Some(format!("key-{codec}-p{p}-{i:03}").into_bytes()),
                    value: Some(make_value(codec, i + 1000 * p as usize)),
                    headers,
                    timestamp: ts(base_ts + (p as i64) * 100_000 + i as i64 * 7),
                }
            })
            .collect();

        for b in 0..BATCHES {
            let batch = expected[b * PER_BATCH..(b + 1) * PER_BATCH].to_vec();
            let offsets = tokio::time::timeout(
                Duration::from_secs(40),
                pc.produce(batch, compression(codec)),
            )
            .await
            .map_err(|_| format!("partition {p}: Produce batch {b}: no answer within 40s"))?
            .map_err(|e| format!("partition {p}: Produce batch {b}: {e}"))?;
            let want: Vec<i64> = ((b * PER_BATCH) as i64..((b + 1) * PER_BATCH) as i64).collect();
            if offsets != want {
                return Err(format!(
                    "partition {p}: Produce batch {b} got offsets {}..={} (base offset {:?}), expected {}..={}",
                    offsets.first().copied().unwrap_or(-1),
                    offsets.last().copied().unwrap_or(-1),
                    offsets.first(),
                    want[0],
                    want[want.len() - 1]
                ));
            }
        }

        let deadline = Instant::now() + Duration::from_secs(60);
        let (got, hwm) = fetch_from(&pc, 0, n, deadline).await?;
        for (exp, g) in expected.iter().zip(&got) {
            compare_record(p, exp, g)?;
        }
        if hwm != n as i64 {
            return Err(format!("partition {p}: Fetch high watermark {hwm}, expected {n}"));
        }
        // A fetch starting inside the second batch must start exactly there.
        let mid = (PER_BATCH + PER_BATCH / 2) as i64;
        let (tail, _) = fetch_from(&pc, mid, n - mid as usize, deadline).await?;
        for (exp, g) in expected[mid as usize..].iter().zip(&tail) {
            compare_record(p, exp, g)?;
        }
        // ListOffsets.
        let earliest = pc
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| format!("partition {p}: ListOffsets earliest: {e}"))?;
        let latest = pc
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(|e| format!("partition {p}: ListOffsets latest: {e}"))?;
        if earliest != 0 || latest != n as i64 {
            return Err(format!(
                "partition {p}: ListOffsets earliest {earliest} latest {latest}, expected 0 and {n}"
            ));
        }
    }
    Ok(format!(
        "{PARTITIONS}x{n} records in {BATCHES} produce calls per partition; keys/values/headers (2 distinct keys: rskafka headers are a map)/timestamps/offsets, mid-batch fetch and ListOffsets match"
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
}
