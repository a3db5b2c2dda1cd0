//! The busy-polling client loop: each worker thread owns some connections and drives them all
//! from one loop of non-blocking `recv`/`send` calls, spinning on `WouldBlock` so that no
//! response waits for a thread wake-up (or, with `--no-spin`, sleeping in `ppoll` to measure
//! exactly that cost).
//!
//! A connection either sends copies of one request frame (Produce, or the `floor` echo request)
//! or fetches. Responses arrive in request order on a connection (Kafka guarantees it); the
//! correlation id of each is checked against the oldest outstanding request.
//!
//! Latency runs from a request's *intended* send time to the moment its response is read. In a
//! closed loop that is the actual send time; in an open loop (`--rate`) it is the schedule, so a
//! request delayed by a slow broker still counts its delay (coordinated-omission correction).

use crate::kafka;
use crate::records;
use crate::stats::Reporter;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a worker ships its measurements to the main thread.
const TICK_EVERY: Duration = Duration::from_millis(250);
/// The read buffer keeps at least this much free room before each `recv`.
const READ_ROOM_BYTES: usize = 64 * 1024;
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// How a worker waits when nothing is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// Spin on non-blocking syscalls: no wake-up latency, one core fully busy.
    Spin,
    /// Sleep in `ppoll` until a socket is ready: the latency of a thread wake-up included.
    Sleep,
}

/// The shape of a run, shared by all workers.
pub struct Plan {
    pub started: Instant,
    pub warmup_end: Instant,
    /// Wall-clock twin of `warmup_end`, for record stamps.
    pub warmup_end_unix_ns: i64,
    /// No request is started at or after this.
    pub end: Instant,
    /// Stop once this many records were started after warm-up (over all threads).
    pub records_target: Option<u64>,
    pub records_started: AtomicU64,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Open loop: time between the intended sends of one connection.
    pub send_interval: Option<Duration>,
    pub wait: WaitMode,
    /// A request unanswered this long fails its connection.
    pub request_timeout: Duration,
    /// After `end`, how long to wait for outstanding answers.
    pub drain: Duration,
    /// Set when every worker should stop sending at once (records target reached).
    pub stop: AtomicBool,
}

/// What a response to a sent frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// acks=0: no response; a request completes once fully written.
    None,
    /// The floor's echo: only the correlation id is checked.
    Raw,
    Produce {
        version: i16,
    },
}

/// Sends copies of one frame.
pub struct Sender {
    pub frame: Vec<u8>,
    /// Where the record batch lies in `frame`, to re-stamp it per send.
    pub batch: Option<records::Batch>,
    pub batch_start: usize,
    /// With more than one: the partitions this sender cycles through, one per request, written
    /// at `partition_at` in the frame (`produce --spread-partitions`).
    pub partitions: Vec<i32>,
    pub partition_at: usize,
    pub next_partition: usize,
    pub records_per_request: u64,
    pub value_bytes_per_request: u64,
    pub reply: Reply,
    /// False for end-to-end producers: the consumer side is what is measured.
    pub measure: bool,
    /// End-to-end: the highest acknowledged end offset of this sender's partition.
    pub acked_end: Option<Arc<AtomicI64>>,
    /// Open loop: the intended time of the next send.
    pub next_intended: Option<Instant>,
}

/// One partition a fetcher reads.
pub struct FetchPart {
    pub index: i32,
    pub offset: i64,
    /// End-to-end: fetch until this offset is reached before stopping.
    pub acked_end: Option<Arc<AtomicI64>>,
}

/// Fetches partitions of one topic in a loop, one request at a time.
pub struct Fetcher {
    pub topic: String,
    pub version: i16,
    pub parts: Vec<FetchPart>,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// Measure producer-stamp to consume time per record instead of the fetch round trip.
    pub end_to_end: bool,
}

