//! `warpdrive-testkit report`: the demo's tables, checklist, `results.json` and `report.html`,
//! built only from what the demo measured.
//!
//! demo/run.sh leaves, per training phase (`cold`, `warm`, `restart`), forge's summary
//! (`PHASE.summary.json`) and the metrics that changed during the run (`PHASE.metrics.json`,
//! from `warpdrive-ctl metrics --since --json`), plus `info.json` from `warpdrive-testkit demo`
//! (the WAN links) and `governance.txt` (each governance command and its exit code). From those
//! this prints one phase's table (`report phase NAME`), the cold/warm comparison (`report
//! compare`) or, at the end, the comparison with the restart run, the capability checklist,
//! and writes `results.json` and a self-contained `report.html` (inline SVG, no scripts, no
//! network) (`report final`). Every checklist line is decided from those figures: a capability
//! is checked only when the run showed it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// The training phases, in order.
pub const PHASES: [&str; 3] = ["cold", "warm", "restart"];

/// What to report.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
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

/// One training phase's figures.
#[derive(Debug, Clone, Default)]
struct Phase {
    name: String,
    wall_ms: f64,
    images_per_sec: f64,
    data_ms: f64,
    compute_ms: f64,
    final_loss: f64,
    images: f64,
    bytes_read: f64,
    fuse_reads: f64,
    hits: f64,
    misses: f64,
    passthrough_opens: f64,
    keep_cache_opens: f64,
    evictions: f64,
    /// Backend name → bytes fetched.
    fetched: BTreeMap<String, f64>,
    latency_rows: Vec<(String, f64)>,
    auth_refreshes: f64,
    batch_digest: String,
    step_ms: Vec<f64>,
    batch_size: f64,
    params: Value,
}

impl Phase {
    fn fetched_total(&self) -> f64 {
        self.fetched.values().sum()
    }

    /// Blocks served from the cache ÷ all blocks asked for. With passthrough the kernel reads
    /// the cache file itself and the daemon counts no hits; a run with passthrough opens, no
    /// misses and nothing fetched was served wholly from the cache.
    fn hit_rate(&self) -> Option<f64> {
        if self.hits + self.misses > 0.0 {
            Some(self.hits / (self.hits + self.misses))
        } else if self.passthrough_opens > 0.0 && self.fetched_total() == 0.0 {
            Some(1.0)
        } else {
            None
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "wall_ms": self.wall_ms,
            "images_per_sec": self.images_per_sec,
            "data_ms_per_step": self.data_ms,
            "compute_ms_per_step": self.compute_ms,
            "final_loss": self.final_loss,
            "images": self.images,
            "bytes_read_by_workload": self.bytes_read,
            "fuse_reads": self.fuse_reads,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "hit_rate": self.hit_rate(),
            "passthrough_opens": self.passthrough_opens,
            "keep_cache_opens": self.keep_cache_opens,
            "evictions": self.evictions,
            "backend_bytes": self.fetched,
            "backend_bytes_total": self.fetched_total(),
            "read_latency": self.latency_rows,
            "auth_refreshes": self.auth_refreshes,
            "batch_digest": self.batch_digest,
        })
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(0.0)
}

