//! The figures of one demo run, as demo/run.sh left them in its state directory: per
//! training phase forge's summary (`PHASE.summary.json`) and the metrics that changed during
//! the phase (`PHASE.metrics.json`), the namespace under the mount, and the governance log.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// The training phases, in order (`fleet`: a second node, reading through the shared tier).
pub(crate) const PHASES: [&str; 4] = ["cold", "warm", "restart", "fleet"];

/// One training phase's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Phase {
    pub(crate) name: String,
    pub(crate) wall_ms: f64,
    pub(crate) images_per_sec: f64,
    pub(crate) data_ms: f64,
    pub(crate) compute_ms: f64,
    pub(crate) final_loss: f64,
    pub(crate) images: f64,
    pub(crate) bytes_read: f64,
    pub(crate) fuse_reads: f64,
    pub(crate) hits: f64,
    pub(crate) misses: f64,
    pub(crate) passthrough_opens: f64,
    pub(crate) keep_cache_opens: f64,
    pub(crate) evictions: f64,
    /// Backend name → bytes fetched.
    pub(crate) fetched: BTreeMap<String, f64>,
    /// Chunk bytes read from the shared tier.
    pub(crate) shared_read: f64,
    pub(crate) latency_rows: Vec<(String, f64)>,
    pub(crate) auth_refreshes: f64,
    pub(crate) batch_digest: String,
    pub(crate) step_ms: Vec<f64>,
    pub(crate) batch_size: f64,
    pub(crate) params: Value,
}

impl Phase {
    pub(crate) fn fetched_total(&self) -> f64 {
        self.fetched.values().sum()
    }

    /// Blocks served from the cache ÷ all blocks asked for. With passthrough the kernel reads
    /// the cache file itself and the daemon counts no hits; a run with passthrough opens, no
    /// misses and nothing fetched was served wholly from the cache.
    pub(crate) fn hit_rate(&self) -> Option<f64> {
        if self.hits + self.misses > 0.0 {
            Some(self.hits / (self.hits + self.misses))
        } else if self.passthrough_opens > 0.0 && self.fetched_total() == 0.0 {
            Some(1.0)
        } else {
            None
        }
    }

    pub(crate) fn to_json(&self) -> Value {
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
            "shared_tier_bytes": self.shared_read,
            "read_latency": self.latency_rows,
            "auth_refreshes": self.auth_refreshes,
            "batch_digest": self.batch_digest,
        })
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(0.0)
}

/// An array of `[name, number]` pairs (how `warpdrive-ctl metrics --json` writes operation
/// counts and histogram rows).
pub(crate) fn pairs(v: &Value) -> Vec<(String, f64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Loads one phase, if it ran.
pub(crate) fn load(state: &Path, name: &str) -> Result<Option<Phase>> {
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
        shared_read: f(&m, &["shared", "read_bytes"]).max(0.0),
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

/// Shards listed under each region's `train` directory.
pub(crate) fn namespace(mount_point: &Path) -> BTreeMap<String, usize> {
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

pub(crate) fn read_governance(state: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(state.join("governance.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (cmd, rc) = l.rsplit_once(' ')?;
            Some((cmd.to_string(), rc.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
