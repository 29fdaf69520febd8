//! The FUSE adapter: converts arguments, runs the core operation on the tokio runtime,
//! replies. No logic lives here. It is the daemon's alone: the filesystem core
//! (`warpdrive-fs`) does not link `fuser`, so neither does anything else built on the core
//! (`warpdrive-ctl`).
//!
//! fuser calls these methods from several session threads at once (`n_threads`). Each method
//! spawns its operation on the daemon's runtime and returns at once, so a session thread never
//! waits on the network: one slow backend request cannot stall reads of other files. Replies
//! are `Send` and are sent from the runtime's tasks. The one exception is a read whose blocks
//! are all cached: it is answered from the session thread (a `pread` of the cache file), since
//! handing it to the runtime would cost more than the read itself.
//!
//! Every mutating operation answers `EROFS`, but for writes to the control file
//! (`.warpdrive/plan`, [`warpdrive_fs::control`]), the mount's one writable path; without a
//! control file the mount is read-only in the kernel too. Every open but the control file's
//! tells the kernel not to send `FLUSH` at `close` (`FOPEN_NOFLUSH`): a read-only file has
//! nothing to do then, and the round trip was a tenth of a warm small file's cost.
//!
//! Every open handle is written to the handle ledger ([`warpdrive_fs::resume`]) so that a
//! daemon replacing this one on the live mount can take the kernel's open files over: it
//! restores their passthrough backings and page-cached opens ([`FuseAdapter::take_over`]),
//! serves a read of a handle it never opened by reopening the inode, a directory handle by
//! listing the directory again, and fails (`EIO`) each later call on a file that was being
//! written, whose data died with its daemon.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use std::time::Instant;

use parking_lot::Mutex;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request,
};
use tokio::runtime::Handle;

use warpdrive_fs::backing::{Backings, Plan};
use warpdrive_fs::resume::{HandleLedger, HandleMode, LedgerEntry};
use warpdrive_fs::{Attr, Fs, FsError, FsResult, Ino, Kind, ReadStart};
use warpdrive_metrics::Op;

/// Largest read the kernel may send us and the readahead it may do: 1 MiB, so a sequential
/// reader costs one FUSE round trip per MiB instead of per 128 KiB.
pub const MAX_READAHEAD: u32 = 1 << 20;

/// Largest write the kernel may send: a file written through the mount costs one round trip
/// per MiB.
const MAX_WRITE: u32 = 1 << 20;

/// Asynchronous (readahead) requests the kernel may have outstanding (its default is 12).
const MAX_BACKGROUND: u16 = 64;

/// Entries returned per `readdir` call at most; the reply buffer usually fills first.
const READDIR_BATCH: usize = 1024;

/// The reported block size for `stat`; large so tools read in big chunks.
const BLKSIZE: u32 = 1 << 20;

/// The `fuser::Filesystem` over [`Fs`].
#[derive(Debug)]
pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: Handle,
    /// How each inode is open, under the kernel's passthrough rules: the core's table
    /// ([`warpdrive_fs::backing`]) decides, the adapter carries out its plans.
    modes: Arc<Mutex<Backings<BackingId>>>,
    /// `fuse.zero_message_opens`: `open` answers `ENOSYS`, after which the kernel opens files
    /// itself and sends reads with file handle 0 (served by [`Fs::open_inode`]'s handles).
    zero_message_opens: bool,
    /// Open handles, written down for a daemon that may replace this one.
    ledger: Option<Arc<HandleLedger>>,
    /// What a previous daemon left open.
    inherited: Arc<Inherited>,
    /// Calls that would start writing a file, held while this daemon hands over.
    hold: Arc<Hold>,
}

/// Calls that start writing a file (`open` for writing, `create`) are held, never answered,
/// once a handover is decided: the file would die with this daemon. A held call stays queued
/// in the kernel, which sends it again to the successor; if the handover is called off, the
/// held calls run here after all.
///
/// A call counts itself in `starting` before it looks at `on`, and the daemon sets `on`
/// before it waits for `starting` to reach 0 (both sequentially consistent), so once that
/// wait ends no call can be opening a file the daemon has not seen.
#[derive(Default)]
pub struct Hold {
    on: AtomicBool,
    starting: std::sync::atomic::AtomicUsize,
    parked: Mutex<Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("on", &self.on.load(Ordering::Relaxed))
            .field("parked", &self.parked.lock().len())
            .finish()
    }
}