/// An array of `[name, number]` pairs (how `warpdrive-ctl metrics --json` writes operation
/// counts and histogram rows).
fn pairs(v: &Value) -> Vec<(String, f64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Loads one phase, if it ran.
fn load(state: &Path, name: &str) -> Result<Option<Phase>> {
    let sp = state.join(format!("{name}.summary.json"));
    if !sp.exists() {
        return Ok(None);
    }
    let s = read_json(&sp)?;
    let m = read_json(&state.join(format!("{name}.metrics.json")))?;
    let ops: BTreeMap<String, f64> = pairs(&m["fuse_operations"]).into_iter().collect();
    let fetched = m["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| Some((b["name"].as_str()?.to_string(), f(b, &["read_bytes"]))))
                .collect()
        })
        .unwrap_or_default();
    let latency_rows = pairs(&m["read_latency"]["rows"]);
    let auth_refreshes = m["auth"]
        .as_array()
        .map(|a| a.iter().map(|x| f(x, &["refreshes"])).sum())
        .unwrap_or(0.0);
    Ok(Some(Phase {
        name: name.to_string(),
        wall_ms: f(&s, &["wall_ms"]),
        images_per_sec: f(&s, &["images_per_sec"]),
        data_ms: f(&s, &["mean_data_ms"]),
        compute_ms: f(&s, &["mean_compute_ms"]),
        final_loss: f(&s, &["final_loss"]),
        images: f(&s, &["images"]),
        bytes_read: f(&s, &["bytes_read"]),
        fuse_reads: ops.get("read").copied().unwrap_or(0.0),
        hits: f(&m, &["cache", "hit_blocks"]),
        misses: f(&m, &["cache", "miss_blocks"]),
        passthrough_opens: f(&m, &["cache", "passthrough_opens"]),
        keep_cache_opens: f(&m, &["cache", "keep_cache_opens"]),
        evictions: f(&m, &["cache", "evicted_blocks"]),
        fetched,
        latency_rows,
        auth_refreshes,
        batch_digest: s["batch_digest"].as_str().unwrap_or("").to_string(),
        step_ms: s["step_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default(),
        batch_size: f(&s, &["batch_size"]),
        params: json!({
            "steps": s["steps"], "batch_size": s["batch_size"],
            "num_workers": s["num_workers"], "seed": s["seed"], "roots": s["roots"],
        }),
    }))
}

/// `12,345`.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn gb(v: f64) -> String {
    format!("{:.3} GB", v / 1e9)
}

fn pct(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0))
}

fn speedup(slow: f64, fast: f64) -> String {
    if slow > 0.0 && fast > 0.0 {
        format!("{:.1}x", slow / fast)
    } else {
        String::new()
    }
}

/// The rows of a table: (metric, one value per phase, the speedup of each later phase over the
/// first, where it means something).
fn rows(phases: &[&Phase]) -> Vec<(String, Vec<String>, Vec<String>)> {
    let first = phases[0];
    let later = &phases[1..];
    let mut out = Vec::new();
    let mut row =
        |name: &str, val: &dyn Fn(&Phase) -> String, up: Option<&dyn Fn(&Phase) -> String>| {
            out.push((
                name.to_string(),
                phases.iter().map(|p| val(p)).collect(),
                later
                    .iter()
                    .map(|p| up.map_or(String::new(), |u| u(p)))
                    .collect(),
            ));
        };
    row(
        "Wall time",
        &|p| format!("{} ms", thousands(p.wall_ms)),
        Some(&|p| speedup(first.wall_ms, p.wall_ms)),
    );
    row(
        "Throughput (images)",
        &|p| format!("{:.1}/sec", p.images_per_sec),
        Some(&|p| speedup(p.images_per_sec, first.images_per_sec)),
    );
    row(
        "Avg data load / step",
        &|p| format!("{:.2} ms", p.data_ms),
        Some(&|p| speedup(first.data_ms, p.data_ms)),
    );
    row("Cache hit rate", &|p| pct(p.hit_rate()), None);
    row("Cache hits", &|p| thousands(p.hits), None);
    row("Cache misses", &|p| thousands(p.misses), None);
    row("FUSE reads", &|p| thousands(p.fuse_reads), None);
    row(
        "Passthrough opens",
        &|p| thousands(p.passthrough_opens),
        None,
    );
    row("Backend data fetched", &|p| gb(p.fetched_total()), None);
    let backends: Vec<String> = first.fetched.keys().cloned().collect();
    for b in backends {
        let name = format!("  fetched from {b}");
        let b2 = b.clone();
        row(
            &name,
            &move |p: &Phase| gb(p.fetched.get(&b2).copied().unwrap_or(0.0)),
            None,
        );
    }
    out
}

