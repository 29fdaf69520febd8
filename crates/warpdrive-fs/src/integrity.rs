//! End-to-end checks of fully cached objects against the checksum their store keeps.
//!
//! The algorithm. An object version is checked once all of it is cached: when its last
//! missing block has been written ([`Integrity::completed`], on that block's writer thread),
//! and before a passthrough open when its data file changed since its last check (the core's
//! passthrough path). The expected checksum is the first found of: what the store's answers
//! to this daemon's HEADs and GETs said ([`warpdrive_store::checksum`]); what the cache index
//! recorded for the version; for S3, the ETag itself. The cached blocks are then read in
//! order, each checked against its CRC32C (damaged ones are dropped), and hashed whole:
//!
//! * a match is counted and the version recorded as verified, with its data file's
//!   fingerprint, so that passthrough opens need no second check while the file is unchanged;
//! * a mismatch is counted, logged, and the version dropped from the cache (the next read
//!   refetches it); a second mismatch of the same version after that refetch means the
//!   checksum does not describe these bytes (an uploader's wrong `Content-MD5`, an S3 ETag
//!   that is no MD5), and the version is checked against its own block checksums from then
//!   on, with one log line;
//! * without a usable checksum the version is verified against its block checksums only.
//!
//! What the store keeps is recorded in the cache index, so that checks after a restart and
//! `warpdrive-ctl verify` need no request, and so is a match: until a block of the version
//! is written again, later checks (a passthrough open after a restart) check the block
//! CRC32Cs only, which were computed from the bytes that matched.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use warpdrive_cache::{Cache, CacheError, DataFingerprint, ObjectId};
use warpdrive_config::BackendKind;
use warpdrive_metrics::{ReadMetrics, add};
use warpdrive_store::checksum::{Checksum, Known};

use crate::blocks::Object;
use crate::inode::Ino;

/// The text the cache index keeps for a version whose store keeps no usable checksum.
const NONE: &str = "none";

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every block intact; `store` when the whole matched the store's checksum as well.
    Sound { store: bool },
    /// Intact blocks, but the whole did not match the store's checksum: the version was
    /// dropped from the cache.
    Mismatch,
    /// This many blocks failed their CRC32C and were dropped.
    Damaged(u64),
    /// Not every block is cached (evicted or dropped meanwhile).
    Incomplete,
}

/// Which versions were checked, and the state of those whose store checksum failed.
#[derive(Debug)]
pub struct Integrity {
    /// Versions whose every block was checked, with their data file's fingerprint then.
    verified: Mutex<HashMap<ObjectId, DataFingerprint>>,
    /// Versions that failed the store's checksum, with the fingerprint of the data file that
    /// failed: a failure of another data file (a refetched copy) makes the checksum unusable,
    /// one of the same file (two checks at once) does not.
    mismatched: Mutex<HashMap<ObjectId, Option<DataFingerprint>>>,
    /// Versions whose store checksum does not describe their bytes.
    unusable: Mutex<HashSet<ObjectId>>,
    /// Versions being checked after completion (one check each at a time).
    busy: Mutex<HashSet<ObjectId>>,
    /// Inodes whose cached bytes failed the store's checksum and were dropped: the kernel's
    /// pages of them, read before, are dropped at their next open.
    dropped: Mutex<HashSet<Ino>>,
    stats: ReadMetrics,
}

impl Integrity {
    pub fn new(stats: ReadMetrics) -> Integrity {
        Integrity {
            verified: Mutex::new(HashMap::new()),
            mismatched: Mutex::new(HashMap::new()),
            unusable: Mutex::new(HashSet::new()),
            busy: Mutex::new(HashSet::new()),
            dropped: Mutex::new(HashSet::new()),
            stats,
        }
    }

    /// Records a version whose cached copy was just made from bytes whose block checksums
    /// were computed from them (a file written through the mount): as checked.
    pub fn adopted(&self, cache: &Cache, id: &ObjectId) {
        if let Some(fp) = cache.data_fingerprint(id) {
            self.verified.lock().insert(id.clone(), fp);
        }
    }

    /// Whether this version was checked and its data file has not changed since.
    pub fn is_verified(&self, cache: &Cache, id: &ObjectId) -> bool {
        let current = cache.data_fingerprint(id);
        current.is_some() && self.verified.lock().get(id) == current.as_ref()
    }

