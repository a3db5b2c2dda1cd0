//! The record layout of committed offsets in SeaweedMQ (the key and value of a message in
//! [`super::OFFSETS_TOPIC`]; its `ts_ns` is the commit time):
//! - key: `group length: varint | group | topic length: varint | topic | partition: i32 BE`
//! - value: `version (1): u8 | offset: i64 BE | leader epoch: i32 BE | commit time ms: i64 BE
//!   | metadata flag: u8 (0 = null, 1 = present) | metadata (UTF-8, the rest)`
//!
//! An empty value is a tombstone (DeleteGroups, OffsetDelete).
//!
//! With a filer, a group's committed offsets are one filer entry instead (see
//! [`super::offset_entries`]), named [`entry_name`], rewritten whole on every commit:
//! - entry: `version (1): u8 | written ms: i64 BE | group length: varint | group
//!   | count: varint | count x (topic length: varint | topic | partition: i32 BE
//!   | value length: varint | value, the layout above)`
//!
//! An entry with no offsets is the group's tombstone. Nothing here does I/O.

use crate::protocol::batch::{put_varint, read_bytes, read_varint};
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

const ENTRY_VERSION: u8 = 1;

/// Entry names longer than this are shortened (filers refuse names over 255 bytes by default).
const ENTRY_NAME_MAX: usize = 200;

/// A group's committed offsets as one filer entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub group: String,
    /// When it was written (wall clock, ms): a tombstone expires with the offsets retention.
    pub written_ms: i64,
    /// (topic, partition, commit).
    pub offsets: Vec<(String, i32, StoredCommit)>,
}

impl GroupEntry {
    pub fn encode(&self) -> Bytes {
        let mut e = Vec::with_capacity(32 + self.group.len() + 48 * self.offsets.len());
        e.push(ENTRY_VERSION);
        e.extend_from_slice(&self.written_ms.to_be_bytes());
        put_str(&mut e, &self.group);
        put_varint(&mut e, self.offsets.len() as i64);
        for (topic, partition, (offset, epoch, ms, metadata)) in &self.offsets {
            put_str(&mut e, topic);
            e.extend_from_slice(&partition.to_be_bytes());
            let value = encode_value(*offset, *epoch, *ms, metadata.as_deref());
            put_varint(&mut e, value.len() as i64);
            e.extend_from_slice(&value);
        }
        Bytes::from(e)
    }

    /// `None` for anything kelp did not write (skipped with a warning by the caller).
    pub fn decode(e: &[u8]) -> Option<GroupEntry> {
        if e.first() != Some(&ENTRY_VERSION) {
            return None;
        }
        let written_ms = i64::from_be_bytes(e.get(1..9)?.try_into().ok()?);
        let mut at = 9;
        let group = read_str(e, &mut at)?;
        let count = read_varint(e, &mut at).ok()?;
        // Not preallocated from the count: a lying count runs out of bytes instead.
        let mut offsets = Vec::new();
        for _ in 0..count {
            let topic = read_str(e, &mut at)?;
            let partition = i32::from_be_bytes(e.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            let value = read_bytes(e, &mut at).ok()??;
            offsets.push((topic, partition, decode_value(value)??));
        }
        (at == e.len()).then_some(GroupEntry {
            group,
            written_ms,
            offsets,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn read_str(buf: &[u8], at: &mut usize) -> Option<String> {
    let s = read_bytes(buf, at).ok()??;
    std::str::from_utf8(s).ok().map(str::to_string)
}

/// The filer entry name of a group's offsets: `g.` and the group id with every byte outside
/// `[A-Za-z0-9._-]` as `%XX`; a name that would be longer than [`ENTRY_NAME_MAX`] is `h.`,
/// its first part and two hashes of the whole id. The entry's content names the group, so a
/// reader never takes one group's offsets for another's.
pub fn entry_name(group: &str) -> String {
    let mut name = String::with_capacity(group.len() + 2);
    name.push_str("g.");
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() <= ENTRY_NAME_MAX {
        return name;
    }
    let hash = |seed: u64| {
        group.bytes().fold(seed, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x6c62_272e_07bb_0142));
    format!("h.{}.{a:016x}{b:016x}", &name[2..ENTRY_NAME_MAX - 40])
}

/// Whether a filer entry name is a group's (the directory holds other entries too).
pub fn is_entry_name(name: &str) -> bool {
    name.starts_with("g.") || name.starts_with("h.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_safe_bounded_and_distinct() {
        assert_eq!(entry_name("orders-app.v2_x"), "g.orders-app.v2_x");
        assert_eq!(entry_name("a/b c"), "g.a%2Fb%20c");
        assert_eq!(entry_name(".."), "g..."); // never a dot segment
        assert_eq!(entry_name(""), "g.");
        let long = "x".repeat(500);
        let name = entry_name(&long);
        assert!(name.len() <= ENTRY_NAME_MAX && name.starts_with("h."));
        assert_ne!(name, entry_name(&format!("{long}y")));
        assert!(is_entry_name(&name) && !is_entry_name("migrated"));
    }

    #[test]
    fn entries_round_trip_and_refuse_garbage() {
        let e = GroupEntry {
            group: "g1".into(),
            written_ms: 1_700_000_000_000,
            offsets: vec![
                ("t".into(), 0, (42, 3, 1_699_999_999_000, Some("m".into()))),
                ("u".into(), 7, (-1, -1, 5, None)),
            ],
        };
        let bytes = e.encode();
        assert_eq!(GroupEntry::decode(&bytes), Some(e));
        for cut in 0..bytes.len() {
            assert_eq!(GroupEntry::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(GroupEntry::decode(&longer), None);
    }

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
            let _ = GroupEntry::decode(&bytes);
        }

        #[test]
        fn any_entry_round_trips(
            group in ".{0,40}",
            written_ms: i64,
            offsets in proptest::collection::vec(
                (".{0,20}", proptest::num::i32::ANY, proptest::num::i64::ANY,
                 proptest::num::i32::ANY, proptest::num::i64::ANY,
                 proptest::option::of(".{0,20}")),
                0..8,
            ),
        ) {
            let e = GroupEntry {
                group,
                written_ms,
                offsets: offsets
                    .into_iter()
                    .map(|(t, p, o, ep, ms, m)| (t, p, (o, ep, ms, m)))
                    .collect(),
            };
            proptest::prop_assert_eq!(GroupEntry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn entry_names_are_distinct_per_group(a in ".{0,120}", b in ".{0,120}") {
            let name = entry_name(&a);
            proptest::prop_assert!(name.len() <= ENTRY_NAME_MAX && is_entry_name(&name));
            proptest::prop_assert!(!name.contains('/'));
            if a != b {
                proptest::prop_assert_ne!(name, entry_name(&b));
            }
        }
    }
}
