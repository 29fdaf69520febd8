//! `warpdrive-ctl status`: is the mount live, can each backend be reached, which config.
//!
//! Each backend is probed with one list call (one key) bounded by `--timeout`, all at once,
//! so the command takes at most one timeout however many backends are configured.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use warpdrive_config::Config;
use warpdrive_fs::mountinfo::{MountState, mount_state, wait_live};
use warpdrive_store::Backend;

use warpdrive_control::api::{CacheHealth, DaemonStatus};

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit codes: 0 mounted, every backend reachable and the index sound; 1 otherwise; 2 bad config.
With --wait: 0 once the mount serves (the status is printed as usual), 1 if it does not
within the time given. With --mount-only the backends are not probed and do not count.

Examples:
  warpdrive-ctl status                                 # one look
  warpdrive-ctl status --wait 30 && ...                # start training once the mount serves
  warpdrive-ctl status --wait 0 --mount-only --json    # a probe: no request to any store")]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for each backend.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Wait up to this long (seconds, or a duration such as `2m`) for the mount to serve;
    /// the exit code then says only whether it does (a readiness probe, or a job's first
    /// step).
    #[arg(long, value_name = "SECONDS", value_parser = parse_wait)]
    wait: Option<Duration>,
    /// Do not probe the backends (one listing each): the mount, the daemon and the cache
    /// only. For liveness and readiness probes, which run on every node every few seconds.
    #[arg(long)]
    mount_only: bool,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => warpdrive_config::parse_duration(s),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    warpdrive_config::parse_duration(s)
}

#[derive(Debug, Serialize)]
struct BackendStatus {
    name: String,
    store: String,
    prefix: String,
    auth: &'static str,
    reachable: bool,
    latency_ms: Option<f64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    config_file: String,
    mount_point: String,
    mount: &'static str,
    mounted: bool,
    /// Whether the backends were probed (not with `--mount-only`).
    backends_probed: bool,
    /// The daemon's own account (version, uptime, cache health), when its socket answers.
    daemon: Option<DaemonStatus>,
    /// Cache health: from the daemon, or read from the cache directory without one.
    cache: Option<CacheHealth>,
    backends: Vec<BackendStatus>,
    /// The shared tier's store (`shared_cache:`), probed as a backend is. Reads never need
    /// it, so an unreachable tier is shown but does not make the status degraded.
    shared_cache: Option<BackendStatus>,
    config: Config,
}

/// Cache health read from the directory when no daemon answers.
fn local_cache_health(config: &Config) -> Option<CacheHealth> {
    let dir = &config.cache.dir;
    if !dir.join("index.db").exists() {
        return None;
    }
    let used = warpdrive_cache::read_index_summary(dir).map_or(0, |s| s.bytes);
    Some(warpdrive_control::report::cache_health(config, used))
}

async fn probe(b: &warpdrive_config::BackendConfig, timeout: Duration) -> BackendStatus {
    let mut s = BackendStatus {
        name: b.name.clone(),
        store: b.kind.describe(),
        prefix: b.prefix.clone(),
        auth: b.auth.as_str(),
        reachable: false,
        latency_ms: None,
        error: None,
    };
    let backend = match Backend::build(b) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            s.error = Some(e.to_string());
            return s;
        }
    };
    let start = Instant::now();
    match backend.probe(timeout).await {
        Ok(()) => {
            s.reachable = true;
            s.latency_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
        }
        Err(e) => s.error = Some(e.to_string()),
    }
    s
}

