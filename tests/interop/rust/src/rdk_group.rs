//! `rdkafka-rs` consumer groups: `BaseConsumer::subscribe` members (librdkafka's classic group
//! protocol), each polled on its own thread. A member's view is what librdkafka's rebalance
//! callbacks tell it (assign / revoke, incremental with cooperative-sticky) plus every record it
//! was given. The broker's view comes from librdkafka's group list (ListGroups + DescribeGroups)
//! and `committed()` (OffsetFetch). Every wait polls an observable condition against a generous
//! deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::rdk::{base_config, create_topic_with, LogCtx};
use crate::{Ctx, Outcome, Report};

const CLIENT: &str = "rdkafka-rs";
const GP: i32 = 6;

// ---------------------------------------------------------------------------------------------
// What a member saw.

#[derive(Default)]
struct State {
    assigned: BTreeSet<i32>,
    changes: usize,
    revoked: HashMap<i32, usize>,
    events: Vec<String>,
    deliveries: HashMap<(i32, i64), usize>,
    values: HashMap<(i32, i64), Vec<u8>>,
    errors: Vec<String>,
}

#[derive(Clone)]
struct MemberState {
    name: String,
    started: Instant,
    s: Arc<Mutex<State>>,
}

#[derive(Clone, Debug)]
struct Snap {
    name: String,
    assigned: Vec<i32>,
    changes: usize,
    revoked: HashMap<i32, usize>,
}

impl MemberState {
    fn new(name: &str) -> Self {
        MemberState {
            name: name.to_string(),
            started: Instant::now(),
            s: Arc::new(Mutex::new(State::default())),
        }
    }
    fn event(&self, s: &mut State, e: String) {
        if s.events.len() < 200 {
            s.events
                .push(format!("{:.3}s {e}", self.started.elapsed().as_secs_f64()));
        }
    }
    fn assign(&self, parts: &[i32]) {
        let mut s = self.s.lock().unwrap();
        s.assigned.extend(parts.iter().copied());
        s.changes += 1;
        let e = format!("assigned {parts:?} -> now {:?}", s.assigned);
        self.event(&mut s, e);
    }
    fn revoke(&self, parts: &[i32]) {
        let mut s = self.s.lock().unwrap();
        for p in parts {
            if s.assigned.remove(p) {
                *s.revoked.entry(*p).or_default() += 1;
            }
        }
        s.changes += 1;
        let e = format!("revoked {parts:?} -> now {:?}", s.assigned);
        self.event(&mut s, e);
    }
    fn error(&self, e: String) {
        let mut s = self.s.lock().unwrap();
        if s.errors.len() < 50 {
            s.errors.push(e.clone());
        }
        self.event(&mut s, format!("error: {e}"));
    }
    fn record(&self, p: i32, off: i64, v: &[u8]) {
        let mut s = self.s.lock().unwrap();
        *s.deliveries.entry((p, off)).or_default() += 1;
        s.values.insert((p, off), v.to_vec());
    }
    fn snap(&self) -> Snap {
        let s = self.s.lock().unwrap();
        Snap {
            name: self.name.clone(),
            assigned: s.assigned.iter().copied().collect(),
            changes: s.changes,
            revoked: s.revoked.clone(),
        }
    }
    fn delivered(&self, p: i32, off: i64) -> usize {
        self.s
            .lock()
            .unwrap()
            .deliveries
            .get(&(p, off))
            .copied()
            .unwrap_or(0)
    }
    /// Distinct offsets delivered from `p`, sorted.
    fn offsets_of(&self, p: i32) -> Vec<i64> {
        let s = self.s.lock().unwrap();
        let mut v: Vec<i64> = s
            .deliveries
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        v.sort();
        v
    }
    /// For each given partition with deliveries, one past the highest offset delivered.
    fn positions_of(&self, parts: &[i32]) -> BTreeMap<i32, i64> {
        let s = self.s.lock().unwrap();
        let mut out = BTreeMap::new();
        for ((p, o), _) in s.deliveries.iter() {
            if parts.contains(p) {
                let e = out.entry(*p).or_insert(0);
                *e = (*e).max(o + 1);
            }
        }
        out
    }
    fn note(&self, e: String) {
        let mut s = self.s.lock().unwrap();
        self.event(&mut s, e);
    }
    /// For each owned partition, one past the highest offset delivered.
    fn positions(&self) -> BTreeMap<i32, i64> {
        let s = self.s.lock().unwrap();
        s.assigned
            .iter()
            .map(|p| {
                let next = s
                    .deliveries
                    .keys()
                    .filter(|(q, _)| q == p)
                    .map(|(_, o)| o + 1)
                    .max()
                    .unwrap_or(0);
                (*p, next)
            })
            .collect()
    }
    fn history(&self, n: usize) -> String {
        let s = self.s.lock().unwrap();
        let start = s.events.len().saturating_sub(n);
        let errs = if s.errors.is_empty() {
            String::new()
        } else {
            format!(
                " errors: {:?}",
                &s.errors[s.errors.len().saturating_sub(3)..]
            )
        };
        format!("{}[{}]{errs}", self.name, s.events[start..].join("; "))
    }
}

