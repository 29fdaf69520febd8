//! `report.html`: one self-contained page (inline SVG charts, no scripts, no network) with
//! the throughput curves, the phase table, the cache and backend figures and the checklist.

use std::fmt::Write as _;

use serde_json::Value;

use crate::figures::Phase;
use crate::text::{label, rows, thousands};

pub(crate) const COLORS: [&str; 3] = ["#d9534f", "#2b7bba", "#4aa564"];

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Images/s over a moving window of steps.
pub(crate) fn curve(p: &Phase, window: usize) -> Vec<(f64, f64)> {
    let w = window.min(p.step_ms.len()).max(1);
    (w..=p.step_ms.len())
        .map(|end| {
            let ms: f64 = p.step_ms[end - w..end].iter().sum();
            (
                end as f64,
                if ms > 0.0 {
                    w as f64 * p.batch_size / (ms / 1e3)
                } else {
                    0.0
                },
            )
        })
        .collect()
}

/// A line chart of several series on a logarithmic y axis (cold and warm throughput differ by
/// orders of magnitude), with the steps along x.
pub(crate) fn line_chart(
    id: &str,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let (w, h, l, b) = (640.0, 300.0, 70.0, 40.0);
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let values = || series.iter().flat_map(|s| s.1.iter().map(|p| p.1.max(1.0)));
    let lo = values()
        .fold(f64::INFINITY, f64::min)
        .min(1e6)
        .log10()
        .floor();
    let hi = values().fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
    let x_of = |x: f64| l + (w - l - 10.0) * x / xmax;
    let y_of = |v: f64| h - b - (h - b - 30.0) * (v.max(1.0).log10() - lo) / (hi - lo);
    let mut svg = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        svg,
        r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="gray"/><line x1="{l}" y1="30" x2="{l}" y2="{}" stroke="gray"/>"#,
        h - b,
        w - 10.0,
        h - b,
        h - b
    );
    for e in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(e);
        let y = y_of(v);
        let _ = write!(
            svg,
            r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            w - 10.0,
            l - 5.0,
            y + 4.0,
            thousands(v)
        );
    }
    for i in 0..=4 {
        let x = xmax * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x_of(x),
            h - b + 14.0,
            thousands(x)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">step</text><text x="14" y="{}" font-size="12" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        (l + w) / 2.0,
        h - 6.0,
        h / 2.0,
        h / 2.0,
        esc(y_label)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
            .collect();
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{c}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            l + 10.0 + 130.0 * i as f64,
            6.0,
            l + 26.0 + 130.0 * i as f64,
            16.0,
            esc(name)
        );
    }
    svg + "</svg>"
}

/// A grouped bar chart: categories along x, one bar per series.
pub(crate) fn bar_chart(
    id: &str,
    title: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let (w, h, l, b) = (640.0, 300.0, 20.0, 50.0);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let group = (w - l - 10.0) / categories.len().max(1) as f64;
    let bar = group * 0.8 / series.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        svg,
        r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="gray"/>"#,
        h - b,
        w - 10.0,
        h - b
    );
    for (ci, cat) in categories.iter().enumerate() {
        let gx = l + group * ci as f64 + group * 0.1;
        for (si, (_, vals)) in series.iter().enumerate() {
            let v = vals.get(ci).copied().unwrap_or(0.0);
            let bh = (h - b - 30.0) * v / ymax;
            let x = gx + bar * si as f64;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}</title></rect>"#,
                h - b - bh,
                bar * 0.95,
                COLORS[si % COLORS.len()],
                esc(&fmt(v))
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + bar / 2.0,
                h - b - bh - 3.0,
                esc(&fmt(v))
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            gx + group * 0.4,
            h - b + 15.0,
            esc(cat)
        );
    }
    for (si, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            l + 10.0 + 130.0 * si as f64,
            h - 18.0,
            COLORS[si % COLORS.len()],
            l + 26.0 + 130.0 * si as f64,
            h - 8.0,
            esc(name)
        );
    }
    svg + "</svg>"
}

