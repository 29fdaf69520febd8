//! The showcase end to end at tiny scale: demo/run.sh with the debug binaries, its own mount
//! point, state and output directories. Checks what the issue asks of it: exit 0, the warm and
//! restart runs fetched 0 bytes, the second node fetched 0 bytes across the WAN and read the
//! data from the shared tier, results.json parses and agrees with the table the demo printed,
//! report.html holds the four charts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The number a table cell shows (`14,459 ms`, `663.9/sec`, `52.6%`, `0.456 GB`) and the
/// precision it was printed with (half its last digit).
fn shown(cell: &str) -> (f64, f64) {
    let num: String = cell
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| *c != ',')
        .collect();
    let decimals = num.split_once('.').map_or(0, |(_, d)| d.len());
    (
        num.parse()
            .unwrap_or_else(|_| panic!("no number in {cell:?}")),
        0.5 * 10f64.powi(-(decimals as i32)),
    )
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
        "Phase 6: beyond the seed: a fleet",
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
    assert_eq!(
        fetched("fleet"),
        0.0,
        "node 2 fetched nothing across the WAN"
    );
    let tier = phases["fleet"]["shared_tier_bytes"]
        .as_f64()
        .expect("tier bytes");
    assert!(
        tier >= 0.9 * fetched("cold"),
        "node 2 read {tier} bytes from the shared tier; node 1 fetched {}",
        fetched("cold")
    );
    assert_eq!(results["same_batches_every_run"], Value::Bool(true));
    for c in results["checklist"].as_array().expect("checklist") {
        assert_eq!(c["shown"], Value::Bool(true), "{c}");
    }

    // The final table agrees with results.json, cell by cell.
    let (header, rows) = last_table(&stdout);
    assert_eq!(
        &header[1..5],
        ["Cold", "Warm", "After restart", "Node 2 (fleet)"]
    );
    for (i, p) in ["cold", "warm", "restart"].iter().enumerate() {
        let ph = &phases[*p];
        let n = |k: &str| ph[k].as_f64().unwrap_or_else(|| panic!("{p}.{k}"));
        // (row, the JSON value, the unit it is printed in)
        let expect = [
            ("Wall time", n("wall_ms"), 1.0),
            ("Throughput (images)", n("images_per_sec"), 1.0),
            ("Avg data load / step", n("data_ms_per_step"), 1.0),
            ("Cache hits", n("cache_hits"), 1.0),
            ("Cache misses", n("cache_misses"), 1.0),
            ("FUSE reads", n("fuse_reads"), 1.0),
            ("Backend data fetched", n("backend_bytes_total"), 1e9),
            ("Cache hit rate", n("hit_rate"), 0.01),
        ];
        for (metric, value, unit) in expect {
            let cell = &rows[metric][i];
            let (printed, precision) = shown(cell);
            assert!(
                (printed - value / unit).abs() <= precision + 1e-9,
                "{metric} of the {p} run: printed {cell:?}, results.json {value}"
            );
        }
    }
    let speedup = results["speedup"]["warm"]["throughput"]
        .as_f64()
        .expect("speedup");
    let (printed, precision) = shown(&rows["Throughput (images)"][4]);
    assert!(
        (printed - speedup).abs() <= precision + 1e-9,
        "the warm speedup column: {printed} vs {speedup}"
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
