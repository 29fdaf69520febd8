//! Eviction: least recently used first, or by the readers' plans, down to a byte target, whole
//! objects or parts of them.
//!
//! A pass sorts cached objects by last access and drops the oldest until the cache holds at
//! most the target. When readers have told the daemon what they will read (epoch plans), an
//! [`Advisor`] says for each object when a plan reads it next, and the order becomes: objects
//! no plan reads, least recently used first; then planned objects, the one whose next planned
//! use is furthest away first (Belady's rule over the known future); objects inside a plan's
//! window being fetched ahead are not evicted at all. Under a fresh shuffle every epoch LRU
//! keeps what was read longest ago, which is as likely to come next as anything, so this
//! order is what lets a cache smaller than the dataset keep hitting. When the oldest object is much larger than what still has to go (a huge
//! object read only in part, say), only as many of its blocks are dropped as needed, highest
//! offsets first, by punching holes in its data file; the rest stays cached. The target
//! comes from the size cap and the free-space floor ([`Cache::enforce_limits`]): whichever
//! asks for less data wins, so the cache never fills the disk. Objects pinned by a
//! passthrough reader are skipped: the kernel reads their data files directly.
//!
//! Admission ([`Cache::admit`]) runs a pass before a block is written when the block would
//! break a limit, and evicts a little below it (a slack of [`SLACK_FRACTION`] of the cap), so
//! that a cache running at its cap does not walk the index on every block.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::index::Op;
use crate::quota::QuotaSet;
use crate::{BlockIndex, Cache, CacheError, Result};

/// Share of the size cap an admission pass frees beyond what the new block needs.
const SLACK_FRACTION: u64 = 16;
/// The same while plans order eviction: every byte freed early is a byte of what a reader
/// reads next thrown out, so passes free less (and run more often).
const PLANNED_SLACK_FRACTION: u64 = 64;

/// A limit in bytes or as a share of the cache disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Bytes(u64),
    /// A fraction of the disk's size, 0.0 to 1.0.
    ShareOfDisk(f64),
}

impl Limit {
    /// The limit in bytes on a disk of `disk` bytes.
    pub fn bytes(self, disk: u64) -> u64 {
        match self {
            Limit::Bytes(b) => b,
            Limit::ShareOfDisk(f) => (disk as f64 * f) as u64,
        }
    }
}

/// How much the cache may hold and how much free space it always leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_size: Limit,
    pub min_free: Limit,
}

/// Bytes and free bytes of the filesystem holding `dir`.
pub fn disk_usage(dir: &std::path::Path) -> Result<(u64, u64)> {
    let c =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| CacheError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs struct.
    let (r, s) = unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s), s)
    };
    if r != 0 {
        return Err(CacheError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    let frsize = s.f_frsize;
    Ok((s.f_blocks * frsize, s.f_bavail * frsize))
}

/// What one eviction pass freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
}

/// Who needs room: decides which data a pass may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requester {
    /// The background pass keeping the limits: anything may go.
    Background,
    /// A block of this team (or of no team): other teams within their quotas are spared.
    Block(Option<usize>),
}

/// When the readers' plans read an object next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextUse {
    /// No plan reads it: evicted first, least recently used first.
    Unplanned,
    /// A plan reads it this many entries after its reader's position: furthest first.
    In(u64),
    /// Inside a plan's window being fetched ahead of its reader: kept.
    Protected,
}

/// Tells eviction when each `(backend, key)` is read next; `None` when no plan is kept (then
/// eviction is least recently used first). Asked about no names, it says whether plans are
/// kept (`Some` of nothing).
pub type Advisor = Arc<dyn Fn(&[(&str, &str)]) -> Option<Vec<NextUse>> + Send + Sync>;

/// Where the cache keeps its advisor, if any.
#[derive(Default)]
pub(crate) struct AdvisorSlot(parking_lot::RwLock<Option<Advisor>>);

impl std::fmt::Debug for AdvisorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.read().is_some() {
            "set"
        } else {
            "unset"
        })
    }
}

/// An object that may be evicted, as seen by one pass.
struct Candidate {
    team: Option<usize>,
    last_access: i64,
    pinned: bool,
    next_use: NextUse,
    backend: String,
    key: String,
    id: u64,
    bytes: u64,
}

impl Cache {
    /// Every cached object with its size in cached bytes: one walk under the read lock.
    fn candidates(&self) -> Vec<Candidate> {
        let quotas = self.quotas.read().clone();
        let objects = self.objects.read();
        objects
            .iter()
            .map(|(backend, key, e)| Candidate {
                team: quotas.team_of(backend, key),
                last_access: e.last_access.load(Ordering::Relaxed),
                pinned: e.pins.load(Ordering::Relaxed) > 0,
                next_use: NextUse::Unplanned,
                backend: backend.to_string(),
                key: key.to_string(),
                id: e.id,
                bytes: self.cached_bytes(e),
            })
            .collect()
    }

