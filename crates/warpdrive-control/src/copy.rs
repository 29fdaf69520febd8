//! `copy` and `move`: objects or whole prefixes from one backend to another, streamed
//! (ranged GETs in, multipart uploads out: a few parts in memory per object, whatever its
//! size), each copy verified by reading it back and comparing SHA-256 before its source may
//! be deleted.
//!
//! Resumable: every verified copy is appended to a journal in the cache directory
//! (`copies/<id>.journal`, one JSON line each, synced). A re-run of the same SRC → DST skips
//! objects the journal lists whose source version and destination size still match, so a
//! run killed half-way and run again copies nothing twice.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warpdrive_config::Config;
use warpdrive_store::{Backend, ObjectInfo, PART_SIZE, StoreError};

use crate::Target;
use crate::api::{CopyRequest, Job};
use crate::jobs::{DEFAULT_WARM_PARALLEL, JobCell, Jobs};

/// Plan lines kept by a dry run.
const PLAN_LINES: usize = 1000;

/// One verified copy, as the journal records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    src: String,
    etag: Option<String>,
    size: u64,
    dst: String,
    sha256: String,
}

/// What a copy job works on.
struct Plan {
    src: Arc<Backend>,
    dst: Arc<Backend>,
    /// (source key, destination key, source metadata).
    objects: Vec<(String, String, ObjectInfo)>,
    journal: PathBuf,
}

fn backend(backends: &[Arc<Backend>], name: &str) -> Result<Arc<Backend>> {
    backends
        .iter()
        .find(|b| b.name() == name)
        .cloned()
        .ok_or_else(|| anyhow!("no backend named `{name}`"))
}

fn join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

/// The journal of copies from `src` to `dst`.
fn journal_path(cache_dir: &Path, src: &Target, dst: &Target) -> PathBuf {
    let id = Sha256::digest(format!(
        "{}/{} -> {}/{}",
        src.backend.as_deref().unwrap_or(""),
        src.dir(),
        dst.backend.as_deref().unwrap_or(""),
        dst.dir()
    ));
    cache_dir
        .join("copies")
        .join(format!("{}.journal", hex::encode(&id[..8])))
}