pub(crate) fn html(
    ordered: &[&Phase],
    checks: &[(String, bool, String)],
    info: &Value,
    scale: &str,
) -> String {
    let names: Vec<String> = ordered.iter().map(|p| label(&p.name).to_string()).collect();
    let throughput = line_chart(
        "chart-throughput",
        "Training throughput per step (moving average over a twelfth of the run; log scale)",
        "images/s",
        &ordered
            .iter()
            .map(|p| {
                (
                    label(&p.name).to_string(),
                    curve(p, (p.step_ms.len() / 12).max(5)),
                )
            })
            .collect::<Vec<_>>(),
    );
    let rows: Vec<String> = ordered
        .first()
        .map(|p| p.latency_rows.iter().map(|r| r.0.clone()).collect())
        .unwrap_or_default();
    let latency = bar_chart(
        "chart-latency",
        "FUSE read latency (reads per bucket)",
        &rows,
        &ordered
            .iter()
            .map(|p| {
                (
                    label(&p.name).to_string(),
                    p.latency_rows.iter().map(|r| r.1).collect(),
                )
            })
            .collect::<Vec<_>>(),
        &thousands,
    );
    let passthrough: Vec<String> = ordered
        .iter()
        .filter(|p| p.passthrough_opens > 0.0)
        .map(|p| format!("{} {}", label(&p.name), thousands(p.passthrough_opens)))
        .collect();
    let latency_note = if passthrough.is_empty() {
        String::new()
    } else {
        format!(
            "<p>Reads of files opened with FUSE passthrough go from the kernel straight to the cache file and never reach the daemon, so they are not in this histogram (passthrough opens: {}).</p>",
            esc(&passthrough.join(", "))
        )
    };
    let backends: Vec<String> = ordered
        .first()
        .map(|p| p.fetched.keys().cloned().collect())
        .unwrap_or_default();
    let bytes = bar_chart(
        "chart-bytes",
        "Bytes fetched from each region",
        &backends,
        &ordered
            .iter()
            .map(|p| {
                (
                    label(&p.name).to_string(),
                    backends
                        .iter()
                        .map(|b| p.fetched.get(b).copied().unwrap_or(0.0))
                        .collect(),
                )
            })
            .collect::<Vec<_>>(),
        &|v| format!("{:.1} MB", v / 1e6),
    );
    let hit = bar_chart(
        "chart-hit-rate",
        "Cache hit rate",
        &names,
        &[(
            "hit rate".to_string(),
            ordered
                .iter()
                .map(|p| p.hit_rate().unwrap_or(0.0) * 100.0)
                .collect(),
        )],
        &|v| format!("{v:.1}%"),
    );
    let comparison = rows_html(ordered);
    let mut checklist = String::new();
    for (c, ok, e) in checks {
        let _ = write!(
            checklist,
            "<li class=\"{}\"><b>{}</b> {}: {}</li>",
            if *ok { "ok" } else { "no" },
            if *ok { "&#10003;" } else { "&#10007;" },
            esc(c),
            esc(e)
        );
    }
    let links = info["links"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    format!(
                        "{} ({}): {} ms each way, {}",
                        l["backend"].as_str().unwrap_or("?"),
                        l["region"].as_str().unwrap_or("?"),
                        l["one_way_delay_ms"].as_f64().unwrap_or(0.0),
                        l["bandwidth_bytes_per_sec"]
                            .as_f64()
                            .map_or("unlimited".into(), |b| format!("{:.1} MB/s", b / 1e6))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let wan = if info["wan"].as_bool() == Some(false) {
        "no WAN simulator".to_string()
    } else {
        format!("WAN simulator: {}", esc(&links))
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>WarpDrive showcase report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} li.ok b {{ color: #2a8a3a; }} li.no b {{ color: #b22; }}
.chart {{ display: block; margin: 1em 0; max-width: 100%; height: auto; }}
</style></head><body>
<h1>WarpDrive showcase: cold vs warm training through the mount</h1>
<p>Scale: {scale}. {wan}.</p>
<h2>Results</h2>
{comparison}
<h2>Training throughput</h2>
{throughput}
<h2>Read latency</h2>
{latency}
{latency_note}
<h2>Bytes per region</h2>
{bytes}
<h2>Cache hit rate</h2>
{hit}
<h2>Capabilities shown in this run</h2>
<ul>{checklist}</ul>
</body></html>
"#,
        scale = esc(scale),
    )
}

pub(crate) fn rows_html(ordered: &[&Phase]) -> String {
    let mut s = String::from("<table><tr><th>Metric</th>");
    for p in ordered {
        let _ = write!(s, "<th>{}</th>", esc(label(&p.name)));
    }
    for p in &ordered[1..] {
        let _ = write!(s, "<th>{} speedup</th>", esc(label(&p.name)));
    }
    s.push_str("</tr>");
    for (n, v, u) in rows(ordered) {
        let _ = write!(s, "<tr><td>{}</td>", esc(&n));
        for c in v.iter().chain(&u) {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>");
    }
    s + "</table>"
}
