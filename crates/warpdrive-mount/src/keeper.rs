//! The keeper: the process that owns the mount, so that the daemon serving it can be
//! replaced (after a crash, a kill, or for an upgrade) without unmounting.
//!
//! Algorithm. `warpdrive-mount` mounts the filesystem itself and keeps the connection's
//! `/dev/fuse` descriptor; it never reads from it. It starts the daemon — the same binary,
//! re-executed from its path (an upgraded binary is the one started), with the descriptor
//! inherited (`--worker-fd`) and its place in the line (`--generation`: 0 mounts; each
//! successor one more) — and waits on signals and on the daemon:
//!
//! * the daemon exits 75 (it handed over: `warpdrive-ctl restart`, SIGHUP) or dies
//!   (a signal, a panic, any other code once the mount had served): the next one starts at
//!   once on the same descriptor. Because the keeper's copy keeps the connection open, the
//!   kernel keeps every request meanwhile, and the successor has it queue again the ones
//!   its predecessor had read and not answered: readers wait, they get no error. Each
//!   daemon says when it serves (a byte on an inherited pipe, `--serving-fd`);
//!   [`CRASH_LIMIT`] daemons in a row that die before serving, or fail (other than by
//!   SIGKILL) within [`SETTLED`] of it (a request resent to each may be what kills it),
//!   mean none can run: the keeper pauses longer before each start (up to
//!   [`MAX_BACKOFF`]), then unmounts (readers get an error instead of waiting forever) and
//!   exits 1. A successor that refuses the config (exit 2: the backends changed) ends the
//!   mount the same way. Successors start on the config the mount runs
//!   ([`config_snapshot`]), not on an edit of the file nobody restarted for.
//! * the daemon exits 0: the filesystem was unmounted (`umount`, or the daemon was sent
//!   SIGTERM itself); the keeper exits 0.
//! * SIGTERM or SIGINT: the keeper unmounts and stops the daemon (SIGTERM; SIGKILL after
//!   [`STOP_TIMEOUT`]), then exits 0. SIGHUP is passed to the daemon: a graceful handover.
//! * the first daemon exits before the mount ever served (a bad config, a cache directory
//!   in use): the keeper unmounts and exits with its code.
//!
//! The daemon gets `PR_SET_PDEATHSIG` SIGKILL: if the keeper is killed, so is the daemon,
//! the connection closes, and the mount is left stale, as when a daemon without a keeper was
//! killed (the next start clears it). Readiness (`READY=1`, `--ready-file`) is the keeper's:
//! it is the process systemd and `--daemon` know, and its pid is the one to signal.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use warpdrive_config::Config;
use warpdrive_fs::resume;

use crate::ready::Readiness;
use crate::{Args, exit, mountpoint, serve};

/// Daemons in a row dying before they serve (or failing within [`SETTLED`] of it, other
/// than by SIGKILL), after which the keeper gives the mount up.
const CRASH_LIMIT: usize = 5;
/// A daemon that served this long before it died was not killed by its start (nor by a
/// request resent to it): its death does not count towards [`CRASH_LIMIT`].
const SETTLED: Duration = Duration::from_secs(10);
/// The longest pause before starting a daemon again after deaths in a row.
const MAX_BACKOFF: Duration = Duration::from_millis(1600);
/// How long a stopping daemon may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the keeper looks at its daemon between signals.
const TICK: Duration = Duration::from_millis(20);
/// How long a killed daemon may take to finish dying before the keeper answers for it.
const STUCK: Duration = Duration::from_millis(500);

