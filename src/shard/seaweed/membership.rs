//! Cluster membership on the SeaweedMQ backend, run by shard 0 (see `crate::cluster` for the
//! rules a view follows, and ARCHITECTURE.md, "Several kelp instances", for why they hold).
//!
//! Each instance holds the filer lock `kelp/<cluster>/member/<node id>` (renewed every poll,
//! `--member-lease-ms`) and writes the entry `/kelp/clusters/<cluster>/members/<node id>`: the
//! lock's owner tag, its advertised address, and the hash of the member set it has taken in
//! (its ack). A member is alive while the filer says its lock is held by the tag its entry
//! names. Every poll an instance renews its lease, lists the entries, asks the filer who holds
//! each lock, and installs the resulting view on every shard; once its shards have let go of
//! everything the member set took from it, it acks that set in its entry. A set is settled
//! when every live member has acked it, seen in two polls in a row with a successful renewal
//! in between (a filer that forgot its locks fails that renewal before anything is taken).

use crate::cluster::{members_hash, ClusterView, Member};
use crate::config::limits;
use crate::seaweedmq::filer::LockAnswer;
use crate::shard::{Op, Reply, Shard};
use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A member's entry in the filer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// The owner tag its lock is held under (`<id>@<host>:<port>#<uuid>`, new every start).
    pub owner: String,
    pub host: String,
    pub port: i32,
    /// The hash of the member set it has taken in and let go for (0: none yet).
    pub acked: u64,
}

const ENTRY_MAGIC: &str = "kelp-member 1";

impl MemberEntry {
    /// One `key=value` line per field after a version line. Values never hold a newline
    /// (tags and hosts are built without one).
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{ENTRY_MAGIC}\nowner={}\nhost={}\nport={}\nacked={:016x}\n",
            self.owner, self.host, self.port, self.acked
        ))
    }

    pub fn decode(b: &[u8]) -> Option<MemberEntry> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != ENTRY_MAGIC {
            return None;
        }
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for line in lines {
            let (k, v) = line.split_once('=')?;
            fields.insert(k, v);
        }
        Some(MemberEntry {
            owner: fields.get("owner")?.to_string(),
            host: fields.get("host")?.to_string(),
            port: fields.get("port")?.parse().ok()?,
            acked: u64::from_str_radix(fields.get("acked")?, 16).ok()?,
        })
    }
}

/// The lease's durations, from `--member-lease-ms`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long the filer holds the lock after a renewal (whole seconds).
    pub lease: Duration,
    /// How long after sending a renewal that succeeded this instance may serve: half the
    /// lease, so that it has stopped well before the filer lets anyone see it dead.
    pub valid_for: Duration,
    /// Between two polls.
    pub poll: Duration,
    /// One filer call's bound.
    pub call_timeout: Duration,
}

impl Timing {
    pub fn new(lease_ms: u64) -> Timing {
        let lease = Duration::from_secs(lease_ms.div_ceil(1000).max(2));
        let valid_for = lease / 2;
        let poll = (lease / 5).min(Duration::from_millis(limits::CLUSTER_POLL_MS_MAX));
        Timing {
            lease,
            valid_for,
            poll,
            call_timeout: (valid_for / 4).max(Duration::from_millis(500)),
        }
    }
}

/// What one poll saw in the filer.
struct Observed {
    /// The live members' entries, by node id.
    alive: HashMap<i32, MemberEntry>,
    /// Whether this instance's entry is there, as it should read.
    own_entry_current: bool,
}

/// Shard 0's membership state.
struct Membership {
    self_id: i32,
    cluster: String,
    host: String,
    port: i32,
    timing: Timing,
    /// The owner tag of this process's lock.
    tag: String,
    /// The lock's renewal token; empty while not a member.
    token: String,
    valid_until: Option<Instant>,
    take_from: Option<Instant>,
    /// Wall-clock milliseconds of the last renewal (for `/metrics`; 0: not held).
    last_renewal_ms: i64,
    members: Vec<Member>,
    /// The member set hash this instance has acked in its entry.
    acked: u64,
    /// The set seen settled once (a second time after a renewal settles it).
    settle_seen: Option<u64>,
    settled: bool,
    offsets_partitions: i32,
    /// Not yet said: waiting for another holder of this node id's lock; the filer is away.
    waiting_said: bool,
    outage_said: bool,
}

impl Membership {
    fn lock_name(&self) -> String {
        format!("kelp/{}/member/{}", self.cluster, self.self_id)
    }

    fn dir(&self) -> String {
        format!("/kelp/clusters/{}/members", self.cluster)
    }

