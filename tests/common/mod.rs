//! What the integration tests share: the real `kelp` binary started on a free loopback port
//! (and killed on drop), and a few std-only Kafka wire helpers.
//!
//! Tests of one binary run one at a time (a global lock), so only one broker is alive at any
//! moment. kelp's stdout/stderr go to a log file under `CARGO_TARGET_TMPDIR`; its tail is printed
//! when a test fails. Extra kelp arguments can be given with `KELP_ROBUSTNESS_ARGS` (whitespace
//! separated); the environment (e.g. `RUST_LOG`) is inherited.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const API_VERSIONS: i16 = 18;
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Broker process guard.

static SERIAL: Mutex<()> = Mutex::new(());

pub struct Kelp {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Kelp {
    pub fn start(test: &str) -> Kelp {
        Kelp::start_with(test, &[])
    }

    /// Starts kelp with `args` after `--listen` and waits until it accepts Kafka connections.
    pub fn start_with(test: &str, args: &[&str]) -> Kelp {
        Kelp::start_on(test, "PLAINTEXT", args)
    }

    /// [`Kelp::start_with`] on a listener of `protocol` (SSL needs `--tls-cert` and
    /// `--tls-key` in `args`).
    pub fn start_on(test: &str, protocol: &str, args: &[&str]) -> Kelp {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{}-{test}-{port}.log", env!("CARGO_CRATE_NAME")));
        let out = std::fs::File::create(&log).expect("create kelp log file");
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kelp"));
        cmd.arg("--listen")
            .arg(format!("{protocol}://{addr}"))
            .args(args);
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "kelp exited ({status}); log {}:\n{}",
                self.log.display(),
                self.log_tail(40)
            );
        }
    }

    pub fn wait_accepting(&mut self, limit: Duration) {
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

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr.parse().unwrap(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to kelp at {}: {e}", self.addr));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// kelp is alive and a fresh connection gets a valid ApiVersions v0 answer.
    pub fn assert_serving(&mut self, after: &str) {
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

    /// Sends `signal` (e.g. 15, SIGTERM) to kelp.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child process.
        let rc = unsafe { libc_kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "sending signal {signal} to kelp");
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
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
// Wire helpers.

/// Request header v1 (api_key, api_version, correlation_id, client_id), unframed.
pub fn header_v1(api_key: i16, version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&api_key.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&correlation_id.to_be_bytes());
    b.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    b.extend_from_slice(client_id.as_bytes());
    b
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + 4);
    b.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

pub fn read_frame(s: &mut impl Read) -> Result<Vec<u8>, String> {
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
pub struct ApiVersionsV0 {
    pub correlation_id: i32,
    pub error_code: i16,
    pub keys: Vec<(i16, i16, i16)>,
}

impl ApiVersionsV0 {
    pub fn find(&self, key: i16) -> Option<(i16, i16)> {
        self.keys.iter().find(|k| k.0 == key).map(|k| (k.1, k.2))
    }
}

/// Parses a response with header v0 and an ApiVersions v0 body; the body must be exactly
/// error_code + api_keys array (no trailing bytes).
pub fn parse_api_versions_v0(b: &[u8]) -> Result<ApiVersionsV0, String> {
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

pub fn api_versions_v0(s: &mut TcpStream, correlation_id: i32) -> Result<ApiVersionsV0, String> {
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
pub fn write_ignoring_close(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

/// Asserts kelp closes the connection: a read returns 0 (EOF) or an error other than a
/// timeout before `CLOSE_DEADLINE`. Data or silence are failures.
pub fn assert_closed_by_kelp(s: &mut TcpStream, what: &str) {
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

/// Sends `req` as version `version` and decodes the answer (kelp must answer).
pub fn call<R: Request>(
    s: &mut (impl Read + Write),
    version: i16,
    correlation_id: i32,
    req: &R,
) -> R::Response {
    let mut b = BytesMut::new();
    let mut h = RequestHeader::default();
    h.request_api_key = R::KEY;
    h.request_api_version = version;
    h.correlation_id = correlation_id;
    h.client_id = Some(StrBytes::from_static_str("kelp-tests"));
    h.encode(&mut b, R::header_version(version))
        .expect("encode request header");
    req.encode(&mut b, version).expect("encode request");
    s.write_all(&frame(&b))
        .unwrap_or_else(|e| panic!("sending API {} v{version}: {e}", R::KEY));
    let mut body = Bytes::from(
        read_frame(s).unwrap_or_else(|e| panic!("answer to API {} v{version}: {e}", R::KEY)),
    );
    let rh = ResponseHeader::decode(&mut body, R::Response::header_version(version))
        .expect("decode response header");
    assert_eq!(rh.correlation_id, correlation_id, "correlation id");
    R::Response::decode(&mut body, version).expect("decode response")
}
