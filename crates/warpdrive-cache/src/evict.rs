//! Eviction: least recently used first, down to a byte target, whole objects or parts of them.
//!
//! A pass sorts cached objects by last access and drops the oldest until the cache holds at
//! most the target. When the oldest object is much larger than what still has to go (a huge
//! object read only in part, say), only as many of its blocks are dropped as needed, highest
//! offsets first, by punching holes in its data file; the rest stays cached. The target
//! comes from the size cap and the free-space floor ([`Cache::enforce_limits`]): whichever
//! asks for less data wins, so the cache never fills the disk.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use crate::index::Op;
use crate::{BlockIndex, Cache, CacheError, Result, io};

/// What one eviction pass freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
}

/// An object that may be evicted, as seen by one pass.
struct Candidate {
    last_access: i64,
    backend: String,
    key: String,
    id: u64,
    bytes: u64,
}

impl Cache {
    /// Every cached object with its size in cached bytes: one walk under the read lock.
    fn candidates(&self) -> Vec<Candidate> {
        let objects = self.objects.read();
        objects
            .iter()
            .map(|(backend, key, e)| Candidate {
                last_access: e.last_access.load(Ordering::Relaxed),
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
        // Oldest first; the id breaks ties in creation order.
        candidates.sort_by_key(|c| (c.last_access, c.id));
        for c in candidates {
            if total <= target {
                break;
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
                self.send(Op::DropObject { id: c.id })?;
                let _ = std::fs::remove_file(self.data_path(c.id));
                out.objects += 1;
                out.blocks += e.blocks.len() as u64;
                out.bytes += c.bytes;
                total = total.saturating_sub(c.bytes);
            }
        }
        if out.blocks > 0 {
            tracing::info!(
                objects = out.objects,
                blocks = out.blocks,
                bytes = out.bytes,
                "evicted"
            );
            self.evicted.fetch_add(out.blocks, Ordering::Relaxed);
            self.send(Op::AddCounter {
                name: "evicted_blocks",
                delta: out.blocks as i64,
            })?;
        }
        Ok(out)
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
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
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

    /// Bytes and free bytes of the filesystem holding the cache.
    pub fn disk_usage(&self) -> Result<(u64, u64)> {
        let c =
            std::ffi::CString::new(self.cfg.dir.as_os_str().as_encoded_bytes()).map_err(|e| {
                CacheError::Io {
                    path: self.cfg.dir.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
        // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs struct.
        let (r, s) = unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            (libc::statvfs(c.as_ptr(), &mut s), s)
        };
        if r != 0 {
            return Err(CacheError::Io {
                path: self.cfg.dir.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        let frsize = s.f_frsize;
        Ok((s.f_blocks * frsize, s.f_bavail * frsize))
    }

    /// Evicts so that the cache holds at most `max_bytes` and the disk keeps at least
    /// `min_free` (a fraction, 0.1 for 10 %) of its size free.
    pub fn enforce_limits(&self, max_bytes: u64, min_free: f64) -> Result<Evicted> {
        let candidates = self.candidates();
        let cached: u64 = candidates.iter().map(|c| c.bytes).sum();
        let (total, free) = self.disk_usage()?;
        let floor = (total as f64 * min_free) as u64;
        let deficit = floor.saturating_sub(free);
        let target = max_bytes.min(cached.saturating_sub(deficit));
        self.evict_from(candidates, target)
    }
}
