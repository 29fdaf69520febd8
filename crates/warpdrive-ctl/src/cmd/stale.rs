//! `warpdrive-ctl stale`: cached objects not read for a while, oldest first, with what
//! evicting them would free (from the daemon when it runs, else from the index read-only).

use std::time::Duration;

use anyhow::Result;
use warpdrive_config::Config;
use warpdrive_control::Target;
use warpdrive_control::api::Stale;
use warpdrive_control::client::query;
use warpdrive_control::report;

use crate::fmt::{ago, size};
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 listed; 1 the index cannot be read; 2 bad config.")]
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

pub(crate) fn parse_age(s: &str) -> Result<Duration, String> {
    warpdrive_config::parse_duration(s)
}

pub fn run(config: &Config, a: &StaleArgs) -> Result<u8> {
    let target = Target::resolve(config, a.path.as_deref())?;
    let out: Stale = match api::daemon(config) {
        Some(c) => c.get(&format!(
            "/api/v1/stale{}",
            query(&[
                ("older_than", Some(format!("{}s", a.older_than.as_secs()))),
                ("path", a.path.clone()),
            ])
        ))?,
        None => {
            let dir = &config.cache.dir;
            let objects = api::local_objects(dir)?;
            report::stale(objects, &target, a.older_than)
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    println!("{:>12}  {:<22}  object", "cached", "last read");
    for o in &out.objects {
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
        out.objects.len(),
        humantime::format_duration(a.older_than),
        size(out.total_bytes as f64)
    );
    Ok(exit::OK)
}
