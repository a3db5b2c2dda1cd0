//! Committed offsets in the filer, when kelp has one (`--seaweedmq-filer`): each group's
//! offsets are one entry, `/kelp/clusters/<cluster>/offsets/<q>/<entry name>` (q its offsets
//! partition, the name [`entry_name`]), rewritten whole by the group's coordinator on every
//! commit. Storage is bounded by the groups alive within the offsets retention, and a new
//! coordinator reads one entry per group instead of every commit ever made.
//!
//! A group's writes are serialized on its coordinator (see [`Shard::one_write_at_a_time`]):
//! each entry is built from the coordinator's offsets with the new commits over them, so two
//! writes landing out of order would lose the first one's commits. A deleted group leaves an
//! entry with no offsets (a tombstone) until the retention has passed, so that a migration
//! running late (below) cannot bring its offsets back.
//!
//! **Migration.** Earlier kelps wrote every commit to the topic [`OFFSETS_TOPIC`]. The first
//! load of partition q finds no `migrated` entry in its directory, replays the topic's
//! partition q once and creates the entry of every group found there, exclusively (an entry
//! written meanwhile by a coordinator is newer and stays), then writes `migrated` with the
//! offset it read to. Later loads only check that nothing was appended after that offset:
//! commits an older kelp wrote there after the migration are not read, and a warning says so.

use super::offset_records::{entry_name, is_entry_name, GroupEntry, StoredCommit};
use super::{offsets_partition, OFFSETS_TOPIC};
use crate::config::limits;
use crate::group::GroupReply;
use crate::seaweedmq::{SeaweedError, SeaweedHandle};
use crate::shard::{shard_for_group, Shard};
use crate::util::now_ms;
use bytes::Bytes;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The entry that says a directory's groups were migrated from the topic (content: the topic
/// offset read to, i64 BE).
const MIGRATED: &str = "migrated";

impl Shard {
    /// Whether committed offsets live in the filer (one entry per group) rather than in the
    /// topic [`OFFSETS_TOPIC`] (one record per commit, without a filer).
    pub(super) fn offsets_in_filer(&self) -> bool {
        self.config.seaweedmq_filer.is_some()
    }

    fn offsets_dir(&self, q: i32) -> String {
        format!("/kelp/clusters/{}/offsets/{q}", self.config.cluster_id)
    }

    fn filer_timeout(&self) -> Duration {
        Duration::from_millis(self.config.seaweedmq_timeout_ms)
    }

    /// Runs `work` (a group's check, write and apply) once no other write of `group` on this
    /// shard is running, if this shard still serves the group then (it may have moved while
    /// the write waited, and a write from memory it no longer has would wipe the entry).
    /// Writes of a group run in the order they arrive.
    pub(super) async fn one_write_at_a_time(
        &self,
        group: &str,
        work: impl Future<Output = GroupReply>,
    ) -> GroupReply {
        let lock = self
            .sw()
            .group_writes
            .borrow_mut()
            .entry(group.to_string())
            .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
            .clone();
        // Never closed, so the permit always comes.
        let permit = lock.acquire_static_permit(1).await;
        let out = match self.group_not_served(group) {
            Some(code) => GroupReply::Code(code),
            None => work.await,
        };
        drop(permit);
        // The map's and this one: nobody else waits.
        if Rc::strong_count(&lock) == 2 {
            self.sw().group_writes.borrow_mut().remove(group);
        }
        out
    }

