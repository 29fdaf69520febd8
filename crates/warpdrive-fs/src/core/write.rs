//! Writing new objects under a backend's writable prefixes (`writable:` in its config): the
//! namespace side of the write path ([`crate::writer`] streams, stages and commits a file).
//!
//! `create` (or an open with `O_TRUNC` of an existing object, where overwriting is allowed)
//! makes a [`Writer`] for the inode; every handle of the inode shares it. A `flush` (each
//! `close`) or `fsync` commits it; when its last handle is released, a committed file's spool
//! becomes the object's cached copy and an uncommitted one is dropped (its name goes with it).
//! Until its first commit a file is found by name in this mount (the writer needs that) but
//! not listed, and nothing of it is in the store. `rename` of a file not yet committed moves
//! the commit's target; of a committed object (this mount's, or any where `delete` is
//! allowed) it copies the object inside the store and deletes the old name. `unlink` drops a
//! file not yet committed, and deletes an object only this mount wrote or where `delete` is
//! allowed. `mkdir` under a writable prefix makes a directory the mount remembers (object
//! stores have none) until files are written in it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use warpdrive_api::api::WriteStatus;
use warpdrive_cache::ObjectId;
use warpdrive_store::{ObjectInfo, StoreError};

use super::{Attr, Fs, Opened};
use crate::error::{FsError, FsResult};
use crate::inode::{BackendId, Ino, Kind, Node, NodePath};
use crate::writer::{WriteLimits, Writer};

/// Files being written, their handles, and what the mount made.
#[derive(Debug)]
pub(super) struct Writes {
    limits: WriteLimits,
    /// The writer of each inode being written.
    by_ino: Mutex<HashMap<Ino, Arc<Writer>>>,
    /// Each handle's inode (its writer is the inode's), and whether it was opened for
    /// writing (a handle opened for reading never commits).
    handles: RwLock<HashMap<u64, (Ino, bool)>>,
    /// Handles open per inode being written.
    open: Mutex<HashMap<Ino, u32>>,
    /// Directories made by `mkdir` that the store does not show.
    dirs: Mutex<HashSet<NodePath>>,
    /// Objects this mount committed since it started: a rename may delete their old name and
    /// `unlink` may delete them without `delete: true` (they are the writer's own).
    made: Mutex<HashSet<NodePath>>,
}

impl Writes {
    pub(super) fn new(limits: WriteLimits) -> Writes {
        Writes {
            limits,
            by_ino: Mutex::default(),
            handles: RwLock::default(),
            open: Mutex::default(),
            dirs: Mutex::default(),
            made: Mutex::default(),
        }
    }

    /// The writer behind handle `fh`, if it was opened for writing (a handle reading a file
    /// being written neither writes nor commits).
    fn of_handle(&self, fh: u64) -> Option<(Ino, Arc<Writer>)> {
        let (ino, writes) = *self.handles.read().get(&fh)?;
        let w = self.by_ino.lock().get(&ino).cloned()?;
        writes.then_some((ino, w))
    }

    /// The writer behind handle `fh`, whatever it was opened for.
    fn reader_of(&self, fh: u64) -> Option<Arc<Writer>> {
        let (ino, _) = *self.handles.read().get(&fh)?;
        self.by_ino.lock().get(&ino).cloned()
    }
}

/// Marks the passthrough backing id of a spool (the rest is the inode number).
const SPOOL_BACKING: u64 = 1 << 63;

/// How a handle on a file being written is opened: served by the daemon from its spool (or
/// by the kernel from it, `passthrough`), with no page cache kept from an earlier open.
fn spooled(fh: u64, passthrough: Option<(u64, std::fs::File)>) -> Opened {
    Opened {
        fh,
        keep_cache: false,
        passthrough,
        direct: false,
    }
}

fn store_error(e: StoreError) -> FsError {
    FsError::Store(e)
}

impl Fs {
    /// The directory a write operation changes: the control directory (and anything not a
    /// backend's) is read-only.
    fn write_parent(&self, ino: Ino) -> FsResult<Arc<Node>> {
        if crate::control::owns(ino) {
            return Err(FsError::ReadOnly);
        }
        self.node(ino)
    }

