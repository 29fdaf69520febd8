//! Backends: the one place that talks to object stores.
//!
//! A [`Backend`] is one configured store (an Azure container, an S3 or GCS bucket, or a local
//! directory) seen through its key prefix. It offers exactly what the filesystem core needs:
//!
//! * [`Backend::list_page`]: one page of a list-with-delimiter below a directory key, so that a
//!   prefix of any size streams page by page instead of being collected first;
//! * [`Backend::head`]: an object's size, mtime and ETag;
//! * [`Backend::get_range`]: a ranged GET, with `If-Match` on the ETag when one is known, so
//!   bytes of two versions of an object are never mixed.
//!
//! Keys handed in and out are *relative* to the backend's prefix (`train/shard-000.tar`), so
//! nothing above this layer can name a key outside the prefix; every relative key is checked
//! component by component ([`keys::valid_component`]) before it is joined to the prefix.
//!
//! Cloud stores go through `object_store`. The local directory backend is implemented here on
//! `std::fs` (see [`local`]), because `object_store`'s `LocalFileSystem` percent-encodes file
//! names and cannot list a directory that holds a name it considers invalid.

mod attempts;
pub mod auth;
mod builder;
pub mod checksum;
mod cloud;
pub mod faulty;
mod gcs;
pub mod keys;
mod listfilter;
mod local;
pub mod memory;
pub mod retry;
pub mod secret;
pub mod store;
mod write;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use warpdrive_config::{AuthMode, BackendConfig, BackendKind};
use warpdrive_metrics::BackendMetrics;

pub use keys::valid_component;
pub use retry::fail_fast;
pub use store::{Body, ByteStream, PartFuture, Store, Upload};
pub use write::PART_SIZE;

/// Objects per list page we ask for. 1,000 is the S3 and GCS maximum; Azure allows 5,000,
/// but a smaller page lets the first directory entries reach `readdir` sooner.
pub const LIST_PAGE_SIZE: usize = 1000;

/// Errors from a backend, in the classes callers branch on. Each is built from a status code
/// or a typed error, never from an error's text; the metric class ([`StoreError::metric_kind`])
/// and the errno (`warpdrive_fs::error`) are derived from it in one place each. `Clone`
/// because one shared fetch hands its error to every reader waiting on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object (or directory) does not exist.
    #[error("{backend}: object not found: {key}")]
    NotFound { backend: String, key: String },
    /// The object is no longer the version asked for (`If-Match` failed, or a body came of
    /// another version).
    #[error("{backend}: object {key} changed while it was read (ETag mismatch)")]
    PreconditionFailed { backend: String, key: String },
    #[error("{backend}: key {key:?} is not a valid path below the backend's prefix")]
    InvalidKey { backend: String, key: String },
    /// A create-only write found an object under the name already (another writer won).
    #[error("{backend}: object {key} already exists")]
    AlreadyExists { backend: String, key: String },
    #[error("{backend}: cannot build the client: {message}")]
    Build { backend: String, message: String },
    /// The store refused the credentials (401) or the access (403).
    #[error("{backend}: access denied: {message}")]
    Denied { backend: String, message: String },
    /// The store kept asking for less (429, 503) until the retry policy gave up.
    #[error("{backend}: throttled: {message}")]
    Throttled { backend: String, message: String },
    /// The store kept failing (5xx) until the retry policy gave up.
    #[error("{backend}: store error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Server {
        backend: String,
        status: Option<u16>,
        message: String,
    },
    /// No answer in time.
    #[error("{backend}: request timed out after {after:?}")]
    Timeout { backend: String, after: Duration },
    /// The connection failed or broke: refused, reset, unreachable, a TLS failure.
    #[error("{backend}: {message}")]
    Transport { backend: String, message: String },
    /// A body ended before the range asked for.
    #[error("{backend}: short read of {key}: asked {asked} bytes, got {got}")]
    ShortRead {
        backend: String,
        key: String,
        asked: u64,
        got: u64,
    },
    /// The request was abandoned before it finished (its task stopped).
    #[error("{backend}: {message}")]
    Cancelled { backend: String, message: String },
    /// A local file system operation failed (the local backend, a write).
    #[error("{backend}: {message}")]
    Io { backend: String, message: String },
    #[error("{backend}: {message}")]
    Other { backend: String, message: String },
}

