//! Record batches (magic v2): validation of what a producer sends, and the few fields the broker
//! writes into a stored batch. No I/O happens here.
//!
//! Layout of a v2 batch header (all big endian):
//!
//! | offset | field                  | size |
//! |--------|------------------------|------|
//! | 0      | base_offset            | 8    |
//! | 8      | batch_length           | 4    |
//! | 12     | partition_leader_epoch | 4    |
//! | 16     | magic                  | 1    |
//! | 17     | crc (CRC-32C of 21..)  | 4    |
//! | 21     | attributes             | 2    |
//! | 23     | last_offset_delta      | 4    |
//! | 27     | base_timestamp         | 8    |
//! | 35     | max_timestamp          | 8    |
//! | 43     | producer_id            | 8    |
//! | 51     | producer_epoch         | 2    |
//! | 53     | base_sequence          | 4    |
//! | 57     | records_count          | 4    |
//! | 61     | records...             |      |

use bytes::{Bytes, BytesMut};
use std::io::Read;

/// Size of the v2 batch header that precedes the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// `base_offset` plus `batch_length`: the bytes not counted by `batch_length`.
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
pub const OFFSET_CRC: usize = 17;
pub const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused. Each maps to one Kafka error code in `crate::error`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch is truncated or its length field is wrong")]
    Truncated,
    #[error("unsupported record batch magic {0}; only magic 2 is accepted")]
    UnsupportedMagic(i8),
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("compressed records could not be decompressed: {0}")]
    Decompress(String),
    #[error("decompressed records exceed {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("records are malformed: {0}")]
    MalformedRecords(&'static str),
    #[error("batch says {declared} records but holds {actual}")]
    CountMismatch { declared: i32, actual: i32 },
    #[error("last_offset_delta {delta} does not match {count} records")]
    OffsetDeltaMismatch { delta: i32, count: i32 },
    #[error("control batches may not be produced by clients")]
    ControlBatch,
}

/// The compression codec named in a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn from_attributes(attributes: i16) -> Result<Codec, BatchError> {
        match attributes & ATTR_COMPRESSION_MASK {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(BatchError::UnknownCodec(other)),
        }
    }
}

/// What the broker needs to know of a validated batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Bytes of the whole batch, header included.
    pub size_bytes: usize,
    pub codec: Codec,
    pub records_count: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub log_append_time: bool,
    pub transactional: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchInfo {
    /// The sequence number of the batch's last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = self.base_sequence as i64 + self.records_count as i64 - 1;
        (last % (i32::MAX as i64 + 1)) as i32
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Splits a produce payload into its batches and validates each one. `decompressed_bytes_max`
/// bounds the memory a compressed batch may expand to.
pub fn split_and_validate(
    records: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<(Bytes, BatchInfo)>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < BATCH_LOG_OVERHEAD_BYTES + 5 {
            return Err(BatchError::Truncated);
        }
        let magic = rest[OFFSET_MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let batch_length = be_i32(rest, OFFSET_BATCH_LENGTH);
        if batch_length < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32 {
            return Err(BatchError::Truncated);
        }
        let size = BATCH_LOG_OVERHEAD_BYTES + batch_length as usize;
        if size > rest.len() {
            return Err(BatchError::Truncated);
        }
        let info = validate_one(&rest[..size], decompressed_bytes_max)?;
        out.push((records.slice(at..at + size), info));
        at += size;
    }
    if out.is_empty() {
        return Err(BatchError::Truncated);
    }
    Ok(out)
}

/// Validates one complete batch (exactly `batch.len()` bytes).
pub fn validate_one(batch: &[u8], decompressed_bytes_max: usize) -> Result<BatchInfo, BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated);
    }
    let magic = batch[OFFSET_MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let stored = be_u32(batch, OFFSET_CRC);
    let computed = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    let attributes = be_i16(batch, OFFSET_ATTRIBUTES);
    if attributes & ATTR_CONTROL != 0 {
        return Err(BatchError::ControlBatch);
    }
    let codec = Codec::from_attributes(attributes)?;
    let records_count = be_i32(batch, OFFSET_RECORDS_COUNT);
    let last_offset_delta = be_i32(batch, OFFSET_LAST_OFFSET_DELTA);
    if records_count <= 0 {
        return Err(BatchError::MalformedRecords(
            "a batch must hold at least one record",
        ));
    }
    if last_offset_delta != records_count - 1 {
        return Err(BatchError::OffsetDeltaMismatch {
            delta: last_offset_delta,
            count: records_count,
        });
    }
    let body = &batch[BATCH_HEADER_BYTES..];
    let actual = match codec {
        Codec::None => count_records(body)?,
        _ => {
            let plain = decompress(codec, body, decompressed_bytes_max)?;
            count_records(&plain)?
        }
    };
    if actual != records_count {
        return Err(BatchError::CountMismatch {
            declared: records_count,
            actual,
        });
    }
    Ok(BatchInfo {
        size_bytes: batch.len(),
        codec,
        records_count,
        base_timestamp: be_i64(batch, OFFSET_BASE_TIMESTAMP),
        max_timestamp: be_i64(batch, OFFSET_MAX_TIMESTAMP),
        log_append_time: attributes & ATTR_TIMESTAMP_TYPE != 0,
        transactional: attributes & ATTR_TRANSACTIONAL != 0,
        producer_id: be_i64(batch, OFFSET_PRODUCER_ID),
        producer_epoch: be_i16(batch, OFFSET_PRODUCER_EPOCH),
        base_sequence: be_i32(batch, OFFSET_BASE_SEQUENCE),
    })
}

