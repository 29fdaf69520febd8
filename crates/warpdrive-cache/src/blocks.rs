//! Block data: reads checked per unit, writes admitted within the limits.
//!
//! Each cached block sits at its own offset of its object version's data file. A read
//! takes the CRC32Cs of the block from the in-memory index, `pread`s only the check units the
//! range touches and checks each; a mismatch drops the whole block (counted, refetched by the
//! caller). A write of a block of a version the cache does not hold first drops the old
//! version (its data file and index rows), then is admitted: if it would push the cache over
//! its size cap (or its team over its quota) or the disk under its floor, least recently used
//! data is evicted first, and if that cannot make room the block is not cached
//! ([`CacheError::NoRoom`]). The data is written before the index records the block, so the
//! index never names bytes that are not on disk.

use super::*;

/// Reads `len` bytes at `offset` (fewer only at end of file) into a new buffer, without
/// zeroing it first: on the hot path the memset would cost as much as the copy.
fn pread_vec(f: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        // SAFETY: pread(2) writes at most `spare.len()` bytes to `spare`, which is valid,
        // writable memory owned by `buf`.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: pread initialised the `n` bytes after the first `filled`.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(buf)
}

impl Cache {
    /// Reads block `idx` of this version if cached and intact. A block whose CRC32C does not
    /// match is dropped and counted, and `None` is returned so the caller refetches it.
    pub fn read_block(&self, id: &ObjectId, idx: BlockIndex) -> Result<Option<Bytes>> {
        self.read_range(id, idx, 0..self.cfg.block_size)
    }

    /// Reads bytes `range` of block `idx` (offsets within the block, clamped to its length)
    /// if the block is cached and the check units covering `range` are intact. A damaged
    /// unit drops the whole block, is counted, and gives `None`, so the caller refetches.
    pub fn read_range(
        &self,
        id: &ObjectId,
        idx: BlockIndex,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>> {
        self.read_checked(id, idx, range, true)
    }

    /// [`Cache::read_range`]; `touch` records the read for eviction order (a scrub does not).
    pub(crate) fn read_checked(
        &self,
        id: &ObjectId,
        idx: BlockIndex,
        range: std::ops::Range<u64>,
        touch: bool,
    ) -> Result<Option<Bytes>> {
        let (oid, len, first_unit, crcs) = {
            let objects = self.objects.read();
            let Some(e) = objects.get(&id.backend, &id.key) else {
                return Ok(None);
            };
            if e.etag != id.etag {
                return Ok(None);
            }
            let Some(all) = e.blocks.get(&idx.0) else {
                return Ok(None);
            };
            let now = now_secs();
            let before = e.last_access.load(Ordering::Relaxed);
            if touch
                && now - before >= TOUCH_GRANULARITY_SECS
                && e.last_access
                    .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.send(Op::Touch {
                    id: e.id,
                    last_access: now,
                })?;
            }
            let len = block_len(self.cfg.block_size, e.size, idx.0);
            let end = range.end.min(len);
            if range.start >= end {
                return Ok(Some(Bytes::new()));
            }
            let (u0, u1) = (range.start / CHECK_UNIT, (end - 1) / CHECK_UNIT);
            // A checksum list that does not cover the block is damage, like a mismatch.
            let units = if all.len() as u64 == len.div_ceil(CHECK_UNIT) {
                u0 as usize..u1 as usize + 1
            } else {
                0..0
            };
            (e.id, len, u0, (all.clone(), units))
        };
        let (all, units) = crcs;
        let crcs = &all[units];
        let end = range.end.min(len);
        let from = first_unit * CHECK_UNIT;
        let to = ((first_unit + crcs.len() as u64) * CHECK_UNIT).min(len);
        let f = self.file(oid)?;
        let buf = if crcs.is_empty() {
            Vec::new()
        } else {
            let at = idx.0 * self.cfg.block_size + from;
            pread_vec(&f, (to - from) as usize, at).map_err(|e| io(&self.data_path(oid))(e))?
        };
        // A short read (truncated data file) is damage, like a checksum mismatch.
        let intact = !crcs.is_empty()
            && buf.len() as u64 == to - from
            && buf
                .chunks(CHECK_UNIT as usize)
                .zip(crcs)
                .all(|(chunk, crc)| crc32c::crc32c(chunk) == *crc);
        if !intact {
            tracing::warn!(
                backend = id.backend,
                key = id.key,
                block = idx.0,
                "cached block failed its checksum; dropping it"
            );
            self.drop_block(id, idx)?;
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            self.send(Op::AddCounter {
                name: "corrupt_blocks",
                delta: 1,
            })?;
            return Ok(None);
        }
        Ok(Some(Bytes::from(buf).slice(
            (range.start - from) as usize..(end - from) as usize,
        )))
    }

