//! How a Kafka record is stored as a SeaweedMQ message, and back.
//!
//! A SeaweedMQ `DataMessage` has only `key`, `value` and `ts_ns`. kelp stores:
//! - `ts_ns`: the record's Kafka timestamp (milliseconds) times 1,000,000;
//! - `key`: the Kafka key, with a null key stored as empty;
//! - `value`: the Kafka value as-is, **when the record is plain**: no headers, a non-null
//!   value, a key that is not empty-but-present, a value that does not begin with
//!   [`ENVELOPE_MAGIC`], and not the first record of an idempotent producer's batch. Native
//!   SeaweedMQ readers and SeaweedFS's own Kafka gateway then see exactly the bytes the
//!   producer sent.
//! - otherwise `value` is an envelope:
//!   `ENVELOPE_MAGIC | flags: u8 | [producer] | header count: varint | headers | value bytes`,
//!   where flags bit 0 = the key is present (so an empty key is not read back as null), bit 1 =
//!   the value is null, bit 2 = a producer stamp follows; each header is `key length: varint |
//!   key | value length: varint (-1 = null) | value` (Kafka's own record encoding of headers).
//!   The producer stamp (`producer id: i64 BE | epoch: i16 BE | base sequence: i32 BE |
//!   records: i32 BE`) is on the first record of every idempotent producer's batch, so that an
//!   owner that takes the partition over (a restarted kelp, another instance) rebuilds which
//!   batches it holds and answers a producer's retry with where its batch went, not a second
//!   copy.
//!
//! Reading back, an empty key is null unless an envelope says otherwise, and a value that
//! starts with the magic but does not parse as an envelope is returned as it is (a foreign
//! writer's bytes are never lost).

use crate::protocol::batch::{self, put_varint, read_varint, BatchError};
use bytes::{BufMut, Bytes, BytesMut};

use super::{DataMessage, Record};

/// First bytes of an enveloped value. Chosen to be unlikely at the start of a real value; a
/// value that starts with it anyway is enveloped, so it still round-trips.
pub const ENVELOPE_MAGIC: &[u8] = b"\x00kelp\x01";

const FLAG_KEY_PRESENT: u8 = 1;
const FLAG_VALUE_NULL: u8 = 2;
const FLAG_PRODUCER: u8 = 4;

/// Which idempotent producer's batch a record starts (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Records in the batch.
    pub records: i32,
}

const STAMP_BYTES: usize = 18;

impl ProducerStamp {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.records.to_be_bytes());
    }

    fn read(b: &[u8]) -> Option<ProducerStamp> {
        let b = b.get(..STAMP_BYTES)?;
        Some(ProducerStamp {
            producer_id: i64::from_be_bytes(b[0..8].try_into().ok()?),
            epoch: i16::from_be_bytes(b[8..10].try_into().ok()?),
            base_sequence: i32::from_be_bytes(b[10..14].try_into().ok()?),
            records: i32::from_be_bytes(b[14..18].try_into().ok()?),
        })
    }
}

/// A Kafka record with owned fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    pub timestamp_ms: i64,
    /// Set on the first record of an idempotent producer's batch.
    pub producer: Option<ProducerStamp>,
}

fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// Encodes one Kafka record as a SeaweedMQ message.
pub fn encode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
    timestamp_ms: i64,
    producer: Option<ProducerStamp>,
) -> Record {
    let plain = headers.is_empty()
        && producer.is_none()
        && key.is_none_or(|k| !k.is_empty())
        && value.is_some_and(|v| !v.starts_with(ENVELOPE_MAGIC));
    let key_bytes = Bytes::copy_from_slice(key.unwrap_or_default());
    if plain {
        return Record {
            key: key_bytes,
            value: Bytes::copy_from_slice(value.unwrap_or_default()),
            ts_ns: ms_to_ns(timestamp_ms),
        };
    }
    let mut out = Vec::with_capacity(
        ENVELOPE_MAGIC.len() + 8 + value.map_or(0, <[u8]>::len) + headers.len() * 16,
    );
    out.extend_from_slice(ENVELOPE_MAGIC);
    let mut flags = 0;
    if key.is_some() {
        flags |= FLAG_KEY_PRESENT;
    }
    if value.is_none() {
        flags |= FLAG_VALUE_NULL;
    }
    if producer.is_some() {
        flags |= FLAG_PRODUCER;
    }
    out.push(flags);
    if let Some(stamp) = producer {
        stamp.put(&mut out);
    }
    put_varint(&mut out, headers.len() as i64);
    for (k, v) in headers {
        batch::put_field(&mut out, Some(k));
        batch::put_field(&mut out, *v);
    }
    out.extend_from_slice(value.unwrap_or_default());
    Record {
        key: key_bytes,
        value: Bytes::from(out),
        ts_ns: ms_to_ns(timestamp_ms),
    }
}

