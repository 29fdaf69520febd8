//! The block read path: cache hits, single-flight fetches and prefetch into the cache.
//!
//! A read is split into cache blocks. For each block, in this order:
//!
//! 1. a fetch of that block already in flight (for any handle of the same object version) is
//!    joined, so concurrent readers of a block cause one request;
//! 2. a cached block is read from its data file and its CRC32C checked (a damaged block
//!    counts as missing and is refetched);
//! 3. otherwise the block is missing: consecutive missing blocks become one ranged GET with
//!    `If-Match: <etag>`.
//!
//! The table of fetches in flight and the splitting of missing blocks into runs are
//! [`crate::flight`]. A fetch runs as its own task ([`fetch`]) and streams its GET: as soon as each block of the run has
//! arrived, the readers waiting on that block get it; the task then writes the block to the
//! cache (data file first, then the index) and only then takes it out of the in-flight
//! table, so a later reader finds a block either in flight or in the cache, never neither. A
//! run therefore costs one block of memory however long it is, and a reader waits for its
//! block, not for the whole run.
//!
//! Each open handle has a [`Stream`]: sequential detection for prefetch (the policy, as pure
//! functions with table tests, is [`crate::window`]). A read that starts
//! within the blocks the previous read ended in, or just after them, is sequential and
//! doubles the handle's window (1 block up to [`MAX_WINDOW`]); any other read resets it. On a
//! sequential read the blocks of the window ahead that are neither cached nor in flight are
//! fetched into the cache in runs of up to [`PREFETCH_RUN`], once the window has moved on by
//! a whole run (so steady-state GETs are a run long, not a block). Every prefetch holds
//! permits of one global budget of bytes in flight, shared by all handles, and gives each
//! back as its block lands in the cache; when the budget is used up, prefetch waits for the
//! next read rather than queueing, so any number of open files costs at most the budget.
//! A prefetched block goes to the cache and also waits in memory for its reader, holding its
//! share of the budget, while fewer than [`LANDED_MAX`] bytes of such blocks do (past that,
//! its reader reads it back from the cache), so a streaming reader's next block costs no disk
//! read.
//!
//! If the cache disk fails (read-only, I/O errors) reads go straight to the backend: the
//! failure is logged once, counted, and the cache is retried after [`CACHE_RETRY_AFTER`].
//! Without a cache a sequential reader's GETs reach ahead across its window (up to a run) and
//! the last one is kept in the handle, so it still makes few large requests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warpdrive_cache::{BlockIndex, Cache, CacheError, ObjectId};
use warpdrive_store::{Backend, StoreError};

use crate::flight::{Flight, Flights};
use crate::inode::Ino;
use crate::landed::Landed;
use crate::window::{self, Window};

/// Furthest a sequential reader's prefetch runs ahead of it. With the default budget of
/// 256 MiB, 4 handles streaming at once each get their full window; more share it.
pub const MAX_WINDOW: u64 = 64 << 20;
/// Prefetch GET size: stores charge a fixed cost per request (Azurite serves 1 MiB GETs at
/// a third of the rate of 8 MiB ones; see doc/BENCHMARKS.md), so prefetch asks for a whole
/// run at a time, and a window of [`MAX_WINDOW`] keeps up to four in flight. Blocks are
/// handed out and cached as they stream in, so a run never sits in memory whole.
pub const PREFETCH_RUN: u64 = 16 << 20;
/// Memory for prefetched blocks waiting for their readers, across all files: enough for a
/// few sequential readers' next reads, and a bound on the daemon's RSS whatever the budget.
pub const LANDED_MAX: u64 = 64 << 20;
/// Objects of up to this many blocks (4 MiB at the default block size) are fetched whole by
/// their first miss, in one GET: a loader reading a folder of small files costs one request
/// per file, not one per block its reads happen to touch first.
pub const SMALL_WHOLE_BLOCKS: u64 = 4;
/// After a cache disk failure, how long reads bypass the cache before trying it again.
pub const CACHE_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How often the read path repeats that the disk is too full to cache.
const FLOOR_WARN_EVERY: Duration = Duration::from_secs(600);