/// Reads a zig-zag varint (Kafka's `varint`/`varlong`) at `*at`, advancing it.
pub fn read_varint(buf: &[u8], at: &mut usize) -> Result<i64, BatchError> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let Some(&byte) = buf.get(*at) else {
            return Err(BatchError::MalformedRecords("varint runs past the end"));
        };
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(BatchError::MalformedRecords("varint longer than 10 bytes"));
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

/// Appends `v` as a zig-zag varint (Kafka's `varint`/`varlong`), the inverse of [`read_varint`].
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// One record's fields as offsets into the decompressed record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Headers in wire order, duplicates kept.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// A varint-length-prefixed field (-1 = null), as records and their headers carry them.
pub fn read_bytes<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, BatchError> {
    let len = read_varint(buf, at)?;
    if len < 0 {
        return Ok(None);
    }
    let end = at
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or(BatchError::MalformedRecords("a field runs past its record"))?;
    let s = &buf[*at..end];
    *at = end;
    Ok(Some(s))
}

/// Parses every record of an uncompressed record section.
pub fn parse_records(body: &[u8]) -> Result<Vec<RecordView<'_>>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len = read_varint(body, &mut at)?;
        if len < 0 || at + len as usize > body.len() {
            return Err(BatchError::MalformedRecords(
                "record length runs past the batch",
            ));
        }
        let rec = &body[at..at + len as usize];
        at += len as usize;
        let mut p = 1usize; // attributes byte (unused in v2)
        if rec.is_empty() {
            return Err(BatchError::MalformedRecords("empty record"));
        }
        let timestamp_delta = read_varint(rec, &mut p)?;
        let offset_delta = read_varint(rec, &mut p)?;
        let key = read_bytes(rec, &mut p)?;
        let value = read_bytes(rec, &mut p)?;
        let n_headers = read_varint(rec, &mut p)?;
        if n_headers < 0 {
            return Err(BatchError::MalformedRecords("negative header count"));
        }
        let mut headers = Vec::with_capacity((n_headers as usize).min(64));
        for _ in 0..n_headers {
            let k =
                read_bytes(rec, &mut p)?.ok_or(BatchError::MalformedRecords("null header key"))?;
            let v = read_bytes(rec, &mut p)?;
            headers.push((k, v));
        }
        if p != rec.len() {
            return Err(BatchError::MalformedRecords("record has trailing bytes"));
        }
        out.push(RecordView {
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        });
    }
    Ok(out)
}