impl StoreError {
    /// Whether the store failed to answer the question, as opposed to answering it: the
    /// failures (unreachable, throttled, timed out, 5xx) after which something already known
    /// may be served stale. "Not found", "changed", "denied" and a bad key are answers.
    pub fn is_store_failure(&self) -> bool {
        !matches!(
            self,
            StoreError::NotFound { .. }
                | StoreError::PreconditionFailed { .. }
                | StoreError::InvalidKey { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::Build { .. }
                | StoreError::Denied { .. }
        )
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Timeout { .. }
                | StoreError::Transport { .. }
                | StoreError::Throttled { .. }
                | StoreError::Server { .. }
                | StoreError::ShortRead { .. }
                | StoreError::Io { .. }
        )
    }

    /// The class counted in `warpdrive_backend_errors_total{kind}`.
    pub fn metric_kind(&self) -> warpdrive_metrics::ErrorKind {
        use warpdrive_metrics::ErrorKind;
        match self {
            StoreError::NotFound { .. }
            | StoreError::PreconditionFailed { .. }
            | StoreError::InvalidKey { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::Denied { .. } => ErrorKind::Client,
            StoreError::Throttled { .. } => ErrorKind::Throttled,
            StoreError::Server { .. } => ErrorKind::Server,
            StoreError::Timeout { .. } => ErrorKind::Timeout,
            StoreError::Transport { .. } | StoreError::ShortRead { .. } => ErrorKind::Connection,
            StoreError::Build { .. }
            | StoreError::Cancelled { .. }
            | StoreError::Io { .. }
            | StoreError::Other { .. } => ErrorKind::Other,
        }
    }

    /// The error of an `object_store` request: by its variant, or by the typed errors the
    /// HTTP layer ([`attempts`]) put in its source chain (a final answer's status, a give-up
    /// with the last failure's class, a refused certificate, a transport failure's kind).
    fn from_object_store(backend: &str, key: &str, e: object_store::Error) -> StoreError {
        let backend = backend.to_string();
        let key = key.to_string();
        match e {
            object_store::Error::NotFound { .. } => return StoreError::NotFound { backend, key },
            object_store::Error::Precondition { .. } => {
                return StoreError::PreconditionFailed { backend, key };
            }
            object_store::Error::InvalidPath { .. } => {
                return StoreError::InvalidKey { backend, key };
            }
            object_store::Error::AlreadyExists { .. } => {
                return StoreError::AlreadyExists { backend, key };
            }
            _ => {}
        }
        let message = secret::redact(&e.to_string());
        if matches!(
            e,
            object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. }
        ) {
            return StoreError::Denied { backend, message };
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(a) = s.downcast_ref::<attempts::Answered>() {
                return attempts::by_status(a.status, backend, message);
            }
            if let Some(f) = s.downcast_ref::<attempts::Final>() {
                return f.error(backend, message);
            }
            if s.downcast_ref::<attempts::CertificateRefused>().is_some() {
                return StoreError::Transport { backend, message };
            }
            if let Some(t) = s.downcast_ref::<attempts::FirstByteTimeout>() {
                return StoreError::Timeout {
                    backend,
                    after: t.0,
                };
            }
            source = s.source();
        }
        // None of ours: the transport's own failure, by its kind.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
                let after = Duration::ZERO;
                return attempts::by_kind(attempts::transport_kind(h), backend, message, after);
            }
            source = s.source();
        }
        StoreError::Other { backend, message }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One spelling of an ETag whichever request reported it: Azure lists blobs with bare ETags
