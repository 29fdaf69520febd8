//! `warpdrive-ctl evict`: frees cached objects by age and path, while the mount is live
//! (through the daemon, whose readers simply fetch evicted data again) or not.

use std::time::Duration;

use anyhow::{Result, bail};
use warpdrive_config::Config;
use warpdrive_control::Target;
use warpdrive_control::api::{EvictReport, EvictRequest};
use warpdrive_control::report;

use crate::cmd::stale::parse_age;
use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 evicted (or, with --dry-run, counted); 1 bad input or the cache could not be changed; 2 bad config."
)]
pub struct EvictArgs {
    /// Only objects not read for at least this long (e.g. 7d, 12h).
    #[arg(long, value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Only objects under this path (a path under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX).
    path: Option<String>,
    /// Evict everything (required when neither PATH nor --older-than narrows the choice).
    #[arg(long)]
    all: bool,
    /// Show what would be freed without freeing it.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, a: &EvictArgs) -> Result<u8> {
    if a.path.is_none() && a.older_than.is_none() && !a.all {
        bail!(
            "evict needs a PATH, --older-than AGE, or --all to empty the whole cache (try --dry-run first)"
        );
    }
    let target = Target::resolve(config, a.path.as_deref())?;
    let out: EvictReport = match api::daemon(config) {
        Some(c) => c.post(
            "/api/v1/evict",
            &EvictRequest {
                older_than: a.older_than.map(|d| format!("{}s", d.as_secs())),
                path: a.path.clone(),
                dry_run: a.dry_run,
            },
        )?,
        None => {
            let cache = api::open_cache(config)?;
            report::evict(&cache, &target, a.older_than, a.dry_run)?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    let verb = if out.dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {} in {} objects ({} blocks)",
        size(out.bytes as f64),
        out.objects,
        out.blocks
    );
    if out.pinned_objects > 0 {
        println!(
            "kept {} objects ({}) that are open through passthrough; evict them again once closed",
            out.pinned_objects,
            size(out.pinned_bytes as f64)
        );
    }
    Ok(exit::OK)
}