/// Decodes one SeaweedMQ message into the Kafka record it stores.
pub fn decode(msg: &DataMessage) -> KafkaRecord {
    let timestamp_ms = msg.ts_ns.div_euclid(1_000_000);
    let key = msg.key.clone();
    if msg.value.starts_with(ENVELOPE_MAGIC) {
        if let Ok(r) = decode_envelope(msg.value.slice(ENVELOPE_MAGIC.len()..), key.clone()) {
            return KafkaRecord { timestamp_ms, ..r };
        }
    }
    KafkaRecord {
        key: (!key.is_empty()).then_some(key),
        value: Some(msg.value.clone()),
        headers: Vec::new(),
        timestamp_ms,
        producer: None,
    }
}

fn decode_envelope(b: Bytes, key: Bytes) -> Result<KafkaRecord, BatchError> {
    let bad = BatchError::MalformedRecords("bad kelp envelope");
    let (&flags, _) = b.split_first().ok_or(bad.clone())?;
    if flags & !(FLAG_KEY_PRESENT | FLAG_VALUE_NULL | FLAG_PRODUCER) != 0 {
        return Err(bad);
    }
    let mut producer = None;
    let mut start = 1;
    if flags & FLAG_PRODUCER != 0 {
        producer = Some(ProducerStamp::read(&b[1..]).ok_or(bad.clone())?);
        start += STAMP_BYTES;
    }
    let rest_bytes = b.slice(start..);
    let rest = &rest_bytes[..];
    let mut at = 0;
    let n = read_varint(rest, &mut at)?;
    if n < 0 || n as usize > rest.len() {
        return Err(bad);
    }
    let mut headers = Vec::with_capacity(n as usize);
    let field = |at: &mut usize| -> Result<Option<Bytes>, BatchError> {
        Ok(batch::read_bytes(rest, at)?.map(|s| rest_bytes.slice_ref(s)))
    };
    for _ in 0..n {
        let k = field(&mut at)?.ok_or(bad.clone())?;
        let v = field(&mut at)?;
        headers.push((k, v));
    }
    let value = (flags & FLAG_VALUE_NULL == 0).then(|| rest_bytes.slice(at..));
    if value.is_none() && at != rest.len() {
        return Err(bad);
    }
    Ok(KafkaRecord {
        key: (flags & FLAG_KEY_PRESENT != 0).then_some(key),
        value,
        headers,
        timestamp_ms: 0,
        producer,
    })
}

/// The records of a validated batch (decompressed when needed) as SeaweedMQ messages, but the
/// first `skip` (the stored head of a torn batch: then no record carries the producer stamp,
/// which stays on the stored first one). `log_append_time_ms` replaces every record's
/// timestamp when set.
pub fn from_batch(
    batch_bytes: &[u8],
    decompressed_bytes_max: usize,
    log_append_time_ms: Option<i64>,
    skip: usize,
) -> Result<Vec<Record>, BatchError> {
    let body = batch::records_section(batch_bytes, decompressed_bytes_max)?;
    let base_ts = batch::base_timestamp(batch_bytes);
    let views = batch::parse_records(&body)?;
    let mut stamp =
        batch::producer_stamp(batch_bytes).map(|(producer_id, epoch, base_sequence)| {
            ProducerStamp {
                producer_id,
                epoch,
                base_sequence,
                records: views.len() as i32,
            }
        });
    Ok(views
        .iter()
        .skip(skip)
        .map(|r| {
            let ts = log_append_time_ms.unwrap_or(base_ts.saturating_add(r.timestamp_delta));
            // Only the batch's first record carries the stamp.
            encode(r.key, r.value, &r.headers, ts, stamp.take())
        })
        .collect())
}

