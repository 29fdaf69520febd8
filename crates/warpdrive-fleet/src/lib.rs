//! The fleet tier: a cache of object chunks that every node shares, kept in an object store
//! near the cluster (`shared_cache:` in the config; doc/ARCHITECTURE.md, "The fleet tier").
//!
//! The algorithm. An object version is cut into chunks of `chunk_size` bytes (a whole number
//! of the local cache's blocks); chunk `i` of a version lives at a key derived from the
//! version's identity ([`chunk`]), in a self-validating format. A node missing blocks of a
//! version in its local cache asks the tier for the chunks that hold them
//! ([`SharedTier::fetch`]):
//!
//! * a chunk that is present is streamed: its header is checked against the identity asked
//!   for, then each 1 MiB piece is handed out once it has arrived and passed its own checksum
//!   ([`Pieces`]); the data fills the local cache and the origin is not asked. A chunk
//!   refused part way (counted by reason) keeps the pieces that passed, the rest comes from
//!   the origin, and a writing node replaces the chunk ([`SharedTier::replace`]);
//! * an absent chunk is claimed: the node takes the chunk's lease ([`lease`]) with a
//!   create-only write, fetches the chunk from the origin as it would without the tier,
//!   writes it to the tier in the background
//!   ([`SharedTier::fill`], create-only too: of two writers the first one's stays and the
//!   second learns it exists, which is success) and gives the lease up. A node that finds
//!   the lease held waits for the chunk to appear, up to the lease's expiry, then fetches
//!   from the origin itself. So N nodes missing a chunk at once cost the origin one fetch;
//!   a lease adds bounded latency, never an error. A read-only node takes no lease and writes
//!   nothing, but waits on other nodes' leases;
//! * a failed or slow request is a miss: the node reads the origin and still fills the tier.
//!
//! The tier is never needed for a read to succeed: a request that has not answered within
//! [`FIRST_BYTE_DEADLINE`] (or finished within [`READ_DEADLINE`]) is a miss, and after
//! [`BREAKER_FAILURES`] failures in a row the tier is not asked at all for a while (the
//! breaker doubles that while from [`BREAKER_MIN_OPEN`] up to [`BREAKER_MAX_OPEN`] and then
//! lets one request through to probe it). Fills wait for nobody: at most [`FILLS_IN_FLIGHT`]
//! go on at once and [`FILLS_QUEUED`] wait (each holds its chunk in memory); a chunk that
//! finds the queue full is not written (counted as skipped).