pub fn run(config: &Config, config_path: &Path, args: &StatusArgs) -> Result<u8> {
    if let Some(wait) = args.wait {
        let state = wait_live(&config.mount_point, wait);
        if state != MountState::Live {
            eprintln!(
                "warpdrive-ctl: the mount at {} is not serving after {} ({}); is warpdrive-mount running with config {}?",
                config.mount_point.display(),
                humantime::format_duration(wait),
                state.as_str(),
                config_path.display()
            );
            return Ok(exit::DEGRADED);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let probed = !args.mount_only;
    let backends = if probed {
        rt.block_on(futures::future::join_all(
            config.backends.iter().map(|b| probe(b, args.timeout)),
        ))
    } else {
        Vec::new()
    };
    let shared_cache = config
        .shared_cache
        .as_ref()
        .filter(|_| probed)
        .map(|s| rt.block_on(probe(&s.store, args.timeout)));
    let state = mount_state(&config.mount_point);
    let daemon: Option<DaemonStatus> = match api::daemon(config) {
        Some(c) => match c.get("/api/v1/status") {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("warpdrive-ctl: the daemon's control socket answers, but: {e:#}");
                None
            }
        },
        None => None,
    };
    let cache = match &daemon {
        Some(d) => Some(d.cache.clone()),
        None => local_cache_health(config),
    };
    let status = Status {
        config_file: config_path.display().to_string(),
        mount_point: config.mount_point.display().to_string(),
        mount: state.as_str(),
        mounted: state == MountState::Live,
        backends_probed: probed,
        daemon,
        cache,
        backends,
        shared_cache,
        config: config.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    let healthy = status.mounted
        && status.backends.iter().all(|b| b.reachable)
        && status.cache.as_ref().is_none_or(|c| c.index_ok);
    Ok(if healthy || (args.wait.is_some() && status.mounted) {
        exit::OK
    } else {
        exit::DEGRADED
    })
}

fn print_text(s: &Status) {
    println!("mount       {}  {}", s.mount_point, s.mount);
    println!("config      {}", s.config_file);
    println!("metadata    ttl {}", s.config.metadata_ttl);
    match &s.daemon {
        Some(d) => {
            println!(
                "daemon      pid {}, version {} ({}), up {}, {} jobs running",
                d.pid,
                d.version,
                d.commit,
                humantime::format_duration(Duration::from_secs(d.uptime_seconds)),
                d.jobs_running
            );
            if let Some(k) = d.keeper_pid {
                match d.took_over_ms {
                    Some(ms) => println!(
                        "keeper      pid {k}; daemon #{} of this mount: took it over, serving {ms} ms after its start",
                        d.generation + 1
                    ),
                    None => println!("keeper      pid {k}; this daemon mounted it"),
                }
            }
        }
        None => println!(
            "daemon      not answering on {}",
            s.config.control.socket.display()
        ),
    }
    match &s.cache {
        Some(c) => {
            println!(
                "cache       {}: {} used of {} cap, {} free on disk; format {}, index {}",
                c.dir,
                size(c.used_bytes as f64),
                size(c.capacity_bytes as f64),
                size(c.disk_free_bytes as f64),
                c.format_version,
                match &c.index_error {
                    None => "ok".to_string(),
                    Some(e) => format!("DAMAGED: {e}"),
                }
            );
            if c.disk_free_bytes < c.min_free_bytes {
                println!(
                    "            NOT CACHING: the disk has less free than cache.min_free ({}); free disk space or lower cache.min_free",
                    size(c.min_free_bytes as f64)
                );
            }
        }
        None => println!(
            "cache       {} (no index yet)",
            s.config.cache.dir.display()
        ),
    }
    for q in s.daemon.iter().flat_map(|d| &d.quotas) {
        let state = if q.used_bytes > q.max_bytes {
            "OVER QUOTA"
        } else {
            "within quota"
        };
        println!(
            "quota       team {}: {} of {} ({state})",
            q.team,
            size(q.used_bytes as f64),
            size(q.max_bytes as f64)
        );
    }
    for p in s.daemon.iter().flat_map(|d| &d.plans) {
        println!(
            "plan        {} rank {} epoch {}: {} of {} entries reached, {} ahead, {} late, {} failed; lead {} ({:.1} s); {}",
            p.job,
            p.rank,
            p.epoch,
            p.reached,
            p.entries,
            p.ahead,
            p.late,
            p.failed,
            size(p.lead_bytes as f64),
            p.lead_seconds,
            p.state
        );
    }
    for w in s.daemon.iter().flat_map(|d| &d.writes) {
        println!(
            "writing     {}/{}: {} so far (committed at its close)",
            w.backend,
            w.key,
            size(w.bytes as f64)
        );
    }
    if let (Some(t), Some(c)) = (&s.shared_cache, &s.config.shared_cache) {
        let store = format!("{}/{}", t.store, t.prefix);
        println!(
            "shared      {} {}: {}, chunks of {}, leases of {}, for {}",
            store.trim_end_matches('/'),
            match (&t.error, t.latency_ms) {
                (None, Some(l)) => format!("reachable ({l:.1} ms)"),
                (Some(e), _) => format!("UNREACHABLE ({e}); reads go to the origins"),
                _ => "unknown".into(),
            },
            match c.mode {
                warpdrive_config::SharedMode::ReadWrite => "read_write",
                warpdrive_config::SharedMode::ReadOnly => "read_only",
            },
            size(c.chunk_size as f64),
            humantime::format_duration(c.lease_ttl),
            c.backends.join(", ")
        );
    }
    println!();
    let w = s
        .backends
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(4)
        .max(7);
    println!(
        "{:<w$}  {:<10}  {:<9}  {:<17}  STORE",
        "BACKEND", "STATE", "LATENCY", "AUTH"
    );
    if !s.backends_probed {
        println!(
            "backends    not probed (--mount-only): {}",
            s.config
                .backends
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for b in &s.backends {
        let state = if b.reachable { "reachable" } else { "ERROR" };
        let token = s
            .daemon
            .as_ref()
            .and_then(|d| d.backends.iter().find(|x| x.name == b.name))
            .map(|x| &x.auth);
        let lat = b
            .latency_ms
            .map(|l| format!("{l:.1} ms"))
            .unwrap_or_else(|| "-".into());
        let store = format!("{}/{}", b.store, b.prefix);
        println!(
            "{:<w$}  {:<10}  {:<9}  {:<17}  {}",
            b.name,
            state,
            lat,
            b.auth,
            store.trim_end_matches('/')
        );
        if let Some(e) = &b.error {
            println!("{:<w$}  └ {e}", "");
        }
        if let Some(t) = token {
            let expiry = match t.expires_in_seconds {
                Some(s) if s >= 0 => format!(
                    "token valid {}",
                    humantime::format_duration(Duration::from_secs(s as u64))
                ),
                Some(_) => "token EXPIRED".into(),
                None => "no token".into(),
            };
            println!(
                "{:<w$}  └ {}; {expiry}; {} refreshes, {} failures{}",
                "",
                t.identity,
                t.refreshes,
                t.failures,
                t.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; last error: {e}"))
            );
        }
    }
}