type FetchResult = Result<Bytes, Arc<StoreError>>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

use warpdrive_metrics::{ReadMetrics, add};

mod fetch;

/// One version of one object, as a handle reads it.
#[derive(Debug, Clone)]
pub struct Object {
    pub ino: Ino,
    pub backend: Arc<Backend>,
    /// Backend name, key and ETag (empty when the store gave none).
    pub id: Arc<ObjectId>,
    pub size: u64,
}

impl Object {
    /// Only a version with an ETag can be cached: without one it could not be revalidated.
    fn cacheable(&self) -> bool {
        !self.id.etag.is_empty()
    }

    fn if_match(&self) -> Option<&str> {
        Some(self.id.etag.as_str()).filter(|e| !e.is_empty())
    }
}

/// Per-handle sequential detection and prefetch bookkeeping.
#[derive(Debug, Default)]
pub struct Stream {
    /// Sequential detection and how far prefetch has got ([`crate::window`]).
    win: Window,
    /// Blocks this handle prefetched and has not read yet.
    prefetched: HashSet<u64>,
    /// Without a cache: the last run this handle fetched, `(first block, one fetch per
    /// block)`; a resolved fetch keeps its bytes, so the reader's next reads are served from it.
    recent: Option<(u64, Vec<SharedFetch>)>,
}

/// Where the bytes a read wants of one block come from.
enum Part {
    /// The bytes themselves (only the part of the block the read covers).
    Ready(Bytes),
    /// A fetch of the whole block, in flight.
    Wait(SharedFetch),
}

/// A read started by [`BlockReader::begin`].
#[derive(Debug)]
pub enum Begun {
    /// Served at once (every block was at hand), or failed.
    Ready(FetchResult),
    /// Waiting for fetches: complete it with [`BlockReader::complete`].
    Pending(Pending),
}

/// A read waiting for fetches.
pub struct Pending {
    obj: Object,
    offset: u64,
    end: u64,
    parts: Vec<(u64, Option<Part>)>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.obj.id.key)
            .field("offset", &self.offset)
            .field("end", &self.end)
            .finish()
    }
}

fn never_fetched(obj: &Object, b: u64) -> Arc<StoreError> {
    Arc::new(StoreError::Cancelled {
        backend: obj.backend.name().to_string(),
        message: format!("block {b} of {} was never fetched", obj.id.key),
    })
}

/// The pieces of a read, in order, as one buffer (no copy when there is one piece).
fn concat(mut pieces: Vec<Bytes>, total: usize) -> Bytes {
    if pieces.len() == 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(total);
    for p in &pieces {
        buf.extend_from_slice(p);
    }
    buf.freeze()
}

/// The shared read path of one filesystem.
pub struct BlockReader {
    cache: Option<Arc<Cache>>,
    block_size: u64,
    /// Fetches in flight, joined by concurrent readers ([`crate::flight`]).
    flights: Flights<SharedFetch>,
    /// Prefetched blocks that arrived and wait for their reader, at most [`LANDED_MAX`]
    /// bytes of them (or the budget) ([`crate::landed`]).
    landed: Landed<OwnedSemaphorePermit>,
    /// Prefetch budget in blocks; `None` turns prefetch off.
    budget: Option<Arc<Semaphore>>,
    budget_blocks: usize,
    /// Blocks in one prefetch GET: a run, or the whole budget if that is smaller.
    run_blocks: u64,
    /// Reads bypass the cache until then, after a disk failure.
    /// Rests the cache after a disk failure ([`crate::breaker`]).
    breaker: crate::breaker::Breaker,
    /// When the cache last said it was not caching for want of free disk space.
    floor_warned: Mutex<Option<Instant>>,
    /// The read path's counters (the daemon's metrics), one atomic add each.
    pub stats: ReadMetrics,
    /// Checks of fully cached objects against their store's checksum.
    pub integrity: crate::integrity::Integrity,
    /// The fleet tier, when `shared_cache:` is configured: misses go through it.
    tier: std::sync::OnceLock<Arc<warpdrive_fleet::SharedTier>>,
    /// Chunks being fetched for the tier's runs, joined by runs that need them too.
    pub(crate) chunks: Mutex<HashMap<(ObjectId, u64), Arc<ChunkFlight>>>,
}

