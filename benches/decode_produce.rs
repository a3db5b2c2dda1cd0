//! Decoding a Produce request with `kelp::protocol::decode_request`: 1 partition and 100
//! partitions, each carrying one 100-byte-record batch. Run: `cargo bench --bench decode_produce`.

mod common;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

fn frame(partitions: i32, version: i16) -> Bytes {
    let records = Bytes::from(common::batch(1, 100));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("bench-topic"));
    td.partition_data = (0..partitions)
        .map(|p| {
            let mut pd = PartitionProduceData::default();
            pd.index = p;
            pd.records = Some(records.clone());
            pd
        })
        .collect();
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 30_000;
    req.topic_data = vec![td];
    let mut h = RequestHeader::default();
    h.request_api_key = ApiKey::Produce as i16;
    h.request_api_version = version;
    h.correlation_id = 1;
    h.client_id = Some(StrBytes::from_static_str("bench"));
    let mut b = BytesMut::new();
    h.encode(&mut b, ApiKey::Produce.request_header_version(version))
        .unwrap();
    RequestKind::Produce(req).encode(&mut b, version).unwrap();
    b.freeze()
}

fn main() {
    common::pin(0);
    println!(
        "decode a Produce request (kelp::protocol::decode_request), one 100 B record per partition"
    );
    for version in [9i16, 12] {
        for (partitions, iters) in [(1, 1_000_000u64), (100, 50_000)] {
            let f = frame(partitions, version);
            let name = format!(
                "produce v{version}, {partitions} partition(s), {} B",
                f.len()
            );
            common::bench(&name, iters / 10, iters, Some(f.len() as u64), || {
                kelp::protocol::decode_request(f.clone()).expect("decodes")
            });
        }
    }
}
