//! The seam between a [`crate::Backend`] and the store behind it.
//!
//! A [`Store`] answers three questions about full store keys (the backend's prefix already
//! joined, every component already checked): one page of a directory listing, an object's
//! metadata, and a ranged read streamed as it arrives. Everything a backend adds on top —
//! relative keys, hostile-name filtering, one token refresh after a rejected token, the
//! served-version check, metrics — is written once in the backend, so every store gets it:
//!
//! * [`crate::cloud::CloudStore`]: Azure, S3 and GCS through `object_store`;
//! * [`crate::local::LocalDir`]: a local directory;
//! * [`crate::memory::MemoryStore`]: objects in memory, with versions and request counts, for
//!   the filesystem core's tests;
//! * [`crate::faulty::FaultyStore`]: wraps any store and injects exact faults;
//! * [`Instrumented`]: wraps any store and records requests into the backend's metrics.
//!
//! The shared chunk tier reuses the same trait.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use warpdrive_metrics::{BackendMetrics, Request};

use crate::checksum::Known;
use crate::{ListPage, ObjectInfo, Result};

/// A body as it arrives. It may end early; the reader checks the length.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A part of an upload being stored: done when the store has it.
pub type PartFuture = futures::future::BoxFuture<'static, Result<()>>;

/// A multipart upload in progress: nothing is visible under its key until
/// [`Upload::complete`]; an upload neither completed nor aborted is left to the store's
/// lifecycle rules (doc/SEMANTICS.md, "Writing").
#[async_trait]
pub trait Upload: Send + fmt::Debug {
    /// Starts storing the next part (parts are numbered in call order; every part but the
    /// last must be at least the store's minimum part size, 5 MiB on S3).
    fn part(&mut self, data: Bytes) -> PartFuture;
    /// Makes the parts, all stored, the object.
    async fn complete(&mut self) -> Result<()>;
    /// Drops the upload and its parts.
    async fn abort(&mut self) -> Result<()>;
}

/// What a ranged read answers: the version the store served, and its bytes.
pub struct Body {
    /// The ETag of the version the bytes are from, when the store says.
    pub etag: Option<String>,
    pub stream: ByteStream,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body").field("etag", &self.etag).finish()
    }
}