/// A chunk being fetched (from the tier or the origin) for the runs that need it: its bytes
/// as they arrive (from the tier, each piece once it passed its checksum), and how it ended.
/// The pieces are kept as they came, so a block that lies within one (a tier piece is a
/// MiB, as a default block) is handed out without a copy.
#[derive(Debug)]
pub(crate) struct ChunkFlight {
    pieces: Mutex<Vec<Bytes>>,
    /// Bytes in `pieces`, and the fetch's end (its error if it failed).
    progress: tokio::sync::watch::Sender<ChunkProgress>,
}

/// Bytes of a chunk fetched so far, and how its fetch ended, once it has.
type ChunkProgress = (usize, Option<Result<(), Arc<StoreError>>>);

impl ChunkFlight {
    fn new() -> ChunkFlight {
        ChunkFlight {
            pieces: Mutex::new(Vec::new()),
            progress: tokio::sync::watch::Sender::new((0, None)),
        }
    }

    fn push(&self, piece: Bytes) {
        let n = piece.len();
        self.pieces.lock().push(piece);
        self.progress.send_modify(|p| p.0 += n);
    }

    fn len(&self) -> usize {
        self.progress.borrow().0
    }

    /// Everything fetched, as one buffer (for the tier's fill).
    fn whole(&self) -> Bytes {
        let pieces = self.pieces.lock();
        if let [one] = pieces.as_slice() {
            return one.clone();
        }
        let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
        for p in pieces.iter() {
            all.extend_from_slice(p);
        }
        all.freeze()
    }

    /// Bytes `range` of what has arrived: a slice of one piece when it lies within one.
    fn slice(&self, range: std::ops::Range<usize>) -> Bytes {
        let pieces = self.pieces.lock();
        let mut out = BytesMut::new();
        let mut at = 0;
        for p in pieces.iter() {
            let (start, end) = (at, at + p.len());
            at = end;
            if end <= range.start {
                continue;
            }
            if start >= range.end {
                break;
            }
            let part = p.slice(range.start.max(start) - start..range.end.min(end) - start);
            if out.is_empty() && part.len() == range.len() {
                return part;
            }
            out.extend_from_slice(&part);
        }
        out.freeze()
    }

    fn finish(&self, r: Result<(), Arc<StoreError>>) {
        self.progress.send_modify(|p| p.1 = Some(r));
    }

    /// Bytes `range` of the chunk, once they have arrived; the fetch's error if it failed
    /// before.
    async fn read(&self, range: std::ops::Range<usize>) -> Result<Bytes, Arc<StoreError>> {
        let mut rx = self.progress.subscribe();
        let end = range.end;
        let state = rx
            .wait_for(|(n, done)| *n >= end || done.is_some())
            .await
            .map(|p| p.clone());
        match state {
            Ok((n, _)) if n >= end => Ok(self.slice(range)),
            Ok((_, Some(Err(e)))) => Err(e),
            _ => Err(Arc::new(StoreError::Cancelled {
                backend: String::new(),
                message: "a chunk fetch ended short of the bytes a read needed".into(),
            })),
        }
    }
}
impl std::fmt::Debug for BlockReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockReader")
            .field("block_size", &self.block_size)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

impl BlockReader {
    /// A read path over `cache` (if any) with `block_size` blocks (the cache's, when there
    /// is one) and a prefetch budget in bytes (0: no prefetch).
    pub fn new(
        cache: Option<Arc<Cache>>,
        block_size: u64,
        prefetch_budget: u64,
        stats: ReadMetrics,
    ) -> BlockReader {
        let block_size = cache.as_ref().map_or(block_size, |c| c.block_size());
        let permits = (prefetch_budget / block_size).min(Semaphore::MAX_PERMITS as u64) as usize;
        BlockReader {
            cache,
            block_size,
            flights: Flights::default(),
            landed: Landed::new(((LANDED_MAX / block_size) as usize).clamp(1, permits.max(1))),
            budget: (permits > 0).then(|| Arc::new(Semaphore::new(permits))),
            budget_blocks: permits,
            run_blocks: (PREFETCH_RUN / block_size).clamp(1, permits.max(1) as u64),
            breaker: crate::breaker::Breaker::new(CACHE_RETRY_AFTER),
            floor_warned: Mutex::new(None),
            integrity: crate::integrity::Integrity::new(stats.clone()),
            stats,
            tier: std::sync::OnceLock::new(),
            chunks: Mutex::new(HashMap::new()),
        }
    }

