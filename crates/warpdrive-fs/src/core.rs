//! The filesystem core: every operation, without FUSE.
//!
//! The namespace is `/<backend>/<key components...>`. The root lists the configured backends;
//! below a backend, a directory is a key prefix and its children come from a paged
//! list-with-delimiter ([`crate::listing`]). Metadata is trusted for the configured TTL:
//!
//! * `lookup` answers from the parent's listing while it is complete and fresh (including
//!   "no such name", without a request); otherwise it asks the store (`core/meta.rs`).
//! * `getattr` of a file re-HEADs when its metadata is older than the TTL.
//! * `opendir`/`readdir` serve pinned listing snapshots as their pages stream in
//!   (`core/dirs.rs`).
//! * `open` pins the object's version (size and ETag); reads of that handle use `If-Match`, so
//!   a handle never mixes bytes of two versions: if the object changes, reads fail with
//!   `ESTALE` and the next open sees the new version. Whenever fresh metadata shows a new
//!   ETag (a HEAD after the TTL, a listing, a 412), the old version's cached blocks are
//!   dropped and the kernel's page cache of the inode is invalidated. This is also how a
//!   cache reused after a restart is revalidated: lazily, at each object's next open.
//! * `open` of a fully cached object hands the kernel its cache file (FUSE passthrough) when
//!   allowed, after checking every block's CRC32C once per daemon lifetime; otherwise it asks
//!   the kernel to keep its page cache across opens of an unchanged version.
//! * `read` goes through the block read path ([`crate::blocks`]).
//! * With zero-message opens (`fuse.zero_message_opens`) the kernel opens files without
//!   asking, and reads arrive with file handle 0: the first such read of an inode opens it
//!   here ([`Fs::open_inode`]), and that one handle serves every descriptor of the inode. An
//!   inode still reads one version: once its object changes the inode is retired (`ESTALE`
//!   for bytes the kernel does not hold) and the path's next lookup gets a new inode.
//!
//! All operations are `async` and run on the daemon's one tokio runtime; the FUSE adapter only
//! spawns them and replies. Tests drive this type directly, without a kernel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use warpdrive_cache::{Cache, ObjectId};
use warpdrive_config::MetadataTtl;
use warpdrive_metrics::Metrics;
use warpdrive_store::{Backend, StoreError, valid_component};

use crate::blocks::{Begun, BlockReader, Object, Pending, Stream};
use crate::control::Control;
use crate::error::{FsError, FsResult};
use crate::inode::{BackendId, Ino, InodeTable, Kind, Node, NodePath};
use crate::listing::{Entry, Listing, Status};
use crate::negative::{NEGATIVE_MAX, Negatives};
use crate::plan::Reach;

mod control;
mod dirs;
mod meta;
mod passthrough;
mod plans;
mod session;
mod warm;
mod write;
pub use dirs::LOOKUP_LISTING_MAX;
pub use plans::{IN_FLIGHT as PLAN_IN_FLIGHT, MAX_LEAD as PLAN_MAX_LEAD};
pub use warm::{Listed, Warmed};

/// Settings of the core, built once from the config.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub metadata_ttl: MetadataTtl,
    /// How long past the TTL known metadata is served while the store cannot be asked.
    pub stale_if_error: Duration,
    /// How long a name the store said does not exist is answered `ENOENT` without asking.
    pub negative_ttl: Duration,
    /// Owner reported for every file: the daemon's user, so the mount's owner can read it.
    pub uid: u32,
    pub gid: u32,
    /// Block size when there is no cache (with one, the cache's).
    pub block_size: u64,
    /// Bytes of prefetch in flight at once, over all handles (0: none).
    pub prefetch_budget: u64,
    /// Hand fully cached files to the kernel (FUSE passthrough) when it supports it.
    pub passthrough: bool,
    /// Files smaller than this are not handed over: they open faster keep-cache.
    pub passthrough_min_size: u64,
    /// The mount point, when the control directory `.warpdrive` is served (absolute paths
    /// in plans written to it are taken below it); `None`: no control directory.
    pub control: Option<std::path::PathBuf>,
    /// Part size of the uploads of files written through the mount.
    pub write_part_size: u64,
    /// Memory the parts of those uploads in flight may hold, over every file.
    pub write_memory: u64,
}