    /// The backend and key below `parent` for `name`, if the backend lets the mount write it.
    fn writable_child(&self, parent: &Node, name: &str) -> FsResult<(BackendId, String)> {
        let bid = parent.path.backend.ok_or(FsError::ReadOnly)?;
        if parent.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if !warpdrive_store::valid_component(name) {
            return Err(FsError::Invalid(format!(
                "{name:?} cannot be an object name"
            )));
        }
        let key = Self::child_key(parent, name);
        if !self.backend(bid).config().write.allows(&key) {
            return Err(FsError::ReadOnly);
        }
        Ok((bid, key))
    }

    /// The spool directory, or why the mount cannot write (no cache, or its disk is below
    /// its free-space floor).
    fn spool_dir(&self) -> FsResult<std::path::PathBuf> {
        let Some(cache) = self.reader.cache() else {
            return Err(FsError::ReadOnly);
        };
        if let Some((free, floor)) = cache.below_min_free_now() {
            tracing::warn!(
                free,
                floor,
                "refusing a new file: the cache disk is below cache.min_free"
            );
            return Err(FsError::NoSpace);
        }
        Ok(cache.spool_dir().to_path_buf())
    }

    /// A handle on `ino`'s writer (`writes`: opened for writing).
    fn write_handle_as(&self, ino: Ino, writes: bool) -> u64 {
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.writes.handles.write().insert(fh, (ino, writes));
        *self.writes.open.lock().entry(ino).or_default() += 1;
        warpdrive_metrics::shift(&self.metrics.write.open_files, 1);
        fh
    }

    fn writing_attr(&self, node: &Node, size: u64) -> Attr {
        Attr {
            ino: node.ino,
            kind: Kind::File,
            size,
            mtime: std::time::SystemTime::now(),
            perm: 0o644,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            // The writer's own view changes with every write: the kernel asks again.
            kernel_ttl: std::time::Duration::ZERO,
        }
    }

