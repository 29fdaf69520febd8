//! The fleet tier: a cache of object chunks that every node shares, kept in an object store
//! near the cluster (`shared_cache:` in the config; doc/ARCHITECTURE.md, "The fleet tier").
//!
//! The algorithm. An object version is cut into chunks of `chunk_size` bytes (a whole number
//! of the local cache's blocks); chunk `i` of a version lives at a key derived from the
//! version's identity ([`chunk`]), in a self-validating format. A node missing blocks of a
//! version in its local cache asks the tier for the chunks that hold them ([`SharedTier::read`]):
//!
//! * a chunk that is present and passes every check ([`chunk::decode`]) is a hit: its data
//!   is served and fills the local cache, and the origin is not asked;
//! * anything else (absent, refused, a failed or slow request) is a miss, counted by why,
//!   and the node fetches the chunk from the origin as it would without the tier; it then
//!   writes the chunk to the tier in the background ([`SharedTier::fill`]) with a
//!   create-only write, so of several nodes filling one chunk the first one's stays and the
//!   others learn it exists (success too). A read-only node never writes.
//!
//! The tier is never needed for a read to succeed: a request that has not answered within
//! [`FIRST_BYTE_DEADLINE`] (or finished within [`READ_DEADLINE`]) is a miss, and after
//! [`BREAKER_FAILURES`] failures in a row the tier is not asked at all for a while (the
//! breaker doubles that while from [`BREAKER_MIN_OPEN`] up to [`BREAKER_MAX_OPEN`] and then
//! lets one request through to probe it). Fills wait for nobody: at most [`FILLS_IN_FLIGHT`]
//! go on at once and [`FILLS_QUEUED`] wait (each holds its chunk in memory); a chunk that
//! finds the queue full is not written (counted as skipped).

pub mod chunk;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use warpdrive_config::{BackendConfig, RetryPolicy, SharedCacheConfig, SharedMode};
use warpdrive_metrics::SharedMetrics;
use warpdrive_store::{Backend, StoreError};

pub use chunk::Identity;

/// A tier GET that has not begun to answer by then is a miss (the origin is asked).
pub const FIRST_BYTE_DEADLINE: Duration = Duration::from_secs(1);
/// A tier GET that has not finished by then is a miss.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);
/// Failures in a row (errors and timeouts, not absent chunks) that mark the tier down.
pub const BREAKER_FAILURES: u32 = 3;
/// How long the tier is first left alone once marked down...
pub const BREAKER_MIN_OPEN: Duration = Duration::from_secs(2);
/// ...doubling while probes fail, up to this.
pub const BREAKER_MAX_OPEN: Duration = Duration::from_secs(60);
/// Background chunk writes at once.
pub const FILLS_IN_FLIGHT: usize = 4;
/// Chunk writes waiting or going on (each holds its chunk in memory: 128 MiB of 8 MiB chunks).
pub const FILLS_QUEUED: usize = 16;

/// Where a backend's objects are, as chunk identities name it.
#[derive(Debug, Clone)]
struct Source {
    kind: String,
    location: String,
    prefix: String,
}

impl Source {
    fn of(b: &BackendConfig) -> Source {
        let mut location = b.kind.describe();
        if let Some(e) = b.kind.endpoint() {
            location = format!("{location}@{e}");
        }
        Source {
            kind: b.kind.type_name().to_string(),
            location,
            prefix: b.prefix.clone(),
        }
    }
}

/// Whether the tier is asked: closed (yes), or open until an instant (no), then one probe.
#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    open_for: Duration,
    probing: bool,
}

impl Breaker {
    fn new() -> Breaker {
        Breaker {
            failures: 0,
            open_until: None,
            open_for: BREAKER_MIN_OPEN,
            probing: false,
        }
    }