impl Fetcher {
    fn caught_up(&self) -> bool {
        self.parts.iter().all(|p| {
            p.acked_end
                .as_ref()
                .is_none_or(|a| p.offset >= a.load(Ordering::Acquire))
        })
    }
}

pub enum Role {
    Send(Sender),
    Fetch(Fetcher),
}

struct Pending {
    correlation: i32,
    intended: Instant,
    sent: Instant,
    /// For `Reply::None`: complete once this many bytes were written on the connection.
    written_end: u64,
    records: u64,
    value_bytes: u64,
}

/// One client connection.
pub struct Conn {
    pub name: String,
    stream: TcpStream,
    fd: RawFd,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    wpos: usize,
    queued_total: u64,
    written_total: u64,
    pending: VecDeque<Pending>,
    next_correlation: i32,
    role: Role,
    dead: bool,
}

impl Conn {
    /// Wraps a connected socket; it is made non-blocking.
    pub fn new(name: String, stream: TcpStream, role: Role) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let fd = stream.as_raw_fd();
        Ok(Conn {
            name,
            stream,
            fd,
            rbuf: BytesMut::with_capacity(4 * READ_ROOM_BYTES),
            wbuf: Vec::with_capacity(256 * 1024),
            wpos: 0,
            queued_total: 0,
            written_total: 0,
            pending: VecDeque::new(),
            next_correlation: 1,
            role,
            dead: false,
        })
    }

    fn fail(&mut self, why: String, rep: &mut Reporter) {
        if self.dead {
            return;
        }
        self.dead = true;
        let n = self.pending.len() as u64;
        rep.measured
            .error(format!("connection {} failed: {why}", self.name), 1);
        if n > 0 {
            rep.measured.error("request lost with its connection", n);
        }
        self.pending.clear();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        eprintln!("loadtest: connection {} failed: {why}", self.name);
    }

    /// Reads what the socket has and handles every complete response. True on progress.
    ///
    /// A connection with no request outstanding is not read: nothing is due on it, and with
    /// hundreds of mostly idle connections one `recv` each per pass would make the loop, and so
    /// every measured latency, as slow as hundreds of syscalls.
    fn read(&mut self, plan: &Plan, rep: &mut Reporter) -> bool {
        if self.dead || self.pending.is_empty() {
            return false;
        }
        let mut progress = false;
        loop {
            if self.rbuf.capacity() - self.rbuf.len() < READ_ROOM_BYTES {
                self.rbuf.reserve(4 * READ_ROOM_BYTES);
            }
            let spare = self.rbuf.spare_capacity_mut();
            let room = spare.len();
            // SAFETY: recv writes at most spare.len() bytes into memory we own; we then mark
            // exactly the bytes it reported as initialised.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    spare.as_mut_ptr() as *mut libc::c_void,
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 0 {
                self.fail("closed by the broker".into(), rep);
                return true;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.fail(e.to_string(), rep);
                        return true;
                    }
                }
            }
            // SAFETY: see above.
            unsafe { self.rbuf.set_len(self.rbuf.len() + n as usize) };
            progress = true;
            // One recv per pass unless it filled all the room; then read again at once.
            if (n as usize) < room {
                break;
            }
        }
        if !progress {
            return false;
        }
        let now = Instant::now();
        while self.rbuf.len() >= 4 {
            let len = i32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
            if len < 4 || len as usize > RESPONSE_BYTES_MAX {
                self.fail(format!("response frame of {len} bytes"), rep);
                return true;
            }
            let total = 4 + len as usize;
            if self.rbuf.len() < total {
                // Make room for the whole frame at once.
                self.rbuf.reserve(total - self.rbuf.len());
                break;
            }
            let mut frame = self.rbuf.split_to(total);
            let frame = frame.split_off(4).freeze();
            if let Err(why) = self.on_response(frame, now, plan, rep) {
                self.fail(why, rep);
                return true;
            }
        }
        true
    }

    fn on_response(
        &mut self,
        frame: Bytes,
        now: Instant,
        plan: &Plan,
        rep: &mut Reporter,
    ) -> Result<(), String> {
        let corr = kafka::response_correlation(&frame).ok_or("response shorter than a header")?;
        let Some(p) = self.pending.pop_front() else {
            return Err(format!("unexpected response with correlation id {corr}"));
        };
        if p.correlation != corr {
            return Err(format!(
                "response correlation id {corr}, expected {} (out of order)",
                p.correlation
            ));
        }
        let measured = p.intended >= plan.warmup_end;
        match &mut self.role {
            Role::Send(s) => {
                if let Reply::Produce { version } = s.reply {
                    let body = kafka::decode_response(frame, ApiKey::Produce, version)
                        .map_err(|e| format!("undecodable Produce response: {e:#}"))?;
                    let ResponseKind::Produce(r) = body else {
                        return Err("not a Produce response".into());
                    };
                    let mut failed = None;
                    for t in &r.responses {
                        for pr in &t.partition_responses {
                            if pr.error_code != 0 {
                                failed = Some(pr.error_code);
                            } else if let Some(a) = &s.acked_end {
                                a.fetch_max(pr.base_offset + p.records as i64, Ordering::AcqRel);
                            }
                        }
                    }
                    if let Some(code) = failed {
                        let tally = if measured {
                            &mut rep.measured
                        } else {
                            &mut rep.warmup
                        };
                        tally.error(format!("produce: {}", kafka::error_name(code)), 1);
                        return Ok(());
                    }
                }
                if s.measure {
                    complete(rep, &p, now, measured);
                }
            }
            Role::Fetch(f) => {
                let body = kafka::decode_response(frame, ApiKey::Fetch, f.version)
                    .map_err(|e| format!("undecodable Fetch response: {e:#}"))?;
                let ResponseKind::Fetch(r) = body else {
                    return Err("not a Fetch response".into());
                };
                on_fetch(f, r, measured, p.intended, now, plan, rep);
            }
        }
        Ok(())
    }

    /// Starts requests while the window and the schedule allow. True on progress.
    fn issue(&mut self, now: Instant, sending: bool, plan: &Plan, rep: &mut Reporter) -> bool {
        if self.dead {
            return false;
        }
        let mut progress = false;
        match &mut self.role {
            Role::Send(s) => {
                while sending && self.pending.len() < plan.in_flight {
                    let intended = match s.next_intended {
                        Some(t) if t > now => break,
                        Some(t) => t,
                        None => now,
                    };
                    if intended >= plan.warmup_end {
                        if let Some(target) = plan.records_target {
                            let before = plan
                                .records_started
                                .fetch_add(s.records_per_request, Ordering::AcqRel);
                            if before >= target {
                                plan.stop.store(true, Ordering::Release);
                                break;
                            }
                        }
                    }
                    let corr = self.next_correlation;
                    self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
                    let at = self.wbuf.len();
                    self.wbuf.extend_from_slice(&s.frame);
                    let at_corr = at + records::REQUEST_CORRELATION_AT;
                    self.wbuf[at_corr..at_corr + 4].copy_from_slice(&corr.to_be_bytes());
                    if s.partitions.len() > 1 {
                        let at_p = at + s.partition_at;
                        let p = s.partitions[s.next_partition];
                        self.wbuf[at_p..at_p + 4].copy_from_slice(&p.to_be_bytes());
                        s.next_partition = (s.next_partition + 1) % s.partitions.len();
                    }
                    if let Some(b) = &s.batch {
                        let start = at + s.batch_start;
                        let lag = now.saturating_duration_since(intended).as_nanos() as i64;
                        records::stamp(
                            &mut self.wbuf[start..start + b.bytes.len()],
                            &b.value_offsets,
                            b.value_bytes,
                            crate::util::unix_nanos() - lag,
                        );
                    }
                    self.queued_total += s.frame.len() as u64;
                    self.pending.push_back(Pending {
                        correlation: corr,
                        intended,
                        sent: now,
                        written_end: self.queued_total,
                        records: s.records_per_request,
                        value_bytes: s.value_bytes_per_request,
                    });
                    if let (Some(t), Some(iv)) = (s.next_intended.as_mut(), plan.send_interval) {
                        *t += iv;
                    }
                    progress = true;
                }
            }
            Role::Fetch(f) => {
                let more = sending || (f.end_to_end && !f.caught_up());
                if more && self.pending.is_empty() {
                    let corr = self.next_correlation;
                    self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
                    let mut out = BytesMut::new();
                    let encoded = kafka::encode_request(
                        &mut out,
                        ApiKey::Fetch,
                        f.version,
                        corr,
                        &fetch_request(f),
                    );
                    if let Err(e) = encoded {
                        self.fail(format!("encoding Fetch: {e:#}"), rep);
                        return true;
                    }
                    self.wbuf.extend_from_slice(&out);
                    self.queued_total += out.len() as u64;
                    self.pending.push_back(Pending {
                        correlation: corr,
                        intended: now,
                        sent: now,
                        written_end: self.queued_total,
                        records: 0,
                        value_bytes: 0,
                    });
                    progress = true;
                }
            }
        }
        progress
    }

    /// Writes what the socket takes. True on progress.
    fn flush(&mut self, plan: &Plan, rep: &mut Reporter) -> bool {
        if self.dead || self.wpos == self.wbuf.len() {
            return false;
        }
        let data = &self.wbuf[self.wpos..];
        // SAFETY: send reads at most data.len() bytes from a live slice.
        let n = unsafe {
            libc::send(
                self.fd,
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => false,
                _ => {
                    self.fail(e.to_string(), rep);
                    true
                }
            };
        }
        self.wpos += n as usize;
        self.written_total += n as u64;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > self.wbuf.capacity() / 2 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        if let Role::Send(s) = &self.role {
            if s.reply == Reply::None {
                let now = Instant::now();
                while self
                    .pending
                    .front()
                    .is_some_and(|p| p.written_end <= self.written_total)
                {
                    let p = self.pending.pop_front().expect("front exists");
                    if s.measure {
                        complete(rep, &p, now, p.intended >= plan.warmup_end);
                    }
                }
            }
        }
        true
    }

    /// Nothing left to do after the sending phase.
    fn finished(&self) -> bool {
        self.dead
            || (self.pending.is_empty()
                && match &self.role {
                    Role::Send(_) => true,
                    Role::Fetch(f) => !f.end_to_end || f.caught_up(),
                })
    }
}

