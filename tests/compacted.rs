//! Compacted topics on the real `kelp` binary (memory backend), spoken to at the protocol level
//! so that the answer's fields themselves are checked: a record without a key cannot be kept
//! by key, so Produce refuses its batch with INVALID_RECORD and names it (KIP-467).

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kelp::protocol::batch::tests_support::build_batch_keys;
use std::net::TcpStream;

const INVALID_RECORD: i16 = 87;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create(s: &mut TcpStream, name: &str, policy: Option<&str>) {
    let mut t = CreatableTopic::default();
    t.name = topic_name(name);
    t.num_partitions = 1;
    t.replication_factor = 1;
    if let Some(policy) = policy {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_static_str("cleanup.policy");
        c.value = Some(StrBytes::from_string(policy.to_string()));
        t.configs = vec![c];
    }
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let resp = call(s, 5, 1, &req);
    assert_eq!(resp.topics[0].error_code, 0, "CreateTopics {name}");
}

/// Produces `records` (key `None` = null) as one batch with Produce `version`.
fn produce(
    s: &mut TcpStream,
    version: i16,
    name: &str,
    records: &[(Option<&[u8]>, &[u8])],
) -> PartitionProduceResponse {
    let mut p = PartitionProduceData::default();
    p.records = Some(Bytes::from(build_batch_keys(records, 1_700_000_000_000)));
    let mut t = TopicProduceData::default();
    t.name = topic_name(name);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    call(s, version, 2, &req).responses[0].partition_responses[0].clone()
}

fn end_offset(s: &mut TcpStream, name: &str) -> i64 {
    let mut p = ListOffsetsPartition::default();
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(name);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp = call(s, 5, 3, &req);
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    resp.topics[0].partitions[0].offset
}

/// 100 records, those at 3, 13, ..., 93 without a key.
fn hundred(values: &[Vec<u8>]) -> Vec<(Option<&[u8]>, &[u8])> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| ((i % 10 != 3).then_some(&v[..4]), &v[..]))
        .collect()
}

fn values() -> Vec<Vec<u8>> {
    (0..100)
        .map(|i| format!("k{i:03} value").into_bytes())
        .collect()
}

#[test]
fn a_batch_with_keyless_records_is_refused_naming_them() {
    let k = Kelp::start("compacted_batch");
    let mut s = k.connect();
    create(&mut s, "compacted", Some("compact"));
    let values = values();
    let p = produce(&mut s, 9, "compacted", &hundred(&values));
    assert_eq!(p.error_code, INVALID_RECORD, "{p:?}");
    let named: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(named, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
    assert!(p.record_errors[0].batch_index_error_message.is_some());
    assert!(p.error_message.is_some());
    // Nothing of the refused batch was stored.
    assert_eq!(end_offset(&mut s, "compacted"), 0);
    // Before v8 the answer has no per-record errors; the batch is refused all the same.
    let p = produce(&mut s, 7, "compacted", &hundred(&values));
    assert_eq!(p.error_code, INVALID_RECORD);
}

#[test]
fn record_by_record_exactly_the_keyless_ones_fail() {
    let k = Kelp::start("compacted_records");
    let mut s = k.connect();
    // compact,delete is compacted too.
    create(&mut s, "compacted2", Some("compact,delete"));
    let values = values();
    let mut failed = Vec::new();
    for (i, r) in hundred(&values).into_iter().enumerate() {
        let p = produce(&mut s, 9, "compacted2", &[r]);
        match p.error_code {
            0 => {}
            INVALID_RECORD => failed.push(i),
            e => panic!("record {i}: error {e}"),
        }
    }
    assert_eq!(failed, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
    assert_eq!(end_offset(&mut s, "compacted2"), 90);
}

#[test]
fn other_topics_take_keyless_records() {
    let k = Kelp::start("compacted_control");
    let mut s = k.connect();
    create(&mut s, "plain", None);
    create(&mut s, "deleting", Some("delete"));
    let values = values();
    for name in ["plain", "deleting"] {
        let p = produce(&mut s, 9, name, &hundred(&values));
        assert_eq!(p.error_code, 0, "{name}: {p:?}");
        assert!(p.record_errors.is_empty());
        assert_eq!(end_offset(&mut s, name), 100);
    }
}
