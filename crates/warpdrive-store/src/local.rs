//! The local directory backend, on `std::fs`.
//!
//! Keys map to files below `root` byte for byte. Symbolic links are followed only when their
//! target stays below `root`, so a link cannot expose the rest of the machine. The ETag of a
//! file is built from its inode, mtime and size: any rewrite of the file changes it. A listing
//! returns one page: reading a local directory costs no round trips.
//!
//! Writes go to a hidden file beside the final name (`.NAME.N.warpdrive-part`, never listed),
//! are synced, and take the name by `rename` (replacing) or `link` (create-only: the link
//! fails if the name exists), so a reader never sees part of a file.

use std::fs;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::store::{Body, PartFuture, Store, Upload};
use crate::{ListPage, ObjectInfo, Result, StoreError};

#[derive(Debug, Clone)]
pub(crate) struct LocalDir {
    name: String,
    root: PathBuf,
}

fn etag_of(m: &fs::Metadata) -> String {
    format!(
        "\"{:x}-{:x}-{:x}\"",
        m.ino(),
        m.mtime_nsec() as u64 ^ ((m.mtime() as u64) << 30),
        m.size()
    )
}

fn info_of(m: &fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        size: m.len(),
        mtime: m.modified().unwrap_or(std::time::UNIX_EPOCH),
        etag: Some(etag_of(m)),
    }
}

/// Suffix of files being written; listings skip them.
const PART_SUFFIX: &str = ".warpdrive-part";

