//! The mesh between shards, and each shard's spinner.
//!
//! Each shard has an inbox (a bounded crossbeam channel) that its inbox task busy-polls while
//! the shard is active. Glommio's own channels are not the transport because they are serviced
//! only when the executor polls io_uring, which a shard that spins on its sockets does only
//! every preemption interval. When idle, the inbox task parks on doorbells: a glommio channel
//! mesh of `()` that a sender rings only if the receiver said it was parked. Two earlier
//! doorbells lost wake-ups on these VMs (a socket pair read through glommio, and a foreign
//! `Waker`): both executors slept with a message waiting. `examples/mesh_probe.rs` reproduces
//! that test.
//!
//! Replies travel back through the requester's inbox and complete a shard-local oneshot, so a
//! waiting task is woken by its own executor, never from a foreign thread. Answers that do come
//! from a foreign thread (the SeaweedMQ gRPC core) are awaited through [`Shard::foreign`],
//! which the spinner pokes.

use super::ops::{Envelope, Op, Reply};
use super::Shard;
use crate::config::limits;
use crate::util::Notify;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::channel::oneshot;
use futures::FutureExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cross-shard plumbing every shard holds a handle to (`Send + Sync`).
pub struct Mesh {
    inboxes: Vec<Sender<Envelope>>,
    parked: Vec<AtomicBool>,
    /// Each shard's id in the glommio doorbell mesh (join order, not shard order).
    peer_of: Vec<AtomicUsize>,
    joined: AtomicUsize,
    /// Connections open over all shards, for `--max-connections` (touched on accept only).
    pub connections: AtomicUsize,
    /// Tasks that need every shard running after shutdown starts (a cluster member leaving:
    /// its shards let go of their partitions); no shard stops while any holds.
    holds: AtomicUsize,
    /// Whether the shards spin now (`spin.rs`): off while their cores are found shared.
    pub spin: super::spin::SharedSpin,
}

/// The receiving end a shard takes when it starts.
pub struct ShardEnds {
    pub inbox: Receiver<Envelope>,
}

