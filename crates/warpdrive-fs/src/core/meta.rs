//! The metadata path: lookups, attributes and the version each inode stands for.
//!
//! `lookup` answers from the parent's listing while it is complete and fresh (including "no
//! such name", without a request); otherwise it asks the store with a HEAD for an object and
//! a one-key list for a prefix, at the same time, and a prefix wins over an object of the
//! same name, as in listings. A file's metadata is trusted for `metadata_ttl`; past it a HEAD
//! revalidates it, and a new ETag or size is a new version ([`Fs::record_info`]): with no
//! handle open the inode moves to it (its old cached blocks and kernel pages are dropped);
//! with handles open the inode is retired and the path gets a new inode, so two versions
//! never share one. When the store cannot answer, metadata younger than `stale_if_error`
//! is served stale (counted, logged once a minute), and a store that just failed is not
//! asked again for a few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warpdrive_metrics::LookupAnswer;
use warpdrive_store::{ObjectInfo, StoreError};

use crate::listing::Seen;

use super::*;

/// The longest the kernel is let keep an entry or attributes: for what never changes while
/// mounted (the root, the backends' directories, everything under `metadata_ttl: indefinite`).
pub const KERNEL_TTL_MAX: Duration = Duration::from_secs(86_400);

/// The kernel's TTL for a name or attributes whose freshness the daemon does not track.
const KERNEL_TTL_UNTRACKED: Duration = Duration::from_secs(1);

impl Fs {
    /// How long the kernel may keep an answer built from metadata fetched at `fetched`: what
    /// is left of its `metadata_ttl`, so the kernel never holds it longer than the daemon
    /// would trust it (an answer served stale gets 0: the kernel asks again each time).
    fn kernel_ttl(&self, fetched: Option<Instant>) -> Duration {
        match (self.cfg.metadata_ttl, fetched) {
            (MetadataTtl::Indefinite, _) => KERNEL_TTL_MAX,
            (MetadataTtl::For(ttl), Some(at)) => ttl.saturating_sub(at.elapsed()),
            (MetadataTtl::For(ttl), None) => ttl.min(KERNEL_TTL_UNTRACKED),
        }
        .min(KERNEL_TTL_MAX)
    }

    pub(super) fn attr_of(&self, node: &Node, info: Option<&ObjectInfo>) -> Attr {
        match node.kind {
            Kind::Dir => Attr {
                ino: node.ino,
                kind: Kind::Dir,
                size: 0,
                mtime: self.started,
                // Writable where files may be created below (doc/SEMANTICS.md, "Writing").
                perm: match node.path.backend {
                    Some(b) if self.backend(b).config().write.leads_to(&node.path.key) => 0o755,
                    _ => 0o555,
                },
                uid: self.cfg.uid,
                gid: self.cfg.gid,
                // The root and the backends' directories exist as long as the mount does.
                kernel_ttl: if node.path.key.is_empty() {
                    KERNEL_TTL_MAX
                } else {
                    self.kernel_ttl(node.state.lock().seen)
                },
            },
            Kind::File => {
                let (size, mtime) = info.map(|i| (i.size, i.mtime)).unwrap_or((0, self.started));
                Attr {
                    ino: node.ino,
                    kind: Kind::File,
                    size,
                    mtime,
                    perm: match node.path.backend {
                        Some(b) if self.backend(b).config().write.allows(&node.path.key) => 0o644,
                        _ => 0o444,
                    },
                    uid: self.cfg.uid,
                    gid: self.cfg.gid,
                    kernel_ttl: self.kernel_ttl(node.state.lock().info.as_ref().map(|(_, at)| *at)),
                }
            }
        }
    }

    pub(super) fn child_key(parent: &Node, name: &str) -> String {
        join_key(&parent.path.key, name)
    }

    pub(super) fn file_node(&self, backend: BackendId, key: String, info: ObjectInfo) -> Arc<Node> {
        let node = self.inodes.get_or_create(
            NodePath {
                backend: Some(backend),
                key,
            },
            Kind::File,
        );
        self.record_info(&node, &info);
        self.current(node)
    }

    /// The node that stands for `node`'s path now: itself, or the node of the version that
    /// replaced it if it was retired.
    fn current(&self, node: Arc<Node>) -> Arc<Node> {
        if !node.state.lock().retired {
            return node;
        }
        self.inodes
            .find(&node.path)
            .filter(|n| n.kind == Kind::File)
            .unwrap_or(node)
    }

