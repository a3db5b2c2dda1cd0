//! Robustness of the real `kelp` binary against hostile or broken clients, using only std.
//!
//! Every test starts its own kelp (`--listen 127.0.0.1:<free port>`; see `tests/common/`) and
//! kills it on drop. Extra kelp arguments can be given with `KELP_ROBUSTNESS_ARGS` (whitespace
//! separated); the environment (e.g. `RUST_LOG`) is inherited.
//!
//! Run: `cargo test --release --test robustness`

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const UNSUPPORTED_VERSION: i16 = 35;

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
    let port: u16 = k.addr.rsplit(':').next().unwrap().parse().unwrap();
    let kelps_sockets = listening_inodes(port);
    assert!(!kelps_sockets.is_empty(), "no socket listens on {port}");
    let started = std::time::Instant::now();
    k.signal(15);
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
    // kelp's own listening sockets are gone. (Connecting to the port would not tell: another
    // test's process may have been given the same free port since.)
    let left: Vec<u64> = listening_inodes(port)
        .into_iter()
        .filter(|i| kelps_sockets.contains(i))
        .collect();
    assert!(
        left.is_empty(),
        "kelp's listening sockets {left:?} outlive it"
    );
}

/// The inodes of the TCP sockets listening on `port` (from /proc/net/tcp and tcp6).
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex, st 0A is LISTEN, inode is the tenth field.
            let listening = f.get(3) == Some(&"0A");
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                if let Some(inode) = f.get(9).and_then(|i| i.parse().ok()) {
                    out.push(inode);
                }
            }
        }
    }
    out
}
