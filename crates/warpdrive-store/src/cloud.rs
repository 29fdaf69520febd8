//! Azure, S3 and GCS through `object_store`: the cloud [`Store`].
//!
//! Requests go through the clients [`crate::builder`] makes, whose HTTP layer
//! ([`crate::attempts`]) counts and times every attempt, applies the retry policy and notes
//! the checksums answers carry; this module turns the clients' answers into the store
//! trait's: a listing page with names relative to the listed directory, metadata with the
//! canonical ETag spelling, and a body that says which version it is.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use warpdrive_metrics::{BackendMetrics, ErrorKind};

use crate::checksum::{Known, Seen};
use crate::store::{Body, PartFuture, Store, Upload};
use crate::{ListPage, ObjectInfo, Result, StoreError, canonical_etag};

/// One cloud bucket or container.
pub(crate) struct CloudStore {
    pub name: String,
    /// The bucket or container: checksums seen are found by it and the key.
    pub bucket: String,
    pub store: Arc<dyn ObjectStore>,
    pub lister: Arc<dyn PaginatedListStore>,
    /// With `auth: managed_identity` or `workload_identity`: the token and its refresher.
    pub creds: Option<Arc<crate::auth::Credentials>>,
    pub seen: Arc<Seen>,
    /// Failures while a body streams are counted here (attempts are counted in the HTTP
    /// layer).
    pub metrics: BackendMetrics,
    /// GCS: writes go through the JSON API ([`crate::gcs`]).
    pub gcs: Option<Arc<crate::gcs::GcsJson>>,
}

impl std::fmt::Debug for CloudStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudStore")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// The class of a failure while a response body streams.
fn classify(e: &object_store::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            return crate::attempts::transport_kind(h);
        }
        source = s.source();
    }
    ErrorKind::Other
}

impl CloudStore {
    fn failed(&self, key: &str, e: object_store::Error) -> StoreError {
        StoreError::from_object_store(&self.name, key, e)
    }

    fn path(&self, key: &str) -> Result<StorePath> {
        StorePath::parse(key).map_err(|_| StoreError::InvalidKey {
            backend: self.name.clone(),
            key: key.to_string(),
        })
    }
}

impl CloudStore {
    /// One list request under `prefix` (for directory `dir`, which errors name).
    async fn list(
        &self,
        dir: &str,
        prefix: Option<&str>,
        opts: PaginatedListOptions,
    ) -> Result<object_store::list::PaginatedListResult> {
        self.lister
            .list_paginated(prefix, opts)
            .await
            .map_err(|e| self.failed(dir, e))
    }
}

