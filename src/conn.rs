//! One client connection on its shard: frames in, requests pipelined, responses out strictly in
//! request order.
//!
//! The socket is read and written with non-blocking syscalls from this task, which yields to
//! the executor when there is nothing to do and keeps doing so for `--spin-us` after the last
//! activity (busy-polling: about 7 us per loopback round trip here, against about 80 us when a
//! thread must be woken). After that it parks on glommio's io_uring `peek`, which costs nothing
//! while the connection is idle.
//!
//! **Moving to the owner.** A connection lives on the shard the kernel gave it; a request for a
//! partition another shard owns crosses to it and back, two wake-ups when shards park (shared
//! cores). A connection whose last `CONNECTION_HANDOFF_STREAK` produce and fetch requests all
//! went to one other shard moves there between requests, when nothing is in flight or
//! buffered: the socket is duplicated to the owner, which reads on from it, and this shard
//! closes its own descriptor (never `shutdown`, which would end the socket for both). A TLS
//! session and a SASL login move with the socket (`auth::Security`). Clients that spread over
//! partitions of several shards (most producers with many partitions) stay.

use crate::auth::session::{Admit, Gate};
use crate::auth::Security;
use crate::config::limits;
use crate::error::ErrorCode;
use crate::handlers;
use crate::metrics::{self, RequestTimer};
use crate::protocol::{self, DecodeError, FRAME_PREFIX_BYTES};
use crate::shard::Shard;
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

type Pending = Pin<Box<dyn std::future::Future<Output = Option<Bytes>>>>;

/// Why a connection is being closed, for the one log line it gets.
enum Close {
    PeerClosed,
    Protocol(String),
    Io(io::Error),
    Shutdown,
}

/// A frame taken off the read buffer, or why the buffer cannot hold one.
enum Frame {
    Complete(Bytes),
    NeedMore,
    TooLarge(i64),
}

