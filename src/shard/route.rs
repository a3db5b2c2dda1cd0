//! Work for partitions and groups, sent to the shard that owns them: locally by a direct call,
//! to another shard as one message per owner. The owner applies partition ops on its backend,
//! chosen here once per batch of ops ([`Shard::apply_all`]).

use super::ops::{Applied, Op, PartitionOp, PartitionReply, RegistryOp, Reply};
use super::{shard_for_group, shard_for_partition, Backend, OwnedPartition, Shard, TopicPartition};
use crate::cluster::ClusterView;
use crate::error::ErrorCode;
use crate::group::{self, GroupOp, GroupReply};
use crate::topics::{RegistryError, TopicMeta};
use crate::util::Notified;
use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Partition ops, each with its partition.
type Ops = Vec<(TopicPartition, PartitionOp)>;

impl Shard {
    /// Runs partition ops where their owners are: local ones directly, the rest in one message
    /// per owning shard, all in parallel; answers come back in the order asked.
    pub async fn route(
        self: &Rc<Self>,
        ops: Vec<(TopicPartition, PartitionOp)>,
    ) -> Vec<PartitionReply> {
        let n = self.shards();
        if n == 1 {
            return self.apply_all(ops).await;
        }
        let total = ops.len();
        // Per shard: the ops' places in the request, and the ops.
        let mut by_shard: Vec<(Vec<usize>, Ops)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, (tp, op)) in ops.into_iter().enumerate() {
            let s = shard_for_partition(&tp.topic, tp.partition, n);
            by_shard[s].0.push(i);
            by_shard[s].1.push((tp, op));
        }
        let mut answers = Vec::new();
        let mut local = None;
        for (s, (idx, ops)) in by_shard.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            if s == self.id {
                local = Some((idx, ops));
            } else {
                let this = self.clone();
                answers.push(
                    async move { (idx, this.call(s, Op::Partitions(ops)).await) }.boxed_local(),
                );
            }
        }
        if let Some((idx, ops)) = local {
            // Applied (or queued on the backend) before the remote answers are awaited.
            let this = self.clone();
            let applied = self.apply_all(ops);
            answers.push(
                async move {
                    let _keep = this;
                    (idx, Reply::Partitions(applied.await))
                }
                .boxed_local(),
            );
        }
        let mut out: Vec<Option<PartitionReply>> = (0..total).map(|_| None).collect();
        for (idx, reply) in futures::future::join_all(answers).await {
            if let Reply::Partitions(replies) = reply {
                for (i, r) in idx.into_iter().zip(replies) {
                    out[i] = Some(r);
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(PartitionReply::Read(Err(ErrorCode::RequestTimedOut))))
            .collect()
    }

    /// Applies ops owned by this shard, in order, on its backend. Memory partitions answer at
    /// once; SeaweedMQ ones are queued on the gRPC core in order, then awaited together.
    fn apply_all(
        self: &Rc<Self>,
        ops: Vec<(TopicPartition, PartitionOp)>,
    ) -> impl Future<Output = Vec<PartitionReply>> + 'static {
        let mut now = Vec::with_capacity(ops.len());
        let mut later = Vec::new();
        for (i, (tp, op)) in ops.into_iter().enumerate() {
            let applied = match &self.backend {
                Backend::Memory(m) => Applied::Now(m.apply(&tp, op)),
                Backend::Seaweed(_) => self.seaweed_apply(tp, op),
            };
            match applied {
                Applied::Now(r) => now.push(Some(r)),
                Applied::Later(f) => {
                    now.push(None);
                    later.push(async move { (i, f.await) });
                }
            }
        }
        async move {
            if !later.is_empty() {
                for (i, r) in futures::future::join_all(later).await {
                    now[i] = Some(r);
                }
            }
            now.into_iter()
                .map(|r| r.expect("every op answered"))
                .collect()
        }
    }

    /// Moves a quiet connection to shard `to`, which serves it from now on (`crate::conn`).
    pub async fn hand_over_connection(self: &Rc<Self>, to: usize, handoff: super::Handoff) {
        self.call(to, Op::AdoptConnection(handoff)).await;
    }

    /// The connections handed to this shard since the last call.
    pub fn take_arrivals(&self) -> Vec<super::Handoff> {
        std::mem::take(&mut *self.arrivals.borrow_mut())
    }

    /// Executes an op addressed to this shard.
    pub(super) async fn execute(self: &Rc<Self>, op: Op) -> Reply {
        match op {
            Op::Partitions(ops) => Reply::Partitions(self.apply_all(ops).await),
            Op::WaitForData(parts, timeout) => {
                self.wait_local(parts, timeout).await;
                Reply::Done
            }
            Op::Registry(op) => Reply::Registry(self.registry_apply(op).await),
            Op::InstallTopics(table) => {
                self.install_topics(table);
                if let Backend::Seaweed(_) = &self.backend {
                    // New partitions start idle: lead those the view gives this instance.
                    self.seaweed_apply_view();
                }
                Reply::Done
            }
            Op::Group(op) => Reply::Group(match &self.backend {
                Backend::Memory(_) => group::apply(&self.groups, op).await,
                Backend::Seaweed(_) => self.seaweed_group_op(op).await,
            }),
            Op::InstallView(view) => {
                self.install_view(view);
                Reply::Done
            }
            Op::Drained(hash) => Reply::Drained(match &self.backend {
                Backend::Memory(_) => true,
                Backend::Seaweed(_) => self.seaweed_drained(hash),
            }),
            Op::AdoptConnection(handoff) => {
                // The accept loop serves it (`server`), as it does what it accepts itself.
                self.arrivals.borrow_mut().push(handoff);
                self.arrived.notify_all();
                Reply::Done
            }
        }
    }

    /// Installs a new cluster view and brings what the shard serves in line with it.
    fn install_view(self: &Rc<Self>, view: Arc<ClusterView>) {
        *self.cluster.borrow_mut() = view;
        if let Backend::Seaweed(_) = &self.backend {
            self.seaweed_apply_view();
        }
    }

    /// Waits until any of `parts` has data past its offset, or `timeout`.
    pub async fn wait_for_data(
        self: &Rc<Self>,
        parts: Vec<(TopicPartition, i64)>,
        timeout: Duration,
    ) {
        let n = self.shards();
        let mut by_shard: Vec<Vec<(TopicPartition, i64)>> = (0..n).map(|_| Vec::new()).collect();
        for (tp, off) in parts {
            let s = shard_for_partition(&tp.topic, tp.partition, n);
            by_shard[s].push((tp, off));
        }
        let mut waits = Vec::new();
        for (s, group) in by_shard.into_iter().enumerate() {
            if !group.is_empty() {
                let this = self.clone();
                waits.push(
                    async move { this.call(s, Op::WaitForData(group, timeout)).await }
                        .boxed_local(),
                );
            }
        }
        if waits.is_empty() {
            return;
        }
        let timer = glommio::timer::sleep(timeout);
        futures::pin_mut!(timer);
        let first = futures::future::select_all(waits);
        let _ = futures::future::select(first, timer).await;
    }

    async fn wait_local(&self, parts: Vec<(TopicPartition, i64)>, timeout: Duration) {
        let waits = match &self.backend {
            Backend::Memory(m) => waiters(&m.partitions.borrow(), &parts),
            Backend::Seaweed(s) => waiters(&s.partitions.borrow(), &parts),
        };
        // Data already there, or a partition is gone: the fetch must look again.
        let Some(waits) = waits else { return };
        let stop = self.stop.notified();
        let timer = glommio::timer::sleep(timeout);
        futures::pin_mut!(timer);
        let any = futures::future::select(futures::future::select_all(waits), stop);
        let _ = futures::future::select(any, timer).await;
    }

    /// Runs a group op on the group's owning shard.
    pub async fn group(self: &Rc<Self>, group_id: &str, op: GroupOp) -> GroupReply {
        let owner = shard_for_group(group_id, self.shards());
        match self.call(owner, Op::Group(op)).await {
            Reply::Group(r) => r,
            _ => GroupReply::Code(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// Runs a group op on every shard (ListGroups).
    pub async fn group_everywhere(self: &Rc<Self>, make: impl Fn() -> GroupOp) -> Vec<GroupReply> {
        let calls: Vec<_> = (0..self.shards())
            .map(|s| {
                let this = self.clone();
                let op = make();
                async move { this.call(s, Op::Group(op)).await }
            })
            .collect();
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|r| match r {
                Reply::Group(g) => Some(g),
                _ => None,
            })
            .collect()
    }

    /// Asks the registry for a change and returns once every shard has the new table.
    pub async fn registry(
        self: &Rc<Self>,
        op: RegistryOp,
    ) -> Result<Arc<TopicMeta>, RegistryError> {
        match self.call(0, Op::Registry(op)).await {
            Reply::Registry(r) => r,
            _ => Err(RegistryError {
                code: ErrorCode::UnknownServerError,
                message: "shutting down".into(),
            }),
        }
    }
}

/// A notification per partition that has no data past its offset yet; `None` when one has (or
/// is gone), so the fetch must read again at once.
fn waiters<P: OwnedPartition>(
    partitions: &HashMap<TopicPartition, P>,
    parts: &[(TopicPartition, i64)],
) -> Option<Vec<Notified>> {
    parts
        .iter()
        .map(|(tp, offset)| match partitions.get(tp) {
            Some(p) if p.next_offset() <= *offset => Some(p.appended().notified()),
            _ => None,
        })
        .collect()
}