#[async_trait]
impl Store for CloudStore {
    async fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        let prefix = (!dir.is_empty()).then(|| format!("{dir}/"));
        let opts = PaginatedListOptions {
            delimiter: Some("/".into()),
            max_keys: Some(max_keys),
            page_token: token,
            ..Default::default()
        };
        let r = self.list(dir, prefix.as_deref(), opts).await?;
        let strip = prefix.as_deref().unwrap_or("");
        let mut page = ListPage {
            next: r.page_token.filter(|t| !t.is_empty()),
            ..Default::default()
        };
        for p in r.result.common_prefixes {
            let raw = p.as_ref();
            let name = raw.strip_prefix(strip).unwrap_or(raw).trim_end_matches('/');
            page.dirs.push(name.to_string());
        }
        for o in r.result.objects {
            let Some(name) = o.location.as_ref().strip_prefix(strip) else {
                continue;
            };
            // A directory marker object (`dir/`) lists as the directory itself.
            if name.is_empty() {
                page.marker = true;
                continue;
            }
            page.objects.push((
                name.to_string(),
                ObjectInfo {
                    size: o.size,
                    mtime: o.last_modified.into(),
                    etag: o.e_tag.map(canonical_etag),
                },
            ));
        }
        Ok(page)
    }

    async fn any_below(&self, dir: &str) -> Result<bool> {
        let prefix = (!dir.is_empty()).then(|| format!("{dir}/"));
        let opts = PaginatedListOptions {
            delimiter: None,
            max_keys: Some(1),
            ..Default::default()
        };
        let r = self.list(dir, prefix.as_deref(), opts).await?;
        Ok(!r.result.objects.is_empty() || !r.result.common_prefixes.is_empty())
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let m = self
            .store
            .head(&self.path(key)?)
            .await
            .map_err(|e| self.failed(key, e))?;
        Ok(ObjectInfo {
            size: m.size,
            mtime: m.last_modified.into(),
            etag: m.e_tag.map(canonical_etag),
        })
    }

    async fn get(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body> {
        let opts = GetOptions {
            if_match: etag.map(str::to_string),
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&self.path(key)?, opts)
            .await
            .map_err(|e| self.failed(key, e))?;
        let served = r.meta.e_tag.clone().map(canonical_etag);
        let (name, k, metrics) = (self.name.clone(), key.to_string(), self.metrics.clone());
        let stream = r
            .into_stream()
            .map(move |c| {
                c.map_err(|e| {
                    metrics.error(classify(&e));
                    StoreError::from_object_store(&name, &k, e)
                })
            })
            .boxed();
        Ok(Body {
            etag: served,
            stream,
        })
    }

    fn checksum(&self, key: &str, etag: &str) -> Option<Known> {
        self.seen.get(&self.bucket, key, etag)
    }

    async fn refresh_credentials(&self) -> bool {
        let Some(c) = &self.creds else {
            return false;
        };
        tracing::info!(
            backend = self.name,
            "the store rejected the token; refreshing it once"
        );
        c.force_refresh().await.is_ok()
    }

    fn counts_own_errors(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        if let Some(g) = &self.gcs {
            return g.put(key, data, create_only).await;
        }
        let opts = object_store::PutOptions {
            mode: if create_only {
                object_store::PutMode::Create
            } else {
                object_store::PutMode::Overwrite
            },
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(key)?, data.into(), opts)
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers a failed `If-None-Match: *` 412, which the client calls a
            // precondition failure.
            Err(object_store::Error::Precondition { .. }) if create_only => {
                Err(StoreError::AlreadyExists {
                    backend: self.name.clone(),
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.failed(key, e)),
        }
    }

    async fn upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>> {
        if let Some(g) = &self.gcs {
            return Ok(Box::new(g.upload(key, create_only).await?));
        }
        // `object_store` offers no condition on completing a multipart upload: the caller
        // checks the name first (doc/SEMANTICS.md, "Writing").
        let inner = self
            .store
            .put_multipart(&self.path(key)?)
            .await
            .map_err(|e| self.failed(key, e))?;
        Ok(Box::new(CloudUpload {
            name: self.name.clone(),
            key: key.to_string(),
            inner,
        }))
    }

    async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()> {
        if let Some(g) = &self.gcs {
            return g.copy(from, to, create_only).await;
        }
        let (src, dst) = (self.path(from)?, self.path(to)?);
        let r = if create_only {
            self.store.copy_if_not_exists(&src, &dst).await
        } else {
            self.store.copy(&src, &dst).await
        };
        match r {
            Ok(()) => Ok(()),
            Err(object_store::Error::Precondition { .. }) if create_only => {
                Err(StoreError::AlreadyExists {
                    backend: self.name.clone(),
                    key: to.to_string(),
                })
            }
            Err(e) => Err(self.failed(to, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if let Some(g) = &self.gcs {
            return g.delete(key).await;
        }
        self.store
            .delete(&self.path(key)?)
            .await
            .map_err(|e| self.failed(key, e))
    }
}

/// A multipart upload through `object_store` (S3 multipart upload, Azure block list, GCS
/// XML multipart upload).
struct CloudUpload {
    name: String,
    key: String,
    inner: Box<dyn object_store::MultipartUpload>,
}

impl std::fmt::Debug for CloudUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudUpload")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl Upload for CloudUpload {
    fn part(&mut self, data: Bytes) -> PartFuture {
        let part = self.inner.put_part(data.into());
        let (name, key) = (self.name.clone(), self.key.clone());
        Box::pin(async move {
            part.await
                .map_err(|e| StoreError::from_object_store(&name, &key, e))
        })
    }

    async fn complete(&mut self) -> Result<()> {
        self.inner
            .complete()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(&self.name, &self.key, e))
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner
            .abort()
            .await
            .map_err(|e| StoreError::from_object_store(&self.name, &self.key, e))
    }
}