fn take_frame(buf: &mut BytesMut, max: usize) -> Frame {
    if buf.len() < FRAME_PREFIX_BYTES {
        return Frame::NeedMore;
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
    if len < 0 || len as u64 > max as u64 {
        return Frame::TooLarge(len);
    }
    let total = FRAME_PREFIX_BYTES + len as usize;
    if buf.len() < total {
        return Frame::NeedMore;
    }
    let mut frame = buf.split_to(total);
    frame.advance(FRAME_PREFIX_BYTES);
    Frame::Complete(frame.freeze())
}

fn recv_nonblocking(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(limits::READ_BUFFER_BYTES);
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most spare.len() bytes into memory we own; we then mark exactly
    // the bytes it reported as initialised.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr() as *mut libc::c_void,
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

fn send_nonblocking(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: send reads at most data.len() bytes from a live slice.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Where a connection's partition requests have gone lately, to move it there.
#[derive(Default)]
struct Affinity {
    /// The other shard every request of the streak went to.
    shard: Option<usize>,
    streak: u32,
}

impl Affinity {
    /// Counts a request: `None` if it names no partition (metadata, group ops), `Some(None)`
    /// if its partitions are spread or unknown, `Some(Some(s))` if shard `s` owns them all.
    fn observe(&mut self, owner: Option<Option<usize>>, me: usize) {
        match owner {
            None => {}
            Some(Some(s)) if s != me => {
                if self.shard == Some(s) {
                    self.streak = self.streak.saturating_add(1);
                } else {
                    *self = Affinity {
                        shard: Some(s),
                        streak: 1,
                    };
                }
            }
            Some(_) => *self = Affinity::default(),
        }
    }

    fn due(&self) -> Option<usize> {
        self.shard
            .filter(|_| self.streak >= limits::CONNECTION_HANDOFF_STREAK)
    }
}

/// The one shard that owns every partition a produce or fetch request names (see
/// [`Affinity::observe`]). On the hot path: it borrows names, allocates nothing, and with one
/// shard there is nowhere to move.
fn request_owner(shard: &Shard, req: &protocol::Request) -> Option<Option<usize>> {
    use kafka_protocol::messages::RequestKind;
    let shards = shard.shards();
    if shards == 1 {
        return None;
    }
    let topics = shard.topics.borrow();
    let mut owner = None;
    let mut one = |topic: &str, partition: i32| {
        let s = crate::shard::shard_for_partition(topic, partition, shards);
        match owner {
            None => owner = Some(Some(s)),
            Some(Some(o)) if o != s => owner = Some(None),
            _ => {}
        }
    };
    match &req.body {
        RequestKind::Produce(r) => {
            for t in &r.topic_data {
                let Some(name) = topic_name(&topics, t.name.as_str(), &t.topic_id) else {
                    return Some(None);
                };
                for p in &t.partition_data {
                    one(name, p.index);
                }
            }
        }
        RequestKind::Fetch(r) => {
            for t in &r.topics {
                let Some(name) = topic_name(&topics, t.topic.as_str(), &t.topic_id) else {
                    return Some(None);
                };
                for p in &t.partitions {
                    one(name, p.partition);
                }
            }
        }
        _ => return None,
    }
    owner
}

/// A request's topic name: as sent, or from its id (newer versions name topics by id only).
fn topic_name<'a>(
    topics: &'a crate::topics::TopicTable,
    name: &'a str,
    id: &uuid::Uuid,
) -> Option<&'a str> {
    if name.is_empty() {
        topics.by_id.get(id).map(|n| &**n)
    } else {
        Some(name)
    }
}

fn is_scram_admin(req: &protocol::Request) -> bool {
    use kafka_protocol::messages::RequestKind;
    matches!(
        req.body,
        RequestKind::DescribeUserScramCredentials(_) | RequestKind::AlterUserScramCredentials(_)
    )
}

/// DescribeUserScramCredentials and AlterUserScramCredentials for a caller (`allowed`: one of
/// `--super-users`). An alteration rewrites the users file on glommio's blocking thread, which
/// also hands the new users to every shard (a blocking send to this shard's own inbox from this
/// shard could wait on itself).
async fn scram_admin_answer(
    shard: Rc<Shard>,
    body: kafka_protocol::messages::RequestKind,
    allowed: bool,
) -> kafka_protocol::messages::ResponseKind {
    use crate::auth::admin;
    use kafka_protocol::messages::{AlterUserScramCredentialsResponse, RequestKind, ResponseKind};
    let r = match body {
        RequestKind::DescribeUserScramCredentials(r) => {
            return ResponseKind::DescribeUserScramCredentials(if allowed {
                admin::describe(&shard.users.borrow().clone().unwrap_or_default(), &r)
            } else {
                admin::refuse_describe(&r)
            });
        }
        RequestKind::AlterUserScramCredentials(r) => r,
        _ => unreachable!("is_scram_admin"),
    };
    let mut resp = AlterUserScramCredentialsResponse::default();
    let path = shard.config.users_file.clone();
    resp.results = match path.filter(|_| allowed) {
        None => admin::refuse_alter(
            &r,
            ErrorCode::ClusterAuthorizationFailed,
            "only --super-users on a SASL listener may alter SCRAM credentials",
        ),
        Some(path) => {
            let mesh = shard.mesh.clone();
            let written = glommio::executor()
                .spawn_blocking(move || {
                    admin::alter_file(&path, &r, |users| {
                        log::info!("SCRAM credentials altered through the admin API");
                        everywhere(&mesh, users.clone());
                    })
                    .map_err(|e| (e, r))
                })
                .await;
            written.unwrap_or_else(|(e, r)| {
                log::warn!("altering SCRAM credentials: {e}");
                admin::refuse_alter(&r, ErrorCode::KafkaStorageError, &e)
            })
        }
    };
    ResponseKind::AlterUserScramCredentials(resp)
}

/// Hands altered users to every shard and waits (on the blocking thread) until each has taken
/// them, so that the caller's next Describe, and any login after the answer, see the change.
/// A shard that does not answer within `SHARD_ACK_TIMEOUT_MS` (it is stopping) is not waited
/// for.
fn everywhere(mesh: &crate::shard::Mesh, users: crate::auth::Users) {
    let (ack, acked) = crossbeam_channel::bounded(mesh.shards());
    mesh.users_to_all(&std::sync::Arc::new(users), Some(&ack));
    let deadline = Instant::now() + std::time::Duration::from_millis(limits::SHARD_ACK_TIMEOUT_MS);
    for _ in 0..mesh.shards() {
        if acked.recv_deadline(deadline).is_err() {
            log::warn!("a shard did not take the altered SCRAM credentials in time");
            return;
        }
    }
}

fn is_sasl(req: &protocol::Request) -> bool {
    use kafka_protocol::messages::RequestKind;
    matches!(
        req.body,
        RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_)
    )
}

