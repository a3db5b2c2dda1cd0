//! Interop suite: the Rust Kafka clients `rdkafka` (librdkafka built from source) and `rskafka`
//! against a running kelp broker. Follows the contract of `tests/interop/README.md`:
//! reads `KELP_BOOTSTRAP` / `KELP_TOPIC_PREFIX`, prints one
//! `RESULT|<client>|<scenario>|<pass|fail|skip>|<detail>` line per scenario and exits non-zero
//! if any scenario failed.
//!
//! Optional arguments filter scenarios: each argument is a substring matched against
//! `<client>/<scenario>` (e.g. `rskafka/` or `rdkafka-rs/roundtrip-zstd`).

mod rdk;
mod rdk_group;
mod rsk;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Outcome of one scenario: `Ok(detail)` is a pass, `Err(detail)` a fail.
pub type Outcome = Result<String, String>;

pub struct Ctx {
    pub bootstrap: String,
    pub prefix: String,
}

impl Ctx {
    pub fn topic(&self, client: &str, scenario: &str) -> String {
        format!("{}-{}-{}", self.prefix, client, scenario)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Printable rendering of a byte string for failure details.
pub fn show(b: Option<&[u8]>) -> String {
    match b {
        None => "null".to_string(),
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            if s.len() > 60 {
                format!("{:?}...({} bytes)", &s[..s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len())], b.len())
            } else {
                format!("{s:?}")
            }
        }
    }
}

/// A value with some repetition (so codecs really compress) and a varying length.
pub fn make_value(tag: &str, i: usize) -> Vec<u8> {
    let mut v = format!("{tag}-value-{i:06}|").into_bytes();
    let reps = 5 + (i * 7) % 40;
    for r in 0..reps {
        v.extend_from_slice(format!("lorem-ipsum-{}-", r % 4).as_bytes());
    }
    v
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            '|' => '/',
            c => c,
        })
        .collect();
    if out.len() > 700 {
        let cut = out.char_indices().nth(700).map(|(i, _)| i).unwrap_or(out.len());
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

pub struct Report {
    filters: Vec<String>,
    failed: usize,
}

impl Report {
    pub fn wanted(&self, client: &str, scenario: &str) -> bool {
        let name = format!("{client}/{scenario}");
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    pub fn line(&mut self, client: &str, scenario: &str, status: &str, detail: &str) {
        if status == "fail" {
            self.failed += 1;
        }
        println!("RESULT|{client}|{scenario}|{status}|{}", sanitize(detail));
    }

    /// Runs one scenario in its own task with an overall deadline; panics and timeouts are fails.
    pub async fn run<F>(&mut self, client: &str, scenario: &str, limit: Duration, fut: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        if !self.wanted(client, scenario) {
            return;
        }
        let started = std::time::Instant::now();
        eprintln!("[interop-rust] {client}/{scenario}: start");
        let handle = tokio::spawn(fut);
        let abort = handle.abort_handle();
        let (status, detail) = match tokio::time::timeout(limit, handle).await {
            Ok(Ok(Ok(d))) => ("pass", d),
            Ok(Ok(Err(d))) => ("fail", d),
            Ok(Err(join)) => {
                let msg = if join.is_panic() {
                    let p = join.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into())
                } else {
                    join.to_string()
                };
                ("fail", format!("scenario panicked: {msg}"))
            }
            Err(_) => {
                abort.abort();
                ("fail", format!("scenario did not finish within {}s", limit.as_secs()))
            }
        };
        eprintln!(
            "[interop-rust] {client}/{scenario}: {status} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        self.line(client, scenario, status, &detail);
    }
}

fn main() {
    let bootstrap = match std::env::var("KELP_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => b,
        _ => {
            for c in ["rdkafka-rs", "rskafka"] {
                println!("RESULT|{c}|create-topic|fail|KELP_BOOTSTRAP is not set");
            }
            std::process::exit(1);
        }
    };
    let prefix = std::env::var("KELP_TOPIC_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("interop-rust-{}-{}", std::process::id(), now_ms()));
    let ctx = std::sync::Arc::new(Ctx { bootstrap, prefix });
    let mut report = Report {
        filters: std::env::args().skip(1).collect(),
        failed: 0,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        rdk::run_all(&ctx, &mut report).await;
        rdk_group::run_all(&ctx, &mut report).await;
        rsk::run_all(&ctx, &mut report).await;
    });
    // librdkafka/rskafka background threads must not keep us alive.
    rt.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(if report.failed > 0 { 1 } else { 0 });
}
