//! A store in memory, for the filesystem core's tests: objects with versions and ETags,
//! overwrite and delete, writes through the [`Store`] trait (single and create-only PUTs,
//! multipart uploads whose parts stay invisible until completed, copies, deletes), and a
//! count of requests by kind.
//!
//! Every version ever written is kept (with its ETag `"v<N>"`, N counting writes across the
//! store), so a test can check that bytes a reader got belong to one version, and a
//! conditional read of an overwritten version fails as a real store's does. A listing is one
//! page by default; [`MemoryStore::with_page_size`] makes it page like a cloud listing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::store::{Body, PartFuture, Store, Upload};
use crate::{ListPage, ObjectInfo, Result, StoreError};

/// One version of an object.
#[derive(Debug, Clone)]
pub struct Version {
    pub etag: String,
    pub data: Bytes,
    pub mtime: SystemTime,
}

/// Requests answered, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    /// Bytes of GET bodies handed out.
    pub get_bytes: AtomicU64,
    /// Single PUTs and completed uploads (objects written through the trait).
    pub puts: AtomicU64,
    /// Upload parts stored.
    pub parts: AtomicU64,
    /// Uploads started and not yet completed or aborted.
    pub open_uploads: AtomicU64,
}

impl Counts {
    /// (list, head, get) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.list.load(Ordering::Relaxed),
            self.head.load(Ordering::Relaxed),
            self.get.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, Default)]
struct Objects {
    /// key → the current version, if the object exists.
    current: BTreeMap<String, Version>,
    /// Every version ever written, by ETag.
    history: BTreeMap<String, (String, Version)>,
    writes: u64,
}

impl Objects {
    /// Writes (or overwrites) `key`; the new version's ETag.
    fn write(&mut self, key: &str, data: Bytes) -> String {
        self.writes += 1;
        let v = Version {
            etag: format!("\"v{}\"", self.writes),
            data,
            mtime: SystemTime::now(),
        };
        self.history
            .insert(v.etag.clone(), (key.to_string(), v.clone()));
        let etag = v.etag.clone();
        self.current.insert(key.to_string(), v);
        etag
    }
}

/// A multipart upload into a [`MemoryStore`]: parts kept apart until completed.
#[derive(Debug)]
struct MemoryUpload {
    name: String,
    key: String,
    create_only: bool,
    objects: Arc<Mutex<Objects>>,
    counts: Arc<Counts>,
    /// Parts by number; each is filled when its future runs.
    parts: Arc<Mutex<Vec<Option<Bytes>>>>,
    done: bool,
}

