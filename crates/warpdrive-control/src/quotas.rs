//! Team quotas as kept on disk: `quotas.json` in the cache directory (0600, replaced
//! atomically), read by the daemon at start and changed through the API or, without a
//! daemon, by `warpdrive-ctl quota` directly.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use warpdrive_cache::{IndexObject, Quota, QuotaPath, QuotaUse};
use warpdrive_config::Config;

use crate::Target;
use crate::api::QuotaSet;

pub fn path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("quotas.json")
}

/// The quotas saved in `cache_dir` (none when the file does not exist).
pub fn load(cache_dir: &Path) -> Result<Vec<Quota>> {
    let p = path(cache_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let q: Vec<Quota> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid quota file; fix it or remove it and set the quotas again",
            p.display()
        )
    })?;
    warpdrive_cache::validate_quotas(&q).map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
    Ok(q)
}

/// Saves `quotas` (write to a temporary file, sync, rename: a crash leaves old or new).
pub fn save(cache_dir: &Path, quotas: &[Quota]) -> Result<()> {
    let p = path(cache_dir);
    let tmp = cache_dir.join(".quotas.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(quotas)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p).with_context(|| format!("replacing {}", p.display()))?;
    Ok(())
}

/// The quota `set` asks for, checked against the config.
pub fn resolve(config: &Config, team: &str, set: &QuotaSet) -> Result<Quota> {
    let max_bytes =
        warpdrive_config::parse_size(&set.max).map_err(|m| anyhow::anyhow!("max: {m}"))?;
    let mut paths = Vec::new();
    for p in &set.paths {
        let t = Target::resolve(config, Some(p))?;
        let Some(backend) = t.backend else {
            bail!(
                "{p}: a quota path must name a backend (BACKEND/PREFIX, wd://BACKEND/PREFIX or a path below the mount point's backend directories)"
            );
        };
        paths.push(QuotaPath {
            backend,
            prefix: t.prefix.trim_end_matches('/').to_string(),
        });
    }
    Ok(Quota {
        team: team.to_string(),
        paths,
        max_bytes,
    })
}

/// `quotas` with `q` added or replacing the team's quota, validated.
pub fn with(quotas: &[Quota], q: Quota) -> Result<Vec<Quota>> {
    let mut out: Vec<Quota> = quotas
        .iter()
        .filter(|o| o.team != q.team)
        .cloned()
        .collect();
    out.push(q);
    warpdrive_cache::validate_quotas(&out).map_err(|m| anyhow::anyhow!(m))?;
    Ok(out)
}

/// Each team's use computed from a list of cached objects (without a daemon).
pub fn use_of(quotas: &[Quota], objects: &[IndexObject]) -> Vec<QuotaUse> {
    quotas
        .iter()
        .map(|q| {
            let mine = objects
                .iter()
                .filter(|o| q.paths.iter().any(|p| p.covers(&o.backend, &o.key)));
            let (used_bytes, objects) = mine.fold((0, 0), |(b, n), o| (b + o.cached_bytes, n + 1));
            QuotaUse {
                team: q.team.clone(),
                paths: q.paths.clone(),
                max_bytes: q.max_bytes,
                used_bytes,
                objects,
            }
        })
        .collect()
}

/// The quotas in force, from their use figures.
pub fn of_use(u: &[QuotaUse]) -> Vec<Quota> {
    u.iter()
        .map(|u| Quota {
            team: u.team.clone(),
            paths: u.paths.clone(),
            max_bytes: u.max_bytes,
        })
        .collect()
}

/// Puts the quotas saved in `cache_dir` in force in `cache`; how many there are.
pub fn apply_saved(cache: &warpdrive_cache::Cache, cache_dir: &Path) -> Result<usize> {
    let q = load(cache_dir)?;
    let n = q.len();
    cache.set_quotas(q).map_err(|m| anyhow::anyhow!(m))?;
    Ok(n)
}