    /// Keeps fresh metadata for a file; a new ETag or size means a new version.
    ///
    /// One version per inode while it is open: if handles are open on the node when its
    /// version changes, the node is retired (it keeps the old version's attributes for those
    /// handles, and its page cache holds only old bytes) and the path gets a new node for the
    /// new version, so the kernel's pages, attributes and passthrough backing of the two
    /// versions never mix. With no handle open the node simply moves to the new version.
    ///
    /// Returns the metadata `node` stands for now: `info`, or its old version's if it is
    /// retired (here, or by a request that overtook this one).
    fn record_info(&self, node: &Node, info: &ObjectInfo) -> ObjectInfo {
        let mut st = node.state.lock();
        if st.retired {
            if let Some((old, _)) = &st.info {
                return old.clone();
            }
            return info.clone();
        }
        let old = st.info.replace((info.clone(), Instant::now()));
        let Some((old, at)) = old else {
            return info.clone();
        };
        if old.etag == info.etag && old.size == info.size {
            return info.clone();
        }
        tracing::debug!(
            key = node.path.key,
            old_size = old.size,
            size = info.size,
            old_etag = old.etag.as_deref().unwrap_or(""),
            etag = info.etag.as_deref().unwrap_or(""),
            handles = st.handles,
            "object changed"
        );
        if st.handles > 0 {
            st.info = Some((old.clone(), at));
            st.retired = true;
            drop(st);
            self.succeed(node, Some(info));
            return old;
        }
        drop(st);
        self.version_changed(node);
        info.clone()
    }

    /// Retires `node` for good: it keeps its version for the handles open on it, and its path
    /// gets a new node, whose metadata the next lookup asks the store for.
    pub(super) fn retire(&self, node: &Node) {
        {
            let mut st = node.state.lock();
            if st.retired {
                return;
            }
            st.retired = true;
        }
        self.succeed(node, None);
    }

    /// Gives the path of `node`, just retired, a new node (with `info` if the new version is
    /// known) and drops the old version's blocks.
    fn succeed(&self, node: &Node, info: Option<&ObjectInfo>) {
        let fresh = self.inodes.replace(node.path.clone(), Kind::File);
        if let Some(info) = info {
            fresh.state.lock().info = Some((info.clone(), Instant::now()));
        }
        // The old version's blocks go; its handles read what the kernel or a pinned
        // passthrough file still has, and `ESTALE` for the rest (`If-Match` fails).
        self.drop_cached(node);
    }

    pub(super) fn dir_node(&self, backend: BackendId, key: String) -> Arc<Node> {
        self.inodes.get_or_create(
            NodePath {
                backend: Some(backend),
                key,
            },
            Kind::Dir,
        )
    }

