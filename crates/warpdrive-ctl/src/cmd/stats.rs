//! `warpdrive-ctl stats`: cache totals from the index, while the mount is live or not.
//!
//! With a running daemon the figures come from its control API (after it commits its
//! pending index changes); otherwise the index (`index.db`, SQLite in WAL mode) is read
//! read-only. Lifetime hits and misses are the daemon's counts, added to the index every
//! 2 s and at exit; evictions and damaged blocks are committed as they happen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use warpdrive_config::Config;
use warpdrive_control::api::Stats;
use warpdrive_control::report;

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 shown; 1 no cache index yet, or it cannot be read; 2 bad config."
)]
pub struct StatsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn when(t: Option<i64>) -> String {
    let Some(t) = t else { return "-".into() };
    let at = UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let ago = SystemTime::now()
        .duration_since(at)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(at),
        humantime::format_duration(ago)
    )
}

pub fn run(config: &Config, a: &StatsArgs) -> Result<u8> {
    let out: Stats = match api::daemon(config) {
        Some(c) => c.get("/api/v1/stats")?,
        None => {
            let dir = &config.cache.dir;
            if !dir.join("index.db").exists() {
                eprintln!(
                    "warpdrive-ctl: no cache index in {} yet (warpdrive-mount creates it when it first starts)",
                    dir.display()
                );
                return Ok(exit::DEGRADED);
            }
            report::stats(config, &report::read_summary(dir)?)
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    println!(
        "cache      {} (format {}, {} blocks)",
        out.cache_dir,
        out.format_version,
        size(out.block_size as f64)
    );
    println!("objects    {}", out.objects);
    println!("blocks     {}", out.blocks);
    println!(
        "bytes      {} of {} cap; {:.2}% of the disk ({} free of {})",
        size(out.bytes as f64),
        size(out.capacity_bytes as f64),
        out.share_of_disk * 100.0,
        size(out.disk_free_bytes as f64),
        size(out.disk_bytes as f64)
    );
    println!(
        "hits       {} ({} blocks)",
        size(out.hit_bytes as f64),
        out.hit_blocks
    );
    println!(
        "misses     {} ({} blocks)",
        size(out.miss_bytes as f64),
        out.miss_blocks
    );
    println!(
        "hit ratio  {}",
        out.hit_ratio
            .map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
    );
    println!("evicted    {} blocks", out.evicted_blocks);
    println!("corrupt    {} blocks", out.corrupt_blocks);
    println!("oldest     {}", when(out.oldest_access));
    println!("newest     {}", when(out.newest_access));
    Ok(exit::OK)
}
