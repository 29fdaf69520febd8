//! One daemon's life on a mount its keeper made (see `keeper`): serving until a signal, an
//! external unmount, or a handover to a successor.
//!
//! Threads: fuser's session threads (`fuse.threads`) read requests from `/dev/fuse` and hand
//! each to the tokio runtime (`warpdrive-io` threads), where backend I/O runs; the main thread
//! waits for SIGINT/SIGTERM (unmount), SIGHUP or `POST /restart` (hand over), or for the
//! session to end (someone ran `umount`).
//!
//! The first daemon of a mount answers the kernel's INIT and starts the session state
//! (`warpdrive_fs::resume`); a successor replays it, adopts the open handles the ledger
//! lists, and asks the kernel to queue again what its predecessor had read and not
//! answered (`FUSE_NOTIFY_RESEND`). A handover waits until no file is open for writing,
//! commits the cache index and exits with code 75 without unmounting; the keeper starts the
//! successor.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use fuser::{MountOption, SessionACL};
use tokio::signal::unix::{SignalKind, signal};
use warpdrive_cache::{Cache, CacheConfig, Limit, Limits};
use warpdrive_config::{Config, Passthrough, SizeLimit};
use warpdrive_control::server;
use warpdrive_fs::mountinfo::FS_NAME;
use warpdrive_fs::resume;
use warpdrive_fs::{Fs, FsConfig};

use crate::fuse::FuseAdapter;
use warpdrive_metrics::{CacheFigures, Metrics};
use warpdrive_store::Backend;

use crate::http;

/// How long to wait for the session threads after unmounting before giving up on them.
const UNMOUNT_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the start-up reachability probe of each backend may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Kernel readahead for the mount, in KiB: matches the 1 MiB FUSE reads we ask for.
const READ_AHEAD_KB: u32 = 1024;

/// How often the cache limits are re-checked in the background (other programs may fill the
/// disk; admission handles the cache's own growth).
const EVICT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the read path's hit and miss counts are added to the index's lifetime counters.
const PERSIST_INTERVAL: Duration = Duration::from_secs(2);

/// The mount point when the control file is served: asked for (`fuse.control_file`) and
/// usable (not with zero-message opens, where no `close` reaches the daemon to submit).
fn control_dir(config: &Config) -> Option<std::path::PathBuf> {
    if !config.fuse.control_file {
        return None;
    }
    if config.fuse.zero_message_opens {
        tracing::info!(
            "no control file with fuse.zero_message_opens (the daemon never hears of a close); submit plans through the control API"
        );
        return None;
    }
    Some(config.mount_point.clone())
}

fn limit(l: SizeLimit) -> Limit {
    match l {
        SizeLimit::Bytes(b) => Limit::Bytes(b),
        SizeLimit::PercentOfDisk(p) => Limit::ShareOfDisk(p / 100.0),
    }
}

/// Opens the block cache (refusing a directory another daemon uses) and starts the thread
/// that keeps it within its limits.
fn open_cache(config: &Config) -> Result<Arc<Cache>> {
    let started = std::time::Instant::now();
    let cache = Cache::open(CacheConfig {
        dir: config.cache.dir.clone(),
        block_size: config.cache.block_size,
    })
    .with_context(|| format!("opening the block cache in {}", config.cache.dir.display()))?;
    let cache = Arc::new(cache);
    let teams = warpdrive_control::quotas::apply_saved(&cache, &config.cache.dir)?;
    if teams > 0 {
        tracing::info!(teams, "team quotas in force");
    }
    cache.set_limits(Limits {
        max_size: limit(config.cache.max_size),
        min_free: limit(config.cache.min_free),
    });
    let s = cache.stats();
    tracing::info!(
        dir = %config.cache.dir.display(),
        objects = s.objects,
        blocks = s.blocks,
        bytes = s.bytes,
        ms = started.elapsed().as_millis() as u64,
        "block cache opened"
    );
    cache
        .spawn_eviction(EVICT_INTERVAL)
        .context("starting the cache eviction thread")?;
    Ok(cache)
}