pub mod chunk;
pub mod lease;
pub mod ops;

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
use lease::Lease;

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
    /// Whether this node writes chunks (and takes leases).
    writes: bool,
    lease_ttl: Duration,
    /// Whether leases are taken and waited on (`shared_cache.leases`).
    leases: bool,
    /// This node's name in its leases.
    node: String,
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
            lease_ttl: cfg.lease_ttl,
            leases: cfg.leases,
            node: lease::node_id(),
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

    /// The tier's store as `kind://account/container/prefix`.
    pub fn describe(&self) -> String {
        let c = self.store.config();
        if c.prefix.is_empty() {
            c.kind.describe()
        } else {
            format!("{}/{}", c.kind.describe(), c.prefix)
        }
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
    /// the name its avoided origin bytes are counted under. (The read path streams chunks
    /// with [`SharedTier::fetch`]; this whole read is for tests.)
    #[cfg(test)]
    pub(crate) async fn read(&self, backend: &str, id: &Identity, index: u64) -> Option<Bytes> {
        match self.look(backend, id, index, true).await {
            Found::Hit(data) => Some(data),
            _ => None,
        }
    }

    /// [`SharedTier::fetch`] with the chunk's pieces gathered: the whole chunk, or a miss
    /// (a chunk refused part way is a miss here). For tests.
    #[cfg(test)]
    pub(crate) async fn get(&self, backend: &str, id: &Identity, index: u64) -> Got {
        match self.fetch(backend, id, index).await {
            Fetched::Whole(data) => Got::Hit(data),
            Fetched::Miss(claim) => Got::Miss(claim),
            Fetched::Pieces(mut pieces) => {
                let mut all = bytes::BytesMut::new();
                loop {
                    match pieces.next().await {
                        Some(Ok(p)) => all.extend_from_slice(&p),
                        None => return Got::Hit(all.freeze()),
                        Some(Err(_)) => return Got::Miss(None),
                    }
                }
            }
        }
    }

    /// The chunk is not in the tier: take its lease, or wait for whoever holds it.
    async fn absent(&self, backend: &str, id: &Identity, index: u64) -> Got {
        if !self.leases {
            return Got::Miss(None);
        }
        let lease_key = lease::key(&chunk::key(id, index));
        if self.writes {
            match self.take(&lease_key).await {
                Some(true) => return self.claimed(backend, id, index, lease_key).await,
                Some(false) => {}
                None => return Got::Miss(None),
            }
        }
        let held = tokio::time::timeout(FIRST_BYTE_DEADLINE, async {
            let mut body = self
                .store
                .get_range_stream(&lease_key, 0..4096, None)
                .await?;
            let mut text = Vec::new();
            while let Some(c) = body.next().await {
                text.extend_from_slice(&c?);
            }
            Ok::<_, StoreError>(text)
        })
        .await;
        match held {
            Ok(Ok(text)) => match Lease::parse(&String::from_utf8_lossy(&text)) {
                Some(l) if l.remaining() > Duration::ZERO => {
                    self.wait(backend, id, index, l.remaining()).await
                }
                _ => {
                    // Its holder is gone: the lease holds no one back any more.
                    self.metrics.request("lease", "stale");
                    if !self.writes {
                        return Got::Miss(None);
                    }
                    let _ = self.store.delete(&lease_key).await;
                    match self.take(&lease_key).await {
                        Some(true) => self.claimed(backend, id, index, lease_key).await,
                        _ => Got::Miss(None),
                    }
                }
            },
            // Released between the two requests: the chunk is likely there now.
            Ok(Err(StoreError::NotFound { .. })) => match self.look(backend, id, index, true).await
            {
                Found::Hit(data) => Got::Hit(data),
                _ => Got::Miss(None),
            },
            _ => Got::Miss(None),
        }
    }

    /// This node just took the lease at `lease_key`. The chunk was absent when it looked,
    /// but another node may have filled it and let its lease go between that look and this
    /// lease: it looks once more, and gives the lease back if the chunk is there.
    async fn claimed(&self, backend: &str, id: &Identity, index: u64, lease_key: String) -> Got {
        match self.look(backend, id, index, false).await {
            Found::Hit(data) => {
                self.metrics.request("get", "hit");
                let _ = tokio::time::timeout(READ_DEADLINE, self.store.delete(&lease_key)).await;
                Got::Hit(data)
            }
            _ => Got::Miss(Some(Claim { lease: lease_key })),
        }
    }

    /// Tries to create the lease at `key`: `Some(true)` taken, `Some(false)` held by another
    /// node, `None` the tier did not answer.
    async fn take(&self, key: &str) -> Option<bool> {
        let mine = Lease::new(&self.node, self.lease_ttl);
        let put = self.store.put_new(key, Bytes::from(mine.encode()));
        match tokio::time::timeout(FIRST_BYTE_DEADLINE, put).await {
            Ok(Ok(true)) => {
                self.metrics.request("lease", "taken");
                Some(true)
            }
            Ok(Ok(false)) => {
                self.metrics.request("lease", "held");
                Some(false)
            }
            _ => {
                self.metrics.request("lease", "error");
                None
            }
        }
    }

    /// Waits up to `limit` for another node to fill chunk `index` of `id`.
    async fn wait(&self, backend: &str, id: &Identity, index: u64, limit: Duration) -> Got {
        let t0 = Instant::now();
        let mut pause = lease::POLL_FIRST;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(lease::POLL_MAX);
            match self.look(backend, id, index, false).await {
                Found::Hit(data) => {
                    self.metrics.request("get", "hit");
                    self.metrics.wait("filled", t0.elapsed());
                    return Got::Hit(data);
                }
                Found::Absent if t0.elapsed() < limit => {}
                Found::Absent => {
                    self.metrics.wait("expired", t0.elapsed());
                    return Got::Miss(None);
                }
                Found::Refused | Found::Failed => {
                    self.metrics.wait("failed", t0.elapsed());
                    return Got::Miss(None);
                }
            }
        }
    }

    /// Asks the tier for chunk `index` of `id`: its body as it arrives, or why not.
    async fn open(&self, id: &Identity, index: u64, count: bool) -> Opened {
        if !self.breaker.lock().allow(Instant::now()) {
            self.metrics.request("get", "skipped");
            return Opened::Failed;
        }
        let range = id.range(index);
        let want = chunk::header_len(range.end - range.start) as u64 + (range.end - range.start);
        let key = chunk::key(id, index);
        let body = tokio::time::timeout(
            FIRST_BYTE_DEADLINE,
            self.store.get_range_stream(&key, 0..want, None),
        )
        .await;
        match body {
            Ok(Ok(body)) => Opened::Body(body),
            Ok(Err(StoreError::NotFound { .. })) => {
                if count {
                    self.metrics.request("get", "absent");
                }
                self.breaker.lock().success();
                Opened::Absent
            }
            Ok(Err(e)) => {
                self.metrics.request("get", "error");
                tracing::debug!(error = %e, "shared tier read failed");
                self.breaker.lock().failure(Instant::now());
                Opened::Failed
            }
            Err(_) => {
                self.metrics.request("get", "timeout");
                self.breaker.lock().failure(Instant::now());
                Opened::Failed
            }
        }
    }

    /// Reads chunk `index` of `id` once, whole. `count`: whether an absent chunk and a hit
    /// are counted as requests (a wait's polls count once, as the wait).
    async fn look(&self, backend: &str, id: &Identity, index: u64, count: bool) -> Found {
        let body = match self.open(id, index, count).await {
            Opened::Body(b) => b,
            Opened::Absent => return Found::Absent,
            Opened::Failed => return Found::Failed,
        };
        let mut pieces = Pieces::new(self, backend, id, index, body, count);
        pieces.streamed = false;
        let mut data = bytes::BytesMut::new();
        loop {
            match pieces.next().await {
                Some(Ok(p)) => data.extend_from_slice(&p),
                None => {
                    self.metrics.avoided(backend, data.len() as u64);
                    return Found::Hit(data.freeze());
                }
                Some(Err(Refusal::Invalid)) => return Found::Refused,
                Some(Err(Refusal::Failed)) => return Found::Failed,
            }
        }
    }

    /// Chunk `index` of `id` from the tier as it arrives (each piece checked before it is
    /// handed out), or what to do instead: if it is absent, this node takes its lease or
    /// waits for the node that holds it ([`lease`]) and then has the whole chunk. A miss
    /// tells the caller to fetch from the origin, with the lease when this node took it
    /// (then it must [`SharedTier::fill`] the chunk or [`SharedTier::release`] the claim).
    pub async fn fetch<'a>(
        &'a self,
        backend: &'a str,
        id: &'a Identity,
        index: u64,
    ) -> Fetched<'a> {
        match self.open(id, index, true).await {
            Opened::Body(body) => {
                Fetched::Pieces(Pieces::new(self, backend, id, index, body, true))
            }
            Opened::Failed => Fetched::Miss(None),
            Opened::Absent => match self.absent(backend, id, index).await {
                Got::Hit(d) => Fetched::Whole(d),
                Got::Miss(c) => Fetched::Miss(c),
            },
        }
    }

    /// Replaces a chunk that was refused (deleted, then written create-only with `data`),
    /// in the background; nothing on a read-only node.
    pub fn replace(self: &Arc<Self>, id: Identity, index: u64, data: Bytes) {
        if !self.writes {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let key = chunk::key(&id, index);
            let _ = tokio::time::timeout(READ_DEADLINE, this.store.delete(&key)).await;
            this.fill(id, index, data, None);
        });
    }

    /// Gives up a lease this node took without filling its chunk (the origin fetch failed),
    /// so that the others do not wait for it until it expires.
    pub fn release(self: &Arc<Self>, claim: Claim) {
        let this = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_DEADLINE, this.store.delete(&claim.lease)).await;
        });
    }

    /// Writes chunk `index` of `id` (its whole `data`) to the tier in the background, unless
    /// this node is read-only or enough fills are going on already; then gives up `claim`.
    pub fn fill(self: &Arc<Self>, id: Identity, index: u64, data: Bytes, claim: Option<Claim>) {
        if !self.writes {
            return;
        }
        let Ok(queued) = self.queued.clone().try_acquire_owned() else {
            self.metrics.request("put", "skipped");
            if let Some(c) = claim {
                self.release(c);
            }
            return;
        };
        if !self.breaker.lock().allow(Instant::now()) {
            self.metrics.request("put", "skipped");
            if let Some(c) = claim {
                self.release(c);
            }
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
            if let Some(c) = claim {
                let _ = tokio::time::timeout(READ_DEADLINE, this.store.delete(&c.lease)).await;
            }
        });
    }
}

