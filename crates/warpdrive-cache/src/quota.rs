//! Per-team quotas over path prefixes.
//!
//! A team owns the cached objects under its prefixes (a prefix names a directory of one
//! backend: `train` covers `train/…`, not `training`). The cache keeps each team's cached
//! bytes and enforces two rules:
//!
//! * **Admission**: a block of a team's object is reserved against the team's quota; a team
//!   at its quota first evicts its own least recently used data, and if that cannot make
//!   room the block is not cached (the read is still served).
//! * **Protection**: when a team's block needs room under the cache's overall cap, data of
//!   other teams within their quotas is never chosen; only data of no team, of teams over
//!   their quota, and the requesting team's own data is. (The background pass that keeps
//!   the disk's free-space floor may take anything: never filling the disk comes first.)

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Whether `key` is directory `dir` itself or lies below it: `train` holds `train` and
/// `train/…`, never `training`; `""` holds everything.
pub fn in_dir(dir: &str, key: &str) -> bool {
    let d = dir.trim_end_matches('/');
    d.is_empty()
        || key
            .strip_prefix(d)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A directory of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaPath {
    pub backend: String,
    /// A key prefix naming a directory (`""` for the whole backend).
    pub prefix: String,
}

impl QuotaPath {
    pub fn covers(&self, backend: &str, key: &str) -> bool {
        self.backend == backend && in_dir(&self.prefix, key)
    }

    /// Whether one of the two directories contains the other.
    pub fn overlaps(&self, other: &QuotaPath) -> bool {
        let (a, b) = (
            self.prefix.trim_end_matches('/'),
            other.prefix.trim_end_matches('/'),
        );
        self.backend == other.backend
            && (self.covers(&self.backend, b) || other.covers(&other.backend, a))
    }
}

/// One team's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub team: String,
    pub paths: Vec<QuotaPath>,
    pub max_bytes: u64,
}

/// A team's quota and what it uses now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    pub team: String,
    pub paths: Vec<QuotaPath>,
    pub max_bytes: u64,
    pub used_bytes: u64,
    pub objects: u64,
}

/// The quotas in force and each team's bytes (cached plus reserved for writes in flight).
#[derive(Debug, Default)]
pub(crate) struct QuotaSet {
    pub quotas: Vec<Quota>,
    pub used: Vec<AtomicU64>,
}

impl QuotaSet {
    pub fn new(quotas: Vec<Quota>) -> QuotaSet {
        let used = quotas.iter().map(|_| AtomicU64::new(0)).collect();
        QuotaSet { quotas, used }
    }

    /// The team owning `backend`/`key`, if any (the first whose paths cover it).
    pub fn team_of(&self, backend: &str, key: &str) -> Option<usize> {
        self.quotas
            .iter()
            .position(|q| q.paths.iter().any(|p| p.covers(backend, key)))
    }

    pub fn add(&self, team: usize, bytes: u64) {
        self.used[team].fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sub(&self, team: usize, bytes: u64) {
        let _ = self.used[team].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
            Some(u.saturating_sub(bytes))
        });
    }

    /// Reserves `len` bytes for `team` if they fit its quota.
    pub fn try_reserve(&self, team: usize, len: u64) -> bool {
        let max = self.quotas[team].max_bytes;
        self.used[team]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u + len <= max).then_some(u + len)
            })
            .is_ok()
    }

    /// Whether `team` holds no more than its quota.
    pub fn within(&self, team: usize) -> bool {
        self.used[team].load(Ordering::Relaxed) <= self.quotas[team].max_bytes
    }
}

/// Checks a set of quotas: distinct team names, positive sizes, no directory in two teams.
pub fn validate(quotas: &[Quota]) -> Result<(), String> {
    for (i, q) in quotas.iter().enumerate() {
        if q.team.is_empty() || q.team.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!(
                "team name {:?} is empty or has `/` or control characters",
                q.team
            ));
        }
        if q.paths.is_empty() {
            return Err(format!(
                "team {} has no paths; give at least one --path",
                q.team
            ));
        }
        if q.max_bytes == 0 {
            return Err(format!(
                "team {}: the quota must be more than 0 bytes",
                q.team
            ));
        }
        for o in &quotas[..i] {
            if o.team == q.team {
                return Err(format!("team {} is defined twice", q.team));
            }
            for p in &q.paths {
                if let Some(op) = o.paths.iter().find(|op| op.overlaps(p)) {
                    return Err(format!(
                        "{}/{} (team {}) overlaps {}/{} (team {}); a directory can belong to one team only",
                        p.backend, p.prefix, q.team, op.backend, op.prefix, o.team
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(b: &str, x: &str) -> QuotaPath {
        QuotaPath {
            backend: b.into(),
            prefix: x.into(),
        }
    }

    #[test]
    fn paths_are_directories() {
        assert!(p("s3", "a").covers("s3", "a/x"));
        assert!(!p("s3", "a").covers("s3", "ab/x"));
        assert!(p("s3", "").covers("s3", "ab/x"));
        assert!(p("s3", "a/").covers("s3", "a/b/c"));
        assert!(p("s3", "a").overlaps(&p("s3", "a/b")));
        assert!(!p("s3", "a").overlaps(&p("s3", "ab")));
        assert!(!p("s3", "a").overlaps(&p("gcs", "a")));
        let q = |t: &str, x: &str| Quota {
            team: t.into(),
            paths: vec![p("s3", x)],
            max_bytes: 1,
        };
        assert!(validate(&[q("a", "x"), q("b", "y")]).is_ok());
        assert!(validate(&[q("a", "x"), q("b", "x/y")]).is_err());
        assert!(validate(&[q("a", "x"), q("a", "y")]).is_err());
    }
}