impl Hold {
    /// Runs `task` (a call that starts writing), or parks it while a handover is decided.
    fn run(self: &Arc<Self>, rt: &Handle, task: impl Future<Output = ()> + Send + 'static) {
        self.starting.fetch_add(1, Ordering::SeqCst);
        if self.on.load(Ordering::SeqCst) {
            self.parked.lock().push(Box::pin(task));
            self.starting.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let me = self.clone();
        run_here_or_spawn(rt, async move {
            task.await;
            me.starting.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Holds every later call that starts writing; returns once none is under way.
    pub async fn close(&self) {
        self.on.store(true, Ordering::SeqCst);
        while self.starting.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Calls the handover off: the held calls run now, on `rt`.
    pub fn open(&self, rt: &Handle) {
        self.on.store(false, Ordering::SeqCst);
        for task in self.parked.lock().drain(..) {
            rt.spawn(task);
        }
    }

    /// Calls held so far.
    pub fn held(&self) -> usize {
        self.parked.lock().len()
    }
}

/// Handles a previous daemon of this mount opened, which the kernel still uses.
#[derive(Debug, Default)]
struct Inherited {
    /// Files it was writing: their data died with it; every call on them fails `EIO`.
    lost: Mutex<HashSet<u64>>,
    /// Whether a previous daemon left any handle here (checked before taking a lock on
    /// every read, write and release).
    any: AtomicBool,
    /// Its directory handles, listed again here: its number → ours.
    dirs: Mutex<HashMap<u64, u64>>,
    /// Its page-cached read handles: the version each read ([`warpdrive_fs::resume::version_tag`]).
    versions: Mutex<HashMap<u64, u64>>,
}

impl Inherited {
    fn is_lost(&self, fh: u64) -> bool {
        self.any.load(Ordering::Relaxed) && self.lost.lock().contains(&fh)
    }
}

/// The answer to a call on a file whose writing daemon died.
fn lost_write() -> Errno {
    Errno::from_i32(libc::EIO)
}

impl FuseAdapter {
    fn count(&self, op: Op) {
        self.fs.metrics().fuse.op(op);
    }

    /// Answers an operation that would change the tree: counted, `EROFS`.
    fn refuse(&self) -> Errno {
        self.count(Op::Write);
        self.read_only()
    }

    /// `EROFS` for a write operation already counted, its error counted.
    fn read_only(&self) -> Errno {
        let errno = FsError::ReadOnly.errno();
        self.fs.metrics().fuse.error(Op::Write, errno);
        Errno::from_i32(errno)
    }

    /// Counts a write operation on `name` and takes the name as UTF-8 (store keys are); a
    /// name that is not is refused, `EROFS`.
    fn write_op(&self, name: &OsStr) -> Result<String, Errno> {
        self.count(Op::Write);
        utf8(name).ok_or_else(|| self.read_only())
    }

    /// `unlink` (or `rmdir`, `dir`) of `name` in `parent`, on the runtime.
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty, dir: bool) {
        let name = match self.write_op(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            let r = if dir {
                fs.rmdir(Ino(parent.0), &name).await
            } else {
                fs.unlink(Ino(parent.0), &name).await
            };
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, Op::Write, &e)),
            }
        });
    }

