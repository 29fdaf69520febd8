//! One file being written through the mount: its spool on the cache disk and its upload.
//!
//! Algorithm. Every byte written goes to the file's spool (a file in the cache's spool
//! directory) at its offset, straight from the caller's buffer ([`Writer::spool_write`], on
//! the FUSE thread: no copy in the daemon's memory); the file's state catches up after it
//! ([`Writer::wrote`]). While the writes only append, the spool's completed parts
//! ([`WriteLimits::part_size`] each) are streamed to a multipart upload as they fill: a part
//! is read back from the spool (the page cache) into memory that the mount-wide budget
//! ([`WriteLimits::memory`]) grants, so however many files are written at once, the parts in
//! flight never hold more than the budget; a writer waits for room, which slows its `write`
//! calls rather than the daemon's memory growing. Part buffers are reused while any file is
//! being written (a fresh 16 MiB buffer costs 4,096 page faults, each a zeroed page: more CPU
//! than the copy into it), and freed when the last writer goes. A write that goes back (or a
//! truncation below what was streamed) switches the file to staging: the upload is dropped
//! and the file is uploaded from its spool at commit. Reads of the file are served from the
//! spool.
//!
//! Commit (at `close` or `fsync`) makes the spool the object: a file that never filled a part,
//! or a staged one of at most one part, goes up in one PUT, create-only (conditional) unless
//! overwriting is allowed; otherwise the remaining tail is streamed, every part awaited, and
//! the upload completed, after a check that the name is still free (`object_store` offers no
//! condition on completing a multipart upload: doc/SEMANTICS.md, "Writing"). Nothing is
//! visible under the name before the commit; a failed commit aborts the upload, and the
//! writer gets the error. After a commit the spool holds exactly the object, so when the file
//! is released it becomes the object's cached copy ([`warpdrive_cache::Cache::adopt`]).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use warpdrive_store::{Backend, ObjectInfo, StoreError, Upload};

/// How big parts are and how much memory parts in flight may hold, over every file.
#[derive(Debug, Clone)]
pub struct WriteLimits {
    pub part_size: u64,
    /// The budget's permits, one per MiB.
    pub memory: Arc<Semaphore>,
    /// Part buffers not in use, kept while files are being written.
    pool: Arc<PartPool>,
}

/// Part-sized buffers for reuse. At most the budget's worth exist at once (each is taken
/// under a permit), so keeping the free ones costs no more than the budget's peak; they are
/// freed when no file is being written.
#[derive(Debug, Default)]
struct PartPool {
    free: parking_lot::Mutex<Vec<Vec<u8>>>,
    /// Files being written (their writers exist).
    writers: AtomicU64,
}

impl PartPool {
    /// A buffer of `len` bytes (a kept one if there is one; its bytes are to be overwritten).
    fn take(&self, len: usize) -> Vec<u8> {
        match self.free.lock().pop() {
            Some(mut b) => {
                b.resize(len, 0);
                b
            }
            None => vec![0; len],
        }
    }

    fn put_back(&self, buf: Vec<u8>) {
        let mut free = self.free.lock();
        // Checked under the lock the last writer's drop clears the list under.
        if self.writers.load(Ordering::Acquire) > 0 {
            free.push(buf);
        }
    }

    fn writer_gone(&self) {
        let mut free = self.free.lock();
        if self.writers.fetch_sub(1, Ordering::AcqRel) == 1 {
            free.clear();
            free.shrink_to_fit();
        }
    }
}

/// A pooled buffer, as [`Bytes`]; back to the pool when the last clone of them drops.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<PartPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put_back(std::mem::take(&mut self.buf));
    }
}

/// MiB, the unit of the memory budget's permits.
const MIB: u64 = 1 << 20;

impl WriteLimits {
    /// `part_size` parts within `memory` bytes (at least one part).
    pub fn new(part_size: u64, memory: u64) -> WriteLimits {
        let permits = memory.max(part_size).div_ceil(MIB);
        WriteLimits {
            part_size,
            memory: Arc::new(Semaphore::new(permits as usize)),
            pool: Arc::default(),
        }
    }

    fn part_permits(&self) -> u32 {
        self.part_size.div_ceil(MIB) as u32
    }
}

/// Where a written file is in its life.
enum Mode {
    /// Appends only so far: the first `streamed` bytes are in parts started on `upload`
    /// (none yet: `upload` is `None`).
    Streaming {
        upload: Option<Box<dyn Upload>>,
        streamed: u64,
        parts: Vec<JoinHandle<Result<(), StoreError>>>,
    },
    /// Uploaded from the spool at commit.
    Staged,
}

