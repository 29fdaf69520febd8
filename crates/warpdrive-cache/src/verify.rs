//! Scrubbing: every cached block checked against its CRC32C, and fully cached objects hashed
//! whole against the checksum their store keeps (recorded in the index by the filesystem's
//! integrity checks), for `warpdrive-ctl verify` and the checks before passthrough.
//!
//! A block that fails is dropped (its reader refetches it); an object whose whole does not
//! match its store's checksum is dropped whole. The hash itself is the caller's
//! ([`WholeCheck`]): this crate knows checksums only as the text the index keeps.

use crate::{BlockIndex, Cache, ObjectId, Op, Result};

impl Cache {
    /// Reads every cached block of this version and checks its CRC32C, dropping (and
    /// counting) the damaged ones. Returns how many were damaged.
    pub fn verify(&self, id: &ObjectId) -> Result<u64> {
        self.check_object(id, None).map(|c| c.damaged)
    }

    /// As [`Cache::verify`], and feeds the object's bytes in order to `whole` (a hash to
    /// compare with a checksum the store keeps); [`Checked::whole`] says whether every byte
    /// of the object reached it.
    pub fn check_object(&self, id: &ObjectId, mut whole: Option<Feed<'_>>) -> Result<Checked> {
        let (mut blocks, complete) = {
            let objects = self.objects.read();
            match objects.get(&id.backend, &id.key) {
                Some(e) if e.etag == id.etag => (
                    e.blocks.keys().copied().collect::<Vec<u64>>(),
                    e.blocks.len() as u64 == e.size.div_ceil(self.cfg.block_size),
                ),
                _ => {
                    return Ok(Checked {
                        damaged: 0,
                        whole: false,
                    });
                }
            }
        };
        blocks.sort_unstable();
        if !complete {
            whole = None;
        }
        let mut out = Checked {
            damaged: 0,
            whole: whole.is_some(),
        };
        for b in blocks {
            match self.read_checked(id, BlockIndex(b), 0..self.cfg.block_size, false)? {
                Some(data) => {
                    if let Some(h) = whole.as_mut() {
                        h(&data);
                    }
                }
                None => {
                    out.damaged += 1;
                    out.whole = false;
                    whole = None;
                }
            }
        }
        Ok(out)
    }

    /// The store's checksum of this version, in its text form, if one was recorded.
    pub fn store_checksum(&self, id: &ObjectId) -> Option<String> {
        let objects = self.objects.read();
        let e = objects.get(&id.backend, &id.key)?;
        if e.etag != id.etag {
            return None;
        }
        e.store_checksum.clone()
    }

    /// Whether this version's cached bytes matched its store's checksum when last checked
    /// whole, with no block written since.
    pub fn store_verified(&self, id: &ObjectId) -> bool {
        let objects = self.objects.read();
        objects
            .get(&id.backend, &id.key)
            .is_some_and(|e| e.etag == id.etag && e.store_verified)
    }

    /// Records that this version's cached bytes, whole, matched its store's checksum.
    pub fn mark_store_verified(&self, id: &ObjectId) -> Result<()> {
        if self.store_verified(id) {
            return Ok(());
        }
        let mut objects = self.objects.write();
        let Some(e) = objects.get_mut(&id.backend, &id.key) else {
            return Ok(());
        };
        if e.etag != id.etag || e.store_verified {
            return Ok(());
        }
        e.store_verified = true;
        self.send(Op::SetVerified {
            id: e.id,
            verified: true,
        })
    }

    /// Records the store's checksum of this version (`None`: it keeps none), if cached.
    pub fn set_store_checksum(&self, id: &ObjectId, checksum: Option<&str>) -> Result<()> {
        // Every check records what the store said; almost always it is recorded already,
        // and the reads of the hot path need not wait for a write lock to learn that.
        if self.store_checksum(id).as_deref() == checksum {
            return Ok(());
        }
        let mut objects = self.objects.write();
        let Some(e) = objects.get_mut(&id.backend, &id.key) else {
            return Ok(());
        };
        if e.etag != id.etag || e.store_checksum.as_deref() == checksum {
            return Ok(());
        }
        e.store_checksum = checksum.map(str::to_string);
        self.send(Op::SetChecksum {
            id: e.id,
            checksum: e.store_checksum.clone(),
        })
    }