/// The git commit this binary was built from (`unknown` outside a checkout).
const GIT_COMMIT: &str = match option_env!("WARPDRIVE_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Tells the metrics where the cache's figures come from. Evictions and damaged blocks are
/// counted from this start on (the cache's own counts are lifetime ones).
fn cache_metrics(metrics: &Metrics, cache: &Arc<Cache>, dir: &Path) {
    let start = cache.quick_stats();
    let cache = Arc::downgrade(cache);
    let dir = dir.to_path_buf();
    metrics.set_cache_source(Box::new(move || {
        let Some(c) = cache.upgrade() else {
            return CacheFigures::default();
        };
        let q = c.quick_stats();
        let (disk, free) = warpdrive_cache::disk_usage(&dir).unwrap_or((0, 0));
        CacheFigures {
            used_bytes: q.used_bytes,
            capacity_bytes: if q.max_bytes == u64::MAX {
                disk
            } else {
                q.max_bytes
            },
            objects: q.objects,
            disk_bytes: disk,
            disk_free_bytes: free,
            evicted_blocks: q.evicted_blocks.saturating_sub(start.evicted_blocks),
            corrupt_blocks: q.corrupt_blocks.saturating_sub(start.corrupt_blocks),
        }
    }));
}

/// What the keeper hands each daemon it starts.
pub(crate) struct Handover {
    /// The mount's /dev/fuse descriptor (the keeper holds its own copy).
    pub fd: OwnedFd,
    /// Which daemon of the mount this is: 0 mounted it; later ones take it over.
    pub generation: u64,
    /// The keeper's pid, for `status`.
    pub keeper_pid: u32,
    /// The config file, read again to check a restart (a restart must keep the backends).
    pub config_path: PathBuf,
    /// The pipe on which the daemon tells its keeper that it serves.
    pub serving: Option<std::fs::File>,
}

/// What the first daemon of a mount learnt at INIT, for its successors (the kernel does not
/// send INIT again): whether it accepted passthrough, and whether it can resend requests.
struct InitRecord {
    passthrough: bool,
    resend: bool,
}

impl InitRecord {
    fn write(&self, path: &Path) -> Result<()> {
        let text = format!(
            "passthrough={}\nresend={}\n",
            u8::from(self.passthrough),
            u8::from(self.resend)
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn read(path: &Path) -> Result<InitRecord> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading {} (what the mount's first daemon negotiated with the kernel); this mount cannot be served again: unmount it",
                path.display()
            )
        })?;
        let has = |k: &str| text.lines().any(|l| l.trim() == format!("{k}=1"));
        Ok(InitRecord {
            passthrough: has("passthrough"),
            resend: has("resend"),
        })
    }
}

/// Tells the keeper this daemon serves (the pipe closes after).
fn say_serving(pipe: Option<std::fs::File>) {
    if let Some(mut f) = pipe {
        use std::io::Write;
        let _ = f.write_all(b"1");
    }
}