fn complete(rep: &mut Reporter, p: &Pending, now: Instant, measured: bool) {
    if measured {
        let ns = now.saturating_duration_since(p.intended).as_nanos() as u64;
        rep.hist.saturating_record(ns.max(1));
        rep.measured.records += p.records;
        rep.measured.value_bytes += p.value_bytes;
        rep.measured.requests += 1;
        rep.last_completion = Some(now);
    } else {
        rep.warmup.records += p.records;
        rep.warmup.value_bytes += p.value_bytes;
        rep.warmup.requests += 1;
    }
}

fn fetch_request(f: &Fetcher) -> RequestKind {
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(f.topic.clone()));
    t.partitions = f
        .parts
        .iter()
        .map(|p| {
            let mut fp = FetchPartition::default();
            fp.partition = p.index;
            fp.fetch_offset = p.offset;
            fp.current_leader_epoch = -1;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = f.partition_max_bytes;
            fp
        })
        .collect();
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = f.max_wait_ms;
    r.min_bytes = f.min_bytes;
    r.max_bytes = f.max_bytes;
    r.isolation_level = 0;
    r.session_id = 0;
    r.session_epoch = -1; // no fetch session: every request is a full fetch
    r.topics = vec![t];
    RequestKind::Fetch(r)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Accounts one Fetch response: advances offsets, counts records, and measures.