struct State {
    /// The file's length as far as the state has caught up with the spool.
    size: u64,
    mode: Mode,
    /// Written since the last commit (or never committed).
    dirty: bool,
    /// The object the last commit made.
    committed: Option<ObjectInfo>,
    /// A part failed: every later write and commit fails (the writer must start again).
    failed: Option<StoreError>,
}

/// A file being written: its spool, its upload and what has been committed.
pub struct Writer {
    backend: Arc<Backend>,
    /// The key the commit writes (a rename before the commit changes it).
    key: parking_lot::Mutex<String>,
    /// The commit may replace an existing object.
    overwrite: bool,
    spool_path: PathBuf,
    spool: std::fs::File,
    /// What the spool holds, kept with each write to it (the state catches up after).
    spooled: parking_lot::Mutex<Spooled>,
    limits: WriteLimits,
    state: Mutex<State>,
    /// Unlinked before its commit: never committed (its writers may go on writing).
    unlinked: std::sync::atomic::AtomicBool,
    /// Its spool was handed to the cache (once).
    adopted: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("backend", &self.backend.name())
            .field("key", &*self.key.lock())
            .finish()
    }
}

/// The spool's side of the file, changed by each write as it lands.
#[derive(Debug, Default)]
struct Spooled {
    /// The spool's length.
    size: u64,
    /// A write since the state last caught up did not append: the file must be staged.
    went_back: bool,
}

/// Numbers spool files apart.
static SPOOLS: AtomicU64 = AtomicU64::new(0);