fn histories(sts: &[MemberState]) -> String {
    sts.iter()
        .map(|s| s.history(8))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn assignments(sts: &[MemberState]) -> String {
    sts.iter()
        .map(|s| format!("{:?}", s.snap().assigned))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// A member: a BaseConsumer subscribed to the topic, polled on its own thread.

struct GroupCtx {
    st: MemberState,
    topic: String,
    logs: LogCtx,
    commit_own: bool,
}

impl ClientContext for GroupCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.logs.log(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.st.error(format!("{error}: {reason}"));
        self.logs.error(error, reason);
    }
}

impl GroupCtx {
    fn parts(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut v: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        v.sort();
        v
    }
}

impl ConsumerContext for GroupCtx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The usual application pattern: commit what was processed when partitions are revoked.
        if let (true, Rebalance::Revoke(tpl)) = (self.commit_own, rebalance) {
            let pos = self.st.positions_of(&self.parts(tpl));
            if pos.is_empty() {
                return;
            }
            let mut t = TopicPartitionList::new();
            for (p, o) in &pos {
                let _ = t.add_partition_offset(&self.topic, *p, Offset::Offset(*o));
            }
            match c.commit(&t, CommitMode::Sync) {
                Ok(()) => self.st.note(format!("committed {pos:?} on revoke")),
                Err(e) => self.st.error(format!("commit {pos:?} on revoke: {e}")),
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let parts = |tpl: &TopicPartitionList| self.parts(tpl);
        match rebalance {
            Rebalance::Assign(tpl) => self.st.assign(&parts(tpl)),
            Rebalance::Revoke(tpl) => self.st.revoke(&parts(tpl)),
            Rebalance::Error(e) => self.st.error(format!("rebalance error: {e}")),
        }
    }
}

#[derive(Clone)]
struct Spec {
    group: String,
    client_id: String,
    instance_id: Option<String>,
    cooperative: bool,
    /// Commit what was consumed in the revoke callback (see GroupCtx::pre_rebalance).
    commit_own: bool,
    session_ms: u32,
    heartbeat_ms: u32,
}

impl Spec {
    fn new(group: &str, client_id: &str) -> Self {
        Spec {
            group: group.to_string(),
            client_id: client_id.to_string(),
            instance_id: None,
            cooperative: false,
            commit_own: false,
            session_ms: 10_000,
            heartbeat_ms: 500,
        }
    }
}

struct Member {
    consumer: Option<Arc<BaseConsumer<GroupCtx>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    topic: String,
}

impl Member {
    fn start(ctx: &Ctx, topic: &str, spec: &Spec, st: MemberState) -> Result<Member, String> {
        let mut c = base_config(ctx, &spec.client_id);
        c.set("group.id", &spec.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", spec.session_ms.to_string())
            .set("heartbeat.interval.ms", spec.heartbeat_ms.to_string())
            // the rebalance timeout; librdkafka wants it >= the session timeout
            .set(
                "max.poll.interval.ms",
                spec.session_ms.max(30_000).to_string(),
            )
            .set("fetch.wait.max.ms", "500")
            .set(
                "partition.assignment.strategy",
                if spec.cooperative {
                    "cooperative-sticky"
                } else {
                    "range"
                },
            );
        if let Some(i) = &spec.instance_id {
            c.set("group.instance.id", i);
        }
        let gctx = GroupCtx {
            st: st.clone(),
            topic: topic.to_string(),
            logs: LogCtx::new("rdkafka group"),
            commit_own: spec.commit_own,
        };
        let consumer: BaseConsumer<GroupCtx> = c
            .create_with_context(gctx)
            .map_err(|e| format!("consumer {} creation: {e}", spec.client_id))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| format!("subscribe({topic}): {e}"))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2, st2) = (consumer.clone(), stop.clone(), st);
        let thread = std::thread::Builder::new()
            .name(format!("member-{}", spec.client_id))
            .spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    match c2.poll(Duration::from_millis(100)) {
                        None => {}
                        Some(Ok(m)) => {
                            st2.record(m.partition(), m.offset(), m.payload().unwrap_or_default())
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => st2.error(format!("poll: {e}")),
                    }
                }
                // Dropping the last handle closes the consumer here (LeaveGroup for a dynamic
                // member; a static member just stops).
                drop(c2);
            })
            .map_err(|e| format!("spawn member thread: {e}"))?;
        Ok(Member {
            consumer: Some(consumer),
            stop,
            thread: Some(thread),
            topic: topic.to_string(),
        })
    }

    /// Commits, in the member's generation, the next offset to read of each given partition.
    fn commit(&self, offsets: &BTreeMap<i32, i64>) -> Result<(), String> {
        let c = self.consumer.as_ref().ok_or("member closed")?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))
                .map_err(|e| format!("tpl: {e}"))?;
        }
        tokio::task::block_in_place(|| c.commit(&tpl, CommitMode::Sync))
            .map_err(|e| format!("commit {offsets:?}: {e}"))
    }

    /// Stops polling and closes the consumer (on the member thread), waiting for it.
    fn close(&mut self) {
        self.consumer.take();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::block_in_place(|| t.join());
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Never block here: the member thread finishes the close on its own.
        self.consumer.take();
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario environment: topic, producer, observer, members.

#[derive(Debug, Default, Clone)]
struct ViewMember {
    member_id: String,
    client_id: String,
    parts: Vec<i32>,
}

#[derive(Debug, Default, Clone)]
struct View {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<ViewMember>,
}

impl View {
    fn by_client(&self, id: &str) -> (Option<&ViewMember>, usize) {
        let m: Vec<&ViewMember> = self.members.iter().filter(|m| m.client_id == id).collect();
        (m.first().copied(), m.len())
    }
    fn show(&self) -> String {
        let ms: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{} owns {:?}", m.client_id, m.parts))
            .collect();
        format!(
            "state {} protocol {}/{} members [{}]",
            self.state,
            self.protocol_type,
            self.protocol,
            ms.join("; ")
        )
    }
}

/// Decodes a ConsumerProtocolAssignment: the partitions of `topic`.
fn decode_assignment(b: &[u8], topic: &str) -> Result<Vec<i32>, String> {
    let mut at = 2usize; // version
    let rd_i32 = |b: &[u8], at: &mut usize| -> Result<i32, String> {
        let v = b.get(*at..*at + 4).ok_or("truncated")?;
        *at += 4;
        Ok(i32::from_be_bytes(v.try_into().unwrap()))
    };
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let n = rd_i32(b, &mut at)?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let l =
            i16::from_be_bytes(b.get(at..at + 2).ok_or("truncated")?.try_into().unwrap()) as usize;
        at += 2;
        let t = String::from_utf8_lossy(b.get(at..at + l).ok_or("truncated")?).to_string();
        at += l;
        let np = rd_i32(b, &mut at)?;
        for _ in 0..np.max(0) {
            let p = rd_i32(b, &mut at)?;
            if t == topic {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

struct Env {
    ctx: Arc<Ctx>,
    topic: String,
    logs: LogCtx,
    producer: FutureProducer<LogCtx>,
    produced: Mutex<HashMap<(i32, i64), Vec<u8>>>,
    members: Mutex<Vec<(String, Member)>>,
    observers: Mutex<HashMap<String, Arc<BaseConsumer<LogCtx>>>>,
}

impl Env {
    async fn new(ctx: Arc<Ctx>, topic: String) -> Result<Arc<Env>, String> {
        let logs = LogCtx::new("rdkafka group-env");
        create_topic_with(&ctx, &topic, GP, &logs).await?;
        let producer: FutureProducer<LogCtx> =
            base_config(&ctx, "kelp-interop-rdkafka-group-producer")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("message.timeout.ms", "30000")
                .create_with_context(logs.clone())
                .map_err(|e| format!("producer creation: {e}"))?;
        Ok(Arc::new(Env {
            ctx,
            topic,
            logs,
            producer,
            produced: Mutex::new(HashMap::new()),
            members: Mutex::new(Vec::new()),
            observers: Mutex::new(HashMap::new()),
        }))
    }

    fn start(&self, spec: &Spec) -> Result<MemberState, String> {
        let st = MemberState::new(&spec.client_id);
        let m = Member::start(&self.ctx, &self.topic, spec, st.clone())?;
        self.members
            .lock()
            .unwrap()
            .push((spec.client_id.clone(), m));
        Ok(st)
    }

    fn commit(&self, name: &str, offsets: &BTreeMap<i32, i64>) -> Result<(), String> {
        let ms = self.members.lock().unwrap();
        let (_, m) = ms
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no running member {name}"))?;
        m.commit(offsets)
            .map_err(|e| format!("{name}: OffsetCommit: {e}"))
    }

    /// Closes one member (the last started under that name) and waits for the close.
    fn stop(&self, name: &str) {
        let m = {
            let mut ms = self.members.lock().unwrap();
            ms.iter()
                .rposition(|(n, _)| n == name)
                .map(|i| ms.remove(i))
        };
        if let Some((_, mut m)) = m {
            m.close();
        }
    }

    fn close_all(&self) {
        let ms: Vec<(String, Member)> = std::mem::take(&mut *self.members.lock().unwrap());
        // Close them concurrently: set every stop flag first, then wait.
        let mut ms: Vec<Member> = ms.into_iter().map(|(_, m)| m).collect();
        for m in &mut ms {
            m.consumer.take();
            m.stop.store(true, Ordering::Relaxed);
        }
        for m in &mut ms {
            m.close();
        }
    }

    /// Produces n records to every partition; returns the offsets per partition.
    async fn produce(&self, n: usize, tag: &str) -> Result<BTreeMap<i32, Vec<i64>>, String> {
        let mut futs = Vec::new();
        for p in 0..GP {
            for i in 0..n {
                let v = format!("{tag}-p{p}-{i}").into_bytes();
                let k = format!("k{i}");
                let rec = FutureRecord::to(&self.topic)
                    .partition(p)
                    .key(&k)
                    .payload(&v);
                let f = self
                    .producer
                    .send_result(rec)
                    .map_err(|(e, _)| format!("enqueue: {e}"))?;
                futs.push((v, f));
            }
        }
        let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (v, f) in futs {
            match tokio::time::timeout(Duration::from_secs(30), f).await {
                Err(_) => {
                    return Err(format!(
                        "produce {tag}: no delivery report within 30s{}",
                        self.logs.tail()
                    ))
                }
                Ok(Err(_)) => return Err("producer dropped".into()),
                Ok(Ok(Err((e, _)))) => {
                    return Err(format!("produce {tag}: {e}{}", self.logs.tail()))
                }
                Ok(Ok(Ok(d))) => {
                    out.entry(d.partition).or_default().push(d.offset);
                    self.produced
                        .lock()
                        .unwrap()
                        .insert((d.partition, d.offset), v);
                }
            }
        }
        for v in out.values_mut() {
            v.sort();
        }
        Ok(out)
    }

    fn observer(&self, group: &str) -> Result<Arc<BaseConsumer<LogCtx>>, String> {
        let mut obs = self.observers.lock().unwrap();
        if let Some(c) = obs.get(group) {
            return Ok(c.clone());
        }
        // A consumer with the group's id that never subscribes: it only asks.
        let c: BaseConsumer<LogCtx> = base_config(&self.ctx, "kelp-interop-rdkafka-group-observer")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create_with_context(self.logs.clone())
            .map_err(|e| format!("observer creation: {e}"))?;
        let c = Arc::new(c);
        obs.insert(group.to_string(), c.clone());
        Ok(c)
    }

    /// The broker's view of the group (ListGroups + DescribeGroups through librdkafka).
    fn describe(&self, group: &str) -> Result<View, String> {
        let c = self.observer(group)?;
        let gl = tokio::task::block_in_place(|| {
            c.fetch_group_list(Some(group), Duration::from_secs(10))
        })
        .map_err(|e| format!("DescribeGroups({group}): {e}"))?;
        let Some(g) = gl.groups().iter().find(|g| g.name() == group) else {
            return Err(format!("DescribeGroups({group}): group not in the answer"));
        };
        let mut v = View {
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            protocol: g.protocol().to_string(),
            members: Vec::new(),
        };
        for m in g.members() {
            let parts = decode_assignment(m.assignment().unwrap_or_default(), &self.topic)
                .map_err(|e| {
                    format!(
                        "DescribeGroups({group}) member {} assignment: {e}",
                        m.client_id()
                    )
                })?;
            v.members.push(ViewMember {
                member_id: m.id().to_string(),
                client_id: m.client_id().to_string(),
                parts,
            });
        }
        Ok(v)
    }

    /// The group's committed offsets on the topic (OffsetFetch).
    fn committed(&self, group: &str) -> Result<BTreeMap<i32, i64>, String> {
        let c = self.observer(group)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..GP {
            tpl.add_partition(&self.topic, p);
        }
        let got = tokio::task::block_in_place(|| c.committed_offsets(tpl, Duration::from_secs(10)))
            .map_err(|e| format!("OffsetFetch({group}): {e}"))?;
        let mut out = BTreeMap::new();
        for e in got.elements_for_topic(&self.topic) {
            if let Err(err) = e.error() {
                return Err(format!(
                    "OffsetFetch({group}) partition {}: {err}",
                    e.partition()
                ));
            }
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), o);
            }
        }
        Ok(out)
    }

    fn value(&self, p: i32, off: i64) -> Option<Vec<u8>> {
        self.produced.lock().unwrap().get(&(p, off)).cloned()
    }

    /// Members' own views form an exact, balanced split and the broker agrees.
    fn stable_check(&self, group: &str, sts: &[MemberState]) -> (bool, String, View) {
        let snaps: Vec<Snap> = sts.iter().map(|s| s.snap()).collect();
        let mut owner: HashMap<i32, String> = HashMap::new();
        let mut problems = Vec::new();
        for s in &snaps {
            for p in &s.assigned {
                if let Some(o) = owner.insert(*p, s.name.clone()) {
                    problems.push(format!("partition {p} owned by both {o} and {}", s.name));
                }
            }
        }
        for p in 0..GP {
            if !owner.contains_key(&p) {
                problems.push(format!("partition {p} owned by no member"));
            }
        }
        let k = sts.len() as i32;
        let (lo, hi) = (GP / k, (GP + k - 1) / k);
        for s in &snaps {
            let n = s.assigned.len() as i32;
            if n < lo || n > hi {
                problems.push(format!("{} owns {n} partitions, want {lo}..{hi}", s.name));
            }
        }
        let mut status = format!(
            "clients see {}",
            snaps
                .iter()
                .map(|s| format!("{}={:?}", s.name, s.assigned))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let view = match self.describe(group) {
            Err(e) => {
                problems.push(e);
                View::default()
            }
            Ok(v) => {
                status += &format!("; broker: {}", v.show());
                if v.state != "Stable" {
                    problems.push(format!("broker state {}", v.state));
                }
                if v.members.len() != sts.len() {
                    problems.push(format!(
                        "broker lists {} members, want {}",
                        v.members.len(),
                        sts.len()
                    ));
                }
                for s in &snaps {
                    match v.by_client(&s.name) {
                        (Some(m), 1) => {
                            if m.parts != s.assigned {
                                problems.push(format!(
                                    "broker says {} owns {:?}, client says {:?}",
                                    s.name, m.parts, s.assigned
                                ));
                            }
                        }
                        (_, n) => problems.push(format!(
                            "broker lists {n} members with client id {}",
                            s.name
                        )),
                    }
                }
                v
            }
        };
        if problems.is_empty() {
            (true, status, view)
        } else {
            let start = problems.len().saturating_sub(4);
            (
                false,
                format!("{status}; problems: {}", problems[start..].join(", ")),
                view,
            )
        }
    }

    async fn wait_stable(
        &self,
        group: &str,
        sts: &[MemberState],
        limit: Duration,
    ) -> Result<View, String> {
        let mut view = View::default();
        wait_for(
            &format!("group {group} stable with {} members", sts.len()),
            limit,
            || {
                let (ok, status, v) = self.stable_check(group, sts);
                view = v;
                (ok, status)
            },
        )
        .await
        .map_err(|e| format!("{e}; history: {}", histories(sts)))?;
        Ok(view)
    }

    /// Waits until every offset of `want` was delivered to at least one of `sts`.
    async fn wait_consumed(
        &self,
        what: &str,
        sts: &[MemberState],
        want: &BTreeMap<i32, Vec<i64>>,
        limit: Duration,
    ) -> Result<(), String> {
        wait_for(what, limit, || {
            let mut missing = Vec::new();
            let mut total = 0;
            for (p, offs) in want {
                for o in offs {
                    total += 1;
                    if sts.iter().map(|s| s.delivered(*p, *o)).sum::<usize>() == 0 {
                        missing.push(format!("p{p}@{o}"));
                    }
                }
            }
            let head: Vec<&String> = missing.iter().take(8).collect();
            (
                missing.is_empty(),
                format!(
                    "{} of {total} records not delivered yet, e.g. {head:?}",
                    missing.len()
                ),
            )
        })
        .await
        .map_err(|e| format!("{e}; history: {}", histories(sts)))
    }

    /// Every offset of `want` delivered exactly once over `sts`, with its produced value, and
    /// with `owners`, to the member owning the partition.
    fn check_once(
        &self,
        sts: &[MemberState],
        want: &BTreeMap<i32, Vec<i64>>,
        owners: bool,
    ) -> Result<(), String> {
        for (p, offs) in want {
            for o in offs {
                let mut got = Vec::new();
                for s in sts {
                    let n = s.delivered(*p, *o);
                    if n == 0 {
                        continue;
                    }
                    got.extend(std::iter::repeat(s.name.clone()).take(n));
                    let (v, own) = {
                        let g = s.s.lock().unwrap();
                        (g.values.get(&(*p, *o)).cloned(), g.assigned.contains(p))
                    };
                    if let Some(w) = self.value(*p, *o) {
                        if v.as_ref() != Some(&w) {
                            return Err(format!(
                                "partition {p} offset {o}: {} got {:?}, produced {:?}",
                                s.name,
                                v.map(|v| String::from_utf8_lossy(&v).to_string()),
                                String::from_utf8_lossy(&w)
                            ));
                        }
                    }
                    if owners && !own {
                        return Err(format!(
                            "partition {p} offset {o} delivered to {}, which does not own it",
                            s.name
                        ));
                    }
                }
                if got.len() != 1 {
                    return Err(format!("partition {p} offset {o} delivered {} times (to {got:?}), want exactly once", got.len()));
                }
            }
        }
        Ok(())
    }

    async fn wait_committed(&self, group: &str, want: &BTreeMap<i32, i64>) -> Result<(), String> {
        wait_for(
            &format!("OffsetFetch({group}) to show the commits"),
            Duration::from_secs(15),
            || match self.committed(group) {
                Err(e) => (false, e),
                Ok(got) => {
                    let ok = want.iter().all(|(p, o)| got.get(p) == Some(o));
                    (ok, format!("committed {got:?}, want {want:?}"))
                }
            },
        )
        .await
    }

    async fn wait_empty(&self, group: &str) -> Result<View, String> {
        let mut view = View::default();
        wait_for(
            &format!("group {group} Empty after its members left"),
            Duration::from_secs(20),
            || match self.describe(group) {
                Err(e) => (false, e),
                Ok(v) => {
                    let ok = v.state == "Empty" && v.members.is_empty();
                    let s = v.show();
                    view = v;
                    (ok, s)
                }
            },
        )
        .await?;
        Ok(view)
    }

    /// Has each member commit its consumed positions; returns all commits.
    fn commit_positions(&self, sts: &[MemberState]) -> Result<BTreeMap<i32, i64>, String> {
        let mut all = BTreeMap::new();
        for s in sts {
            let pos = s.positions();
            self.commit(&s.name, &pos)
                .map_err(|e| format!("{e}; history: {}", s.history(6)))?;
            all.extend(pos);
        }
        Ok(all)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // reached on a scenario timeout too: stop every member thread (they close on their own)
        for (_, m) in self.members.lock().unwrap().iter_mut() {
            m.consumer.take();
            m.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; the error quotes its last status.
async fn wait_for<F: FnMut() -> (bool, String)>(
    what: &str,
    limit: Duration,
    mut cond: F,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let (ok, status) = cond();
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: not reached within {}s: {status}",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn flatten(m: &BTreeMap<i32, Vec<i64>>) -> usize {
    m.values().map(|v| v.len()).sum()
}

fn concat(a: &BTreeMap<i32, Vec<i64>>, b: &BTreeMap<i32, Vec<i64>>) -> BTreeMap<i32, Vec<i64>> {
    let mut out = a.clone();
    for (p, v) in b {
        out.entry(*p).or_default().extend(v.iter().copied());
    }
    out
}

fn start_all(
    env: &Env,
    group: &str,
    names: &[&str],
    tweak: impl Fn(&mut Spec),
) -> Result<Vec<MemberState>, String> {
    names
        .iter()
        .map(|n| {
            let mut s = Spec::new(group, &format!("{group}-{n}"));
            tweak(&mut s);
            env.start(&s)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn group_split(env: Arc<Env>, group: String) -> Outcome {
    env.produce(10, "before").await?;
    let sts = start_all(&env, &group, &["m0", "m1", "m2"], |_| {})?;
    let view = env
        .wait_stable(&group, &sts, Duration::from_secs(60))
        .await?;
    let markers = env.produce(5, "after-stable").await?;
    env.wait_consumed(
        "records produced after the group was stable",
        &sts,
        &markers,
        Duration::from_secs(30),
    )
    .await?;
    env.check_once(&sts, &markers, true)
        .map_err(|e| format!("{e}; assignments {}", assignments(&sts)))?;
    let (ok, status, _) = env.stable_check(&group, &sts);
    if !ok {
        return Err(format!(
            "group no longer stable after consuming: {status}; history: {}",
            histories(&sts)
        ));
    }
    Ok(format!(
        "3 members own {} (protocol {}); {} records produced afterwards each consumed once by its partition's owner",
        assignments(&sts),
        view.protocol,
        flatten(&markers)
    ))
}

/// group-leave: one of 3 members leaves cleanly; the other two take all 6 partitions well before
/// the session timeout (so it was the LeaveGroup, not an expiry) and consume everything exactly
/// once. Members commit what they consumed in the revoke callback (the leaver on its way out, the
/// others when the rebalance starts), so every partition resumes where its previous owner stopped.
async fn group_leave(env: Arc<Env>, group: String) -> Outcome {
    let session = Duration::from_secs(30);
    let sts = start_all(&env, &group, &["m0", "m1", "m2"], |s| {
        s.session_ms = session.as_millis() as u32;
        s.commit_own = true;
    })?;
    env.wait_stable(&group, &sts, Duration::from_secs(60))
        .await?;
    // produced once stable, so startup rebalances cannot re-deliver it
    let batch_a = env.produce(20, "a").await?;
    env.wait_consumed("first batch", &sts, &batch_a, Duration::from_secs(30))
        .await?;
    let leaver = sts[1].snap();
    let before = env.describe(&group)?;
    let t0 = Instant::now();
    env.stop(&leaver.name);
    let rest = vec![sts[0].clone(), sts[2].clone()];
    let view = env
        .wait_stable(&group, &rest, session - Duration::from_secs(8))
        .await
        .map_err(|e| {
            format!(
                "after {} left (it owned {:?}): {e}",
                leaver.name, leaver.assigned
            )
        })?;
    let took = t0.elapsed();
    if let (Some(old), 1) = before.by_client(&leaver.name) {
        if view.members.iter().any(|m| m.member_id == old.member_id) {
            return Err(format!(
                "DescribeGroups still lists member id {} of {} after it left",
                old.member_id, leaver.name
            ));
        }
    }
    let batch_b = env.produce(20, "b").await?;
    env.wait_consumed("second batch", &rest, &batch_b, Duration::from_secs(30))
        .await?;
    let all = concat(&batch_a, &batch_b);
    env.check_once(&sts, &all, false).map_err(|e| {
        format!(
            "{e} (each member commits on revoke); history: {}",
            histories(&sts)
        )
    })?;
    env.check_once(&rest, &batch_b, true)?;
    let rest_own = assignments(&rest);
    // The rest leave too (committing on the way out): Empty, with everything committed.
    env.stop(&sts[0].name);
    env.stop(&sts[2].name);
    env.wait_empty(&group).await?;
    let ends: BTreeMap<i32, i64> = all
        .iter()
        .map(|(p, v)| (*p, v.iter().max().map(|o| o + 1).unwrap_or(0)))
        .collect();
    env.wait_committed(&group, &ends)
        .await
        .map_err(|e| format!("{e}; history: {}", histories(&sts)))?;
    Ok(format!(
        "{} left owning {:?}; {:.1}s later (session timeout {}s) the other two own {rest_own}; {} records consumed exactly once across the leave (commits on revoke), all committed once the group was Empty",
        leaver.name,
        leaver.assigned,
        took.as_secs_f64(),
        session.as_secs(),
        flatten(&all)
    ))
}

fn resume_at(p: i32) -> i64 {
    7 + 4 * p as i64
}

async fn group_resume(env: Arc<Env>, group: String) -> Outcome {
    const N: i64 = 40;
    let batch = env.produce(N as usize, "r").await?;
    let sts = start_all(&env, &group, &["m0", "m1"], |_| {})?;
    env.wait_stable(&group, &sts, Duration::from_secs(60))
        .await?;
    env.wait_consumed("all records", &sts, &batch, Duration::from_secs(30))
        .await?;
    let mut want = BTreeMap::new();
    for s in &sts {
        let part: BTreeMap<i32, i64> = s
            .snap()
            .assigned
            .iter()
            .map(|p| (*p, resume_at(*p)))
            .collect();
        env.commit(&s.name, &part)?;
        want.extend(part);
    }
    env.wait_committed(&group, &want).await?;
    for s in &sts {
        env.stop(&s.name);
    }
    env.wait_empty(&group).await?;
    env.wait_committed(&group, &want)
        .await
        .map_err(|e| format!("commits after the group emptied: {e}"))?;
    let r = start_all(&env, &group, &["resumer"], |_| {})?;
    env.wait_stable(&group, &r, Duration::from_secs(60)).await?;
    let rest: BTreeMap<i32, Vec<i64>> = (0..GP).map(|p| (p, (resume_at(p)..N).collect())).collect();
    env.wait_consumed("the uncommitted rest", &r, &rest, Duration::from_secs(30))
        .await?;
    for p in 0..GP {
        let got = r[0].offsets_of(p);
        if got.first() != Some(&resume_at(p)) {
            return Err(format!(
                "partition {p}: resumed member read offsets {got:?}, want to start at the commit {} (re-read or gap)",
                resume_at(p)
            ));
        }
    }
    env.check_once(&r, &rest, true)?;
    Ok(format!(
        "committed {want:?} after consuming {N} per partition; after both left, a new member read exactly offsets commit..{} of every partition, once each",
        N - 1
    ))
}

async fn group_two_groups(env: Arc<Env>, group: String) -> Outcome {
    const N1: usize = 30;
    const N2: usize = 10;
    const B_AT: i64 = 12;
    let (ga, gb) = (format!("{group}-a"), format!("{group}-b"));
    let batch1 = env.produce(N1, "one").await?;
    let asts = start_all(&env, &ga, &["m0", "m1"], |_| {})?;
    let bsts = start_all(&env, &gb, &["m0"], |_| {})?;
    env.wait_stable(&ga, &asts, Duration::from_secs(60)).await?;
    env.wait_stable(&gb, &bsts, Duration::from_secs(60)).await?;
    env.wait_consumed(
        "group A reads everything",
        &asts,
        &batch1,
        Duration::from_secs(30),
    )
    .await?;
    env.wait_consumed(
        "group B reads everything",
        &bsts,
        &batch1,
        Duration::from_secs(30),
    )
    .await?;
    let _ = env.commit_positions(&asts)?;
    let bwant: BTreeMap<i32, i64> = (0..GP).map(|p| (p, B_AT)).collect();
    env.commit(&bsts[0].name, &bwant)?;
    let batch2 = env.produce(N2, "two").await?;
    env.wait_consumed(
        "group A reads the second batch",
        &asts,
        &batch2,
        Duration::from_secs(30),
    )
    .await?;
    env.wait_consumed(
        "group B reads the second batch",
        &bsts,
        &batch2,
        Duration::from_secs(30),
    )
    .await?;
    env.check_once(&asts, &batch2, true)
        .map_err(|e| format!("group A: {e}"))?;
    env.check_once(&bsts, &batch2, true)
        .map_err(|e| format!("group B: {e}"))?;
    let acommit = env.commit_positions(&asts)?;
    env.wait_committed(&ga, &acommit).await?;
    env.wait_committed(&gb, &bwant)
        .await
        .map_err(|e| format!("group B's commits after group A committed: {e}"))?;
    let a_own = assignments(&asts);
    for s in asts.iter().chain(bsts.iter()) {
        env.stop(&s.name);
    }
    let r = start_all(&env, &gb, &["resumer"], |_| {})?;
    env.wait_stable(&gb, &r, Duration::from_secs(60)).await?;
    let total = (N1 + N2) as i64;
    let rest: BTreeMap<i32, Vec<i64>> = (0..GP).map(|p| (p, (B_AT..total).collect())).collect();
    env.wait_consumed("group B resumes", &r, &rest, Duration::from_secs(30))
        .await?;
    for p in 0..GP {
        let got = r[0].offsets_of(p);
        if got.first() != Some(&B_AT) {
            return Err(format!(
                "group B partition {p} resumed at {:?}, its commit is {B_AT} (group A committed {:?})",
                got.first(),
                acommit.get(&p)
            ));
        }
    }
    env.check_once(&r, &rest, true)
        .map_err(|e| format!("group B resumed: {e}"))?;
    Ok(format!(
        "A (2 members {a_own}) and B (1 member) each read all {} records; A committed {acommit:?}, B {B_AT} everywhere, neither moved the other; B resumed at {B_AT}",
        total as usize * GP as usize
    ))
}

async fn group_static(env: Arc<Env>, group: String) -> Outcome {
    let session = Duration::from_secs(30);
    let heartbeat = Duration::from_millis(500);
    env.produce(5, "s").await?;
    let specs: Vec<Spec> = (0..3)
        .map(|i| {
            let mut s = Spec::new(&group, &format!("{group}-m{i}"));
            s.instance_id = Some(format!("{group}-instance-{i}"));
            s.session_ms = session.as_millis() as u32;
            s.heartbeat_ms = heartbeat.as_millis() as u32;
            s
        })
        .collect();
    let mut sts: Vec<MemberState> = specs
        .iter()
        .map(|s| env.start(s))
        .collect::<Result<_, _>>()?;
    env.wait_stable(&group, &sts, Duration::from_secs(60))
        .await?;
    let owned: Vec<Vec<i32>> = sts.iter().map(|s| s.snap().assigned).collect();
    let unchanged = |st: &MemberState, was: &Snap| -> Result<(), String> {
        let now = st.snap();
        if now.changes != was.changes || now.assigned != was.assigned {
            return Err(format!(
                "{} saw a rebalance after a static restart: assignment {:?} -> {:?}; history: {}",
                now.name,
                was.assigned,
                now.assigned,
                st.history(8)
            ));
        }
        Ok(())
    };
    let mut took = Vec::new();
    for r in 0..3 {
        let before = env.describe(&group)?;
        let others: Vec<(usize, Snap)> = (0..3)
            .filter(|i| *i != r)
            .map(|i| (i, sts[i].snap()))
            .collect();
        let old_id = before
            .by_client(&sts[r].name)
            .0
            .map(|m| m.member_id.clone())
            .unwrap_or_default();
        let t0 = Instant::now();
        env.stop(&sts[r].name);
        let v = env.describe(&group)?;
        if v.state != "Stable" || v.members.len() != 3 {
            return Err(format!(
                "right after static member {} closed, DescribeGroups says {}; a static member's close must not leave",
                sts[r].name,
                v.show()
            ));
        }
        let st = env.start(&specs[r])?;
        sts[r] = st.clone();
        let want = owned[r].clone();
        wait_for(&format!("restarted static member {} owns its old partitions", st.name), Duration::from_secs(20), || {
            let ns = st.snap();
            match env.describe(&group) {
                Err(e) => (false, e),
                Ok(v) => {
                    let status = format!("restarted member sees {:?} (had {want:?}); broker: {}", ns.assigned, v.show());
                    let ok = ns.assigned == want
                        && v.state == "Stable"
                        && v.members.len() == 3
                        && matches!(v.by_client(&st.name), (Some(m), 1) if m.parts == want && m.member_id != old_id);
                    (ok, status)
                }
            }
        })
        .await
        .map_err(|e| format!("{e}; history: {}", histories(&sts)))?;
        took.push(format!("{:.1}s", t0.elapsed().as_secs_f64()));
        if st.snap().changes != 1 {
            return Err(format!(
                "restarted static member {} went through more than one assignment: {}",
                st.name,
                st.history(8)
            ));
        }
        for (i, was) in &others {
            unchanged(&sts[*i], was)?;
        }
        let after = env.describe(&group)?;
        for (i, _) in &others {
            let b = before
                .by_client(&sts[*i].name)
                .0
                .map(|m| m.member_id.clone());
            let a = after
                .by_client(&sts[*i].name)
                .0
                .map(|m| m.member_id.clone());
            if a != b {
                return Err(format!(
                    "{}'s member id changed from {b:?} to {a:?} across {}'s static restart",
                    sts[*i].name, sts[r].name
                ));
            }
        }
    }
    let markers = env.produce(3, "after-restarts").await?;
    env.wait_consumed(
        "records after the restarts",
        &sts,
        &markers,
        Duration::from_secs(30),
    )
    .await?;
    env.check_once(&sts, &markers, true)?;
    // No late rebalance either: a rebalance reaches members with their next heartbeat, so watch
    // everyone for a dozen heartbeat intervals; any rebalance callback fails at once.
    let window = heartbeat * 12;
    let snaps: Vec<Snap> = sts.iter().map(|s| s.snap()).collect();
    let end = Instant::now() + window;
    loop {
        for (i, s) in sts.iter().enumerate() {
            unchanged(s, &snaps[i])?;
        }
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(format!(
        "3 static members owning {:?} {:?} {:?} each restarted in turn (session timeout {}s) and had their partitions back after {}, under new member ids, with one assignment callback; the others saw no rebalance then nor in the {:.0}s after; {} new records consumed once by their owners",
        owned[0],
        owned[1],
        owned[2],
        session.as_secs(),
        took.join("/"),
        window.as_secs_f64(),
        flatten(&markers)
    ))
}

async fn group_cooperative(env: Arc<Env>, group: String) -> Outcome {
    env.produce(5, "c").await?;
    let sts = start_all(&env, &group, &["m0", "m1"], |s| s.cooperative = true)?;
    let view = env
        .wait_stable(&group, &sts, Duration::from_secs(60))
        .await?;
    if view.protocol != "cooperative-sticky" {
        return Err(format!(
            "DescribeGroups protocol {:?}, want cooperative-sticky",
            view.protocol
        ));
    }
    let before: Vec<Snap> = sts.iter().map(|s| s.snap()).collect();
    let n = start_all(&env, &group, &["m2"], |s| s.cooperative = true)?;
    let all = vec![sts[0].clone(), sts[1].clone(), n[0].clone()];
    env.wait_stable(&group, &all, Duration::from_secs(60))
        .await?;
    let mut moved: Vec<i32> = Vec::new();
    for (i, s) in sts.iter().enumerate() {
        let now = s.snap();
        for p in &now.assigned {
            if !before[i].assigned.contains(p) {
                return Err(format!(
                    "{} gained partition {p} when a member joined (had {:?}, now {:?})",
                    now.name, before[i].assigned, now.assigned
                ));
            }
            if now.revoked.get(p) != before[i].revoked.get(p) {
                return Err(format!(
                    "{} had partition {p} revoked during the incremental rebalance although it kept it (had {:?}, now {:?}); history: {}",
                    now.name,
                    before[i].assigned,
                    now.assigned,
                    s.history(10)
                ));
            }
        }
        if now.assigned.is_empty() {
            return Err(format!("{} lost everything", now.name));
        }
        moved.extend(
            before[i]
                .assigned
                .iter()
                .filter(|p| !now.assigned.contains(p)),
        );
    }
    moved.sort();
    let markers = env.produce(3, "after-join").await?;
    env.wait_consumed(
        "records after the join",
        &all,
        &markers,
        Duration::from_secs(30),
    )
    .await?;
    env.check_once(&all, &markers, true)?;
    Ok(format!(
        "before {:?} {:?}; after a third member joined {}: only {moved:?} moved, kept partitions never revoked; {} new records consumed once by their owners",
        before[0].assigned,
        before[1].assigned,
        assignments(&all),
        flatten(&markers)
    ))
}

// ---------------------------------------------------------------------------------------------

async fn with_env<F, Fut>(ctx: Arc<Ctx>, scenario: &'static str, f: F) -> Outcome
where
    F: FnOnce(Arc<Env>, String) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let topic = ctx.topic("rdkafka", scenario);
    let env = Env::new(ctx, topic.clone()).await?;
    let out = f(env.clone(), format!("{topic}-g")).await;
    env.close_all();
    out
}

pub async fn run_all(ctx: &Arc<Ctx>, report: &mut Report) {
    let limit = Duration::from_secs(150);
    report
        .run(
            CLIENT,
            "group-split",
            limit,
            with_env(ctx.clone(), "group-split", group_split),
        )
        .await;
    report
        .run(
            CLIENT,
            "group-leave",
            limit,
            with_env(ctx.clone(), "group-leave", group_leave),
        )
        .await;
    report
        .run(
            CLIENT,
            "group-resume",
            limit,
            with_env(ctx.clone(), "group-resume", group_resume),
        )
        .await;
    report
        .run(
            CLIENT,
            "group-two-groups",
            limit,
            with_env(ctx.clone(), "group-two-groups", group_two_groups),
        )
        .await;
    report
        .run(
            CLIENT,
            "group-static",
            limit,
            with_env(ctx.clone(), "group-static", group_static),
        )
        .await;
    report
        .run(
            CLIENT,
            "group-cooperative",
            limit,
            with_env(ctx.clone(), "group-cooperative", group_cooperative),
        )
        .await;
}