/// Numbers the part files of this process's writes apart.
static PART_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A new hidden file beside `path` to write it in (listings skip it).
pub(crate) fn part_file(path: &Path) -> PathBuf {
    let n = PART_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(
        ".{}.{}-{n}{PART_SUFFIX}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ))
}

impl LocalDir {
    /// The path of `key`, and a new hidden file beside it to write it in (its directories
    /// made).
    fn new_part(&self, key: &str) -> Result<(PathBuf, PathBuf, fs::File)> {
        let path = self.root.join(key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| self.io(key, e))?;
        }
        let part = part_file(&path);
        let f = fs::File::create(&part).map_err(|e| self.io(key, e))?;
        Ok((path, part, f))
    }

    /// Gives the synced file `part` the name `path` (create-only: fails if it exists).
    fn publish(&self, part: &Path, path: &Path, key: &str, create_only: bool) -> Result<()> {
        let r = if create_only {
            fs::hard_link(part, path).and_then(|()| fs::remove_file(part))
        } else {
            fs::rename(part, path)
        };
        r.map_err(|e| {
            let _ = fs::remove_file(part);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                StoreError::AlreadyExists {
                    backend: self.name.clone(),
                    key: key.to_string(),
                }
            } else {
                self.io(key, e)
            }
        })
    }

    pub(crate) fn new(name: &str, root: &Path) -> LocalDir {
        LocalDir {
            name: name.to_string(),
            root: root.to_path_buf(),
        }
    }

    /// The file of a (full) key.
    pub(crate) fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io(&self, what: &str, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                backend: self.name.clone(),
                key: what.to_string(),
            }
        } else {
            StoreError::Io {
                backend: self.name.clone(),
                message: format!("{what}: {e}"),
            }
        }
    }

    /// Metadata of `path`, following a symlink only if it stays inside the root.
    fn contained_metadata(&self, path: &Path, key: &str) -> Result<fs::Metadata> {
        let lm = fs::symlink_metadata(path).map_err(|e| self.io(key, e))?;
        if lm.file_type().is_symlink() {
            let root = fs::canonicalize(&self.root).map_err(|e| self.io("root", e))?;
            let target = fs::canonicalize(path).map_err(|e| self.io(key, e))?;
            if !target.starts_with(&root) {
                return Err(StoreError::InvalidKey {
                    backend: self.name.clone(),
                    key: key.to_string(),
                });
            }
        }
        fs::metadata(path).map_err(|e| self.io(key, e))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Cancelled {
                backend: self.name.clone(),
                message: format!("worker failed: {e}"),
            })?
    }

    async fn list(&self, dir: &str) -> Result<ListPage> {
        let me = self.clone();
        let dir_owned = dir.to_string();
        let entries = self
            .blocking(move || {
                let path = me.root.join(&dir_owned);
                let md = me.contained_metadata(&path, &dir_owned)?;
                if !md.is_dir() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for entry in fs::read_dir(&path).map_err(|e| me.io(&dir_owned, e))? {
                    let entry = entry.map_err(|e| me.io(&dir_owned, e))?;
                    let name = match entry.file_name().into_string() {
                        Ok(n) if n.ends_with(PART_SUFFIX) => continue,
                        Ok(n) => n,
                        Err(raw) => {
                            tracing::warn!(backend = me.name, dir = dir_owned, name = ?raw, "skipping a file whose name is not UTF-8");
                            continue;
                        }
                    };
                    let key = if dir_owned.is_empty() { name.clone() } else { format!("{dir_owned}/{name}") };
                    match me.contained_metadata(&entry.path(), &key) {
                        Ok(m) => out.push((name, m)),
                        Err(e) => tracing::warn!(backend = me.name, key, error = %e, "skipping an entry that cannot be served"),
                    }
                }
                Ok(out)
            })
            .await?;
        let mut page = ListPage::default();
        for (name, m) in entries {
            if m.is_dir() {
                page.dirs.push(name);
            } else if m.is_file() {
                page.objects.push((name, info_of(&m)));
            }
        }
        page.dirs.sort();
        page.objects.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(page)
    }

    async fn head_of(&self, key: &str) -> Result<ObjectInfo> {
        let me = self.clone();
        let key = key.to_string();
        self.blocking(move || {
            let m = me.contained_metadata(&me.root.join(&key), &key)?;
            if !m.is_file() {
                return Err(StoreError::NotFound {
                    backend: me.name.clone(),
                    key,
                });
            }
            Ok(info_of(&m))
        })
        .await
    }

    async fn read(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Bytes> {
        let me = self.clone();
        let key = key.to_string();
        let etag = etag.map(str::to_string);
        self.blocking(move || {
            let path = me.root.join(&key);
            me.contained_metadata(&path, &key)?;
            let f = fs::File::open(&path).map_err(|e| me.io(&key, e))?;
            let m = f.metadata().map_err(|e| me.io(&key, e))?;
            if etag.is_some_and(|want| etag_of(&m) != want) {
                return Err(StoreError::PreconditionFailed {
                    backend: me.name.clone(),
                    key,
                });
            }
            let end = range.end.min(m.len());
            if range.start >= end {
                return Ok(Bytes::new());
            }
            let mut buf = vec![0u8; (end - range.start) as usize];
            f.read_exact_at(&mut buf, range.start)
                .map_err(|e| me.io(&key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }
}

#[async_trait]
impl Store for LocalDir {
    /// One page: reading a local directory costs no round trips.
    async fn list_page(&self, dir: &str, _token: Option<String>, _max: usize) -> Result<ListPage> {
        self.list(dir).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.head_of(key).await
    }

    async fn get(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body> {
        let bytes = self.read(key, range, etag).await?;
        Ok(Body {
            // Checked against the file itself above.
            etag: etag.map(str::to_string),
            stream: futures::stream::once(async move { Ok(bytes) }).boxed(),
        })
    }

    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        let me = self.clone();
        let key = key.to_string();
        self.blocking(move || {
            let (path, part, f) = me.new_part(&key)?;
            let written = std::io::Write::write_all(&mut &f, &data).and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = fs::remove_file(&part);
                return Err(me.io(&key, e));
            }
            me.publish(&part, &path, &key, create_only)
        })
        .await
    }

    async fn upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>> {
        let me = self.clone();
        let key = key.to_string();
        self.blocking(move || {
            let (path, part, file) = me.new_part(&key)?;
            Ok(Box::new(LocalUpload {
                dir: me,
                key,
                path,
                part,
                file: std::sync::Arc::new(file),
                next: 0,
                create_only,
            }) as Box<dyn Upload>)
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()> {
        let me = self.clone();
        let (from, to) = (from.to_string(), to.to_string());
        self.blocking(move || {
            let src = me.root.join(&from);
            me.contained_metadata(&src, &from)?;
            let path = me.root.join(&to);
            let part = part_file(&path);
            if let Err(e) = fs::copy(&src, &part).and_then(|_| fs::File::open(&part)?.sync_all()) {
                let _ = fs::remove_file(&part);
                return Err(me.io(&from, e));
            }
            me.publish(&part, &path, &to, create_only)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let me = self.clone();
        let key = key.to_string();
        self.blocking(move || fs::remove_file(me.root.join(&key)).map_err(|e| me.io(&key, e)))
            .await
    }
}

/// A multipart upload into a local directory: parts written at their offsets in a hidden
/// file, which takes the name at completion.
#[derive(Debug)]
struct LocalUpload {
    dir: LocalDir,
    key: String,
    path: PathBuf,
    part: PathBuf,
    file: std::sync::Arc<fs::File>,
    /// Where the next part goes.
    next: u64,
    /// The name is taken only if it is free (a link).
    create_only: bool,
}

#[async_trait]
impl Upload for LocalUpload {
    fn part(&mut self, data: Bytes) -> PartFuture {
        let (file, at, dir, key) = (
            self.file.clone(),
            self.next,
            self.dir.clone(),
            self.key.clone(),
        );
        self.next += data.len() as u64;
        Box::pin(async move {
            dir.clone()
                .blocking(move || file.write_all_at(&data, at).map_err(|e| dir.io(&key, e)))
                .await
        })
    }

    async fn complete(&mut self) -> Result<()> {
        let (dir, key, path, part, file, create_only) = (
            self.dir.clone(),
            self.key.clone(),
            self.path.clone(),
            self.part.clone(),
            self.file.clone(),
            self.create_only,
        );
        self.dir
            .blocking(move || {
                file.sync_all().map_err(|e| dir.io(&key, e))?;
                dir.publish(&part, &path, &key, create_only)
            })
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        let _ = fs::remove_file(&self.part);
        Ok(())
    }
}