/// The mount options and session settings, the same for the keeper's mount and each
/// daemon's session.
pub(crate) fn fuse_config(config: &Config) -> fuser::Config {
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = vec![
        MountOption::FSName(FS_NAME.to_string()),
        MountOption::Subtype(FS_NAME.to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    let writable = config.backends.iter().any(|b| !b.write.prefixes.is_empty());
    if control_dir(config).is_none() && !writable {
        // Nothing in the mount is writable: the kernel refuses every write itself.
        fcfg.mount_options.push(MountOption::RO);
    }
    fcfg.acl = if config.fuse.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fcfg.n_threads = Some(config.fuse.threads);
    // Every session thread reads the one descriptor the keeper also holds: a request read
    // by a daemon that dies then stays queued in the kernel for its successor
    // (FUSE_NOTIFY_RESEND), where one read through a private clone would fail with it.
    fcfg.clone_fd = false;
    fcfg
}

pub(crate) fn run(config: Config, handover: Handover) -> Result<()> {
    let started = std::time::Instant::now();
    let Handover {
        fd,
        generation,
        keeper_pid,
        config_path,
        serving,
    } = handover;
    prepare_cache_dir(&config.cache.dir)?;
    let cache = open_cache(&config)?;
    let metrics_listener = if config.metrics.enabled {
        Some(http::bind(config.metrics.listen)?)
    } else {
        warpdrive_metrics::set_recording(false);
        None
    };
    let control = bind_control(&config)?;
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), GIT_COMMIT));
    cache_metrics(&metrics, &cache, &config.cache.dir);

    let backends = config
        .backends
        .iter()
        .map(|b| {
            Backend::build_with_metrics(b, metrics.backend(&b.name))
                .map(Arc::new)
                .map_err(|e| crate::ConfigProblem {
                    field: format!("backend {}", b.name),
                    message: match e {
                        warpdrive_store::StoreError::Build { message, .. } => message,
                        other => other.to_string(),
                    },
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warpdrive-io")
        .build()
        .context("starting the I/O runtime")?;
    match metrics_listener {
        Some(l) => {
            rt.spawn(http::serve(l, metrics.clone()));
            tracing::info!("metrics at http://{}/metrics", config.metrics.listen);
        }
        None => tracing::info!("metrics are off (metrics.enabled: false)"),
    }

    // Probe every backend once in the background: a wrong endpoint or missing permission is
    // reported in the log at start instead of at the first `ls`. Mounting does not wait.
    // A daemon taking a mount over does not probe again.
    for b in backends.iter().filter(|_| generation == 0) {
        let b = b.clone();
        rt.spawn(async move {
            match b.probe(PROBE_TIMEOUT).await {
                Ok(()) => tracing::info!(backend = b.name(), "backend reachable"),
                Err(e) => tracing::warn!(backend = b.name(), error = %e, "backend unreachable at start; its directory will answer EIO until it is"),
            }
        });
    }

    let control_file = control_dir(&config);
    let fs = Fs::with_metrics(
        FsConfig {
            metadata_ttl: config.metadata_ttl,
            stale_if_error: config.stale_if_error,
            negative_ttl: config.negative_ttl,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            block_size: config.cache.block_size,
            prefetch_budget: config.cache.prefetch_budget,
            // Passthrough needs an open per file: none with zero-message opens.
            passthrough: config.fuse.passthrough == Passthrough::Auto
                && !config.fuse.zero_message_opens,
            passthrough_min_size: config.fuse.passthrough_min_size,
            control: control_file.clone(),
            write_part_size: warpdrive_fs::core::WRITE_PART_SIZE,
            write_memory: warpdrive_fs::core::WRITE_MEMORY,
        },
        backends,
        Some(cache.clone()),
        metrics.clone(),
    );
    if let Some(shared) = &config.shared_cache {
        let tier =
            warpdrive_fleet::SharedTier::new(shared, &config.backends, metrics.shared.clone())
                .map_err(|e| crate::ConfigProblem {
                    field: "shared_cache".into(),
                    message: match e {
                        warpdrive_store::StoreError::Build { message, .. } => message,
                        other => other.to_string(),
                    },
                })?;
        tracing::info!(
            store = %format!("{}{}", shared.store.kind.describe(), if shared.store.prefix.is_empty() { String::new() } else { format!("/{}", shared.store.prefix) }),
            chunk_size = shared.chunk_size,
            mode = ?shared.mode,
            backends = shared.backends.join(","),
            "shared cache tier on"
        );
        fs.reader().set_tier(tier);
    }

    // The session state a successor takes over (warpdrive_fs::resume).
    let session_dir = resume::session_dir(&config.cache.dir);
    let restored = fs
        .start_session(&session_dir, generation, &backend_identities(&config))
        .map_err(|e| match e {
            resume::ResumeError::BackendsChanged { .. } => {
                anyhow::Error::new(crate::ConfigProblem {
                    field: "backends".into(),
                    message: e.to_string(),
                })
            }
            other => anyhow::Error::new(other),
        })?;
    let ledger = Arc::new(
        resume::HandleLedger::open(
            &session_dir.join("handles"),
            resume::LEDGER_SLOTS,
            generation == 0,
        )
        .with_context(|| format!("opening the handle ledger in {}", session_dir.display()))?,
    );

    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::channel(1);
    let line = warpdrive_control::server::DaemonLine {
        keeper_pid,
        generation,
        took_over_ms: None,
        restart: restart_tx,
    };
    if config.fuse.zero_message_opens {
        tracing::info!(
            "zero-message opens: the kernel opens files without asking the daemon (no passthrough)"
        );
    }
    let adapter = FuseAdapter::new(
        fs.clone(),
        rt.handle().clone(),
        config.fuse.zero_message_opens,
        Some(ledger.clone()),
    );
    let takeover = adapter.takeover();
    let hold = adapter.hold();

    let fcfg = fuse_config(&config);
    let mp = config.mount_point.clone();
    let init_marker = session_dir.join("init");
    let initialized = if generation == 0 {
        None
    } else {
        // A successor without its predecessor's record cannot serve: the kernel will not
        // send INIT again, and what it negotiated is unknown.
        Some(InitRecord::read(&init_marker)?)
    };
    let session = match &initialized {
        Some(init) => {
            // The kernel negotiated with the first daemon; what its init decided is kept.
            fs.set_passthrough_ready(init.passthrough);
            fuser::Session::from_fd_initialized(adapter, fd, fcfg.acl, fcfg.clone())
        }
        None => {
            let s = fuser::Session::from_fd(adapter, fd, fcfg.acl, fcfg.clone()).with_context(
                || format!("answering the kernel's FUSE INIT for {}", mp.display()),
            )?;
            // Whether the kernel can queue taken requests again (Linux 6.9): asked now, when
            // no request has been taken, so that it repeats none. Without it a successor
            // cannot answer what its predecessor took, and handovers are refused.
            let resend = match s.notifier().resend() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "the kernel cannot resend FUSE requests (Linux 6.9 or later can): a daemon that dies leaves the calls it had taken waiting, and `warpdrive-ctl restart` is refused");
                    false
                }
            };
            InitRecord {
                passthrough: fs.passthrough_ready(),
                resend,
            }
            .write(&init_marker)?;
            s
        }
    };
    let resend_ok = initialized.as_ref().is_none_or(|i| i.resend);
    let (passthrough, cached, lost) = if initialized.is_some() {
        // SAFETY: the ids come from the ledger of this connection's previous daemon, which
        // is gone and closed none of them; each is adopted once (per inode, by take_over).
        takeover.take_over(&ledger.entries(), |id| unsafe { session.adopt_backing(id) })
    } else {
        (0, 0, 0)
    };
    let read = metrics.read.clone();
    let persist = cache
        .spawn_counter_persistence(PERSIST_INTERVAL, move || warpdrive_cache::ReadTotals {
            hit_blocks: read.hit_blocks.get(),
            hit_bytes: read.hit_bytes.get(),
            miss_blocks: read.miss_blocks.get(),
            miss_bytes: read.miss_bytes.get(),
        })
        .context("starting the counter thread")?;
    let notifier = session.notifier();
    if initialized.as_ref().is_some_and(|i| i.resend) {
        // What the previous daemon had read and not answered is queued again, for this one.
        // Before its session threads read anything: a request they had taken would be
        // queued again too, and run twice.
        if let Err(e) = notifier.resend() {
            tracing::warn!(error = %e, "the kernel did not queue the previous daemon's unanswered requests again: the calls it had taken wait until the mount is unmounted");
        }
    }
    fs.set_invalidator(Arc::new(move |ino| {
        if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino.0), 0, 0) {
            tracing::debug!(ino = ino.0, error = %e, "page cache invalidation not delivered");
        }
    }));
    let bg = session.spawn().context("starting FUSE session threads")?;
    say_serving(serving);
    let api = if initialized.is_some() {
        let took = started.elapsed();
        tracing::info!(
            mount_point = %mp.display(),
            generation,
            inodes = restored,
            passthrough_handles = passthrough,
            cached_handles = cached,
            lost_writes = lost,
            took_ms = took.as_millis() as u64,
            "took the mount over and serving"
        );
        serve_control(
            &rt,
            control,
            &config,
            &fs,
            &cache,
            warpdrive_control::server::DaemonLine {
                took_over_ms: Some(took.as_millis() as u64),
                ..line
            },
        )
    } else {
        let api = serve_control(&rt, control, &config, &fs, &cache, line);
        tracing::info!(
            mount_point = %mp.display(),
            backends = config.backends.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(","),
            threads = config.fuse.threads,
            "serving"
        );
        api
    };

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let joiner = std::thread::Builder::new()
        .name("fuse-join".into())
        .spawn(move || {
            let r = bg.join();
            let _ = done_tx.send(r);
        })
        .context("starting the session watcher")?;

    let handle = rt.handle().clone();
    let may_hand_over =
        |wait| may_hand_over(&fs, &api, &hold, (&config_path, &config), resend_ok, wait);
    let ended = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        tokio::pin!(done_rx);
        loop {
            // A restart asked for: how long it may wait for writers, and where its answer
            // goes (nowhere for SIGHUP).
            let (wait, reply) = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: unmounting"); return Ok::<_, anyhow::Error>(Some(true)) }
                _ = int.recv() => { tracing::info!("SIGINT: unmounting"); return Ok(Some(true)) }
                r = &mut done_rx => return session_ended(r).map(|()| Some(false)),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: handing the mount over to a new daemon");
                    (RESTART_WAIT, None)
                }
                Some(req) = restart_rx.recv() => {
                    tracing::info!("restart asked for: handing the mount over to a new daemon");
                    (req.wait, Some((req.answer, req.delivered)))
                }
            };
            // Deciding may take a while (writers are waited for): signals and the end of
            // the session are still heard meanwhile.
            let decided = tokio::select! {
                r = may_hand_over(wait) => r,
                _ = term.recv() => { hold.open(&handle); tracing::info!("SIGTERM: unmounting"); return Ok(Some(true)) }
                _ = int.recv() => { hold.open(&handle); tracing::info!("SIGINT: unmounting"); return Ok(Some(true)) }
                r = &mut done_rx => { hold.open(&handle); return session_ended(r).map(|()| Some(false)) }
            };
            match decided {
                Ok(()) => {
                    if let Some((answer, delivered)) = reply {
                        let _ = answer.send(Ok(()));
                        // The answer goes out before this process does (this daemon serves
                        // meanwhile: readers do not wait for it).
                        let _ = tokio::time::timeout(Duration::from_secs(2), delivered).await;
                    }
                    return Ok(None);
                }
                Err(why) => {
                    tracing::warn!("not restarting: {why}");
                    if let Some((answer, _)) = reply {
                        let _ = answer.send(Err(why));
                    }
                }
            }
        }
    })?;
    let Some(ended_by_signal) = ended else {
        // Hand over: what must outlive this process is on disk (the cache index, the
        // counters; the journal and ledger always are). It exits without unmounting and
        // without dropping anything: the backing ids it holds are the kernel's passthrough
        // opens, which the successor adopts. Requests read and not answered by now are
        // queued again for the successor.
        persist.persist_now();
        if let Err(e) = cache.flush() {
            tracing::warn!(error = %e, "could not commit the last cache index changes");
        }
        tracing::info!(
            generation,
            held_calls = hold.held(),
            "handed over; the keeper starts the next daemon, which answers the calls held"
        );
        // SAFETY: _exit ends the process at once; nothing of ours runs after it.
        unsafe { libc::_exit(i32::from(crate::exit::HANDED_OVER)) }
    };

    if ended_by_signal {
        unmount(&mp);
        let deadline = std::time::Instant::now() + UNMOUNT_JOIN_TIMEOUT;
        while !joiner.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !joiner.is_finished() {
            tracing::warn!("FUSE session threads did not stop in time; exiting anyway");
        }
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(fs);
    persist.persist_now();
    if let Err(e) = cache.flush() {
        tracing::warn!(error = %e, "could not commit the last cache index changes");
    }
    let _ = std::fs::remove_file(&config.control.socket);
    tracing::info!(mount_point = %mp.display(), "stopped");
    Ok(())
}