/// Walks the records of an uncompressed record section, checking each one's framing, and
/// returns how many there are. Cheaper than [`parse_records`]: nothing is collected.
pub fn count_records(body: &[u8]) -> Result<i32, BatchError> {
    let mut at = 0;
    let mut count = 0i32;
    while at < body.len() {
        let len = read_varint(body, &mut at)?;
        if len <= 0 || at + len as usize > body.len() {
            return Err(BatchError::MalformedRecords(
                "record length runs past the batch",
            ));
        }
        at += len as usize;
        count += 1;
    }
    Ok(count)
}

/// The decompressed record section of a batch (a copy; the stored batch stays compressed).
pub fn records_section(batch: &[u8], decompressed_bytes_max: usize) -> Result<Vec<u8>, BatchError> {
    let attributes = be_i16(batch, OFFSET_ATTRIBUTES);
    let codec = Codec::from_attributes(attributes)?;
    let body = &batch[BATCH_HEADER_BYTES..];
    match codec {
        Codec::None => Ok(body.to_vec()),
        _ => decompress(codec, body, decompressed_bytes_max),
    }
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn decompress(codec: Codec, body: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    fn read_limited<R: Read>(r: R, limit: usize) -> Result<Vec<u8>, BatchError> {
        let mut out = Vec::new();
        let n = r
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BatchError::Decompress(e.to_string()))?;
        if n > limit {
            return Err(BatchError::DecompressedTooLarge { limit });
        }
        Ok(out)
    }
    match codec {
        Codec::None => Ok(body.to_vec()),
        Codec::Gzip => read_limited(flate2::read::GzDecoder::new(body), limit),
        Codec::Lz4 => {
            let dec = lz4::Decoder::new(body).map_err(|e| BatchError::Decompress(e.to_string()))?;
            read_limited(dec, limit)
        }
        Codec::Zstd => {
            let dec = zstd::stream::read::Decoder::new(body)
                .map_err(|e| BatchError::Decompress(e.to_string()))?;
            read_limited(dec, limit)
        }
        Codec::Snappy => {
            if body.starts_with(XERIAL_MAGIC) {
                // Java's xerial framing: 16-byte header, then (u32 length, raw block) chunks.
                let mut out = Vec::new();
                let mut at = 16usize;
                if body.len() < at {
                    return Err(BatchError::Decompress("short xerial header".into()));
                }
                while at < body.len() {
                    if at + 4 > body.len() {
                        return Err(BatchError::Decompress("short xerial chunk".into()));
                    }
                    let n = be_u32(body, at) as usize;
                    at += 4;
                    if at + n > body.len() {
                        return Err(BatchError::Decompress("xerial chunk past end".into()));
                    }
                    let chunk = &body[at..at + n];
                    at += n;
                    let len = snap::raw::decompress_len(chunk)
                        .map_err(|e| BatchError::Decompress(e.to_string()))?;
                    if out.len() + len > limit {
                        return Err(BatchError::DecompressedTooLarge { limit });
                    }
                    let start = out.len();
                    out.resize(start + len, 0);
                    snap::raw::Decoder::new()
                        .decompress(chunk, &mut out[start..])
                        .map_err(|e| BatchError::Decompress(e.to_string()))?;
                }
                Ok(out)
            } else {
                let len = snap::raw::decompress_len(body)
                    .map_err(|e| BatchError::Decompress(e.to_string()))?;
                if len > limit {
                    return Err(BatchError::DecompressedTooLarge { limit });
                }
                snap::raw::Decoder::new()
                    .decompress_vec(body)
                    .map_err(|e| BatchError::Decompress(e.to_string()))
            }
        }
    }
}

