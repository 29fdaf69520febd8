//! WarpDrive's on-disk block cache (no FUSE here: `warpdrive-ctl` links it directly).
//!
//! Layout under the cache directory (created 0700):
//!
//! * `data/<id>.blk`: one sparse file per cached object version, as long as the object, with
//!   each cached block at its own offset. Keeping bytes where they belong is what lets the
//!   daemon later hand the file to the kernel for FUSE passthrough.
//! * `index.db`: SQLite (WAL) with the objects (backend, key, ETag, size, last access), each
//!   cached block's CRC32Cs (one per [`CHECK_UNIT`] of the block), and persisted counters
//!   ([`index`]).
//!
//! An object is identified by (backend, key) and holds blocks of exactly one version (ETag):
//! storing a block of a new version drops the old version first, so bytes of two versions are
//! never mixed. Every read checks the CRC32C of each check unit it reads; a mismatch drops the
//! whole block (it is refetched) and is counted. Checking in units smaller than a block lets a
//! 128 KiB read of a 1 MiB block read and check 128 KiB, not the whole block. At open, data files the index does not know are removed, and an
//! index of another format version is rebuilt empty.
//!
//! Eviction ([`evict`]) drops least recently used data to a size cap and a free-space floor.
//!
//! Only one process may use a cache directory at a time: [`Cache::open`] takes an exclusive
//! lock on `lock` in it and a second daemon is refused ([`CacheError::Locked`]).
//!
//! Admission keeps the cache inside its limits ([`Limits`]): a block that would push the
//! cache over its size cap, or the disk under its free-space floor, first evicts least
//! recently used data; if that cannot make room the block is simply not cached
//! ([`CacheError::NoRoom`]), so the cache never fills the disk.

mod blocks;
mod error;
mod evict;
mod index;
mod maintenance;
mod offline;
mod quota;
mod verify;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::RwLock;

use error::io;
pub use error::{CacheError, Result};
pub use evict::{Advisor, EvictOutcome, Evicted, Limit, Limits, NextUse, disk_usage};
pub use index::FORMAT_VERSION;
use index::Op;
pub use maintenance::{CounterPersistence, ReadTotals};
pub use offline::{
    IndexObject, IndexSummary, check_index, read_index_blocks, read_index_objects,
    read_index_summary,
};
use quota::QuotaSet;
pub use quota::{Quota, QuotaPath, QuotaUse, in_dir, validate as validate_quotas};
pub use verify::{Checked, Feed, ObjectCheck, VerifyOutcome, WholeCheck};

/// Default block size (the config's default is the one that counts; see doc/BENCHMARKS.md).
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// Each block is checked in units of this many bytes (the smallest block size), one CRC32C
/// per unit: a read of part of a block reads and checks only the units it touches.
pub const CHECK_UNIT: u64 = 64 << 10;

/// The CRC32Cs of one block, one per [`CHECK_UNIT`] (the last unit may be short).
/// Shared, so a read takes the list without copying it.
pub(crate) type Crcs = Arc<[u32]>;

/// See [`Cache::data_fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFingerprint {
    pub ino: u64,
    pub len: u64,
    pub ctime_ns: i128,
}

/// The CRC32C of each check unit of `data`.
pub(crate) fn unit_crcs(data: &[u8]) -> Crcs {
    data.chunks(CHECK_UNIT as usize)
        .map(crc32c::crc32c)
        .collect()
}

/// Data files kept open for reads and writes: opening the file for every block would cost
/// more than reading the block.
const MAX_OPEN_FILES: usize = 256;
/// Stripes of [`Cache::write_turns`].
const WRITE_TURNS: usize = 16;

/// Last-access times are persisted at most this often per object: eviction needs the order of
/// use to the minute, not a write per read.
const TOUCH_GRANULARITY_SECS: i64 = 60;

/// One version of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub backend: String,
    pub key: String,
    pub etag: String,
}

/// The number of a block within an object: bytes `[n * block_size, (n + 1) * block_size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockIndex(pub u64);

/// One cached block, as [`Cache::cached_blocks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBlock {
    pub backend: String,
    pub key: String,
    /// The data file holding it.
    pub path: PathBuf,
    /// Its offset in the object and the data file.
    pub offset: u64,
    pub len: u64,
}

/// Settings of the cache store.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub block_size: u64,
}