    /// The entry of `group`: the offsets its coordinator holds, with `commits` over them.
    pub(super) fn group_entry(
        &self,
        group: &str,
        commits: &[&super::offsets::Commit],
    ) -> GroupEntry {
        let now = Instant::now();
        let written_ms = now_ms();
        let mut offsets: std::collections::BTreeMap<(String, i32), StoredCommit> = self
            .groups
            .borrow()
            .groups
            .get(group)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|(key, c)| {
                        let age = now.saturating_duration_since(c.commit_time).as_millis();
                        let ms = written_ms.saturating_sub(age as i64);
                        let stored = (c.offset, c.leader_epoch, ms, c.metadata.clone());
                        (key.clone(), stored)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (topic, p, offset, epoch, metadata) in commits {
            let stored = (*offset, *epoch, written_ms, metadata.clone());
            offsets.insert((topic.clone(), *p), stored);
        }
        GroupEntry {
            group: group.to_string(),
            written_ms,
            offsets: offsets.into_iter().map(|((t, p), c)| (t, p, c)).collect(),
        }
    }

    /// Replaces the entry of `group` with `content`.
    pub(super) async fn write_group_entry(
        self: &Rc<Self>,
        group: &str,
        content: Bytes,
    ) -> Result<(), SeaweedError> {
        let q = offsets_partition(group, self.cluster().offsets_partitions);
        let handle = self.sw().handle.clone();
        let (dir, name) = (self.offsets_dir(q), entry_name(group));
        let put = handle.put_entry(&dir, &name, content, self.filer_timeout());
        self.counting_writes(q, self.foreign(put)).await
    }

    /// Reads the entries of offsets partition `q` into the coordinator (this shard's share
    /// of its groups), migrating the topic's partition first if no kelp has; removes the
    /// entries past the retention. Returns (entries read, offsets kept).
    pub(super) async fn load_group_entries(
        self: &Rc<Self>,
        q: i32,
    ) -> Result<(usize, usize), SeaweedError> {
        let handle = self.sw().handle.clone();
        let (mut entries, migrated) = self.list_offsets_dir(&handle, q).await?;
        match migrated {
            Some(end) => self.warn_of_commits_after(&handle, q, end).await,
            None => {
                self.migrate_offsets_topic(&handle, q).await?;
                // Read again: the entries the migration made, or newer ones.
                entries = self.list_offsets_dir(&handle, q).await?.0;
            }
        }
        let read = entries.len();
        let kept = self.restore_entries(q, entries).await;
        Ok((read, kept))
    }

    /// The group entries of offsets partition `q`'s directory, page by page, and the topic
    /// offset its migration read to (`None`: not migrated yet).
    async fn list_offsets_dir(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
        q: i32,
    ) -> Result<(Vec<(String, Bytes)>, Option<i64>), SeaweedError> {
        let (dir, t) = (self.offsets_dir(q), self.filer_timeout());
        let page_max = limits::SEAWEEDMQ_OFFSETS_LIST_PAGE;
        let (mut entries, mut migrated) = (Vec::new(), None);
        let mut after = String::new();
        loop {
            let page = self
                .foreign(handle.list_entries_after(&dir, &after, page_max, t))
                .await?;
            let full = page.len() as u32 == page_max;
            if let Some((last, _)) = page.last() {
                after = last.clone();
            }
            for (name, content) in page {
                if name == MIGRATED {
                    migrated = Some(decode_end(&content));
                } else if is_entry_name(&name) {
                    entries.push((name, content));
                }
            }
            if !full {
                return Ok((entries, migrated));
            }
        }
    }

    /// Restores the entries of this shard's groups; deletes those wholly past the retention.
    async fn restore_entries(self: &Rc<Self>, q: i32, entries: Vec<(String, Bytes)>) -> usize {
        let retention_ms = (self.config.offsets_retention_minutes as i64).saturating_mul(60_000);
        let now_wall = now_ms();
        let mut latest = super::offsets::Latest::new();
        let mut expired = Vec::new();
        for (name, content) in entries {
            let Some(entry) = GroupEntry::decode(&content) else {
                log::warn!(
                    "{}/{name}: not a group's offsets kelp can read; skipped",
                    self.offsets_dir(q)
                );
                continue;
            };
            if entry_name(&entry.group) != name
                || shard_for_group(&entry.group, self.shards()) != self.id
            {
                continue;
            }
            let young = |ms: i64| now_wall.saturating_sub(ms) < retention_ms;
            if !young(entry.written_ms) && !entry.offsets.iter().any(|(_, _, c)| young(c.2)) {
                expired.push(name);
                continue;
            }
            for (topic, p, commit) in entry.offsets {
                latest.insert((entry.group.clone(), topic, p), Some(commit));
            }
        }
        let handle = self.sw().handle.clone();
        for name in expired {
            let dir = self.offsets_dir(q);
            if let Err(e) = self
                .foreign(handle.delete_entry(&dir, &name, self.filer_timeout()))
                .await
            {
                log::warn!("{dir}/{name}: past the offsets retention but not removed ({e}); tried again on the next load");
            }
        }
        self.restore_commits(latest)
    }

    /// Creates the entry of every group with offsets in the topic's partition `q` (unless it
    /// has one), then records the migration.
    async fn migrate_offsets_topic(
        self: &Rc<Self>,
        handle: &SeaweedHandle,
        q: i32,
    ) -> Result<(), SeaweedError> {
        let (latest, replayed, end) = self.replay_offsets(handle, q, 0, |_| true).await?;
        let mut groups: std::collections::BTreeMap<String, Vec<(String, i32, StoredCommit)>> =
            Default::default();
        for ((group, topic, p), commit) in latest {
            let offsets = groups.entry(group).or_default();
            if let Some(c) = commit {
                offsets.push((topic, p, c));
            }
        }
        let (dir, t) = (self.offsets_dir(q), self.filer_timeout());
        let mut created = 0;
        for (group, offsets) in groups.into_iter().filter(|(_, o)| !o.is_empty()) {
            let entry = GroupEntry {
                written_ms: offsets.iter().map(|(_, _, c)| c.2).max().unwrap_or(0),
                group,
                offsets,
            };
            let name = entry_name(&entry.group);
            let create = handle.create_entry(&dir, &name, entry.encode(), true, t);
            created += usize::from(self.foreign(create).await?);
        }
        let marker = Bytes::copy_from_slice(&end.to_be_bytes());
        self.foreign(handle.put_entry(&dir, MIGRATED, marker, t))
            .await?;
        if replayed > 0 {
            log::info!(
                "shard {}: committed offsets of {OFFSETS_TOPIC}[{q}] moved to the filer ({replayed} records read, {created} group entries made in {dir})",
                self.id
            );
        }
        Ok(())
    }

    /// Says so if records were appended to the topic's partition `q` after its migration (an
    /// older kelp still running beside this one): they are not read.
    async fn warn_of_commits_after(self: &Rc<Self>, handle: &SeaweedHandle, q: i32, end: i64) {
        let fetch = handle.fetch(OFFSETS_TOPIC, q, end, 64 * 1024, 1);
        if let Ok(f) = self.foreign(fetch).await {
            if !f.messages.is_empty() {
                log::warn!(
                    "{OFFSETS_TOPIC}[{q}] has commits from offset {end} on, written after its groups moved to the filer (an older kelp is still running?): they are ignored; run one kelp version per cluster"
                );
            }
        }
    }
}

fn decode_end(content: &[u8]) -> i64 {
    content
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_be_bytes)
}
