//! Which cached objects or backend keys a command's `PATH` names: a path under the mount
//! point (`/wd/datasets-cac/train`), a `wd://backend/prefix` URL, or `backend/prefix`.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use warpdrive_cache::IndexObject;
use warpdrive_config::Config;

/// A backend (all when `None`) and a key prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub backend: Option<String>,
    pub prefix: String,
}

impl Target {
    pub fn all() -> Target {
        Target {
            backend: None,
            prefix: String::new(),
        }
    }

    /// Resolves `path` against the config (its mount point and backend names).
    pub fn resolve(config: &Config, path: Option<&str>) -> Result<Target> {
        let Some(path) = path else {
            return Ok(Target::all());
        };
        let rel = relative(config, path)?;
        if rel.is_empty() {
            return Ok(Target::all());
        }
        let (backend, prefix) = rel.split_once('/').unwrap_or((&rel, ""));
        if !config.backends.iter().any(|b| b.name == backend) {
            let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
            bail!(
                "no backend named `{backend}` in the config (configured: {})",
                names.join(", ")
            );
        }
        if prefix.split('/').any(|c| c == "." || c == "..") {
            bail!("{path}: `.` and `..` are not allowed in a path here; give the path itself");
        }
        Ok(Target {
            backend: Some(backend.to_string()),
            prefix: prefix.to_string(),
        })
    }

    /// Whether `backend`/`key` is the object or lies in the directory this target names: a
    /// prefix `train` matches `train` and `train/…`, never `training`.
    pub fn matches_key(&self, backend: &str, key: &str) -> bool {
        self.backend.as_ref().is_none_or(|b| b == backend)
            && warpdrive_cache::in_dir(&self.prefix, key)
    }

    pub fn matches(&self, o: &IndexObject) -> bool {
        self.matches_key(&o.backend, &o.key)
    }

    /// The directory key the prefix names (without a trailing `/`).
    pub fn dir(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }
}

/// `path` (under the mount point, `wd://…` or relative) relative to the mount point:
/// `BACKEND/KEY`.
pub fn relative(config: &Config, path: &str) -> Result<String> {
    if let Some(r) = path.strip_prefix("wd://") {
        return Ok(r.to_string());
    }
    if !path.starts_with('/') {
        return Ok(path.to_string());
    }
    let mp = config.mount_point.display().to_string();
    match path.strip_prefix(&mp) {
        Some(r) if r.is_empty() || r.starts_with('/') => Ok(r.trim_start_matches('/').to_string()),
        _ => bail!(
            "{path} is not under the mount point {mp}; give a path below it, wd://BACKEND/PREFIX or BACKEND/PREFIX"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    fn t(b: &str, p: &str) -> Target {
        Target {
            backend: Some(b.into()),
            prefix: p.into(),
        }
    }

    #[test]
    fn a_prefix_is_a_directory_not_a_string_prefix() {
        assert!(t("s3", "train").matches_key("s3", "train/a.tar"));
        assert!(t("s3", "train").matches_key("s3", "train"));
        assert!(!t("s3", "train").matches_key("s3", "training/a.tar"));
        assert!(t("s3", "train/").matches_key("s3", "train/a.tar"));
        assert!(!t("s3", "train").matches_key("gcs", "train/a.tar"));
        assert!(Target::all().matches_key("gcs", "x"));
    }
}