    /// Checks every cached block of the objects for which `select(backend, key)` holds
    /// (all of each block's CRC32Cs), dropping and counting damaged blocks: a scrub. A fully
    /// cached object with a recorded store checksum is also hashed whole with
    /// `whole(checksum, size)`; an object whose bytes do not match it is dropped whole.
    /// `progress` is called after each object with the bytes checked so far.
    /// With `each`, [`VerifyOutcome::each`] lists every object's check.
    pub fn verify_where(
        &self,
        select: impl Fn(&str, &str) -> bool,
        whole: impl Fn(&str, u64) -> Option<Box<dyn WholeCheck>>,
        each: bool,
        progress: impl Fn(u64),
    ) -> Result<VerifyOutcome> {
        let ids: Vec<(ObjectId, u64, u64)> = {
            let objects = self.objects.read();
            objects
                .iter()
                .filter(|(b, k, _)| select(b, k))
                .map(|(b, k, e)| {
                    let id = ObjectId {
                        backend: b.to_string(),
                        key: k.to_string(),
                        etag: e.etag.clone(),
                    };
                    (id, e.blocks.len() as u64, self.cached_bytes(e))
                })
                .collect()
        };
        let mut out = VerifyOutcome::default();
        for (id, blocks, bytes) in ids {
            let size = self
                .objects
                .read()
                .get(&id.backend, &id.key)
                .map(|e| e.size);
            let stored = self.store_checksum(&id);
            let mut hash = match (&stored, size) {
                (Some(c), Some(size)) => whole(c, size),
                _ => None,
            };
            let checked = match hash.as_mut() {
                Some(h) => self.check_object(&id, Some(&mut |d: &[u8]| h.update(d)))?,
                None => self.check_object(&id, None)?,
            };
            out.objects += 1;
            out.blocks += blocks;
            out.bytes += bytes;
            let had_hash = hash.is_some();
            let verdict = match hash {
                Some(h) if checked.whole => h.matches(),
                _ => None,
            };
            let check = match verdict {
                Some(true) => ObjectCheck::Store,
                Some(false) => ObjectCheck::StoreMismatch,
                None if checked.damaged > 0 => ObjectCheck::Damaged,
                None if had_hash && checked.whole => ObjectCheck::StoreCannotTell,
                None if had_hash || self.is_complete(&id) => ObjectCheck::NoStoreChecksum,
                None => ObjectCheck::PartlyCached,
            };
            if each {
                out.each
                    .push((id.backend.clone(), id.key.clone(), check, stored.clone()));
            }
            match verdict {
                Some(true) => {
                    self.mark_store_verified(&id)?;
                    out.store_checked += 1
                }
                Some(false) => {
                    tracing::warn!(
                        backend = id.backend,
                        key = id.key,
                        "cached object does not match the store's checksum; dropping it"
                    );
                    self.invalidate(&id.backend, &id.key)?;
                    out.store_mismatched
                        .push((id.backend.clone(), id.key.clone()));
                }
                None => out.self_checked += 1,
            }
            if checked.damaged > 0 {
                out.damaged_blocks += checked.damaged;
                out.damaged.push((id.backend, id.key, checked.damaged));
            }
            progress(out.bytes);
        }
        Ok(out)
    }
}

/// What [`Cache::verify_where`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub damaged_blocks: u64,
    /// (backend, key, damaged blocks) of each object with damage; those blocks are dropped.
    pub damaged: Vec<(String, String, u64)>,
    /// Objects whose whole bytes matched the checksum their store keeps.
    pub store_checked: u64,
    /// Objects checked against their own block checksums only: partly cached, or their
    /// store keeps no checksum this daemon has seen.
    pub self_checked: u64,
    /// (backend, key) of fully cached objects whose bytes did not match the store's
    /// checksum; they were dropped whole.
    pub store_mismatched: Vec<(String, String)>,
    /// When asked: (backend, key, how it was checked, the store checksum's text form) of
    /// every object.
    pub each: Vec<(String, String, ObjectCheck, Option<String>)>,
}

/// How one object was checked by [`Cache::verify_where`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Whole, against the checksum its store keeps: matched.
    Store,
    /// Whole, against the checksum its store keeps: did not match (dropped).
    StoreMismatch,
    /// Against its block checksums: the store's checksum cannot tell (a multipart ETag of
    /// an unusual part size).
    StoreCannotTell,
    /// Against its block checksums: its store keeps no usable checksum, or none was seen.
    NoStoreChecksum,
    /// Against its block checksums: not fully cached.
    PartlyCached,
    /// Damaged blocks were found (and dropped).
    Damaged,
}

impl ObjectCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectCheck::Store => "store",
            ObjectCheck::StoreMismatch => "store_mismatch",
            ObjectCheck::StoreCannotTell => "store_cannot_tell",
            ObjectCheck::NoStoreChecksum => "no_store_checksum",
            ObjectCheck::PartlyCached => "partly_cached",
            ObjectCheck::Damaged => "damaged",
        }
    }
}

/// Takes an object's bytes, in order, for a whole-object hash.
pub type Feed<'a> = &'a mut dyn FnMut(&[u8]);

/// What [`Cache::check_object`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Damaged blocks (dropped).
    pub damaged: u64,
    /// Every byte of the object, intact, was fed to the whole-object hash.
    pub whole: bool,
}

/// A hash of an object's bytes, fed in order, compared at the end with a checksum the
/// object's store keeps (implemented over `warpdrive_store::checksum::Hasher`).
pub trait WholeCheck {
    fn update(&mut self, data: &[u8]);
    /// `Some(true)`: the bytes match; `Some(false)`: they do not; `None`: cannot tell.
    fn matches(self: Box<Self>) -> Option<bool>;
}
