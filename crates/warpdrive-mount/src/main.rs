//! `warpdrive-mount`: the daemon. Glue only: parse flags, load the config, then either keep
//! the mount (`keeper`: mount, start a daemon on it, replace it when it stops, unmount at
//! the end) or, started by the keeper with its descriptor, serve it (`serve`).

mod daemon;
mod fuse;
mod http;
mod keeper;
mod mountpoint;
mod ready;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use warpdrive_config::{Config, DEFAULT_CONFIG_PATH};

/// A problem with the config found only when the daemon starts (a port in use, a key or
/// token file others can read, a backend setting the client refuses): reported like every
/// other config error, in one sentence that names the field, with exit code 2.
#[derive(Debug)]
pub(crate) struct ConfigProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigProblem {}

/// Exit codes, documented in `--help`.
pub(crate) mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const BAD_CONFIG: u8 = 2;
    /// A daemon handed the mount over; its keeper starts the next (internal).
    pub const HANDED_OVER: u8 = 75;
}

const AFTER_HELP: &str = "\
Examples:
  warpdrive-mount --config /etc/warpdrive/config.yaml        # foreground, logs on stderr
  warpdrive-mount --daemon --log-file /var/log/warpdrive.log  # detach once mounted
  warpdrive-mount --check-config                              # validate and print, no mount
  warpdrive-mount --ready-file /run/warpdrive.ready           # the file appears once serving
  RUST_LOG=warpdrive_fs=debug warpdrive-mount ...             # more detail

Readiness: under systemd (Type=notify) the daemon sends READY=1 once the mount answers;
--ready-file does the same with a file; `warpdrive-ctl status --wait 30` waits for it.

Stop with Ctrl-C, SIGTERM (kill PID) or `umount MOUNT_POINT`; the mount is removed cleanly.
The process started owns the mount and runs the daemon that serves it as its child: a
daemon that crashes or is killed is replaced without unmounting, and
`warpdrive-ctl restart` (or SIGHUP to PID) hands the mount to a new daemon, from the binary
now installed, without a failed call. A stale mount left by a killed process is cleared at
start.

Exit codes:
  0  success (for --daemon: the mount is live)
  1  mounting or serving failed (mount point busy, FUSE unavailable, ...)
  2  the config is invalid or unreadable; the message names the field to fix";

/// Mounts object stores (Azure Blob, S3, GCS, local directories) as one directory tree: one
/// directory per configured backend under the mount point, read-only except where a
/// backend's config makes prefixes writable.
#[derive(Debug, Parser)]
#[command(name = "warpdrive-mount", version, after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The config file (YAML); see doc/CONFIGURATION.md.
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "WARPDRIVE_CONFIG")]
    pub config: PathBuf,

    /// Validate the config, print it resolved (defaults filled in), and exit without mounting.
    #[arg(long)]
    pub check_config: bool,

    /// Detach into the background once the mount is live; logs go to --log-file.
    #[arg(long)]
    pub daemon: bool,

    /// Where a detached daemon writes its log.
    #[arg(long, default_value = "/var/log/warpdrive-mount.log")]
    pub log_file: PathBuf,

    /// Write the daemon's pid to this file once the mount serves (removed at stop), for
    /// supervisors without systemd's notify socket. Under systemd (`Type=notify`) the daemon
    /// reports `READY=1` to `$NOTIFY_SOCKET` on its own.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Internal: set on the detached child process.
    #[arg(long, hide = true)]
    pub daemon_child: bool,

    /// Internal: the mount's /dev/fuse descriptor, for a daemon its keeper starts.
    #[arg(long, hide = true)]
    pub worker_fd: Option<i32>,

    /// Internal: which daemon of the mount this is (0 mounted it).
    #[arg(long, hide = true, default_value_t = 0)]
    pub generation: u64,

    /// Internal: the keeper's pid.
    #[arg(long, hide = true, default_value_t = 0)]
    pub keeper_pid: u32,

    /// Internal: where a daemon tells its keeper that it serves (one byte).
    #[arg(long, hide = true)]
    pub serving_fd: Option<i32>,

    /// Internal: the config a successor daemon runs (the mount's; see `keeper`).
    #[arg(long, hide = true)]
    pub config_snapshot: Option<PathBuf>,
}

