//! Several kelp instances in front of one SeaweedMQ: who is alive, and who owns what.
//!
//! A [`ClusterView`] is one instance's picture of the live members, found through the SeaweedFS
//! filer (each member holds a lock there and writes an entry with its address; see
//! `shard::seaweed::membership`). Every partition and every consumer group has exactly one
//! owning member, a pure function of the live member set: rendezvous hashing ([`owner_of`]),
//! so that a member joining or leaving moves only the partitions it gains or loses. A group
//! belongs with the partition of kelp's offsets topic that holds its commits.
//!
//! A member keeps serving a partition it serves while it still owns it and its lease holds
//! ([`ClusterView::may_keep`]); it starts serving one only when, in addition, the view is
//! settled (every live member has taken this member set in and let go of what it lost) and
//! its own start-up grace is over ([`ClusterView::may_take`]). Why that is enough for two
//! members never to write one partition at once, and what it assumes of clocks, is in
//! ARCHITECTURE.md ("Several kelp instances").

use std::time::Instant;

/// One live kelp instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// One instance's picture of the cluster; installed on every shard, replaced whole.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This instance's node id.
    pub self_id: i32,
    /// The live members, by id (this one among them while its lease holds).
    pub members: Vec<Member>,
    /// Every live member has taken this member set in (and let go of what it lost).
    pub settled: bool,
    /// The view may be acted on until then; `None`: for ever (one instance without a filer,
    /// or the memory backend).
    pub valid_until: Option<Instant>,
    /// Nothing is taken before then: a member that (re)gained its lock waits for the lease of
    /// any member the filer may have forgotten to run out.
    pub take_from: Option<Instant>,
    /// Partitions of kelp's offsets topic (groups are spread over them); 0 until known.
    pub offsets_partitions: i32,
}

impl ClusterView {
    /// One instance on its own, for ever.
    pub fn single(me: Member) -> ClusterView {
        ClusterView {
            self_id: me.id,
            members: vec![me],
            settled: true,
            valid_until: None,
            take_from: None,
            offsets_partitions: 1,
        }
    }

    /// No member at all: serve nothing (before joining, and while leaving).
    pub fn none(self_id: i32, offsets_partitions: i32) -> ClusterView {
        ClusterView {
            self_id,
            members: Vec::new(),
            settled: false,
            valid_until: None,
            take_from: None,
            offsets_partitions,
        }
    }

    /// Whether this instance may act on the view now (its lease holds).
    pub fn valid(&self, now: Instant) -> bool {
        self.valid_until.is_none_or(|t| now < t)
    }

    /// A hash of the member set, as members acknowledge it to each other.
    pub fn members_hash(&self) -> u64 {
        members_hash(self.members.iter().map(|m| m.id))
    }

    /// The member that owns `key` (a partition's or group's), if any member is alive.
    pub fn owner(&self, key: &[u8]) -> Option<i32> {
        owner_of(self.members.iter().map(|m| m.id), key)
    }

    /// Whether this instance may go on serving `key`, which it serves now.
    pub fn may_keep(&self, key: &[u8], now: Instant) -> bool {
        self.valid(now) && self.owner(key) == Some(self.self_id)
    }

    /// Whether this instance may start serving `key`.
    pub fn may_take(&self, key: &[u8], now: Instant) -> bool {
        self.settled && self.take_from.is_none_or(|t| now >= t) && self.may_keep(key, now)
    }

    pub fn member(&self, id: i32) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// The ownership key of a partition.
pub fn partition_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Rendezvous (highest random weight) hashing: the member whose hash with `key` is highest.
/// Adding or removing a member moves only the keys it gains or held.
pub fn owner_of(members: impl IntoIterator<Item = i32>, key: &[u8]) -> Option<i32> {
    members
        .into_iter()
        .map(|m| (score(m, key), std::cmp::Reverse(m)))
        .max()
        .map(|(_, std::cmp::Reverse(m))| m)
}

fn score(member: i32, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in member.to_be_bytes().iter().chain(key) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    // The splitmix64 finalizer: FNV's low bits alone spread poorly over a few members.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
    h ^ (h >> 31)
}

/// A hash of a member set (order does not matter).
pub fn members_hash(ids: impl IntoIterator<Item = i32>) -> u64 {
    let mut ids: Vec<i32> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h: u64 = 0xcbf29ce484222325;
    for id in ids {
        for b in id.to_be_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn member(id: i32) -> Member {
        Member {
            id,
            host: "h".into(),
            port: 9000 + id,
        }
    }

    #[test]
    fn ownership_spreads_and_moves_little() {
        let keys: Vec<Vec<u8>> = (0..3000).map(|p| partition_key("t", p)).collect();
        let three: Vec<i32> = vec![1, 2, 3];
        let mut counts = [0usize; 4];
        for k in &keys {
            counts[owner_of(three.clone(), k).unwrap() as usize] += 1;
        }
        assert!(counts[1..].iter().all(|&c| c > 800), "{counts:?}");
        // Member 3 leaves: only its keys move, and they spread over the others.
        let mut moved = 0;
        for k in &keys {
            let before = owner_of(three.clone(), k).unwrap();
            let after = owner_of([1, 2], k).unwrap();
            if before != after {
                assert_eq!(before, 3);
                moved += 1;
            }
        }
        assert_eq!(moved, counts[3]);
        assert_eq!(owner_of([], &keys[0]), None);
    }

    #[test]
    fn a_member_keeps_what_it_owns_while_its_lease_holds_and_takes_only_when_settled() {
        let now = Instant::now();
        let mut v = ClusterView {
            self_id: 1,
            members: vec![member(1), member(2)],
            settled: true,
            valid_until: Some(now + Duration::from_secs(5)),
            take_from: Some(now),
            offsets_partitions: 1,
        };
        let mine = (0..100)
            .map(|p| partition_key("t", p))
            .find(|k| v.owner(k) == Some(1))
            .unwrap();
        let theirs = (0..100)
            .map(|p| partition_key("t", p))
            .find(|k| v.owner(k) == Some(2))
            .unwrap();
        assert!(v.may_take(&mine, now) && v.may_keep(&mine, now));
        assert!(!v.may_take(&theirs, now) && !v.may_keep(&theirs, now));
        let later = now + Duration::from_secs(6);
        assert!(!v.may_keep(&mine, later), "lease over");
        // Member 2 left: 1 owns its partitions, but takes them only once settled.
        v.members = vec![member(1)];
        v.settled = false;
        assert!(!v.may_take(&theirs, now));
        assert!(
            v.may_keep(&mine, now),
            "what it serves stays served meanwhile"
        );
        v.settled = true;
        assert!(v.may_take(&theirs, now));
        v.take_from = Some(now + Duration::from_secs(1));
        assert!(!v.may_take(&theirs, now), "start-up grace");
        assert!(!ClusterView::none(1, 1).may_keep(&mine, now));
    }
}
