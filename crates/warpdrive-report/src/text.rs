//! The plain-text side of the report: number formatting, the phase tables and the
//! capability checklist, each line decided from the figures (a capability is checked only
//! when the run showed it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::figures::Phase;

/// `12,345`.
pub(crate) fn thousands(v: f64) -> String {
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

pub(crate) fn gb(v: f64) -> String {
    format!("{:.3} GB", v / 1e9)
}

pub(crate) fn pct(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0))
}

pub(crate) fn speedup(slow: f64, fast: f64) -> String {
    if slow > 0.0 && fast > 0.0 {
        format!("{:.1}x", slow / fast)
    } else {
        String::new()
    }
}

/// The rows of a table: (metric, one value per phase, the speedup of each later phase over the
/// first, where it means something).
pub(crate) fn rows(phases: &[&Phase]) -> Vec<(String, Vec<String>, Vec<String>)> {
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
    if phases.iter().any(|p| p.shared_read > 0.0) {
        row("Shared tier read", &|p| gb(p.shared_read), None);
    }
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
pub(crate) fn table(header: &[String], rows: &[Vec<String>]) -> String {
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

pub(crate) fn label(name: &str) -> &str {
    match name {
        "cold" => "Cold",
        "warm" => "Warm",
        "restart" => "After restart",
        "fleet" => "Node 2 (fleet)",
        other => other,
    }
}

/// The comparison table of `phases` (the first is the baseline).
pub(crate) fn comparison(phases: &[&Phase]) -> String {
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

/// (capability, shown, evidence).
pub(crate) fn checklist(
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
    // Every backend, and the shared tier when there is one, by managed identity.
    let managed = config.matches("managed_identity").count();
    let tier = usize::from(config.contains("shared_cache:"));
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
        no_secret && managed > 0 && managed == backends + tier && with_token == backends,
        format!(
            "{} of {backends} backends{} use managed identity and {with_token} hold a token from the instance-metadata endpoint ({} fetched since the daemon started); no key or secret in the config",
            managed - tier,
            if tier == 1 { " and the shared tier" } else { "" },
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
    let fleet = phases.get("fleet");
    let shared = match (cold, fleet) {
        (Some(c), Some(n)) => {
            n.images > 0.0
                && n.fetched_total() == 0.0
                && c.fetched_total() > 0.0
                && n.shared_read >= 0.9 * c.fetched_total()
        }
        _ => false,
    };
    out.push((
        "Fleet Shares One Fetch".into(),
        shared,
        match (cold, fleet) {
            (Some(c), Some(n)) => format!(
                "node 1's cold run fetched {} across the WAN ({:.1} images/sec); node 2, with an empty cache, fetched {} across the WAN and read {} from the shared tier ({:.1} images/sec)",
                gb(c.fetched_total()),
                c.images_per_sec,
                gb(n.fetched_total()),
                gb(n.shared_read),
                n.images_per_sec
            ),
            _ => "the second node's run did not complete".into(),
        },
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
}