    /// Whether a request may go to the tier now.
    fn allow(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(t) if now >= t && !self.probing => {
                self.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    fn success(&mut self) {
        if self.open_until.is_some() {
            tracing::info!("the shared tier answers again; using it");
        }
        *self = Breaker::new();
    }

    fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.probing {
            self.probing = false;
            self.open_for = (self.open_for * 2).min(BREAKER_MAX_OPEN);
            self.open_until = Some(now + self.open_for);
        } else if self.open_until.is_none() && self.failures >= BREAKER_FAILURES {
            tracing::warn!(
                failures = self.failures,
                "the shared tier is failing; reading from the origins and probing it again later"
            );
            self.open_until = Some(now + self.open_for);
        }
    }
}

/// The fleet tier of one daemon.
#[derive(Debug)]
pub struct SharedTier {
    store: Backend,
    chunk_size: u64,
    /// Whether this node writes chunks.
    writes: bool,
    /// The backends that use the tier, by name.
    sources: HashMap<String, Source>,
    breaker: Mutex<Breaker>,
    /// Writes going on, and writes queued or going on.
    fills: Arc<tokio::sync::Semaphore>,
    queued: Arc<tokio::sync::Semaphore>,
    metrics: SharedMetrics,
}

impl SharedTier {
    /// The tier `cfg` describes, for the `backends` it names.
    pub fn new(
        cfg: &SharedCacheConfig,
        backends: &[BackendConfig],
        metrics: SharedMetrics,
    ) -> Result<Arc<SharedTier>, StoreError> {
        let mut store_cfg = cfg.store.clone();
        // A tier that does not answer at once is not waited for: the origin is.
        store_cfg.retry = RetryPolicy {
            deadline: READ_DEADLINE,
            unreachable: FIRST_BYTE_DEADLINE,
        };
        let store = Backend::build(&store_cfg)?;
        let sources = backends
            .iter()
            .filter(|b| cfg.backends.contains(&b.name))
            .map(|b| (b.name.clone(), Source::of(b)))
            .collect();
        Ok(Arc::new(SharedTier {
            store,
            chunk_size: cfg.chunk_size,
            writes: cfg.mode == SharedMode::ReadWrite,
            sources,
            breaker: Mutex::new(Breaker::new()),
            fills: Arc::new(tokio::sync::Semaphore::new(FILLS_IN_FLIGHT)),
            queued: Arc::new(tokio::sync::Semaphore::new(FILLS_QUEUED)),
            metrics,
        }))
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The store the tier lives in (for status).
    pub fn store(&self) -> &Backend {
        &self.store
    }

    /// The identity of version `etag` of `key` in backend `backend`, if that backend uses
    /// the tier (a version without an ETag cannot be named, and does not).
    pub fn identity(&self, backend: &str, key: &str, etag: &str, size: u64) -> Option<Identity> {
        let s = self.sources.get(backend)?;
        if etag.is_empty() {
            return None;
        }
        Some(Identity {
            kind: s.kind.clone(),
            location: s.location.clone(),
            key: format!("{}{key}", s.prefix),
            etag: etag.to_string(),
            size,
            chunk_size: self.chunk_size,
        })
    }

    /// Chunk `index` of `id`, verified, or `None` (a miss, counted by why). `backend` is
    /// the name its avoided origin bytes are counted under.
    pub async fn read(&self, backend: &str, id: &Identity, index: u64) -> Option<Bytes> {
        if !self.breaker.lock().allow(Instant::now()) {
            self.metrics.request("get", "skipped");
            return None;
        }
        let range = id.range(index);
        let len = range.end - range.start;
        let key = chunk::key(id, index);
        let want = chunk::HEADER_LEN as u64 + len;
        let got = async {
            let mut body = tokio::time::timeout(
                FIRST_BYTE_DEADLINE,
                self.store.get_range_stream(&key, 0..want, None),
            )
            .await
            .map_err(|_| None)?
            .map_err(Some)?;
            let mut buf = bytes::BytesMut::with_capacity(want as usize);
            while let Some(c) = body.next().await {
                buf.extend_from_slice(&c.map_err(Some)?);
            }
            Ok::<_, Option<StoreError>>(buf.freeze())
        };
        let got = match tokio::time::timeout(READ_DEADLINE, got).await {
            Ok(r) => r,
            Err(_) => Err(None),
        };
        let bytes = match got {
            Ok(b) => b,
            Err(None) => {
                self.metrics.request("get", "timeout");
                self.breaker.lock().failure(Instant::now());
                return None;
            }
            Err(Some(StoreError::NotFound { .. })) => {
                self.metrics.request("get", "absent");
                self.breaker.lock().success();
                return None;
            }
            Err(Some(e)) => {
                self.metrics.request("get", "error");
                tracing::debug!(error = %e, "shared tier read failed");
                self.breaker.lock().failure(Instant::now());
                return None;
            }
        };
        self.breaker.lock().success();
        self.metrics.bytes("read", bytes.len() as u64);
        match chunk::decode(id, index, bytes) {
            Ok(data) => {
                self.metrics.request("get", "hit");
                self.metrics.avoided(backend, data.len() as u64);
                Some(data)
            }
            Err(why) => {
                self.metrics.request("get", "invalid");
                self.metrics.invalid(why.label());
                tracing::warn!(chunk = key, reason = %why, "a shared-tier chunk was refused; reading from the origin");
                None
            }
        }
    }

    /// Writes chunk `index` of `id` (its whole `data`) to the tier in the background, unless
    /// this node is read-only or enough fills are going on already.
    pub fn fill(self: &Arc<Self>, id: Identity, index: u64, data: Bytes) {
        if !self.writes {
            return;
        }
        let Ok(queued) = self.queued.clone().try_acquire_owned() else {
            self.metrics.request("put", "skipped");
            return;
        };
        if !self.breaker.lock().allow(Instant::now()) {
            self.metrics.request("put", "skipped");
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _queued = queued;
            let Ok(_permit) = this.fills.clone().acquire_owned().await else {
                return;
            };
            let bytes = chunk::encode(&id, index, &data);
            let n = bytes.len() as u64;
            let key = chunk::key(&id, index);
            match tokio::time::timeout(READ_DEADLINE, this.store.put_new(&key, bytes)).await {
                Ok(Ok(true)) => {
                    this.metrics.request("put", "created");
                    this.metrics.bytes("written", n);
                    this.breaker.lock().success();
                }
                Ok(Ok(false)) => {
                    this.metrics.request("put", "exists");
                    this.breaker.lock().success();
                }
                Ok(Err(e)) => {
                    this.metrics.request("put", "error");
                    tracing::debug!(error = %e, "shared tier write failed");
                    this.breaker.lock().failure(Instant::now());
                }
                Err(_) => {
                    this.metrics.request("put", "timeout");
                    this.breaker.lock().failure(Instant::now());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
