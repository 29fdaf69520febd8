//! Which opens the kernel serves by FUSE passthrough, straight from the cache file.
//!
//! An open is offered passthrough when passthrough is on and the kernel accepted it, the
//! object is at least `fuse.passthrough_min_size` (smaller files open faster with the
//! kernel's page cache kept), its version is fully cached, and its cache file is shown sound: unless this version was
//! checked and its data file is unchanged since (a write, a punched hole, anything that moves
//! its change time), every block is checked against its CRC32C and the whole against the
//! store's checksum ([`crate::integrity`]), and damage is refetched first, for at most
//! [`CHECK_ROUNDS`] rounds. The file is then pinned (not evicted) until the handle closes;
//! the adapter decides with the kernel whether the offer is taken.

use std::sync::atomic::Ordering;

use super::Fs;
use crate::blocks::Object;
use crate::integrity::Outcome;

/// Checks of an object before passthrough: a check that finds damage refetches and checks
/// again; one whose whole differs from the store's checksum refetches the whole object and
/// checks once more, and a second difference means the checksum is not of these bytes
/// ([`crate::integrity`]).
const CHECK_ROUNDS: usize = 3;

impl Fs {
    /// The passthrough offer for an open of `obj` (see [`Fs::passthrough_file`]). While
    /// other handles of the inode read by passthrough, the kernel accepts only opens that
    /// share their backing file: if this open would not (the file lost a block, or failed a
    /// check, since), the version's cache file is repaired in place first, so that it can;
    /// if that fails, no offer is made and the adapter answers `EBUSY`.
    pub(super) async fn passthrough_offer(
        &self,
        obj: &Object,
    ) -> (Option<u64>, Option<(u64, std::fs::File)>) {
        let (mut pinned, mut file) = self.passthrough_file(obj).await;
        let live = self.backed.lock().get(&obj.ino).map(|(oid, _)| *oid);
        if let Some(live) = live
            && pinned != Some(live)
        {
            self.let_go(obj, pinned.take());
            file = None;
            tracing::info!(
                backend = obj.id.backend,
                key = obj.id.key,
                "repairing the cache file in place so that this open can share it with the handles reading it by passthrough"
            );
            if self.reader.fill(obj).await.is_ok() {
                (pinned, file) = self.passthrough_file(obj).await;
            }
            if pinned != Some(live) {
                self.let_go(obj, pinned.take());
                file = None;
            }
        }
        if let Some(oid) = pinned {
            let mut backed = self.backed.lock();
            let e = backed.entry(obj.ino).or_insert((oid, 0));
            if e.0 == oid {
                e.1 += 1;
            }
        }
        (pinned, file)
    }

    /// A handle's pin is let go (passthrough declined, or the handle closed).
    pub(super) fn let_go(&self, obj: &Object, pinned: Option<u64>) {
        let Some(oid) = pinned else { return };
        if let Some(cache) = self.reader.cache() {
            cache.unpin(&obj.id, oid);
        }
        let mut backed = self.backed.lock();
        if let Some(e) = backed.get_mut(&obj.ino)
            && e.0 == oid
        {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                backed.remove(&obj.ino);
            }
        }
    }

    /// The cache file to hand the kernel for `obj`, pinned, if passthrough is on and every
    /// block is cached. Unless this version was checked and its data file is unchanged since
    /// (a write, a punched hole, anything that moves its change time), every block is checked
    /// first, and the whole against the store's checksum ([`crate::integrity`]): passthrough
    /// reads skip the daemon's checksums. Damage is refetched before the open.
    pub(super) async fn passthrough_file(
        &self,
        obj: &Object,
    ) -> (Option<u64>, Option<(u64, std::fs::File)>) {
        if !self.cfg.passthrough || !self.passthrough_ready.load(Ordering::Relaxed) {
            return (None, None);
        }
        let Some(cache) = self.reader.cache().cloned() else {
            return (None, None);
        };
        if obj.id.etag.is_empty()
            || obj.size < self.cfg.passthrough_min_size
            || !cache.is_complete(&obj.id)
        {
            return (None, None);
        }
        if !self.reader.integrity.is_verified(&cache, &obj.id) {
            let mut sound = false;
            for _ in 0..CHECK_ROUNDS {
                let (c, r, o) = (cache.clone(), self.reader.clone(), obj.clone());
                let checked = tokio::task::spawn_blocking(move || r.integrity.check(&c, &o)).await;
                match checked {
                    Ok(Ok(Outcome::Sound { .. })) => {
                        sound = true;
                        break;
                    }
                    Ok(Ok(outcome)) => {
                        if let Outcome::Damaged(n) = outcome {
                            tracing::warn!(
                                backend = obj.id.backend,
                                key = obj.id.key,
                                damaged = n,
                                "damaged cached blocks found before passthrough; refetching them"
                            );
                        }
                        if let Err(e) = self.reader.fill(obj).await {
                            tracing::warn!(error = %e, "could not repair the cached object");
                            return (None, None);
                        }
                    }
                    Ok(Err(e)) => {
                        self.reader.cache_error(&e);
                        return (None, None);
                    }
                    Err(_) => return (None, None),
                }
            }
            if !sound || !self.reader.integrity.is_verified(&cache, &obj.id) {
                // Not shown sound: reads go through the daemon, which checks every block.
                return (None, None);
            }
        }
        match cache.pin_complete(&obj.id) {
            Ok(Some((oid, file))) => (Some(oid), Some((oid, file))),
            Ok(None) => (None, None),
            Err(e) => {
                self.reader.cache_error(&e);
                (None, None)
            }
        }
    }
}