/// A chunk's body as the store answers it.
type Body = futures::stream::BoxStream<'static, Result<Bytes, StoreError>>;

enum Opened {
    Body(Body),
    Absent,
    Failed,
}

/// Why a chunk being read stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It failed a check (counted by reason): a writing node replaces it.
    Invalid,
    /// The tier failed or was too slow.
    Failed,
}

/// A chunk read from the tier, piece by piece: each piece is handed out once it has arrived
/// whole and passed its CRC32C ([`chunk::Header`]). The pieces handed out before a refusal are
/// right; the caller fetches the rest from the origin.
pub struct Pieces<'a> {
    tier: &'a SharedTier,
    backend: &'a str,
    id: &'a Identity,
    index: u64,
    body: Body,
    buf: bytes::BytesMut,
    header: Option<chunk::Header>,
    /// The next piece to hand out.
    next: usize,
    deadline: tokio::time::Instant,
    count: bool,
    /// Whether each piece counts as origin bytes avoided as it is handed out (a whole read
    /// counts them once it is whole).
    streamed: bool,
    ended: bool,
}

impl std::fmt::Debug for Pieces<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pieces")
            .field("index", &self.index)
            .field("next", &self.next)
            .finish()
    }
}

impl<'a> Pieces<'a> {
    fn new(
        tier: &'a SharedTier,
        backend: &'a str,
        id: &'a Identity,
        index: u64,
        body: Body,
        count: bool,
    ) -> Pieces<'a> {
        Pieces {
            tier,
            backend,
            id,
            index,
            body,
            buf: bytes::BytesMut::new(),
            header: None,
            next: 0,
            deadline: tokio::time::Instant::now() + READ_DEADLINE,
            count,
            streamed: true,
            ended: false,
        }
    }

    fn refuse(&mut self, why: chunk::Invalid) -> Option<Result<Bytes, Refusal>> {
        self.ended = true;
        self.tier.metrics.request("get", "invalid");
        self.tier.metrics.invalid(why.label());
        tracing::warn!(
            chunk = chunk::key(self.id, self.index),
            reason = %why,
            "a shared-tier chunk was refused; reading the rest from the origin"
        );
        Some(Err(Refusal::Invalid))
    }

    fn fail(&mut self, what: &'static str) -> Option<Result<Bytes, Refusal>> {
        self.ended = true;
        self.tier.metrics.request("get", what);
        self.tier.breaker.lock().failure(Instant::now());
        Some(Err(Refusal::Failed))
    }

    /// The next checked piece; `None` once the whole chunk has been handed out.
    pub async fn next(&mut self) -> Option<Result<Bytes, Refusal>> {
        if self.ended {
            return None;
        }
        loop {
            if self.header.is_none() {
                match chunk::Header::read(self.id, self.index, &self.buf) {
                    Ok(Some(h)) => {
                        let _ = self.buf.split_to(h.len);
                        self.header = Some(h);
                    }
                    Ok(None) => {}
                    Err(why) => return self.refuse(why),
                }
            }
            if let Some(h) = &self.header {
                if self.next == h.pieces.len() {
                    if !self.buf.is_empty() {
                        return self.refuse(chunk::Invalid::Length);
                    }
                    self.ended = true;
                    self.tier.breaker.lock().success();
                    if self.count {
                        self.tier.metrics.request("get", "hit");
                    }
                    return None;
                }
                let want = h.piece_len(self.next) as usize;
                if self.buf.len() >= want {
                    let piece = self.buf.split_to(want).freeze();
                    if !h.check(self.next, &piece) {
                        return self.refuse(chunk::Invalid::Data);
                    }
                    self.next += 1;
                    if self.streamed {
                        self.tier.metrics.avoided(self.backend, piece.len() as u64);
                    }
                    return Some(Ok(piece));
                }
            }
            match tokio::time::timeout_at(self.deadline, self.body.next()).await {
                Ok(Some(Ok(b))) => {
                    self.tier.metrics.bytes("read", b.len() as u64);
                    self.buf.extend_from_slice(&b);
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "shared tier read failed");
                    return self.fail("error");
                }
                Ok(None) => {
                    // The body ended before the chunk did.
                    let why = if self.header.is_none() {
                        chunk::Invalid::Header
                    } else {
                        chunk::Invalid::Length
                    };
                    return self.refuse(why);
                }
                Err(_) => return self.fail("timeout"),
            }
        }
    }
}

/// What [`SharedTier::fetch`] found.
#[derive(Debug)]
pub enum Fetched<'a> {
    /// The chunk, piece by piece.
    Pieces(Pieces<'a>),
    /// The whole chunk (another node filled it while this one waited on its lease).
    Whole(Bytes),
    /// Not in the tier: fetch it from the origin; with a claim this node holds its lease.
    Miss(Option<Claim>),
}

/// What one look at the tier found.
enum Found {
    Hit(Bytes),
    Absent,
    /// Present but refused (counted by reason).
    Refused,
    /// The tier failed, was slow, or is marked down.
    Failed,
}

/// What the tier had for a chunk once this node looked, waited or claimed it.
#[derive(Debug)]
pub enum Got {
    /// The chunk's data, verified.
    Hit(Bytes),
    /// Fetch it from the origin; with a claim this node holds its lease.
    Miss(Option<Claim>),
}

/// A lease this node holds on a chunk it is to fill.
#[derive(Debug)]
pub struct Claim {
    lease: String,
}

#[cfg(test)]
mod tests;
