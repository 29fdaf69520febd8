//! The filesystem core: every operation, without FUSE.
//!
//! The namespace is `/<backend>/<key components...>`. The root lists the configured backends;
//! below a backend, a directory is a key prefix and its children come from a paged
//! list-with-delimiter ([`crate::listing`]). Metadata is trusted for the configured TTL:
//!
//! * `lookup` answers from the parent's listing while it is complete and fresh (including
//!   "no such name", without a request); otherwise it asks the store with a HEAD for an object
//!   and a one-key list for a prefix, at the same time, and a prefix wins over an object of the
//!   same name, as in listings.
//! * `getattr` of a file re-HEADs when its metadata is older than the TTL.
//! * `open` pins the object's version (size and ETag); reads of that handle use `If-Match`, so
//!   a handle never mixes bytes of two versions: if the object changes, reads fail with
//!   `ESTALE` and the next open sees the new version.
//! * `read` goes through the handle's read windows ([`crate::readahead`]).
//!
//! All operations are `async` and run on the daemon's one tokio runtime; the FUSE adapter only
//! spawns them and replies. Tests drive this type directly, without a kernel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::RwLock;
use warpdrive_config::MetadataTtl;
use warpdrive_store::{Backend, ObjectInfo, StoreError, valid_component};

use crate::error::{FsError, FsResult};
use crate::inode::{BackendId, Ino, InodeTable, Kind, Node, NodePath};
use crate::listing::{Entry, Listing, Status};
use crate::readahead::ReadWindows;

/// Settings of the core, built once from the config.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub metadata_ttl: MetadataTtl,
    /// Owner reported for every file: the daemon's user, so the mount's owner can read it.
    pub uid: u32,
    pub gid: u32,
}

/// Attributes of a node, FUSE-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// A directory entry handed to `readdir`, with the offset of the entry after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
    pub next_offset: u64,
}

/// An open file.
#[derive(Debug)]
struct FileHandle {
    ino: Ino,
    windows: ReadWindows,
}

/// An open directory: the listing snapshot it reads from.
#[derive(Debug)]
struct DirHandle {
    ino: Ino,
    listing: Arc<Listing>,
}

/// Summary numbers for `statfs`.
#[derive(Debug, Clone, Copy)]
pub struct FsStats {
    pub inodes: u64,
}

