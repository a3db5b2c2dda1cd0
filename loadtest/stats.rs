//! Measurements: per-thread histograms shipped to the main thread a few times a second, the
//! progress line, and the final report (table, JSON, `.hgrm`, SVG).
//!
//! Latencies are recorded in nanoseconds and reported in microseconds. Worker threads never
//! block or allocate to report: they hand their histogram over a channel and take back a
//! cleared one that the main thread recycles.

use crate::json::Json;
use crate::util::thousands;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub type Hist = Histogram<u64>;

/// Highest latency a histogram holds: 100 s in nanoseconds (larger values saturate).
const HIST_MAX_NS: u64 = 100_000_000_000;
/// Significant digits kept: 3 gives 0.1% resolution.
const HIST_SIGFIG: u8 = 3;
/// How often the main thread prints a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A request outstanding longer than this is reported as a stall on the progress line.
const STALL_AFTER: Duration = Duration::from_secs(1);

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).expect("valid histogram bounds")
}

/// Counts of one phase (warm-up or measured).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub records: u64,
    /// Record value bytes (what MB/s counts).
    pub value_bytes: u64,
    pub requests: u64,
    pub errors: u64,
    /// Error description -> occurrences.
    pub error_kinds: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.records += o.records;
        self.value_bytes += o.value_bytes;
        self.requests += o.requests;
        self.errors += o.errors;
        for (k, v) in &o.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
    }

    pub fn error(&mut self, kind: impl Into<String>, n: u64) {
        self.errors += n;
        *self.error_kinds.entry(kind.into()).or_default() += n;
    }
}

/// What a worker thread reports since its previous report.
pub struct Tick {
    pub thread: usize,
    /// Latency samples of the measured phase.
    pub hist: Hist,
    pub measured: Tally,
    pub warmup: Tally,
    /// Requests sent and not yet answered, right now.
    pub outstanding: usize,
    /// Age of the oldest of those.
    pub oldest: Option<Duration>,
    /// When the last measured sample completed.
    pub last_completion: Option<Instant>,
    /// The worker has finished; this is its last report.
    pub done: bool,
    /// A fatal problem that ended the worker early.
    pub fatal: Option<String>,
}

/// A worker's handle for reporting.
pub struct Reporter {
    pub thread: usize,
    tx: Sender<Tick>,
    spares: Receiver<Hist>,
    pub hist: Hist,
    pub measured: Tally,
    pub warmup: Tally,
    pub last_completion: Option<Instant>,
}

impl Reporter {
    /// Ships what was gathered since the last call.
    pub fn send(
        &mut self,
        outstanding: usize,
        oldest: Option<Duration>,
        done: bool,
        fatal: Option<String>,
    ) {
        let spare = self.spares.try_recv().unwrap_or_else(|_| new_hist());
        let hist = std::mem::replace(&mut self.hist, spare);
        let tick = Tick {
            thread: self.thread,
            hist,
            measured: std::mem::take(&mut self.measured),
            warmup: std::mem::take(&mut self.warmup),
            outstanding,
            oldest,
            last_completion: self.last_completion,
            done,
            fatal,
        };
        let _ = self.tx.send(tick);
    }
}

/// The main thread's end of the reporting channels.
pub struct Collector {
    rx: Receiver<Tick>,
    tx: Sender<Tick>,
    spares_tx: Sender<Hist>,
    spares_rx: Receiver<Hist>,
}

/// Everything measured in one run.
pub struct Summary {
    pub hist: Hist,
    pub measured: Tally,
    pub warmup: Tally,
    /// From the end of warm-up to the last measured completion.
    pub window: Duration,
    pub fatal: Vec<String>,
}

impl Collector {
    pub fn new() -> Collector {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (spares_tx, spares_rx) = crossbeam_channel::unbounded();
        Collector {
            rx,
            tx,
            spares_tx,
            spares_rx,
        }
    }

    pub fn reporter(&self, thread: usize) -> Reporter {
        Reporter {
            thread,
            tx: self.tx.clone(),
            spares: self.spares_rx.clone(),
            hist: new_hist(),
            measured: Tally::default(),
            warmup: Tally::default(),
            last_completion: None,
        }
    }

