//! The showcase end to end at tiny scale: demo/run.sh with the debug binaries, its own mount
//! point, state and output directories. Checks what the issue asks of it: exit 0, the warm and
//! restart runs fetched 0 bytes, results.json parses and agrees with the table the demo
//! printed, report.html holds the four charts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The last table printed with a `| Metric |` header: metric → cells.
fn last_table(stdout: &str) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("| Metric"))
        .expect("a table in the demo's output");
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = cells(lines[start]);
    let mut rows = BTreeMap::new();
    for l in &lines[start + 2..] {
        if !l.starts_with('|') {
            break;
        }
        let c = cells(l);
        rows.insert(c[0].clone(), c[1..].to_vec());
    }
    (header, rows)
}

#[test]
fn the_demo_runs_every_phase_and_its_results_match_what_it_printed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Path::new(common::BIN).parent().expect("bin dir");
    let out_dir = dir.path().join("out");
    let out = Command::new(root.join("demo/run.sh"))
        .env("DEMO_SCALE", "tiny")
        .env("WD_BIN", bin)
        .env("WD_MOUNT", dir.path().join("wd"))
        .env("DEMO_OUT", &out_dir)
        .env("DEMO_DATA", dir.path().join("data"))
        .env("DEMO_STATE", dir.path().join("state"))
        .output()
        .expect("running demo/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    common::keep_output("demo-stdout", &stdout);
    common::keep_output("demo-stderr", &stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for phase in [
        "Phase 1: cross-region data fabric",
        "Phase 2: cold-cache training",
        "Phase 3: warm-cache training",
        "Phase 4: results",
        "Phase 5: beyond the seed: restart",
        "Data governance, while mounted",
    ] {
        assert!(stdout.contains(phase), "no `{phase}` in:\n{stdout}");
    }
    assert!(
        stdout.contains("step=24 images_per_sec="),
        "forge's log line"
    );

    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    let phases = &results["phases"];
    let fetched = |p: &str| phases[p]["backend_bytes_total"].as_f64().expect("bytes");
    assert!(
        fetched("cold") > 0.0,
        "the cold run fetched from the backends"
    );
    assert_eq!(fetched("warm"), 0.0, "the warm run fetched nothing");
    assert_eq!(fetched("restart"), 0.0, "nor did the run after the restart");
    assert_eq!(results["same_batches_every_run"], Value::Bool(true));
    for c in results["checklist"].as_array().expect("checklist") {
        assert_eq!(c["shown"], Value::Bool(true), "{c}");
    }

    // The final table agrees with results.json, cell by cell.
    let (header, rows) = last_table(&stdout);
    assert_eq!(&header[1..4], ["Cold", "Warm", "After restart"]);
    for (i, p) in ["cold", "warm", "restart"].iter().enumerate() {
        let ph = &phases[*p];
        let n = |k: &str| ph[k].as_f64().unwrap_or_else(|| panic!("{p}.{k}"));
        let expect = [
            ("Wall time", format!("{} ms", thousands(n("wall_ms")))),
            (
                "Throughput (images)",
                format!("{:.1}/sec", n("images_per_sec")),
            ),
            (
                "Avg data load / step",
                format!("{:.2} ms", n("data_ms_per_step")),
            ),
            ("Cache hits", thousands(n("cache_hits"))),
            ("Cache misses", thousands(n("cache_misses"))),
            ("FUSE reads", thousands(n("fuse_reads"))),
            (
                "Backend data fetched",
                format!("{:.3} GB", n("backend_bytes_total") / 1e9),
            ),
            (
                "Cache hit rate",
                ph["hit_rate"]
                    .as_f64()
                    .map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0)),
            ),
        ];
        for (metric, want) in expect {
            assert_eq!(rows[metric][i], want, "{metric} of the {p} run");
        }
    }
    let speedup = results["speedup"]["warm"]["throughput"]
        .as_f64()
        .expect("speedup");
    assert_eq!(
        rows["Throughput (images)"][3],
        format!("{speedup:.1}x"),
        "the warm speedup column"
    );

    let html = std::fs::read_to_string(out_dir.join("report.html")).expect("report.html");
    for chart in [
        "chart-throughput",
        "chart-latency",
        "chart-bytes",
        "chart-hit-rate",
    ] {
        let at = html
            .find(&format!("<svg id=\"{chart}\""))
            .unwrap_or_else(|| panic!("no {chart} in report.html"));
        let end = at + html[at..].find("</svg>").expect("closed svg");
        let svg = &html[at..end];
        assert!(
            svg.contains("<polyline") || svg.contains("<rect"),
            "{chart} draws something"
        );
    }
    assert!(!html.contains("<script"), "self-contained, no scripts");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no network references"
    );
}