/// Totals for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub corrupt_blocks: u64,
    /// Blocks evicted, over the cache's lifetime (persisted).
    pub evicted_blocks: u64,
}

/// See [`Cache::quick_stats`]. Corrupt and evicted blocks are lifetime counts (persisted).
#[derive(Debug, Default, Clone, Copy)]
pub struct QuickStats {
    pub used_bytes: u64,
    /// The size cap in bytes, as of the last eviction pass (`u64::MAX` before the first).
    pub max_bytes: u64,
    pub objects: u64,
    pub corrupt_blocks: u64,
    pub evicted_blocks: u64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    etag: String,
    size: u64,
    /// Cached blocks and their CRC32Cs.
    blocks: HashMap<u64, Crcs>,
    /// Unix seconds of the last read, for least-recently-used eviction. Atomic so that a
    /// read under the shared lock can move it.
    last_access: AtomicI64,
    /// Open handles reading the data file directly (passthrough); eviction skips the object
    /// while any is open, since the kernel would read holes.
    pins: AtomicU32,
    /// The store's whole-object checksum of this version, in its text form, once known
    /// (kept so that later checks need no request).
    store_checksum: Option<String>,
    /// The cached bytes matched `store_checksum` when last checked whole, and no block was
    /// written since: a check after a restart need not hash the whole again.
    store_verified: bool,
}

impl Entry {
    fn new(id: u64, etag: String, size: u64, blocks: HashMap<u64, Crcs>, last_access: i64) -> Self {
        Entry {
            id,
            etag,
            size,
            blocks,
            last_access: AtomicI64::new(last_access),
            pins: AtomicU32::new(0),
            store_checksum: None,
            store_verified: false,
        }
    }
}

/// backend → key → cached version. Two levels rather than a `(backend, key)` tuple so that a
/// lookup borrows the caller's strings instead of allocating a key on every read.
#[derive(Debug, Default)]
struct Objects(HashMap<String, HashMap<String, Entry>>);

impl Objects {
    fn get(&self, backend: &str, key: &str) -> Option<&Entry> {
        self.0.get(backend)?.get(key)
    }

    fn get_mut(&mut self, backend: &str, key: &str) -> Option<&mut Entry> {
        self.0.get_mut(backend)?.get_mut(key)
    }

    fn insert(&mut self, backend: &str, key: &str, e: Entry) -> Option<Entry> {
        self.0
            .entry(backend.to_string())
            .or_default()
            .insert(key.to_string(), e)
    }

    fn remove(&mut self, backend: &str, key: &str) -> Option<Entry> {
        self.0.get_mut(backend)?.remove(key)
    }

    /// Every (backend, key, entry).
    fn iter(&self) -> impl Iterator<Item = (&str, &str, &Entry)> {
        self.0
            .iter()
            .flat_map(|(b, m)| m.iter().map(move |(k, e)| (b.as_str(), k.as_str(), e)))
    }

    fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }
}

