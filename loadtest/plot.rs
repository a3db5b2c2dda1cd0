//! Latency-by-percentile charts drawn as SVG by hand: x is the percentile on the usual
//! HdrHistogram scale (log of 1/(1-p): 0%, 90%, 99%, 99.9%...), y is latency on a log scale so
//! that a 7 us floor and a 2 ms broker fit on one chart.

use crate::json::Json;
use std::fmt::Write as _;

/// One run's curve.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// (percentile 0..=100, microseconds)
    pub points: Vec<(f64, f64)>,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Series {
    /// Reads a report written by `--json`.
    pub fn from_json(j: &Json, fallback_label: &str) -> Result<Series, String> {
        let label = j
            .get("label")
            .and_then(Json::as_str)
            .unwrap_or(fallback_label)
            .to_string();
        let num = |k: &str| j.get(k).and_then(Json::as_f64).unwrap_or(f64::NAN);
        let points = j
            .get("percentiles")
            .and_then(Json::as_array)
            .ok_or_else(|| format!("{fallback_label}: no \"percentiles\" array"))?
            .iter()
            .filter_map(|p| {
                let a = p.as_array()?;
                Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?))
            })
            .collect();
        Ok(Series {
            label,
            points,
            p50: num("p50_us"),
            p99: num("p99_us"),
            max: num("max_us"),
        })
    }
}

const WIDTH: f64 = 1060.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 700.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 500.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// The x axis never goes past 99.9999%.
const NINES_MAX: f64 = 6.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nines(percentile: f64) -> f64 {
    let q = percentile / 100.0;
    if q >= 1.0 {
        f64::INFINITY
    } else {
        (1.0 / (1.0 - q)).log10()
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1000.0 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} us", trim(us))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn x_label(n: i32) -> String {
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)).replace("99.%", "99%"),
    }
}

/// Draws every series on one chart.
pub fn render_svg(series: &[Series], title: &str) -> String {
    let finite_max = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|&(p, _)| nines(p))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max);
    let x_max = finite_max.ceil().clamp(2.0, NINES_MAX);
    let values = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|&(_, v)| v)
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (y_min, y_max) = if lo.is_finite() && hi > 0.0 {
        let a = lo.log10().floor();
        let b = hi.log10().ceil();
        (a, if b > a { b } else { a + 1.0 })
    } else {
        (0.0, 3.0)
    };
    let px = |x: f64| LEFT + (x.min(x_max) / x_max) * (RIGHT - LEFT);
    let py = |us: f64| {
        let l = us.max(10f64.powf(y_min)).log10();
        BOTTOM - (l - y_min) / (y_max - y_min) * (BOTTOM - TOP)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="28" font-size="14">{}</text>"#,
        esc(title)
    );
    // Horizontal grid: decades, with faint 2x and 5x lines.
    let mut d = y_min as i32;
    while d as f64 <= y_max {
        let v = 10f64.powi(d);
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#ccc"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            fmt_us(v)
        );
        for m in [2.0, 5.0] {
            if ((v * m).log10()) < y_max {
                let y = py(v * m);
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#eee"/>"##
                );
            }
        }
        d += 1;
    }
    // Vertical grid: 0%, 90%, 99%, ...
    for n in 0..=(x_max as i32) {
        let x = px(n as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}" stroke="#ccc"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            BOTTOM + 18.0,
            x_label(n)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        RIGHT - LEFT,
        BOTTOM - TOP
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (log scale)</text>"#,
        (TOP + BOTTOM) / 2.0,
        (TOP + BOTTOM) / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        let last_finite = ser
            .points
            .iter()
            .map(|&(p, _)| nines(p))
            .filter(|x| x.is_finite())
            .fold(0.0f64, f64::max);
        for &(p, v) in &ser.points {
            let mut x = nines(p);
            if !x.is_finite() {
                // The maximum sits at 100%: draw it just past the last finite point.
                x = (last_finite + 0.25).min(x_max);
            }
            let _ = write!(pts, "{:.1},{:.1} ", px(x), py(v));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.trim_end()
        );
        let ly = TOP + 10.0 + i as f64 * 44.0;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text><text x="{}" y="{}" fill="#555">p50 {} · p99 {} · max {}</text>"##,
            RIGHT + 15.0,
            RIGHT + 40.0,
            RIGHT + 46.0,
            ly + 4.0,
            esc(&ser.label),
            RIGHT + 46.0,
            ly + 20.0,
            fmt_us(ser.p50),
            fmt_us(ser.p99),
            fmt_us(ser.max)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_labels_and_lines() {
        let a = Series {
            label: "kelp <a>".into(),
            points: vec![
                (0.0, 5.0),
                (50.0, 7.0),
                (99.0, 9.0),
                (99.9, 20.0),
                (100.0, 80.0),
            ],
            p50: 7.0,
            p99: 9.0,
            max: 80.0,
        };
        let svg = render_svg(&[a.clone(), a], "t");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("kelp &lt;a&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("99.9%"));
        assert!(svg.contains(">99%<"));
        assert!(!svg.contains("NaN"));
    }
}