/// A plain-text table with a header.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width = vec![0; cols];
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |r: &[String]| {
        let mut s = String::from("|");
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i == 0 {
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{c} |", " ".repeat(pad));
            }
        }
        s
    };
    let mut out = line(header) + "\n|";
    for w in &width {
        out.push_str(&"-".repeat(w + 2));
        out.push('|');
    }
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn label(name: &str) -> &str {
    match name {
        "cold" => "Cold",
        "warm" => "Warm",
        "restart" => "After restart",
        other => other,
    }
}

/// The comparison table of `phases` (the first is the baseline).
fn comparison(phases: &[&Phase]) -> String {
    let mut header = vec!["Metric".to_string()];
    header.extend(phases.iter().map(|p| label(&p.name).to_string()));
    header.extend(
        phases[1..]
            .iter()
            .map(|p| format!("{} speedup", label(&p.name))),
    );
    let body: Vec<Vec<String>> = rows(phases)
        .into_iter()
        .map(|(n, v, u)| std::iter::once(n).chain(v).chain(u).collect())
        .collect();
    table(&header, &body)
}

/// Shards listed under each region's `train` directory.
fn namespace(mount_point: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(mount_point) {
        for e in rd.flatten() {
            let n = std::fs::read_dir(e.path().join("train"))
                .map(|d| {
                    d.flatten()
                        .filter(|x| x.file_name().to_string_lossy().ends_with(".tar"))
                        .count()
                })
                .unwrap_or(0);
            out.insert(e.file_name().to_string_lossy().into_owned(), n);
        }
    }
    out
}