    fn own_entry(&self) -> MemberEntry {
        MemberEntry {
            owner: self.tag.clone(),
            host: self.host.clone(),
            port: self.port,
            acked: self.acked,
        }
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            self_id: self.self_id,
            members: self.members.clone(),
            settled: self.settled,
            valid_until: self.valid_until,
            take_from: self.take_from,
            offsets_partitions: self.offsets_partitions,
        }
    }

    /// Forgets the membership: nothing is served until the lock is taken afresh.
    fn lost(&mut self, why: &str) {
        log::error!(
            "cluster {}: node {} lost its membership ({why}); it serves nothing until it \
             rejoins",
            self.cluster,
            self.self_id
        );
        self.token.clear();
        self.last_renewal_ms = 0;
        self.valid_until = None;
        self.take_from = None;
        self.members.clear();
        self.acked = 0;
        self.settle_seen = None;
        self.settled = false;
    }
}

impl Shard {
    /// Shard 0: learns how many partitions the offsets topic has, then runs the membership
    /// (with a filer) or serves everything as the only instance (without one).
    pub(in crate::shard) async fn seaweed_run_cluster(self: &Rc<Self>) {
        let Some(count) = self.seaweed_offsets_partition_count().await else {
            return;
        };
        let me = Member {
            id: self.config.node_id,
            host: self.advertised.0.clone(),
            port: self.advertised.1,
        };
        if self.config.seaweedmq_filer.is_none() {
            let mut view = ClusterView::single(me);
            view.offsets_partitions = count;
            self.install_view_everywhere(Arc::new(view)).await;
            return;
        }
        let timing = Timing::new(self.config.member_lease_ms);
        let mut m = Membership {
            self_id: me.id,
            cluster: self.config.cluster_id.clone(),
            tag: format!(
                "{}@{}:{}#{}",
                me.id,
                me.host,
                me.port,
                uuid::Uuid::new_v4().simple()
            ),
            host: me.host.replace('\n', ""),
            port: me.port,
            timing,
            token: String::new(),
            valid_until: None,
            take_from: None,
            last_renewal_ms: 0,
            members: Vec::new(),
            acked: 0,
            settle_seen: None,
            settled: false,
            offsets_partitions: count,
            waiting_said: false,
            outage_said: false,
        };
        log::info!(
            "cluster {}: node {} joining (lease {:?}, renewed every {:?})",
            m.cluster,
            m.self_id,
            timing.lease,
            timing.poll
        );
        self.mesh.hold_shutdown();
        while !self.stopping.get() {
            self.membership_poll(&mut m).await;
            self.metrics.set_cluster(m.members.len(), m.last_renewal_ms);
            self.pause(timing.poll).await;
        }
        self.leave_cluster(&mut m).await;
        self.mesh.release_shutdown();
    }

    /// One poll: renew, observe, install, ack, settle.
    async fn membership_poll(self: &Rc<Self>, m: &mut Membership) {
        let renewed = self.renew_lease(m).await;
        let observed = if renewed {
            self.observe_members(m).await
        } else {
            None
        };
        let Some(seen) = observed else {
            // Whatever was seen before stands, bounded by the lease's validity.
            self.install_view_everywhere(Arc::new(m.view())).await;
            return;
        };
        if !seen.own_entry_current {
            if let Err(e) = self.put_own_entry(m).await {
                log::warn!(
                    "cluster {}: cannot write this member's entry: {e}",
                    m.cluster
                );
            }
        }
        self.take_in(m, &seen);
        self.install_view_everywhere(Arc::new(m.view())).await;
        let hash = members_hash(m.members.iter().map(|x| x.id));
        if m.acked != hash && !m.members.is_empty() && self.drained_everywhere(hash).await {
            self.seaweed_detach_lost_offsets().await;
            let previous = m.acked;
            m.acked = hash;
            if let Err(e) = self.put_own_entry(m).await {
                log::warn!("cluster {}: cannot ack the member set: {e}", m.cluster);
                m.acked = previous;
            }
        }
        self.settle(m, &seen, hash).await;
    }

    async fn put_own_entry(self: &Rc<Self>, m: &Membership) -> crate::seaweedmq::SeaweedResult<()> {
        let (dir, name) = (m.dir(), m.self_id.to_string());
        let handle = self.sw().handle.clone();
        let put = handle.put_entry(&dir, &name, m.own_entry().encode(), m.timing.call_timeout);
        self.foreign(put).await
    }