impl Writer {
    /// A new, empty file to be committed as `key`, spooled in `spool_dir`.
    pub fn create(
        backend: Arc<Backend>,
        key: &str,
        overwrite: bool,
        spool_dir: &std::path::Path,
        limits: WriteLimits,
    ) -> std::io::Result<Writer> {
        let n = SPOOLS.fetch_add(1, Ordering::Relaxed);
        let spool_path = spool_dir.join(format!("{}-{n}", std::process::id()));
        let spool = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spool_path)?;
        limits.pool.writers.fetch_add(1, Ordering::AcqRel);
        Ok(Writer {
            backend,
            key: parking_lot::Mutex::new(key.to_string()),
            overwrite,
            spool_path,
            spool,
            spooled: parking_lot::Mutex::default(),
            limits,
            state: Mutex::new(State {
                size: 0,
                mode: Mode::Streaming {
                    upload: None,
                    streamed: 0,
                    parts: Vec::new(),
                },
                dirty: true,
                committed: None,
                failed: None,
            }),
            unlinked: std::sync::atomic::AtomicBool::new(false),
            adopted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// `true` the first time only: whoever gets it hands the spool to the cache.
    pub fn adopt_once(&self) -> bool {
        !self.adopted.swap(true, Ordering::Relaxed)
    }

    /// The file was unlinked: no commit from now on, and its upload goes.
    pub async fn unlinked(&self) {
        self.unlinked.store(true, Ordering::Relaxed);
        let mut st = self.state.lock().await;
        self.stage(&mut st);
    }

    /// The key the next commit writes.
    pub fn key(&self) -> String {
        self.key.lock().clone()
    }

    /// Commits go to `key` from now on. Parts already streamed belong to the old key's
    /// upload, so a streaming file is staged.
    pub async fn rename(&self, key: &str) {
        let mut st = self.state.lock().await;
        *self.key.lock() = key.to_string();
        self.stage(&mut st);
        st.dirty = true;
    }

    /// The file's length now.
    pub async fn size(&self) -> u64 {
        self.state.lock().await.size
    }

    /// The spool file (the file's bytes so far).
    pub fn spool_path(&self) -> &std::path::Path {
        &self.spool_path
    }

    /// A descriptor of the spool (valid after it is renamed into the cache).
    pub fn spool_file(&self) -> std::io::Result<std::fs::File> {
        self.spool.try_clone()
    }

    /// Switches to staging: a started upload is dropped (in the background).
    fn stage(&self, st: &mut State) {
        if let Mode::Streaming {
            upload: Some(mut u),
            parts,
            ..
        } = std::mem::replace(&mut st.mode, Mode::Staged)
        {
            tokio::spawn(async move {
                for p in parts {
                    let _ = p.await;
                }
                let _ = u.abort().await;
            });
        }
    }

    fn spool_error(&self, e: std::io::Error) -> StoreError {
        StoreError::Io {
            backend: self.backend.name().to_string(),
            message: format!("spooling {}: {e}", self.key()),
        }
    }

    /// The first half of a write, on the caller's thread and from its buffer: `data` goes
    /// into the spool at `offset`. [`Writer::wrote`] must follow.
    pub fn spool_write(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let mut sp = self.spooled.lock();
        self.spool
            .write_all_at(data, offset)
            .map_err(|e| self.spool_error(e))?;
        if offset != sp.size {
            sp.went_back = true;
        }
        sp.size = sp.size.max(offset + data.len() as u64);
        Ok(())
    }

    /// The second half of a write: the state catches up with the spool (a write that did not
    /// append stages the file) and full parts are streamed; how many bytes the file grew by
    /// (over the writes that landed since the last call: the sum is the file's growth).
    pub async fn wrote(&self) -> Result<u64, StoreError> {
        let mut st = self.state.lock().await;
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        let (size, went_back) = {
            let mut sp = self.spooled.lock();
            (sp.size, std::mem::take(&mut sp.went_back))
        };
        if went_back {
            self.stage(&mut st);
        }
        let before = st.size;
        st.size = size;
        st.dirty = true;
        self.stream_full_parts(&mut st).await?;
        Ok(size.saturating_sub(before))
    }

    /// Whether the next commit must not replace an object (the first commit of a file
    /// whose backend does not allow overwrites: later ones replace this writer's own).
    fn create_only(&self, st: &State) -> bool {
        !self.overwrite && st.committed.is_none()
    }

    /// Starts an upload part for every full part of the spool not yet streamed.
    async fn stream_full_parts(&self, st: &mut State) -> Result<(), StoreError> {
        let part = self.limits.part_size;
        let create_only = self.create_only(st);
        loop {
            let Mode::Streaming {
                upload,
                streamed,
                parts,
            } = &mut st.mode
            else {
                return Ok(());
            };
            // A failed part fails the file now rather than at commit.
            if let Some(i) = parts.iter().position(|p| p.is_finished()) {
                let done = parts.swap_remove(i);
                match done.await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => {
                        st.failed = Some(e.clone());
                        self.stage(st);
                        return Err(e);
                    }
                    Err(join) => {
                        let e = StoreError::Cancelled {
                            backend: self.backend.name().to_string(),
                            message: format!("an upload part of {} stopped: {join}", self.key()),
                        };
                        st.failed = Some(e.clone());
                        return Err(e);
                    }
                }
            }
            if st.size - *streamed < part {
                return Ok(());
            }
            if upload.is_none() {
                *upload = Some(self.backend.start_upload(&self.key(), create_only).await?);
            }
            let permit = self.permit().await;
            let bytes = self.read_part(*streamed, part)?;
            let Some(u) = upload.as_mut() else {
                unreachable!("started above")
            };
            let put = u.part(bytes);
            parts.push(tokio::spawn(async move {
                let r = put.await;
                drop(permit);
                r
            }));
            *streamed += part;
        }
    }

    /// Room in the memory budget for one part (waits for it).
    async fn permit(&self) -> OwnedSemaphorePermit {
        self.limits
            .memory
            .clone()
            .acquire_many_owned(self.limits.part_permits())
            .await
            .expect("the write budget is never closed")
    }

    fn read_spool(&self, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let mut buf = vec![0u8; len as usize];
        self.spool
            .read_exact_at(&mut buf, offset)
            .map_err(|e| self.spool_error(e))?;
        Ok(Bytes::from(buf))
    }

    /// Bytes of the spool to send (at most a part), in a pooled buffer.
    fn read_part(&self, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let len = len as usize;
        let mut buf = self.limits.pool.take(len);
        if let Err(e) = self.spool.read_exact_at(&mut buf, offset) {
            self.limits.pool.put_back(buf);
            return Err(self.spool_error(e));
        }
        Ok(Bytes::from_owner(Pooled {
            buf,
            pool: self.limits.pool.clone(),
        }))
    }

    /// Reads up to `size` bytes at `offset` of the file as written so far.
    pub async fn read(&self, offset: u64, size: u32) -> Result<Bytes, StoreError> {
        let st = self.state.lock().await;
        let end = (offset + u64::from(size)).min(st.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.read_spool(offset, end - offset)
    }

    /// Sets the file's length (a truncation below what was streamed stages the file).
    pub async fn truncate(&self, size: u64) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        let mut sp = self.spooled.lock();
        self.spool.set_len(size).map_err(|e| self.spool_error(e))?;
        sp.size = size;
        if std::mem::take(&mut sp.went_back) {
            self.stage(&mut st);
        }
        drop(sp);
        if let Mode::Streaming { streamed, .. } = &st.mode
            && size < *streamed
        {
            self.stage(&mut st);
        }
        st.size = size;
        st.dirty = true;
        Ok(())
    }

    /// Whether the file has been committed and not written since.
    pub async fn is_clean(&self) -> bool {
        let st = self.state.lock().await;
        !st.dirty && st.committed.is_some()
    }

    /// The object the last commit made.
    pub async fn committed(&self) -> Option<ObjectInfo> {
        self.state.lock().await.committed.clone()
    }

    /// Makes what was written the object (if anything changed since the last commit) and
    /// returns it (`None`: the file was unlinked, nothing is committed). A failure aborts the
    /// upload; the error says why (`AlreadyExists` when the name was taken meanwhile and
    /// overwriting is not allowed).
    pub async fn commit(&self) -> Result<Option<ObjectInfo>, StoreError> {
        let mut st = self.state.lock().await;
        if self.unlinked.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        if !st.dirty
            && let Some(done) = &st.committed
        {
            return Ok(Some(done.clone()));
        }
        let key = self.key();
        let create_only = self.create_only(&st);
        let size = st.size;
        let part = self.limits.part_size;
        let r = match std::mem::replace(&mut st.mode, Mode::Staged) {
            Mode::Streaming {
                upload: Some(u),
                streamed,
                parts,
            } => {
                self.finish_upload(&key, u, streamed, parts, size, create_only)
                    .await
            }
            _ if size <= part => {
                let data = self.read_part(0, size)?;
                self.backend.put_object(&key, data, create_only).await
            }
            _ => {
                let u = self.backend.start_upload(&key, create_only).await?;
                self.finish_upload(&key, u, 0, Vec::new(), size, create_only)
                    .await
            }
        };
        match r {
            Ok(info) => {
                st.committed = Some(info.clone());
                st.dirty = false;
                Ok(Some(info))
            }
            Err(e) => Err(e),
        }
    }

    /// Streams the spool from `streamed` on to `u`, waits for every part, checks the name
    /// (create-only) and completes; aborts on any failure.
    async fn finish_upload(
        &self,
        key: &str,
        mut u: Box<dyn Upload>,
        mut streamed: u64,
        mut parts: Vec<JoinHandle<Result<(), StoreError>>>,
        size: u64,
        create_only: bool,
    ) -> Result<ObjectInfo, StoreError> {
        let part = self.limits.part_size;
        let mut result = Ok(());
        while streamed < size && result.is_ok() {
            let len = part.min(size - streamed);
            let permit = self.permit().await;
            match self.read_part(streamed, len) {
                Ok(bytes) => {
                    let put = u.part(bytes);
                    parts.push(tokio::spawn(async move {
                        let r = put.await;
                        drop(permit);
                        r
                    }));
                    streamed += len;
                }
                Err(e) => result = Err(e),
            }
        }
        for p in parts {
            let r = match p.await {
                Ok(r) => r,
                Err(join) => Err(StoreError::Cancelled {
                    backend: self.backend.name().to_string(),
                    message: format!("an upload part of {key} stopped: {join}"),
                }),
            };
            if result.is_ok() {
                result = r;
            }
        }
        if result.is_ok() && create_only {
            match self.backend.head(key).await {
                Ok(_) => {
                    result = Err(StoreError::AlreadyExists {
                        backend: self.backend.name().to_string(),
                        key: key.to_string(),
                    })
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            result = u.complete().await;
        }
        if let Err(e) = result {
            let _ = u.abort().await;
            return Err(e);
        }
        self.backend.head(key).await
    }

    /// Drops the file: its upload is aborted and its spool deleted (a file released without
    /// a commit, or unlinked before one).
    pub async fn discard(&self) {
        let mut st = self.state.lock().await;
        self.stage(&mut st);
        let _ = std::fs::remove_file(&self.spool_path);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.limits.pool.writer_gone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_buffers_are_reused_while_files_are_written_and_freed_after() {
        let pool = Arc::new(PartPool::default());
        pool.writers.fetch_add(1, Ordering::AcqRel);
        let first = pool.take(1 << 20);
        let at = first.as_ptr();
        pool.put_back(first);
        // A shorter buffer is the same memory (the last part of a file is shorter).
        let again = pool.take(1000);
        assert_eq!((again.as_ptr(), again.len()), (at, 1000));
        let pooled = Bytes::from_owner(Pooled {
            buf: again,
            pool: pool.clone(),
        });
        let clone = pooled.clone();
        drop(pooled);
        assert!(pool.free.lock().is_empty(), "a clone still holds it");
        drop(clone);
        assert_eq!(pool.free.lock().len(), 1);
        pool.writer_gone();
        assert!(pool.free.lock().is_empty(), "no writer: nothing kept");
        pool.put_back(vec![0; 10]);
        assert!(
            pool.free.lock().is_empty(),
            "returned after the last writer: dropped"
        );
    }
}