/// Has the kernel queue again the requests the dead daemon had taken (the read holding the
/// page is one: `FUSE_NOTIFY_RESEND`), then reads every request queued on the connection
/// and answers it `EIO` (those that take no answer, FORGET and INTERRUPT, are dropped).
/// Returns how many were answered. (Checked on a daemon stuck so, from the CI: it died.)
fn answer_queued_with_eio(fd: &OwnedFd) -> usize {
    const FORGET: u32 = 2;
    const INTERRUPT: u32 = 36;
    const BATCH_FORGET: u32 = 42;
    const NOTIFY_RESEND: i32 = 7;
    let mut resend = [0u8; 16];
    resend[0..4].copy_from_slice(&16u32.to_ne_bytes());
    resend[4..8].copy_from_slice(&NOTIFY_RESEND.to_ne_bytes());
    // SAFETY: write of a buffer we own, of its length.
    unsafe { libc::write(fd.as_raw_fd(), resend.as_ptr().cast(), resend.len()) };
    // A request is at most the largest write (1 MiB) and its headers.
    let mut buf = vec![0u8; (1 << 20) + (64 << 10)];
    let mut answered = 0;
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd, no timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } <= 0 || p.revents & libc::POLLIN == 0 {
            return answered;
        }
        // SAFETY: read into a buffer we own, of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 40 {
            return answered;
        }
        let opcode = u32::from_ne_bytes(buf[4..8].try_into().expect("4 bytes"));
        let unique = u64::from_ne_bytes(buf[8..16].try_into().expect("8 bytes"));
        if matches!(opcode, FORGET | INTERRUPT | BATCH_FORGET) {
            continue;
        }
        // fuse_out_header: length, -errno, the request's unique.
        let mut reply = [0u8; 16];
        reply[0..4].copy_from_slice(&16u32.to_ne_bytes());
        reply[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
        reply[8..16].copy_from_slice(&unique.to_ne_bytes());
        // SAFETY: write of a buffer we own, of its length.
        unsafe { libc::write(fd.as_raw_fd(), reply.as_ptr().cast(), reply.len()) };
        answered += 1;
    }
}

/// Everything before the mount: the mount point checked (a stale mount cleared), the cache
/// directory private, and a fresh session directory (the state successors take over).
fn prepare(config: &Config) -> Result<()> {
    mountpoint::prepare(&config.mount_point)?;
    serve::prepare_cache_dir(&config.cache.dir)?;
    let dir = resume::session_dir(&config.cache.dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("clearing the old session in {}", dir.display()));
        }
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

/// The config successors start with: the file as this mount was made with it, replaced by
/// each handover with the file as it then checked it. A daemon that dies is replaced on the
/// config the mount runs, not on an edit nobody has restarted for yet.
pub(crate) fn config_snapshot(config: &Config) -> PathBuf {
    resume::session_dir(&config.cache.dir).join("config.yaml")
}

/// A running daemon, and the pipe on which it says that it serves.
struct Daemon {
    child: Child,
    serving: std::fs::File,
    /// When it said it serves.
    served_at: Option<Instant>,
    /// Since when its main thread has been gone while the process lives on.
    dying_since: Option<Instant>,
}

impl Daemon {
    /// Whether the daemon has said it serves.
    fn served(&mut self) -> bool {
        if self.served_at.is_none() {
            use std::io::Read;
            let mut b = [0u8; 1];
            if matches!(self.serving.read(&mut b), Ok(1)) {
                self.served_at = Some(Instant::now());
            }
        }
        self.served_at.is_some()
    }

    /// Whether it has served long enough that its death says nothing of the next one.
    fn settled(&mut self) -> bool {
        self.served();
        self.served_at.is_some_and(|t| t.elapsed() >= SETTLED)
    }
}

