//! The figures of `stats`, `usage`, `stale`, `evict` and `verify`, computed the same way by
//! the daemon (over its live cache) and by `warpdrive-ctl` without a daemon (over the index,
//! read-only, or the cache it opens).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use warpdrive_cache::{Cache, IndexObject, IndexSummary, Quota};
use warpdrive_config::Config;

use crate::Target;
use crate::api::{
    CacheHealth, Damaged, EvictReport, ObjectChecked, ObjectRef, Stale, StaleObject, Stats, Usage,
    UsageBy, UsageRow, VerifyReport,
};

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Parses an age such as `7d` into a duration, with a sentence on failure.
pub fn parse_age(s: &str) -> Result<Duration> {
    warpdrive_config::parse_duration(s).map_err(|m| anyhow::anyhow!("older_than: {m}"))
}

/// Cache totals from the summary of its index.
pub fn stats(config: &Config, s: &IndexSummary) -> Stats {
    let dir = &config.cache.dir;
    let (disk_bytes, disk_free_bytes) = warpdrive_cache::disk_usage(dir).unwrap_or((0, 0));
    let c = |name: &str| s.counters.get(name).copied().unwrap_or(0);
    let (hit, miss) = (c("hit_bytes"), c("miss_bytes"));
    Stats {
        cache_dir: dir.display().to_string(),
        format_version: s.format_version,
        block_size: s.block_size,
        objects: s.objects,
        blocks: s.blocks,
        bytes: s.bytes,
        capacity_bytes: config.cache.max_size.bytes(disk_bytes),
        disk_bytes,
        disk_free_bytes,
        share_of_disk: if disk_bytes > 0 {
            s.bytes as f64 / disk_bytes as f64
        } else {
            0.0
        },
        hit_blocks: c("hit_blocks"),
        hit_bytes: hit,
        miss_blocks: c("miss_blocks"),
        miss_bytes: miss,
        hit_ratio: (hit + miss > 0).then(|| hit as f64 / (hit + miss) as f64),
        evicted_blocks: c("evicted_blocks"),
        corrupt_blocks: c("corrupt_blocks"),
        oldest_access: s.oldest_access,
        newest_access: s.newest_access,
    }
}

/// Disk, capacity and index integrity (SQLite `quick_check`, read-only) of the configured
/// cache, holding `used_bytes`.
pub fn cache_health(config: &Config, used_bytes: u64) -> CacheHealth {
    let dir = &config.cache.dir;
    let (disk_bytes, disk_free_bytes) = warpdrive_cache::disk_usage(dir).unwrap_or((0, 0));
    let check = warpdrive_cache::check_index(dir);
    CacheHealth {
        dir: dir.display().to_string(),
        format_version: check.as_ref().map_or(0, |v| *v),
        used_bytes,
        capacity_bytes: config.cache.max_size.bytes(disk_bytes),
        disk_bytes,
        disk_free_bytes,
        min_free_bytes: config.cache.min_free.bytes(disk_bytes),
        index_ok: check.is_ok(),
        index_error: check.err().map(|e| e.to_string()),
    }
}

/// Reads the summary of the index in `dir` without the cache's lock.
pub fn read_summary(dir: &Path) -> Result<IndexSummary> {
    warpdrive_cache::read_index_summary(dir)
        .with_context(|| format!("reading the cache index in {}", dir.display()))
}

/// The group of a key: its backend and the first `depth` directories below `prefix`.
pub fn group(backend: &str, key: &str, prefix: &str, depth: usize) -> String {
    let rest = &key[prefix.len().min(key.len())..];
    let dirs: Vec<&str> = rest.split('/').collect();
    let n = depth.min(dirs.len().saturating_sub(1));
    let mut g = format!("{backend}/{prefix}");
    for d in &dirs[..n] {
        g.push_str(d);
        g.push('/');
    }
    g
}

/// Cache bytes and objects per backend or per directory prefix, largest first.
/// Data of no team, in `usage --by team`.
pub const NO_TEAM: &str = "(no team)";

