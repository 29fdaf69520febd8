//! Which cached objects a command's `PATH` argument names: a path under the mount point
//! (`/wd/datasets-cac/train`), a `wd://backend/prefix` URL, or `backend/prefix`.

use anyhow::{Result, bail};
use warpdrive_cache::IndexObject;
use warpdrive_config::Config;

/// A backend (all when `None`) and a key prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let rel = if let Some(r) = path.strip_prefix("wd://") {
            r.to_string()
        } else if path.starts_with('/') {
            let mp = config.mount_point.display().to_string();
            match path.strip_prefix(&mp) {
                Some(r) if r.is_empty() || r.starts_with('/') => {
                    r.trim_start_matches('/').to_string()
                }
                _ => bail!(
                    "{path} is not under the mount point {mp}; give a path below it, wd://BACKEND/PREFIX or BACKEND/PREFIX"
                ),
            }
        } else {
            path.to_string()
        };
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
        Ok(Target {
            backend: Some(backend.to_string()),
            prefix: prefix.to_string(),
        })
    }

    pub fn matches(&self, o: &IndexObject) -> bool {
        self.backend.as_ref().is_none_or(|b| *b == o.backend) && o.key.starts_with(&self.prefix)
    }
}