fn on_fetch(
    f: &mut Fetcher,
    r: kafka_protocol::messages::FetchResponse,
    measured: bool,
    intended: Instant,
    now: Instant,
    plan: &Plan,
    rep: &mut Reporter,
) {
    let now_unix = crate::util::unix_nanos();
    if r.error_code != 0 {
        rep.measured
            .error(format!("fetch: {}", kafka::error_name(r.error_code)), 1);
        return;
    }
    let (mut recs, mut bytes) = (0u64, 0u64);
    let (mut warm_recs, mut warm_bytes) = (0u64, 0u64);
    for t in &r.responses {
        for pd in &t.partitions {
            let Some(part) = f.parts.iter_mut().find(|p| p.index == pd.partition_index) else {
                continue;
            };
            if pd.error_code != 0 {
                rep.measured
                    .error(format!("fetch: {}", kafka::error_name(pd.error_code)), 1);
                continue;
            }
            let Some(data) = &pd.records else { continue };
            let mut at = 0usize;
            while at + 12 <= data.len() {
                let base = be_i64(data, at);
                let blen = be_i32(data, at + 8);
                if blen < (records::BATCH_HEADER_BYTES - 12) as i32 {
                    break;
                }
                let total = 12 + blen as usize;
                if at + total > data.len() {
                    break; // a partial batch at the end of the response
                }
                let b = &data[at..at + total];
                at += total;
                if b[16] != 2 {
                    rep.measured
                        .error(format!("fetch: batch magic {}", b[16] as i8), 1);
                    break;
                }
                let next = base + be_i32(b, 23) as i64 + 1;
                if next <= part.offset {
                    continue;
                }
                let attributes = i16::from_be_bytes([b[21], b[22]]);
                let control = attributes & 0x20 != 0;
                if !control {
                    if attributes & 0x07 == 0 {
                        match kelp::protocol::batch::parse_records(
                            &b[records::BATCH_HEADER_BYTES..],
                        ) {
                            Ok(rs) => {
                                for rec in rs {
                                    if base + rec.offset_delta < part.offset {
                                        continue;
                                    }
                                    let v = rec.value.unwrap_or(&[]);
                                    let stamp = records::read_stamp(v);
                                    if f.end_to_end {
                                        match stamp {
                                            Some(ts) if ts >= plan.warmup_end_unix_ns => {
                                                let ns = (now_unix - ts).max(1) as u64;
                                                rep.hist.saturating_record(ns);
                                                recs += 1;
                                                bytes += v.len() as u64;
                                            }
                                            _ => {
                                                warm_recs += 1;
                                                warm_bytes += v.len() as u64;
                                            }
                                        }
                                    } else {
                                        recs += 1;
                                        bytes += v.len() as u64;
                                    }
                                }
                            }
                            Err(e) => rep.measured.error(format!("fetch: {e}"), 1),
                        }
                    } else {
                        // Compressed: count from the header, bytes as stored.
                        recs += be_i32(b, 57).max(0) as u64;
                        bytes += total as u64;
                    }
                }
                part.offset = next;
            }
        }
    }
    if f.end_to_end {
        if recs > 0 {
            rep.measured.records += recs;
            rep.measured.value_bytes += bytes;
            rep.measured.requests += 1;
            rep.last_completion = Some(now);
        }
        rep.warmup.records += warm_recs;
        rep.warmup.value_bytes += warm_bytes;
    } else if measured {
        let ns = now.saturating_duration_since(intended).as_nanos() as u64;
        rep.hist.saturating_record(ns.max(1));
        if let Some(target) = plan.records_target {
            // `consume --records N`: stop once N records were read over all connections.
            if plan.records_started.fetch_add(recs, Ordering::AcqRel) + recs >= target {
                plan.stop.store(true, Ordering::Release);
            }
        }
        rep.measured.records += recs;
        rep.measured.value_bytes += bytes;
        rep.measured.requests += 1;
        rep.last_completion = Some(now);
    } else {
        rep.warmup.records += recs;
        rep.warmup.value_bytes += bytes;
        rep.warmup.requests += 1;
    }
}

