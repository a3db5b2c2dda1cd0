//! Shared by the benches: timing loops and percentile printing. Each bench is a plain `main()`
//! (`harness = false`) run with `cargo bench --bench NAME`.

#![allow(dead_code)]

use hdrhistogram::Histogram;
use std::time::Instant;

/// Nanosecond histogram up to 10 s, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

/// Times `iters` calls of `f` one by one (after `warmup` untimed calls) and prints the
/// percentiles of one call and the resulting rate. `unit_bytes`, when given, adds a throughput.
pub fn bench<R>(
    name: &str,
    warmup: u64,
    iters: u64,
    unit_bytes: Option<u64>,
    mut f: impl FnMut() -> R,
) {
    for _ in 0..warmup {
        std::hint::black_box(f());
    }
    let mut h = hist();
    let all = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(f());
        h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
    }
    let total = all.elapsed().as_secs_f64();
    print(name, &h, iters as f64 / total, unit_bytes);
}

/// Prints one result line: percentiles in nanoseconds (or microseconds when large).
pub fn print(name: &str, h: &Histogram<u64>, per_sec: f64, unit_bytes: Option<u64>) {
    let q = |x: f64| h.value_at_quantile(x);
    let (div, unit) = if q(0.5) >= 10_000 {
        (1000.0, "us")
    } else {
        (1.0, "ns")
    };
    let f = |v: u64| v as f64 / div;
    let mut line = format!(
        "{name:<44} p50 {:>9.1} {unit}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>10.1}  {:>12.0} ops/s",
        f(q(0.5)),
        f(q(0.99)),
        f(q(0.999)),
        f(h.max()),
        per_sec
    );
    if let Some(b) = unit_bytes {
        line.push_str(&format!("  {:>8.2} GB/s", per_sec * b as f64 / 1e9));
    }
    println!("{line}");
}

/// Pins the calling thread; false when the core does not exist.
pub fn pin(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

/// A valid magic-2 batch of `n` records with `value_bytes`-byte values (null keys).
pub fn batch(n: usize, value_bytes: usize) -> Vec<u8> {
    let varint = kelp::protocol::batch::put_varint;
    let mut body = Vec::new();
    for i in 0..n {
        let mut r = vec![0u8];
        varint(&mut r, 0);
        varint(&mut r, i as i64);
        varint(&mut r, -1);
        varint(&mut r, value_bytes as i64);
        r.extend((0..value_bytes).map(|j| (j * 31 + i) as u8));
        varint(&mut r, 0);
        varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n as i32 - 1).to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(n as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}