/// Default [`FsConfig::write_part_size`]: large parts, few requests (at least 5 MiB on S3).
pub const WRITE_PART_SIZE: u64 = 16 << 20;
/// Default [`FsConfig::write_memory`].
pub const WRITE_MEMORY: u64 = 256 << 20;

/// Asks the kernel to drop its cached pages of an inode.
pub type Invalidator = Arc<dyn Fn(Ino) + Send + Sync>;

/// Where the invalidator is kept, once the FUSE session exists, with the queue of its
/// worker: one thread makes the kernel forget inodes whose object changed, in order, however
/// many change at once (a listing refresh that sees 10,000 new ETags queues 10,000 inodes,
/// not 10,000 threads). The kernel may wait on the very request that found the change, so
/// the call cannot be made on that request's thread.
#[derive(Default)]
struct InvalidatorSlot(RwLock<Option<(Invalidator, std::sync::mpsc::Sender<Ino>)>>);

impl std::fmt::Debug for InvalidatorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.read().is_some() {
            "set"
        } else {
            "unset"
        })
    }
}

/// How an opened file is to be served.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    /// The kernel may keep its page cache of the file from an earlier open.
    pub keep_cache: bool,
    /// Serve reads from this cache file in the kernel (FUSE passthrough): the cache's id of
    /// the object version, and its data file.
    pub passthrough: Option<(u64, std::fs::File)>,
    /// Reads and writes go straight to the daemon, past the page cache, and `close` is
    /// sent (the control file); else the kernel need not tell the daemon of a `close`.
    pub direct: bool,
}

/// Attributes of a node, FUSE-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// How long the kernel may cache this (entry and attributes): what is left of the
    /// metadata's `metadata_ttl`, so the kernel's cache never outlives the daemon's trust.
    pub kernel_ttl: Duration,
}

/// A directory entry handed to `readdir`, with the offset of the entry after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
    pub next_offset: u64,
}

/// A read waiting for fetches (see [`Fs::read_start`]).
#[derive(Debug)]
pub struct PendingRead {
    h: Arc<FileHandle>,
    offset: u64,
    size: u32,
    p: Pending,
    /// The plan (job, rank) that reads this file, if any: its reader's waits are its stalls.
    plan: Option<Arc<plans::Run>>,
}

/// How [`Fs::read_start`] left a read.
#[derive(Debug)]
pub enum ReadStart {
    Done(FsResult<Bytes>),
    Pending(PendingRead),
}

/// An open file.
#[derive(Debug)]
struct FileHandle {
    fh: u64,
    obj: Object,
    stream: Mutex<Stream>,
    /// The cache object pinned against eviction while the kernel reads its file directly.
    pinned: Mutex<Option<u64>>,
}

/// An open directory: the listing snapshot it reads from.
#[derive(Debug)]
struct DirHandle {
    ino: Ino,
    listing: Arc<Listing>,
    /// Directories made here by `mkdir` that the store does not show (listed after the
    /// store's entries).
    made: Vec<(String, Ino)>,
}

/// Summary numbers for `statfs`.
#[derive(Debug, Clone, Copy)]
pub struct FsStats {
    pub inodes: u64,
}