/// The cache store.
#[derive(Debug)]
pub struct Cache {
    cfg: CacheConfig,
    data_dir: PathBuf,
    /// Where files written through the mount are kept while they are written (on the cache's
    /// disk, so a committed one becomes a cached object by a rename: [`Cache::adopt`]).
    spool_dir: PathBuf,
    /// The cached version of each object. A `parking_lot` lock: nothing awaits under it and
    /// no I/O happens while it is held.
    objects: RwLock<Objects>,
    next_id: AtomicU64,
    corrupt: AtomicU64,
    evicted: AtomicU64,
    tx: parking_lot::Mutex<Option<mpsc::Sender<Op>>>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Open data files by object id.
    files: parking_lot::Mutex<HashMap<u64, Arc<File>>>,
    /// Writers of one data file take turns here (striped by object id) rather than in the
    /// filesystem: ext4 holds the inode's lock for a buffered write, and a writer waiting for
    /// it spins while the holder runs. In a cold read on two cores that spinning was 45 % of
    /// the I/O threads' CPU, taken from the reader and the store; a waiter here sleeps.
    write_turns: [parking_lot::Mutex<()>; WRITE_TURNS],
    /// Bytes of cached blocks.
    used: AtomicU64,
    /// Admission limits; `None` admits everything.
    limits: RwLock<Option<Limits>>,
    /// The limits in bytes, and the disk's free bytes, as of the last eviction pass (free
    /// bytes shrink with every block written since).
    max_bytes: AtomicU64,
    min_free_bytes: AtomicU64,
    free_estimate: AtomicU64,
    /// One eviction pass at a time.
    evicting: parking_lot::Mutex<()>,
    /// Team quotas in force ([`quota`]).
    quotas: RwLock<Arc<QuotaSet>>,
    /// What the readers' plans say of each object's next use ([`Advisor`]); without one,
    /// eviction is least recently used first.
    advisor: evict::AdvisorSlot,
    /// Held for the cache's lifetime: the exclusive lock on `<dir>/lock`.
    _lock: File,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Cache {
    /// Opens the cache in `cfg.dir`, creating it (0700) if needed, loading the index and
    /// removing data files the index does not know.
    pub fn open(cfg: CacheConfig) -> Result<Cache> {
        std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        std::fs::set_permissions(&cfg.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&cfg.dir))?;
        let lock = lock_dir(&cfg.dir)?;
        let data_dir = cfg.dir.join("data");
        std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;

        let index_path = cfg.dir.join("index.db");
        let read = || -> Result<_> {
            let (conn, _rebuilt) = index::open(&index_path, cfg.block_size)?;
            let loaded = index::load(&conn)?;
            let corrupt = index::counter(&conn, "corrupt_blocks")? as u64;
            let evicted = index::counter(&conn, "evicted_blocks")? as u64;
            Ok((conn, loaded, corrupt, evicted))
        };
        let (conn, loaded, corrupt, evicted) = match read() {
            Err(CacheError::Index(e)) if index::is_damage(&e) => {
                // A damaged index cannot say which blocks are sound: keep it for a post-mortem,
                // start empty (the data files it named are removed below as unknown).
                let aside = index::move_aside(&index_path);
                tracing::warn!(
                    error = %e,
                    moved_to = %aside.display(),
                    "the cache index is damaged; moved it aside and started an empty cache (cached data is fetched again)"
                );
                read()?
            }
            r => r?,
        };
        let mut objects = Objects::default();
        let mut max_id = 0;
        let mut used = 0;
        for o in loaded {
            max_id = max_id.max(o.id);
            let mut e = Entry::new(
                o.id,
                o.etag,
                o.size,
                o.blocks.into_iter().collect(),
                o.last_access,
            );
            e.store_checksum = o.store_checksum;
            e.store_verified = o.store_verified;
            used += cached_bytes(cfg.block_size, &e);
            objects.insert(&o.backend, &o.key, e);
        }
        // Remove data files no index row names (left by a crash between creating a file and
        // committing its row, or by a rebuilt index).
        let known: std::collections::HashSet<String> =
            objects.iter().map(|(_, _, e)| data_name(e.id)).collect();
        for entry in std::fs::read_dir(&data_dir).map_err(io(&data_dir))? {
            let entry = entry.map_err(io(&data_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(file = name, "removing a cache file the index does not know");
                let _ = std::fs::remove_file(entry.path());
            }
        }

        // Files being written through the mount are spooled here; what a stopped daemon left
        // was never committed (its writer got no successful close), so it goes.
        let spool_dir = cfg.dir.join("writes");
        std::fs::create_dir_all(&spool_dir).map_err(io(&spool_dir))?;
        for entry in std::fs::read_dir(&spool_dir).map_err(io(&spool_dir))? {
            let entry = entry.map_err(io(&spool_dir))?;
            tracing::info!(
                file = %entry.path().display(),
                "removing the spool of a write that was never committed"
            );
            let _ = std::fs::remove_file(entry.path());
        }

        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("cache-index".into())
            .spawn(move || index::run_writer(conn, rx))
            .map_err(io(&cfg.dir))?;
        Ok(Cache {
            cfg,
            data_dir,
            spool_dir,
            objects: RwLock::new(objects),
            next_id: AtomicU64::new(max_id + 1),
            corrupt: AtomicU64::new(corrupt),
            evicted: AtomicU64::new(evicted),
            tx: parking_lot::Mutex::new(Some(tx)),
            writer: parking_lot::Mutex::new(Some(writer)),
            files: parking_lot::Mutex::new(HashMap::new()),
            write_turns: std::array::from_fn(|_| parking_lot::Mutex::new(())),
            used: AtomicU64::new(used),
            limits: RwLock::new(None),
            max_bytes: AtomicU64::new(u64::MAX),
            min_free_bytes: AtomicU64::new(0),
            free_estimate: AtomicU64::new(u64::MAX),
            evicting: parking_lot::Mutex::new(()),
            quotas: RwLock::new(Arc::new(QuotaSet::default())),
            advisor: evict::AdvisorSlot::default(),
            _lock: lock,
        })
    }

    /// The open data file of object `id`, opened read-write on first use.
    fn file(&self, id: u64) -> Result<Arc<File>> {
        if let Some(f) = self.files.lock().get(&id) {
            return Ok(f.clone());
        }
        let path = self.data_path(id);
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?,
        );
        let mut files = self.files.lock();
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(id, f.clone());
        Ok(f)
    }

