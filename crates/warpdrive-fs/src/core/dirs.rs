//! Directories: handles over listing snapshots.
//!
//! `opendir` pins the directory's listing: a fresh one (younger than `metadata_ttl`, not
//! failed) is shared, else a new one starts streaming pages from the store at once
//! ([`crate::listing`]) and `readdir` serves entries as they arrive, waiting only for the
//! page it needs. The root lists the configured backends. Every listed file's metadata is
//! recorded on its inode, so a listing also revalidates what it shows.

use std::sync::Arc;
use std::time::Instant;

use super::*;

/// Entries a listing started by a lookup holds at most (about 500 bytes each with its
/// inode): a directory larger than that is listed this far, and names past it are looked
/// up one by one. `ls` lists every entry.
pub const LOOKUP_LISTING_MAX: usize = 100_000;

impl Fs {
    /// Opens a directory: pins a listing snapshot (reusing a fresh one).
    pub fn opendir(self: &Arc<Self>, ino: Ino) -> FsResult<u64> {
        if crate::control::owns(ino) {
            return self.control_opendir(ino);
        }
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let listing = self.listing_for(&node);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.write().insert(
            fh,
            Arc::new(DirHandle {
                ino,
                listing,
                made: self.made_dirs_in(&node),
            }),
        );
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        if crate::control::owns_fh(fh) {
            self.control.release(fh);
            return;
        }
        self.dirs.write().remove(&fh);
    }

    /// The node's listing for `opendir`: a fresh one that is not failed and runs to the
    /// end (a lookup's listing still running has its cap lifted), else a new one that starts
    /// streaming now.
    fn listing_for(self: &Arc<Self>, node: &Arc<Node>) -> Arc<Listing> {
        self.listing(node, None)
    }

    /// The node's listing for a lookup: any fresh one that is not failed (complete,
    /// running, or stopped at its cap), else a new one that stops after
    /// [`LOOKUP_LISTING_MAX`] entries.
    pub(super) fn listing_for_lookup(self: &Arc<Self>, node: &Arc<Node>) -> Arc<Listing> {
        self.listing(node, Some(LOOKUP_LISTING_MAX))
    }

    fn listing(self: &Arc<Self>, node: &Arc<Node>, cap: Option<usize>) -> Arc<Listing> {
        let mut st = node.state.lock();
        // An expired listing is replaced, never uncapped: lifting its cap would list a huge
        // directory to its end for nobody.
        if let Some(l) = st
            .listing
            .as_ref()
            .filter(|l| !self.cfg.metadata_ttl.expired(l.age()))
        {
            let usable = match l.status() {
                // Lookups do not retry a failed listing at once (a store may allow HEAD
                // and not LIST); `opendir` does.
                Status::Failed(_) => cap.is_some() && l.age() < STALE_RECHECK,
                Status::Truncated => cap.is_some(),
                Status::Running | Status::Done => cap.is_some() || l.uncap(),
            };
            if usable {
                return l.clone();
            }
        }
        let l = cap.map_or_else(Listing::new, Listing::with_cap);
        st.listing = Some(l.clone());
        drop(st);
        match node.path.backend {
            None => {
                l.push(self.backends.iter().enumerate().map(|(i, b)| Entry {
                    name: b.name().to_string(),
                    ino: self.dir_node(BackendId(i), String::new()).ino,
                    kind: Kind::Dir,
                }));
                l.finish(Ok(()));
            }
            Some(bid) => {
                let fs = self.clone();
                let key = node.path.key.clone();
                let listing = l.clone();
                let for_lookup = cap.is_some();
                tokio::spawn(async move { fs.fill_listing(bid, key, listing, for_lookup).await });
            }
        }
        l
    }