    pub(crate) fn drop_block(&self, id: &ObjectId, idx: BlockIndex) -> Result<()> {
        let oid = {
            let mut objects = self.objects.write();
            match objects.get_mut(&id.backend, &id.key) {
                Some(e) if e.etag == id.etag => {
                    if e.blocks.remove(&idx.0).is_some() {
                        let len = block_len(self.cfg.block_size, e.size, idx.0);
                        self.release(&id.backend, &id.key, len);
                    }
                    e.id
                }
                _ => return Ok(()),
            }
        };
        self.send(Op::DropBlock {
            object_id: oid,
            block: idx.0,
        })
    }

    /// Stores block `idx` of this version of an object of `size` bytes. The bytes reach the
    /// data file before the index learns of them. A different cached version of the same
    /// object is dropped first.
    pub fn write_block(
        &self,
        id: &ObjectId,
        size: u64,
        idx: BlockIndex,
        data: &[u8],
    ) -> Result<()> {
        let want = self.block_len(size, idx)?;
        if data.len() as u64 != want {
            return Err(CacheError::WrongLength {
                block: idx.0,
                got: data.len(),
                want,
            });
        }
        let room = self.reserve(id, want)?;
        let r = self.write_admitted(id, size, idx, data);
        if !matches!(r, Ok(true)) {
            self.cancel(room);
        }
        r.map(|_| ())
    }

    /// Reserves `len` bytes for `id`: in its team's quota, then under the cache's limits
    /// (evicting if needed).
    fn reserve(&self, id: &ObjectId, len: u64) -> Result<Reserved> {
        let quotas = self.quotas.read().clone();
        let team = quotas.team_of(&id.backend, &id.key);
        if let Some(t) = team {
            self.admit_team(&quotas, t, len)?;
        }
        if let Err(e) = self.admit(len, team) {
            if let Some(t) = team {
                quotas.sub(t, len);
            }
            return Err(e);
        }
        Ok(Reserved { quotas, team, len })
    }

    /// Gives back a reservation whose bytes were not recorded.
    fn cancel(&self, r: Reserved) {
        self.unreserve(r.len);
        if let Some(t) = r.team {
            r.quotas.sub(t, r.len);
        }
    }

    /// Makes `new_id` (with `blocks` and their checksums) the cached version `id` of its
    /// object, under the objects' lock; queues its index row (before the lock is let go:
    /// a concurrent writer of a block of this version finds the entry only under the lock, so
    /// its block row is queued after the object row it refers to — the other order failed
    /// the whole batch on the foreign key). Returns the queueing's outcome and the version it
    /// replaced, to be forgotten once the lock is let go.
    fn insert_version(
        &self,
        objects: &mut Objects,
        id: &ObjectId,
        new_id: u64,
        size: u64,
        blocks: HashMap<u64, Crcs>,
    ) -> (Result<()>, Option<Entry>) {
        let old = objects.insert(
            &id.backend,
            &id.key,
            Entry::new(new_id, id.etag.clone(), size, blocks, now_secs()),
        );
        let queued = self.send(Op::PutObject {
            id: new_id,
            backend: id.backend.clone(),
            key: id.key.clone(),
            etag: id.etag.clone(),
            size,
            last_access: now_secs(),
        });
        (queued, old)
    }

