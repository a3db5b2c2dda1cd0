//! Encoding a Fetch response with `kelp::protocol::encode_response`: 1 partition carrying 16 KiB
//! and 1 MiB of records, and 100 partitions carrying 1 KiB each. Records are `Bytes` (shared, not
//! copied, until the encoder writes them). Run: `cargo bench --bench encode_fetch`.

mod common;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

fn response(partitions: i32, records_bytes: usize) -> ResponseKind {
    let n = (records_bytes / 108).max(1);
    let records = Bytes::from(common::batch(n, 100));
    let mut t = FetchableTopicResponse::default();
    t.topic = TopicName(StrBytes::from_static_str("bench-topic"));
    t.partitions = (0..partitions)
        .map(|p| {
            let mut pd = PartitionData::default();
            pd.partition_index = p;
            pd.high_watermark = 1_000_000;
            pd.last_stable_offset = 1_000_000;
            pd.log_start_offset = 0;
            pd.records = Some(records.clone());
            pd
        })
        .collect();
    let mut r = FetchResponse::default();
    r.responses = vec![t];
    ResponseKind::Fetch(r)
}

fn main() {
    common::pin(0);
    println!("encode a Fetch response (kelp::protocol::encode_response), v12");
    let mut out = BytesMut::with_capacity(4 << 20);
    for (partitions, bytes, iters) in [
        (1, 16 * 1024, 500_000u64),
        (1, 1 << 20, 5_000),
        (100, 1024, 50_000),
    ] {
        let body = response(partitions, bytes);
        out.clear();
        kelp::protocol::encode_response(&mut out, ApiKey::Fetch, 12, 1, &body).unwrap();
        let size = out.len() as u64;
        let name = format!("fetch v12, {partitions} partition(s), {size} B");
        common::bench(&name, iters / 10, iters, Some(size), || {
            out.clear();
            kelp::protocol::encode_response(&mut out, ApiKey::Fetch, 12, 1, &body).unwrap();
            out.len()
        });
    }
}
