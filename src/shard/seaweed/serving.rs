//! What this instance serves on the SeaweedMQ backend, kept in line with the cluster view
//! (`crate::cluster`): a shard takes a partition (or a partition of the offsets topic, with the
//! groups whose commits it holds) only when the view lets it take it, and lets go of one as
//! soon as the view no longer lets it keep it. Letting go of a partition ends its publisher
//! (which waits for the acks of what it has in flight) before the shard says it is drained:
//! the member set is acked only then, and another instance takes the partition only once
//! every member has acked.

use super::partition::{Role, SeaweedPartition};
use super::{SeaweedShard, OFFSETS_TOPIC};
use crate::cluster::{partition_key, ClusterView};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::partition::ProduceOutcome;
use crate::shard::{Shard, TopicPartition};
use std::rc::Rc;
use std::time::Instant;

/// A partition of the offsets topic this shard serves the groups of.
#[derive(Debug, Default)]
pub struct OffsetsPart {
    /// Its commits are replayed into the coordinator: its groups are served.
    pub loaded: bool,
    /// Commits being written to it.
    pub writes: usize,
    /// Let go of: its groups are gone; it is removed once no write is in flight.
    pub leaving: bool,
}

/// The partition of the offsets topic that holds a group's commits.
pub fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let mut h: u32 = 0x811c9dc5;
    for b in group.as_bytes() {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    (h % partitions.max(1) as u32) as i32
}

/// The ownership key of a group: that of its offsets partition.
pub fn group_key(group: &str, offsets_partitions: i32) -> Vec<u8> {
    partition_key(OFFSETS_TOPIC, offsets_partition(group, offsets_partitions))
}

/// Partitions named for a log line, grouped by topic in order: `[t[0,3], u[1]]`, at most
/// `limits::LOGGED_PARTITIONS_MAX` of them (then how many more).
fn partition_list(tps: &[TopicPartition]) -> String {
    let mut sorted: Vec<&TopicPartition> = tps.iter().collect();
    sorted.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let shown = sorted.len().min(limits::LOGGED_PARTITIONS_MAX);
    let mut out = String::from("[");
    let mut current: Option<&str> = None;
    for tp in &sorted[..shown] {
        if current == Some(&*tp.topic) {
            out.push_str(&format!(",{}", tp.partition));
            continue;
        }
        if current.is_some() {
            out.push_str("], ");
        }
        out.push_str(&format!("{}[{}", tp.topic, tp.partition));
        current = Some(&tp.topic);
    }
    if current.is_some() {
        out.push(']');
    }
    if sorted.len() > shown {
        out.push_str(&format!(" and {} more", sorted.len() - shown));
    }
    out.push(']');
    out
}

impl SeaweedShard {
    fn next_incarnation(&self) -> u64 {
        let n = self.incarnations.get() + 1;
        self.incarnations.set(n);
        n
    }

    /// How many partitions this shard leads now.
    pub fn serving(&self) -> usize {
        self.partitions
            .borrow()
            .values()
            .filter(|p| p.role == Role::Serving)
            .count()
    }
}

impl Shard {
    /// Brings what the shard serves in line with its view.
    pub(in crate::shard) fn seaweed_apply_view(self: &Rc<Self>) {
        let view = self.cluster();
        let now = Instant::now();
        let sw = self.sw();
        let mut leaving = Vec::new();
        let mut taken = Vec::new();
        for (tp, p) in sw.partitions.borrow_mut().iter_mut() {
            let key = partition_key(&tp.topic, tp.partition);
            match p.role {
                Role::Serving if !view.may_keep(&key, now) => {
                    p.role = Role::Leaving;
                    leaving.push(tp.clone());
                }
                Role::Idle if view.may_take(&key, now) => {
                    p.role = Role::Serving;
                    p.incarnation = sw.next_incarnation();
                    taken.push(tp.clone());
                    // With the line `let_go` writes, an operator (and the cluster test) can
                    // check that no two instances ever wrote one partition at once.
                    log::debug!(
                        "writer {}[{}] starts at ms {}",
                        tp.topic,
                        tp.partition,
                        crate::util::now_ms()
                    );
                }
                _ => {}
            }
        }
        if !taken.is_empty() || !leaving.is_empty() {
            log::info!(
                "shard {}: took {} partitions {}, letting go of {} {} (leading {})",
                self.id,
                taken.len(),
                partition_list(&taken),
                leaving.len(),
                partition_list(&leaving),
                sw.serving()
            );
        }
        for tp in leaving {
            let this = self.clone();
            glommio::spawn_local(async move { this.let_go(tp).await }).detach();
        }
        self.apply_view_to_offsets(&view, now);
        self.metrics
            .set_led(sw.serving(), self.groups.borrow().groups.len());
    }

    /// Ends a partition's term here: waiting produces and long polls are answered (the client
    /// asks the new leader), the publisher leaves, and the partition starts afresh (its
    /// idempotence table is rebuilt from storage if it comes back).
    async fn let_go(self: Rc<Self>, tp: TopicPartition) {
        let waiting = match self.sw().partitions.borrow_mut().get_mut(&tp) {
            Some(p) => {
                p.appended.notify_all();
                std::mem::take(&mut p.waiting)
            }
            None => Default::default(),
        };
        for (_, tx) in waiting {
            let _ = tx.send(ProduceOutcome::error(ErrorCode::NotLeaderOrFollower, None));
        }
        let handle = self.sw().handle.clone();
        if let Err(e) = self.foreign(handle.detach(&tp.topic, tp.partition)).await {
            log::warn!("{}[{}]: letting go: {e}", tp.topic, tp.partition);
        }
        let cache_bytes = self.config.seaweedmq_cache_bytes;
        if let Some(p) = self.sw().partitions.borrow_mut().get_mut(&tp) {
            if p.role == Role::Leaving {
                *p = SeaweedPartition::new(
                    p.topic_id,
                    p.settings,
                    cache_bytes,
                    Role::Idle,
                    p.incarnation,
                );
            }
        }
        log::debug!(
            "writer {}[{}] ends at ms {}",
            tp.topic,
            tp.partition,
            crate::util::now_ms()
        );
        // The view may have given it back meanwhile.
        self.seaweed_apply_view();
    }