    /// Evicts least recently used data until at most `target` bytes are cached.
    pub fn evict_to(&self, target: u64) -> Result<Evicted> {
        self.evict_from(self.candidates(), target)
    }

    fn evict_from(&self, mut candidates: Vec<Candidate>, target: u64) -> Result<Evicted> {
        let mut out = Evicted::default();
        let mut total: u64 = candidates.iter().map(|c| c.bytes).sum();
        if total <= target {
            return Ok(out);
        }
        let names: Vec<(&str, &str)> = candidates
            .iter()
            .map(|c| (c.backend.as_str(), c.key.as_str()))
            .collect();
        let advice = self.advice(&names);
        if let Some(uses) = advice {
            for (c, u) in candidates.iter_mut().zip(uses) {
                c.next_use = u;
            }
        }
        // Unplanned before planned, furthest next use first; the oldest first among equals;
        // the id breaks ties in creation order.
        candidates.sort_by_key(|c| {
            let (class, distance) = match c.next_use {
                NextUse::Unplanned => (0, 0),
                NextUse::In(d) => (1, d),
                NextUse::Protected => (2, 0),
            };
            (class, std::cmp::Reverse(distance), c.last_access, c.id)
        });
        for c in candidates {
            if total <= target {
                break;
            }
            if c.pinned || c.next_use == NextUse::Protected {
                continue;
            }
            let need = total - target;
            if c.bytes > need.saturating_mul(2) {
                let freed = self.punch(&c.backend, &c.key, c.id, need)?;
                out.blocks += freed.blocks;
                out.bytes += freed.bytes;
                total = total.saturating_sub(freed.bytes);
                continue;
            }
            let removed = {
                let mut objects = self.objects.write();
                match objects.get(&c.backend, &c.key) {
                    Some(e) if e.id == c.id => objects.remove(&c.backend, &c.key),
                    _ => None,
                }
            };
            if let Some(e) = removed {
                let blocks = e.blocks.len() as u64;
                self.forget(&c.backend, &c.key, e)?;
                out.objects += 1;
                out.blocks += blocks;
                out.bytes += c.bytes;
                total = total.saturating_sub(c.bytes);
            }
        }
        self.count_evicted(&out, "evicted")?;
        Ok(out)
    }

    /// Logs and counts (in memory and in the index's lifetime counters) what a pass freed.
    fn count_evicted(&self, out: &Evicted, why: &str) -> Result<()> {
        if out.blocks == 0 {
            return Ok(());
        }
        tracing::info!(
            objects = out.objects,
            blocks = out.blocks,
            bytes = out.bytes,
            "{why}"
        );
        self.evicted.fetch_add(out.blocks, Ordering::Relaxed);
        self.send(Op::AddCounter {
            name: "evicted_blocks",
            delta: out.blocks as i64,
        })
    }