impl Mesh {
    pub fn new(shards: usize) -> std::io::Result<(Arc<Mesh>, Vec<ShardEnds>)> {
        let mut inboxes = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = crossbeam_channel::bounded(limits::MESH_QUEUE_DEPTH);
            inboxes.push(tx);
            ends.push(ShardEnds { inbox: rx });
        }
        let mesh = Mesh {
            inboxes,
            parked: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            peer_of: (0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect(),
            joined: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            holds: AtomicUsize::new(0),
            spin: Default::default(),
        };
        Ok((Arc::new(mesh), ends))
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Asks every shard to shut down (from the signal thread, which cannot ring doorbells: a
    /// parked shard sees the message at its next safety check).
    /// Keeps every shard running through shutdown until [`Mesh::release_shutdown`].
    pub fn hold_shutdown(&self) {
        self.holds.fetch_add(1, Ordering::SeqCst);
    }

    pub fn release_shutdown(&self) {
        self.holds.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn shutdown_all(&self) {
        for i in 0..self.shards() {
            // A blocking send: shutdown must not be lost to a full inbox.
            let _ = self.inboxes[i].send(Envelope::Shutdown);
        }
    }

    /// Gives every shard the users file as read again (blocking sends, like shutdown's); with
    /// `ack`, each shard acknowledges on it once new logins check against them.
    pub fn users_to_all(
        &self,
        users: &std::sync::Arc<crate::auth::Users>,
        ack: Option<&crossbeam_channel::Sender<()>>,
    ) {
        for i in 0..self.shards() {
            let _ = self.inboxes[i].send(Envelope::Users(users.clone(), ack.cloned()));
        }
    }

    /// Gives every shard the TLS settings as read again.
    pub fn tls_to_all(&self, tls: &std::sync::Arc<rustls::ServerConfig>) {
        for i in 0..self.shards() {
            let _ = self.inboxes[i].send(Envelope::Tls(tls.clone()));
        }
    }
}

/// One shard's end of the mesh: its calls waiting for replies, its doorbells, and what its
/// spinner watches. Shard-local.
pub(crate) struct Endpoint {
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    /// This shard's ends of the glommio doorbell mesh, set by [`Shard::join_doorbells`].
    doorbells: RefCell<Option<Senders<()>>>,
    next_request_id: Cell<u64>,
    /// When any task of this shard last did work; the spinner keeps polling until `--spin-us`
    /// after it.
    last_active: Cell<Instant>,
    /// Sockets of parked connections (and the listener), polled by the spinner while the shard
    /// is active; each entry wakes its task.
    watched: super::watch::Watched,
    /// Tasks of this shard waiting for answers completed on a foreign thread, and their local
    /// wake-up (see [`Shard::foreign`]).
    foreign_waiting: Cell<usize>,
    /// When the latest of them started (the spinner keeps spinning for a while after).
    foreign_since: Cell<Instant>,
    /// How long such waits took lately (moving average, microseconds): spinning pays only
    /// when answers come quickly.
    foreign_typical_us: Cell<u64>,
    foreign_poke: Notify,
    /// Rung when a task starts waiting on a foreign thread while none did: a parked spinner
    /// then moves from its long safety timer to `PARKED_GRPC_CHECK_US`.
    foreign_started: Notify,
}

impl Endpoint {
    pub(crate) fn new() -> Endpoint {
        Endpoint {
            pending: RefCell::default(),
            doorbells: RefCell::default(),
            next_request_id: Cell::new(0),
            last_active: Cell::new(Instant::now()),
            watched: super::watch::Watched::new(),
            foreign_waiting: Cell::new(0),
            foreign_since: Cell::new(Instant::now()),
            foreign_typical_us: Cell::new(0),
            foreign_poke: Notify::default(),
            foreign_started: Notify::default(),
        }
    }
}

impl Shard {
    /// How long this shard keeps busy-polling after its last activity (`spin.rs`).
    pub fn spin_window(&self) -> Duration {
        self.spin.window(&self.mesh.spin)
    }

    /// Records that this shard just did work (keeps its spinner polling).
    pub fn touch(&self) {
        self.link.last_active.set(Instant::now());
    }

    /// Asks the spinner to watch `fd` for readability; the returned notifier fires when it is.
    pub fn watch_fd(&self, fd: RawFd) -> Notify {
        self.link.watched.watch(fd)
    }

    /// Stops watching `fd` (before it is closed or handed to another shard).
    pub fn unwatch_fd(&self, fd: RawFd) {
        self.link.watched.unwatch(fd);
    }

    /// Whether calls to other shards are still waiting for their replies.
    pub(crate) fn calls_pending(&self) -> bool {
        !self.link.pending.borrow().is_empty()
    }

    /// Sends `op` to shard `to` and waits for its reply. Never blocks the thread: a full inbox
    /// makes this task yield and retry.
    pub async fn call(self: &Rc<Self>, to: usize, op: Op) -> Reply {
        if to == self.id {
            return self.execute(op).await;
        }
        let id = self.link.next_request_id.get() + 1;
        self.link.next_request_id.set(id);
        let (tx, rx) = oneshot::channel();
        self.link.pending.borrow_mut().insert(id, tx);
        let from = self.id;
        self.send_to(to, Envelope::Request { id, from, op }).await;
        // The pending entry is dropped only at shutdown.
        rx.await.unwrap_or(Reply::Done)
    }

    /// Delivers an envelope to shard `to`, yielding while its inbox is full, and rings its
    /// doorbell if it is parked.
    pub async fn send_to(&self, to: usize, mut env: Envelope) {
        loop {
            match self.mesh.inboxes[to].try_send(env) {
                Ok(()) => break,
                Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => {
                    env = e;
                    futures_lite::future::yield_now().await;
                }
            }
        }
        if self.mesh.parked[to].load(Ordering::SeqCst) {
            if let Some(bells) = self.link.doorbells.borrow().as_ref() {
                // Full means a ring is already pending: nothing is lost.
                let _ = bells.try_send_to(self.mesh.peer_of[to].load(Ordering::SeqCst), ());
            }
        }
    }

    /// Handles one envelope from the inbox.
    fn dispatch(self: &Rc<Self>, env: Envelope) {
        match env {
            Envelope::Request { id, from, op } => {
                // Partition ops and installs finish without waiting: answer in place.
                // Waits and registry changes get a task of their own.
                let this = self.clone();
                let fut = async move {
                    let reply = this.execute(op).await;
                    this.send_to(from, Envelope::Reply { id, reply }).await;
                };
                let mut fut = Box::pin(fut);
                if (&mut fut).now_or_never().is_none() {
                    glommio::spawn_local(fut).detach();
                }
            }
            Envelope::Reply { id, reply } => {
                if let Some(tx) = self.link.pending.borrow_mut().remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Envelope::Shutdown => {
                self.stopping.set(true);
                self.stop.notify_all();
            }
            Envelope::Users(users, ack) => {
                log::info!(
                    "shard {}: new SASL logins check against the users file as read again ({} \
                     credentials)",
                    self.id,
                    users.len()
                );
                *self.users.borrow_mut() = Some(users);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            Envelope::Tls(tls) => {
                log::info!(
                    "shard {}: new TLS connections use the certificate as read again",
                    self.id
                );
                *self.tls.borrow_mut() = Some(tls);
            }
        }
    }

    /// Joins the doorbell mesh; must run on every shard before any message is sent.
    pub async fn join_doorbells(
        &self,
        builder: MeshBuilder<(), Full>,
    ) -> Vec<(usize, ConnectedReceiver<()>)> {
        let (senders, mut receivers) = builder.join().await.expect("joining the doorbell mesh");
        self.mesh.peer_of[self.id].store(senders.peer_id(), Ordering::SeqCst);
        self.mesh.joined.fetch_add(1, Ordering::SeqCst);
        // Peer ids follow join order; wait until every shard has published its own.
        while self.mesh.joined.load(Ordering::SeqCst) < self.shards() {
            futures_lite::future::yield_now().await;
        }
        *self.link.doorbells.borrow_mut() = Some(senders);
        receivers.streams()
    }

    /// Awaits a future completed on a foreign thread (the gRPC core's answers). It is polled
    /// with a waker that never reaches glommio: a foreign thread waking a glommio task is seen
    /// by glommio 0.9 only when it polls io_uring, and under load such wake-ups broke a task's
    /// waker count and panicked the shard. The spinner pokes the waiting tasks instead, on
    /// every turn while any wait, and a parked shard wakes every `PARKED_GRPC_CHECK_US` to do
    /// so.
    pub(crate) async fn foreign<F: Future>(self: &Rc<Self>, fut: F) -> F::Output {
        struct Waiting<'a>(&'a Endpoint);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.foreign_waiting.set(self.0.foreign_waiting.get() - 1);
            }
        }
        let link = &self.link;
        let started = Instant::now();
        link.foreign_waiting.set(link.foreign_waiting.get() + 1);
        link.foreign_since.set(started);
        if link.foreign_waiting.get() == 1 {
            link.foreign_started.notify_all();
        }
        let _waiting = Waiting(link);
        futures::pin_mut!(fut);
        let noop = futures::task::noop_waker();
        loop {
            let poke = link.foreign_poke.notified();
            let mut cx = std::task::Context::from_waker(&noop);
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                // A moving average over the last eight or so waits.
                let took = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
                let typical = link.foreign_typical_us.get();
                let next = typical - typical / 8 + took / 8;
                link.foreign_typical_us.set(next);
                return v;
            }
            poke.await;
        }
    }

    /// The inbox task, the shard's spinner: busy-polls the inbox and the watched sockets while
    /// there is traffic, parks on the doorbells when idle for longer than `--spin-us` (at once
    /// while its spinning backs off from a shared core, see `spin.rs`).
    pub async fn run_inbox(
        self: Rc<Self>,
        ends: ShardEnds,
        bells: Vec<(usize, ConnectedReceiver<()>)>,
    ) {
        let bell = ring_on_bells(bells);
        loop {
            let got = self.turn(&ends);
            if self.stopping.get()
                && self.mesh.holds.load(Ordering::SeqCst) == 0
                && self.connections.get() == 0
                && !self.calls_pending()
                && ends.inbox.is_empty()
            {
                return;
            }
            if self.spin.sample(&self.mesh.spin) && self.id == 0 {
                let backed_off = self.mesh.spin.backed_off();
                self.metrics.set_spin(self.mesh.spin.backoffs(), backed_off);
            }
            let window = self.spin_window();
            let active = self.link.last_active.get().elapsed() < window
                || (!window.is_zero() && self.grpc_answer_due_soon());
            if got > 0 || active {
                futures_lite::future::yield_now().await;
                continue;
            }
            self.park(&ends, &bell).await;
            self.touch();
        }
    }

    /// Whether a call to the gRPC core started recently, its answer is still due, and answers
    /// lately came within `limits::GRPC_WAIT_SPIN_US`: worth spinning for. Slow answers (a
    /// broker that acks once the filer has the records takes milliseconds) are waited for
    /// parked, leaving the cores to SeaweedFS when it runs beside kelp.
    fn grpc_answer_due_soon(&self) -> bool {
        let spin_us = limits::GRPC_WAIT_SPIN_US;
        let spin = Duration::from_micros(spin_us);
        self.link.foreign_waiting.get() > 0
            && self.link.foreign_typical_us.get() <= spin_us
            && self.link.foreign_since.get().elapsed() < spin
    }

    /// One turn of the spinner: the inbox, the watched sockets, the foreign waits. Returns
    /// how many things it found to do.
    fn turn(self: &Rc<Self>, ends: &ShardEnds) -> usize {
        let mut got = 0;
        while let Ok(env) = ends.inbox.try_recv() {
            self.dispatch(env);
            got += 1;
        }
        got += self.link.watched.wake_ready();
        if got > 0 {
            self.touch();
        }
        if self.link.foreign_waiting.get() > 0 {
            self.link.foreign_poke.notify_all();
        }
        got
    }

    /// Sleeps until a doorbell rings, a foreign wait starts, or the safety timer fires.
    async fn park(&self, ends: &ShardEnds, bell: &Notify) {
        let rung = bell.notified();
        // Created before `foreign_waiting` is read below, with no await between: a foreign wait
        // that starts while this spinner sleeps on the long timer ends that sleep (it left
        // produce answers waiting up to PARKED_INBOX_CHECK_MS, 0.5% of them, before).
        let foreign_started = self.link.foreign_started.notified();
        self.mesh.parked[self.id].store(true, Ordering::SeqCst);
        if ends.inbox.is_empty() {
            // The safety timer bounds the cost of a wake-up that never comes (and lets the
            // signal thread's shutdown message be seen: it cannot ring). Waiting on a foreign
            // thread, whose answers ring nothing, the check is more frequent.
            let check = if self.link.foreign_waiting.get() > 0 {
                Duration::from_micros(limits::PARKED_GRPC_CHECK_US)
            } else {
                Duration::from_millis(limits::PARKED_INBOX_CHECK_MS)
            };
            let safety = glommio::timer::sleep(check);
            futures::pin_mut!(safety);
            let woken = futures::future::select(rung, foreign_started);
            let _ = futures::future::select(woken, safety).await;
        }
        self.mesh.parked[self.id].store(false, Ordering::SeqCst);
    }
}

/// One task per doorbell keeps a single receive pending and turns each ring into a local
/// notification. Re-polling fresh receives on every idle cycle leaked a waker per poll inside
/// glommio 0.9 and panicked a shard after about 16,000 idle cycles.
fn ring_on_bells(bells: Vec<(usize, ConnectedReceiver<()>)>) -> Notify {
    let bell = Notify::default();
    for (_, r) in bells {
        let bell = bell.clone();
        glommio::spawn_local(async move {
            while r.recv().await.is_some() {
                bell.notify_all();
            }
        })
        .detach();
    }
    bell
}
