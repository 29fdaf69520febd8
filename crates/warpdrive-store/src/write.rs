//! Writes: for `warpdrive-ctl copy` and `move`, streaming uploads that hold at most a few
//! parts in memory; for the mount's write path (checkpoints under writable prefixes), the
//! store's own requests through the [`Store`] trait, each counted in the backend's metrics:
//! a single or create-only PUT, a multipart upload, a copy inside the store, a delete.

use std::io::Write;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use crate::store::Upload;
use crate::{Backend, Inner, Result, StoreError};

/// Part size of multipart uploads; objects up to this size go up in one request.
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once per upload.
const PARTS_IN_FLIGHT: usize = 2;

impl Backend {
    fn read_only(&self, key: &str) -> StoreError {
        StoreError::Other {
            backend: self.config.name.clone(),
            message: format!("writing {key}: this backend's store takes no writes"),
        }
    }

    fn write_error(&self, key: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            backend: self.config.name.clone(),
            message: format!("writing {key}: {e}"),
        }
    }

    /// Writes object `key` (relative to the backend's prefix) from `chunks`, `size` bytes in
    /// all. Larger objects go up as a multipart upload, aborted on any error; a local file is
    /// written beside its final name and renamed into place. Returns the bytes written.
    pub async fn put_stream<S>(&self, key: &str, size: u64, mut chunks: S) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        let full = self.full_key(key)?;
        match &self.inner {
            Inner::Local(l) => {
                let path = l.path_of(&full);
                let tmp = crate::local::part_file(&path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| self.write_error(key, e))?;
                }
                let mut f = std::fs::File::create(&tmp).map_err(|e| self.write_error(key, e))?;
                let mut n = 0u64;
                while let Some(c) = chunks.next().await {
                    let c = match c {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(e);
                        }
                    };
                    if let Err(e) = f.write_all(&c) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(self.write_error(key, e));
                    }
                    n += c.len() as u64;
                }
                f.sync_all().map_err(|e| self.write_error(key, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| self.write_error(key, e))?;
                Ok(n)
            }
            Inner::Other => Err(self.read_only(key)),
            Inner::Cloud { store } => {
                let path = self.store_path(key)?;
                if size <= PART_SIZE as u64 {
                    let mut parts = Vec::new();
                    let mut n = 0u64;
                    while let Some(c) = chunks.next().await {
                        let c = c?;
                        n += c.len() as u64;
                        parts.push(c);
                    }
                    let payload: PutPayload = parts.into_iter().collect();
                    store
                        .put(&path, payload)
                        .await
                        .map_err(|e| self.failed(key, e))?;
                    return Ok(n);
                }
                let upload = store
                    .put_multipart(&path)
                    .await
                    .map_err(|e| self.failed(key, e))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                let mut n = 0u64;
                while let Some(c) = chunks.next().await {
                    let c = match c {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = w.abort().await;
                            return Err(e);
                        }
                    };
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        let _ = w.abort().await;
                        return Err(self.failed(key, e));
                    }
                    w.write(&c);
                    n += c.len() as u64;
                }
                w.finish().await.map_err(|e| self.failed(key, e))?;
                Ok(n)
            }
        }
    }

    /// Writes object `key` from `data` only if no object has that name yet (a create-only
    /// write: `If-None-Match: *` on the clouds, a hard link on a local directory). `Ok(true)`
    /// if this call created it, `Ok(false)` if an object was already there (another writer
    /// won, which for the shared tier's chunks is success).
    pub async fn put_new(&self, key: &str, data: Bytes) -> Result<bool> {
        let full = self.full_key(key)?;
        match self
            .authed(|| self.store.put(&full, data.clone(), true))
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes object `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.authed(|| self.store.delete(&full)).await
    }

    /// Stores `data` as object `key` in one request (create-only: fails with
    /// [`StoreError::AlreadyExists`] if the name is taken, conditionally where the store
    /// offers it) and returns the new object's metadata, as a HEAD answers it (the ETag later
    /// listings and reads compare against).
    pub async fn put_object(
        &self,
        key: &str,
        data: Bytes,
        create_only: bool,
    ) -> Result<crate::ObjectInfo> {
        let full = self.full_key(key)?;
        self.authed(|| self.store.put(&full, data.clone(), create_only))
            .await?;
        self.head(key).await
    }

    /// Starts a multipart upload of `key`; nothing is visible under it until the upload is
    /// completed (create-only where the store can condition the completion).
    pub async fn start_upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>> {
        let full = self.full_key(key)?;
        self.authed(|| self.store.upload(&full, create_only)).await
    }

    /// Copies object `from` to `to` inside the store (create-only as for
    /// [`Backend::put_object`]) and returns the copy's metadata.
    pub async fn copy_object(
        &self,
        from: &str,
        to: &str,
        create_only: bool,
    ) -> Result<crate::ObjectInfo> {
        let (src, dst) = (self.full_key(from)?, self.full_key(to)?);
        self.authed(|| self.store.copy(&src, &dst, create_only))
            .await?;
        self.head(to).await
    }
}
