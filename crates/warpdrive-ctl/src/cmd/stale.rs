//! `warpdrive-ctl stale`: cached objects not read for a while, oldest first, with what
//! evicting them would free. Read from the index beside a live daemon.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use warpdrive_config::Config;

use crate::exit;
use crate::fmt::{ago, size};
use crate::target::Target;

#[derive(Debug, clap::Args)]
pub struct StaleArgs {
    /// Objects not read for at least this long (last reads are recorded to the minute).
    #[arg(long, default_value = "7d", value_parser = parse_age)]
    older_than: Duration,
    /// Only objects under this path (a path under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX).
    path: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_age(s: &str) -> Result<Duration, String> {
    warpdrive_config::parse_duration(s)
}

#[derive(Debug, Serialize)]
struct StaleObject {
    backend: String,
    key: String,
    cached_bytes: u64,
    last_access: i64,
}

#[derive(Debug, Serialize)]
struct Report {
    older_than_seconds: u64,
    objects: Vec<StaleObject>,
    /// Bytes evicting them all would free.
    total_bytes: u64,
}

pub fn run(config: &Config, a: &StaleArgs) -> Result<u8> {
    let target = Target::resolve(config, a.path.as_deref())?;
    let dir = &config.cache.dir;
    let objects = warpdrive_cache::read_index_objects(dir)
        .with_context(|| format!("reading the cache index in {}", dir.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let cutoff = now - a.older_than.as_secs() as i64;
    let mut stale: Vec<StaleObject> = objects
        .into_iter()
        .filter(|o| target.matches(o) && o.last_access <= cutoff)
        .map(|o| StaleObject {
            backend: o.backend,
            key: o.key,
            cached_bytes: o.cached_bytes,
            last_access: o.last_access,
        })
        .collect();
    stale.sort_by(|x, y| x.last_access.cmp(&y.last_access).then(x.key.cmp(&y.key)));
    let report = Report {
        older_than_seconds: a.older_than.as_secs(),
        total_bytes: stale.iter().map(|o| o.cached_bytes).sum(),
        objects: stale,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(exit::OK);
    }
    println!("{:>12}  {:<22}  object", "cached", "last read");
    for o in &report.objects {
        println!(
            "{:>12}  {:<22}  {}/{}",
            size(o.cached_bytes as f64),
            format!("{} ago", ago(o.last_access)),
            o.backend,
            o.key
        );
    }
    println!(
        "{} objects not read for {}; evicting them would free {}",
        report.objects.len(),
        humantime::format_duration(a.older_than),
        size(report.total_bytes as f64)
    );
    Ok(exit::OK)
}