    /// Creates file `name` in `parent` and opens it for writing. Fails with `EEXIST` if the
    /// store has an object of that name (unless overwriting is allowed), `EROFS` outside the
    /// writable prefixes, `ENOSPC` if the cache disk is below its free-space floor.
    pub async fn create(&self, parent: Ino, name: &str) -> FsResult<(Attr, Opened)> {
        let parent = self.write_parent(parent)?;
        let (bid, key) = self.writable_child(&parent, name)?;
        let spool_dir = self.spool_dir()?;
        let backend = self.backend(bid).clone();
        let overwrite = backend.config().write.overwrite;
        if !overwrite {
            match backend.head(&key).await {
                Ok(_) => return Err(FsError::Exists),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        let path = NodePath {
            backend: Some(bid),
            key: key.clone(),
        };
        if let Some(n) = self.inodes.find(&path)
            && self.writes.by_ino.lock().contains_key(&n.ino)
        {
            return Err(FsError::Exists);
        }
        let writer = Writer::create(
            backend,
            &key,
            overwrite,
            &spool_dir,
            self.writes.limits.clone(),
        )
        .map_err(|e| FsError::Store(self.spool_failed(bid, &key, e)))?;
        let node = self.inodes.replace(path, Kind::File);
        self.negatives.forget(parent.ino, name);
        self.writes.by_ino.lock().insert(node.ino, Arc::new(writer));
        let fh = self.write_handle(node.ino);
        tracing::debug!(backend = self.backend(bid).name(), key, "file created");
        Ok((self.writing_attr(&node, 0), spooled(fh, None)))
    }

    fn spool_failed(&self, bid: BackendId, key: &str, e: std::io::Error) -> StoreError {
        StoreError::Io {
            backend: self.backend(bid).name().to_string(),
            message: format!("spooling {key} on the cache disk: {e}"),
        }
    }

    /// Opens `ino` for writing: a file being written shares its writer; an existing object is
    /// replaced (with `truncate`, where overwriting is allowed: `EEXIST` otherwise).
    pub(super) async fn open_write(&self, ino: Ino, truncate: bool) -> FsResult<Opened> {
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let existing = self.writes.by_ino.lock().get(&ino).cloned();
        if let Some(w) = existing {
            if truncate {
                w.truncate(0).await.map_err(store_error)?;
            }
            return Ok(spooled(self.write_handle(ino), None));
        }
        let bid = node.path.backend.ok_or(FsError::ReadOnly)?;
        let backend = self.backend(bid).clone();
        let access = &backend.config().write;
        if !access.allows(&node.path.key) {
            return Err(FsError::ReadOnly);
        }
        if !access.overwrite {
            return Err(FsError::Exists);
        }
        if !truncate {
            // Changing an object in place would mean fetching it whole first.
            return Err(FsError::NotSupported);
        }
        let spool_dir = self.spool_dir()?;
        let writer = Writer::create(
            backend,
            &node.path.key,
            true,
            &spool_dir,
            self.writes.limits.clone(),
        )
        .map_err(|e| FsError::Store(self.spool_failed(bid, &node.path.key, e)))?;
        self.writes.by_ino.lock().insert(ino, Arc::new(writer));
        Ok(spooled(self.write_handle(ino), None))
    }

    /// A handle reading a file this mount is writing (or has committed and not yet released):
    /// it reads the spool, which is the file. A committed file's spool is handed to the kernel
    /// (passthrough, as a cached file would be), so a checkpoint read back right after its
    /// close reads at the cache disk's speed; every such handle shares the spool, and the
    /// spool becomes the cached copy only when the last handle closes.
    pub(super) async fn open_written(&self, node: &Node) -> Option<Opened> {
        let w = self.writer_of(node)?;
        let ino = node.ino;
        let passthrough = if self.cfg.passthrough
            && self
                .passthrough_ready
                .load(std::sync::atomic::Ordering::Relaxed)
            && w.is_clean().await
            && w.size().await >= self.cfg.passthrough_min_size
        {
            // An id of its own (cache object ids count up from 1): the kernel's backing of
            // this inode while its spool is read.
            w.spool_file().ok().map(|f| (SPOOL_BACKING | ino.0, f))
        } else {
            None
        };
        Some(spooled(self.write_handle_as(ino, false), passthrough))
    }

    /// A handle writing `ino`'s writer.
    fn write_handle(&self, ino: Ino) -> u64 {
        self.write_handle_as(ino, true)
    }

    /// Writes to a file: a file being written takes it, the control file's handles collect
    /// it; everything else is read-only.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        if let Some(done) = self.write_now(fh, offset, data) {
            return done.await;
        }
        if self.is_write_handle(fh) {
            // A handle of a file being written, opened for reading.
            return Err(FsError::BadHandle);
        }
        if crate::control::owns_fh(fh) {
            return self.control_write(fh, offset, data);
        }
        Err(FsError::ReadOnly)
    }

    /// Changes a file's attributes: a file being written takes a new size (its times are the
    /// commit's), and so does the control file; a change of mode or owner (`other`), and any
    /// change to anything else, is refused: read-only.
    pub async fn setattr(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        other: bool,
    ) -> FsResult<Attr> {
        if other {
            return Err(FsError::ReadOnly);
        }
        if ino == crate::control::PLAN_INO {
            return Ok(self.control_setattr(fh, size));
        }
        if let Some(size) = size
            && let Some(r) = self.truncate_written(ino, size).await
        {
            return r;
        }
        if size.is_none()
            && let Ok(node) = self.node(ino)
            && let Some(a) = self.written_attr(&node).await
        {
            // `touch` of a file being written.
            return Ok(a);
        }
        Err(FsError::ReadOnly)
    }

    /// A `close` of a descriptor (or an `fsync`): a file being written is committed to its
    /// store; the control file runs what was written to it. Nothing to do for other files.
    /// Must run inside the runtime.
    pub async fn flush(self: &Arc<Self>, fh: u64) -> FsResult<()> {
        if self.is_write_handle(fh) {
            return self.commit_file(fh).await;
        }
        if crate::control::owns_fh(fh) {
            return self.control_flush(fh);
        }
        Ok(())
    }

    /// Whether `fh` is a write handle.
    pub fn is_write_handle(&self, fh: u64) -> bool {
        self.writes.handles.read().contains_key(&fh)
    }