/// Cache bytes and objects per backend, directory prefix or team (every team listed, even
/// with nothing cached), largest first.
pub fn usage(
    objects: &[IndexObject],
    target: &Target,
    by: UsageBy,
    depth: usize,
    quotas: &[Quota],
) -> Usage {
    let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    if by == UsageBy::Team {
        for q in quotas {
            groups.insert(q.team.clone(), (0, 0));
        }
    }
    let prefix = match target.prefix.as_str() {
        "" => String::new(),
        p => format!("{}/", p.trim_end_matches('/')),
    };
    for o in objects.iter().filter(|o| target.matches(o)) {
        let name = match by {
            UsageBy::Backend => o.backend.clone(),
            UsageBy::Path => group(&o.backend, &o.key, &prefix, depth),
            UsageBy::Team => quotas
                .iter()
                .find(|q| q.paths.iter().any(|p| p.covers(&o.backend, &o.key)))
                .map_or_else(|| NO_TEAM.to_string(), |q| q.team.clone()),
        };
        let g = groups.entry(name).or_default();
        g.0 += o.cached_bytes;
        g.1 += 1;
    }
    let mut rows: Vec<UsageRow> = groups
        .into_iter()
        .map(|(name, (bytes, objects))| UsageRow {
            quota_bytes: (by == UsageBy::Team)
                .then(|| quotas.iter().find(|q| q.team == name).map(|q| q.max_bytes))
                .flatten(),
            name,
            bytes,
            objects,
        })
        .collect();
    rows.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.name.cmp(&y.name)));
    Usage {
        by,
        total_bytes: rows.iter().map(|r| r.bytes).sum(),
        total_objects: rows.iter().map(|r| r.objects).sum(),
        rows,
    }
}

/// Cached objects under `target` not read for `older_than`, oldest first.
pub fn stale(objects: Vec<IndexObject>, target: &Target, older_than: Duration) -> Stale {
    let cutoff = now_secs() - older_than.as_secs() as i64;
    let mut out: Vec<StaleObject> = objects
        .into_iter()
        .filter(|o| target.matches(o) && o.last_access <= cutoff)
        .map(|o| StaleObject {
            backend: o.backend,
            key: o.key,
            cached_bytes: o.cached_bytes,
            last_access: o.last_access,
        })
        .collect();
    out.sort_by(|x, y| x.last_access.cmp(&y.last_access).then(x.key.cmp(&y.key)));
    Stale {
        older_than_seconds: older_than.as_secs(),
        total_bytes: out.iter().map(|o| o.cached_bytes).sum(),
        objects: out,
    }
}

/// Evicts (or, on a dry run, counts) whole objects under `target` not read for `older_than`
/// (every one when `None`).
pub fn evict(
    cache: &Cache,
    target: &Target,
    older_than: Option<Duration>,
    dry_run: bool,
) -> Result<EvictReport> {
    let cutoff = older_than.map(|d| now_secs() - d.as_secs() as i64);
    let out = cache
        .evict_where(
            |b, k, last| target.matches_key(b, k) && cutoff.is_none_or(|c| last <= c),
            dry_run,
        )
        .context("evicting")?;
    Ok(EvictReport {
        dry_run,
        objects: out.evicted.objects,
        blocks: out.evicted.blocks,
        bytes: out.evicted.bytes,
        pinned_objects: out.pinned_objects,
        pinned_bytes: out.pinned_bytes,
    })
}

/// Hashes an object whole for a store checksum (the cache's side of the check).
struct Whole(warpdrive_store::checksum::Hasher);

impl warpdrive_cache::WholeCheck for Whole {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn matches(self: Box<Self>) -> Option<bool> {
        self.0.matches()
    }
}

/// Checks every cached block under `target`, dropping damaged ones, and every fully cached
/// object with a recorded store checksum whole against it, dropping those that differ.
pub fn verify(cache: &Cache, target: &Target, each: bool) -> Result<VerifyReport> {
    let whole = |text: &str, size: u64| {
        warpdrive_store::checksum::Checksum::parse(text)
            .map(|c| Box::new(Whole(c.hasher(size))) as Box<dyn warpdrive_cache::WholeCheck>)
    };
    let out = cache
        .verify_where(|b, k| target.matches_key(b, k), whole, each, |_| {})
        .context("verifying the cache")?;
    Ok(VerifyReport {
        objects: out.objects,
        blocks: out.blocks,
        bytes: out.bytes,
        damaged_blocks: out.damaged_blocks,
        damaged: out
            .damaged
            .into_iter()
            .map(|(backend, key, blocks)| Damaged {
                backend,
                key,
                blocks,
            })
            .collect(),
        store_checked: out.store_checked,
        self_checked: out.self_checked,
        store_mismatched: out
            .store_mismatched
            .into_iter()
            .map(|(backend, key)| ObjectRef { backend, key })
            .collect(),
        each: out
            .each
            .into_iter()
            .map(|(backend, key, check, store_checksum)| ObjectChecked {
                backend,
                key,
                check: check.as_str().to_string(),
                store_checksum,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn groups_by_directory_depth() {
        assert_eq!(group("s3", "d1/sub/b.bin", "", 1), "s3/d1/");
        assert_eq!(group("s3", "d1/sub/b.bin", "", 2), "s3/d1/sub/");
        assert_eq!(group("s3", "d1/sub/b.bin", "", 5), "s3/d1/sub/");
        assert_eq!(
            group("s3", "c.bin", "", 1),
            "s3/",
            "top-level files count at the top"
        );
        assert_eq!(group("s3", "d1/sub/b.bin", "d1/", 1), "s3/d1/sub/");
    }
}