    /// Takes or renews this instance's lock; whether it holds it now.
    async fn renew_lease(self: &Rc<Self>, m: &mut Membership) -> bool {
        let sent = Instant::now();
        let name = m.lock_name();
        let handle = self.sw().handle.clone();
        let lock = handle.lock(
            &name,
            m.timing.lease.as_secs() as i64,
            &m.token,
            &m.tag,
            m.timing.call_timeout,
        );
        match self.foreign(lock).await {
            Ok(LockAnswer::Held { renew_token }) => {
                if m.token.is_empty() {
                    m.take_from = Some(Instant::now() + m.timing.valid_for);
                    log::info!(
                        "cluster {}: node {} holds its lease; it takes partitions once the \
                         others have taken it in, and not before {:?} from now",
                        m.cluster,
                        m.self_id,
                        m.timing.valid_for
                    );
                }
                m.token = renew_token;
                m.valid_until = Some(sent + m.timing.valid_for);
                m.last_renewal_ms = crate::util::now_ms();
                m.waiting_said = false;
                if m.outage_said {
                    log::info!("cluster {}: the filer answers again", m.cluster);
                    m.outage_said = false;
                }
                true
            }
            Ok(LockAnswer::HeldBy(owner)) if m.token.is_empty() => {
                if !m.waiting_said {
                    log::warn!(
                        "cluster {}: node id {} is held by {owner:?}: another kelp with \
                         --node-id {}, or this node before a restart (its lease runs out within \
                         {:?}); waiting",
                        m.cluster,
                        m.self_id,
                        m.self_id,
                        m.timing.lease
                    );
                    m.waiting_said = true;
                }
                false
            }
            Ok(LockAnswer::HeldBy(owner)) => {
                m.lost(&format!("its lock is held by {owner:?}"));
                false
            }
            Ok(LockAnswer::Lost(why)) => {
                m.lost(&format!("the filer refused the renewal: {why}"));
                false
            }
            Err(e) => {
                if !m.outage_said {
                    log::warn!(
                        "cluster {}: cannot renew the lease ({e}); serving stops {:?} after \
                         the last renewal",
                        m.cluster,
                        m.timing.valid_for
                    );
                    m.outage_said = true;
                }
                false
            }
        }
    }

    /// Lists the entries and asks who holds each lock; `None` when any answer is missing (a
    /// member is never dropped on a failed call) or this instance turns out not to hold its
    /// lock.
    async fn observe_members(self: &Rc<Self>, m: &mut Membership) -> Option<Observed> {
        let handle = self.sw().handle.clone();
        let t = m.timing.call_timeout;
        let listed = match self.foreign(handle.list_entries(&m.dir(), t)).await {
            Ok(l) => l,
            Err(e) => {
                log::warn!("cluster {}: cannot list the members: {e}", m.cluster);
                return None;
            }
        };
        let entries: Vec<(i32, MemberEntry)> = listed
            .iter()
            .filter_map(|(name, content)| Some((name.parse().ok()?, MemberEntry::decode(content)?)))
            .collect();
        let names: Vec<String> = entries
            .iter()
            .map(|(id, _)| format!("kelp/{}/member/{id}", m.cluster))
            .collect();
        let owners =
            futures::future::join_all(names.iter().map(|n| self.foreign(handle.lock_owner(n, t))))
                .await;
        let mut alive = HashMap::new();
        let mut own_entry_current = false;
        for ((id, entry), owner) in entries.into_iter().zip(owners) {
            let owner = match owner {
                Ok(o) => o,
                Err(e) => {
                    log::debug!("cluster {}: lock owner of node {id}: {e}", m.cluster);
                    return None;
                }
            };
            if id == m.self_id {
                if owner != m.tag {
                    m.lost(&format!("the filer names {owner:?} as its lock's owner"));
                    return None;
                }
                own_entry_current = entry == m.own_entry();
            }
            if owner == entry.owner {
                alive.insert(id, entry);
            }
        }
        Some(Observed {
            alive,
            own_entry_current,
        })
    }

    /// Adopts the live member set, logging who joined and who left.
    fn take_in(&self, m: &mut Membership, seen: &Observed) {
        let mut members: Vec<Member> = seen
            .alive
            .iter()
            .map(|(id, e)| Member {
                id: *id,
                host: e.host.clone(),
                port: e.port,
            })
            .collect();
        members.sort_by_key(|x| x.id);
        if members == m.members {
            return;
        }
        let ids = |v: &[Member]| v.iter().map(|x| x.id).collect::<Vec<_>>();
        let (before, after) = (ids(&m.members), ids(&members));
        let joined: Vec<i32> = after
            .iter()
            .filter(|i| !before.contains(i))
            .copied()
            .collect();
        let left: Vec<i32> = before
            .iter()
            .filter(|i| !after.contains(i))
            .copied()
            .collect();
        log::info!(
            "cluster {}: members now {after:?} (joined {joined:?}, left {left:?}); partitions \
             move once every member has taken this in",
            m.cluster
        );
        m.members = members;
        m.settled = false;
        m.settle_seen = None;
    }