/// Resolves SRC and DST and lists what to copy.
async fn plan(config: &Config, backends: &[Arc<Backend>], req: &CopyRequest) -> Result<Plan> {
    let src_t = Target::resolve(config, Some(&req.src))?;
    let dst_t = Target::resolve(config, Some(&req.dst))?;
    let (Some(sb), Some(db)) = (&src_t.backend, &dst_t.backend) else {
        bail!("SRC and DST must each name a backend (wd://BACKEND/PREFIX or BACKEND/PREFIX)");
    };
    let (sdir, ddir) = (src_t.dir().to_string(), dst_t.dir().to_string());
    if sb == db {
        use warpdrive_cache::in_dir;
        if in_dir(&sdir, &ddir) || in_dir(&ddir, &sdir) {
            bail!(
                "{} and {} overlap; copy to a place outside the source",
                req.src,
                req.dst
            );
        }
    }
    let src = backend(backends, sb)?;
    let dst = backend(backends, db)?;
    let single = if sdir.is_empty() {
        None
    } else {
        match src.head(&sdir).await {
            Ok(i) => Some(i),
            Err(StoreError::NotFound { .. } | StoreError::InvalidKey { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let objects = match single {
        Some(info) => {
            // One object: to DST itself, or into DST when DST names a directory.
            let base = sdir.rsplit('/').next().unwrap_or(&sdir).to_string();
            let into_dir = dst_t.prefix.is_empty()
                || dst_t.prefix.ends_with('/')
                || !dst
                    .list_files(&ddir, false)
                    .await
                    .unwrap_or_default()
                    .is_empty();
            let dkey = if into_dir {
                join(&ddir, &base)
            } else {
                ddir.clone()
            };
            vec![(sdir.clone(), dkey, info)]
        }
        None => {
            let files = src.list_files(&sdir, true).await?;
            if files.is_empty() {
                bail!("{}: nothing there to copy", req.src);
            }
            files
                .into_iter()
                .map(|(k, info)| {
                    let rel = if sdir.is_empty() {
                        k.clone()
                    } else {
                        k[sdir.len() + 1..].to_string()
                    };
                    (k, join(&ddir, &rel), info)
                })
                .collect()
        }
    };
    // Every destination key stays inside DST: no empty, `.` or `..` component.
    for (_, d, _) in &objects {
        let rest = if ddir.is_empty() {
            d.as_str()
        } else {
            &d[ddir.len()..]
        };
        if !d.starts_with(&ddir)
            || rest
                .split('/')
                .filter(|c| !c.is_empty())
                .any(|c| c == "." || c == "..")
        {
            bail!("{d} would land outside {}; refused", req.dst);
        }
    }
    Ok(Plan {
        src,
        dst,
        objects,
        journal: journal_path(&config.cache.dir, &src_t, &dst_t),
    })
}

fn load_journal(path: &Path) -> HashMap<String, Entry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    // A line cut short by a crash is ignored: that copy is simply made again.
    text.lines()
        .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        .map(|e| (e.src.clone(), e))
        .collect()
}

/// The object read in parts of [`PART_SIZE`], hashed as it passes.
fn read_stream(
    b: Arc<Backend>,
    key: String,
    info: &ObjectInfo,
    hasher: Arc<Mutex<Sha256>>,
    on_bytes: impl Fn(u64) + Send + Sync + 'static,
    cell: Arc<JobCell>,
) -> futures::stream::BoxStream<'static, warpdrive_store::Result<Bytes>> {
    let size = info.size;
    let etag = info.etag.clone();
    let name = b.name().to_string();
    let ranges: Vec<std::ops::Range<u64>> = (0..size)
        .step_by(PART_SIZE)
        .map(|s| s..(s + PART_SIZE as u64).min(size))
        .collect();
    futures::stream::iter(ranges)
        .then(move |r| {
            let (b, key, etag) = (b.clone(), key.clone(), etag.clone());
            async move { b.get_range_stream(&key, r, etag.as_deref()).await }
        })
        .try_flatten()
        .map(move |c| {
            if cell.cancel.load(Ordering::Relaxed) {
                return Err(StoreError::Cancelled {
                    backend: name.clone(),
                    message: "cancelled".into(),
                });
            }
            let c = c?;
            hasher.lock().update(&c);
            on_bytes(c.len() as u64);
            Ok(c)
        })
        .boxed()
}

/// Copies one object and verifies it; returns its journal entry.
async fn copy_one(
    plan: &Plan,
    (skey, dkey, info): &(String, String, ObjectInfo),
    cell: &Arc<JobCell>,
) -> Result<Entry> {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let c2 = cell.clone();
    let stream = read_stream(
        plan.src.clone(),
        skey.clone(),
        info,
        hasher.clone(),
        move |n| {
            c2.update(|j| {
                j.bytes_fetched += n;
                j.bytes_written += n;
                j.bytes_done += n;
            })
        },
        cell.clone(),
    );
    let written = plan.dst.put_stream(dkey, info.size, stream).await?;
    if written != info.size {
        bail!("read {written} bytes of {skey}, expected {}", info.size);
    }
    let sha = hex::encode(hasher.lock().clone().finalize());
    // Verify: the destination's size, then its bytes read back.
    let d = plan.dst.head(dkey).await?;
    if d.size != info.size {
        bail!(
            "{dkey}: the destination holds {} bytes, expected {}",
            d.size,
            info.size
        );
    }
    let back = Arc::new(Mutex::new(Sha256::new()));
    let mut s = read_stream(
        plan.dst.clone(),
        dkey.clone(),
        &d,
        back.clone(),
        |_| {},
        cell.clone(),
    );
    while let Some(c) = s.next().await {
        c?;
    }
    let back = hex::encode(back.lock().clone().finalize());
    if back != sha {
        bail!(
            "{dkey}: read back with SHA-256 {back}, but the source had {sha}; the copy is not trusted"
        );
    }
    Ok(Entry {
        src: skey.clone(),
        etag: info.etag.clone(),
        size: info.size,
        dst: dkey.clone(),
        sha256: sha,
    })
}

/// Runs a copy job to its end.
async fn run(
    config: Arc<Config>,
    backends: Vec<Arc<Backend>>,
    req: CopyRequest,
    cell: Arc<JobCell>,
) {
    let plan = match plan(&config, &backends, &req).await {
        Ok(p) => p,
        Err(e) => {
            cell.error(format!("{e:#}"));
            cell.update(|j| j.state = crate::api::JobState::Failed);
            return;
        }
    };
    let done = load_journal(&plan.journal);
    let is_done = |skey: &str, info: &ObjectInfo| {
        done.get(skey)
            .is_some_and(|e| e.etag == info.etag && e.size == info.size)
    };
    cell.update(|j| {
        j.state = crate::api::JobState::Running;
        j.objects_total = plan.objects.len() as u64;
        j.bytes_total = plan.objects.iter().map(|(_, _, i)| i.size).sum();
        j.dry_run = req.dry_run;
    });
    if req.dry_run {
        cell.update(|j| {
            for (s, d, i) in &plan.objects {
                if is_done(s, i) {
                    j.objects_skipped += 1;
                } else if j.plan.len() < PLAN_LINES {
                    j.plan.push(format!(
                        "{}/{s} -> {}/{d} ({} bytes)",
                        plan.src.name(),
                        plan.dst.name(),
                        i.size
                    ));
                }
            }
        });
        return;
    }
    if let Some(dir) = plan.journal.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        cell.error(format!("creating {}: {e}", dir.display()));
        cell.update(|j| j.state = crate::api::JobState::Failed);
        return;
    }
    let journal = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.journal)
    {
        Ok(f) => Mutex::new(f),
        Err(e) => {
            cell.error(format!("opening {}: {e}", plan.journal.display()));
            cell.update(|j| j.state = crate::api::JobState::Failed);
            return;
        }
    };
    let parallel = req.parallel.unwrap_or(DEFAULT_WARM_PARALLEL).max(1);
    let (plan, journal) = (&plan, &journal);
    futures::stream::iter(plan.objects.iter())
        .for_each_concurrent(parallel, |obj| {
            let cell = cell.clone();
            let is_done = &is_done;
            async move {
                if cell.cancel.load(Ordering::Relaxed) {
                    return;
                }
                let (skey, dkey, info) = obj;
                let skipped = is_done(skey, info)
                    && plan.dst.head(dkey).await.is_ok_and(|d| d.size == info.size);
                if skipped {
                    cell.update(|j| {
                        j.objects_skipped += 1;
                        j.bytes_done += info.size;
                    });
                } else {
                    let before = cell.job.lock().bytes_done;
                    match copy_one(plan, obj, &cell).await {
                        Ok(entry) => {
                            let line = serde_json::to_string(&entry).unwrap_or_default();
                            let mut f = journal.lock();
                            let w = writeln!(f, "{line}").and_then(|_| f.sync_data());
                            if let Err(e) = w {
                                cell.error(format!("recording the copy of {skey}: {e}"));
                            }
                        }
                        Err(e) => {
                            // Take back the progress of a copy that did not complete.
                            cell.update(|j| j.bytes_done = j.bytes_done.min(before));
                            if !cell.cancel.load(Ordering::Relaxed) {
                                cell.error(format!("{}/{skey}: {e:#}", plan.src.name()));
                            }
                            return;
                        }
                    }
                }
                if req.delete_source {
                    match plan.src.delete(skey).await {
                        Ok(()) => cell.update(|j| j.objects_deleted += 1),
                        Err(e) => cell.error(format!(
                            "{}/{skey} was copied and verified but could not be deleted: {e}",
                            plan.src.name()
                        )),
                    }
                }
                cell.update(|j| j.objects_done += 1);
            }
        })
        .await;
}

impl Jobs {
    /// Starts a copy job on the current runtime and returns its record.
    pub fn start_copy(
        &self,
        config: Arc<Config>,
        backends: Vec<Arc<Backend>>,
        req: CopyRequest,
    ) -> Job {
        let kind = if req.delete_source { "move" } else { "copy" };
        let cell = self.create(kind, vec![req.src.clone(), req.dst.clone()]);
        let job = cell.job.lock().clone();
        tokio::spawn(async move {
            run(config, backends, req, cell.clone()).await;
            Jobs::finish(&cell);
        });
        job
    }
}

/// Checks a copy request before a job is started for it.
pub fn check(config: &Config, req: &CopyRequest) -> Result<()> {
    for p in [&req.src, &req.dst] {
        let t = Target::resolve(config, Some(p))?;
        if t.backend.is_none() {
            bail!("{p}: name a backend (wd://BACKEND/PREFIX or BACKEND/PREFIX)");
        }
    }
    Ok(())
}