    /// The checksum the store keeps of `obj`'s version, if known and usable; what the
    /// store's answers said is recorded in the cache index on the way.
    pub fn expected(&self, cache: &Cache, obj: &Object) -> Option<Checksum> {
        if self.unusable.lock().contains(&*obj.id) {
            return None;
        }
        match obj.backend.store_checksum(&obj.id.key, &obj.id.etag) {
            Some(Known::Checksum(c)) => {
                let _ = cache.set_store_checksum(&obj.id, Some(&c.to_string()));
                return Some(c);
            }
            Some(Known::None) => {
                let _ = cache.set_store_checksum(&obj.id, Some(NONE));
                return None;
            }
            None => {}
        }
        match cache.store_checksum(&obj.id) {
            Some(text) => Checksum::parse(&text),
            None if matches!(obj.backend.config().kind, BackendKind::S3 { .. }) => {
                Checksum::from_s3_etag(&obj.id.etag)
            }
            None => None,
        }
    }

    /// Checks every cached block of `obj` and the whole against the store's checksum
    /// (blocking: reads the whole object from the cache). A version whose cached bytes
    /// matched the store's checksum before (in this daemon's life or an earlier one, per the
    /// cache index) with no block written since is not hashed whole again: its block
    /// checksums, computed from the bytes that matched, cover it.
    pub fn check(&self, cache: &Cache, obj: &Object) -> Result<Outcome, CacheError> {
        let matched_before = cache.store_verified(&obj.id);
        let expected = if matched_before {
            None
        } else {
            self.expected(cache, obj)
        };
        let mut hash = expected.map(|c| c.hasher(obj.size));
        let checked = match hash.as_mut() {
            Some(h) => cache.check_object(&obj.id, Some(&mut |d: &[u8]| h.update(d)))?,
            None => cache.check_object(&obj.id, None)?,
        };
        if checked.damaged > 0 {
            return Ok(Outcome::Damaged(checked.damaged));
        }
        if !cache.is_complete(&obj.id) {
            return Ok(Outcome::Incomplete);
        }
        let verdict = match hash {
            Some(h) if checked.whole => h.matches(),
            _ => None,
        };
        let id = &*obj.id;
        if verdict == Some(false) {
            add(&self.stats.store_checksum_mismatches, 1);
            let algorithm = expected.map_or("", |c| c.algorithm());
            let fp = cache.data_fingerprint(id);
            let first = match self.mismatched.lock().insert(id.clone(), fp) {
                None => true,
                Some(before) => before == fp,
            };
            if first {
                tracing::warn!(
                    backend = id.backend,
                    key = id.key,
                    algorithm,
                    "the cached object does not match the store's checksum (damaged on its way in); dropping it to fetch it again"
                );
                self.dropped.lock().insert(obj.ino);
                cache.invalidate(&id.backend, &id.key)?;
                return Ok(Outcome::Mismatch);
            }
            // Freshly fetched bytes differ too: this checksum is not one of the object's
            // bytes (a wrong Content-MD5, an S3 ETag of an encrypted object).
            tracing::warn!(
                backend = id.backend,
                key = id.key,
                algorithm,
                "the store's checksum does not match the object's bytes even after fetching them again; it is checked against its own block checksums only"
            );
            self.unusable.lock().insert(id.clone());
            cache.set_store_checksum(id, Some(NONE))?;
        } else if verdict == Some(true) {
            add(&self.stats.store_checksum_matches, 1);
            cache.mark_store_verified(id)?;
        }
        if let Some(fp) = cache.data_fingerprint(id) {
            self.verified.lock().insert(id.clone(), fp);
        }
        Ok(Outcome::Sound {
            store: matched_before || verdict == Some(true),
        })
    }

    /// Whether `ino`'s cached bytes were dropped for a mismatch since the last call.
    pub fn take_dropped(&self, ino: Ino) -> bool {
        self.dropped.lock().remove(&ino)
    }

    /// The last missing block of `obj` was just written: checks the version unless it is
    /// being checked or was checked unchanged. A mismatch drops it (the next read refetches).
    pub fn completed(&self, cache: &Cache, obj: &Object) {
        if self.is_verified(cache, &obj.id) || !self.busy.lock().insert((*obj.id).clone()) {
            return;
        }
        match self.check(cache, obj) {
            Ok(Outcome::Damaged(n)) => tracing::warn!(
                backend = obj.id.backend,
                key = obj.id.key,
                damaged = n,
                "damaged blocks found in a just-cached object; dropped, they are fetched again when read"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not check a just-cached object"),
        }
        self.busy.lock().remove(&*obj.id);
    }
}