/// Copies a validated batch into storage form: the broker-assigned base offset and leader epoch
/// written in, and for `LogAppendTime` topics the append time as max timestamp (with the
/// attribute bit and a fresh CRC, since both lie inside the CRC's range).
pub fn stamp(batch: &[u8], base_offset: i64, log_append_time_ms: Option<i64>) -> Bytes {
    let mut b = BytesMut::from(batch);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&0i32.to_be_bytes());
    if let Some(ts) = log_append_time_ms {
        let attrs = be_i16(&b, OFFSET_ATTRIBUTES) | ATTR_TIMESTAMP_TYPE;
        b[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        b[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&ts.to_be_bytes());
        let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
        b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    b.freeze()
}

/// A stored batch with only `kept` of its records (views into its own records section), for
/// log compaction: uncompressed, with everything else of its header as it was (base offset,
/// last offset delta, timestamps, producer), so offsets, and the batch's last offset, stay.
pub fn rebuild(batch: &[u8], kept: &[RecordView<'_>]) -> Bytes {
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    for r in kept {
        put_record(&mut body, &mut scratch, r);
    }
    let mut b = BytesMut::with_capacity(BATCH_HEADER_BYTES + body.len());
    b.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    let length = (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + body.len()) as i32;
    b[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let attrs = be_i16(batch, OFFSET_ATTRIBUTES) & !ATTR_COMPRESSION_MASK;
    b[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    let count = kept.len() as i32;
    b[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
    b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Appends one record, length-prefixed, in the v2 record encoding (`scratch` is reused between
/// calls to build it).
pub fn put_record(body: &mut Vec<u8>, scratch: &mut Vec<u8>, r: &RecordView<'_>) {
    scratch.clear();
    scratch.push(0); // record attributes (unused)
    put_varint(scratch, r.timestamp_delta);
    put_varint(scratch, r.offset_delta);
    put_field(scratch, r.key);
    put_field(scratch, r.value);
    put_varint(scratch, r.headers.len() as i64);
    for (k, v) in &r.headers {
        put_field(scratch, Some(k));
        put_field(scratch, *v);
    }
    put_varint(body, scratch.len() as i64);
    body.extend_from_slice(scratch);
}

/// A varint-length-prefixed field, -1 for null.
pub fn put_field(out: &mut Vec<u8>, f: Option<&[u8]>) {
    match f {
        Some(f) => {
            put_varint(out, f.len() as i64);
            out.extend_from_slice(f);
        }
        None => put_varint(out, -1),
    }
}

/// The (producer id, epoch, base sequence) of an idempotent producer's batch; `None` for a
/// batch without a producer id.
pub fn producer_stamp(batch: &[u8]) -> Option<(i64, i16, i32)> {
    let id = be_i64(batch, OFFSET_PRODUCER_ID);
    (id >= 0).then(|| {
        (
            id,
            be_i16(batch, OFFSET_PRODUCER_EPOCH),
            be_i32(batch, OFFSET_BASE_SEQUENCE),
        )
    })
}

/// Reads the base offset of a stored batch.
pub fn base_offset(batch: &[u8]) -> i64 {
    be_i64(batch, 0)
}

/// Reads `last_offset_delta` of a stored batch.
pub fn last_offset_delta(batch: &[u8]) -> i32 {
    be_i32(batch, OFFSET_LAST_OFFSET_DELTA)
}

/// Reads a batch's base timestamp.
pub fn base_timestamp(batch: &[u8]) -> i64 {
    be_i64(batch, OFFSET_BASE_TIMESTAMP)
}

/// Reads a batch's max timestamp.
pub fn max_timestamp(batch: &[u8]) -> i64 {
    be_i64(batch, OFFSET_MAX_TIMESTAMP)
}

/// True when the batch's timestamps are log-append times.
pub fn is_log_append_time(batch: &[u8]) -> bool {
    be_i16(batch, OFFSET_ATTRIBUTES) & ATTR_TIMESTAMP_TYPE != 0
}

/// Batches for tests (the unit tests here and the integration tests under `tests/`); the
/// broker never calls this.
#[doc(hidden)]
pub mod tests_support {
    use super::*;

    /// A record for the test batches: key and value, `None` for null.
    pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// Builds an uncompressed v2 batch by hand (valid CRC, one header per record) so the tests
    /// do not depend on another encoder.
    pub fn build_batch(records: &[(&[u8], &[u8])], base_ts: i64) -> Vec<u8> {
        let keyed: Vec<TestRecord<'_>> = records.iter().map(|&(k, v)| (Some(k), Some(v))).collect();
        build_batch_nullable(&keyed, base_ts)
    }

    /// As [`build_batch`], with null keys where a record's key is `None`.
    pub fn build_batch_keys(records: &[(Option<&[u8]>, &[u8])], base_ts: i64) -> Vec<u8> {
        let keyed: Vec<TestRecord<'_>> = records.iter().map(|&(k, v)| (k, Some(v))).collect();
        build_batch_nullable(&keyed, base_ts)
    }

    /// As [`build_batch`], with null keys and values (tombstones) where they are `None`.
    pub fn build_batch_nullable(records: &[TestRecord<'_>], base_ts: i64) -> Vec<u8> {
        let varint = put_varint;
        let mut body = Vec::new();
        for (i, (k, v)) in records.iter().enumerate() {
            let mut r = vec![0u8];
            varint(&mut r, i as i64); // timestamp delta
            varint(&mut r, i as i64); // offset delta
            match k {
                Some(k) => {
                    varint(&mut r, k.len() as i64);
                    r.extend_from_slice(k);
                }
                None => varint(&mut r, -1),
            }
            match v {
                Some(v) => {
                    varint(&mut r, v.len() as i64);
                    r.extend_from_slice(v);
                }
                None => varint(&mut r, -1),
            }
            varint(&mut r, 1);
            varint(&mut r, 1);
            r.extend_from_slice(b"h");
            varint(&mut r, -1);
            varint(&mut body, r.len() as i64);
            body.extend_from_slice(&r);
        }
        let n = records.len() as i32;
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&(base_ts + n as i64 - 1).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
        b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::build_batch;
    use super::*;

    #[test]
    fn valid_batch_is_accepted_and_parsed() {
        let b = build_batch(&[(b"k1", b"v1"), (b"k2", b"v2")], 1000);
        let info = validate_one(&b, 1 << 20).unwrap();
        assert_eq!(info.records_count, 2);
        assert_eq!(info.codec, Codec::None);
        let recs = parse_records(&b[BATCH_HEADER_BYTES..]).unwrap();
        assert_eq!(recs[1].key, Some(&b"k2"[..]));
        assert_eq!(recs[1].headers, vec![(&b"h"[..], None)]);
    }

    #[test]
    fn crc_mismatch_is_detected() {
        let mut b = build_batch(&[(b"k", b"v")], 1);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            validate_one(&b, 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn count_mismatch_and_truncation_are_detected() {
        let b = build_batch(&[(b"k", b"v")], 1);
        let all = Bytes::from(b.clone());
        assert!(split_and_validate(&all.slice(..all.len() - 1), 1 << 20).is_err());
        let mut wrong = b.clone();
        wrong[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4].copy_from_slice(&2i32.to_be_bytes());
        wrong[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&1i32.to_be_bytes());
        let crc = crc32c::crc32c(&wrong[OFFSET_ATTRIBUTES..]);
        wrong[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_one(&wrong, 1 << 20),
            Err(BatchError::CountMismatch { .. })
        ));
    }

    #[test]
    fn stamp_writes_offset_and_keeps_crc_valid() {
        let b = build_batch(&[(b"k", b"v")], 5);
        let s = stamp(&b, 42, None);
        assert_eq!(base_offset(&s), 42);
        validate_one(&s, 1 << 20).unwrap();
        let s = stamp(&b, 7, Some(123456));
        assert!(is_log_append_time(&s));
        assert_eq!(max_timestamp(&s), 123456);
        validate_one(&s, 1 << 20).unwrap();
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![0u8; 1 << 20]).unwrap();
        let z = enc.finish().unwrap();
        assert!(matches!(
            decompress(Codec::Gzip, &z, 1024),
            Err(BatchError::DecompressedTooLarge { .. })
        ));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::io::Write;

        /// A record as the tests write it: key, value, headers.
        type Rec = (
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Vec<(Vec<u8>, Option<Vec<u8>>)>,
        );

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(any::<u8>(), 0..40)
        }

        fn record() -> impl Strategy<Value = Rec> {
            let header = (bytes(), proptest::option::of(bytes()));
            (
                proptest::option::of(bytes()),
                proptest::option::of(bytes()),
                proptest::collection::vec(header, 0..3),
            )
        }

        fn compress(codec: i16, body: &[u8]) -> Vec<u8> {
            match codec {
                0 => body.to_vec(),
                1 => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    e.write_all(body).unwrap();
                    e.finish().unwrap()
                }
                2 => snap::raw::Encoder::new().compress_vec(body).unwrap(),
                3 => {
                    let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                    e.write_all(body).unwrap();
                    e.finish().0
                }
                _ => zstd::encode_all(body, 1).unwrap(),
            }
        }

        fn put(out: &mut Vec<u8>, b: Option<&[u8]>) {
            match b {
                Some(b) => {
                    put_varint(out, b.len() as i64);
                    out.extend_from_slice(b);
                }
                None => put_varint(out, -1),
            }
        }

        /// A v2 batch of `recs` under `codec`, written field by field from the protocol's
        /// layout (not with the code under test).
        fn encode(recs: &[Rec], codec: i16, producer: (i64, i16, i32)) -> Vec<u8> {
            let mut body = Vec::new();
            for (i, (k, v, hs)) in recs.iter().enumerate() {
                let mut r = vec![0u8];
                put_varint(&mut r, i as i64 * 3); // timestamp delta
                put_varint(&mut r, i as i64); // offset delta
                put(&mut r, k.as_deref());
                put(&mut r, v.as_deref());
                put_varint(&mut r, hs.len() as i64);
                for (hk, hv) in hs {
                    put(&mut r, Some(hk));
                    put(&mut r, hv.as_deref());
                }
                put_varint(&mut body, r.len() as i64);
                body.extend_from_slice(&r);
            }
            let body = compress(codec, &body);
            let n = recs.len() as i32;
            let mut b = Vec::new();
            b.extend_from_slice(&0i64.to_be_bytes());
            b.extend_from_slice(&((BATCH_HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.push(2);
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&codec.to_be_bytes());
            b.extend_from_slice(&(n - 1).to_be_bytes());
            b.extend_from_slice(&1000i64.to_be_bytes());
            b.extend_from_slice(&(1000 + 3 * (n as i64 - 1)).to_be_bytes());
            b.extend_from_slice(&producer.0.to_be_bytes());
            b.extend_from_slice(&producer.1.to_be_bytes());
            b.extend_from_slice(&producer.2.to_be_bytes());
            b.extend_from_slice(&n.to_be_bytes());
            b.extend_from_slice(&body);
            let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
            b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            b
        }

        fn parsed(batch: &[u8]) -> Vec<Rec> {
            let section = records_section(batch, 1 << 20).expect("records section");
            parse_records(&section)
                .expect("records parse")
                .into_iter()
                .map(|r| {
                    let hs = r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect();
                    (r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), hs)
                })
                .collect()
        }

        proptest! {
            /// Any records under any codec validate, report what the header says, and parse
            /// back to what was written.
            #[test]
            fn any_batch_validates_and_parses_back(
                recs in proptest::collection::vec(record(), 1..8),
                codec in 0i16..5,
                producer in (any::<i64>(), any::<i16>(), any::<i32>()),
            ) {
                let b = encode(&recs, codec, producer);
                let info = validate_one(&b, 1 << 20).expect("valid batch");
                prop_assert_eq!(info.records_count as usize, recs.len());
                prop_assert_eq!(info.codec, Codec::from_attributes(codec).unwrap());
                prop_assert_eq!(
                    (info.producer_id, info.producer_epoch, info.base_sequence),
                    producer
                );
                prop_assert_eq!(parsed(&b), recs);
                let all = Bytes::from([b.clone(), b.clone()].concat());
                prop_assert_eq!(split_and_validate(&all, 1 << 20).unwrap().len(), 2);
            }

            /// A batch rebuilt with any subset of its records (compaction) holds exactly those,
            /// each at its own offset, under a valid CRC, with its header's base offset, last
            /// offset delta, timestamps and producer unchanged, whatever codec it came in.
            #[test]
            fn rebuilt_batches_keep_the_chosen_records_at_their_offsets(
                recs in proptest::collection::vec(record(), 1..8),
                keep in proptest::collection::vec(any::<bool>(), 8),
                codec in 0i16..5,
                producer in (any::<i64>(), any::<i16>(), any::<i32>()),
            ) {
                let b = encode(&recs, codec, producer);
                let section = records_section(&b, 1 << 20).unwrap();
                let views = parse_records(&section).unwrap();
                let kept: Vec<RecordView<'_>> = views
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(v, _)| v.clone())
                    .collect();
                let r = rebuild(&b, &kept);
                let stored = u32::from_be_bytes(r[OFFSET_CRC..OFFSET_ATTRIBUTES].try_into().unwrap());
                prop_assert_eq!(crc32c::crc32c(&r[OFFSET_ATTRIBUTES..]), stored);
                prop_assert_eq!(&r[..8], &b[..8]);
                prop_assert_eq!(last_offset_delta(&r), last_offset_delta(&b));
                prop_assert_eq!(base_timestamp(&r), base_timestamp(&b));
                prop_assert_eq!(max_timestamp(&r), max_timestamp(&b));
                prop_assert_eq!(producer_stamp(&r), producer_stamp(&b));
                let back = records_section(&r, 1 << 20).unwrap();
                let back = parse_records(&back).unwrap();
                prop_assert_eq!(back, kept);
            }

            /// Stamping writes the offset (and the append time), keeps the CRC valid and the
            /// records as they were.
            #[test]
            fn stamping_keeps_batches_valid(
                recs in proptest::collection::vec(record(), 1..4),
                codec in 0i16..5,
                base in 0i64..i64::MAX,
                append_time in proptest::option::of(0i64..i64::MAX),
            ) {
                let b = encode(&recs, codec, (-1, -1, -1));
                let s = stamp(&b, base, append_time);
                validate_one(&s, 1 << 20).expect("stamped batch stays valid");
                prop_assert_eq!(base_offset(&s), base);
                prop_assert_eq!(is_log_append_time(&s), append_time.is_some());
                if let Some(t) = append_time {
                    prop_assert_eq!(max_timestamp(&s), t);
                }
                prop_assert_eq!(parsed(&s), recs);
            }

            /// Any change to a byte the CRC covers (or to the CRC) is refused.
            #[test]
            fn any_corrupted_byte_is_refused(
                recs in proptest::collection::vec(record(), 1..4),
                codec in 0i16..5,
                at in any::<proptest::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let mut b = encode(&recs, codec, (-1, -1, -1));
                let i = OFFSET_CRC + at.index(b.len() - OFFSET_CRC);
                b[i] ^= flip;
                let crc_refused = matches!(
                    validate_one(&b, 1 << 20),
                    Err(BatchError::CrcMismatch { .. })
                );
                prop_assert!(crc_refused);
            }

            /// Bytes that are not a batch, or a batch whose records are garbage under a valid
            /// CRC, get an error, never a panic.
            #[test]
            fn garbage_never_panics(
                junk in proptest::collection::vec(any::<u8>(), 0..200),
                codec in 0i16..8,
                count in any::<i32>(),
            ) {
                let _ = split_and_validate(&Bytes::from(junk.clone()), 1 << 16);
                let mut b = encode(&[(None, None, vec![])], 0, (-1, -1, -1));
                b.truncate(BATCH_HEADER_BYTES);
                b.extend_from_slice(&junk);
                let len = (b.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
                b[8..12].copy_from_slice(&len.to_be_bytes());
                b[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&codec.to_be_bytes());
                b[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
                    .copy_from_slice(&count.wrapping_sub(1).to_be_bytes());
                b[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
                let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
                b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
                let _ = validate_one(&b, 1 << 16);
                let _ = split_and_validate(&Bytes::from(b), 1 << 16);
            }
        }
    }
}