    /// Forgets object `id`'s data file: closes it and removes it from disk.
    fn remove_data(&self, id: u64) {
        self.files.lock().remove(&id);
        let _ = std::fs::remove_file(self.data_path(id));
    }

    pub fn block_size(&self) -> u64 {
        self.cfg.block_size
    }

    fn send(&self, op: Op) -> Result<()> {
        self.tx
            .lock()
            .as_ref()
            .ok_or(CacheError::WriterGone)?
            .send(op)
            .map_err(|_| CacheError::WriterGone)
    }

    /// Where files written through the mount are spooled.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    fn data_path(&self, id: u64) -> PathBuf {
        self.data_dir.join(data_name(id))
    }

    /// What identifies the current contents of this version's data file: its inode, size and
    /// change time (which every write, hole punch or permission change moves, and no caller
    /// can set back). Passthrough reads skip the checksums, so a file served that way is
    /// checked again whenever this differs from what it was when last checked. `None` if the
    /// version has no data file.
    pub fn data_fingerprint(&self, id: &ObjectId) -> Option<DataFingerprint> {
        use std::os::unix::fs::MetadataExt;
        let oid = {
            let objects = self.objects.read();
            let e = objects.get(&id.backend, &id.key)?;
            (e.etag == id.etag).then_some(e.id)?
        };
        let m = std::fs::metadata(self.data_path(oid)).ok()?;
        Some(DataFingerprint {
            ino: m.ino(),
            len: m.len(),
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })
    }

    /// The byte length of block `idx` of an object of `size` bytes.
    pub fn block_len(&self, size: u64, idx: BlockIndex) -> Result<u64> {
        let start = idx.0.checked_mul(self.cfg.block_size).filter(|s| *s < size);
        match start {
            Some(s) => Ok((size - s).min(self.cfg.block_size)),
            None => Err(CacheError::OutOfRange { block: idx.0, size }),
        }
    }

    /// Whether block `idx` of this version is cached.
    pub fn has_block(&self, id: &ObjectId, idx: BlockIndex) -> bool {
        let objects = self.objects.read();
        objects
            .get(&id.backend, &id.key)
            .is_some_and(|e| e.etag == id.etag && e.blocks.contains_key(&idx.0))
    }

    /// Puts `quotas` in force (replacing any before) and counts each team's cached bytes.
    pub fn set_quotas(&self, quotas: Vec<Quota>) -> std::result::Result<(), String> {
        quota::validate(&quotas)?;
        let set = QuotaSet::new(quotas);
        {
            let objects = self.objects.read();
            for (b, k, e) in objects.iter() {
                if let Some(t) = set.team_of(b, k) {
                    set.add(t, self.cached_bytes(e));
                }
            }
        }
        *self.quotas.write() = Arc::new(set);
        Ok(())
    }

    /// Each team's quota and the bytes and objects it has cached.
    pub fn quota_use(&self) -> Vec<QuotaUse> {
        let set = self.quotas.read().clone();
        let mut objects = vec![0u64; set.quotas.len()];
        for (b, k, _) in self.objects.read().iter() {
            if let Some(t) = set.team_of(b, k) {
                objects[t] += 1;
            }
        }
        set.quotas
            .iter()
            .zip(&set.used)
            .zip(objects)
            .map(|((q, used), objects)| QuotaUse {
                team: q.team.clone(),
                paths: q.paths.clone(),
                max_bytes: q.max_bytes,
                used_bytes: used.load(Ordering::Relaxed),
                objects,
            })
            .collect()
    }

    /// Drops every cached byte of `backend`/`key` (any version).
    pub fn invalidate(&self, backend: &str, key: &str) -> Result<()> {
        let old = self.objects.write().remove(backend, key);
        match old {
            Some(old) => self.forget(backend, key, old),
            None => Ok(()),
        }
    }

    /// The cached version of `backend`/`key`: its ETag and size, if any block is cached
    /// or the object was opened.
    pub fn cached_version(&self, backend: &str, key: &str) -> Option<(String, u64)> {
        let objects = self.objects.read();
        objects.get(backend, key).map(|e| (e.etag.clone(), e.size))
    }

    /// Whether every block of this version is cached.
    pub fn is_complete(&self, id: &ObjectId) -> bool {
        let objects = self.objects.read();
        objects.get(&id.backend, &id.key).is_some_and(|e| {
            e.etag == id.etag && e.blocks.len() as u64 == e.size.div_ceil(self.cfg.block_size)
        })
    }

    /// Every cached object, from memory (current to the last block written).
    pub fn objects(&self) -> Vec<IndexObject> {
        let objects = self.objects.read();
        objects
            .iter()
            .map(|(b, k, e)| IndexObject {
                backend: b.to_string(),
                key: k.to_string(),
                etag: e.etag.clone(),
                size: e.size,
                blocks: e.blocks.len() as u64,
                cached_bytes: self.cached_bytes(e),
                last_access: e.last_access.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Opens this version's data file for a reader that bypasses the cache (FUSE
    /// passthrough) and pins the object against eviction until [`Cache::unpin`]. `None`
    /// unless every block is cached.
    pub fn pin_complete(&self, id: &ObjectId) -> Result<Option<(u64, File)>> {
        let oid = {
            let objects = self.objects.read();
            match objects.get(&id.backend, &id.key) {
                Some(e)
                    if e.etag == id.etag
                        && e.blocks.len() as u64 == e.size.div_ceil(self.cfg.block_size) =>
                {
                    e.pins.fetch_add(1, Ordering::Relaxed);
                    e.id
                }
                _ => return Ok(None),
            }
        };
        let path = self.data_path(oid);
        match File::open(&path) {
            Ok(f) => Ok(Some((oid, f))),
            Err(e) => {
                self.unpin(id, oid);
                Err(io(&path)(e))
            }
        }
    }

    /// Pins cache file `object_id` of `id`'s object again (a replacement daemon taking over
    /// its predecessor's passthrough opens); false if the object no longer has that file.
    pub fn pin_again(&self, id: &ObjectId, object_id: u64) -> bool {
        let objects = self.objects.read();
        match objects.get(&id.backend, &id.key) {
            Some(e) if e.id == object_id => {
                e.pins.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Releases a pin taken by [`Cache::pin_complete`] (`object_id` is what it returned).
    pub fn unpin(&self, id: &ObjectId, object_id: u64) {
        let objects = self.objects.read();
        if let Some(e) = objects.get(&id.backend, &id.key)
            && e.id == object_id
        {
            e.pins.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every cached block: where it lives and how long it is (for scrubbing and tests).
    pub fn cached_blocks(&self) -> Vec<CachedBlock> {
        let objects = self.objects.read();
        let mut out = Vec::new();
        for (backend, key, e) in objects.iter() {
            push_blocks(
                &mut out,
                (&self.data_dir, self.cfg.block_size),
                (backend, key, e.id, e.size),
                e.blocks.keys().copied(),
            );
        }
        out.sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
        out
    }

    /// Bytes of cached blocks (kept up to date without walking the index).
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Figures cheap enough for every metrics scrape: no walk of the index.
    pub fn quick_stats(&self) -> QuickStats {
        QuickStats {
            used_bytes: self.used.load(Ordering::Relaxed),
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
            objects: self.objects.read().len() as u64,
            corrupt_blocks: self.corrupt.load(Ordering::Relaxed),
            evicted_blocks: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Adds to persisted lifetime counters (the daemon's hits and misses, by name).
    pub fn add_counters(&self, deltas: &[(&'static str, u64)]) -> Result<()> {
        for (name, delta) in deltas {
            if *delta > 0 {
                self.send(Op::AddCounter {
                    name,
                    delta: *delta as i64,
                })?;
            }
        }
        Ok(())
    }

    /// Waits until every change so far is committed to the index.
    pub fn flush(&self) -> Result<()> {
        let (done_tx, done_rx) = mpsc::channel();
        self.send(Op::Flush(done_tx))?;
        done_rx.recv().map_err(|_| CacheError::WriterGone)
    }

    /// Bytes of `e`'s blocks that are cached (the last block may be short).
    fn cached_bytes(&self, e: &Entry) -> u64 {
        cached_bytes(self.cfg.block_size, e)
    }

    /// Unix seconds when this object was last read (or first cached), if cached.
    pub fn last_access(&self, backend: &str, key: &str) -> Option<i64> {
        let objects = self.objects.read();
        objects
            .get(backend, key)
            .map(|e| e.last_access.load(Ordering::Relaxed))
    }

    pub fn stats(&self) -> CacheStats {
        let objects = self.objects.read();
        let mut s = CacheStats {
            objects: objects.len() as u64,
            corrupt_blocks: self.corrupt.load(Ordering::Relaxed),
            evicted_blocks: self.evicted.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (_, _, e) in objects.iter() {
            s.blocks += e.blocks.len() as u64;
            s.bytes += self.cached_bytes(e);
        }
        s
    }
}

impl Drop for Cache {
    /// Commits pending index changes and stops the writer.
    fn drop(&mut self) {
        let _ = self.flush();
        self.tx.lock().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }
}

/// The byte length of block `b` of an object of `size` bytes (0 past the end).
fn block_len(block_size: u64, size: u64, b: u64) -> u64 {
    size.saturating_sub(b.saturating_mul(block_size))
        .min(block_size)
}

/// Appends the [`CachedBlock`]s of one object.
fn push_blocks(
    out: &mut Vec<CachedBlock>,
    (data_dir, block_size): (&Path, u64),
    (backend, key, id, size): (&str, &str, u64, u64),
    blocks: impl Iterator<Item = u64>,
) {
    for b in blocks {
        out.push(CachedBlock {
            backend: backend.to_string(),
            key: key.to_string(),
            path: data_dir.join(data_name(id)),
            offset: b * block_size,
            len: block_len(block_size, size, b),
        });
    }
}

fn cached_bytes(block_size: u64, e: &Entry) -> u64 {
    e.blocks
        .keys()
        .map(|b| block_len(block_size, e.size, *b))
        .sum()
}

/// Takes the exclusive lock on `<dir>/lock` (and writes our pid in it), or says who holds it.
fn lock_dir(dir: &Path) -> Result<File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(CacheError::Locked {
                dir: dir.to_path_buf(),
                pid: pid.trim().to_string(),
            });
        }
        return Err(io(&path)(err));
    }
    f.set_len(0).map_err(io(&path))?;
    f.seek(std::io::SeekFrom::Start(0)).map_err(io(&path))?;
    write!(f, "{}", std::process::id()).map_err(io(&path))?;
    Ok(f)
}

fn data_name(id: u64) -> String {
    format!("{id:016x}.blk")
}

/// Builds a large cache for benchmarks without writing its bytes: `objects` objects of
/// `blocks` blocks each, recorded in the index with sparse (unallocated) data files.
/// Checksums are of zeros, which is what a sparse file reads as, so the blocks verify.
pub fn synthesize(cfg: &CacheConfig, backend: &str, objects: u64, blocks: u64) -> Result<()> {
    let cache = Cache::open(cfg.clone())?;
    let zeros_crc = unit_crcs(&vec![0u8; cfg.block_size as usize]);
    for o in 0..objects {
        let id = ObjectId {
            backend: backend.to_string(),
            key: format!("synthetic/{o:08}"),
            etag: "synthetic".into(),
        };
        let size = blocks * cfg.block_size;
        let oid = cache.entry_for(&id, size)?;
        let mut objects_w = cache.objects.write();
        let e = objects_w
            .get_mut(backend, &id.key)
            .ok_or(CacheError::WriterGone)?;
        for b in 0..blocks {
            e.blocks.insert(b, zeros_crc.clone());
            cache.send(Op::PutBlock {
                object_id: oid,
                block: b,
                crcs: zeros_crc.clone(),
            })?;
        }
    }
    cache.flush()
}

#[cfg(test)]
mod tests;