/// Info from our crates; fuser's own unmount chatter only when it is an error.
/// `object_store` logs every retry at info; they are counted in the metrics instead, so a
/// throttling storm does not flood the log.
/// The TLS verifier logs each refused certificate at ERROR, once per attempt; the store layer
/// says why, once per request, in words that say how to fix it.
const DEFAULT_LOG_FILTER: &str =
    "info,fuser=warn,fuser::mnt=error,object_store=warn,rustls_platform_verifier=off";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    // Upload parts (16 MiB) are mapped and unmapped on their own: glibc otherwise raises its
    // mapping threshold after the first such free, and the freed parts of files written
    // through the mount then stay in the heap. Blocks (1 MiB) stay below the threshold and
    // come from the heap, as they did. (The daemon's peak RSS with eight writers of 128 MiB:
    // 566 MiB without this, 298 MiB with it, for an upload budget of 256 MiB.)
    // SAFETY: called before any other thread exists; mallopt only sets an allocator option.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    warpdrive_cli::generate_docs_if_asked::<Args>();
    let args = Args::parse();
    if args.worker_fd.is_some() {
        // A SIGHUP before the daemon listens for it must not end it (its default action).
        // SAFETY: called before any other thread exists; it only sets a signal disposition.
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
        }
    }
    let config = match Config::load(args.config_snapshot.as_ref().unwrap_or(&args.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warpdrive-mount: {e}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    if args.check_config {
        return check_config(&config, &args);
    }
    if args.daemon && !args.daemon_child {
        return ExitCode::from(daemon::detach(&args, &config));
    }
    init_logging();
    let Some(fd) = args.worker_fd else {
        let readiness = match ready::Readiness::new(args.ready_file.clone()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warpdrive-mount: {e:#}");
                return ExitCode::from(exit::FAILED);
            }
        };
        return ExitCode::from(keeper::run(&args, &config, readiness));
    };
    // SAFETY: the keeper passed this descriptor, open and ours alone in this process.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let handover = serve::Handover {
        fd,
        generation: args.generation,
        keeper_pid: args.keeper_pid,
        config_path: args.config.clone(),
        // SAFETY: as above; the keeper passed this pipe's write end for us alone.
        serving: args
            .serving_fd
            .map(|fd| unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
    };
    match serve::run(config, handover) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => match e.downcast_ref::<ConfigProblem>() {
            Some(p) => {
                eprintln!(
                    "warpdrive-mount: config file {}: {p}",
                    args.config.display()
                );
                ExitCode::from(exit::BAD_CONFIG)
            }
            None => {
                eprintln!("warpdrive-mount: {e:#}");
                ExitCode::from(exit::FAILED)
            }
        },
    }
}

/// This binary's path, to re-execute it (`--daemon`, the keeper's daemons); `None` after
/// saying why it cannot be found.
pub(crate) fn own_exe() -> Option<PathBuf> {
    std::env::current_exe()
        .map_err(|e| eprintln!("warpdrive-mount: cannot find own executable: {e}"))
        .ok()
}

/// `--check-config`: builds every backend client too (without any request), so a setting the
/// store library rejects is reported here and not at mount time.
fn check_config(config: &Config, args: &Args) -> ExitCode {
    for b in &config.backends {
        if let Err(e) = warpdrive_store::Backend::build(b) {
            eprintln!(
                "warpdrive-mount: config file {}: backend {}: {e}",
                args.config.display(),
                b.name
            );
            return ExitCode::from(exit::BAD_CONFIG);
        }
    }
    println!(
        "# {} is valid; resolved with defaults:",
        args.config.display()
    );
    print!("{}", config.to_yaml());
    ExitCode::from(exit::OK)
}