    /// Marks the set settled when every live member has acked it in two polls in a row.
    async fn settle(self: &Rc<Self>, m: &mut Membership, seen: &Observed, hash: u64) {
        let all_acked = !m.members.is_empty()
            && m.members.iter().all(|x| {
                if x.id == m.self_id {
                    m.acked == hash
                } else {
                    seen.alive.get(&x.id).is_some_and(|e| e.acked == hash)
                }
            });
        if !all_acked {
            m.settle_seen = None;
            return;
        }
        if m.settle_seen != Some(hash) {
            m.settle_seen = Some(hash);
            return;
        }
        if !m.settled {
            m.settled = true;
            // A node that just (re)gained its lock waits out the start-up grace first.
            let when = match m
                .take_from
                .map(|t| t.saturating_duration_since(Instant::now()))
            {
                Some(grace) if !grace.is_zero() => {
                    format!(
                        "in {:.1} s, when its start-up grace ends",
                        grace.as_secs_f64()
                    )
                }
                _ => "now".to_string(),
            };
            log::info!(
                "cluster {}: settled with members {:?}; node {} leads its share {when}",
                m.cluster,
                m.members.iter().map(|x| x.id).collect::<Vec<_>>(),
                m.self_id
            );
            self.install_view_everywhere(Arc::new(m.view())).await;
        }
    }

    /// SIGTERM: lets go of everything, then deletes the entry and releases the lock, so that
    /// the others take over at once instead of after the lease.
    async fn leave_cluster(self: &Rc<Self>, m: &mut Membership) {
        if m.token.is_empty() {
            return;
        }
        let none = ClusterView::none(m.self_id, m.offsets_partitions);
        let hash = none.members_hash();
        self.install_view_everywhere(Arc::new(none)).await;
        let deadline = Instant::now() + Duration::from_millis(limits::CLUSTER_LEAVE_WAIT_MS);
        while !self.drained_everywhere(hash).await && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        self.seaweed_detach_lost_offsets().await;
        let handle = self.sw().handle.clone();
        let t = m.timing.call_timeout;
        let deleted = self
            .foreign(handle.delete_entry(&m.dir(), &m.self_id.to_string(), t))
            .await;
        let unlocked = self
            .foreign(handle.unlock(&m.lock_name(), &m.token, t))
            .await;
        match (deleted, unlocked) {
            (Ok(()), Ok(())) => log::info!(
                "cluster {}: node {} left; the others take its partitions over now",
                m.cluster,
                m.self_id
            ),
            (d, u) => log::warn!(
                "cluster {}: node {} left, but the filer did not take it all ({:?}, {:?}); \
                 the others take over once its lease runs out",
                m.cluster,
                m.self_id,
                d.err(),
                u.err()
            ),
        }
    }

    pub(in crate::shard) async fn install_view_everywhere(self: &Rc<Self>, view: Arc<ClusterView>) {
        let calls: Vec<_> = (0..self.shards())
            .map(|s| {
                let this = self.clone();
                let v = view.clone();
                async move { this.call(s, Op::InstallView(v)).await }
            })
            .collect();
        futures::future::join_all(calls).await;
    }

    /// Whether every shard has the view with member set `hash` and let go of what it lost.
    async fn drained_everywhere(self: &Rc<Self>, hash: u64) -> bool {
        let calls: Vec<_> = (0..self.shards())
            .map(|s| {
                let this = self.clone();
                async move { this.call(s, Op::Drained(hash)).await }
            })
            .collect();
        futures::future::join_all(calls)
            .await
            .into_iter()
            .all(|r| matches!(r, Reply::Drained(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_round_trip(
            owner in "[a-zA-Z0-9@:#._-]{0,60}",
            host in "[a-zA-Z0-9.:_-]{0,40}",
            port in any::<i32>(),
            acked in any::<u64>(),
        ) {
            let e = MemberEntry { owner, host, port, acked };
            prop_assert_eq!(MemberEntry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MemberEntry::decode(&b);
        }
    }

    #[test]
    fn a_foreign_file_is_not_an_entry() {
        assert_eq!(MemberEntry::decode(b"hello"), None);
        assert_eq!(MemberEntry::decode(b"kelp-member 1\nowner=x\n"), None);
    }

    #[test]
    fn timing_follows_the_lease() {
        let t = Timing::new(10_000);
        assert_eq!(t.lease, Duration::from_secs(10));
        assert_eq!(t.valid_for, Duration::from_secs(5));
        assert_eq!(t.poll, Duration::from_secs(1));
        let t = Timing::new(2_500);
        assert_eq!(t.lease, Duration::from_secs(3));
        assert!(t.poll < Duration::from_secs(1));
        assert!(t.valid_for + t.poll < t.lease);
    }
}