/// How a connection's service on this shard ended.
pub enum Served {
    /// Closed: its slot under `--max-connections` is free.
    Closed,
    /// Moved to another shard, which serves it on.
    HandedOff,
}

/// One connection's state between turns.
struct Conn {
    shard: Rc<Shard>,
    fd: RawFd,
    max_frame: usize,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Requests being handled, answered in the order they came.
    in_flight: FuturesOrdered<Pending>,
    /// Once set, no more requests are read; in-flight ones finish and are flushed first.
    closing: Option<Close>,
    /// A write failed: nothing more can reach the client, so the connection ends at once.
    broken: bool,
    affinity: Affinity,
    /// When it last moved between shards, if it did.
    moved_at: Option<Instant>,
    /// On a TLS or SASL listener: the session, the login, their deadline (see
    /// [`Conn::login_deadline`]).
    sec: Security,
}

/// Serves one connection until the peer closes it, it breaks the protocol, shutdown, or it
/// moves to another shard (`moved_at`: when it last did).
pub async fn serve(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    moved: Option<(Instant, Security)>,
) -> Served {
    let moved_at = moved.as_ref().map(|(t, _)| *t);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        fd: stream.as_raw_fd(),
        max_frame: shard.config.max_request_bytes,
        rbuf: BytesMut::with_capacity(limits::READ_BUFFER_BYTES),
        wbuf: BytesMut::new(),
        in_flight: FuturesOrdered::new(),
        closing: None,
        broken: false,
        affinity: Affinity::default(),
        moved_at,
        sec: Security::default(),
        shard,
    };
    // A connection that moved here brings its TLS session and login; a new one starts them.
    let secured = match moved {
        Some((_, security)) => {
            c.sec = security;
            Ok(())
        }
        None => c.secure(),
    };
    if let Err(e) = secured {
        log::warn!("connection from {peer}: {e}");
        let _ = stream.close().await;
        return Served::Closed;
    }
    let mut last_active = Instant::now();
    let mut peek_byte = [0u8; 1];
    log::debug!("shard {}: connection from {peer}", c.shard.id);
    loop {
        let progress = c.turn();
        if c.closing.is_some() && c.in_flight.is_empty() && !c.unsent() {
            break;
        }
        if c.broken {
            break;
        }
        if let Some(to) = c.handoff_due() {
            if c.hand_over(to, &stream, &peer).await {
                return Served::HandedOff;
            }
        }
        if progress {
            last_active = Instant::now();
            c.shard.touch();
            futures_lite::future::yield_now().await;
            continue;
        }
        if last_active.elapsed() < c.shard.spin_window() {
            futures_lite::future::yield_now().await;
            continue;
        }
        c.park(&mut stream, &mut peek_byte).await;
        last_active = Instant::now();
    }
    c.say_close_notify();
    match c.closing {
        Some(Close::Protocol(why)) => log::warn!("closing connection from {peer}: {why}"),
        Some(Close::Io(e)) => log::debug!("connection from {peer} failed: {e}"),
        Some(Close::PeerClosed) | None => log::debug!("connection from {peer} closed"),
        Some(Close::Shutdown) => log::debug!("connection from {peer} closed for shutdown"),
    }
    let _ = stream.close().await;
    Served::Closed
}

impl Conn {
    /// On a TLS or SASL listener: starts the TLS session and the SASL gate. A connection keeps
    /// the certificate and users it started with; a reload (SIGHUP) applies to new ones.
    fn secure(&mut self) -> Result<(), String> {
        let protocol = self.shard.config.listen.protocol;
        if protocol.tls() {
            let config = self.shard.tls.borrow().clone();
            let config = config.ok_or("a TLS listener without TLS settings")?;
            self.sec.tls = Some(Box::new(crate::tls::Session::new(config)?));
        }
        if protocol.sasl() {
            let users = self.shard.users.borrow().clone().unwrap_or_default();
            let lifetime = std::time::Duration::from_millis(self.shard.config.sasl_reauth_ms);
            self.sec.sasl = Some(Gate::new(users, lifetime));
        }
        if protocol.tls() || protocol.sasl() {
            let timeout = std::time::Duration::from_millis(self.shard.config.auth_timeout_ms);
            self.sec.deadline = Some(Instant::now() + timeout);
        }
        Ok(())
    }