/// An object store, as the read path sees it. Keys are full keys; `dir` is a full directory
/// key without its trailing `/` (`""` for the root).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// One page of the directory `dir`, continuing from `token`: names relative to `dir`,
    /// not yet filtered (the backend drops names that cannot be paths).
    async fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage>;

    /// Whether any key lies below directory `dir` (or is its marker `dir/`). A flat listing of
    /// one key, so the store need not group keys into prefixes to answer: Azurite, asked for
    /// one entry grouped by `/`, scans every key below (33 s over 10,000 keys).
    async fn any_below(&self, dir: &str) -> Result<bool> {
        let page = self.list_page(dir, None, 1).await?;
        Ok(page.marker || !page.dirs.is_empty() || !page.objects.is_empty() || page.next.is_some())
    }

    /// An object's metadata.
    async fn head(&self, key: &str) -> Result<ObjectInfo>;

    /// Reads `range` of the object; with `etag`, fails with
    /// [`StoreError::PreconditionFailed`] if the object is no longer that version.
    async fn get(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body>;

    /// The whole-object checksum the store's answers gave for this version, if seen.
    fn checksum(&self, _key: &str, _etag: &str) -> Option<Known> {
        None
    }

    /// Refreshes the store's credentials after it rejected them; `false` when there is
    /// nothing to refresh (or the refresh failed).
    async fn refresh_credentials(&self) -> bool {
        false
    }

    /// Whether this store counts its own failures into the backend's metrics (the cloud
    /// stores count every HTTP attempt where they see it); otherwise [`Instrumented`] does.
    fn counts_own_errors(&self) -> bool {
        false
    }

    /// Stores `data` as object `key` in one request. `create_only`: fails with
    /// [`StoreError::AlreadyExists`] when an object has the name (a conditional write).
    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()>;

    /// Starts a multipart upload of `key`. `create_only`: its completion fails with
    /// [`StoreError::AlreadyExists`] if the name is taken by then, where the store offers a
    /// condition on completing an upload (GCS, local directories, the in-memory store; not
    /// S3 or Azure through `object_store`).
    async fn upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>>;

    /// Copies object `from` to `to` inside the store. `create_only` as for [`Store::put`].
    async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()>;

    /// Deletes object `key`.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Records one request's latency when dropped (so a stream read to its end, or abandoned,
/// records once).
struct RequestTimer {
    metrics: BackendMetrics,
    kind: Request,
    start: Instant,
    first_byte: Option<Duration>,
}

impl RequestTimer {
    fn new(metrics: &BackendMetrics, kind: Request) -> RequestTimer {
        RequestTimer {
            metrics: metrics.clone(),
            kind,
            start: Instant::now(),
            first_byte: None,
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let total = self.start.elapsed();
        self.metrics
            .request(self.kind, self.first_byte.unwrap_or(total), total);
    }
}

/// Wraps a store and records every request into a backend's metrics: its count, first-byte
/// and total latency (the total when the body has been read or dropped), the bytes read,
/// and (for stores that do not count their own) its failures by class.
#[derive(Debug)]
pub struct Instrumented {
    pub inner: Arc<dyn Store>,
    pub metrics: BackendMetrics,
}

impl Instrumented {
    fn failed<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && !self.inner.counts_own_errors()
        {
            self.metrics.error(e.metric_kind());
        }
        r
    }
}

#[async_trait]
impl Store for Instrumented {
    async fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        let _timer = RequestTimer::new(&self.metrics, Request::List);
        self.failed(self.inner.list_page(dir, token, max_keys).await)
    }

    async fn any_below(&self, dir: &str) -> Result<bool> {
        let _timer = RequestTimer::new(&self.metrics, Request::List);
        self.failed(self.inner.any_below(dir).await)
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let _timer = RequestTimer::new(&self.metrics, Request::Head);
        self.failed(self.inner.head(key).await)
    }

    async fn get(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body> {
        let mut timer = RequestTimer::new(&self.metrics, Request::Get);
        let body = self.failed(self.inner.get(key, range, etag).await)?;
        timer.first_byte.get_or_insert(timer.start.elapsed());
        let metrics = self.metrics.clone();
        let own = self.inner.counts_own_errors();
        // The timer lives in the stream: the request's total time is recorded when the body
        // has been read (or the stream dropped).
        let stream = body
            .stream
            .map(move |c| {
                let _ = &timer;
                match &c {
                    Ok(b) => warpdrive_metrics::add(&metrics.read_bytes, b.len() as u64),
                    Err(e) if !own => metrics.error(e.metric_kind()),
                    Err(_) => {}
                }
                c
            })
            .boxed();
        Ok(Body {
            etag: body.etag,
            stream,
        })
    }

    fn checksum(&self, key: &str, etag: &str) -> Option<Known> {
        self.inner.checksum(key, etag)
    }

    async fn refresh_credentials(&self) -> bool {
        self.inner.refresh_credentials().await
    }

    fn counts_own_errors(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        let _timer = RequestTimer::new(&self.metrics, Request::Put);
        warpdrive_metrics::add(&self.metrics.written_bytes, data.len() as u64);
        self.failed(self.inner.put(key, data, create_only).await)
    }

    async fn upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>> {
        let _timer = RequestTimer::new(&self.metrics, Request::Upload);
        let inner = self.failed(self.inner.upload(key, create_only).await)?;
        Ok(Box::new(InstrumentedUpload {
            inner,
            metrics: self.metrics.clone(),
            own: self.inner.counts_own_errors(),
        }))
    }

    async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()> {
        let _timer = RequestTimer::new(&self.metrics, Request::Copy);
        self.failed(self.inner.copy(from, to, create_only).await)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let _timer = RequestTimer::new(&self.metrics, Request::Delete);
        self.failed(self.inner.delete(key).await)
    }
}

/// An upload whose requests are recorded as [`Instrumented`] records a store's.
#[derive(Debug)]
struct InstrumentedUpload {
    inner: Box<dyn Upload>,
    metrics: BackendMetrics,
    own: bool,
}

impl InstrumentedUpload {
    fn failed<T>(metrics: &BackendMetrics, own: bool, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && !own
        {
            metrics.error(e.metric_kind());
        }
        r
    }
}

#[async_trait]
impl Upload for InstrumentedUpload {
    fn part(&mut self, data: Bytes) -> PartFuture {
        let metrics = self.metrics.clone();
        let own = self.own;
        let len = data.len() as u64;
        let part = self.inner.part(data);
        Box::pin(async move {
            let _timer = RequestTimer::new(&metrics, Request::Part);
            let r = part.await;
            if r.is_ok() {
                warpdrive_metrics::add(&metrics.written_bytes, len);
            }
            InstrumentedUpload::failed(&metrics, own, r)
        })
    }

    async fn complete(&mut self) -> Result<()> {
        let _timer = RequestTimer::new(&self.metrics, Request::Complete);
        let r = self.inner.complete().await;
        InstrumentedUpload::failed(&self.metrics, self.own, r)
    }

    async fn abort(&mut self) -> Result<()> {
        let _timer = RequestTimer::new(&self.metrics, Request::Abort);
        let r = self.inner.abort().await;
        InstrumentedUpload::failed(&self.metrics, self.own, r)
    }
}