    /// Sends this reader's misses through the fleet tier (once, at start).
    pub fn set_tier(&self, tier: Arc<warpdrive_fleet::SharedTier>) {
        let _ = self.tier.set(tier);
    }

    pub fn tier(&self) -> Option<&Arc<warpdrive_fleet::SharedTier>> {
        self.tier.get()
    }

    /// Bytes of the prefetch budget in use: prefetches in flight and prefetched blocks
    /// waiting in memory for their reader.
    pub fn prefetch_held_bytes(&self) -> u64 {
        self.budget.as_ref().map_or(0, |s| {
            (self.budget_blocks - s.available_permits()) as u64 * self.block_size
        })
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The cache, unless there is none or it is resting after a disk failure.
    pub fn cache(&self) -> Option<&Arc<Cache>> {
        let c = self.cache.as_ref()?;
        self.breaker.closed_at(Instant::now()).then_some(c)
    }

    fn cache_for(&self, obj: &Object) -> Option<&Arc<Cache>> {
        if obj.cacheable() { self.cache() } else { None }
    }

    /// Handles an error from the cache: a disk failure is counted, logged once, and turns the
    /// cache off for a while; a full cache only means the block was not kept.
    pub fn cache_error(&self, e: &CacheError) {
        match e {
            CacheError::NoRoom { .. } => {
                add(&self.stats.not_admitted_blocks, 1);
                self.warn_below_min_free();
            }
            e if e.is_disk_failure() => {
                add(&self.stats.cache_disk_failures, 1);
                if self.breaker.trip(Instant::now()) {
                    tracing::error!(error = %e, "the cache disk failed; reading straight from the backends (retrying the cache every {}s)", CACHE_RETRY_AFTER.as_secs());
                } else {
                    tracing::debug!(error = %e, "cache disk failure");
                }
            }
            e => tracing::warn!(error = %e, "cache refused a block"),
        }
    }

    /// A block was not kept because the disk is under `cache.min_free`: a cache that caches
    /// nothing must say so (at most every [`FLOOR_WARN_EVERY`]), not fail silently.
    fn warn_below_min_free(&self) {
        let Some((free, floor)) = self.cache.as_ref().and_then(|c| c.below_min_free()) else {
            return;
        };
        let mut last = self.floor_warned.lock();
        if last.is_some_and(|t| t.elapsed() < FLOOR_WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            free_bytes = free,
            min_free_bytes = floor,
            "not caching: the cache disk has less free space than cache.min_free; reads go to the backends until space is freed (or lower cache.min_free)"
        );
    }

    /// The byte length of block `b` of `obj`.
    fn block_len(&self, obj: &Object, b: u64) -> u64 {
        obj.size
            .saturating_sub(b * self.block_size)
            .min(self.block_size)
    }

    fn last_block(&self, obj: &Object) -> u64 {
        obj.size.saturating_sub(1) / self.block_size
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the object) through `stream`.
    pub async fn read(
        self: &Arc<Self>,
        obj: &Object,
        stream: &Mutex<Stream>,
        offset: u64,
        len: u64,
    ) -> FetchResult {
        match self.begin(obj, stream, offset, len) {
            Begun::Ready(r) => r,
            Begun::Pending(p) => self.complete(p).await,
        }
    }

    /// Starts a read of `len` bytes at `offset` through `stream`: serves it at once when every
    /// block is at hand (cached, or in the handle's last run), else starts the fetches it
    /// needs and returns them to [`BlockReader::complete`]. Never blocks on the network, so
    /// the FUSE adapter calls it on its own thread and only hands waiting reads to the
    /// runtime. Must run inside the tokio runtime's context (it may spawn fetches).
    pub fn begin(
        self: &Arc<Self>,
        obj: &Object,
        stream: &Mutex<Stream>,
        offset: u64,
        len: u64,
    ) -> Begun {
        let end = offset.saturating_add(len).min(obj.size);
        if offset >= end {
            return Begun::Ready(Ok(Bytes::new()));
        }
        let bs = self.block_size;
        let (b0, b1) = (offset / bs, (end - 1) / bs);
        let cache = self.cache_for(obj).cloned();
        let (sequential, recent) = self.advance(stream, b0, b1);
        // What a reader has passed (also blocks it took from the fetch before they landed),
        // or everything once it stops reading sequentially, leaves memory.
        self.landed
            .drop_range(obj.ino, 0..if sequential { b0 } else { u64::MAX });

        let mut parts: Vec<(u64, Option<Part>)> = Vec::with_capacity((b1 - b0 + 1) as usize);
        let mut missing = Vec::new();
        // Every block a read touches counts once: a hit if its bytes came from the cache, a
        // miss otherwise (fetched now, joined in flight, or in the handle's last run); the
        // byte counts are the bytes of the read, so hits + misses = bytes read.
        for b in b0..=b1 {
            // The bytes of block `b` this read wants, as offsets within the block.
            let (from, to) = (offset.max(b * bs) - b * bs, end.min((b + 1) * bs) - b * bs);
            let mut part = None;
            if let Some((first, run)) = &recent
                && b >= *first
                && let Some(f) = run.get((b - first) as usize)
            {
                part = Some(Part::Wait(f.clone()));
            } else if let Some(f) = self.flights.join(obj.ino, b, &obj.id) {
                part = Some(Part::Wait(f.fut));
            } else if let Some(bytes) = self.at_hand(obj, cache.as_deref(), b, from, to) {
                add(&self.stats.hit_blocks, 1);
                add(&self.stats.hit_bytes, bytes.len() as u64);
                parts.push((b, Some(Part::Ready(bytes))));
                continue;
            }
            add(&self.stats.miss_blocks, 1);
            add(&self.stats.miss_bytes, to - from);
            if part.is_none() {
                if stream.lock().prefetched.remove(&b) {
                    // Prefetched, but gone (evicted or damaged) before it was read.
                    add(&self.stats.prefetch_wasted, 1);
                }
                missing.push(b);
            }
            parts.push((b, part));
        }

        // Missing blocks: one fetch per run of consecutive blocks. Without a cache, a
        // sequential reader's last run reaches ahead across its window (at most one prefetch
        // run), and the handle keeps it for its next reads. A small object (up to
        // [`SMALL_WHOLE_BLOCKS`]) being cached is fetched whole by its first miss: one GET per
        // small file, its blocks cached together.
        if !missing.is_empty() {
            let mut stretch_to = None;
            if cache.is_none() && sequential {
                let w = stream.lock().win.blocks.max(1).min(self.run_blocks);
                stretch_to = Some((b1 + w).min(self.last_block(obj)));
            }
            if let Some(c) = cache.as_deref()
                && obj.size <= SMALL_WHOLE_BLOCKS * self.block_size
            {
                // The read's own missing blocks, and every other block not cached (one in
                // flight is joined, not fetched again).
                missing = (0..=self.last_block(obj))
                    .filter(|b| {
                        if (b0..=b1).contains(b) {
                            missing.contains(b)
                        } else {
                            !c.has_block(&obj.id, BlockIndex(*b))
                        }
                    })
                    .collect();
            }
            let runs = self.start_runs(obj, &missing, stretch_to, None);
            for (b, part) in parts.iter_mut() {
                if part.is_none() {
                    *part = runs.get(b).map(|f| Part::Wait(f.fut.clone()));
                }
            }
            if cache.is_none()
                && let Some(last_run) = runs.get(&b1)
            {
                let first = last_run.first;
                let futs: Vec<SharedFetch> = (first..)
                    .map_while(|b| {
                        runs.get(&b)
                            .filter(|f| f.first == first)
                            .map(|f| f.fut.clone())
                    })
                    .collect();
                stream.lock().recent = Some((first, futs));
            }
        }

        if sequential && cache.is_some() {
            self.prefetch(obj, stream, b1);
        }
        {
            let mut st = stream.lock();
            for (b, _) in &parts {
                if st.prefetched.remove(b) {
                    add(&self.stats.prefetch_hits, 1);
                }
            }
        }

        // Fetches that already resolved are as good as ready.
        let mut ready = Vec::with_capacity(parts.len());
        for (b, part) in &parts {
            let piece = match part {
                Some(Part::Ready(bytes)) => bytes.clone(),
                Some(Part::Wait(f)) => match f.peek() {
                    Some(Ok(block)) => match self.piece(obj, *b, offset, end, block) {
                        Ok(p) => p,
                        Err(e) => return Begun::Ready(Err(e)),
                    },
                    Some(Err(e)) => return Begun::Ready(Err(e.clone())),
                    None => {
                        return Begun::Pending(Pending {
                            obj: obj.clone(),
                            offset,
                            end,
                            parts,
                        });
                    }
                },
                None => return Begun::Ready(Err(never_fetched(obj, *b))),
            };
            ready.push(piece);
        }
        Begun::Ready(Ok(concat(ready, (end - offset) as usize)))
    }

    /// Bytes `from..to` of block `b` without a fetch: landed from a prefetch, else cached.
    fn at_hand(
        &self,
        obj: &Object,
        cache: Option<&Cache>,
        b: u64,
        from: u64,
        to: u64,
    ) -> Option<Bytes> {
        if let Some(bytes) = self.landed.take(obj.ino, b, &obj.id.etag, from, to) {
            return Some(bytes);
        }
        match cache?.read_range(&obj.id, BlockIndex(b), from..to) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.cache_error(&e);
                None
            }
        }
    }

    /// The part of block `b`'s bytes that a read of `offset..end` wants.
    fn piece(&self, obj: &Object, b: u64, offset: u64, end: u64, block: &Bytes) -> FetchResult {
        let bs = self.block_size;
        let from = (offset.max(b * bs) - b * bs) as usize;
        let to = (end.min((b + 1) * bs) - b * bs) as usize;
        if to > block.len() {
            return Err(Arc::new(StoreError::ShortRead {
                backend: obj.backend.name().to_string(),
                key: obj.id.key.clone(),
                asked: to as u64,
                got: block.len() as u64,
            }));
        }
        Ok(block.slice(from..to))
    }

    /// Completes a read [`BlockReader::begin`] could not serve at once.
    pub async fn complete(&self, p: Pending) -> FetchResult {
        let Pending {
            obj,
            offset,
            end,
            parts,
        } = p;
        let mut pieces = Vec::with_capacity(parts.len());
        for (b, part) in parts {
            let piece = match part {
                Some(Part::Ready(bytes)) => bytes,
                Some(Part::Wait(f)) => self.piece(&obj, b, offset, end, &f.await?)?,
                None => return Err(never_fetched(&obj, b)),
            };
            pieces.push(piece);
        }
        Ok(concat(pieces, (end - offset) as usize))
    }

    /// Updates the handle's sequential detection for a read of blocks `b0..=b1`. Returns
    /// whether the read is sequential, and the handle's last run (without a cache).
    fn advance(
        &self,
        stream: &Mutex<Stream>,
        b0: u64,
        b1: u64,
    ) -> (bool, Option<(u64, Vec<SharedFetch>)>) {
        let max_window = (MAX_WINDOW / self.block_size).max(1);
        let mut st = stream.lock();
        let a = st.win.advance(b0, b1, max_window);
        if a.reset {
            add(&self.stats.window_resets, 1);
        }
        (a.sequential, st.recent.clone())
    }

    /// Starts fetches for `blocks` (ascending), one per run of consecutive blocks, joining
    /// any that another reader started meanwhile. `stretch_to` extends the last run to that
    /// block. With `permits`, the fetches are prefetches holding the budget.
    fn start_runs(
        self: &Arc<Self>,
        obj: &Object,
        blocks: &[u64],
        stretch_to: Option<u64>,
        mut permits: Option<(OwnedSemaphorePermit, &mut Vec<u64>)>,
    ) -> HashMap<u64, Flight<SharedFetch>> {
        self.flights
            .start(obj.ino, &obj.id, blocks, stretch_to, |run| {
                let (first, last) = (*run.start(), *run.end());
                let permit = permits.as_mut().map(|(p, _)| {
                    p.split((last - first + 1) as usize)
                        .expect("the caller holds a permit per block")
                });
                if let Some((_, started)) = permits.as_mut() {
                    started.extend(run);
                }
                self.spawn_fetch(obj, first, last, permit)
            })
    }

    /// Starts prefetching the window ahead of block `b1` into the cache, within the budget.
    fn prefetch(self: &Arc<Self>, obj: &Object, stream: &Mutex<Stream>, b1: u64) {
        let Some(budget) = &self.budget else { return };
        let Some(cache) = self.cache_for(obj).cloned() else {
            return;
        };
        let last = self.last_block(obj);
        let run_blocks = self.run_blocks;
        let Some((from, to)) = stream.lock().win.prefetch_range(b1, last, run_blocks) else {
            return;
        };
        let wanted: Vec<u64> = (from..=to)
            .filter(|b| !self.flights.busy(obj.ino, *b))
            .filter(|b| !self.landed.contains(obj.ino, *b))
            .filter(|b| !cache.has_block(&obj.id, BlockIndex(*b)))
            .collect();
        let mut done_to = to + 1;
        let mut started = Vec::new();
        for run in window::runs(&wanted, run_blocks as usize) {
            let Ok(permit) = budget.clone().try_acquire_many_owned(run.len() as u32) else {
                // Budget used up: try again at the next read.
                done_to = wanted[run.start];
                break;
            };
            self.start_runs(obj, &wanted[run], None, Some((permit, &mut started)));
        }
        let mut st = stream.lock();
        st.win.prefetched_to = st.win.prefetched_to.max(done_to);
        st.prefetched.extend(started);
    }

    /// Called when a handle of inode `ino` closes: what it prefetched and never read was
    /// wasted, and leaves memory.
    pub fn close(&self, ino: Ino, stream: &Mutex<Stream>) {
        add(
            &self.stats.prefetch_wasted,
            stream.lock().prefetched.len() as u64,
        );
        self.landed.drop_range(ino, 0..u64::MAX);
    }

    /// Fetches every block of `obj` that is not cached, into the cache (used to repair an
    /// object before it is handed to passthrough). Returns once all are written.
    pub async fn fill(self: &Arc<Self>, obj: &Object) -> Result<(), Arc<StoreError>> {
        let missing = self.missing_blocks(obj);
        self.fill_blocks(obj, &missing).await
    }

    /// The blocks of `obj` the cache does not hold (none when it cannot be cached).
    pub fn missing_blocks(&self, obj: &Object) -> Vec<u64> {
        let Some(cache) = self.cache_for(obj) else {
            return Vec::new();
        };
        if obj.size == 0 {
            return Vec::new();
        }
        (0..=self.last_block(obj))
            .filter(|b| !cache.has_block(&obj.id, BlockIndex(*b)))
            .collect()
    }

    /// Fetches `missing` blocks of `obj` into the cache (joining fetches already in flight)
    /// and returns once all are written.
    pub async fn fill_blocks(
        self: &Arc<Self>,
        obj: &Object,
        missing: &[u64],
    ) -> Result<(), Arc<StoreError>> {
        if missing.is_empty() || self.cache_for(obj).is_none() {
            return Ok(());
        }
        let runs = self.start_runs(obj, missing, None, None);
        for f in runs.values() {
            f.fut.clone().await?;
        }
        // The blocks are written after the readers are answered: wait for the writes.
        self.flights.settled(obj.ino, missing).await;
        Ok(())
    }
}
