//! `warpdrive-ctl`: governance of a WarpDrive installation. Glue only: each subcommand is one
//! file under `cmd/`.

mod api;
mod cmd;
mod fmt;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warpdrive_config::{Config, DEFAULT_CONFIG_PATH};

/// Exit codes shared by every subcommand, documented in `--help`.
pub(crate) mod exit {
    pub const OK: u8 = 0;
    pub const DEGRADED: u8 = 1;
    pub const BAD_CONFIG: u8 = 2;
}

const AFTER_HELP: &str = "\
Commands that read or change the cache go through the running daemon's control socket
(control.socket, `control.sock` in the cache directory by default) when it answers, and
work on the cache directory directly when no daemon runs.

Exit codes:
  0    success; for `status`: mounted and every backend reachable
  1    for `status`: not mounted, stale, or a backend unreachable; for `metrics`: the
       daemon's metrics endpoint cannot be reached; for `stats`: no cache index yet;
       for `verify`: damaged blocks were found (and dropped); for `warm`, `copy` and
       `move`: some objects failed; otherwise a failure
  2    the config is invalid or unreadable
  130  `warm`, `copy` or `move` was interrupted with Ctrl-C (work done so far is kept; a
       re-run goes on from there)";

/// Inspect and manage WarpDrive: mounts, backends, and (with the block cache) cached data.
#[derive(Debug, Parser)]
#[command(name = "warpdrive-ctl", version, after_help = AFTER_HELP)]
struct Args {
    /// The config file the daemon runs with.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG_PATH, env = "WARPDRIVE_CONFIG")]
    config: PathBuf,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Whether the mount is live, each backend's reachability, and the config in use.
    Status(cmd::status::StatusArgs),
    /// The daemon's metrics as a dashboard: FUSE operations, read latency, cache, readahead,
    /// backend I/O and auth (`--watch` to follow, `--json` for scripts, `--snapshot` and
    /// `--since` for figures of one run only).
    Metrics(cmd::metrics::MetricsArgs),
    /// Cache totals from the index: objects, blocks, bytes, capacity and share of the disk,
    /// lifetime hits, misses, evictions and hit ratio, oldest and newest entry. Works while
    /// the mount is live.
    Stats(cmd::stats::StatsArgs),
    /// Cache bytes and objects per backend, per directory prefix (`--by path --depth N`) or
    /// per team with its quota (`--by team`), largest first.
    Usage(cmd::usage::UsageArgs),
    /// Cached objects not read for `--older-than` (7 days by default), oldest first, and the
    /// bytes evicting them would free.
    Stale(cmd::stale::StaleArgs),
    /// Frees cached objects not read for `--older-than`, under PATH, or all (`--all`);
    /// `--dry-run` shows what would go. Works while mounted: readers just fetch again.
    Evict(cmd::evict::EvictArgs),
    /// Checks every cached block's CRC32C; damaged blocks are dropped and listed.
    Verify(cmd::verify::VerifyArgs),
    /// Fetches files or directories into the cache through the running daemon, with
    /// progress; Ctrl-C stops and keeps what was fetched, a re-run fetches only the rest.
    Warm(cmd::warm::WarmArgs),
    /// Copies an object or a whole prefix to another backend or place, streaming, each copy
    /// verified by a read-back SHA-256; resumable (a re-run skips what was copied).
    Copy(cmd::copy::CopyArgs),
    /// As `copy`, then deletes each source object once its copy is verified.
    Move(cmd::copy::CopyArgs),
    /// Per-team cache quotas over path prefixes: `set TEAM --path P... --max SIZE`, `list`,
    /// `rm TEAM`. Enforced by the daemon; kept across restarts.
    Quota(cmd::quota::QuotaArgs),
    /// The shared tier (`shared_cache:`): `status` (chunks and bytes per backend, leases),
    /// `warm PATH` (fill it from the origin once, for the whole fleet), `gc --older-than D`.
    Fleet(cmd::fleet::FleetArgs),
    /// Epoch plans in the running daemon: `submit FILE --job J --rank R --epoch E` (the
    /// order a reader will read in, fetched ahead of it), `status`, `clear --job J`.
    Plan(cmd::plan::PlanArgs),
    /// Hands the mount to a new daemon (after an upgrade, or for config changes) without
    /// unmounting: open files stay open and readers see no error.
    Restart(cmd::restart::RestartArgs),
    /// Serves the control API on TCP behind a bearer token, for automation (forwarding to
    /// the daemon when one runs, else working on the cache directly).
    Serve(cmd::serve::ServeArgs),
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly when the pipe closes, as for other commands.
    // SAFETY: called before any other thread exists; it only sets a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    warpdrive_cli::generate_docs_if_asked::<Args>();
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warpdrive-ctl: {e}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let r = match args.cmd {
        Cmd::Status(a) => cmd::status::run(&config, &args.config, &a),
        Cmd::Metrics(a) => cmd::metrics::run(&config, &a),
        Cmd::Stats(a) => cmd::stats::run(&config, &a),
        Cmd::Usage(a) => cmd::usage::run(&config, &a),
        Cmd::Stale(a) => cmd::stale::run(&config, &a),
        Cmd::Evict(a) => cmd::evict::run(&config, &a),
        Cmd::Verify(a) => cmd::verify::run(&config, &a),
        Cmd::Warm(a) => cmd::warm::run(&config, &a),
        Cmd::Serve(a) => cmd::serve::run(&config, &a),
        Cmd::Quota(a) => cmd::quota::run(&config, &a),
        Cmd::Fleet(a) => cmd::fleet::run(&config, &a),
        Cmd::Plan(a) => cmd::plan::run(&config, &a),
        Cmd::Restart(a) => cmd::restart::run(&config, &a),
        Cmd::Copy(a) => cmd::copy::run(&config, &a, false),
        Cmd::Move(a) => cmd::copy::run(&config, &a, true),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("warpdrive-ctl: {e:#}");
            ExitCode::from(exit::DEGRADED)
        }
    }
}
