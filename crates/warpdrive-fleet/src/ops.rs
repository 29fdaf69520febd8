//! What `warpdrive-ctl fleet` does to the tier itself: count what it holds per backend
//! ([`status`]), delete what was not written for a while ([`gc`]), and fill it from an origin
//! without any node reading the data ([`warm`]).
//!
//! The tier is listed under `wd1/`: each chunk's second key level names its source backend
//! (a hash of the backend's location, [`chunk::source_label`]), so chunks are counted per
//! backend without reading them. Leases are the keys ending in `.lease`; one older than
//! `lease_ttl` (by its write time) is expired. `warm` skips chunks already in the tier (a
//! HEAD each), so a stopped warm goes on where it stopped when run again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use warpdrive_api::api::{FleetGc as Gc, FleetHeld as Held, FleetStatus as Status};
use warpdrive_store::{Backend, StoreError};

use crate::chunk::{self, KEY_ROOT};
use crate::{SharedTier, lease};

/// Every object under the tier's chunk root: (key below the tier's prefix, size, written).
async fn list(tier: &SharedTier) -> Result<Vec<(String, u64, SystemTime)>, StoreError> {
    let files = tier.store.list_files(KEY_ROOT, true).await?;
    Ok(files
        .into_iter()
        .map(|(k, i)| (k, i.size, i.mtime))
        .collect())
}

/// Counts the tier's chunks per backend, and its leases.
pub async fn status(tier: &SharedTier) -> Result<Status, StoreError> {
    let labels: HashMap<String, String> = tier
        .sources
        .iter()
        .map(|(name, s)| (chunk::source_label(&s.kind, &s.location), name.clone()))
        .collect();
    let mut per: HashMap<String, Held> = HashMap::new();
    let mut other = Held::default();
    let (mut held, mut expired) = (0, 0);
    let now = SystemTime::now();
    for (key, size, written) in list(tier).await? {
        if lease::is_lease(&key) {
            let age = now.duration_since(written).unwrap_or_default();
            if age > tier.lease_ttl {
                expired += 1;
            } else {
                held += 1;
            }
            continue;
        }
        let label = key.split('/').nth(1).unwrap_or_default();
        let h = match labels.get(label) {
            Some(name) => per.entry(name.clone()).or_default(),
            None => &mut other,
        };
        h.chunks += 1;
        h.bytes += size;
    }
    let mut backends: Vec<Held> = tier
        .sources
        .keys()
        .map(|n| Held {
            backend: n.clone(),
            ..per.remove(n).unwrap_or_default()
        })
        .collect();
    backends.sort_by(|a, b| a.backend.cmp(&b.backend));
    Ok(Status {
        store: tier.describe(),
        mode: if tier.writes {
            "read_write"
        } else {
            "read_only"
        }
        .into(),
        chunk_size: tier.chunk_size,
        lease_ttl_seconds: tier.lease_ttl.as_secs(),
        backends,
        other,
        leases_held: held,
        leases_expired: expired,
    })
}

/// Deletes chunks not written for `older_than`, and expired leases.
pub async fn gc(tier: &SharedTier, older_than: Duration, dry_run: bool) -> Result<Gc, StoreError> {
    let now = SystemTime::now();
    let mut out = Gc {
        dry_run,
        ..Gc::default()
    };
    let mut doomed = Vec::new();
    for (key, size, written) in list(tier).await? {
        let age = now.duration_since(written).unwrap_or_default();
        let limit = if lease::is_lease(&key) {
            tier.lease_ttl
        } else {
            older_than
        };
        if age >= limit {
            out.deleted += 1;
            out.deleted_bytes += size;
            doomed.push(key);
        } else {
            out.kept += 1;
            out.kept_bytes += size;
        }
    }
    if !dry_run {
        let failed = futures::stream::iter(doomed)
            .map(|k| async move { tier.store.delete(&k).await.is_err() })
            .buffer_unordered(8)
            .filter(|f| futures::future::ready(*f))
            .count()
            .await as u64;
        out.failed = failed;
        out.deleted -= failed;
    }
    Ok(out)
}

/// Progress and outcome of `fleet warm`.
#[derive(Debug, Default, Serialize)]
pub struct Warmed {
    pub objects: AtomicU64,
    /// Chunks written to the tier.
    pub written: AtomicU64,
    pub written_bytes: AtomicU64,
    /// Chunks already there (by this or another node).
    pub present: AtomicU64,
    /// Chunks that could not be fetched or written (a re-run tries them again).
    pub failed: AtomicU64,
    /// Chunks in all.
    pub chunks: AtomicU64,
    /// The first failure, to show.
    #[serde(skip)]
    pub first_error: parking_lot::Mutex<Option<String>>,
}

impl Warmed {
    fn failed(&self, what: &str, key: &str, e: &StoreError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .get_or_insert_with(|| format!("{what} {key}: {e}"));
    }
}

/// Fills the tier with every chunk of every object under `prefix` of `origin` (backend
/// `name`) that it does not hold, `parallel` chunks at a time, without any local cache.
pub async fn warm(
    tier: &Arc<SharedTier>,
    name: &str,
    origin: &Backend,
    prefix: &str,
    parallel: usize,
    progress: &Warmed,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<(), StoreError> {
    let dir = prefix.trim_end_matches('/');
    let objects = match origin.list_files(dir, true).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut work = Vec::new();
    // A prefix that names one object warms that object.
    let objects = if objects.is_empty() && !dir.is_empty() {
        match origin.head(dir).await {
            Ok(info) => vec![(String::new(), info)],
            Err(StoreError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        }
    } else {
        objects
    };
    for (key, info) in objects {
        let key = if key.is_empty() { dir.to_string() } else { key };
        let Some(etag) = info.etag.clone() else {
            continue;
        };
        let Some(id) = tier.identity(name, &key, &etag, info.size) else {
            continue;
        };
        progress.objects.fetch_add(1, Ordering::Relaxed);
        for c in 0..id.chunks() {
            work.push((key.clone(), id.clone(), c));
        }
    }
    progress.chunks.store(work.len() as u64, Ordering::Relaxed);
    futures::stream::iter(work)
        .map(|(key, id, c)| async move {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            let ck = chunk::key(&id, c);
            if tier.store.head(&ck).await.is_ok() {
                progress.present.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let etag = id.etag.clone();
            let data: Bytes = match origin.get_range(&key, id.range(c), Some(&etag)).await {
                Ok(d) => d,
                Err(e) => {
                    progress.failed("reading", &key, &e);
                    return;
                }
            };
            let bytes = chunk::encode(&id, c, &data);
            let n = bytes.len() as u64;
            match tier.store.put_new(&ck, bytes).await {
                Ok(true) => {
                    progress.written.fetch_add(1, Ordering::Relaxed);
                    progress.written_bytes.fetch_add(n, Ordering::Relaxed);
                }
                Ok(false) => {
                    progress.present.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => progress.failed("writing a chunk of", &key, &e),
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    Ok(())
}
