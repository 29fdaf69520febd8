//! `warpdrive-ctl usage`: cache bytes and object counts per backend or per directory prefix,
//! largest first, read from the index beside a live daemon.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use warpdrive_config::Config;

use crate::exit;
use crate::fmt::size;
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// One row per backend.
    Backend,
    /// One row per directory prefix, `--depth` levels below PATH.
    Path,
}

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Group by backend or by directory prefix.
    #[arg(long, value_enum, default_value = "backend")]
    by: By,
    /// With `--by path`: how many directory levels below PATH to group by.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Only objects under this path (a path under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX).
    path: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, PartialEq)]
struct Row {
    name: String,
    bytes: u64,
    objects: u64,
}

/// The group of a key: its backend and the first `depth` directories below `prefix`.
fn group(backend: &str, key: &str, prefix: &str, depth: usize) -> String {
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

pub fn run(config: &Config, a: &UsageArgs) -> Result<u8> {
    let target = Target::resolve(config, a.path.as_deref())?;
    let dir = &config.cache.dir;
    let objects = warpdrive_cache::read_index_objects(dir)
        .with_context(|| format!("reading the cache index in {}", dir.display()))?;
    let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for o in objects.iter().filter(|o| target.matches(o)) {
        let name = match a.by {
            By::Backend => o.backend.clone(),
            By::Path => group(&o.backend, &o.key, &target.prefix, a.depth),
        };
        let g = groups.entry(name).or_default();
        g.0 += o.cached_bytes;
        g.1 += 1;
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(name, (bytes, objects))| Row {
            name,
            bytes,
            objects,
        })
        .collect();
    rows.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.name.cmp(&y.name)));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(exit::OK);
    }
    println!("{:>12} {:>9}  where", "bytes", "objects");
    for r in &rows {
        println!("{:>12} {:>9}  {}", size(r.bytes as f64), r.objects, r.name);
    }
    let (b, n) = rows
        .iter()
        .fold((0, 0), |(b, n), r| (b + r.bytes, n + r.objects));
    println!("{:>12} {:>9}  total", size(b as f64), n);
    Ok(exit::OK)
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