/// Drives `conns` until the plan says stop, reporting through `rep`.
pub fn run_worker(mut conns: Vec<Conn>, plan: Arc<Plan>, mut rep: Reporter) {
    let mut next_tick = Instant::now() + TICK_EVERY;
    let drain_deadline = plan.end + plan.drain;
    let mut fatal = None;
    loop {
        let now = Instant::now();
        let sending = now < plan.end && !plan.stop.load(Ordering::Acquire);
        let mut progress = false;
        for c in conns.iter_mut() {
            if c.dead {
                continue;
            }
            progress |= c.read(&plan, &mut rep);
            progress |= c.issue(now, sending, &plan, &mut rep);
            progress |= c.flush(&plan, &mut rep);
            if let Some(p) = c.pending.front() {
                if now.saturating_duration_since(p.sent) > plan.request_timeout {
                    let why = format!(
                        "no response within {:.1} s (request timeout)",
                        plan.request_timeout.as_secs_f64()
                    );
                    c.fail(why, &mut rep);
                }
            }
        }
        if conns.iter().all(|c| c.dead) {
            fatal = Some("every connection failed".to_string());
            break;
        }
        if !sending && conns.iter().all(Conn::finished) {
            break;
        }
        if now >= drain_deadline {
            for c in conns.iter_mut() {
                if !c.pending.is_empty() {
                    let n = c.pending.len() as u64;
                    rep.measured
                        .error("no response by the end of the drain period", n);
                    c.pending.clear();
                }
            }
            break;
        }
        if now >= next_tick {
            next_tick = now + TICK_EVERY;
            let (out, oldest) = outstanding(&conns, now);
            rep.send(out, oldest, false, None);
        }
        if !progress && plan.wait == WaitMode::Sleep {
            let mut wake = next_tick.min(if sending { plan.end } else { drain_deadline });
            if sending {
                for c in &conns {
                    if let Role::Send(s) = &c.role {
                        if let Some(t) = s.next_intended {
                            if c.pending.len() < plan.in_flight {
                                wake = wake.min(t);
                            }
                        }
                    }
                }
            }
            sleep_until_ready(&conns, wake.saturating_duration_since(Instant::now()));
        } else if !progress {
            std::hint::spin_loop();
        }
    }
    let now = Instant::now();
    let (out, oldest) = outstanding(&conns, now);
    rep.send(out, oldest, true, fatal);
}

fn outstanding(conns: &[Conn], now: Instant) -> (usize, Option<Duration>) {
    let n = conns.iter().map(|c| c.pending.len()).sum();
    let oldest = conns
        .iter()
        .filter_map(|c| c.pending.front())
        .map(|p| now.saturating_duration_since(p.sent))
        .max();
    (n, oldest)
}

/// Sleeps in `ppoll` until a connection with a request outstanding is readable (or writable, if
/// it has bytes queued), or `timeout` passes.
fn sleep_until_ready(conns: &[Conn], timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .filter(|c| !c.dead && (!c.pending.is_empty() || c.wpos < c.wbuf.len()))
        .map(|c| libc::pollfd {
            fd: c.fd,
            events: libc::POLLIN
                | if c.wpos < c.wbuf.len() {
                    libc::POLLOUT
                } else {
                    0
                },
            revents: 0,
        })
        .collect();
    poll_fds(&mut fds, timeout);
}

/// `ppoll` with a nanosecond timeout.
pub fn poll_fds(fds: &mut [libc::pollfd], timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a valid slice of pollfd for the duration of the call; ts outlives it.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}
