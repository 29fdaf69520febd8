//! Warming: fetching whole objects into the cache ahead of their readers, through the same
//! fetch machinery as reads (so a reader arriving meanwhile joins the fetch in flight, and
//! the daemon's index and metrics see every byte).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use warpdrive_cache::ObjectId;
use warpdrive_store::{ObjectInfo, StoreError};

use super::Fs;
use crate::blocks::Object;
use crate::error::{FsError, FsResult};
use crate::inode::BackendId;

/// Blocks fetched per step of a warm: progress is reported and cancellation checked between
/// steps, and a step is one GET's worth of blocks.
const WARM_STEP_BLOCKS: usize = 16;

/// What warming one object did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Bytes fetched from the backend.
    pub fetched: u64,
    /// Every block was already cached.
    pub already_cached: bool,
    /// The object has no ETag, so it cannot be cached.
    pub uncacheable: bool,
    /// Stopped by the cancel flag before the object was complete.
    pub cancelled: bool,
}

/// A file found under a directory to warm: its key relative to the backend, and metadata.
pub type Listed = (String, ObjectInfo);

impl Fs {
    pub(super) fn backend_id(&self, name: &str) -> FsResult<BackendId> {
        self.backends
            .iter()
            .position(|b| b.name() == name)
            .map(BackendId)
            .ok_or(FsError::NotFound)
    }

    /// The files below directory key `dir` of backend `backend` (`""` for its root), one level
    /// or all levels deep, in listing order. Keys that cannot be paths are left out, as in
    /// listings through the mount.
    pub async fn list_files(
        &self,
        backend: &str,
        dir: &str,
        recursive: bool,
    ) -> FsResult<Vec<Listed>> {
        let b = self.backend(self.backend_id(backend)?).clone();
        Ok(b.list_files(dir, recursive).await?)
    }

    /// An object's metadata, or `None` when `key` is not an object (a directory, say).
    pub async fn head(&self, backend: &str, key: &str) -> FsResult<Option<ObjectInfo>> {
        let b = self.backend(self.backend_id(backend)?).clone();
        match b.head(key).await {
            Ok(i) => Ok(Some(i)),
            Err(StoreError::NotFound { .. } | StoreError::InvalidKey { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches every block of `backend`/`key` (version `info`) the cache lacks, reporting
    /// each step's fetched bytes to `progress` and stopping between steps once `cancel` is
    /// set. Blocks fetched before a cancel stay cached.
    pub async fn warm_object(
        &self,
        backend: &str,
        key: &str,
        info: ObjectInfo,
        progress: &(dyn Fn(u64) + Send + Sync),
        cancel: &AtomicBool,
    ) -> FsResult<Warmed> {
        let bid = self.backend_id(backend)?;
        if info.etag.as_deref().unwrap_or("").is_empty() {
            return Ok(Warmed {
                uncacheable: true,
                ..Default::default()
            });
        }
        let node = self.file_node(bid, key.to_string(), info.clone());
        let b = self.backend(bid).clone();
        let obj = Object {
            ino: node.ino,
            id: Arc::new(ObjectId {
                backend: b.name().to_string(),
                key: key.to_string(),
                etag: info.etag.clone().unwrap_or_default(),
            }),
            backend: b,
            size: info.size,
        };
        if let Some(cache) = self.reader.cache()
            && let Some((etag, size)) = cache.cached_version(&obj.id.backend, &obj.id.key)
            && (etag != obj.id.etag || size != obj.size)
        {
            self.version_changed(&node);
        }
        let missing = self.reader.missing_blocks(&obj);
        let mut out = Warmed {
            already_cached: missing.is_empty(),
            ..Default::default()
        };
        let block = self.reader.block_size();
        for step in missing.chunks(WARM_STEP_BLOCKS) {
            if cancel.load(Ordering::Relaxed) {
                out.cancelled = true;
                break;
            }
            self.reader
                .fill_blocks(&obj, step)
                .await
                .map_err(|e| FsError::Store((*e).clone()))?;
            let bytes: u64 = step
                .iter()
                .map(|b| info.size.saturating_sub(b * block).min(block))
                .sum();
            out.fetched += bytes;
            progress(bytes);
        }
        Ok(out)
    }
}