/// How long a restart asked for by SIGHUP waits for files being written to be closed.
const RESTART_WAIT: Duration = Duration::from_secs(30);

/// What the session ended with: `Ok` when the filesystem was unmounted; an error (the
/// daemon exits 1, and its keeper starts another on the mount) when the session failed.
fn session_ended(
    r: Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>,
) -> Result<()> {
    match r {
        Ok(Ok(())) => {
            tracing::info!("the filesystem was unmounted");
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("the FUSE session failed: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the FUSE session's threads ended unexpectedly"
        )),
    }
}

/// Each backend as a mount knows it: its name and where its keys are (kind, account or
/// bucket, endpoint, prefix). Inode numbers the kernel holds mean keys of these stores, so a
/// successor must have the same, in the same order.
pub(crate) fn backend_identities(config: &Config) -> Vec<String> {
    config
        .backends
        .iter()
        .map(|b| format!("{}={:?}/{}", b.name, b.kind, b.prefix))
        .collect()
}

/// Whether the mount may be handed to a new daemon now: the kernel can resend what this
/// daemon has taken; no job of the control API runs (it would stop); the config file still
/// loads, with the same backends in the same order and the same mount (mount point, cache
/// directory, mount options: the successor reads it); and no file is open for writing (its
/// data would die with this daemon: waited for up to `wait`, then new ones are held, see
/// `fuse::Hold`). On `Ok`, calls that start writing stay held until the process exits.
async fn may_hand_over(
    fs: &Fs,
    api: &server::Control,
    hold: &crate::fuse::Hold,
    (config_path, running): (&Path, &Config),
    resend: bool,
    wait: Duration,
) -> std::result::Result<(), String> {
    if !resend {
        return Err("this kernel cannot resend FUSE requests (Linux 6.9 or later can): the calls this daemon has taken would never be answered".into());
    }
    let invalid = |e: &dyn std::fmt::Display| {
        format!("the config file {} is invalid: {e}", config_path.display())
    };
    let text = std::fs::read_to_string(config_path).map_err(|e| invalid(&e))?;
    let next = Config::parse(&text, config_path).map_err(|e| invalid(&e))?;
    if backend_identities(&next) != backend_identities(running) {
        return Err(format!(
            "the config file {} changes the backends (their names, order, stores or prefixes); a running mount keeps its backends: unmount and mount again to change them",
            config_path.display(),
        ));
    }
    if next.mount_point != running.mount_point || next.cache.dir != running.cache.dir {
        return Err(format!(
            "the config file {} moves the mount point or the cache directory; that needs a new mount",
            config_path.display()
        ));
    }
    let (a, b) = (fuse_config(&next), fuse_config(running));
    if a.mount_options != b.mount_options
        || a.acl != b.acl
        || next.fuse.zero_message_opens != running.fuse.zero_message_opens
    {
        return Err(format!(
            "the config file {} changes what the kernel keeps for the mount (read-only or writable, fuse.allow_other, fuse.control_file, fuse.zero_message_opens); that needs a new mount",
            config_path.display()
        ));
    }
    let jobs = api.jobs_running();
    if jobs > 0 {
        return Err(format!(
            "{jobs} job(s) of the control API still running (warm, copy, ...); a restart would stop them: wait for them or cancel them first"
        ));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut held = false;
    loop {
        let open = fs.write_handles();
        if open == 0 && held {
            // The successor starts on the config as checked here.
            let snapshot = crate::keeper::config_snapshot(running);
            if let Err(e) = std::fs::write(&snapshot, &text) {
                hold.open(&tokio::runtime::Handle::current());
                return Err(format!("cannot write {}: {e}", snapshot.display()));
            }
            return Ok(());
        }
        if open == 0 {
            // Hold new writers, then look again: one may have opened just before.
            hold.close().await;
            held = true;
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            if held {
                hold.open(&tokio::runtime::Handle::current());
            }
            let names: Vec<String> = fs
                .writing()
                .await
                .into_iter()
                .map(|w| format!("{}/{}", w.backend, w.key))
                .collect();
            return Err(format!(
                "{open} file(s) still open for writing after {wait:?} ({}); close them first, or wait longer",
                if names.is_empty() {
                    "committed, not yet closed".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The control API's listeners, bound before mounting so that a taken socket or port fails
/// the start with a clear error.
struct ControlListeners {
    unix: std::os::unix::net::UnixListener,
    tcp: Option<(std::net::TcpListener, String)>,
}

fn bind_control(config: &Config) -> Result<ControlListeners> {
    let unix = warpdrive_control::server::bind_unix(&config.control.socket)?;
    let tcp = match config.control.listen {
        None => None,
        Some(addr) => {
            let (token, source) = warpdrive_control::token::load(
                config.control.token_file.as_deref(),
                &config.cache.dir,
            )
            .map_err(|e| crate::ConfigProblem {
                field: "control.token_file".into(),
                message: format!("{e:#}"),
            })?;
            let l = std::net::TcpListener::bind(addr).map_err(|e| crate::ConfigProblem {
                field: "control.listen".into(),
                message: format!("cannot listen on {addr} ({e}); pick a free port"),
            })?;
            l.set_nonblocking(true)?;
            tracing::info!(%addr, %source, "control API on TCP (bearer token required)");
            Some((l, token))
        }
    };
    Ok(ControlListeners { unix, tcp })
}

fn serve_control(
    rt: &tokio::runtime::Runtime,
    l: ControlListeners,
    config: &Config,
    fs: &Arc<Fs>,
    cache: &Arc<Cache>,
    line: server::DaemonLine,
) -> Arc<server::Control> {
    let control = server::Control::new(
        Arc::new(config.clone()),
        fs.clone(),
        cache.clone(),
        true,
        (env!("CARGO_PKG_VERSION"), GIT_COMMIT),
    );
    control.set_daemon_line(line);
    let api = control.clone();
    let router = server::router(control);
    if let Some((tcp, token)) = l.tcp {
        rt.spawn(server::serve_tcp(
            tcp,
            server::require_token(router.clone(), token),
        ));
    }
    let path = config.control.socket.clone();
    tracing::info!(socket = %path.display(), "control API on the Unix socket");
    rt.spawn(server::serve_unix(l.unix, path, router));
    api
}

/// Unmounts `mp` (the keeper does too; whichever is first); if it is busy (a process has a file open or its cwd there), detaches it
/// lazily so the daemon can still exit and the kernel finishes when the last user leaves.
pub(crate) fn unmount(mp: &Path) {
    use nix::mount::{MntFlags, umount2};
    match umount2(mp, MntFlags::empty()) {
        Ok(()) => {}
        Err(nix::errno::Errno::EBUSY) => {
            tracing::warn!(mount_point = %mp.display(), "mount is busy; detaching it lazily");
            if let Err(e) = umount2(mp, MntFlags::MNT_DETACH) {
                tracing::error!(error = %e, "lazy unmount failed");
            }
        }
        // Already unmounted (by the keeper, or by `umount`).
        Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => tracing::error!(mount_point = %mp.display(), error = %e, "unmount failed"),
    }
}

/// Creates the cache directory, private to the daemon's user (0700).
pub(crate) fn prepare_cache_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating cache.dir {}; choose a directory on a local disk you can write",
            dir.display()
        )
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making cache.dir {} private (0700)", dir.display()))?;
    Ok(())
}

/// Raises the mount's readahead so the kernel sends 1 MiB reads (best effort: logs on failure).
pub(crate) fn set_read_ahead(mp: &Path) {
    let Ok(md) = std::fs::metadata(mp) else {
        return;
    };
    let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&path, READ_AHEAD_KB.to_string()) {
        Ok(()) => tracing::debug!(path, kb = READ_AHEAD_KB, "set readahead"),
        Err(e) => {
            tracing::info!(path, error = %e, "could not raise readahead; reads stay at the kernel default")
        }
    }
}