    /// Whether answers (or, on TLS, records) are still waiting for the socket.
    fn unsent(&self) -> bool {
        !self.wbuf.is_empty()
            || self
                .sec
                .tls
                .as_ref()
                .is_some_and(|t| !t.pending().is_empty())
    }

    /// On TLS: tells the client the connection ends, if the socket takes it now (a client that
    /// is not reading is not waited for). Not before the handshake has finished: a client
    /// that never spoke TLS hears nothing.
    fn say_close_notify(&mut self) {
        let open = |t: &&mut Box<crate::tls::Session>| !t.handshaking();
        if let Some(t) = self.sec.tls.as_mut().filter(open).filter(|_| !self.broken) {
            t.close();
            let _ = send_nonblocking(self.fd, t.pending());
        }
    }

    fn fail_write(&mut self, e: io::Error) {
        self.closing = Some(Close::Io(e));
        self.broken = true;
    }

    /// The shard to move to, if the streak says so and nothing would be lost by moving now.
    fn handoff_due(&self) -> Option<usize> {
        let to = self.affinity.due()?;
        let interval = std::time::Duration::from_millis(limits::CONNECTION_HANDOFF_INTERVAL_MS);
        let quiet = self.in_flight.is_empty() && !self.unsent() && self.rbuf.is_empty();
        let settled = self.moved_at.is_none_or(|t| t.elapsed() >= interval);
        let open = self.closing.is_none() && !self.broken && !self.shard.stopping.get();
        (quiet && settled && open).then_some(to)
    }