    /// A `close` or `fsync` of handle `fh`: the control file submits what was written to it
    /// (on the runtime: a plan of two million entries takes a while to check); other files
    /// have nothing to do.
    fn submit(&self, fh: FileHandle, reply: ReplyEmpty) {
        if self.inherited.is_lost(fh.0) {
            reply.error(lost_write());
            return;
        }
        if !warpdrive_fs::control::owns_fh(fh.0) && !self.fs.is_write_handle(fh.0) {
            reply.ok();
            return;
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.flush(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, Op::Flush, &e)),
            }
        });
    }

    /// The kernel caches each entry and attributes for what is left of their metadata's
    /// `metadata_ttl` (`Attr::kernel_ttl`).
    pub fn new(
        fs: Arc<Fs>,
        rt: Handle,
        zero_message_opens: bool,
        ledger: Option<Arc<HandleLedger>>,
    ) -> FuseAdapter {
        FuseAdapter {
            fs,
            rt,
            modes: Arc::default(),
            zero_message_opens,
            ledger,
            inherited: Arc::default(),
            hold: Arc::default(),
        }
    }

    /// The hold on calls that start writing, for the daemon's handover.
    pub fn hold(&self) -> Arc<Hold> {
        self.hold.clone()
    }

    /// A read served through the inode's own handle (opened at its first such read, on the
    /// runtime): reads the daemon holds no handle for, sent with handle 0 under
    /// zero-message opens or with a handle a previous daemon opened. With `version`, the
    /// object must still be that version, else `ESTALE` (a handle never reads two).
    fn read_by_inode(
        &self,
        ino: Ino,
        version: Option<u64>,
        (offset, size): (u64, u32),
        start: Instant,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            let r = match fs.open_inode(ino).await {
                Ok(fh) if version.is_some_and(|v| fs.handle_version(fh) != Some(v)) => {
                    Err(FsError::Stale)
                }
                Ok(fh) => fs.read(fh, offset, size).await,
                Err(e) => Err(e),
            };
            reply_read(&fs, start, r, reply)
        });
    }

    /// What [`Takeover::take_over`] needs, kept before the adapter moves into its session.
    pub fn takeover(&self) -> Takeover {
        Takeover {
            fs: self.fs.clone(),
            modes: self.modes.clone(),
            inherited: self.inherited.clone(),
        }
    }
}

/// The adapter's tables, to fill with a previous daemon's handles.
pub struct Takeover {
    fs: Arc<Fs>,
    modes: Arc<Mutex<Backings<BackingId>>>,
    inherited: Arc<Inherited>,
}

impl Takeover {
    /// Takes over the handles a previous daemon left open (`entries`, from the ledger):
    /// passthrough ones keep their backing (`adopt` wraps the kernel's id) and their cache
    /// file pinned, page-cached ones keep new opens of their inode page-cached, and files
    /// being written are marked lost. Returns the handles of each kind taken over.
    pub fn take_over(
        &self,
        entries: &[LedgerEntry],
        adopt: impl Fn(u32) -> BackingId,
    ) -> (usize, usize, usize) {
        let (mut pt, mut cached, mut lost) = (0, 0, 0);
        let mut modes = self.modes.lock();
        for e in entries {
            match e.mode {
                HandleMode::Passthrough { oid, backing } => {
                    modes.restore_passthrough(e.ino, e.fh, oid, || {
                        self.fs.adopt_passthrough(e.ino, oid);
                        adopt(backing)
                    });
                    pt += 1;
                }
                HandleMode::Cached { version } => {
                    modes.restore_cached(e.ino, e.fh);
                    self.inherited.versions.lock().insert(e.fh, version);
                    cached += 1;
                }
                HandleMode::Writing => {
                    self.inherited.lost.lock().insert(e.fh);
                    lost += 1;
                }
            }
        }
        if !entries.is_empty() {
            self.inherited.any.store(true, Ordering::Relaxed);
        }
        (pt, cached, lost)
    }
}

/// Runs `task` on this FUSE session thread as far as it gets without waiting, and hands it
/// to the runtime only if it must wait (a request to the store, a blocking job). A lookup,
/// `getattr` or `open` the daemon can answer from what it holds then costs no hop to a
/// runtime thread, which was most of its cost (warm opens and closes of small files: 55,000
/// → 70,000 a second, doc/BENCHMARKS.md "Small files"). A future polled once here and then by
/// the runtime is polled as the `Future` contract allows: each poll registers its own waker.
fn run_here_or_spawn(rt: &Handle, task: impl Future<Output = ()> + Send + 'static) {
    let _guard = rt.enter();
    let mut task = Box::pin(task);
    let mut cx = Context::from_waker(Waker::noop());
    if task.as_mut().poll(&mut cx).is_pending() {
        rt.spawn(task);
    }
}