    /// A write through write handle `fh` started on the caller's thread: its bytes go into
    /// the file's spool straight from `data` (the FUSE adapter's request buffer: no copy);
    /// the future returned finishes it (the file's state, its parts). `None` if `fh` is not
    /// a file being written ([`Fs::write`] takes the write).
    pub fn write_now(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Option<impl Future<Output = FsResult<u32>> + Send + 'static + use<>> {
        let (_, w) = self.writes.of_handle(fh)?;
        let started = Instant::now();
        let len = data.len();
        let spooled = w.spool_write(offset, data);
        let metrics = self.metrics.clone();
        Some(async move {
            let r = match spooled {
                Ok(()) => w.wrote().await,
                Err(e) => Err(e),
            };
            metrics.write.write(len as u64, started.elapsed());
            match r {
                Ok(grown) => {
                    warpdrive_metrics::shift(&metrics.write.spool_bytes, grown as i64);
                    Ok(len as u32)
                }
                Err(e) => {
                    tracing::warn!(key = w.key(), error = %e, "a write failed");
                    Err(store_error(e))
                }
            }
        })
    }

    /// A read through write handle `fh` (`O_RDWR`): what has been written.
    pub(super) async fn read_written(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FsResult<bytes::Bytes> {
        let w = self.writes.reader_of(fh).ok_or(FsError::BadHandle)?;
        w.read(offset, size).await.map_err(store_error)
    }

    /// Commits the file behind write handle `fh` (`close`, `fsync`).
    pub(super) async fn commit_file(&self, fh: u64) -> FsResult<()> {
        let Some((ino, w)) = self.writes.of_handle(fh) else {
            return Ok(());
        };
        let started = Instant::now();
        let r = w.commit().await;
        match r {
            Ok(None) => Ok(()),
            Ok(Some(info)) => {
                self.metrics.write.commit(started.elapsed());
                self.committed(ino, &w, &info);
                Ok(())
            }
            Err(e) => {
                self.metrics.write.failed();
                tracing::warn!(backend = self.backend_name_of(ino), key = w.key(), error = %e, "a file written through the mount could not be committed");
                Err(store_error(e))
            }
        }
    }

    fn backend_name_of(&self, ino: Ino) -> String {
        self.inodes
            .get(ino)
            .and_then(|n| n.path.backend)
            .map(|b| self.backend(b).name().to_string())
            .unwrap_or_default()
    }

    /// Records a commit: the inode's metadata, the object as this mount's, and the parent's
    /// listing as stale (it would not show the new object).
    fn committed(&self, ino: Ino, w: &Writer, info: &ObjectInfo) {
        let Ok(node) = self.node(ino) else { return };
        node.state.lock().info = Some((info.clone(), Instant::now()));
        self.writes.made.lock().insert(node.path.clone());
        self.stale_parent_listing(&node);
        tracing::info!(
            backend = self.backend_name_of(ino),
            key = w.key(),
            size = info.size,
            "file committed"
        );
    }

    fn stale_parent_listing(&self, node: &Node) {
        let parent = self.parent_of(node);
        if let Some(p) = self.inodes.get(parent) {
            p.state.lock().listing = None;
        }
    }

    /// Releases write handle `fh`. When the inode's last handle goes: a committed file's spool
    /// becomes the object's cached copy; an uncommitted file is dropped, and its name with it.
    pub async fn release_write(&self, fh: u64) {
        let Some((ino, _)) = self.writes.handles.write().remove(&fh) else {
            return;
        };
        warpdrive_metrics::shift(&self.metrics.write.open_files, -1);
        let last = {
            let mut open = self.writes.open.lock();
            let n = open.entry(ino).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&ino);
                true
            } else {
                false
            }
        };
        if !last {
            return;
        }
        let Some(w) = self.writes.by_ino.lock().get(&ino).cloned() else {
            return;
        };
        let size = w.size().await;
        match (w.is_clean().await, w.committed().await) {
            (true, Some(info)) => {
                // While the spool becomes the cached copy, opens keep reading it (the writer
                // stays known until then); the copy is made once.
                if w.adopt_once() {
                    self.adopt(ino, &w, &info).await;
                }
                let open = self.writes.open.lock();
                if !open.contains_key(&ino) && self.writes.by_ino.lock().remove(&ino).is_some() {
                    warpdrive_metrics::shift(&self.metrics.write.spool_bytes, -(size as i64));
                }
            }
            _ => {
                self.writes.by_ino.lock().remove(&ino);
                warpdrive_metrics::shift(&self.metrics.write.spool_bytes, -(size as i64));
                w.discard().await;
                if w.committed().await.is_none() {
                    // Never in the store: the name goes.
                    self.inodes.unlink(ino);
                }
            }
        }
    }

    /// Makes the spool of a committed file the cached copy of its object (its checksums are
    /// computed on a blocking thread), known sound for passthrough: its block checksums were
    /// just computed from the very bytes.
    async fn adopt(&self, ino: Ino, w: &Writer, info: &ObjectInfo) {
        let (Some(cache), Ok(node), Some(etag)) = (
            self.reader.cache().cloned(),
            self.node(ino),
            info.etag.clone(),
        ) else {
            let _ = std::fs::remove_file(w.spool_path());
            return;
        };
        let Some(bid) = node.path.backend else { return };
        let id = ObjectId {
            backend: self.backend(bid).name().to_string(),
            key: w.key(),
            etag,
        };
        let (c, i, spool, size) = (
            cache.clone(),
            id.clone(),
            w.spool_path().to_path_buf(),
            info.size,
        );
        let adopted = tokio::task::spawn_blocking(move || c.adopt(&i, size, &spool)).await;
        match adopted {
            Ok(Ok(())) => self.reader.integrity.adopted(&cache, &id),
            Ok(Err(e)) => {
                tracing::debug!(key = id.key, error = %e, "a written file was not kept in the cache");
                let _ = std::fs::remove_file(w.spool_path());
            }
            Err(e) => tracing::debug!(key = id.key, error = %e, "adopting a written file stopped"),
        }
    }

    /// Changes a file's size: a file being written takes it; everything else is read-only.
    pub(super) async fn truncate_written(&self, ino: Ino, size: u64) -> Option<FsResult<Attr>> {
        let w = self.writes.by_ino.lock().get(&ino).cloned()?;
        let node = self.node(ino).ok()?;
        Some(
            w.truncate(size)
                .await
                .map(|()| self.writing_attr(&node, size))
                .map_err(store_error),
        )
    }

    /// The attributes of a file being written (its size so far), if it is.
    pub(super) async fn written_attr(&self, node: &Node) -> Option<Attr> {
        let w = self.writer_of(node)?;
        Some(self.writing_attr(node, w.size().await))
    }

    /// Whether backend `bid` takes writes: every check of the write path on the read path's
    /// operations (lookups, `getattr`, opens, listings) is skipped for backends that do not.
    pub(super) fn writes_to(&self, bid: Option<BackendId>) -> bool {
        bid.is_some_and(|b| !self.backend(b).config().write.prefixes.is_empty())
    }

    /// The writer of `node`, if it is being written (or committed and not yet released).
    fn writer_of(&self, node: &Node) -> Option<Arc<Writer>> {
        if !self.writes_to(node.path.backend) {
            return None;
        }
        self.writes.by_ino.lock().get(&node.ino).cloned()
    }

    /// What a lookup of `path` answers from the write path: a file being written or a
    /// directory made here.
    pub(super) async fn lookup_written(&self, path: &NodePath) -> Option<Attr> {
        if let Some(node) = self.inodes.find(path) {
            if let Some(a) = self.written_attr(&node).await {
                return Some(a);
            }
            if node.kind == Kind::Dir && self.writes.dirs.lock().contains(path) {
                return Some(self.attr_of(&node, None));
            }
        }
        None
    }

    /// The directories made by `mkdir` directly in `dir`, by name, sorted.
    pub(super) fn made_dirs_in(&self, dir: &Node) -> Vec<(String, Ino)> {
        let Some(bid) = dir.path.backend.filter(|b| self.writes_to(Some(*b))) else {
            return Vec::new();
        };
        let prefix = if dir.path.key.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.path.key)
        };
        let mut out: Vec<(String, Ino)> = self
            .writes
            .dirs
            .lock()
            .iter()
            .filter(|p| p.backend == Some(bid))
            .filter_map(|p| {
                let name = p.key.strip_prefix(&prefix)?;
                (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
            })
            .filter_map(|name| {
                let n = self.inodes.find(&NodePath {
                    backend: Some(bid),
                    key: format!("{prefix}{name}"),
                })?;
                Some((name, n.ino))
            })
            .collect();
        out.sort();
        out
    }

    /// Makes directory `name` in `parent` (under a writable prefix): remembered by the mount
    /// until files are written in it.
    pub async fn mkdir(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        let parent = self.write_parent(parent)?;
        let bid = parent.path.backend.ok_or(FsError::ReadOnly)?;
        if !warpdrive_store::valid_component(name) {
            return Err(FsError::Invalid(format!(
                "{name:?} cannot be a directory name"
            )));
        }
        let key = Self::child_key(&parent, name);
        if !self.backend(bid).config().write.allows_dir(&key) {
            return Err(FsError::ReadOnly);
        }
        let path = NodePath {
            backend: Some(bid),
            key: key.clone(),
        };
        if self.lookup_written(&path).await.is_some() {
            return Err(FsError::Exists);
        }
        let backend = self.backend(bid);
        match backend.head(&key).await {
            Ok(_) => return Err(FsError::Exists),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
        if backend.dir_exists(&key).await.map_err(store_error)? {
            return Err(FsError::Exists);
        }
        let node = self.inodes.get_or_create(path.clone(), Kind::Dir);
        node.state.lock().seen = Some(Instant::now());
        self.writes.dirs.lock().insert(path);
        self.negatives.forget(parent.ino, name);
        Ok(self.attr_of(&node, None))
    }

    /// Removes directory `name`: one this mount made and nothing was written in; a
    /// directory with objects below is `ENOTEMPTY`.
    pub async fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        let parent = self.write_parent(parent)?;
        let bid = parent.path.backend.ok_or(FsError::ReadOnly)?;
        let key = Self::child_key(&parent, name);
        let path = NodePath {
            backend: Some(bid),
            key: key.clone(),
        };
        if !self.backend(bid).config().write.allows_dir(&key) {
            return Err(FsError::ReadOnly);
        }
        if self
            .backend(bid)
            .dir_exists(&key)
            .await
            .map_err(store_error)?
        {
            return Err(FsError::NotEmpty);
        }
        let prefix = format!("{key}/");
        let busy = self
            .writes
            .by_ino
            .lock()
            .values()
            .any(|w| w.key().starts_with(&prefix));
        if busy {
            return Err(FsError::NotEmpty);
        }
        if !self.writes.dirs.lock().remove(&path) {
            return Err(FsError::NotFound);
        }
        if let Some(n) = self.inodes.find(&path) {
            self.inodes.unlink(n.ino);
        }
        Ok(())
    }

    /// Removes file `name`: a file not yet committed is dropped; an object is deleted if
    /// this mount wrote it or the backend allows deletes (`EPERM` otherwise).
    pub async fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        let parent = self.write_parent(parent)?;
        let (bid, key) = self.writable_child(&parent, name)?;
        let path = NodePath {
            backend: Some(bid),
            key: key.clone(),
        };
        let node = self.inodes.find(&path);
        let (writer, in_store) = self.in_store(node.as_deref(), &path, bid).await?;
        if in_store {
            self.backend(bid).delete(&key).await.map_err(store_error)?;
            self.writes.made.lock().remove(&path);
            self.drop_cached_key(bid, &key);
        }
        if let Some(w) = &writer {
            // Its handles may still write; nothing of it is committed again.
            w.unlinked().await;
        }
        if let Some(n) = node {
            self.inodes.unlink(n.ino);
            self.stale_parent_listing(&n);
        }
        self.negatives.forget(parent.ino, name);
        Ok(())
    }

    /// The writer of `node`, if it is being written, and whether `path` is an object in the
    /// store (committed); an object may only be deleted (by an unlink or a rename) if this
    /// mount wrote it or the backend allows deletes (`EPERM` otherwise).
    async fn in_store(
        &self,
        node: Option<&Node>,
        path: &NodePath,
        bid: BackendId,
    ) -> FsResult<(Option<Arc<Writer>>, bool)> {
        let writer = node.and_then(|n| self.writes.by_ino.lock().get(&n.ino).cloned());
        let in_store = match &writer {
            Some(w) => w.committed().await.is_some(),
            None => true,
        };
        if in_store
            && !self.writes.made.lock().contains(path)
            && !self.backend(bid).config().write.delete
        {
            return Err(FsError::NotPermitted);
        }
        Ok((writer, in_store))
    }

    fn drop_cached_key(&self, bid: BackendId, key: &str) {
        if let Some(cache) = self.reader.cache()
            && let Err(e) = cache.invalidate(self.backend(bid).name(), key)
        {
            self.reader.cache_error(&e);
        }
    }

    /// Renames file `name` in `parent` to `new_name` in `new_parent`, inside one backend's
    /// writable prefixes: a file not yet committed commits under the new name; an object is
    /// copied inside the store and its old name deleted (only an object this mount wrote, or
    /// where `delete` is allowed). Replacing an existing object needs `overwrite` (`EEXIST`
    /// otherwise, and always with `no_replace`).
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        let (parent, new_parent) = (self.write_parent(parent)?, self.write_parent(new_parent)?);
        let (bid, from) = self.writable_child(&parent, name)?;
        let (to_bid, to) = self.writable_child(&new_parent, new_name)?;
        if bid != to_bid {
            return Err(FsError::CrossDevice);
        }
        let from_path = NodePath {
            backend: Some(bid),
            key: from.clone(),
        };
        let to_path = NodePath {
            backend: Some(bid),
            key: to.clone(),
        };
        let node = self.inodes.find(&from_path);
        if node.as_ref().is_some_and(|n| n.kind == Kind::Dir) {
            // A directory is every key below it: the caller copies file by file.
            return Err(FsError::CrossDevice);
        }
        let backend = self.backend(bid).clone();
        let access = backend.config().write.clone();
        // The target: an object in the store, or a file being written here.
        let target_busy = self
            .inodes
            .find(&to_path)
            .is_some_and(|n| self.writes.by_ino.lock().contains_key(&n.ino));
        let target_exists = target_busy
            || match backend.head(&to).await {
                Ok(_) => true,
                Err(StoreError::NotFound { .. }) => false,
                Err(e) => return Err(store_error(e)),
            };
        if target_exists && (no_replace || !access.overwrite) {
            return Err(FsError::Exists);
        }
        let (writer, committed) = self.in_store(node.as_deref(), &from_path, bid).await?;
        if committed {
            let info = backend
                .copy_object(&from, &to, !access.overwrite)
                .await
                .map_err(store_error)?;
            backend.delete(&from).await.map_err(store_error)?;
            let mut made = self.writes.made.lock();
            made.remove(&from_path);
            made.insert(to_path.clone());
            drop(made);
            self.drop_cached_key(bid, &from);
            if let Some(n) = &node {
                n.state.lock().info = Some((info, Instant::now()));
            }
        }
        if let Some(w) = &writer {
            w.rename(&to).await;
        }
        match &node {
            Some(n) => {
                self.stale_parent_listing(n);
                if let Some(moved) = self.inodes.rename(n.ino, to_path) {
                    self.stale_parent_listing(&moved);
                }
            }
            None => {
                // Not known by inode (renamed by path alone): the new name is looked up anew.
                self.stale_parent_listing(&new_parent);
            }
        }
        self.negatives.forget(new_parent.ino, new_name);
        tracing::info!(backend = backend.name(), from, to, "renamed");
        Ok(())
    }

    /// Files being written now.
    /// Handles open for writing (files being written, and committed ones not yet closed).
    pub fn write_handles(&self) -> usize {
        self.writes.handles.read().len()
    }

    pub async fn writing(&self) -> Vec<WriteStatus> {
        let writers: Vec<(Ino, Arc<Writer>)> = self
            .writes
            .by_ino
            .lock()
            .iter()
            .map(|(i, w)| (*i, w.clone()))
            .collect();
        let mut out = Vec::new();
        for (ino, w) in writers {
            out.push(WriteStatus {
                backend: self.backend_name_of(ino),
                key: w.key(),
                bytes: w.size().await,
            });
        }
        out
    }
}