/// How many of `records` (at least one, if any) fit in a batch of at most `max_bytes`, by an
/// upper bound of each record's size in [`to_batch`]'s encoding (every varint counted at its
/// longest), so that a Fetch answer built from them stays within the client's limit.
pub fn fitting(records: &[KafkaRecord], max_bytes: usize) -> usize {
    let len = |b: Option<&Bytes>| b.map_or(0, |b| b.len());
    let mut used = batch::BATCH_HEADER_BYTES;
    for (i, r) in records.iter().enumerate() {
        // length, attributes, timestamp and offset deltas, key, value, header count
        let mut n = 5 + 1 + 10 + 5 + 5 + len(r.key.as_ref()) + 5 + len(r.value.as_ref()) + 5;
        n += r
            .headers
            .iter()
            .map(|(k, v)| 5 + k.len() + 5 + len(v.as_ref()))
            .sum::<usize>();
        used += n;
        if used > max_bytes {
            return i.max(1);
        }
    }
    records.len()
}

/// An uncompressed magic-2 batch holding `records` at offsets `base_offset..`.
pub fn to_batch(base_offset: i64, records: &[KafkaRecord]) -> Bytes {
    let base_ts = records.first().map_or(-1, |r| r.timestamp_ms);
    let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(-1);
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let view = batch::RecordView {
            timestamp_delta: r.timestamp_ms.wrapping_sub(base_ts),
            offset_delta: i as i64,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (&k[..], v.as_deref()))
                .collect(),
        };
        batch::put_record(&mut body, &mut scratch, &view);
    }
    let mut b = BytesMut::with_capacity(batch::BATCH_HEADER_BYTES + body.len());
    b.put_i64(base_offset);
    b.put_i32((batch::BATCH_HEADER_BYTES - 12 + body.len()) as i32);
    b.put_i32(0); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, below
    b.put_i16(0); // attributes: no codec, CreateTime
    b.put_i32(records.len() as i32 - 1);
    b.put_i64(base_ts);
    b.put_i64(max_ts);
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(records.len() as i32);
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[batch::OFFSET_ATTRIBUTES..]);
    b[batch::OFFSET_CRC..batch::OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: &Record) -> DataMessage {
        DataMessage {
            key: r.key.clone(),
            value: r.value.clone(),
            ts_ns: r.ts_ns,
            ctrl: None,
        }
    }

    fn round_trip(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> (Record, KafkaRecord) {
        let r = encode(key, value, headers, 1_700_000_000_123, None);
        let back = decode(&msg(&r));
        assert_eq!(back.key.as_deref(), key);
        assert_eq!(back.value.as_deref(), value);
        let hs: Vec<(&[u8], Option<&[u8]>)> = back
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        assert_eq!(hs, headers);
        assert_eq!(back.timestamp_ms, 1_700_000_000_123);
        (r, back)
    }

    #[test]
    fn plain_records_keep_their_bytes() {
        let (r, _) = round_trip(Some(b"k"), Some(b"v"), &[]);
        assert_eq!((&r.key[..], &r.value[..]), (&b"k"[..], &b"v"[..]));
        let (r, _) = round_trip(None, Some(b"only value"), &[]);
        assert_eq!((&r.key[..], &r.value[..]), (&b""[..], &b"only value"[..]));
        let (r, _) = round_trip(None, Some(b""), &[]);
        assert!(r.value.is_empty());
    }

    #[test]
    fn headers_nulls_and_lookalikes_round_trip() {
        let (r, _) = round_trip(
            Some(b"k"),
            Some(b"v"),
            &[(b"a", Some(b"1")), (b"a", None), (b"", Some(b""))],
        );
        assert!(r.value.starts_with(ENVELOPE_MAGIC));
        round_trip(Some(b""), Some(b"empty key"), &[]);
        round_trip(None, None, &[]);
        round_trip(Some(b"k"), None, &[(b"h", Some(b"x"))]);
        let mut tricky = ENVELOPE_MAGIC.to_vec();
        tricky.extend_from_slice(b"\x07garbage");
        round_trip(None, Some(&tricky), &[]);
    }

    #[test]
    fn foreign_values_that_look_enveloped_are_kept() {
        let mut v = ENVELOPE_MAGIC.to_vec();
        v.extend_from_slice(&[0x7f, 0x01]);
        let m = DataMessage {
            key: Bytes::new(),
            value: Bytes::from(v.clone()),
            ts_ns: 5_000_000,
            ctrl: None,
        };
        let r = decode(&m);
        assert_eq!(r.value.as_deref(), Some(&v[..]));
        assert_eq!((r.key, r.timestamp_ms), (None, 5));
    }

    #[test]
    fn batches_built_from_records_validate_and_parse_back() {
        let recs = vec![
            KafkaRecord {
                key: None,
                value: Some(Bytes::from_static(b"one")),
                headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"v")))],
                timestamp_ms: 1000,
                producer: None,
            },
            KafkaRecord {
                key: Some(Bytes::from_static(b"k")),
                value: None,
                headers: vec![],
                timestamp_ms: 990,
                producer: None,
            },
        ];
        let b = to_batch(42, &recs);
        let info = batch::validate_one(&b, 1 << 20).expect("valid batch");
        assert_eq!(info.records_count, 2);
        assert_eq!(batch::base_offset(&b), 42);
        assert_eq!(batch::last_offset_delta(&b), 1);
        let back = from_batch(&b, 1 << 20, None, 0).unwrap();
        let decoded: Vec<KafkaRecord> = back.iter().map(|r| decode(&msg(r))).collect();
        assert_eq!(decoded, recs);
    }

    use proptest::prelude::*;

    #[test]
    fn an_idempotent_batch_stamps_its_first_record_only() {
        let mut b = batch::tests_support::build_batch(&[(b"k0", b"v0"), (b"k1", b"v1")], 7);
        b[43..51].copy_from_slice(&42i64.to_be_bytes());
        b[51..53].copy_from_slice(&3i16.to_be_bytes());
        b[53..57].copy_from_slice(&100i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[batch::OFFSET_ATTRIBUTES..]);
        b[batch::OFFSET_CRC..batch::OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        let stored = from_batch(&b, 1 << 20, None, 0).unwrap();
        let back: Vec<KafkaRecord> = stored.iter().map(|r| decode(&msg(r))).collect();
        let stamp = ProducerStamp {
            producer_id: 42,
            epoch: 3,
            base_sequence: 100,
            records: 2,
        };
        assert_eq!(back[0].producer, Some(stamp));
        assert_eq!(back[1].producer, None);
        assert_eq!(back[0].value.as_deref(), Some(&b"v0"[..]));
        // The second record's envelope (it has a header) carries no stamp.
        assert_eq!(stored[1].value[ENVELOPE_MAGIC.len()] & FLAG_PRODUCER, 0);
    }

    /// Bytes that often start with the envelope magic or a piece of it, so that look-alike
    /// values are tried as often as ordinary ones.
    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let any = proptest::collection::vec(any::<u8>(), 0..24);
        (0..ENVELOPE_MAGIC.len() + 1, any.clone(), any).prop_map(|(cut, tail, other)| {
            if other.len() % 2 == 0 {
                let mut v = ENVELOPE_MAGIC[..cut].to_vec();
                v.extend_from_slice(&tail);
                v
            } else {
                other
            }
        })
    }

    fn kafka_record() -> impl Strategy<Value = KafkaRecord> {
        let header = (tricky_bytes(), proptest::option::of(tricky_bytes()));
        (
            proptest::option::of(tricky_bytes()),
            proptest::option::of(tricky_bytes()),
            proptest::collection::vec(header, 0..4),
            // Timestamps whose nanoseconds fit an i64, as SeaweedMQ's ts_ns must.
            -9_000_000_000_000i64..9_000_000_000_000,
            proptest::option::of((any::<i64>(), any::<i16>(), any::<i32>(), any::<i32>())),
        )
            .prop_map(|(key, value, headers, timestamp_ms, stamp)| KafkaRecord {
                producer: stamp.map(
                    |(producer_id, epoch, base_sequence, records)| ProducerStamp {
                        producer_id,
                        epoch,
                        base_sequence,
                        records,
                    },
                ),
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (Bytes::from(k), v.map(Bytes::from)))
                    .collect(),
                timestamp_ms,
            })
    }

    fn encode_record(r: &KafkaRecord) -> Record {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        encode(
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
            r.timestamp_ms,
            r.producer,
        )
    }

    proptest! {
        /// Every combination of null and empty key, null value, headers and look-alike magic
        /// reads back as it was written.
        #[test]
        fn any_record_round_trips(r in kafka_record()) {
            let stored = encode_record(&r);
            prop_assert_eq!(decode(&msg(&stored)), r.clone());
            // Plain records keep the producer's bytes for native readers.
            if r.headers.is_empty()
                && r.producer.is_none()
                && r.key.as_ref().is_none_or(|k| !k.is_empty())
                && r.value.as_ref().is_some_and(|v| !v.starts_with(ENVELOPE_MAGIC))
            {
                prop_assert_eq!(Some(&stored.value), r.value.as_ref());
            }
        }

        /// Records rebuilt as a batch validate and come back the same through the produce path.
        #[test]
        fn batches_of_any_records_round_trip(
            recs in proptest::collection::vec(kafka_record(), 1..6),
            base in 0i64..i64::MAX / 2,
        ) {
            // A batch's timestamps are deltas from its first: keep them within an i64.
            let first = recs[0].timestamp_ms;
            let recs: Vec<KafkaRecord> = recs
                .into_iter()
                .map(|r| KafkaRecord {
                    timestamp_ms: first.saturating_add(r.timestamp_ms % 1_000_000),
                    // Batches rebuilt for readers carry no producer.
                    producer: None,
                    ..r
                })
                .collect();
            let b = to_batch(base, &recs);
            let info = batch::validate_one(&b, 1 << 20).expect("valid batch");
            prop_assert_eq!(info.records_count as usize, recs.len());
            prop_assert_eq!(batch::base_offset(&b), base);
            let back = from_batch(&b, 1 << 20, None, 0).unwrap();
            let decoded: Vec<KafkaRecord> = back.iter().map(|r| decode(&msg(r))).collect();
            prop_assert_eq!(decoded, recs);
        }

        /// The records `fitting` keeps make a batch within the limit, unless a single record
        /// is larger than it; and it keeps as many as fit (one more would not).
        #[test]
        fn fitting_records_stay_within_the_limit(
            recs in proptest::collection::vec(kafka_record(), 1..8),
            max_bytes in 0usize..600,
        ) {
            let first = recs[0].timestamp_ms;
            let recs: Vec<KafkaRecord> = recs
                .into_iter()
                .map(|r| KafkaRecord { timestamp_ms: first, producer: None, ..r })
                .collect();
            let n = fitting(&recs, max_bytes);
            prop_assert!(n >= 1 && n <= recs.len());
            let b = to_batch(0, &recs[..n]);
            prop_assert!(n == 1 || b.len() <= max_bytes, "{} bytes > {max_bytes}", b.len());
            if n < recs.len() && n > 1 {
                // The bound is generous by at most 41 bytes a record plus 10 a header.
                let slack: usize = recs[..=n].iter().map(|r| 41 + 10 * r.headers.len()).sum();
                prop_assert!(to_batch(0, &recs[..=n]).len() + slack > max_bytes);
            }
        }

        /// Whatever a foreign writer stored, reading it never panics and never loses its bytes.
        #[test]
        fn any_message_decodes(key in tricky_bytes(), value in tricky_bytes(), ts_ns: i64) {
            let m = DataMessage {
                key: Bytes::from(key),
                value: Bytes::from(value.clone()),
                ts_ns,
                ctrl: None,
            };
            let r = decode(&m);
            if !value.starts_with(ENVELOPE_MAGIC) {
                prop_assert_eq!(r.value.as_deref(), Some(&value[..]));
            }
        }
    }
}