/// (`0x8D…`) but answers HEAD and GET with the quoted entity-tag (`"0x8D…"`), and comparing the
/// two took every object revalidated after its listing for a new version (its cached blocks
/// were dropped at every `metadata_ttl`). Bare tags get the quotes HTTP gives them, so the
/// canonical form is also what `If-Match` sends.
pub fn canonical_etag(etag: String) -> String {
    if etag.starts_with('"') || etag.starts_with("W/\"") {
        etag
    } else {
        format!("\"{etag}\"")
    }
}

/// What the store says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub mtime: SystemTime,
    /// Identifies this version of the object; kept for the block cache.
    pub etag: Option<String>,
}

/// One page of a directory listing. Names are single path components, already validated.
#[derive(Debug, Default)]
pub struct ListPage {
    /// Sub-directories (common prefixes).
    pub dirs: Vec<String>,
    /// Objects directly in this directory.
    pub objects: Vec<(String, ObjectInfo)>,
    /// Continuation token for the next page; `None` on the last page.
    pub next: Option<String>,
    /// The directory has a marker object (`dir/`), so it exists even if empty.
    pub marker: bool,
}

/// What a backend writes through (`warpdrive-ctl copy` and `move`; the mount never writes).
enum Inner {
    Cloud {
        store: Arc<dyn ObjectStore>,
    },
    Local(local::LocalDir),
    /// A store given to [`Backend::with_store`] (tests): reads only.
    Other,
}

/// One configured backend: a [`Store`] seen through the backend's key prefix.
pub struct Backend {
    config: BackendConfig,
    /// The store, instrumented ([`store::Instrumented`]).
    store: Arc<dyn Store>,
    inner: Inner,
    /// With token auth: the token and its refresher (for `status`).
    creds: Option<Arc<auth::Credentials>>,
    warned: Arc<keys::WarnOnce>,
    metrics: BackendMetrics,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.config.name)
            .field("store", &self.config.kind.describe())
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

impl Backend {
    /// Builds the client for one backend. Makes no request. Its metrics are not exposed
    /// anywhere (see [`Backend::build_with_metrics`]).
    pub fn build(config: &BackendConfig) -> Result<Backend> {
        Backend::build_with_metrics(config, BackendMetrics::detached(&config.name))
    }

    /// Builds the client for one backend, recording its requests into `metrics`.
    pub fn build_with_metrics(config: &BackendConfig, metrics: BackendMetrics) -> Result<Backend> {
        let warned = Arc::new(keys::WarnOnce::default());
        let (store, inner, creds): (Arc<dyn Store>, Inner, _) = match &config.kind {
            BackendKind::Local { path } => {
                let l = local::LocalDir::new(&config.name, path);
                (Arc::new(l.clone()), Inner::Local(l), None)
            }
            kind => {
                let seen = Arc::new(checksum::Seen::default());
                let (store, lister, creds, gcs) =
                    builder::build(config, warned.clone(), &metrics, &seen)?;
                let bucket = match kind {
                    BackendKind::Azure { container, .. } => container.clone(),
                    BackendKind::S3 { bucket, .. } | BackendKind::Gcs { bucket, .. } => {
                        bucket.clone()
                    }
                    BackendKind::Local { .. } => String::new(),
                };
                let cloud = cloud::CloudStore {
                    name: config.name.clone(),
                    bucket,
                    store: store.clone(),
                    lister,
                    creds: creds.clone(),
                    seen,
                    metrics: metrics.clone(),
                    gcs,
                };
                (Arc::new(cloud), Inner::Cloud { store }, creds)
            }
        };
        Ok(Backend::assemble(
            config, store, inner, creds, warned, metrics,
        ))
    }

    /// A backend over `store` (an in-memory or fault-injecting store, in tests), seen
    /// through `config`'s prefix; writes go through the store's own write requests.
    pub fn with_store(
        config: &BackendConfig,
        store: Arc<dyn Store>,
        metrics: BackendMetrics,
    ) -> Backend {
        let warned = Arc::new(keys::WarnOnce::default());
        Backend::assemble(config, store, Inner::Other, None, warned, metrics)
    }