    /// Looks `name` up in directory `parent`: from what the mount knows while it is fresh,
    /// else from the parent's listing (started here if there is none), else from the store.
    pub async fn lookup(self: &Arc<Self>, parent: Ino, name: &str) -> FsResult<Attr> {
        if let Some(answer) = self.control_lookup(parent, name) {
            return answer;
        }
        if name.len() > warpdrive_store::keys::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if !valid_component(name) {
            return Err(FsError::NotFound);
        }
        let parent = self.node(parent)?;
        if parent.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let Some(bid) = parent.path.backend else {
            // The root: one directory per backend.
            let i = self
                .backends
                .iter()
                .position(|b| b.name() == name)
                .ok_or(FsError::NotFound)?;
            let node = self.dir_node(BackendId(i), String::new());
            return Ok(self.attr_of(&node, None));
        };

        let count = |answer| self.backend(bid).metrics().lookup(answer);
        // A file being written here, or a directory made here: the store does not show them.
        if self.writes_to(Some(bid)) {
            let path = NodePath {
                backend: Some(bid),
                key: Self::child_key(&parent, name),
            };
            if let Some(a) = self.lookup_written(&path).await {
                return Ok(a);
            }
        }
        // A complete, fresh listing of the parent answers without a request.
        let listing = parent.state.lock().listing.clone();
        if let Some(l) = listing
            .clone()
            .filter(|l| l.is_complete() && !self.cfg.metadata_ttl.expired(l.age()))
        {
            count(LookupAnswer::Known);
            let entry = l.find(name).ok_or(FsError::NotFound)?;
            return self.listed_attr(&entry).await;
        }

        let key = Self::child_key(&parent, name);
        let known = self.inodes.find(&NodePath {
            backend: Some(bid),
            key: key.clone(),
        });
        // A file the mount already knows, with metadata younger than the TTL (from a HEAD or
        // an earlier lookup), answers without a request.
        if let Some(node) = known.as_ref().filter(|n| n.kind == Kind::File) {
            let fresh = node
                .state
                .lock()
                .info
                .clone()
                .filter(|(_, at)| !self.cfg.metadata_ttl.expired(at.elapsed()));
            if let Some((info, _)) = fresh {
                count(LookupAnswer::Known);
                return Ok(self.attr_of(node, Some(&info)));
            }
        }
        // So does a directory the store showed within the TTL.
        if let Some(node) = known.as_ref().filter(|n| n.kind == Kind::Dir)
            && node
                .state
                .lock()
                .seen
                .is_some_and(|at| !self.cfg.metadata_ttl.expired(at.elapsed()))
        {
            count(LookupAnswer::Known);
            return Ok(self.attr_of(node, None));
        }
        // A name the store said is absent, within `negative_ttl`.
        if self.negatives.absent(parent.ino, name, Instant::now()) {
            count(LookupAnswer::Negative);
            return Err(FsError::NotFound);
        }
        // What to answer if the store cannot be asked: the entry of the parent's listing
        // (however old), else the node known for the path.
        let fallback = listing
            .and_then(|l| l.find(name).and_then(|e| self.node(e.ino).ok()))
            .map(|n| self.current(n))
            .or(known)
            .filter(|n| self.stale_allowed() && self.stale_age_ok(n));
        // The parent's listing: one in progress (or stopped at its cap) answers for the names
        // it has brought; else this lookup starts one. The lookup waits for at most one more
        // page, then asks the store itself, so a huge directory costs no lookup more than a
        // page's wait, and the siblings of the first names are answered by one LIST. A name
        // with a stale answer to fall back on does not wait (the listing is not fail-fast,
        // and an outage must cost a cached file a fraction of a second): it is revalidated
        // by a fail-fast HEAD below while the listing refreshes its siblings.
        if !self.store_failing(bid) {
            let l = self.listing_for_lookup(&parent);
            let pages = if fallback.is_some() { 0 } else { 1 };
            match l.wait_for_name(name, pages).await {
                Seen::Found(entry) => {
                    count(LookupAnswer::Listing);
                    return self.listed_attr(&entry).await;
                }
                Seen::Absent => {
                    count(LookupAnswer::Listing);
                    return Err(FsError::NotFound);
                }
                Seen::Unknown => {}
            }
        }
        if let Some(node) = &fallback
            && self.store_failing(bid)
        {
            count(LookupAnswer::Known);
            self.served_stale(bid, &key, None);
            let info = node.state.lock().info.clone().map(|(i, _)| i);
            return Ok(self.attr_of(node, info.as_ref()));
        }
        count(LookupAnswer::Store);
        let backend = self.backend(bid).clone();
        let ask = async { tokio::join!(backend.head(&key), backend.dir_exists(&key)) };
        let (head, dir) = if fallback.is_some() {
            warpdrive_store::fail_fast(ask).await
        } else {
            ask.await
        };
        let failure = match (&head, &dir) {
            (Err(e), _) if e.is_store_failure() => Some(e),
            (Err(StoreError::NotFound { .. }), Err(e)) if e.is_store_failure() => Some(e),
            _ => None,
        };
        if let (Some(e), Some(node)) = (failure, &fallback)
            && !matches!(dir, Ok(true))
        {
            self.failing.lock().insert(bid, Instant::now());
            self.served_stale(bid, &key, Some(e));
            let info = node.state.lock().info.clone().map(|(i, _)| i);
            return Ok(self.attr_of(node, info.as_ref()));
        }
        if failure.is_none() {
            self.failing.lock().remove(&bid);
        }
        match (head, dir) {
            (_, Ok(true)) => {
                let node = self.dir_node(bid, key);
                node.state.lock().seen = Some(Instant::now());
                Ok(self.attr_of(&node, None))
            }
            (Ok(info), _) => {
                let node = self.file_node(bid, key, info.clone());
                Ok(self.attr_of(&node, Some(&info)))
            }
            (Err(StoreError::NotFound { .. }), Ok(false)) => {
                self.negatives.remember(parent.ino, name, Instant::now());
                Err(FsError::NotFound)
            }
            // The object is absent but the prefix check failed: report the failure, not ENOENT.
            (Err(StoreError::NotFound { .. }), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e.into()),
        }
    }

    /// The attributes of a listed entry (a file's are re-fetched if they were dropped since,
    /// as when the object changed).
    async fn listed_attr(&self, entry: &Entry) -> FsResult<Attr> {
        let mut node = self.current(self.node(entry.ino)?);
        if node.kind == Kind::Dir {
            return Ok(self.attr_of(&node, None));
        }
        loop {
            let info = self.file_info(&node).await?;
            // Retired while its metadata was being fetched: the path has a newer node.
            let next = self.current(node.clone());
            if Arc::ptr_eq(&next, &node) {
                return Ok(self.attr_of(&node, Some(&info)));
            }
            node = next;
        }
    }

