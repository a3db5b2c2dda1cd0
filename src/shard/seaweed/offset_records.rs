//! The record layout of committed offsets in SeaweedMQ (the key and value of a message in
//! [`super::OFFSETS_TOPIC`]; its `ts_ns` is the commit time):
//! - key: `group length: varint | group | topic length: varint | topic | partition: i32 BE`
//! - value: `version (1): u8 | offset: i64 BE | leader epoch: i32 BE | commit time ms: i64 BE
//!   | metadata flag: u8 (0 = null, 1 = present) | metadata (UTF-8, the rest)`
//!
//! An empty value is a tombstone (DeleteGroups, OffsetDelete). Nothing here does I/O.

use crate::protocol::batch::{put_varint, read_bytes};
use bytes::Bytes;

const VALUE_VERSION: u8 = 1;

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut k = Vec::with_capacity(group.len() + topic.len() + 8);
    put_varint(&mut k, group.len() as i64);
    k.extend_from_slice(group.as_bytes());
    put_varint(&mut k, topic.len() as i64);
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    Bytes::from(k)
}

pub fn decode_key(k: &[u8]) -> Option<(String, String, i32)> {
    let mut at = 0;
    let string = |at: &mut usize| -> Option<String> {
        let s = read_bytes(k, at).ok()??;
        std::str::from_utf8(s).ok().map(str::to_string)
    };
    let group = string(&mut at)?;
    let topic = string(&mut at)?;
    let p = i32::from_be_bytes(k.get(at..at + 4)?.try_into().ok()?);
    (at + 4 == k.len()).then_some((group, topic, p))
}

pub fn encode_value(
    offset: i64,
    leader_epoch: i32,
    commit_ms: i64,
    metadata: Option<&str>,
) -> Bytes {
    let mut v = Vec::with_capacity(22 + metadata.map_or(0, str::len));
    v.push(VALUE_VERSION);
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&leader_epoch.to_be_bytes());
    v.extend_from_slice(&commit_ms.to_be_bytes());
    match metadata {
        Some(m) => {
            v.push(1);
            v.extend_from_slice(m.as_bytes());
        }
        None => v.push(0),
    }
    Bytes::from(v)
}

/// A stored commit: (offset, leader epoch, commit time ms, metadata).
pub type StoredCommit = (i64, i32, i64, Option<String>);

/// `Some(None)` is a tombstone; `None` a value kelp cannot read (skipped with a warning).
pub fn decode_value(v: &[u8]) -> Option<Option<StoredCommit>> {
    if v.is_empty() {
        return Some(None);
    }
    if v.len() < 22 || v[0] != VALUE_VERSION {
        return None;
    }
    let offset = i64::from_be_bytes(v[1..9].try_into().ok()?);
    let epoch = i32::from_be_bytes(v[9..13].try_into().ok()?);
    let ms = i64::from_be_bytes(v[13..21].try_into().ok()?);
    let metadata = match v[21] {
        0 => None,
        1 => Some(std::str::from_utf8(&v[22..]).ok()?.to_string()),
        _ => return None,
    };
    Some(Some((offset, epoch, ms, metadata)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = encode_key("g1", "orders", 7);
        assert_eq!(decode_key(&k), Some(("g1".into(), "orders".into(), 7)));
        assert_eq!(decode_key(&k[..k.len() - 1]), None);
        let v = encode_value(42, 3, 1_700_000_000_000, Some("meta"));
        assert_eq!(
            decode_value(&v),
            Some(Some((42, 3, 1_700_000_000_000, Some("meta".into()))))
        );
        let v = encode_value(-1, -1, 0, None);
        assert_eq!(decode_value(&v), Some(Some((-1, -1, 0, None))));
        assert_eq!(decode_value(b""), Some(None));
        assert_eq!(decode_value(b"\x09garbage"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_key_round_trips(group in ".{0,40}", topic in ".{0,40}", partition: i32) {
            let k = encode_key(&group, &topic, partition);
            proptest::prop_assert_eq!(decode_key(&k), Some((group, topic, partition)));
            // Any shorter prefix is refused, never misread.
            for cut in 0..k.len() {
                proptest::prop_assert_eq!(decode_key(&k[..cut]), None);
            }
        }

        #[test]
        fn any_value_round_trips(
            offset: i64,
            epoch: i32,
            commit_ms: i64,
            metadata in proptest::option::of(".{0,64}"),
        ) {
            let v = encode_value(offset, epoch, commit_ms, metadata.as_deref());
            proptest::prop_assert_eq!(
                decode_value(&v),
                Some(Some((offset, epoch, commit_ms, metadata)))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_key(&bytes);
            let _ = decode_value(&bytes);
        }
    }
}