/// The relative key of `name` inside directory key `dir` (`""` is the backend root).
fn join_key(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `.` and `..` are handed out with offsets 1 and 2; listing entry `i` with offset
/// `i + FIRST_ENTRY_OFFSET`.
const FIRST_ENTRY_OFFSET: u64 = 3;

/// The filesystem.
#[derive(Debug)]
pub struct Fs {
    cfg: FsConfig,
    backends: Vec<Arc<Backend>>,
    inodes: InodeTable,
    files: RwLock<HashMap<u64, Arc<FileHandle>>>,
    dirs: RwLock<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    started: SystemTime,
    reader: Arc<BlockReader>,
    metrics: Arc<Metrics>,
    invalidator: InvalidatorSlot,
    /// Whether the kernel accepted FUSE passthrough (set by the adapter at init).
    passthrough_ready: AtomicBool,
    /// When each backend last logged that stale metadata is being served (the log says so
    /// once per [`STALE_WARN_EVERY`] per backend, however many answers are served).
    stale_warned: Mutex<HashMap<BackendId, Instant>>,
    /// Inodes whose handles read by passthrough: the cache file (object id) they share, and
    /// how many handles hold it (pins taken for passthrough and not yet let go).
    backed: Mutex<HashMap<Ino, (u64, u32)>>,
    /// Backends whose last revalidation could not reach the store, and when: for
    /// [`STALE_RECHECK`] after that, known metadata is served without asking again, so an
    /// outage costs one short wait per backend, not one per `open`.
    failing: Mutex<HashMap<BackendId, Instant>>,
    /// Names the store said do not exist, answered `ENOENT` for `negative_ttl`.
    negatives: Negatives,
    /// The handle of each inode read without an open of its own (zero-message opens: the
    /// kernel sends reads with file handle 0), opened at its first read, kept while the
    /// daemon runs (the kernel never says when the last descriptor closed).
    by_inode: Mutex<HashMap<Ino, u64>>,
    /// Epoch plans, one per job and rank, each with its prefetch task; eviction asks them
    /// which cached objects are read next.
    plans: Arc<plans::Plans>,
    /// The control file's handles (`<mount>/.warpdrive/plan`).
    control: Control,
    /// Files being written through the mount, and what it made.
    writes: write::Writes,
    /// Cache files a previous daemon handed the kernel for passthrough, still read through
    /// handles it opened: pinned here (as that daemon had) until their backing closes.
    adopted: Mutex<HashMap<Ino, (ObjectId, u64)>>,
}

/// How often a backend's "serving stale metadata" warning is repeated during an outage.
const STALE_WARN_EVERY: Duration = Duration::from_secs(60);
/// How long after a failed revalidation a backend is not asked again (the most a store that
/// has come back may be answered stale for).
const STALE_RECHECK: Duration = Duration::from_secs(5);

impl Fs {
    /// A filesystem over `backends`, in mount-table order, caching blocks in `cache`.
    pub fn new(cfg: FsConfig, backends: Vec<Arc<Backend>>, cache: Option<Arc<Cache>>) -> Arc<Fs> {
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), "unknown"));
        Fs::with_metrics(cfg, backends, cache, metrics)
    }

    /// As [`Fs::new`], recording into the daemon's metrics.
    pub fn with_metrics(
        cfg: FsConfig,
        backends: Vec<Arc<Backend>>,
        cache: Option<Arc<Cache>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Fs> {
        let reader = Arc::new(BlockReader::new(
            cache,
            cfg.block_size,
            cfg.prefetch_budget,
            metrics.read.clone(),
        ));
        let fs = Fs {
            metrics,
            reader,
            invalidator: InvalidatorSlot::default(),
            passthrough_ready: AtomicBool::new(false),
            stale_warned: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
            backed: Mutex::new(HashMap::new()),
            negatives: Negatives::new(cfg.negative_ttl, NEGATIVE_MAX),
            by_inode: Mutex::new(HashMap::new()),
            plans: Arc::default(),
            control: Control::new(cfg.control.clone()),
            writes: write::Writes::new(crate::writer::WriteLimits::new(
                cfg.write_part_size,
                cfg.write_memory,
            )),
            cfg,
            backends,
            inodes: InodeTable::new(),
            files: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            started: SystemTime::now(),
            adopted: Mutex::new(HashMap::new()),
        };
        if let Some(cache) = fs.reader.cache() {
            let plans = fs.plans.clone();
            let names: Vec<String> = fs.backends.iter().map(|b| b.name().to_string()).collect();
            cache.set_advisor(Arc::new(move |objects: &[(&str, &str)]| {
                plans.advise(&names, objects)
            }));
        }
        // Backend roots get the lowest numbers after the root, in config order.
        for i in 0..fs.backends.len() {
            fs.inodes.get_or_create(
                NodePath {
                    backend: Some(BackendId(i)),
                    key: String::new(),
                },
                Kind::Dir,
            );
        }
        Arc::new(fs)
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The read path (blocks, prefetch and cache).
    pub fn reader(&self) -> &Arc<BlockReader> {
        &self.reader
    }

    /// Counters of the read path and the cache.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The block cache, if there is one.
    pub fn cache(&self) -> Option<&Arc<Cache>> {
        self.reader.cache()
    }

    /// Sets how the kernel is told to drop an inode's cached pages.
    pub fn set_invalidator(&self, f: Invalidator) {
        let (tx, rx) = std::sync::mpsc::channel::<Ino>();
        let call = f.clone();
        let started = std::thread::Builder::new()
            .name("warpdrive-inval".into())
            .spawn(move || {
                // Ends when the filesystem (the sender) is dropped.
                for ino in rx {
                    call(ino);
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start the invalidation thread; the kernel may keep an old version's pages until their TTL");
            return;
        }
        *self.invalidator.0.write() = Some((f, tx));
    }

    /// Queues `ino` for the invalidation worker (nothing before the FUSE session exists).
    fn queue_invalidation(&self, ino: Ino) {
        if let Some((_, tx)) = &*self.invalidator.0.read() {
            let _ = tx.send(ino);
        }
    }

    /// Whether passthrough is configured (the adapter then asks the kernel for it).
    pub fn wants_passthrough(&self) -> bool {
        self.cfg.passthrough && self.reader.cache().is_some()
    }

    /// Records that the kernel accepted FUSE passthrough.
    pub fn set_passthrough_ready(&self, ready: bool) {
        self.passthrough_ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the kernel accepted FUSE passthrough.
    pub fn passthrough_ready(&self) -> bool {
        self.passthrough_ready.load(Ordering::Relaxed)
    }

    /// The object at `node` changed (or vanished): drop its cached blocks and the kernel's
    /// pages.
    fn version_changed(&self, node: &Node) {
        self.drop_cached(node);
        {
            let mut st = node.state.lock();
            st.opened_etag = None;
            st.kernel_stale = true;
        }
        self.queue_invalidation(node.ino);
    }
    /// Drops the cached blocks of the version of `node`'s object the cache holds.
    fn drop_cached(&self, node: &Node) {
        if let (Some(bid), Some(cache)) = (node.path.backend, self.reader.cache())
            && let Err(e) = cache.invalidate(self.backend(bid).name(), &node.path.key)
        {
            self.reader.cache_error(&e);
        }
    }

    fn node(&self, ino: Ino) -> FsResult<Arc<Node>> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    fn backend(&self, id: BackendId) -> &Arc<Backend> {
        &self.backends[id.0]
    }

    /// Opens a file for reading; `write` is whether any write access was asked for.
    pub async fn open(&self, ino: Ino, write: bool) -> FsResult<Opened> {
        self.open_as(ino, write, true).await
    }

    /// The handle serving reads of `ino` sent with file handle 0 (zero-message opens), if
    /// the inode has been read.
    pub fn inode_handle(&self, ino: Ino) -> Option<u64> {
        self.by_inode.lock().get(&ino).copied()
    }

    /// Opens `ino` for the reads the kernel sends with file handle 0 when it opens files
    /// without asking (zero-message opens); the handle is kept for the inode (one per inode:
    /// concurrent first reads share the first one made).
    pub async fn open_inode(&self, ino: Ino) -> FsResult<u64> {
        if let Some(fh) = self.inode_handle(ino) {
            return Ok(fh);
        }
        let o = self.open_as(ino, false, false).await?;
        if o.passthrough.is_some() {
            self.passthrough_declined(o.fh);
        }
        let (kept, spare) = {
            let mut m = self.by_inode.lock();
            let kept = *m.entry(ino).or_insert(o.fh);
            (kept, (kept != o.fh).then_some(o.fh))
        };
        if let Some(spare) = spare {
            self.release(spare);
        }
        Ok(kept)
    }

    /// [`Fs::open`]. `by_kernel`: an open the kernel asked for, which the reader's plan
    /// counts, and before whose answer a stale inode's kernel pages are dropped; else the
    /// handle of an inode read without opens, opened inside a read (the drop is queued: the
    /// read holds the pages it would wait for).
    async fn open_as(&self, ino: Ino, write: bool, by_kernel: bool) -> FsResult<Opened> {
        if crate::control::owns(ino) {
            return self.control_open(ino);
        }
        if write {
            return self.open_write(ino, false).await;
        }
        let node = self.node(ino)?;
        if let Some(o) = self.open_written(&node).await {
            // Written through this mount and not yet released: read from its spool.
            return Ok(o);
        }
        let obj = self.object_of(&node).await?;
        if by_kernel && self.plans.any() {
            // The reader starts on the file. (An inode's handle for reads without opens
            // counts its reads from the start instead.)
            self.plan_read(&obj, Reach::Whole);
        }
        let (pinned, passthrough) = self.passthrough_offer(&obj).await;
        // Bytes the kernel may hold from a read before the object failed its store checksum
        // are dropped like an old version's.
        let damaged = self.reader.integrity.take_dropped(ino);
        let (keep_cache, stale) = {
            let mut st = node.state.lock();
            let same = st.opened_etag.as_deref() == Some(obj.id.etag.as_str());
            let first = st.opened_etag.is_none();
            let stale = std::mem::take(&mut st.kernel_stale) || damaged;
            st.opened_etag = Some(obj.id.etag.clone());
            ((same || first) && !stale && !obj.id.etag.is_empty(), stale)
        };
        if stale && !by_kernel {
            self.queue_invalidation(ino);
        } else if stale {
            // The kernel may still hold the old version's size (its attributes live for the
            // TTL) and pages: drop them before this open is answered, so that no read through
            // it sees the new bytes with the old size. The notification runs on a blocking
            // thread, since the kernel may need other requests answered to complete it.
            let inval = self.invalidator.0.read().as_ref().map(|(f, _)| f.clone());
            if let Some(inval) = inval {
                let _ = tokio::task::spawn_blocking(move || inval(ino)).await;
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        node.state.lock().handles += 1;
        let stats = &self.reader.stats;
        if passthrough.is_some() {
            warpdrive_metrics::add(&stats.passthrough_opens, 1);
        } else if keep_cache {
            warpdrive_metrics::add(&stats.keep_cache_opens, 1);
        }
        self.files.write().insert(
            fh,
            Arc::new(FileHandle {
                fh,
                obj,
                stream: Mutex::new(Stream::default()),
                pinned: Mutex::new(pinned),
            }),
        );
        Ok(Opened {
            fh,
            keep_cache,
            passthrough,
            direct: false,
        })
    }

    /// The object version file `node` reads now (its metadata revalidated after the TTL),
    /// with the cache checked against it.
    async fn object_of(&self, node: &Node) -> FsResult<Object> {
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let bid = node.path.backend.ok_or(FsError::IsDir)?;
        let info = self.file_info(node).await?;
        if node.state.lock().retired {
            // The object changed while this inode's handles were open; its path has a new
            // inode. ESTALE makes the kernel look the path up again and open that one.
            return Err(FsError::Stale);
        }
        let backend = self.backend(bid).clone();
        let obj = Object {
            ino: node.ino,
            id: Arc::new(ObjectId {
                backend: backend.name().to_string(),
                key: node.path.key.clone(),
                etag: info.etag.clone().unwrap_or_default(),
            }),
            backend,
            size: info.size,
        };
        // A cache filled before a restart (or before the TTL ran out) is checked against
        // the version the store shows now.
        if let Some(cache) = self.reader.cache()
            && let Some((etag, size)) = cache.cached_version(&obj.id.backend, &obj.id.key)
            && (etag != obj.id.etag || size != obj.size)
        {
            tracing::info!(
                backend = obj.id.backend,
                key = obj.id.key,
                "object changed on the backend; dropping its cached blocks"
            );
            self.version_changed(node);
        }
        Ok(obj)
    }

    /// Opens `ino` for writing (an open with write access): a file being written here, or
    /// an object under a writable prefix to be replaced (`truncate`: `O_TRUNC`, and the
    /// backend allows overwrites).
    pub async fn open_writing(&self, ino: Ino, truncate: bool) -> FsResult<Opened> {
        if crate::control::owns(ino) {
            return self.control_open(ino);
        }
        self.open_write(ino, truncate).await
    }

    /// Reads up to `size` bytes at `offset` through handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        if self.is_write_handle(fh) {
            return self.read_written(fh, offset, size).await;
        }
        match self.read_start(fh, offset, size) {
            ReadStart::Done(r) => r,
            ReadStart::Pending(p) => self.read_finish(p).await,
        }
    }

    /// Starts a read: done at once when every block is cached (the FUSE adapter then answers
    /// from its own thread, with no hop to the runtime), else pending on fetches, to
    /// complete with [`Fs::read_finish`]. Must run inside the tokio runtime's context.
    pub fn read_start(&self, fh: u64, offset: u64, size: u32) -> ReadStart {
        if crate::control::owns_fh(fh) {
            return ReadStart::Done(self.control_read(fh, offset, size).map(Bytes::from));
        }
        let Some(h) = self.files.read().get(&fh).cloned() else {
            return ReadStart::Done(Err(FsError::BadHandle));
        };
        let plan = if self.plans.any() {
            // Without opens (zero-message opens), a read of a file's start is its open.
            let start = offset == 0 && self.inode_handle(h.obj.ino) == Some(fh);
            let whole = start
                .then(|| self.plan_read(&h.obj, Reach::Whole))
                .flatten();
            self.plan_read(&h.obj, Reach::At(offset)).or(whole)
        } else {
            None
        };
        match self
            .reader
            .begin(&h.obj, &h.stream, offset, u64::from(size))
        {
            Begun::Ready(r) => {
                ReadStart::Done(r.map_err(|e| self.read_failed(&h, offset, size, e)))
            }
            Begun::Pending(p) => ReadStart::Pending(PendingRead {
                h,
                offset,
                size,
                p,
                plan,
            }),
        }
    }

    /// Completes a read [`Fs::read_start`] left pending.
    pub async fn read_finish(&self, r: PendingRead) -> FsResult<Bytes> {
        let PendingRead {
            h,
            offset,
            size,
            p,
            plan,
        } = r;
        let started = Instant::now();
        let r = self.reader.complete(p).await;
        self.metrics.plan.read_wait(
            &h.obj.id.backend,
            plan.as_ref().map(|r| r.id()),
            started.elapsed(),
        );
        r.map_err(|e| self.read_failed(&h, offset, size, e))
    }

    /// The error a failed read returns; a changed or vanished object is forgotten first.
    fn read_failed(&self, h: &FileHandle, offset: u64, size: u32, e: Arc<StoreError>) -> FsError {
        if matches!(
            *e,
            StoreError::PreconditionFailed { .. } | StoreError::NotFound { .. }
        ) && let Some(n) = self.inodes.get(h.obj.ino)
        {
            if self.inode_handle(h.obj.ino) == Some(h.fh) {
                // Every descriptor of the inode reads through this handle: the inode stays
                // the old version (ESTALE for what the kernel does not hold) and the path's
                // next lookup asks the store and gets a new inode.
                self.retire(&n);
            } else if !n.state.lock().retired {
                // The object changed or is gone: forget its metadata so the next lookup
                // or open asks the store again, and drop what is cached of it. (A retired
                // inode keeps its version's metadata for good: its handles' `fstat` must
                // not turn into the new version's.)
                n.state.lock().info = None;
                self.version_changed(&n);
            }
        }
        if let StoreError::PreconditionFailed { .. } = *e {
            tracing::warn!(
                ino = h.obj.ino.0,
                "object changed while open; reopen to read the new version"
            );
            return FsError::Stale;
        }
        tracing::warn!(ino = h.obj.ino.0, offset, size, error = %e, "read failed");
        FsError::Store((*e).clone())
    }

    /// The FUSE adapter could not use passthrough for handle `fh` after all: releases the
    /// pin taken for it (reads then go through the daemon).
    pub fn passthrough_declined(&self, fh: u64) {
        let Some(h) = self.files.read().get(&fh).cloned() else {
            return;
        };
        let pinned = h.pinned.lock().take();
        self.let_go(&h.obj, pinned);
    }

    pub fn release(&self, fh: u64) {
        if crate::control::owns_fh(fh) {
            self.control.release(fh);
            return;
        }
        let Some(h) = self.files.write().remove(&fh) else {
            return;
        };
        self.reader.close(h.obj.ino, &h.stream);
        let pinned = h.pinned.lock().take();
        self.let_go(&h.obj, pinned);
        if let Ok(node) = self.node(h.obj.ino) {
            let mut st = node.state.lock();
            st.handles = st.handles.saturating_sub(1);
        }
    }

    pub fn stats(&self) -> FsStats {
        FsStats {
            inodes: self.inodes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests;
