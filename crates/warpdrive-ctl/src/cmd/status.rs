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
use warpdrive_fs::mountinfo::{MountState, mount_state};
use warpdrive_store::Backend;

use crate::exit;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for each backend.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
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
    backends: Vec<BackendStatus>,
    config: Config,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let backends = rt.block_on(futures::future::join_all(
        config.backends.iter().map(|b| probe(b, args.timeout)),
    ));
    let state = mount_state(&config.mount_point);
    let status = Status {
        config_file: config_path.display().to_string(),
        mount_point: config.mount_point.display().to_string(),
        mount: state.as_str(),
        mounted: state == MountState::Live,
        backends,
        config: config.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    let healthy = status.mounted && status.backends.iter().all(|b| b.reachable);
    Ok(if healthy { exit::OK } else { exit::DEGRADED })
}

fn print_text(s: &Status) {
    println!("mount       {}  {}", s.mount_point, s.mount);
    println!("config      {}", s.config_file);
    println!("metadata    ttl {}", s.config.metadata_ttl);
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
    for b in &s.backends {
        let state = if b.reachable { "reachable" } else { "ERROR" };
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
    }
}