/// A name as UTF-8 (store keys are): `None` for one that is not.
fn utf8(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_string)
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A failed operation: logged (except a plain "not found"), counted, and its errno.
fn failed(fs: &Fs, op: Op, e: &FsError) -> Errno {
    match e {
        FsError::NotFound => {}
        other => tracing::debug!(op = op.name(), error = %other, "operation failed"),
    }
    fs.metrics().fuse.error(op, e.errno());
    errno(e)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Answers a read and records its latency (since `start`, when the request arrived) and size.
fn reply_read(fs: &Fs, start: Instant, r: FsResult<bytes::Bytes>, reply: ReplyData) {
    let m = &fs.metrics().fuse;
    match r {
        Ok(b) => {
            reply.data(&b);
            m.read_size.observe(b.len() as u64);
        }
        Err(e) => reply.error(failed(fs, Op::Read, &e)),
    }
    m.read_latency.observe_duration(start.elapsed());
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        // Let the kernel keep more readahead requests in flight: each is served from a read
        // window that is usually already fetched, so more of them overlap network and copy.
        if let Err(max) = config.set_max_background(MAX_BACKGROUND) {
            let _ = config.set_max_background(max);
        }
        // Files written through the mount arrive in writes of up to 1 MiB.
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        // Lookups and readdirs of one directory may run at once: each is an independent
        // request to the store, and serialising them would make `ls -l` of a big prefix slow.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS) {
            tracing::debug!(?missing, "kernel lacks parallel directory operations");
        }
        // Passthrough: the kernel reads fully cached files straight from the cache disk.
        if self.fs.wants_passthrough() {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if ok {
                tracing::info!("FUSE passthrough enabled for fully cached files");
            } else {
                tracing::info!(
                    "the kernel does not offer FUSE passthrough; cached files are served by the daemon"
                );
            }
            self.fs.set_passthrough_ready(ok);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count(Op::Lookup);
        let Some(name) = name.to_str().map(str::to_string) else {
            // Store keys are UTF-8: a name that is not cannot exist.
            reply.error(Errno::from_i32(FsError::NotFound.errno()));
            return;
        };
        let fs = self.fs.clone();
        run_here_or_spawn(&self.rt, async move {
            match fs.lookup(Ino(parent.0), &name).await {
                Ok(a) => reply.entry(&a.kernel_ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(failed(&fs, Op::Lookup, &e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count(Op::Getattr);
        let fs = self.fs.clone();
        run_here_or_spawn(&self.rt, async move {
            match fs.getattr(Ino(ino.0)).await {
                Ok(a) => reply.attr(&a.kernel_ttl, &file_attr(&a)),
                Err(e) => reply.error(failed(&fs, Op::Getattr, &e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Open);
        if self.zero_message_opens {
            // The kernel takes ENOSYS as "opens need no daemon" for the rest of the session.
            reply.error(Errno::from_i32(libc::ENOSYS));
            return;
        }
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY
            || flags.0 & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0;
        let fs = self.fs.clone();
        let ledger = self.ledger.clone();
        if write {
            let truncate = flags.0 & libc::O_TRUNC != 0;
            self.hold.run(&self.rt, async move {
                match fs.open_writing(Ino(ino.0), truncate).await {
                    Ok(o) => {
                        warpdrive_metrics::shift(&fs.metrics().fuse.open_handles, 1);
                        if !o.direct
                            && let Some(l) = &ledger
                        {
                            l.record(o.fh, Ino(ino.0), HandleMode::Writing);
                        }
                        // The control file is read and written past the page cache; both it
                        // and a file being written need the `FLUSH` of each `close`.
                        let flags = if o.direct {
                            FopenFlags::FOPEN_DIRECT_IO
                        } else {
                            FopenFlags::empty()
                        };
                        reply.opened(FileHandle(o.fh), flags)
                    }
                    Err(e) => reply.error(failed(&fs, Op::Open, &e)),
                }
            });
            return;
        }
        let modes = self.modes.clone();
        run_here_or_spawn(&self.rt, async move {
            match fs.open(Ino(ino.0), write).await {
                Ok(o) => {
                    warpdrive_metrics::shift(&fs.metrics().fuse.open_handles, 1);
                    let fh = FileHandle(o.fh);
                    let ino = Ino(ino.0);
                    let mut modes = modes.lock();
                    let offer = o.passthrough.as_ref().map(|(oid, _)| *oid);
                    let record = |mode| {
                        if !o.direct
                            && let Some(l) = &ledger
                        {
                            l.record(o.fh, ino, mode);
                        }
                    };
                    match modes.plan(ino, o.fh, offer) {
                        Plan::Reuse(backing) => {
                            record(HandleMode::Passthrough {
                                oid: offer.unwrap_or_default(),
                                backing: backing.raw(),
                            });
                            reply.opened_passthrough(fh, FopenFlags::FOPEN_NOFLUSH, backing);
                            return;
                        }
                        Plan::OpenBacking => {
                            // Planned only for an open offered passthrough.
                            let Some((oid, file)) = o.passthrough.as_ref() else {
                                unreachable!("a backing is planned only for an offer")
                            };
                            match reply.open_backing(file) {
                                Ok(backing) => {
                                    record(HandleMode::Passthrough {
                                        oid: *oid,
                                        backing: backing.raw(),
                                    });
                                    reply.opened_passthrough(
                                        fh,
                                        FopenFlags::FOPEN_NOFLUSH,
                                        &backing,
                                    );
                                    modes.opened(ino, o.fh, *oid, backing);
                                    return;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "passthrough refused by the kernel; serving cached files from the daemon");
                                    fs.set_passthrough_ready(false);
                                    modes.backing_failed(ino, o.fh);
                                }
                            }
                        }
                        Plan::Daemon => {}
                        Plan::Busy => {
                            drop(modes);
                            fs.release(o.fh);
                            warpdrive_metrics::shift(&fs.metrics().fuse.open_handles, -1);
                            reply.error(failed(&fs, Op::Open, &FsError::Busy));
                            return;
                        }
                    }
                    record(HandleMode::Cached {
                        version: fs.handle_version(o.fh).unwrap_or_default(),
                    });
                    drop(modes);
                    if o.passthrough.is_some() {
                        fs.passthrough_declined(o.fh);
                    }
                    let flags = if o.direct {
                        // The control file: its reads and writes go to the daemon, and its
                        // `close` submits what was written.
                        FopenFlags::FOPEN_DIRECT_IO
                    } else if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
                    } else {
                        FopenFlags::FOPEN_NOFLUSH
                    };
                    reply.opened(fh, flags)
                }
                Err(e) => reply.error(failed(&fs, Op::Open, &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let start = Instant::now();
        self.count(Op::Read);
        if self.inherited.is_lost(fh.0) {
            reply.error(lost_write());
            return;
        }
        if self.fs.is_write_handle(fh.0) {
            // A file being written (opened read-write): from its spool.
            let fs = self.fs.clone();
            self.rt.spawn(async move {
                let r = fs.read(fh.0, offset, size).await;
                reply_read(&fs, start, r, reply)
            });
            return;
        }
        // Cached reads are answered from this thread; only reads waiting on fetches go to
        // the runtime (the hop would cost more than the read).
        let _guard = self.rt.enter();
        let fh = match fh.0 {
            // Opened by the kernel alone (zero-message opens): the inode's handle.
            0 => match self.fs.inode_handle(Ino(ino.0)) {
                Some(fh) => fh,
                None => {
                    self.read_by_inode(Ino(ino.0), None, (offset, size), start, reply);
                    return;
                }
            },
            fh => fh,
        };
        match self.fs.read_start(fh, offset, size) {
            ReadStart::Done(Err(FsError::BadHandle)) if !warpdrive_fs::control::owns_fh(fh) => {
                // A handle a previous daemon opened: read through the inode's own handle, if
                // the object is still the version that handle read.
                let version = self.inherited.versions.lock().get(&fh).copied();
                self.read_by_inode(Ino(ino.0), version, (offset, size), start, reply);
            }
            ReadStart::Done(r) => reply_read(&self.fs, start, r, reply),
            ReadStart::Pending(p) => {
                let fs = self.fs.clone();
                self.rt.spawn(async move {
                    let r = fs.read_finish(p).await;
                    reply_read(&fs, start, r, reply)
                });
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Flush);
        if self.zero_message_opens {
            // Files the kernel opened alone have nothing to do at close (and there is no
            // control file): ENOSYS tells the kernel so, and it stops sending FLUSH.
            reply.error(errno(&FsError::NotImplemented));
            return;
        }
        self.submit(fh, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Flush);
        self.submit(fh, reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Release);
        if fh.0 == 0 {
            // The first open under zero-message opens, which the daemon never opened.
            reply.ok();
            return;
        }
        if let Some(l) = &self.ledger {
            l.forget(fh.0);
        }
        if self.inherited.any.load(Ordering::Relaxed) {
            self.inherited.versions.lock().remove(&fh.0);
        }
        if self.inherited.is_lost(fh.0) {
            self.inherited.lost.lock().remove(&fh.0);
            reply.ok();
            return;
        }
        if self.fs.is_write_handle(fh.0) {
            // A committed file's spool becomes its cached copy (checksummed): on the runtime.
            drop(self.modes.lock().release(fh.0));
            warpdrive_metrics::shift(&self.fs.metrics().fuse.open_handles, -1);
            let fs = self.fs.clone();
            self.rt.spawn(async move { fs.release_write(fh.0).await });
            reply.ok();
            return;
        }
        // Dropping a backing the inode no longer needs closes the kernel's id.
        if self.modes.lock().release(fh.0).is_some() {
            self.fs.backing_closed(Ino(ino.0));
        }
        self.fs.release(fh.0);
        warpdrive_metrics::shift(&self.fs.metrics().fuse.open_handles, -1);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Opendir);
        // `opendir` may start a listing task, so it runs inside the runtime's context.
        let _guard = self.rt.enter();
        match self.fs.opendir(Ino(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(failed(&self.fs, Op::Opendir, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count(Op::Readdir);
        let fs = self.fs.clone();
        let inherited = self.inherited.clone();
        self.rt.spawn(async move {
            let mut fh = fh.0;
            if let Some(ours) = inherited.dirs.lock().get(&fh) {
                fh = *ours;
            }
            let mut r = fs.readdir(fh, offset, READDIR_BATCH).await;
            if matches!(r, Err(FsError::BadHandle)) {
                // A previous daemon's handle: the directory is listed again, and the offset
                // means the same entry (listings are in key order).
                match fs.opendir(Ino(ino.0)) {
                    Ok(ours) => {
                        inherited.dirs.lock().insert(fh, ours);
                        r = fs.readdir(ours, offset, READDIR_BATCH).await;
                    }
                    Err(e) => r = Err(e),
                }
            }
            match r {
                Ok(entries) => {
                    for e in entries {
                        if reply.add(INodeNo(e.ino.0), e.next_offset, file_type(e.kind), &e.name) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(failed(&fs, Op::Readdir, &e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Releasedir);
        let fh = self.inherited.dirs.lock().remove(&fh.0).unwrap_or(fh.0);
        self.fs.releasedir(fh);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count(Op::Statfs);
        let s = self.fs.stats();
        reply.statfs(
            0,
            0,
            0,
            s.inodes,
            0,
            BLKSIZE,
            warpdrive_fs::NAME_MAX,
            BLKSIZE,
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        self.count(Op::Getxattr);
        let errno = FsError::NoAttribute.errno();
        self.fs.metrics().fuse.error(Op::Getxattr, errno);
        reply.error(Errno::from_i32(errno));
    }

    /// No device controls. Answered `ENOTTY` ("not a terminal") without logging: Python's
    /// `open` asks `isatty` of every file, and the default answer logged three lines each
    /// time (~188 KB of log per 1,000 opens).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.count(Op::Ioctl);
        let errno = FsError::NotATerminal.errno();
        self.fs.metrics().fuse.error(Op::Ioctl, errno);
        reply.error(Errno::from_i32(errno));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.count(Op::Listxattr);
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    // Everything below would change the filesystem: read-only.

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let other = mode.is_some() || uid.is_some() || gid.is_some() || flags.is_some();
        self.count(Op::Write);
        if fh.is_some_and(|f| self.inherited.is_lost(f.0)) {
            reply.error(lost_write());
            return;
        }
        let fs = self.fs.clone();
        run_here_or_spawn(&self.rt, async move {
            match fs.setattr(Ino(ino.0), fh.map(|f| f.0), size, other).await {
                Ok(a) => reply.attr(&a.kernel_ttl, &file_attr(&a)),
                Err(e) => reply.error(failed(&fs, Op::Write, &e)),
            }
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse());
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match self.write_op(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.mkdir(Ino(parent.0), &name).await {
                Ok(a) => reply.entry(&a.kernel_ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(failed(&fs, Op::Write, &e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply, false);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply, true);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse());
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let name = match self.write_op(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let Some(newname) = utf8(newname) else {
            return reply.error(self.read_only());
        };
        if flags
            .intersects(fuser::RenameFlags::RENAME_EXCHANGE | fuser::RenameFlags::RENAME_WHITEOUT)
        {
            // Objects cannot trade names atomically.
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        }
        let no_replace = flags.contains(fuser::RenameFlags::RENAME_NOREPLACE);
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs
                .rename(Ino(parent.0), &name, Ino(newparent.0), &newname, no_replace)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, Op::Write, &e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse());
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count(Op::Write);
        if self.inherited.is_lost(fh.0) {
            reply.error(lost_write());
            return;
        }
        let fs = self.fs.clone();
        // A file being written takes the bytes from the request's buffer here; the rest of
        // the write may wait (for room in the upload budget), in a task.
        if let Some(done) = fs.write_now(fh.0, offset, data) {
            run_here_or_spawn(&self.rt, async move {
                match done.await {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(failed(&fs, Op::Write, &e)),
                }
            });
            return;
        }
        // The request's buffer is the session thread's: the bytes are copied for the task.
        let data = data.to_vec();
        run_here_or_spawn(&self.rt, async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(failed(&fs, Op::Write, &e)),
            }
        });
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match self.write_op(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let ledger = self.ledger.clone();
        self.hold.run(&self.rt, async move {
            match fs.create(Ino(parent.0), &name).await {
                Ok((a, o)) => {
                    warpdrive_metrics::shift(&fs.metrics().fuse.open_handles, 1);
                    if let Some(l) = &ledger {
                        l.record(o.fh, Ino(a.ino.0), HandleMode::Writing);
                    }
                    reply.created(
                        &a.kernel_ttl,
                        &file_attr(&a),
                        Generation(0),
                        FileHandle(o.fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(failed(&fs, Op::Write, &e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse());
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse());
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls that start writing run at once, are parked while a handover is decided, and
    /// run after all if it is called off; `close` waits for those under way.
    #[test]
    fn the_hold_parks_writers_during_a_handover() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let hold = Arc::new(Hold::default());
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = |ran: &Arc<std::sync::atomic::AtomicUsize>| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
            }
        };
        hold.run(rt.handle(), task(&ran));
        assert_eq!(ran.load(Ordering::SeqCst), 1, "runs at once");
        rt.block_on(hold.close());
        hold.run(rt.handle(), task(&ran));
        hold.run(rt.handle(), task(&ran));
        assert_eq!(hold.held(), 2);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "parked, not run");
        hold.open(rt.handle());
        rt.block_on(async {
            while ran.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        assert_eq!(hold.held(), 0);
        // A call still waiting (on the store, say) keeps `close` waiting.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        hold.run(rt.handle(), async move {
            let _ = rx.await;
        });
        let closing = rt.spawn({
            let hold = hold.clone();
            async move { hold.close().await }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!closing.is_finished(), "waits for the call under way");
        tx.send(()).expect("send");
        rt.block_on(closing).expect("closed");
    }
}