    /// The attributes of `ino`, re-fetched if older than the TTL.
    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        if crate::control::owns(ino) {
            return Ok(self.control_attr(ino));
        }
        let node = self.node(ino)?;
        if let Some(a) = self.written_attr(&node).await {
            return Ok(a);
        }
        if node.kind == Kind::Dir {
            return Ok(self.attr_of(&node, None));
        }
        Ok(self.attr_of(&node, Some(&self.file_info(&node).await?)))
    }

    /// Whether metadata may be served stale at all (`stale_if_error` is not zero).
    fn stale_allowed(&self) -> bool {
        !self.cfg.stale_if_error.is_zero()
    }

    /// Whether metadata fetched `age` ago is within the stale window: the TTL plus
    /// `stale_if_error`.
    fn within_stale_window(&self, age: Duration) -> bool {
        match self.cfg.metadata_ttl {
            MetadataTtl::For(ttl) => age < ttl + self.cfg.stale_if_error,
            MetadataTtl::Indefinite => true,
        }
    }

    /// Whether what is known of `node` may be served stale: a directory the mount has seen,
    /// or a file whose metadata is within the stale window.
    fn stale_age_ok(&self, node: &Node) -> bool {
        match node.kind {
            Kind::Dir => true,
            Kind::File => node
                .state
                .lock()
                .info
                .as_ref()
                .is_some_and(|(_, at)| self.within_stale_window(at.elapsed())),
        }
    }

    /// Whether a revalidation of `bid` failed within [`STALE_RECHECK`].
    fn store_failing(&self, bid: BackendId) -> bool {
        self.failing
            .lock()
            .get(&bid)
            .is_some_and(|at| at.elapsed() < STALE_RECHECK)
    }

    /// Counts (and, once a minute per backend, logs) an answer served from what the mount
    /// knew because the store failed with `e` (or failed moments ago).
    fn served_stale(&self, bid: BackendId, key: &str, e: Option<&StoreError>) {
        let backend = self.backend(bid);
        let name = backend.name();
        warpdrive_metrics::add(&backend.metrics().stale_served, 1);
        let mut warned = self.stale_warned.lock();
        if warned
            .get(&bid)
            .is_none_or(|at| at.elapsed() >= STALE_WARN_EVERY)
        {
            warned.insert(bid, Instant::now());
            let e = e.map_or_else(|| "failing moments ago".to_string(), |e| e.to_string());
            tracing::warn!(
                backend = name,
                key,
                error = %e,
                "the store cannot be asked; serving what the mount knows (stale_if_error: {}); repeated at most once a minute",
                humantime::format_duration(self.cfg.stale_if_error)
            );
        }
    }

    /// A file's metadata, fresh within the TTL; while the store cannot be asked, the last
    /// known metadata within the stale window.
    pub(super) async fn file_info(&self, node: &Node) -> FsResult<ObjectInfo> {
        let (cached, retired) = {
            let st = node.state.lock();
            (st.info.clone(), st.retired)
        };
        if let Some((info, at)) = &cached
            && (retired || !self.cfg.metadata_ttl.expired(at.elapsed()))
        {
            // A retired inode is its old version for good: nothing to revalidate.
            return Ok(info.clone());
        }
        let bid = node.path.backend.ok_or(FsError::IsDir)?;
        let fallback =
            cached.filter(|(_, at)| self.stale_allowed() && self.within_stale_window(at.elapsed()));
        if let Some((info, _)) = &fallback
            && self.store_failing(bid)
        {
            self.served_stale(bid, &node.path.key, None);
            return Ok(info.clone());
        }
        let head = self.backend(bid).head(&node.path.key);
        let r = if fallback.is_some() {
            warpdrive_store::fail_fast(head).await
        } else {
            head.await
        };
        let info = match r {
            Ok(i) => i,
            Err(e) => {
                if e.is_store_failure()
                    && let Some((info, _)) = fallback
                {
                    self.failing.lock().insert(bid, Instant::now());
                    self.served_stale(bid, &node.path.key, Some(&e));
                    return Ok(info);
                }
                if let StoreError::NotFound { .. } = e {
                    node.state.lock().info = None;
                    self.version_changed(node);
                }
                return Err(e.into());
            }
        };
        self.failing.lock().remove(&bid);
        // What this node stands for: the store's answer, or its old version's if the node
        // was retired while the HEAD was out.
        Ok(self.record_info(node, &info))
    }
}