    /// Gathers reports until `threads` workers are done, printing a progress line to stderr
    /// every second unless `quiet`.
    pub fn run(
        self,
        threads: usize,
        started: Instant,
        warmup_end: Instant,
        quiet: bool,
    ) -> Summary {
        drop(self.tx);
        let mut hist = new_hist();
        let mut measured = Tally::default();
        let mut warmup = Tally::default();
        let mut last_completion: Option<Instant> = None;
        let mut outstanding = vec![(0usize, None::<Duration>); threads];
        let mut done = vec![false; threads];
        let mut fatal = Vec::new();
        let mut next_print = started + PROGRESS_EVERY;
        let (mut printed_records, mut printed_bytes, mut printed_at) = (0u64, 0u64, started);
        while done.iter().any(|d| !d) {
            let now = Instant::now();
            let wait = next_print.saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(mut t) => {
                    let _ = hist.add(&t.hist);
                    t.hist.reset();
                    let _ = self.spares_tx.send(t.hist);
                    measured.add(&t.measured);
                    warmup.add(&t.warmup);
                    if let Some(c) = t.last_completion {
                        last_completion = Some(last_completion.map_or(c, |l: Instant| l.max(c)));
                    }
                    outstanding[t.thread] = (t.outstanding, t.oldest);
                    if let Some(f) = t.fatal {
                        fatal.push(f);
                    }
                    if t.done {
                        done[t.thread] = true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_print {
                next_print += PROGRESS_EVERY;
                if quiet {
                    continue;
                }
                let records = measured.records + warmup.records;
                let bytes = measured.value_bytes + warmup.value_bytes;
                let dt = now.duration_since(printed_at).as_secs_f64().max(1e-9);
                let mut line = format!(
                    "[{:>5.1}s] {:>10.0} rec/s {:>9.2} MB/s",
                    now.duration_since(started).as_secs_f64(),
                    (records - printed_records) as f64 / dt,
                    (bytes - printed_bytes) as f64 / dt / 1e6,
                );
                if now < warmup_end {
                    line.push_str("  (warm-up)");
                } else if !hist.is_empty() {
                    let _ = write!(
                        line,
                        "  p50 {:>9.1} us  p99 {:>9.1} us",
                        us(hist.value_at_quantile(0.5)),
                        us(hist.value_at_quantile(0.99))
                    );
                }
                let errors = measured.errors + warmup.errors;
                if errors > 0 {
                    let _ = write!(line, "  errors {errors}");
                }
                let waiting: usize = outstanding.iter().map(|o| o.0).sum();
                let oldest = outstanding.iter().filter_map(|o| o.1).max();
                if let Some(o) = oldest.filter(|o| *o >= STALL_AFTER) {
                    let _ = write!(
                        line,
                        "  STALL: {waiting} requests waiting, oldest {:.1} s",
                        o.as_secs_f64()
                    );
                }
                eprintln!("{line}");
                printed_records = records;
                printed_bytes = bytes;
                printed_at = now;
            }
        }
        let window = last_completion
            .map(|l| l.saturating_duration_since(warmup_end))
            .unwrap_or_default();
        Summary {
            hist,
            measured,
            warmup,
            window,
            fatal,
        }
    }
}

pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The percentiles every report shows, as (label, quantile, JSON key).
pub const SHOWN: &[(&str, f64, &str)] = &[
    ("p50", 0.5, "p50_us"),
    ("p90", 0.9, "p90_us"),
    ("p99", 0.99, "p99_us"),
    ("p99.9", 0.999, "p999_us"),
    ("p99.99", 0.9999, "p9999_us"),
];

/// A finished run, ready to print.
pub struct Report {
    pub label: String,
    pub command: &'static str,
    /// One line saying what ran, for humans.
    pub description: String,
    /// What a latency sample is.
    pub latency_of: &'static str,
    /// Flags as given, for the JSON.
    pub config: Json,
    pub summary: Summary,
}

impl Report {
    pub fn records_per_sec(&self) -> f64 {
        self.summary.measured.records as f64 / self.summary.window.as_secs_f64().max(1e-9)
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.summary.measured.value_bytes as f64 / self.summary.window.as_secs_f64().max(1e-9) / 1e6
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.summary.measured.requests as f64 / self.summary.window.as_secs_f64().max(1e-9)
    }

    /// Errors of the measured phase (warm-up errors are reported apart: a broker that is still
    /// settling leadership of a new topic is not what a run measures).
    fn errors(&self) -> u64 {
        self.summary.measured.errors
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let h = &self.summary.hist;
        let m = &self.summary.measured;
        let mut s = String::new();
        let _ = writeln!(s, "loadtest {}: {}", self.command, self.description);
        let _ = writeln!(
            s,
            "  measured {:.2} s after warm-up: {} records in {} requests; latency = {}",
            self.summary.window.as_secs_f64(),
            thousands(m.records),
            thousands(m.requests),
            self.latency_of
        );
        let mut head = String::from("  latency (us)");
        let mut vals = String::from("              ");
        for (name, q, _) in SHOWN {
            let _ = write!(head, " {name:>10}");
            let _ = write!(vals, " {:>10.1}", us(h.value_at_quantile(*q)));
        }
        let _ = write!(head, " {:>10}", "max");
        let _ = write!(vals, " {:>10.1}", us(h.max()));
        let _ = writeln!(s, "{head}\n{vals}");
        let _ = writeln!(
            s,
            "  throughput: {:.0} records/s, {:.2} MB/s of record values, {:.0} requests/s",
            self.records_per_sec(),
            self.mb_per_sec(),
            self.requests_per_sec()
        );
        let _ = write!(s, "  errors: {}", self.errors());
        for (k, v) in &m.error_kinds {
            let _ = write!(s, "\n    {v} x {k}");
        }
        let w = &self.summary.warmup;
        if w.errors > 0 {
            let _ = write!(
                s,
                "\n  errors during warm-up (not counted above): {}",
                w.errors
            );
            for (k, v) in &w.error_kinds {
                let _ = write!(s, "\n    {v} x {k}");
            }
        }
        for f in &self.summary.fatal {
            let _ = write!(s, "\n  FATAL: {f}");
        }
        s.push('\n');
        s
    }

    /// The latency curve as (quantile, microseconds) points, HdrHistogram-style.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        let h = &self.summary.hist;
        if h.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(f64, f64)> = h
            .iter_quantiles(5)
            .map(|v| (v.quantile_iterated_to(), us(v.value_iterated_to())))
            .collect();
        out.dedup_by(|b, a| a.0 == b.0);
        out
    }

    pub fn json(&self) -> Json {
        let h = &self.summary.hist;
        let mut o = Json::obj();
        o.set("label", self.label.as_str());
        o.set("command", self.command);
        o.set("description", self.description.as_str());
        o.set("latency_of", self.latency_of);
        for (_, q, key) in SHOWN {
            o.set(key, us(h.value_at_quantile(*q)));
        }
        o.set("min_us", us(h.min()));
        o.set("max_us", us(h.max()));
        o.set("mean_us", h.mean() / 1000.0);
        o.set("samples", h.len());
        o.set("records", self.summary.measured.records);
        o.set("requests", self.summary.measured.requests);
        o.set("records_per_sec", self.records_per_sec());
        o.set("mb_per_sec", self.mb_per_sec());
        o.set("requests_per_sec", self.requests_per_sec());
        o.set("duration_s", self.summary.window.as_secs_f64());
        o.set("errors", self.errors());
        let mut kinds = Json::obj();
        for (k, v) in &self.summary.measured.error_kinds {
            kinds.set(k, *v);
        }
        o.set("error_kinds", kinds);
        o.set("warmup_errors", self.summary.warmup.errors);
        o.set(
            "fatal",
            Json::Arr(
                self.summary
                    .fatal
                    .iter()
                    .map(|f| f.as_str().into())
                    .collect(),
            ),
        );
        o.set("config", self.config.clone());
        o.set(
            "percentiles",
            Json::Arr(
                self.curve()
                    .into_iter()
                    .map(|(q, v)| Json::Arr(vec![Json::Num(q * 100.0), Json::Num(v)]))
                    .collect(),
            ),
        );
        o
    }

    /// The HdrHistogram percentile distribution (`.hgrm`), values in microseconds.
    pub fn hgrm(&self) -> String {
        let h = &self.summary.hist;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                format!("{:>14.2}", 1.0 / (1.0 - q))
            } else {
                format!("{:>14}", "")
            };
            let _ = writeln!(
                s,
                "{:>12.3} {:>14.12} {:>10} {inv}",
                us(v.value_iterated_to()),
                q,
                total
            );
        }
        let _ = writeln!(
            s,
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
            h.mean() / 1000.0,
            h.stdev() / 1000.0
        );
        let _ = writeln!(
            s,
            "#[Max     = {:>12.3}, Total count    = {:>12}]",
            us(h.max()),
            h.len()
        );
        let _ = writeln!(
            s,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            h.buckets(),
            h.distinct_values()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_merges_threads_and_recycles() {
        let c = Collector::new();
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..2 {
            let mut r = c.reporter(t);
            handles.push(std::thread::spawn(move || {
                for i in 1..=1000u64 {
                    r.hist.record(i * 1000).unwrap();
                    r.measured.records += 1;
                }
                r.measured.error("X", 1);
                r.last_completion = Some(Instant::now());
                r.send(0, None, true, None);
            }));
        }
        let s = c.run(2, started, started, true);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(s.hist.len(), 2000);
        assert_eq!(s.measured.records, 2000);
        assert_eq!(s.measured.error_kinds["X"], 2);
        let rep = Report {
            label: "t".into(),
            command: "produce",
            description: "d".into(),
            latency_of: "x",
            config: Json::obj(),
            summary: s,
        };
        let p50 = rep.json().get("p50_us").unwrap().as_f64().unwrap();
        assert!((p50 - 500.0).abs() < 2.0, "{p50}");
        assert!(rep.hgrm().contains("Total count"));
        assert!(rep.table().contains("errors: 2"));
        assert_eq!(rep.json().get("warmup_errors"), Some(&Json::Num(0.0)));
    }
}