    /// Drops at least `need` bytes of object `id`'s blocks, highest offsets first.
    fn punch(&self, backend: &str, key: &str, id: u64, need: u64) -> Result<Evicted> {
        let victims: Vec<(u64, u64)> = {
            let mut objects = self.objects.write();
            let Some(e) = objects.get_mut(backend, key).filter(|e| e.id == id) else {
                return Ok(Evicted::default());
            };
            let mut blocks: Vec<u64> = e.blocks.keys().copied().collect();
            blocks.sort_unstable_by(|a, b| b.cmp(a));
            let mut freed = 0;
            let mut victims = Vec::new();
            for b in blocks {
                if freed >= need {
                    break;
                }
                let len = self.block_len(e.size, BlockIndex(b)).unwrap_or(0);
                e.blocks.remove(&b);
                freed += len;
                victims.push((b, len));
            }
            victims
        };
        let path = self.data_path(id);
        let f = match self.file(id) {
            Ok(f) => f,
            Err(e) => {
                for (_, len) in &victims {
                    self.release(backend, key, *len);
                }
                return Err(e);
            }
        };
        let mut out = Evicted::default();
        for (b, len) in victims {
            self.send(Op::DropBlock {
                object_id: id,
                block: b,
            })?;
            // SAFETY: fallocate(2) on a file descriptor we own, with a range inside the file;
            // it touches no memory of ours.
            let r = unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (b * self.block_size()) as libc::off_t,
                    len as libc::off_t,
                )
            };
            // Counted as free only once the space is: a writer admitted meanwhile cannot
            // push the disk over the cap.
            self.release(backend, key, len);
            if r != 0 {
                return Err(CacheError::Io {
                    path: path.clone(),
                    source: std::io::Error::last_os_error(),
                });
            }
            out.blocks += 1;
            out.bytes += len;
        }
        Ok(out)
    }

    /// `(free, min_free)` in bytes when the disk's free space, as last measured, is under
    /// `min_free` plus one block: new blocks are then not admitted.
    pub fn below_min_free(&self) -> Option<(u64, u64)> {
        let free = self.free_estimate.load(Ordering::Relaxed);
        let floor = self.min_free_bytes.load(Ordering::Relaxed);
        (self.limits.read().is_some() && free < floor + self.cfg.block_size)
            .then_some((free, floor))
    }

    /// `(free, min_free)` in bytes when the disk's free space, measured now, is under
    /// `min_free`: a new file written through the mount is then refused at its creation
    /// rather than failing when its spool fills the disk.
    pub fn below_min_free_now(&self) -> Option<(u64, u64)> {
        let limits = (*self.limits.read())?;
        let (disk, free) = self.disk_usage().ok()?;
        let floor = limits.min_free.bytes(disk);
        (free < floor).then_some((free, floor))
    }

    /// Bytes and free bytes of the filesystem holding the cache.
    pub fn disk_usage(&self) -> Result<(u64, u64)> {
        disk_usage(&self.cfg.dir)
    }

    /// Sets the limits admission and [`Cache::enforce_limits`] keep.
    /// The size cap in bytes now (`None` without limits): what the cache may hold at most.
    pub fn capacity(&self) -> Option<u64> {
        let limits = (*self.limits.read())?;
        let (disk, _) = self.disk_usage().ok()?;
        Some(limits.max_size.bytes(disk))
    }

    /// Whether plans order eviction now.
    fn planned(&self) -> bool {
        self.advice(&[]).is_some()
    }

    /// What the advisor says of `names` now (`None`: no advisor, or no plan kept).
    pub fn advice(&self, names: &[(&str, &str)]) -> Option<Vec<NextUse>> {
        let advisor = self.advisor.0.read().clone();
        advisor.and_then(|a| a(names))
    }

    /// Lets the readers' plans order eviction ([`Advisor`]).
    pub fn set_advisor(&self, advisor: Advisor) {
        *self.advisor.0.write() = Some(advisor);
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write() = Some(limits);
        self.free_estimate.store(0, Ordering::Relaxed);
    }

    /// Evicts until the cache is within its limits (and `room` bytes more fit), with some
    /// slack. Returns what was freed; without limits, nothing.
    pub fn enforce_limits(&self) -> Result<Evicted> {
        self.make_room(0, Requester::Background)
    }

    fn make_room(&self, room: u64, who: Requester) -> Result<Evicted> {
        let Some(limits) = *self.limits.read() else {
            return Ok(Evicted::default());
        };
        let _one_pass = self.evicting.lock();
        let (disk, free) = self.disk_usage()?;
        let max = limits.max_size.bytes(disk);
        let floor = limits.min_free.bytes(disk);
        let mut candidates = self.candidates();
        let cached: u64 = candidates.iter().map(|c| c.bytes).sum();
        let deficit = (floor + room).saturating_sub(free);
        let slack = match room {
            0 => 0,
            _ if self.planned() => max / PLANNED_SLACK_FRACTION,
            _ => max / SLACK_FRACTION,
        };
        // Bytes other writers reserved but have not recorded yet.
        let reserved = self.used.load(Ordering::Relaxed).saturating_sub(cached);
        // The slack applies to whichever limit binds, so a pass run on a stale free-space
        // estimate evicts nothing.
        let by_cap = max.saturating_sub(room + reserved + slack);
        let by_floor = if deficit > 0 {
            cached.saturating_sub(deficit + slack)
        } else {
            cached
        };
        let mut target = by_cap.min(by_floor);
        if let Requester::Block(team) = who {
            // Spare other teams within their quotas: they are not candidates, and the
            // target shrinks by what they hold.
            let quotas = self.quotas.read().clone();
            let spared =
                |c: &Candidate| c.team.is_some_and(|t| Some(t) != team && quotas.within(t));
            let kept: u64 = candidates
                .iter()
                .filter(|c| spared(c))
                .map(|c| c.bytes)
                .sum();
            candidates.retain(|c| !spared(c));
            target = target.saturating_sub(kept);
        }
        let out = if cached > target {
            self.evict_from(candidates, target)?
        } else {
            Evicted::default()
        };
        self.max_bytes.store(max, Ordering::Relaxed);
        self.min_free_bytes.store(floor, Ordering::Relaxed);
        self.free_estimate
            .store(free.saturating_add(out.bytes), Ordering::Relaxed);
        Ok(out)
    }

    /// Reserves `len` more bytes within the limits, evicting if needed; the caller turns the
    /// reservation into a recorded block or gives it back ([`Cache::unreserve`]). Reserving
    /// before writing keeps concurrent writers from overshooting the cap together.
    /// [`CacheError::NoRoom`] if even an empty cache would break the limits.
    pub(crate) fn admit(&self, len: u64, team: Option<usize>) -> Result<()> {
        if self.limits.read().is_none() {
            self.used.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        let mut evicted = false;
        loop {
            let used = self.used.load(Ordering::Relaxed);
            let fits = used + len <= self.max_bytes.load(Ordering::Relaxed)
                && self.free_estimate.load(Ordering::Relaxed)
                    >= self.min_free_bytes.load(Ordering::Relaxed) + len;
            if fits {
                if self
                    .used
                    .compare_exchange(used, used + len, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if evicted {
                return Err(CacheError::NoRoom { bytes: len });
            }
            self.make_room(len, Requester::Block(team))?;
            evicted = true;
        }
    }

    /// Reserves `len` bytes of `team`'s quota, first evicting the team's own least recently
    /// used data if it is at its quota; [`CacheError::NoRoom`] if that cannot make room.
    pub(crate) fn admit_team(&self, quotas: &QuotaSet, team: usize, len: u64) -> Result<()> {
        if quotas.try_reserve(team, len) {
            return Ok(());
        }
        {
            let _one_pass = self.evicting.lock();
            let max = quotas.quotas[team].max_bytes;
            let mut own = self.candidates();
            own.retain(|c| c.team == Some(team));
            let cached: u64 = own.iter().map(|c| c.bytes).sum();
            let used = quotas.used[team].load(Ordering::Relaxed);
            let in_flight = used.saturating_sub(cached);
            let target = max.saturating_sub(len + max / SLACK_FRACTION + in_flight);
            self.evict_from(own, target)?;
        }
        if quotas.try_reserve(team, len) {
            Ok(())
        } else {
            Err(CacheError::NoRoom { bytes: len })
        }
    }

    /// Gives back a reservation of [`Cache::admit`] that did not become a block.
    pub(crate) fn unreserve(&self, len: u64) {
        self.used.fetch_sub(len, Ordering::Relaxed);
    }
}

/// What [`Cache::evict_where`] did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictOutcome {
    pub evicted: Evicted,
    /// Matching objects left alone because a passthrough reader has their file open.
    pub pinned_objects: u64,
    pub pinned_bytes: u64,
}

impl Cache {
    /// Evicts every whole object for which `select(backend, key, last_access)` holds, except
    /// objects a passthrough reader has pinned (counted instead). With `dry_run`, only counts.
    /// Readers of evicted data simply fetch it again.
    pub fn evict_where(
        &self,
        select: impl Fn(&str, &str, i64) -> bool,
        dry_run: bool,
    ) -> Result<EvictOutcome> {
        let mut out = EvictOutcome::default();
        let mut victims = Vec::new();
        {
            let objects = self.objects.read();
            for (backend, key, e) in objects.iter() {
                if !select(backend, key, e.last_access.load(Ordering::Relaxed)) {
                    continue;
                }
                let bytes = self.cached_bytes(e);
                if e.pins.load(Ordering::Relaxed) > 0 {
                    out.pinned_objects += 1;
                    out.pinned_bytes += bytes;
                    continue;
                }
                victims.push((backend.to_string(), key.to_string(), e.id));
                out.evicted.objects += 1;
                out.evicted.blocks += e.blocks.len() as u64;
                out.evicted.bytes += bytes;
            }
        }
        if dry_run || victims.is_empty() {
            return Ok(out);
        }
        let _one_pass = self.evicting.lock();
        let mut done = Evicted::default();
        for (backend, key, id) in victims {
            let removed = {
                let mut objects = self.objects.write();
                match objects.get(&backend, &key) {
                    Some(e) if e.id == id && e.pins.load(Ordering::Relaxed) == 0 => {
                        objects.remove(&backend, &key)
                    }
                    _ => None,
                }
            };
            if let Some(e) = removed {
                done.objects += 1;
                done.blocks += e.blocks.len() as u64;
                done.bytes += self.cached_bytes(&e);
                self.forget(&backend, &key, e)?;
            }
        }
        self.count_evicted(&done, "evicted on request")?;
        out.evicted = done;
        Ok(out)
    }
}