#[async_trait]
impl Upload for MemoryUpload {
    fn part(&mut self, data: Bytes) -> PartFuture {
        let n = {
            let mut p = self.parts.lock();
            p.push(None);
            p.len() - 1
        };
        let (parts, counts) = (self.parts.clone(), self.counts.clone());
        Box::pin(async move {
            parts.lock()[n] = Some(data);
            counts.parts.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    async fn complete(&mut self) -> Result<()> {
        let parts = std::mem::take(&mut *self.parts.lock());
        let mut all = Vec::new();
        for p in parts {
            let Some(p) = p else {
                return Err(StoreError::Other {
                    backend: self.name.clone(),
                    message: format!("completing {}: a part was never stored", self.key),
                });
            };
            all.extend_from_slice(&p);
        }
        {
            let mut o = self.objects.lock();
            if self.create_only && o.current.contains_key(&self.key) {
                return Err(StoreError::AlreadyExists {
                    backend: self.name.clone(),
                    key: self.key.clone(),
                });
            }
            o.write(&self.key, all.into());
        }
        self.done = true;
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.counts.open_uploads.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        self.parts.lock().clear();
        if !std::mem::replace(&mut self.done, true) {
            self.counts.open_uploads.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Objects in memory.
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    objects: Arc<Mutex<Objects>>,
    page_size: Option<usize>,
    pub counts: Arc<Counts>,
}

impl MemoryStore {
    /// An empty store; `name` is the backend name its errors carry.
    pub fn new(name: &str) -> MemoryStore {
        MemoryStore {
            name: name.to_string(),
            objects: Arc::default(),
            page_size: None,
            counts: Arc::default(),
        }
    }

    /// Listings return at most `n` entries per page.
    pub fn with_page_size(mut self, n: usize) -> MemoryStore {
        self.page_size = Some(n.max(1));
        self
    }

    /// Writes (or overwrites) `key`; returns the new version's ETag.
    pub fn put(&self, key: &str, data: impl Into<Bytes>) -> String {
        self.objects.lock().write(key, data.into())
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        self.objects.lock().current.remove(key).is_some()
    }

    /// The current version of `key`.
    pub fn current(&self, key: &str) -> Option<Version> {
        self.objects.lock().current.get(key).cloned()
    }

    /// The version with `etag` (current or overwritten).
    pub fn version(&self, etag: &str) -> Option<Version> {
        self.objects
            .lock()
            .history
            .get(etag)
            .map(|(_, v)| v.clone())
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            backend: self.name.clone(),
            key: key.to_string(),
        }
    }

    fn exists(&self, key: &str) -> StoreError {
        StoreError::AlreadyExists {
            backend: self.name.clone(),
            key: key.to_string(),
        }
    }
}

fn info(v: &Version) -> ObjectInfo {
    ObjectInfo {
        size: v.data.len() as u64,
        mtime: v.mtime,
        etag: Some(v.etag.clone()),
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let limit = self.page_size.unwrap_or(usize::MAX).min(max_keys.max(1));
        let o = self.objects.lock();
        // Entries in key order: (name, Some(info)) for objects, (name, None) for prefixes.
        let mut entries: Vec<(String, Option<ObjectInfo>)> = Vec::new();
        let mut marker = false;
        for (key, v) in o.current.range(prefix.clone()..) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            if rest.is_empty() {
                marker = true;
                continue;
            }
            match rest.split_once('/') {
                Some((d, _)) => {
                    if entries.last().is_none_or(|(n, i)| n != d || i.is_some()) {
                        entries.push((d.to_string(), None));
                    }
                }
                None => entries.push((rest.to_string(), Some(info(v)))),
            }
        }
        // The token is the number of entries already returned.
        let start = token
            .as_deref()
            .map_or(0, |t| t.parse().unwrap_or(usize::MAX))
            .min(entries.len());
        let mut page = ListPage {
            marker,
            ..Default::default()
        };
        let end = (start + limit).min(entries.len());
        for (name, i) in &entries[start..end] {
            match i {
                Some(i) => page.objects.push((name.clone(), i.clone())),
                None => page.dirs.push(name.clone()),
            }
        }
        if end < entries.len() {
            page.next = Some(end.to_string());
        }
        Ok(page)
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.counts.head.fetch_add(1, Ordering::Relaxed);
        self.current(key)
            .map(|v| info(&v))
            .ok_or_else(|| self.not_found(key))
    }

    async fn get(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        let v = self.current(key).ok_or_else(|| self.not_found(key))?;
        if etag.is_some_and(|e| e != v.etag) {
            return Err(StoreError::PreconditionFailed {
                backend: self.name.clone(),
                key: key.to_string(),
            });
        }
        let len = v.data.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        let bytes = v.data.slice(start as usize..end as usize);
        self.counts
            .get_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(Body {
            etag: Some(v.etag),
            stream: futures::stream::once(async move { Ok(bytes) }).boxed(),
        })
    }

    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        let mut o = self.objects.lock();
        if create_only && o.current.contains_key(key) {
            return Err(self.exists(key));
        }
        o.write(key, data);
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>> {
        self.counts.open_uploads.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(MemoryUpload {
            name: self.name.clone(),
            key: key.to_string(),
            create_only,
            objects: self.objects.clone(),
            counts: self.counts.clone(),
            parts: Arc::default(),
            done: false,
        }))
    }

    async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()> {
        let mut o = self.objects.lock();
        let data = o
            .current
            .get(from)
            .map(|v| v.data.clone())
            .ok_or_else(|| self.not_found(from))?;
        if create_only && o.current.contains_key(to) {
            return Err(self.exists(to));
        }
        o.write(to, data);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.objects.lock().current.remove(key) {
            Some(_) => Ok(()),
            None => Err(self.not_found(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(s: &MemoryStore, dir: &str) -> (Vec<String>, Vec<String>, usize) {
        let (mut dirs, mut files, mut pages) = (Vec::new(), Vec::new(), 0);
        let mut token = None;
        loop {
            let p = s.list_page(dir, token, 1000).await.expect("list");
            pages += 1;
            dirs.extend(p.dirs);
            files.extend(p.objects.into_iter().map(|(n, _)| n));
            token = p.next;
            if token.is_none() {
                return (dirs, files, pages);
            }
        }
    }

    #[tokio::test]
    async fn lists_one_level_in_pages() {
        let s = MemoryStore::new("m").with_page_size(2);
        for k in ["a/1", "a/2", "a/b/3", "a/c/4", "a/c/5", "a/d", "z"] {
            s.put(k, vec![1u8]);
        }
        let (dirs, files, pages) = all(&s, "a").await;
        assert_eq!(dirs, ["b", "c"]);
        assert_eq!(files, ["1", "2", "d"]);
        assert_eq!(pages, 3);
        let (dirs, files, _) = all(&s, "").await;
        assert_eq!(
            (dirs, files),
            (vec!["a".to_string()], vec!["z".to_string()])
        );
    }

    #[tokio::test]
    async fn uploads_are_invisible_until_completed_and_create_only_writes_refuse_a_name() {
        let s = MemoryStore::new("m");
        let mut u = Store::upload(&s, "ck/model.pt", true)
            .await
            .expect("upload");
        let first = u.part(Bytes::from_static(b"hello "));
        let second = u.part(Bytes::from_static(b"world"));
        second.await.expect("part 2");
        first.await.expect("part 1");
        assert!(
            s.current("ck/model.pt").is_none(),
            "not visible before completion"
        );
        assert_eq!(s.counts.open_uploads.load(Ordering::Relaxed), 1);
        u.complete().await.expect("complete");
        assert_eq!(
            s.current("ck/model.pt").expect("visible").data,
            &b"hello world"[..]
        );
        assert_eq!(s.counts.open_uploads.load(Ordering::Relaxed), 0);

        let mut gone = Store::upload(&s, "ck/other.pt", false)
            .await
            .expect("upload");
        gone.part(Bytes::from_static(b"x")).await.expect("part");
        gone.abort().await.expect("abort");
        assert!(s.current("ck/other.pt").is_none());
        assert_eq!(s.counts.open_uploads.load(Ordering::Relaxed), 0);

        assert!(matches!(
            Store::put(&s, "ck/model.pt", Bytes::from_static(b"again"), true).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        Store::put(&s, "ck/model.pt", Bytes::from_static(b"again"), false)
            .await
            .expect("overwrite");
        Store::copy(&s, "ck/model.pt", "ck/final.pt", true)
            .await
            .expect("copy");
        assert!(matches!(
            Store::copy(&s, "ck/model.pt", "ck/final.pt", true).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        Store::delete(&s, "ck/model.pt").await.expect("delete");
        assert_eq!(
            s.current("ck/final.pt").expect("copied").data,
            &b"again"[..]
        );
        assert!(s.current("ck/model.pt").is_none());
    }

    #[tokio::test]
    async fn conditional_reads_see_overwrites() {
        let s = MemoryStore::new("m");
        let v1 = s.put("k", b"one".to_vec());
        let body = s.get("k", 1..3, Some(&v1)).await.expect("v1");
        let bytes: Vec<Bytes> = body.stream.map(|c| c.expect("chunk")).collect().await;
        assert_eq!(bytes.concat(), b"ne");
        let v2 = s.put("k", b"two!".to_vec());
        assert!(matches!(
            s.get("k", 0..3, Some(&v1)).await,
            Err(StoreError::PreconditionFailed { .. })
        ));
        assert_eq!(s.version(&v1).expect("kept").data, &b"one"[..]);
        assert_eq!(s.head("k").await.expect("head").etag, Some(v2));
        assert!(s.delete("k"));
        assert!(matches!(
            s.head("k").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(s.counts.get(), (0, 2, 2));
    }
}
