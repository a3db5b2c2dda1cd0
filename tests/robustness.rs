//! Robustness of the real `kelp` binary against hostile or broken clients, using only std.
//!
//! Every test starts its own kelp (`--listen 127.0.0.1:<free port>`) and kills it on drop. Tests
//! run one at a time (a global lock), so only one broker is alive at any moment. kelp's
//! stdout/stderr go to a log file under `CARGO_TARGET_TMPDIR`; its tail is printed when a test
//! fails. Extra kelp arguments can be given with `KELP_ROBUSTNESS_ARGS` (whitespace separated);
//! the environment (e.g. `RUST_LOG`) is inherited.
//!
//! Run: `cargo test --release --test robustness`

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const API_VERSIONS: i16 = 18;
const UNSUPPORTED_VERSION: i16 = 35;
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Broker process guard.

static SERIAL: Mutex<()> = Mutex::new(());

struct Kelp {
    child: Child,
    addr: String,
    log: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Kelp {
    fn start(test: &str) -> Kelp {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("robustness-{test}-{port}.log"));
        let out = std::fs::File::create(&log).expect("create kelp log file");
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kelp"));
        cmd.arg("--listen").arg(&addr);
        if let Ok(extra) = std::env::var("KELP_ROBUSTNESS_ARGS") {
            cmd.args(extra.split_whitespace());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn kelp");
        let mut k = Kelp {
            child,
            addr,
            log,
            _serial: serial,
        };
        k.wait_accepting(Duration::from_secs(30));
        k
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "kelp exited ({status}); log {}:\n{}",
                self.log.display(),
                self.log_tail(40)
            );
        }
    }

    fn wait_accepting(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_alive();
            match TcpStream::connect_timeout(
                &self.addr.parse().unwrap(),
                Duration::from_millis(500),
            ) {
                Ok(_) => return,
                Err(e) => {
                    if Instant::now() >= deadline {
                        panic!(
                            "kelp did not accept on {} within {limit:?}: {e}; log:\n{}",
                            self.addr,
                            self.log_tail(40)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr.parse().unwrap(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to kelp at {}: {e}", self.addr));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// kelp is alive and a fresh connection gets a valid ApiVersions v0 answer.
    fn assert_serving(&mut self, after: &str) {
        self.assert_alive();
        let mut s = self.connect();
        let r = match api_versions_v0(&mut s, 4242) {
            Ok(r) => r,
            Err(e) => {
                // Tell a crash apart from a refused request: give a dying kelp a moment to exit.
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "after {after}: kelp exited ({status}); the fresh connection saw: {e}"
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                panic!("after {after}: fresh connection, ApiVersions v0: {e} (kelp still running)")
            }
        };
        assert_eq!(r.error_code, 0, "after {after}: ApiVersions v0 error code");
        let (min, max) = r.find(API_VERSIONS).unwrap_or_else(|| {
            panic!(
                "after {after}: ApiVersions v0 reply does not list ApiVersions (18): {:?}",
                r.keys
            )
        });
        assert!(
            min <= 0 && max >= 0,
            "after {after}: ApiVersions range {min}..={max} excludes v0"
        );
    }
}

impl Drop for Kelp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- kelp log {} (last 120 lines) ----\n{}\n----",
                self.log.display(),
                self.log_tail(120)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiny random generator (xorshift64*), seeded from the clock; the seed is printed.

struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        let seed = (nanos ^ ((std::process::id() as u64) << 32)) | 1;
        eprintln!("rng seed {seed:#x}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers.

/// Request header v1 (api_key, api_version, correlation_id, client_id), unframed.
fn header_v1(api_key: i16, version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&api_key.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&correlation_id.to_be_bytes());
    b.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    b.extend_from_slice(client_id.as_bytes());
    b
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + 4);
    b.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn read_frame(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| format!("reading response size: {e}"))?;
    let n = i32::from_be_bytes(len);
    if !(0..=(1 << 20)).contains(&n) {
        return Err(format!("implausible response size {n}"));
    }
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body)
        .map_err(|e| format!("reading {n}-byte response body: {e}"))?;
    Ok(body)
}

#[derive(Debug)]
struct ApiVersionsV0 {
    correlation_id: i32,
    error_code: i16,
    keys: Vec<(i16, i16, i16)>,
}

impl ApiVersionsV0 {
    fn find(&self, key: i16) -> Option<(i16, i16)> {
        self.keys.iter().find(|k| k.0 == key).map(|k| (k.1, k.2))
    }
}

/// Parses a response with header v0 and an ApiVersions v0 body; the body must be exactly
/// error_code + api_keys array (no trailing bytes).
fn parse_api_versions_v0(b: &[u8]) -> Result<ApiVersionsV0, String> {
    if b.len() < 10 {
        return Err(format!(
            "response of {} bytes is too short for ApiVersions v0: {b:02x?}",
            b.len()
        ));
    }
    let correlation_id = i32::from_be_bytes(b[0..4].try_into().unwrap());
    let error_code = i16::from_be_bytes(b[4..6].try_into().unwrap());
    let n = i32::from_be_bytes(b[6..10].try_into().unwrap());
    if n < 0 || b.len() != 10 + 6 * n as usize {
        return Err(format!(
            "not a v0-shaped ApiVersions body: {} bytes after the size, api_keys count {n} (v0 needs exactly 10 + 6*count); first bytes {:02x?}",
            b.len(),
            &b[..b.len().min(32)]
        ));
    }
    let keys = (0..n as usize)
        .map(|i| {
            let e = &b[10 + 6 * i..16 + 6 * i];
            (
                i16::from_be_bytes([e[0], e[1]]),
                i16::from_be_bytes([e[2], e[3]]),
                i16::from_be_bytes([e[4], e[5]]),
            )
        })
        .collect();
    Ok(ApiVersionsV0 {
        correlation_id,
        error_code,
        keys,
    })
}

fn api_versions_v0(s: &mut TcpStream, correlation_id: i32) -> Result<ApiVersionsV0, String> {
    s.write_all(&frame(&header_v1(
        API_VERSIONS,
        0,
        correlation_id,
        "robustness",
    )))
    .map_err(|e| format!("sending ApiVersions v0: {e}"))?;
    let r = parse_api_versions_v0(&read_frame(s)?)?;
    if r.correlation_id != correlation_id {
        return Err(format!(
            "correlation id {} in reply, sent {correlation_id}",
            r.correlation_id
        ));
    }
    Ok(r)
}

/// Writes `bytes`, ignoring errors: kelp may close (and reset) the connection mid-write.
fn write_ignoring_close(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

/// Asserts kelp closes the connection: a read returns 0 (EOF) or an error other than a
/// timeout before `CLOSE_DEADLINE`. Data or silence are failures.
fn assert_closed_by_kelp(s: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "{what}: kelp kept the connection open for {CLOSE_DEADLINE:?} (no EOF, no reset)"
            );
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!(
                "{what}: expected kelp to close the connection, it sent {n} bytes: {:02x?}",
                &buf[..n]
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return, // reset / aborted: closed
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile inputs, each followed (by the callers) by a check that kelp still serves.

/// 10,000 random bytes. The first 4 bytes announce exactly the remaining 9,996 so kelp has a
/// complete frame of garbage to parse (a random size is covered by the oversized-frame case);
/// the api_key is random but never ApiVersions (18), whose too-new versions legitimately get an
/// answer instead of a close.
fn send_garbage(k: &Kelp, rng: &mut Rng) {
    let mut g = vec![0u8; 10_000];
    rng.fill(&mut g);
    g[0..4].copy_from_slice(&9_996i32.to_be_bytes());
    if i16::from_be_bytes([g[4], g[5]]) == API_VERSIONS {
        g[4] ^= 0x40;
    }
    let what = format!(
        "10,000 bytes of garbage (api_key {}, version {})",
        i16::from_be_bytes([g[4], g[5]]),
        i16::from_be_bytes([g[6], g[7]])
    );
    let mut s = k.connect();
    write_ignoring_close(&mut s, &g);
    assert_closed_by_kelp(&mut s, &what);
}

/// A frame header announcing ~2 GiB (`0x7fffffff`) or a negative size (`0x80000000`),
/// followed by the start of a plausible request header.
fn send_oversized(k: &Kelp, size: u32) {
    let mut s = k.connect();
    let mut b = size.to_be_bytes().to_vec();
    b.extend_from_slice(&header_v1(0, 9, 7, "robustness"));
    write_ignoring_close(&mut s, &b);
    assert_closed_by_kelp(&mut s, &format!("frame size {size:#010x}"));
}

/// Announce 100 bytes, send 10, close.
fn send_truncated(k: &Kelp) {
    let mut s = k.connect();
    let mut b = 100i32.to_be_bytes().to_vec();
    b.extend_from_slice(&header_v1(API_VERSIONS, 0, 11, "robustness")[..10]);
    write_ignoring_close(&mut s, &b);
    let _ = s.shutdown(Shutdown::Both);
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn a_garbage_closes_connection_and_server_keeps_serving() {
    let mut k = Kelp::start("garbage");
    let mut rng = Rng::from_time();
    k.assert_serving("startup");
    for _ in 0..5 {
        send_garbage(&k, &mut rng);
        k.assert_serving("garbage");
    }
}

#[test]
fn b_oversized_frame_closes_connection() {
    let mut k = Kelp::start("oversized");
    for size in [0x7fff_ffffu32, 0x8000_0000u32] {
        send_oversized(&k, size);
        k.assert_serving(&format!("frame size {size:#010x}"));
    }
}

#[test]
fn c_truncated_frame_then_still_serving() {
    let mut k = Kelp::start("truncated");
    send_truncated(&k);
    k.assert_serving("truncated frame");
    // Also a connection that stays open mid-frame must not block other clients.
    let mut hanging = k.connect();
    write_ignoring_close(&mut hanging, &[0, 0, 0, 100, 0, 18]);
    k.assert_serving("a connection left open mid-frame");
    drop(hanging);
}

#[cfg(target_os = "linux")]
#[test]
fn d_memory_and_fds_stable_under_repeated_abuse() {
    let mut k = Kelp::start("memory");
    let mut rng = Rng::from_time();
    let pid = k.pid();
    let round = |k: &mut Kelp, rng: &mut Rng| {
        send_garbage(k, rng);
        send_oversized(k, 0x7fff_ffff);
        send_oversized(k, 0x8000_0000);
        send_truncated(k);
        k.assert_serving("an abuse round");
    };
    for _ in 0..20 {
        round(&mut k, &mut rng);
    }
    let rss_before = vm_rss_kib(pid);
    let fds_before = open_fds(pid);
    let started = Instant::now();
    for _ in 0..200 {
        round(&mut k, &mut rng);
    }
    let elapsed = started.elapsed();
    let rss_after = vm_rss_kib(pid);
    eprintln!(
        "200 rounds in {elapsed:?}; VmRSS {rss_before} KiB -> {rss_after} KiB; fds {fds_before} -> {}",
        open_fds(pid)
    );
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < 20 * 1024,
        "kelp VmRSS grew by {grown} KiB ({rss_before} -> {rss_after} KiB) over 200 abuse rounds"
    );
    // Every abusive connection is closed on our side; kelp must release its sockets too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds = open_fds(pid);
        if fds <= fds_before + 4 {
            break;
        }
        if Instant::now() >= deadline {
            panic!("kelp holds {fds} fds, {fds_before} before 200 abuse rounds (leaked sockets?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn e_unknown_api_key_closes_connection() {
    let mut k = Kelp::start("unknown-key");
    let mut s = k.connect();
    write_ignoring_close(&mut s, &frame(&header_v1(9999, 0, 77, "robustness")));
    assert_closed_by_kelp(&mut s, "request with api_key 9999");
    k.assert_serving("unknown api key");
}

/// Beyond the brief's (a)-(f): a well-formed header for every API kelp advertises (at its
/// lowest and highest version) followed by a random body. kelp may answer or close (or, for a
/// body that happens to decode to a long poll, wait): it must not crash or stop serving others.
#[test]
fn g_random_bodies_for_every_advertised_api_do_not_crash() {
    let mut k = Kelp::start("random-bodies");
    let mut rng = Rng::from_time();
    let advertised = {
        let mut s = k.connect();
        api_versions_v0(&mut s, 1).expect("ApiVersions v0").keys
    };
    assert!(!advertised.is_empty(), "ApiVersions v0 lists no API");
    let mut open = Vec::new();
    for &(key, min, max) in &advertised {
        for version in [min, max] {
            for i in 0..10 {
                let mut req = header_v1(key, version, 5000 + i, "robustness");
                let mut body = vec![0u8; (rng.next() % 600) as usize];
                rng.fill(&mut body);
                req.extend_from_slice(&body);
                let mut s = k.connect();
                write_ignoring_close(&mut s, &frame(&req));
                open.push(s);
            }
            k.assert_serving(&format!("random bodies for api_key {key} v{version}"));
            open.clear();
        }
    }
}

/// Beyond the brief: tiny requests whose first array announces 2^31-1 elements. Apache Kafka
/// rejects an array longer than the bytes left before allocating; kelp must close the
/// connection (malformed request) and keep serving, never try to allocate the announced size.
#[test]
fn h_huge_array_count_in_small_frame_closes_connection() {
    let mut k = Kelp::start("huge-array");
    let huge = 0x7fff_ffffi32.to_be_bytes();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Metadata v1: topics array.
    let mut m = header_v1(3, 1, 31, "robustness");
    m.extend_from_slice(&huge);
    cases.push(("Metadata v1 topics", m));
    // Produce v3: transactional_id null, acks -1, timeout, topic_data array.
    let mut p = header_v1(0, 3, 32, "robustness");
    p.extend_from_slice(&(-1i16).to_be_bytes());
    p.extend_from_slice(&(-1i16).to_be_bytes());
    p.extend_from_slice(&30_000i32.to_be_bytes());
    p.extend_from_slice(&huge);
    cases.push(("Produce v3 topic_data", p));
    // Fetch v4: replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level, topics array.
    let mut f = header_v1(1, 4, 33, "robustness");
    for v in [-1i32, 500, 1, 1 << 20] {
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.push(0);
    f.extend_from_slice(&huge);
    cases.push(("Fetch v4 topics", f));
    for (what, req) in cases {
        let mut s = k.connect();
        write_ignoring_close(&mut s, &frame(&req));
        assert_closed_by_kelp(
            &mut s,
            &format!(
                "{what} array count 2^31-1 in a {}-byte frame",
                req.len() + 4
            ),
        );
        k.assert_serving(&format!("{what} array count 2^31-1"));
    }
}

#[test]
fn f_too_new_api_versions_gets_error_35_and_v0_body() {
    let mut k = Kelp::start("apiversions-v127");
    let mut s = k.connect();
    // ApiVersions v127 as a v3+ client would send it: request header v2 (header v1 + empty
    // tagged fields) and a flexible body (client_software_name, client_software_version, tags).
    let mut req = header_v1(API_VERSIONS, 127, 1001, "robustness");
    req.push(0); // header tagged fields
    for field in ["kelp-robustness", "1.0"] {
        req.push(field.len() as u8 + 1); // compact string length (unsigned varint, n+1)
        req.extend_from_slice(field.as_bytes());
    }
    req.push(0); // body tagged fields
    s.write_all(&frame(&req)).expect("send ApiVersions v127");
    let body = read_frame(&mut s).unwrap_or_else(|e| panic!("ApiVersions v127: {e}"));
    let r = parse_api_versions_v0(&body).unwrap_or_else(|e| panic!("ApiVersions v127 reply: {e}"));
    assert_eq!(
        r.correlation_id, 1001,
        "ApiVersions v127 reply correlation id"
    );
    assert_eq!(
        r.error_code, UNSUPPORTED_VERSION,
        "ApiVersions v127 reply error code (35 = UNSUPPORTED_VERSION expected)"
    );
    let (min, max) = r.find(API_VERSIONS).unwrap_or_else(|| {
        panic!(
            "ApiVersions v127 reply does not list ApiVersions (18): {:?}",
            r.keys
        )
    });
    assert!(
        0 <= min && min <= max && max < 127,
        "ApiVersions v127 reply lists ApiVersions range {min}..={max}"
    );
    // The connection stays usable: ApiVersions v0 on the same socket.
    let r0 = api_versions_v0(&mut s, 1002)
        .unwrap_or_else(|e| panic!("ApiVersions v0 on the same socket after v127: {e}"));
    assert_eq!(r0.error_code, 0, "ApiVersions v0 after v127: error code");
    assert!(
        r0.find(API_VERSIONS).is_some(),
        "ApiVersions v0 reply lists ApiVersions"
    );
    k.assert_serving("ApiVersions v127");
}

/// SIGTERM with a connection open and a request answered: kelp stops accepting, closes the
/// connection and exits with status 0 well within the 5 s the operator is promised.
#[test]
fn i_sigterm_exits_zero_within_five_seconds() {
    let mut k = Kelp::start("i_sigterm");
    let mut s = k.connect();
    api_versions_v0(&mut s, 1).expect("ApiVersions before shutdown");
    let started = std::time::Instant::now();
    // SAFETY: kill(2) on the pid of our own child process.
    let rc = unsafe { libc_kill(k.pid() as i32, 15) };
    assert_eq!(rc, 0, "sending SIGTERM");
    let deadline = started + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = k.child.try_wait().expect("waiting for kelp") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kelp still running 5 s after SIGTERM\n{}",
            k.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "kelp exited with {status} after SIGTERM");
    assert!(
        std::net::TcpStream::connect(&k.addr).is_err(),
        "kelp still accepts connections after exiting"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
