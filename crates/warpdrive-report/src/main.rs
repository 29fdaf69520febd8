//! `warpdrive-report`: the demo's tables, checklist, `results.json` and `report.html`, built
//! only from what the demo measured.
//!
//! demo/run.sh leaves, per training phase (`cold`, `warm`, `restart`), forge's summary
//! (`PHASE.summary.json`) and the metrics that changed during the run (`PHASE.metrics.json`,
//! from `warpdrive-ctl metrics --since --json`), plus `info.json` from `warpdrive-testkit demo`
//! (the WAN links) and `governance.txt` (each governance command and its exit code). From those
//! this prints one phase's table (`warpdrive-report phase NAME`), the cold/warm comparison
//! (`compare`) or, at the end, the comparison with the restart run, the capability checklist,
//! and writes `results.json` and a self-contained `report.html` (`final`). Every checklist
//! line is decided from those figures ([`text`]); the page is drawn by [`html`].

mod figures;
mod html;
mod text;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};

use crate::figures::{PHASES, Phase, load, namespace, read_governance, read_json};
use crate::html::html;
use crate::text::{checklist, comparison, label, rows, table};

/// The demo's tables, checklist, results.json and report.html, from the figures the demo
/// measured (see demo/run.sh).
#[derive(Debug, Clone, Parser)]
#[command(name = "warpdrive-report", version)]
struct ReportArgs {
    /// `phase NAME` (one run's table), `compare` (cold vs warm) or `final` (everything, and
    /// write results.json and report.html).
    #[arg(value_parser = ["phase", "compare", "final"])]
    what: String,
    /// The phase for `phase`.
    phase: Option<String>,
    /// The demo's state directory (summaries, metrics, info.json, governance.txt).
    #[arg(long)]
    state: PathBuf,
    /// The mount point (to show what the namespace holds).
    #[arg(long)]
    mount_point: PathBuf,
    /// Where `final` writes results.json and report.html.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The demo's scale, recorded in results.json.
    #[arg(long, default_value = "quick")]
    scale: String,
}

fn main() -> Result<()> {
    run(&ReportArgs::parse())
}

/// Prints (and for `final` writes) the report `a` asks for.
fn run(a: &ReportArgs) -> Result<()> {
    // Only the phases this report shows are read.
    let wanted: &[&str] = match a.what.as_str() {
        "phase" => &[a
            .phase
            .as_deref()
            .context("`report phase` needs the phase's name")?],
        "compare" => &["cold", "warm"],
        _ => &PHASES,
    };
    let mut phases = BTreeMap::new();
    for name in wanted {
        if let Some(p) = load(&a.state, name)? {
            phases.insert(*name, p);
        }
    }
    let get = |n: &str| {
        phases
            .get(n)
            .with_context(|| format!("the {n} run left no summary in {}", a.state.display()))
    };
    match a.what.as_str() {
        "phase" => {
            let name = wanted[0];
            let p = get(name)?;
            let body: Vec<Vec<String>> = rows(&[p])
                .into_iter()
                .map(|(n, v, _)| std::iter::once(n).chain(v).collect())
                .collect();
            print!("{}", table(&["Metric".into(), label(name).into()], &body));
        }
        "compare" => print!("{}", comparison(&[get("cold")?, get("warm")?])),
        _ => {
            let ordered: Vec<&Phase> = PHASES.iter().filter_map(|n| phases.get(n)).collect();
            anyhow::ensure!(!ordered.is_empty(), "no phase ran");
            print!("{}", comparison(&ordered));
            let tree = namespace(&a.mount_point);
            let config = std::fs::read_to_string(a.state.join("config.yaml")).unwrap_or_default();
            let governance = read_governance(&a.state);
            let dashboard = read_json(&a.state.join("dashboard.json")).unwrap_or(Value::Null);
            let checks = checklist(
                &phases,
                &dashboard,
                &tree,
                &config,
                &governance,
                &a.mount_point,
            );
            println!("\nCapabilities, each checked only if this run showed it:");
            for (cap, ok, evidence) in &checks {
                println!("  [{}] {cap}: {evidence}", if *ok { "x" } else { " " });
            }
            let info = read_json(&a.state.join("info.json")).unwrap_or(Value::Null);
            let results = results_json(a, &ordered, &checks, &info, &governance, &tree);
            let out = a.out.as_ref().context("`report final` needs --out")?;
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&results)? + "\n",
            )
            .context("writing results.json")?;
            std::fs::write(
                out.join("report.html"),
                html(&ordered, &checks, &info, &a.scale),
            )
            .context("writing report.html")?;
            println!(
                "\nwrote {} and {}",
                out.join("results.json").display(),
                out.join("report.html").display()
            );
            let missing: Vec<&str> = checks
                .iter()
                .filter(|c| !c.1)
                .map(|c| c.0.as_str())
                .collect();
            anyhow::ensure!(
                missing.is_empty(),
                "not shown in this run: {} (see the evidence above)",
                missing.join(", ")
            );
        }
    }
    Ok(())
}

fn results_json(
    a: &ReportArgs,
    ordered: &[&Phase],
    checks: &[(String, bool, String)],
    info: &Value,
    governance: &[(String, i64)],
    tree: &BTreeMap<String, usize>,
) -> Value {
    let first = ordered[0];
    let mut speedups = serde_json::Map::new();
    for p in &ordered[1..] {
        let r = |a: f64, b: f64| {
            if a > 0.0 && b > 0.0 {
                Some(a / b)
            } else {
                None
            }
        };
        speedups.insert(
            p.name.clone(),
            json!({
                "wall_time": r(first.wall_ms, p.wall_ms),
                "throughput": r(p.images_per_sec, first.images_per_sec),
                "data_load": r(first.data_ms, p.data_ms),
            }),
        );
    }
    let digests: Vec<&str> = ordered.iter().map(|p| p.batch_digest.as_str()).collect();
    json!({
        "scale": a.scale,
        "parameters": first.params,
        "wan": info,
        "namespace": tree,
        "phases": ordered.iter().map(|p| (p.name.clone(), p.to_json())).collect::<serde_json::Map<_, _>>(),
        "speedup": speedups,
        "same_batches_every_run": digests.iter().all(|d| *d == digests[0]),
        "governance": governance.iter().map(|(c, rc)| json!({"command": c, "exit_code": rc})).collect::<Vec<_>>(),
        "checklist": checks.iter().map(|(c, ok, e)| json!({"capability": c, "shown": ok, "evidence": e})).collect::<Vec<_>>(),
    })
}