    fn assemble(
        config: &BackendConfig,
        store: Arc<dyn Store>,
        inner: Inner,
        creds: Option<Arc<auth::Credentials>>,
        warned: Arc<keys::WarnOnce>,
        metrics: BackendMetrics,
    ) -> Backend {
        Backend {
            config: config.clone(),
            store: Arc::new(store::Instrumented {
                inner: store,
                metrics: metrics.clone(),
            }),
            inner,
            creds,
            warned,
            metrics,
        }
    }

    /// The raw `object_store` client of a cloud backend, for tools that write (uploads in the
    /// test kit). Not used on the read path. Local backends have none.
    pub fn object_store(&self) -> Option<Arc<dyn ObjectStore>> {
        match &self.inner {
            Inner::Cloud { store } => Some(store.clone()),
            _ => None,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The handles this backend records into.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    /// The whole-object checksum the store gave for version `etag` of `key` (relative) in
    /// an answer to a HEAD or GET this daemon sent, if one was seen ([`checksum`]).
    pub fn store_checksum(&self, key: &str, etag: &str) -> Option<checksum::Known> {
        self.store.checksum(&self.full_key(key).ok()?, etag)
    }

    /// Turns a failed cloud write into a [`StoreError`].
    fn failed(&self, key: &str, e: object_store::Error) -> StoreError {
        StoreError::from_object_store(&self.config.name, key, e)
    }

    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    /// The full store key for a relative key, after checking every component.
    fn full_key(&self, rel: &str) -> Result<String> {
        if !rel.is_empty() && !rel.split('/').all(valid_component) {
            return Err(StoreError::InvalidKey {
                backend: self.config.name.clone(),
                key: rel.to_string(),
            });
        }
        Ok(format!("{}{rel}", self.config.prefix))
    }

    fn store_path(&self, rel: &str) -> Result<StorePath> {
        let full = self.full_key(rel)?;
        StorePath::parse(&full).map_err(|_| StoreError::InvalidKey {
            backend: self.config.name.clone(),
            key: rel.to_string(),
        })
    }

    /// Runs `f`; if the store rejected the token, refreshes it once and runs `f` again.
    async fn authed<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let r = f().await;
        if matches!(r, Err(StoreError::Denied { .. })) && self.store.refresh_credentials().await {
            return f().await;
        }
        r
    }

    /// Lists one page of the directory `dir` (a relative key, `""` for the backend's root),
    /// continuing from `token`. `max_keys` bounds the page (default [`LIST_PAGE_SIZE`]).
    /// Names that cannot be paths are left out, with one warning each.
    pub async fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: Option<usize>,
    ) -> Result<ListPage> {
        let dir = dir.trim_end_matches('/');
        let full = self.full_key(dir)?;
        let full = full.trim_end_matches('/');
        let max = max_keys.unwrap_or(LIST_PAGE_SIZE);
        let mut page = self
            .authed(|| self.store.list_page(full, token.clone(), max))
            .await?;
        let name = &self.config.name;
        page.dirs.retain(|n| self.warned.accept(name, dir, n));
        page.objects
            .retain(|(n, _)| self.warned.accept(name, dir, n));
        Ok(page)
    }

