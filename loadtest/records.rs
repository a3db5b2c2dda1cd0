//! Magic-2 record batches built by hand, and Produce request frames built once and re-stamped
//! for every send (no per-request encoding on the hot path).
//!
//! A stamp writes the send time into the batch's base and max timestamps (milliseconds) and into
//! the first 8 bytes of every record value (nanoseconds since the UNIX epoch, big endian), then
//! recomputes the batch CRC-32C. The value stamp is what `end-to-end` reads back.

use crate::kafka;
use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestKind, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Bytes of the v2 batch header (see `kelp::protocol::batch`).
pub const BATCH_HEADER_BYTES: usize = kelp::protocol::batch::BATCH_HEADER_BYTES;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;

/// Bytes at the start of a record value that carry its send time.
pub const STAMP_BYTES: usize = 8;

use kelp::protocol::batch::put_varint;

/// A batch of `records` records with null keys and `value_bytes`-byte values, and where each
/// value starts inside it.
#[derive(Debug, Clone)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub value_offsets: Vec<usize>,
    pub value_bytes: usize,
}

impl Batch {
    pub fn new(records: usize, value_bytes: usize) -> Batch {
        assert!(records >= 1, "a batch holds at least one record");
        // Incompressible filler so that nobody's compression or dedup flatters a result.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut filler = vec![0u8; value_bytes];
        for b in filler.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let mut body = Vec::with_capacity(records * (value_bytes + 12));
        let mut value_offsets_in_body = Vec::with_capacity(records);
        for i in 0..records {
            let mut r = vec![0u8]; // attributes
            put_varint(&mut r, 0); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            put_varint(&mut r, -1); // null key
            put_varint(&mut r, value_bytes as i64);
            let value_in_r = r.len();
            r.extend_from_slice(&filler);
            put_varint(&mut r, 0); // no headers
            put_varint(&mut body, r.len() as i64);
            value_offsets_in_body.push(body.len() + value_in_r);
            body.extend_from_slice(&r);
        }
        let n = records as i32;
        let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset (the broker assigns it)
        b.extend_from_slice(&((BATCH_HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&[0; 4]); // crc, written by stamp
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, CreateTime
        b.extend_from_slice(&(n - 1).to_be_bytes()); // last offset delta
        b.extend_from_slice(&0i64.to_be_bytes()); // base timestamp
        b.extend_from_slice(&0i64.to_be_bytes()); // max timestamp
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id: not idempotent
        b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&body);
        let mut batch = Batch {
            value_offsets: value_offsets_in_body
                .into_iter()
                .map(|o| o + BATCH_HEADER_BYTES)
                .collect(),
            bytes: b,
            value_bytes,
        };
        let now = crate::util::unix_nanos();
        stamp(&mut batch.bytes, &batch.value_offsets, value_bytes, now);
        batch
    }
}

/// Writes `now_ns` into a batch (timestamps and value stamps) and refreshes its CRC.
pub fn stamp(batch: &mut [u8], value_offsets: &[usize], value_bytes: usize, now_ns: i64) {
    let ms = (now_ns / 1_000_000).to_be_bytes();
    batch[OFFSET_BASE_TIMESTAMP..OFFSET_BASE_TIMESTAMP + 8].copy_from_slice(&ms);
    batch[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&ms);
    if value_bytes >= STAMP_BYTES {
        let ns = now_ns.to_be_bytes();
        for &o in value_offsets {
            batch[o..o + STAMP_BYTES].copy_from_slice(&ns);
        }
    }
    let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Reads the send time a producer wrote into a record value, if it carries one.
pub fn read_stamp(value: &[u8]) -> Option<i64> {
    let b: [u8; 8] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(i64::from_be_bytes(b))
}

/// A Produce request frame (length prefix included) and where its batch and its partition
/// index lie in it.
#[derive(Debug, Clone)]
pub struct ProduceTemplate {
    pub frame: Vec<u8>,
    pub batch_start: usize,
    /// Where the partition index (a big-endian i32) lies: rewriting it there sends the same
    /// request to another partition of the topic.
    pub partition_at: usize,
    pub batch: Batch,
}

/// Byte offset of the correlation id in a request frame: prefix, api key, api version.
pub const REQUEST_CORRELATION_AT: usize = 8;

/// Encodes one Produce request for `topic`/`partition` holding `batch`.
pub fn produce_template(
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    version: i16,
    batch: Batch,
) -> anyhow::Result<ProduceTemplate> {
    let frame = encode_produce(topic, partition, acks, timeout_ms, version, &batch)?;
    // The partition index is a fixed-width INT32 in every version: encode once more with
    // its bitwise complement, and the 4 bytes that differ (all of them do) are where it lies.
    let other = encode_produce(topic, !partition, acks, timeout_ms, version, &batch)?;
    let differ: Vec<usize> = (0..frame.len().min(other.len()))
        .filter(|&i| frame[i] != other[i])
        .collect();
    let partition_at = match differ[..] {
        [at, .., last] if frame.len() == other.len() && differ.len() == 4 && last == at + 3 => at,
        _ => bail!("could not find the partition index inside the encoded Produce request"),
    };
    // The batch is the last field but for the tagged-field trailers of flexible versions.
    let len = batch.bytes.len();
    let Some(batch_start) = (0..=16usize)
        .filter_map(|trailer| frame.len().checked_sub(len + trailer))
        .find(|&s| frame[s..s + len] == batch.bytes[..])
    else {
        bail!("could not find the record batch inside the encoded Produce request");
    };
    Ok(ProduceTemplate {
        frame,
        batch_start,
        partition_at,
        batch,
    })
}

fn encode_produce(
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    version: i16,
    batch: &Batch,
) -> anyhow::Result<Vec<u8>> {
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(Bytes::from(batch.bytes.clone()));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = timeout_ms;
    req.topic_data = vec![td];
    let mut out = BytesMut::new();
    kafka::encode_request(
        &mut out,
        ApiKey::Produce,
        version,
        0,
        &RequestKind::Produce(req),
    )
    .context("encoding the Produce request template")?;
    Ok(out.to_vec())
}

/// Size in bytes (length prefix included) of the answer to a one-partition Produce request: what
/// `floor` sends back so that its replies match a broker's.
pub fn produce_response_bytes(topic: &str, version: i16) -> usize {
    let mut p = PartitionProduceResponse::default();
    p.index = 0;
    p.base_offset = 1_000_000;
    let mut t = TopicProduceResponse::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_responses = vec![p];
    let mut r = ProduceResponse::default();
    r.responses = vec![t];
    let mut out = BytesMut::new();
    let header = ResponseHeader::default();
    header
        .encode(&mut out, ApiKey::Produce.response_header_version(version))
        .expect("a response header encodes");
    r.encode(&mut out, version)
        .expect("a produce response encodes");
    4 + out.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_pass_kelps_validation_and_carry_stamps() {
        for (n, v) in [(1, 100), (16, 1024), (3, 4)] {
            let mut b = Batch::new(n, v);
            stamp(&mut b.bytes, &b.value_offsets, v, 1_700_000_000_123_456_789);
            let info = kelp::protocol::batch::validate_one(&b.bytes, 1 << 30).unwrap();
            assert_eq!(info.records_count as usize, n);
            assert_eq!(info.base_timestamp, 1_700_000_000_123);
            let recs =
                kelp::protocol::batch::parse_records(&b.bytes[BATCH_HEADER_BYTES..]).unwrap();
            assert_eq!(recs.len(), n);
            for r in recs {
                assert_eq!(r.key, None);
                let value = r.value.unwrap();
                assert_eq!(value.len(), v);
                if v >= 8 {
                    assert_eq!(read_stamp(value), Some(1_700_000_000_123_456_789));
                }
            }
        }
    }

    #[test]
    fn produce_template_decodes_with_kelp_and_finds_its_batch() {
        for version in [3, 8, 9, 12] {
            let t = produce_template("t", 2, 1, 30_000, version, Batch::new(4, 100)).unwrap();
            assert_eq!(
                &t.frame[t.batch_start..t.batch_start + t.batch.bytes.len()],
                &t.batch.bytes[..]
            );
            let frame = Bytes::from(t.frame[4..].to_vec());
            let req = kelp::protocol::decode_request(frame).unwrap();
            assert_eq!(req.version, version);
            assert!(matches!(req.body, RequestKind::Produce(_)));
            // Rewriting the partition index sends the same request to another partition.
            let mut f = t.frame.clone();
            f[t.partition_at..t.partition_at + 4].copy_from_slice(&9_999i32.to_be_bytes());
            let req = kelp::protocol::decode_request(Bytes::from(f[4..].to_vec())).unwrap();
            let RequestKind::Produce(p) = req.body else {
                panic!("not a Produce request");
            };
            assert_eq!(p.topic_data[0].partition_data[0].index, 9_999);
        }
        assert!(produce_response_bytes("t", 12) > 40);
    }
}