/// (capability, shown, evidence).
fn checklist(
    phases: &BTreeMap<&str, Phase>,
    dashboard: &Value,
    tree: &BTreeMap<String, usize>,
    config: &str,
    governance: &[(String, i64)],
    mount_point: &Path,
) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let cold = phases.get("cold");
    let warm = phases.get("warm");
    let restart = phases.get("restart");
    let regions: Vec<(&String, &usize)> = tree
        .iter()
        .filter(|(k, _)| k.starts_with("datasets-"))
        .collect();
    let both = cold.is_some_and(|c| {
        regions.len() >= 2
            && regions
                .iter()
                .all(|(r, n)| **n > 0 && c.fetched.get(*r).copied().unwrap_or(0.0) > 0.0)
    });
    out.push((
        "Cross-Region Data Fabric".into(),
        both,
        format!(
            "{} under one mount at {}; the cold run fetched from {}",
            regions
                .iter()
                .map(|(r, n)| format!("{r} ({n} shards)"))
                .collect::<Vec<_>>()
                .join(" and "),
            mount_point.display(),
            cold.map_or("nothing".into(), |c| c
                .fetched
                .iter()
                .filter(|(_, b)| **b > 0.0)
                .map(|(k, b)| format!("{k} {}", gb(*b)))
                .collect::<Vec<_>>()
                .join(", "))
        ),
    ));
    let caching = match (cold, warm) {
        (Some(c), Some(w)) => c.fetched_total() > 0.0 && w.fetched_total() == 0.0,
        _ => false,
    };
    out.push((
        "Transparent NVMe Caching".into(),
        caching,
        match (cold, warm) {
            (Some(c), Some(w)) => format!(
                "cold run: {} misses, {} fetched; warm run: hit rate {}, {} fetched",
                thousands(c.misses),
                gb(c.fetched_total()),
                pct(w.hit_rate()),
                gb(w.fetched_total())
            ),
            _ => "the runs did not complete".into(),
        },
    ));
    let roots_under_mount = cold.is_some_and(|c| {
        c.params["roots"].as_array().is_some_and(|r| {
            !r.is_empty()
                && r.iter().all(|x| {
                    x.as_str()
                        .is_some_and(|s| Path::new(s).starts_with(mount_point))
                })
        }) && c.images > 0.0
    });
    out.push((
        "Zero-Code Cloud Access".into(),
        roots_under_mount,
        format!(
            "warpdrive-forge trained on {} images read from plain paths under {} (no cloud SDK in the workload)",
            thousands(cold.map_or(0.0, |c| c.images)),
            mount_point.display()
        ),
    ));
    let secret_words = [
        "account_key",
        "access_key",
        "secret_access_key",
        "sas_token",
        "AccountKey",
        "sig=",
    ];
    let no_secret = !secret_words.iter().any(|w| config.contains(w));
    let managed = config.matches("managed_identity").count();
    // Tokens are first fetched when the daemon starts, before the first run's snapshot: the
    // dashboard saved after the warm run holds the daemon's totals.
    let auth = dashboard["auth"].as_array().cloned().unwrap_or_default();
    let with_token = auth
        .iter()
        .filter(|a| a["refreshes"].as_f64().unwrap_or(0.0) > 0.0)
        .count();
    let refreshes: f64 = auth
        .iter()
        .map(|a| a["refreshes"].as_f64().unwrap_or(0.0))
        .sum();
    let backends = config.matches("- name:").count();
    out.push((
        "Managed-Identity Auth".into(),
        no_secret && managed > 0 && managed == backends && with_token == backends,
        format!(
            "{managed} of {backends} backends use managed identity and {with_token} hold a token from the instance-metadata endpoint ({} fetched since the daemon started); no key or secret in the config",
            thousands(refreshes)
        ),
    ));
    let metrics_ok = cold.is_some_and(|c| c.fuse_reads > 0.0 && !c.latency_rows.is_empty());
    out.push((
        "Prometheus Observability".into(),
        metrics_ok,
        format!(
            "scraped before and after every run: {} FUSE reads and their latency histogram in the cold run",
            thousands(cold.map_or(0.0, |c| c.fuse_reads))
        ),
    ));
    let gov_ok = !governance.is_empty() && governance.iter().all(|(_, rc)| *rc == 0);
    out.push((
        "Data Governance".into(),
        gov_ok,
        format!(
            "run while mounted: {}",
            governance
                .iter()
                .map(|(c, rc)| format!("warpdrive-ctl {c} (exit {rc})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    let survived = restart.is_some_and(|r| r.fetched_total() == 0.0 && r.images > 0.0);
    out.push((
        "Cache Survives Restart".into(),
        survived,
        restart.map_or("the restart run did not complete".into(), |r| {
            format!(
                "after unmount and mount: hit rate {}, {} fetched",
                pct(r.hit_rate()),
                gb(r.fetched_total())
            )
        }),
    ));
    let digests: Vec<&str> = phases.values().map(|p| p.batch_digest.as_str()).collect();
    let same = digests.len() >= 2 && digests.iter().all(|d| *d == digests[0] && !d.is_empty());
    out.push((
        "Same Shards, Same Order".into(),
        same,
        format!("batch digest of every run: {}", digests.join(", ")),
    ));
    out
}

fn read_governance(state: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(state.join("governance.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (cmd, rc) = l.rsplit_once(' ')?;
            Some((cmd.to_string(), rc.parse().ok()?))
        })
        .collect()
}

/// Runs the `report` subcommand.
pub fn run(a: &ReportArgs) -> Result<()> {
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

const COLORS: [&str; 3] = ["#d9534f", "#2b7bba", "#4aa564"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Images/s over a moving window of steps.
fn curve(p: &Phase, window: usize) -> Vec<(f64, f64)> {
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
fn line_chart(
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
fn bar_chart(
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

fn html(
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

fn rows_html(ordered: &[&Phase]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(33383.0), "33,383");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn passthrough_with_nothing_fetched_is_a_full_hit() {
        let mut p = Phase {
            passthrough_opens: 12.0,
            ..Phase::default()
        };
        assert_eq!(p.hit_rate(), Some(1.0));
        p.fetched.insert("a".into(), 5.0);
        assert_eq!(p.hit_rate(), None, "fetching is not a hit");
        p.hits = 3.0;
        p.misses = 1.0;
        assert_eq!(p.hit_rate(), Some(0.75));
    }
}