    /// Streams every page of directory `key` into `listing` (until its cap, if it has one).
    /// `for_lookup`: a lookup started it (its pages are counted as such).
    async fn fill_listing(
        self: Arc<Self>,
        bid: BackendId,
        key: String,
        listing: Arc<Listing>,
        for_lookup: bool,
    ) {
        let backend = self.backend(bid).clone();
        let mut token = None;
        let mut pages = 0u64;
        loop {
            if !listing.more_wanted() {
                tracing::debug!(
                    backend = backend.name(),
                    dir = key,
                    entries = listing.len(),
                    "a lookup's listing stopped at its cap; names past it are looked up one by one"
                );
                listing.finish_truncated();
                return;
            }
            let page = match backend.list_page(&key, token.take(), None).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(backend = backend.name(), dir = key, error = %e, "listing failed");
                    listing.finish(Err(e));
                    return;
                }
            };
            pages += 1;
            if for_lookup {
                warpdrive_metrics::add(&backend.metrics().lookup_listing_pages, 1);
            }
            let now = Instant::now();
            let dir_names: std::collections::HashSet<&str> =
                page.dirs.iter().map(String::as_str).collect();
            let mut entries = Vec::with_capacity(page.dirs.len() + page.objects.len());
            for d in &page.dirs {
                let node = self.dir_node(bid, join_key(&key, d));
                node.state.lock().seen = Some(now);
                entries.push(Entry {
                    name: d.clone(),
                    ino: node.ino,
                    kind: Kind::Dir,
                });
            }
            for (name, info) in page.objects {
                if dir_names.contains(name.as_str()) {
                    tracing::debug!(
                        backend = backend.name(),
                        name,
                        "an object is shadowed by a prefix of the same name"
                    );
                    continue;
                }
                let child = join_key(&key, &name);
                entries.push(Entry {
                    name,
                    ino: self.file_node(bid, child, info).ino,
                    kind: Kind::File,
                });
            }
            listing.push(entries);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        tracing::debug!(
            backend = backend.name(),
            dir = key,
            pages,
            entries = listing.len(),
            "listing complete"
        );
        listing.finish(Ok(()));
    }

    /// Entries of open directory `fh` from `offset` on, at most `max`. Waits for the listing
    /// to produce at least one entry past `offset` or to end. An empty result is the end.
    pub async fn readdir(&self, fh: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        if crate::control::owns_fh(fh) {
            return Ok(self.control_readdir(offset));
        }
        let h = self
            .dirs
            .read()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let mut out = Vec::new();
        if offset < 2 {
            let node = self.node(h.ino)?;
            let parent_ino = self.parent_of(&node);
            for (off, name, ino) in [(0u64, ".", h.ino), (1, "..", parent_ino)] {
                if offset <= off {
                    out.push(DirEntry {
                        ino,
                        kind: Kind::Dir,
                        name: name.to_string(),
                        next_offset: off + 1,
                    });
                }
            }
        }
        // Entry `i` was handed out with offset `i + FIRST_ENTRY_OFFSET`; the kernel passes back
        // the offset of the last entry it consumed, so the next one to send is `offset - 2`.
        let idx = offset.saturating_sub(FIRST_ENTRY_OFFSET - 1) as usize;
        match h.listing.wait_for(idx).await {
            Status::Failed(e) if h.listing.len() <= idx => return Err(FsError::Store(e)),
            _ => {}
        }
        for (i, e) in h
            .listing
            .entries_from(idx, max.saturating_sub(out.len()))
            .into_iter()
            .enumerate()
        {
            out.push(DirEntry {
                ino: e.ino,
                kind: e.kind,
                name: e.name,
                next_offset: (idx + i) as u64 + FIRST_ENTRY_OFFSET,
            });
        }
        // After the store's entries: the directories made here that it does not show.
        let len = h.listing.len();
        if h.listing.is_complete() && out.len() < max && !h.made.is_empty() {
            let first = idx.max(len);
            for (j, (name, ino)) in h.made.iter().enumerate().skip(first - len) {
                if out.len() >= max {
                    break;
                }
                if h.listing.find(name).is_some() {
                    continue;
                }
                out.push(DirEntry {
                    ino: *ino,
                    kind: Kind::Dir,
                    name: name.clone(),
                    next_offset: (len + j) as u64 + FIRST_ENTRY_OFFSET,
                });
            }
        }
        Ok(out)
    }

    pub(super) fn parent_of(&self, node: &Node) -> Ino {
        match node.path.backend {
            None => Ino::ROOT,
            Some(bid) => match node.path.key.rsplit_once('/') {
                Some((parent, _)) => self.dir_node(bid, parent.to_string()).ino,
                None if node.path.key.is_empty() => Ino::ROOT,
                None => self.dir_node(bid, String::new()).ino,
            },
        }
    }

    /// How far the current listing of directory `ino` has got, if one was started.
    pub fn listing_status(&self, ino: Ino) -> Option<(Status, usize)> {
        let node = self.inodes.get(ino)?;
        let l = node.state.lock().listing.clone()?;
        Some((l.status(), l.len()))
    }
}
