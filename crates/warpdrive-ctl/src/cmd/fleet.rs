//! `warpdrive-ctl fleet`: the shared tier (`shared_cache:`) itself, reached with the config's
//! store and identity, with or without a daemon: `status`, `warm PATH`, `gc`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use warpdrive_config::Config;
use warpdrive_control::Target;
use warpdrive_fleet::SharedTier;
use warpdrive_fleet::ops::{self, Warmed};
use warpdrive_metrics::SharedMetrics;
use warpdrive_store::Backend;

use crate::cmd::stale::parse_age;
use crate::exit;
use crate::fmt::{count, size};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The shared tier is the `shared_cache:` block of the config: a chunk cache every node shares,
in an object store near the cluster. These commands talk to that store directly, with the
config's identity for it; no daemon is needed.

Exit codes: 0 done; 1 the tier could not be reached, or some chunks failed (`warm`, `gc`: a
re-run goes on from there); 2 bad config, or no `shared_cache:` in it.")]
pub struct FleetArgs {
    #[command(subcommand)]
    cmd: FleetCmd,
}

#[derive(Debug, Subcommand)]
enum FleetCmd {
    /// Whether the tier answers; its chunks and bytes per backend; leases outstanding.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fills the tier with every chunk of the objects under PATH from their origin, once,
    /// without filling any local cache: one job warms the tier, and every node then reads
    /// the data from it. Chunks already in the tier are skipped, so a stopped warm resumes.
    Warm {
        /// A path under the mount point, wd://BACKEND/PREFIX or BACKEND/PREFIX (an object or
        /// a directory).
        path: String,
        /// Chunks fetched and written at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deletes chunks not written for --older-than, and expired leases. In production a
    /// bucket lifecycle rule on the tier's prefix does the same (doc/CONFIGURATION.md).
    Gc {
        /// Chunks written at least this long ago go (e.g. 7d).
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
        /// Only count what would go.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, a: &FleetArgs) -> Result<u8> {
    let Some(shared) = &config.shared_cache else {
        eprintln!(
            "warpdrive-ctl: the config has no `shared_cache:` block; add one to use a shared tier (doc/CONFIGURATION.md)"
        );
        return Ok(exit::BAD_CONFIG);
    };
    let tier = SharedTier::new(shared, &config.backends, SharedMetrics::detached())
        .context("building the shared tier's client")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a runtime")?;
    match &a.cmd {
        FleetCmd::Status { json } => {
            let s = match rt.block_on(ops::status(&tier)) {
                Ok(s) => s,
                Err(e) => {
                    if *json {
                        println!(
                            "{}",
                            serde_json::json!({ "store": tier.describe(), "reachable": false, "error": e.to_string() })
                        );
                    } else {
                        println!("shared tier {}: unreachable: {e}", tier.describe());
                    }
                    return Ok(exit::DEGRADED);
                }
            };
            if *json {
                let mut v = serde_json::to_value(&s)?;
                v["reachable"] = true.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(exit::OK);
            }
            println!("shared tier {}: reachable", s.store);
            println!(
                "mode {}, chunks of {}, leases of {} s",
                s.mode,
                size(s.chunk_size as f64),
                s.lease_ttl_seconds
            );
            println!("{:<24} {:>10} {:>12}", "backend", "chunks", "bytes");
            for h in &s.backends {
                println!(
                    "{:<24} {:>10} {:>12}",
                    h.backend,
                    count(h.chunks as f64),
                    size(h.bytes as f64)
                );
            }
            if s.other.chunks > 0 {
                println!(
                    "{:<24} {:>10} {:>12}",
                    "(other sources)",
                    count(s.other.chunks as f64),
                    size(s.other.bytes as f64)
                );
            }
            println!(
                "leases: {} held, {} expired (removed by `fleet gc`)",
                s.leases_held, s.leases_expired
            );
            Ok(exit::OK)
        }
        FleetCmd::Warm {
            path,
            parallel,
            json,
        } => {
            let target = Target::resolve(config, Some(path))?;
            let Some(name) = target.backend else {
                bail!("{path}: name a backend and a path in it (BACKEND/PREFIX)");
            };
            if !shared.backends.contains(&name) {
                bail!(
                    "backend `{name}` does not use the shared tier (shared_cache.backends: {})",
                    shared.backends.join(", ")
                );
            }
            let b = config
                .backend(&name)
                .context("the target's backend is not in the config")?;
            let origin = Backend::build(b).context("building the origin's client")?;
            let progress = Arc::new(Warmed::default());
            let t0 = Instant::now();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ticker = {
                let (p, done) = (progress.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        if t0.elapsed() >= Duration::from_secs(1)
                            && t0.elapsed().as_millis() % 2000 < 200
                        {
                            eprintln!(
                                "fleet warm: {} of {} chunks ({} written, {} already there, {} failed)",
                                p.written.load(Ordering::Relaxed)
                                    + p.present.load(Ordering::Relaxed)
                                    + p.failed.load(Ordering::Relaxed),
                                p.chunks.load(Ordering::Relaxed),
                                p.written.load(Ordering::Relaxed),
                                p.present.load(Ordering::Relaxed),
                                p.failed.load(Ordering::Relaxed)
                            );
                        }
                    }
                })
            };
            let r = rt.block_on(ops::warm(
                &tier,
                &name,
                &origin,
                &target.prefix,
                *parallel,
                &progress,
                &std::sync::atomic::AtomicBool::new(false),
            ));
            done.store(true, Ordering::Relaxed);
            let _ = ticker.join();
            r.context("listing the objects to warm")?;
            let failed = progress.failed.load(Ordering::Relaxed);
            if let Some(e) = progress.first_error.lock().as_deref() {
                eprintln!("warpdrive-ctl: fleet warm: {failed} chunks failed; the first: {e}");
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&*progress)?);
            } else {
                println!(
                    "fleet warm {path}: {} objects, {} chunks: {} written ({}), {} already there, {} failed, in {:.1} s",
                    progress.objects.load(Ordering::Relaxed),
                    progress.chunks.load(Ordering::Relaxed),
                    progress.written.load(Ordering::Relaxed),
                    size(progress.written_bytes.load(Ordering::Relaxed) as f64),
                    progress.present.load(Ordering::Relaxed),
                    failed,
                    t0.elapsed().as_secs_f64()
                );
            }
            Ok(if failed > 0 { exit::DEGRADED } else { exit::OK })
        }
        FleetCmd::Gc {
            older_than,
            dry_run,
            json,
        } => {
            let g = rt
                .block_on(ops::gc(&tier, *older_than, *dry_run))
                .context("listing the shared tier")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&g)?);
            } else {
                println!(
                    "fleet gc: {} {} chunks and expired leases ({}); kept {} ({}){}",
                    if *dry_run { "would delete" } else { "deleted" },
                    g.deleted,
                    size(g.deleted_bytes as f64),
                    g.kept,
                    size(g.kept_bytes as f64),
                    if g.failed > 0 {
                        format!("; {} deletes failed (run again)", g.failed)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(if g.failed > 0 {
                exit::DEGRADED
            } else {
                exit::OK
            })
        }
    }
}