    /// The objects below directory key `dir` (`""` for the backend's root), one level or all
    /// levels deep, as (relative key, metadata). Keys that cannot be paths are left out (with
    /// a warning), as in listings through the mount.
    pub async fn list_files(
        &self,
        dir: &str,
        recursive: bool,
    ) -> Result<Vec<(String, ObjectInfo)>> {
        let join = |d: &str, n: &str| {
            if d.is_empty() {
                n.to_string()
            } else {
                format!("{d}/{n}")
            }
        };
        let mut out = Vec::new();
        let mut dirs = vec![dir.trim_end_matches('/').to_string()];
        while let Some(d) = dirs.pop() {
            let mut token = None;
            loop {
                let page = self.list_page(&d, token, None).await?;
                out.extend(page.objects.into_iter().map(|(n, i)| (join(&d, &n), i)));
                if recursive {
                    dirs.extend(page.dirs.iter().map(|n| join(&d, n)));
                }
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether anything exists below the directory key `dir`.
    pub async fn dir_exists(&self, dir: &str) -> Result<bool> {
        let dir = dir.trim_end_matches('/');
        let full = self.full_key(dir)?;
        let full = full.trim_end_matches('/');
        self.authed(|| self.store.any_below(full)).await
    }

    /// An object's metadata.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let full = self.full_key(key)?;
        self.authed(|| self.store.head(&full)).await
    }

    /// Reads `range` of the object, whole. With `etag`, the read fails with
    /// [`StoreError::PreconditionFailed`] if the object is no longer that version; a body
    /// shorter than the range is an error.
    pub async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<Bytes> {
        let want = range.end.saturating_sub(range.start);
        let mut stream = self.get_range_stream(key, range.clone(), etag).await?;
        let mut buf = bytes::BytesMut::with_capacity(want as usize);
        while let Some(c) = stream.next().await {
            buf.extend_from_slice(&c?);
        }
        if buf.len() as u64 != want {
            return Err(StoreError::ShortRead {
                backend: self.config.name.clone(),
                key: key.to_string(),
                asked: want,
                got: buf.len() as u64,
            });
        }
        Ok(buf.freeze())
    }

    /// Like [`Backend::get_range`], but yields the body as it arrives, so a caller can use
    /// the first bytes of a large range before the last ones are received and never holds
    /// the whole range in memory. The stream may end early; the caller checks the length.
    /// A body the store says is of another version than `etag` (a store or proxy that
    /// ignored `If-Match`) fails as [`StoreError::PreconditionFailed`].
    pub async fn get_range_stream(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let full = self.full_key(key)?;
        let body = self
            .authed(|| self.store.get(&full, range.clone(), etag))
            .await?;
        if let (Some(want), Some(got)) = (etag, &body.etag)
            && canonical_etag(want.to_string()) != canonical_etag(got.clone())
        {
            return Err(StoreError::PreconditionFailed {
                backend: self.config.name.clone(),
                key: key.to_string(),
            });
        }
        Ok(body.stream)
    }

    /// The backend's auth mode, identity and (with tokens) the current token's lifetime.
    pub fn auth_state(&self) -> auth::AuthState {
        if let Some(c) = &self.creds {
            return c.state();
        }
        let identity = match (&self.config.kind, self.config.auth) {
            (BackendKind::Local { .. }, _) => "local directory",
            (_, AuthMode::Emulator) => "the emulator's published development credentials",
            (_, AuthMode::Anonymous) => "none (unsigned requests)",
            (_, AuthMode::Environment) => "the cloud's environment variables",
            (_, AuthMode::WorkloadIdentity) => "federated token (workload identity)",
            (_, AuthMode::ManagedIdentity) => "managed identity",
            (_, AuthMode::SharedKey) => "a shared key from secret_file or secret_env",
            (_, AuthMode::Sas) => "a SAS token from secret_file or secret_env",
        };
        auth::AuthState {
            mode: self.config.auth.as_str().into(),
            identity: identity.into(),
            expires_in_seconds: None,
            refreshes: 0,
            failures: 0,
            last_error: None,
        }
    }

    /// Checks reachability with one list call bounded by `timeout`.
    pub async fn probe(&self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.dir_exists("")).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(StoreError::Timeout {
                backend: self.config.name.clone(),
                after: timeout,
            }),
        }
    }
}

#[cfg(test)]
mod etag_tests {
    use super::canonical_etag;

    #[test]
    fn listing_and_head_spellings_of_one_etag_are_equal() {
        for (listed, head) in [
            ("0x8DC0FFEE1234567", "\"0x8DC0FFEE1234567\""),
            (
                "\"9b2cf535f27731c974343645a3985328\"",
                "\"9b2cf535f27731c974343645a3985328\"",
            ),
            ("W/\"weak\"", "W/\"weak\""),
        ] {
            assert_eq!(
                canonical_etag(listed.to_string()),
                canonical_etag(head.to_string())
            );
            assert!(canonical_etag(listed.to_string()).ends_with('"'));
        }
    }
}