/// The relative key of `name` inside directory key `dir` (`""` is the backend root).
fn join_key(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `.` and `..` are handed out with offsets 1 and 2; listing entry `i` with offset
/// `i + FIRST_ENTRY_OFFSET`.
const FIRST_ENTRY_OFFSET: u64 = 3;

/// The filesystem.
#[derive(Debug)]
pub struct Fs {
    cfg: FsConfig,
    backends: Vec<Arc<Backend>>,
    inodes: InodeTable,
    files: RwLock<HashMap<u64, Arc<FileHandle>>>,
    dirs: RwLock<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    started: SystemTime,
}

impl Fs {
    /// A filesystem over `backends`, in mount-table order.
    pub fn new(cfg: FsConfig, backends: Vec<Arc<Backend>>) -> Arc<Fs> {
        let fs = Fs {
            cfg,
            backends,
            inodes: InodeTable::new(),
            files: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            started: SystemTime::now(),
        };
        // Backend roots get the lowest numbers after the root, in config order.
        for i in 0..fs.backends.len() {
            fs.inodes.get_or_create(
                NodePath {
                    backend: Some(BackendId(i)),
                    key: String::new(),
                },
                Kind::Dir,
            );
        }
        Arc::new(fs)
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    fn node(&self, ino: Ino) -> FsResult<Arc<Node>> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    fn backend(&self, id: BackendId) -> &Arc<Backend> {
        &self.backends[id.0]
    }

    fn attr_of(&self, node: &Node, info: Option<&ObjectInfo>) -> Attr {
        match node.kind {
            Kind::Dir => Attr {
                ino: node.ino,
                kind: Kind::Dir,
                size: 0,
                mtime: self.started,
                perm: 0o555,
                uid: self.cfg.uid,
                gid: self.cfg.gid,
            },
            Kind::File => {
                let (size, mtime) = info.map(|i| (i.size, i.mtime)).unwrap_or((0, self.started));
                Attr {
                    ino: node.ino,
                    kind: Kind::File,
                    size,
                    mtime,
                    perm: 0o444,
                    uid: self.cfg.uid,
                    gid: self.cfg.gid,
                }
            }
        }
    }

    fn child_key(parent: &Node, name: &str) -> String {
        join_key(&parent.path.key, name)
    }

    fn file_node(&self, backend: BackendId, key: String, info: ObjectInfo) -> Arc<Node> {
        let node = self.inodes.get_or_create(
            NodePath {
                backend: Some(backend),
                key,
            },
            Kind::File,
        );
        node.state.lock().info = Some((info, Instant::now()));
        node
    }

    fn dir_node(&self, backend: BackendId, key: String) -> Arc<Node> {
        self.inodes.get_or_create(
            NodePath {
                backend: Some(backend),
                key,
            },
            Kind::Dir,
        )
    }

    /// Looks `name` up in directory `parent`.
    pub async fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
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

        // A complete, fresh listing of the parent answers without a request.
        let listing = parent.state.lock().listing.clone();
        if let Some(l) =
            listing.filter(|l| l.is_complete() && !self.cfg.metadata_ttl.expired(l.age()))
        {
            let entry = l.find(name).ok_or(FsError::NotFound)?;
            let node = self.node(entry.ino)?;
            if node.kind == Kind::Dir {
                return Ok(self.attr_of(&node, None));
            }
            // Usually fresh from the listing; re-fetched if it was dropped (object changed).
            let info = self.file_info(&node).await?;
            return Ok(self.attr_of(&node, Some(&info)));
        }

        let key = Self::child_key(&parent, name);
        let backend = self.backend(bid).clone();
        let (head, dir) = tokio::join!(backend.head(&key), backend.dir_exists(&key));
        match (head, dir) {
            (_, Ok(true)) => {
                let node = self.dir_node(bid, key);
                Ok(self.attr_of(&node, None))
            }
            (Ok(info), _) => {
                let node = self.file_node(bid, key, info.clone());
                Ok(self.attr_of(&node, Some(&info)))
            }
            (Err(StoreError::NotFound { .. }), Ok(false)) => Err(FsError::NotFound),
            // The object is absent but the prefix check failed: report the failure, not ENOENT.
            (Err(StoreError::NotFound { .. }), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e.into()),
        }
    }

    /// The attributes of `ino`, re-fetched if older than the TTL.
    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Ok(self.attr_of(&node, None));
        }
        Ok(self.attr_of(&node, Some(&self.file_info(&node).await?)))
    }

    /// A file's metadata, fresh within the TTL.
    async fn file_info(&self, node: &Node) -> FsResult<ObjectInfo> {
        let cached = node.state.lock().info.clone();
        if let Some((info, at)) = cached
            && !self.cfg.metadata_ttl.expired(at.elapsed())
        {
            return Ok(info);
        }
        let bid = node.path.backend.ok_or(FsError::IsDir)?;
        let info = self.backend(bid).head(&node.path.key).await?;
        node.state.lock().info = Some((info.clone(), Instant::now()));
        Ok(info)
    }

    /// Opens a file for reading; `write` is whether any write access was asked for.
    pub async fn open(&self, ino: Ino, write: bool) -> FsResult<u64> {
        if write {
            return Err(FsError::ReadOnly);
        }
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let bid = node.path.backend.ok_or(FsError::IsDir)?;
        let info = self.file_info(&node).await?;
        let backend = self.backend(bid).clone();
        let key = node.path.key.clone();
        let etag = info.etag.clone();
        let windows = ReadWindows::new(
            info.size,
            Arc::new(move |range| {
                let backend = backend.clone();
                let key = key.clone();
                let etag = etag.clone();
                async move { backend.get_range(&key, range, etag.as_deref()).await }.boxed()
            }),
        );
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .write()
            .insert(fh, Arc::new(FileHandle { ino, windows }));
        Ok(fh)
    }

    /// Reads up to `size` bytes at `offset` through handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self
            .files
            .read()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        match h.windows.read(offset, u64::from(size)).await {
            Ok(b) => Ok(b),
            Err(e) => {
                if matches!(
                    *e,
                    StoreError::PreconditionFailed { .. } | StoreError::NotFound { .. }
                ) {
                    // The object changed or is gone: forget its metadata so the next lookup
                    // or open asks the store again.
                    if let Some(n) = self.inodes.get(h.ino) {
                        n.state.lock().info = None;
                    }
                }
                if let StoreError::PreconditionFailed { .. } = *e {
                    tracing::warn!(
                        ino = h.ino.0,
                        "object changed while open; reopen to read the new version"
                    );
                    return Err(FsError::Stale);
                }
                tracing::warn!(ino = h.ino.0, offset, size, error = %e, "read failed");
                Err(FsError::Store((*e).clone()))
            }
        }
    }

    pub fn release(&self, fh: u64) {
        self.files.write().remove(&fh);
    }

    /// Opens a directory: pins a listing snapshot (reusing a fresh one).
    pub fn opendir(self: &Arc<Self>, ino: Ino) -> FsResult<u64> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let listing = self.listing_for(&node);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .write()
            .insert(fh, Arc::new(DirHandle { ino, listing }));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.write().remove(&fh);
    }

    /// The node's listing if fresh and not failed, else a new one that starts streaming now.
    fn listing_for(self: &Arc<Self>, node: &Arc<Node>) -> Arc<Listing> {
        let mut st = node.state.lock();
        if let Some(l) = &st.listing {
            let failed = matches!(l.status(), Status::Failed(_));
            if !failed && !self.cfg.metadata_ttl.expired(l.age()) {
                return l.clone();
            }
        }
        let l = Listing::new();
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
                tokio::spawn(async move { fs.fill_listing(bid, key, listing).await });
            }
        }
        l
    }

    /// Streams every page of directory `key` into `listing`.
    async fn fill_listing(self: Arc<Self>, bid: BackendId, key: String, listing: Arc<Listing>) {
        let backend = self.backend(bid).clone();
        let mut token = None;
        let mut pages = 0u64;
        loop {
            let page = match backend.list_page(&key, token.take(), None).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(backend = backend.name(), dir = key, error = %e, "listing failed");
                    listing.finish(Err(e.to_string()));
                    return;
                }
            };
            pages += 1;
            let dir_names: std::collections::HashSet<&str> =
                page.dirs.iter().map(String::as_str).collect();
            let mut entries = Vec::with_capacity(page.dirs.len() + page.objects.len());
            for d in &page.dirs {
                entries.push(Entry {
                    name: d.clone(),
                    ino: self.dir_node(bid, join_key(&key, d)).ino,
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
            Status::Failed(m) if h.listing.len() <= idx => {
                return Err(FsError::Store(StoreError::Other {
                    backend: String::new(),
                    message: m,
                }));
            }
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
        Ok(out)
    }

    fn parent_of(&self, node: &Node) -> Ino {
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

    pub fn stats(&self) -> FsStats {
        FsStats {
            inodes: self.inodes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use proptest::prelude::*;
    use warpdrive_config::{AuthMode, BackendConfig, BackendKind};

    use super::*;

    fn fs_over(dir: &Path) -> Arc<Fs> {
        let cfg = BackendConfig {
            name: "data".into(),
            kind: BackendKind::Local {
                path: dir.to_path_buf(),
            },
            prefix: String::new(),
            auth: AuthMode::Anonymous,
        };
        let backend = Arc::new(Backend::build(&cfg).expect("local backend"));
        Fs::new(
            FsConfig {
                metadata_ttl: MetadataTtl::For(Duration::from_secs(60)),
                uid: 0,
                gid: 0,
            },
            vec![backend],
        )
    }

    async fn all_entries(fs: &Arc<Fs>, ino: Ino) -> Vec<String> {
        let fh = fs.opendir(ino).expect("opendir");
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            // Small batches exercise resuming from the kernel's offset.
            let batch = fs.readdir(fh, offset, 2).await.expect("readdir");
            let Some(last) = batch.last() else { break };
            offset = last.next_offset;
            names.extend(batch.into_iter().map(|e| e.name));
        }
        fs.releasedir(fh);
        names
    }

    #[tokio::test]
    async fn namespace_and_reads_without_a_kernel() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        std::fs::write(dir.path().join("a/b.txt"), b"hello").expect("write");
        std::fs::write(dir.path().join("a/c.txt"), b"").expect("write");
        std::fs::write(dir.path().join("top"), b"t").expect("write");
        let fs = fs_over(dir.path());

        assert_eq!(all_entries(&fs, Ino::ROOT).await, vec![".", "..", "data"]);
        let data = fs.lookup(Ino::ROOT, "data").await.expect("backend dir");
        assert_eq!(data.kind, Kind::Dir);
        assert_eq!(
            all_entries(&fs, data.ino).await,
            vec![".", "..", "a", "top"]
        );
        let a = fs.lookup(data.ino, "a").await.expect("a");
        assert_eq!(
            all_entries(&fs, a.ino).await,
            vec![".", "..", "b.txt", "c.txt"]
        );
        let b = fs.lookup(a.ino, "b.txt").await.expect("b.txt");
        assert_eq!((b.kind, b.size, b.perm), (Kind::File, 5, 0o444));
        assert_eq!(fs.lookup(a.ino, "b.txt").await.expect("again").ino, b.ino);
        assert!(matches!(
            fs.lookup(a.ino, "nope").await,
            Err(FsError::NotFound)
        ));
        assert!(matches!(
            fs.lookup(a.ino, "..").await,
            Err(FsError::NotFound)
        ));
        assert!(matches!(fs.open(b.ino, true).await, Err(FsError::ReadOnly)));
        assert!(matches!(fs.open(a.ino, false).await, Err(FsError::IsDir)));

        let fh = fs.open(b.ino, false).await.expect("open");
        assert_eq!(&fs.read(fh, 0, 100).await.expect("read")[..], b"hello");
        assert_eq!(&fs.read(fh, 3, 100).await.expect("read")[..], b"lo");
        assert!(fs.read(fh, 10, 100).await.expect("past end").is_empty());
        fs.release(fh);
        assert!(matches!(fs.read(fh, 0, 1).await, Err(FsError::BadHandle)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Reference model: any sequence of reads through one handle returns exactly the bytes
        /// of the object, whatever mix of sequential and random offsets it makes.
        #[test]
        fn random_reads_equal_the_object(
            size in 0usize..3_000_000,
            reads in prop::collection::vec((0u64..3_100_000, 1u32..1_100_000), 1..40),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            let dir = tempfile::tempdir().expect("tempdir");
            let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            std::fs::write(dir.path().join("obj"), &data).expect("write");
            rt.block_on(async {
                let fs = fs_over(dir.path());
                let root = fs.lookup(Ino::ROOT, "data").await.expect("dir");
                let f = fs.lookup(root.ino, "obj").await.expect("obj");
                let fh = fs.open(f.ino, false).await.expect("open");
                for (off, len) in reads {
                    let got = fs.read(fh, off, len).await.expect("read");
                    let s = (off as usize).min(size);
                    let e = (off as usize + len as usize).min(size);
                    prop_assert_eq!(&got[..], &data[s..e]);
                }
                Ok(())
            })?;
        }
    }
}