    /// Hands the socket to shard `to` (this shard's descriptor closes as the stream drops);
    /// whether it did.
    async fn hand_over(&mut self, to: usize, stream: &TcpStream, peer: &str) -> bool {
        // SAFETY: the stream owns this descriptor and outlives the borrow.
        let own = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let fd = match own.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                // Out of descriptors: stay (and do not try again at every turn).
                log::debug!("connection from {peer}: cannot move to shard {to}: {e}");
                self.affinity = Affinity::default();
                return false;
            }
        };
        log::debug!("connection from {peer} moves to shard {to}, which owns its partitions");
        let moved_at = Instant::now();
        // The TLS session and the SASL login go with the socket.
        let security = std::mem::take(&mut self.sec);
        let handoff = crate::shard::Handoff {
            fd,
            moved_at,
            security,
        };
        self.shard.hand_over_connection(to, handoff).await;
        true
    }

    fn can_read(&self) -> bool {
        self.closing.is_none() && self.in_flight.len() < limits::CONNECTION_IN_FLIGHT_MAX
    }

    /// One non-blocking pass: read what the socket has, start every complete request, collect
    /// finished responses in order, write what the socket takes. Returns whether anything
    /// moved.
    fn turn(&mut self) -> bool {
        let mut progress = false;
        if self.shard.stopping.get() && self.closing.is_none() {
            self.closing = Some(Close::Shutdown);
        }
        if self.login_deadline().is_some_and(|t| Instant::now() >= t) && self.closing.is_none() {
            let what = if self.sec.tls.as_ref().is_some_and(|t| t.handshaking()) {
                "TLS handshake"
            } else {
                "SASL login"
            };
            self.closing = Some(Close::Protocol(format!(
                "no {what} within --auth-timeout-ms {}",
                self.shard.config.auth_timeout_ms
            )));
        }
        if self.can_read() {
            progress |= self.read();
        }
        self.start_requests();
        while let Some(Some(resp)) = self.in_flight.next().now_or_never() {
            if let Some(bytes) = resp {
                self.wbuf.extend_from_slice(&bytes);
            }
            progress = true;
        }
        progress | self.write()
    }

    /// Reads what the socket has into the read buffer (through TLS on a TLS listener).
    fn read(&mut self) -> bool {
        let into = match self.sec.tls.as_mut() {
            Some(t) => t.raw(),
            None => &mut self.rbuf,
        };
        match recv_nonblocking(self.fd, into) {
            Ok(0) => self.closing = Some(Close::PeerClosed),
            Ok(_) => {
                let Some(t) = self.sec.tls.as_mut() else {
                    return true;
                };
                let handshaking = t.handshaking();
                match t.feed(&mut self.rbuf) {
                    Ok(crate::tls::Fed::Open) if handshaking && !t.handshaking() => {
                        if let Some(subject) = t.peer_subject() {
                            log::debug!("TLS client certificate of {subject}");
                        }
                    }
                    Ok(crate::tls::Fed::Open) => {}
                    Ok(crate::tls::Fed::Closed) => self.closing = Some(Close::PeerClosed),
                    Err(e) => self.closing = Some(Close::Protocol(format!("TLS: {e}"))),
                }
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => self.closing = Some(Close::Io(e)),
        }
        false
    }

    /// Writes what the socket takes of the answers (sealed into TLS records first on a TLS
    /// listener).
    fn write(&mut self) -> bool {
        let mut progress = false;
        if let Some(t) = self.sec.tls.as_mut() {
            progress = t.seal(&mut self.wbuf);
        }
        let out: &[u8] = match &self.sec.tls {
            Some(t) => t.pending(),
            None => &self.wbuf,
        };
        if out.is_empty() {
            return progress;
        }
        match send_nonblocking(self.fd, out) {
            Ok(n) => {
                self.sent(n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.fail_write(e),
        }
        progress
    }

    /// `n` bytes of what [`Conn::write`] offered reached the socket.
    fn sent(&mut self, n: usize) {
        match self.sec.tls.as_mut() {
            Some(t) => t.sent(n),
            None => self.wbuf.advance(n),
        }
    }

    /// Starts every complete request in the read buffer, up to the in-flight limit.
    fn start_requests(&mut self) {
        while self.can_read() {
            let limit = self.frame_limit();
            match take_frame(&mut self.rbuf, limit) {
                Frame::NeedMore => break,
                Frame::TooLarge(len) => {
                    // Counted as a failed request of the API its header names, if buffered.
                    let header = self.rbuf.get(FRAME_PREFIX_BYTES..).unwrap_or(&[]);
                    let slot = metrics::slot_of_frame(header);
                    drop(RequestTimer::start(self.shard.metrics, slot, 0));
                    self.closing = Some(Close::Protocol(format!(
                        "frame of {len} bytes is over the limit of {limit} ({})",
                        if limit < self.max_frame {
                            "SASL_FRAME_BYTES_MAX before a login"
                        } else {
                            "--max-request-bytes"
                        }
                    )));
                }
                Frame::Complete(frame) => self.start(frame),
            }
        }
    }

    /// When the connection is closed unless it finishes its TLS handshake and SASL login
    /// first: only while it has not.
    fn login_deadline(&self) -> Option<Instant> {
        let login = self
            .sec
            .sasl
            .as_ref()
            .is_some_and(|g| g.principal().is_none());
        let handshake = self.sec.tls.as_ref().is_some_and(|t| t.handshaking());
        self.sec.deadline.filter(|_| login || handshake)
    }

    /// The largest frame read now: before a SASL login, `SASL_FRAME_BYTES_MAX` (Kafka's
    /// `sasl.server.max.receive.size`), so that an unauthenticated client cannot make kelp
    /// buffer `--max-request-bytes`.
    fn frame_limit(&self) -> usize {
        match &self.sec.sasl {
            Some(g) if g.principal().is_none() => self.max_frame.min(limits::SASL_FRAME_BYTES_MAX),
            _ => self.max_frame,
        }
    }

    /// Decodes one frame and starts handling it.
    fn start(&mut self, frame: Bytes) {
        if self.sec.sasl.as_ref().is_some_and(Gate::expects_raw_token) {
            return self.raw_sasl_token(frame);
        }
        let slot = metrics::slot_of_frame(&frame);
        let timer = RequestTimer::start(self.shard.metrics, slot, FRAME_PREFIX_BYTES + frame.len());
        match protocol::decode_request(frame) {
            Ok(req) if is_sasl(&req) => self.sasl_request(req, timer),
            Ok(req) if self.refused(&req) => drop(timer),
            Ok(req) if is_scram_admin(&req) => self.scram_admin(req, timer),
            Ok(req) => {
                let owner = request_owner(&self.shard, &req);
                self.affinity.observe(owner, self.shard.id);
                let handled = handlers::handle(self.shard.clone(), req);
                self.in_flight.push_back(Box::pin(async move {
                    let h = handled.await;
                    timer.finish(h.frame.as_ref().map_or(0, Bytes::len), h.error);
                    h.frame
                }));
            }
            Err(DecodeError::ApiVersionsTooNew { correlation_id, .. }) => {
                let mut out = BytesMut::new();
                protocol::encode_api_versions_too_new(&mut out, correlation_id);
                timer.finish(out.len(), true);
                let out = out.freeze();
                self.in_flight.push_back(Box::pin(async move { Some(out) }));
            }
            // The timer records a failed request as it drops.
            Err(e) => self.closing = Some(Close::Protocol(e.to_string())),
        }
    }

    /// On a SASL listener, whether the request may not be served yet (the connection then
    /// closes, as Kafka's does).
    fn refused(&mut self, req: &protocol::Request) -> bool {
        let Some(gate) = &self.sec.sasl else {
            return false;
        };
        match gate.admit(req.api_key) {
            Admit::Serve => false,
            Admit::Close(why) => {
                self.closing = Some(Close::Protocol(why));
                true
            }
        }
    }

    /// SaslHandshake and SaslAuthenticate, answered inline so that the login's state is
    /// settled before the next frame is looked at. On a listener without SASL both answer
    /// ILLEGAL_SASL_STATE.
    fn sasl_request(&mut self, req: protocol::Request, timer: RequestTimer) {
        use kafka_protocol::messages::{RequestKind, ResponseKind};
        let mut keep_open = true;
        let body = match (&req.body, self.sec.sasl.as_mut()) {
            (RequestKind::SaslHandshake(r), Some(g)) => {
                ResponseKind::SaslHandshake(g.handshake(r, req.version))
            }
            (RequestKind::SaslAuthenticate(r), Some(g)) => {
                let before = g.failures;
                let (resp, ok) = g.authenticate(r);
                keep_open = ok;
                if g.failures > before {
                    self.shard.metrics.sasl_failure();
                }
                ResponseKind::SaslAuthenticate(resp)
            }
            (RequestKind::SaslHandshake(_), None) => {
                let mut r = kafka_protocol::messages::SaslHandshakeResponse::default();
                r.error_code = ErrorCode::IllegalSaslState.code();
                ResponseKind::SaslHandshake(r)
            }
            _ => {
                let mut r = kafka_protocol::messages::SaslAuthenticateResponse::default();
                r.error_code = ErrorCode::IllegalSaslState.code();
                ResponseKind::SaslAuthenticate(r)
            }
        };
        let mut out = BytesMut::new();
        let encoded = protocol::encode_response(
            &mut out,
            req.api_key,
            req.version,
            req.header.correlation_id,
            &body,
        );
        if let Err(e) = encoded {
            self.closing = Some(Close::Protocol(format!("encoding a SASL answer: {e:#}")));
            return;
        }
        timer.finish(out.len(), !keep_open || protocol::response_has_error(&body));
        let out = out.freeze();
        self.in_flight.push_back(Box::pin(async move { Some(out) }));
        if !keep_open {
            self.closing = Some(Close::Protocol("SASL authentication failed".into()));
        }
    }

    /// The SCRAM admin APIs: they need the caller's login, which only the connection knows.
    fn scram_admin(&mut self, req: protocol::Request, timer: RequestTimer) {
        let principal = self.sec.principal();
        let allowed =
            crate::auth::admin::authorized(principal.as_deref(), &self.shard.config.super_users);
        let shard = self.shard.clone();
        let (key, version, corr) = (req.api_key, req.version, req.header.correlation_id);
        self.in_flight.push_back(Box::pin(async move {
            let body = scram_admin_answer(shard, req.body, allowed).await;
            let mut out = BytesMut::new();
            if let Err(e) = protocol::encode_response(&mut out, key, version, corr, &body) {
                log::warn!("encoding a SCRAM admin answer: {e:#}");
                return None;
            }
            timer.finish(out.len(), protocol::response_has_error(&body));
            Some(out.freeze())
        }));
    }

    /// A bare SASL token after a v0 SaslHandshake; the answer is a bare token too. A failure
    /// closes the connection (a v0 client has no other way to hear of it).
    fn raw_sasl_token(&mut self, frame: Bytes) {
        let Some(gate) = self.sec.sasl.as_mut() else {
            return;
        };
        match gate.raw_token(&frame) {
            Some(reply) => {
                let mut out = BytesMut::with_capacity(FRAME_PREFIX_BYTES + reply.len());
                out.extend_from_slice(&(reply.len() as i32).to_be_bytes());
                out.extend_from_slice(&reply);
                let out = out.freeze();
                self.in_flight.push_back(Box::pin(async move { Some(out) }));
            }
            None => {
                self.shard.metrics.sasl_failure();
                self.closing = Some(Close::Protocol("SASL authentication failed".into()));
            }
        }
    }

    /// Idle: parks until the socket, a response, or shutdown needs this connection.
    async fn park(&mut self, stream: &mut TcpStream, peek_byte: &mut [u8; 1]) {
        let out: &[u8] = match &self.sec.tls {
            Some(t) => t.pending(),
            None => &self.wbuf,
        };
        if !out.is_empty() {
            // The socket buffer is full: the client is not reading. Wait for room.
            match stream.write(out).await {
                Ok(n) => self.sent(n),
                Err(e) => self.fail_write(e),
            }
            return;
        }
        let can_read = self.can_read();
        // An unauthenticated client that says nothing is closed at its deadline.
        let deadline = self.login_deadline();
        // While other connections keep the shard spinning, its spinner polls this socket and
        // wakes us (io_uring is looked at only every preemption interval then); when the whole
        // shard parks, io_uring's peek wakes us.
        let watch = can_read.then(|| self.shard.watch_fd(self.fd));
        let readable = crate::util::PollOnOwnWake::new(async {
            if let Some(w) = &watch {
                let peek = stream.peek(peek_byte);
                futures::pin_mut!(peek);
                let _ = futures::future::select(peek, w.notified()).await;
            } else {
                futures::future::pending::<()>().await;
            }
        });
        let in_flight = &mut self.in_flight;
        let response = async {
            if in_flight.is_empty() {
                futures::future::pending::<Option<Option<Bytes>>>().await
            } else {
                in_flight.next().await
            }
        };
        let stop = self.shard.stop.notified();
        let stop = async move {
            match deadline {
                Some(t) => {
                    let wait = t.saturating_duration_since(Instant::now());
                    futures::future::select(stop, Box::pin(glommio::timer::sleep(wait))).await;
                }
                None => stop.await,
            }
        };
        futures::pin_mut!(readable, response, stop);
        let woke = futures::future::select(futures::future::select(readable, response), stop).await;
        if let futures::future::Either::Left((
            futures::future::Either::Right((Some(Some(bytes)), _)),
            _,
        )) = woke
        {
            self.wbuf.extend_from_slice(&bytes);
        }
        if can_read {
            self.shard.unwatch_fd(self.fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_to_one_other_shard_makes_a_move_due_and_anything_else_breaks_it() {
        let streak = limits::CONNECTION_HANDOFF_STREAK;
        let mut a = Affinity::default();
        for _ in 1..streak {
            a.observe(Some(Some(1)), 0);
            a.observe(None, 0); // metadata, heartbeats: neither for nor against
        }
        assert_eq!(a.due(), None, "one short of the streak");
        a.observe(Some(Some(1)), 0);
        assert_eq!(a.due(), Some(1));
        a.observe(Some(Some(2)), 0);
        assert_eq!(
            (a.due(), a.streak),
            (None, 1),
            "another shard starts a new streak"
        );
        a.observe(Some(None), 0);
        assert_eq!((a.shard, a.streak), (None, 0), "spread over shards: stay");
        for _ in 0..streak {
            a.observe(Some(Some(0)), 0);
        }
        assert_eq!(a.due(), None, "this shard's own partitions: stay");
    }

    #[test]
    fn frames_are_cut_and_oversize_is_refused_before_allocation() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"ab");
        assert!(matches!(take_frame(&mut b, 100), Frame::NeedMore));
        b.extend_from_slice(b"cX");
        match take_frame(&mut b, 100) {
            Frame::Complete(f) => assert_eq!(&f[..], b"abc"),
            _ => panic!("expected a frame"),
        }
        assert_eq!(&b[..], b"X");
        let mut big = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        assert!(matches!(take_frame(&mut big, 100), Frame::TooLarge(_)));
        let mut neg = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert!(matches!(take_frame(&mut neg, 100), Frame::TooLarge(_)));
    }
}