    /// Takes the offsets partitions the view lets this instance take (replaying their
    /// commits), and drops the groups of those it may no longer keep.
    fn apply_view_to_offsets(self: &Rc<Self>, view: &ClusterView, now: Instant) {
        let mut replay = Vec::new();
        {
            let mut offsets = self.sw().offsets.borrow_mut();
            for q in 0..view.offsets_partitions {
                let key = partition_key(OFFSETS_TOPIC, q);
                match offsets.get_mut(&q) {
                    Some(part) if !part.leaving && !view.may_keep(&key, now) => {
                        part.leaving = true;
                        let n = view.offsets_partitions;
                        let mut groups = self.groups.borrow_mut();
                        let before = groups.groups.len();
                        groups.groups.retain(|g, _| offsets_partition(g, n) != q);
                        log::info!(
                            "shard {}: no longer coordinating the {} groups of offsets \
                             partition {q}",
                            self.id,
                            before - groups.groups.len()
                        );
                    }
                    None if view.may_take(&key, now) => {
                        offsets.insert(q, OffsetsPart::default());
                        replay.push(q);
                    }
                    _ => {}
                }
            }
            offsets.retain(|_, part| !(part.leaving && part.writes == 0));
        }
        for q in replay {
            let this = self.clone();
            glommio::spawn_local(async move { this.seaweed_load_offsets(q).await }).detach();
        }
    }

    /// Whether the shard has the view with member set `hash` and has let go of everything
    /// that view took from it.
    pub(in crate::shard) fn seaweed_drained(&self, hash: u64) -> bool {
        if self.cluster().members_hash() != hash {
            return false;
        }
        let sw = self.sw();
        let partitions_done = sw
            .partitions
            .borrow()
            .values()
            .all(|p| p.role != Role::Leaving);
        partitions_done && sw.offsets.borrow().values().all(|p| !p.leaving)
    }

    /// Shard 0, once every shard is drained: ends the publishers of the offsets partitions
    /// this instance no longer serves (every shard writes commits through them).
    pub(in crate::shard) async fn seaweed_detach_lost_offsets(self: &Rc<Self>) {
        let sw = self.sw();
        let lost: Vec<i32> = sw
            .offsets_attached
            .borrow()
            .iter()
            .filter(|q| !sw.offsets.borrow().contains_key(q))
            .copied()
            .collect();
        for q in lost {
            let handle = sw.handle.clone();
            if let Err(e) = self.foreign(handle.detach(OFFSETS_TOPIC, q)).await {
                log::warn!("{OFFSETS_TOPIC}[{q}]: letting go: {e}");
            }
            sw.offsets_attached.borrow_mut().remove(&q);
        }
    }

    /// The answer for an op on a partition this instance does not serve now, if it does not.
    pub(in crate::shard) fn not_served(&self, tp: &TopicPartition) -> Option<ErrorCode> {
        let partitions = self.sw().partitions.borrow();
        let p = partitions.get(tp)?;
        let served = p.role == Role::Serving && self.cluster().valid(Instant::now());
        (!served).then_some(ErrorCode::NotLeaderOrFollower)
    }

    /// The answer for a group op this instance cannot serve now, if it cannot.
    pub(in crate::shard) fn group_not_served(&self, group: &str) -> Option<ErrorCode> {
        let view = self.cluster();
        if view.offsets_partitions == 0 {
            return Some(ErrorCode::CoordinatorNotAvailable);
        }
        if !view.valid(Instant::now()) {
            return Some(ErrorCode::NotCoordinator);
        }
        let q = offsets_partition(group, view.offsets_partitions);
        match self.sw().offsets.borrow().get(&q) {
            None => Some(ErrorCode::NotCoordinator),
            Some(p) if p.leaving => Some(ErrorCode::NotCoordinator),
            Some(p) if !p.loaded => Some(ErrorCode::CoordinatorLoadInProgress),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_lists_group_by_topic_and_stop_at_the_limit() {
        let tp = |t: &str, p| TopicPartition {
            topic: t.into(),
            partition: p,
        };
        assert_eq!(partition_list(&[]), "[]");
        assert_eq!(
            partition_list(&[tp("u", 1), tp("t", 3), tp("t", 0)]),
            "[t[0,3], u[1]]"
        );
        let many: Vec<_> = (0..limits::LOGGED_PARTITIONS_MAX as i32 + 5)
            .map(|p| tp("t", p))
            .collect();
        assert!(partition_list(&many).ends_with("] and 5 more]"));
    }

    #[test]
    fn groups_spread_over_the_offsets_partitions() {
        let mut counts = [0usize; 8];
        for g in 0..8000 {
            counts[offsets_partition(&format!("group-{g}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(offsets_partition("anything", 1), 0);
        assert_eq!(offsets_partition("g", 0), 0, "no partitions known yet");
    }
}