    /// Writes a block whose room is reserved. `Ok(false)` when the bytes were not recorded
    /// (already cached, or the object was replaced meanwhile).
    fn write_admitted(
        &self,
        id: &ObjectId,
        size: u64,
        idx: BlockIndex,
        data: &[u8],
    ) -> Result<bool> {
        let want = data.len() as u64;
        let oid = self.entry_for(id, size)?;
        let f = self.file(oid)?;
        let turn = self.write_turns[(oid % WRITE_TURNS as u64) as usize].lock();
        let written = f.write_all_at(data, idx.0 * self.cfg.block_size);
        drop(turn);
        if let Err(e) = written {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                // The disk filled faster than the estimate said: not a failure of the disk.
                self.free_estimate.store(0, Ordering::Relaxed);
                return Err(CacheError::NoRoom { bytes: want });
            }
            return Err(io(&self.data_path(oid))(e));
        }
        self.free_estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                Some(f.saturating_sub(want))
            })
            .ok();
        let crcs = unit_crcs(data);
        {
            let mut objects = self.objects.write();
            match objects.get_mut(&id.backend, &id.key) {
                // Still the same version: record the block.
                Some(e) if e.id == oid => {
                    if e.blocks.insert(idx.0, crcs.clone()).is_some() {
                        return Ok(false);
                    }
                    // New bytes have not been checked against the store.
                    if std::mem::take(&mut e.store_verified) {
                        self.send(Op::SetVerified {
                            id: oid,
                            verified: false,
                        })?;
                    }
                }
                // Replaced meanwhile by another version: these bytes are not wanted.
                _ => return Ok(false),
            }
        }
        self.send(Op::PutBlock {
            object_id: oid,
            block: idx.0,
            crcs,
        })?;
        Ok(true)
    }

    /// Takes the file at `src` (in [`Cache::spool_dir`]: on the cache's disk) as every block
    /// of this version of an object of `size` bytes: the file is renamed into the cache, each
    /// block's checksums computed from it, and another cached version of the object dropped.
    /// How a file written through the mount becomes cached as it was committed, with no copy.
    /// On an error `src` is left where it was.
    pub fn adopt(&self, id: &ObjectId, size: u64, src: &Path) -> Result<()> {
        let room = self.reserve(id, size)?;
        let blocks = size.div_ceil(self.cfg.block_size);
        let mut crcs = HashMap::with_capacity(blocks as usize);
        let computed = (|| -> std::io::Result<()> {
            let f = File::open(src)?;
            if f.metadata()?.len() != size {
                return Err(std::io::Error::other(format!(
                    "{} is not {size} bytes long",
                    src.display()
                )));
            }
            let mut buf = vec![0u8; self.cfg.block_size as usize];
            for b in 0..blocks {
                let len = block_len(self.cfg.block_size, size, b) as usize;
                f.read_exact_at(&mut buf[..len], b * self.cfg.block_size)?;
                crcs.insert(b, unit_crcs(&buf[..len]));
            }
            Ok(())
        })();
        if let Err(e) = computed {
            self.cancel(room);
            return Err(io(src)(e));
        }
        let new_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.data_path(new_id);
        if let Err(e) = std::fs::rename(src, &path) {
            self.cancel(room);
            return Err(io(&path)(e));
        }
        let mut objects = self.objects.write();
        let (mut queued, old) = self.insert_version(&mut objects, id, new_id, size, crcs.clone());
        for (block, crcs) in crcs {
            if queued.is_ok() {
                queued = self.send(Op::PutBlock {
                    object_id: new_id,
                    block,
                    crcs,
                });
            }
        }
        drop(objects);
        if let Some(old) = old {
            self.forget(&id.backend, &id.key, old)?;
        }
        queued
    }

    /// The id of the cached entry for this version, creating it (and its sparse data file),
    /// and dropping another cached version of the same object.
    pub(crate) fn entry_for(&self, id: &ObjectId, size: u64) -> Result<u64> {
        if let Some(e) = self.objects.read().get(&id.backend, &id.key)
            && e.etag == id.etag
            && e.size == size
        {
            return Ok(e.id);
        }
        let new_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.data_path(new_id);
        let f = File::create(&path).map_err(io(&path))?;
        f.set_len(size).map_err(io(&path))?;
        let mut objects = self.objects.write();
        if let Some(e) = objects.get(&id.backend, &id.key)
            && e.etag == id.etag
            && e.size == size
        {
            // Another writer created it first; ours is not needed.
            let _ = std::fs::remove_file(&path);
            return Ok(e.id);
        }
        let (queued, old) = self.insert_version(&mut objects, id, new_id, size, HashMap::new());
        drop(objects);
        if let Some(old) = old {
            self.forget(&id.backend, &id.key, old)?;
        }
        queued?;
        Ok(new_id)
    }

    /// Drops a removed entry's blocks: from the byte count, the index and the disk.
    pub(crate) fn forget(&self, backend: &str, key: &str, old: Entry) -> Result<()> {
        // The space is freed first, then counted free (see `punch`).
        self.remove_data(old.id);
        self.release(backend, key, cached_bytes(self.cfg.block_size, &old));
        self.send(Op::DropObject { id: old.id })
    }

    /// Takes `bytes` of `backend`/`key` off the cache's and its team's counts.
    pub(crate) fn release(&self, backend: &str, key: &str, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        let q = self.quotas.read();
        if let Some(t) = q.team_of(backend, key) {
            q.sub(t, bytes);
        }
    }
}

/// Bytes reserved for a write not yet recorded ([`Cache::reserve`]).
struct Reserved {
    quotas: Arc<QuotaSet>,
    team: Option<usize>,
    len: u64,
}