/// Starts daemon `generation` on the mount's descriptor (a successor on the config
/// `snapshot`).
fn spawn(
    exe: &Path,
    (config, snapshot): (&Path, &Path),
    fd: &OwnedFd,
    generation: u64,
) -> std::io::Result<Daemon> {
    let raw = fd.as_raw_fd();
    let (rx, tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let tx_raw = tx.as_raw_fd();
    let keeper = std::process::id() as i32;
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(config)
        .arg("--worker-fd")
        .arg(raw.to_string())
        .arg("--generation")
        .arg(generation.to_string())
        .arg("--keeper-pid")
        .arg(keeper.to_string())
        .arg("--serving-fd")
        .arg(tx_raw.to_string())
        .args(
            (generation > 0)
                .then(|| {
                    [
                        std::ffi::OsStr::new("--config-snapshot"),
                        snapshot.as_os_str(),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        // Readiness is the keeper's to tell.
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: fcntl, sigemptyset, pthread_sigmask, prctl and getppid are async-signal-safe
    // and touch no memory of the parent (the set is the child's own stack); they run in the
    // forked child before exec, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || {
            // The descriptor is close-on-exec in the keeper; the daemon inherits it.
            if libc::fcntl(raw, libc::F_SETFD, 0) < 0 || libc::fcntl(tx_raw, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The write end of the pipe is non-blocking here only; the flag is the pipe's,
            // which is harmless for one byte.
            // The keeper blocks the signals it waits for; the daemon handles its own.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::other("cannot unblock signals"));
            }
            // The daemon dies with its keeper (see the module doc).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != keeper {
                return Err(std::io::Error::other("the keeper is gone"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(tx);
    Ok(Daemon {
        child,
        serving: std::fs::File::from(rx),
        served_at: None,
        dying_since: None,
    })
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!(
            "signal {s} ({})",
            Signal::try_from(s).map_or("unknown", |s| s.as_str())
        ),
        _ => status.to_string(),
    }
}

/// The signals the keeper blocks and waits for.
fn waited_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Waits up to `timeout` for one of the blocked signals in `set`.
fn next_signal(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timeout, both valid for the call, and
    // writes no info (a null pointer).
    let n = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (n > 0).then(|| Signal::try_from(n).ok()).flatten()
}

/// Mounts, runs daemons until the mount ends, and returns the exit code.
pub(crate) fn run(args: &Args, config: &Config, readiness: Readiness) -> u8 {
    // Signals are taken by this thread with sigtimedwait from here on; threads started
    // later inherit the mask, and daemons get an empty one (set before their exec).
    let set = waited_signals();
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("warpdrive-mount: cannot block signals: {e}");
        return exit::FAILED;
    }
    if let Err(e) = prepare(config) {
        eprintln!("warpdrive-mount: {e:#}");
        return exit::FAILED;
    }
    let snapshot = config_snapshot(config);
    if let Err(e) = std::fs::copy(&args.config, &snapshot) {
        eprintln!(
            "warpdrive-mount: keeping a copy of {} in {}: {e}",
            args.config.display(),
            snapshot.display()
        );
        return exit::FAILED;
    }
    let Some(exe) = crate::own_exe() else {
        return exit::FAILED;
    };
    let mp = config.mount_point.clone();
    let fd = match fuser::mount_detached(&mp, &serve::fuse_config(config)) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!(
                "warpdrive-mount: mounting FUSE at {} (is /dev/fuse available and are you root?): {e}",
                mp.display()
            );
            return exit::FAILED;
        }
    };
    Keeper {
        exe,
        config_path: args.config.clone(),
        snapshot,
        mp,
        fd,
        readiness: Arc::new(readiness),
    }
    .serve()
}

struct Keeper {
    exe: PathBuf,
    config_path: PathBuf,
    snapshot: PathBuf,
    mp: PathBuf,
    fd: OwnedFd,
    readiness: Arc<Readiness>,
}

impl Keeper {
    fn start(&self, generation: u64) -> Option<Daemon> {
        match spawn(
            &self.exe,
            (&self.config_path, &self.snapshot),
            &self.fd,
            generation,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(exe = %self.exe.display(), error = %e, "cannot start the daemon");
                None
            }
        }
    }

    /// A daemon that was killed but cannot finish dying: one of its threads is held by the
    /// kernel in an invalidation it sent, waiting for a page whose read is queued for a
    /// daemon — and the next one starts only once this one is gone. Its main thread has
    /// exited (a zombie leader) for [`STUCK`]: the keeper answers what is queued with
    /// `EIO` itself (those calls fail, as documented for calls a killed daemon had), which
    /// lets the page go and the daemon finish dying.
    fn unstick(&self, daemon: &mut Daemon) {
        let pid = daemon.child.id();
        let zombie_leader = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(false);
        if !zombie_leader {
            daemon.dying_since = None;
            return;
        }
        let since = *daemon.dying_since.get_or_insert_with(Instant::now);
        if since.elapsed() < STUCK {
            return;
        }
        let answered = answer_queued_with_eio(&self.fd);
        if answered > 0 {
            tracing::warn!(
                pid,
                answered,
                "the killed daemon cannot finish dying (the kernel holds it in an invalidation); answered the calls queued meanwhile with EIO"
            );
        }
    }

    /// Ends the mount: the ready file goes, the mount is unmounted (lazily if busy).
    fn end(&self) {
        self.readiness.stopping();
        serve::unmount(&self.mp);
    }

    /// Takes back a mount that never served (its first daemon failed to start): detached
    /// at once and quietly, since the only user is the keeper's own readiness check, and
    /// the daemon's error stays the last thing said.
    fn abandon(&self) {
        let _ = nix::mount::umount2(&self.mp, nix::mount::MntFlags::MNT_DETACH);
    }

    fn serve(self) -> u8 {
        let set = waited_signals();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let (readiness, mp) = (self.readiness.clone(), self.mp.clone());
            let spawned = std::thread::Builder::new()
                .name("readiness".into())
                .spawn(move || {
                    let r = readiness.wait_live_and_tell(&mp, || serve::set_read_ahead(&mp));
                    if let Ok(took) = &r {
                        tracing::info!(
                            mount_point = %mp.display(),
                            answering_after_ms = took.as_millis() as u64,
                            "mounted and serving"
                        );
                    }
                    let _ = ready_tx.send(r);
                });
            if let Err(e) = spawned {
                self.abandon();
                eprintln!("warpdrive-mount: cannot start the readiness thread: {e}");
                return exit::FAILED;
            }
        }
        let mut generation = 0;
        let Some(mut daemon) = self.start(generation) else {
            self.abandon();
            return exit::FAILED;
        };
        let mut served = false;
        let mut failed_starts = 0;
        let mut stopping: Option<Instant> = None;
        loop {
            if !served {
                match ready_rx.try_recv() {
                    Ok(Ok(_)) => served = true,
                    Ok(Err(e)) => {
                        let _ = daemon.child.kill();
                        let _ = daemon.child.wait();
                        self.abandon();
                        eprintln!("warpdrive-mount: {e:#}");
                        return exit::FAILED;
                    }
                    Err(_) => {}
                }
            }
            match next_signal(&set, TICK) {
                Some(s @ (Signal::SIGTERM | Signal::SIGINT)) if stopping.is_none() => {
                    tracing::info!("{}: unmounting", s.as_str());
                    self.end();
                    // SAFETY: kill(2) on our own child's pid has no memory effects.
                    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
                    stopping = Some(Instant::now());
                }
                Some(Signal::SIGHUP) if stopping.is_none() && daemon.served() => {
                    tracing::info!("SIGHUP: asking the daemon to hand the mount over");
                    // SAFETY: as above.
                    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGHUP) };
                }
                Some(Signal::SIGHUP) if stopping.is_none() => {
                    tracing::warn!("SIGHUP: the daemon does not serve yet; nothing to hand over");
                }
                _ => {}
            }
            if let Some(t) = stopping
                && t.elapsed() > STOP_TIMEOUT
            {
                tracing::warn!(
                    pid = daemon.child.id(),
                    "the daemon did not stop in time; killing it"
                );
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
                return exit::OK;
            }
            if daemon.settled() {
                failed_starts = 0;
            }
            let status = match daemon.child.try_wait() {
                Ok(Some(s)) => s,
                Ok(None) => {
                    self.unstick(&mut daemon);
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for the daemon");
                    continue;
                }
            };
            if stopping.is_some() {
                return if status.success() {
                    exit::OK
                } else {
                    exit::FAILED
                };
            }
            match status.code() {
                Some(0) => {
                    // The daemon saw the filesystem unmounted.
                    self.end();
                    return exit::OK;
                }
                Some(c) if c == i32::from(exit::HANDED_OVER) => {
                    generation += 1;
                    tracing::info!(generation, "starting the next daemon on the mount");
                }
                code if !served => {
                    self.abandon();
                    return code
                        .and_then(|c| u8::try_from(c).ok())
                        .filter(|c| *c != 0)
                        .unwrap_or(exit::FAILED);
                }
                Some(c) if c == i32::from(exit::BAD_CONFIG) => {
                    tracing::error!(
                        "the daemon refused the config (above); unmounting: fix the config and start again"
                    );
                    self.end();
                    return exit::BAD_CONFIG;
                }
                _ => {
                    // A daemon that never served counts; so does one that served and then
                    // failed soon (a request it was sent again may be what kills each
                    // one). SIGKILL after serving does not: an operator or the OOM killer.
                    let killed = status.signal() == Some(libc::SIGKILL);
                    if !daemon.served() || (!killed && !daemon.settled()) {
                        failed_starts += 1;
                    }
                    if failed_starts >= CRASH_LIMIT {
                        tracing::error!(
                            daemons = failed_starts,
                            "daemons keep dying before they serve; unmounting, so that readers get an error instead of waiting"
                        );
                        self.end();
                        return exit::FAILED;
                    }
                    generation += 1;
                    tracing::warn!(
                        ended = describe(status),
                        generation,
                        "the daemon died; a new one takes the mount over"
                    );
                    if failed_starts > 1 {
                        // Deaths in a row: a pause, doubling, before the next start.
                        let pause = (Duration::from_millis(100) * (1 << failed_starts.min(5)))
                            .min(MAX_BACKOFF);
                        std::thread::sleep(pause);
                    }
                }
            }
            match self.start(generation) {
                Some(d) => daemon = d,
                None => {
                    self.end();
                    return exit::FAILED;
                }
            }
        }
    }
}
