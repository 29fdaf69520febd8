//! `warpdrive-ctl stats`: cache totals from the index, while the mount is live or not.
//!
//! The index (`index.db`, SQLite in WAL mode) is read read-only beside the daemon, so this
//! never waits for it and never changes anything. Lifetime hits and misses are the daemon's
//! counts, added to the index every 2 s and at exit; evictions and damaged blocks are
//! committed as they happen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use warpdrive_config::Config;

use crate::exit;
use crate::fmt::size;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Stats {
    cache_dir: String,
    format_version: i64,
    block_size: u64,
    objects: u64,
    blocks: u64,
    bytes: u64,
    /// `cache.max_size` in bytes (a share of the disk resolved against its size).
    capacity_bytes: u64,
    disk_bytes: u64,
    disk_free_bytes: u64,
    /// Cached bytes ÷ the disk's size.
    share_of_disk: f64,
    hit_blocks: i64,
    hit_bytes: i64,
    miss_blocks: i64,
    miss_bytes: i64,
    /// Hit bytes ÷ (hit + miss bytes), over the cache's lifetime.
    hit_ratio: Option<f64>,
    evicted_blocks: i64,
    corrupt_blocks: i64,
    /// Unix seconds of the least and most recently read cached objects.
    oldest_access: Option<i64>,
    newest_access: Option<i64>,
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
    let dir = &config.cache.dir;
    if !dir.join("index.db").exists() {
        eprintln!(
            "warpdrive-ctl: no cache index in {} yet (warpdrive-mount creates it when it first starts)",
            dir.display()
        );
        return Ok(exit::DEGRADED);
    }
    let s = warpdrive_cache::read_index_summary(dir)
        .with_context(|| format!("reading the cache index in {}", dir.display()))?;
    let (disk_bytes, disk_free_bytes) = warpdrive_cache::disk_usage(dir).unwrap_or((0, 0));
    let c = |name: &str| s.counters.get(name).copied().unwrap_or(0);
    let (hit, miss) = (c("hit_bytes"), c("miss_bytes"));
    let out = Stats {
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
