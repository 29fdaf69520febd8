//! Long operations (`warm`) as jobs: an id, progress a client polls, and cancellation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use parking_lot::Mutex;
use warpdrive_config::Config;
use warpdrive_fs::{Fs, Listed};

use crate::Target;
use crate::api::{Job, JobState, WarmRequest};
use crate::report::now_secs;

/// Finished jobs kept for clients to read, oldest dropped first.
const KEEP_FINISHED: usize = 100;
/// Error messages kept per job (all are counted).
const KEEP_ERRORS: usize = 20;
/// Objects a warm fetches at once unless asked otherwise.
pub const DEFAULT_WARM_PARALLEL: usize = 4;

/// One job: its public record and its cancel flag.
#[derive(Debug)]
pub struct JobCell {
    pub job: Mutex<Job>,
    pub cancel: AtomicBool,
}

impl JobCell {
    pub(crate) fn update(&self, f: impl FnOnce(&mut Job)) {
        f(&mut self.job.lock());
    }

    pub(crate) fn error(&self, msg: String) {
        self.update(|j| {
            j.error_count += 1;
            if j.errors.len() < KEEP_ERRORS {
                j.errors.push(msg);
            }
        });
    }
}

/// Every job of this process.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<JobCell>>>,
}

impl Jobs {
    pub(crate) fn create(&self, kind: &str, paths: Vec<String>) -> Arc<JobCell> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let cell = Arc::new(JobCell {
            job: Mutex::new(Job {
                id,
                kind: kind.into(),
                state: JobState::Listing,
                paths,
                started_at: now_secs() as u64,
                finished_at: None,
                objects_total: 0,
                objects_done: 0,
                objects_skipped: 0,
                bytes_total: 0,
                bytes_done: 0,
                bytes_fetched: 0,
                error_count: 0,
                errors: Vec::new(),
                bytes_written: 0,
                objects_deleted: 0,
                dry_run: false,
                plan: Vec::new(),
            }),
            cancel: AtomicBool::new(false),
        });
        let mut jobs = self.jobs.lock();
        jobs.insert(id, cell.clone());
        let finished: Vec<u64> = jobs
            .iter()
            .filter(|(_, c)| c.job.lock().state.finished())
            .map(|(id, _)| *id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            jobs.remove(id);
        }
        cell
    }

    pub fn get(&self, id: u64) -> Option<Job> {
        self.jobs.lock().get(&id).map(|c| c.job.lock().clone())
    }

    pub fn list(&self) -> Vec<Job> {
        self.jobs
            .lock()
            .values()
            .map(|c| c.job.lock().clone())
            .collect()
    }

    pub fn running(&self) -> usize {
        self.jobs
            .lock()
            .values()
            .filter(|c| !c.job.lock().state.finished())
            .count()
    }

    /// Asks job `id` to stop; `false` if there is no such job.
    pub fn cancel(&self, id: u64) -> bool {
        match self.jobs.lock().get(&id) {
            Some(c) => {
                c.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Marks a job finished: done, or cancelled if asked to stop.
    pub(crate) fn finish(cell: &JobCell) {
        cell.update(|j| {
            if j.state != JobState::Failed {
                j.state = if cell.cancel.load(Ordering::Relaxed) {
                    JobState::Cancelled
                } else {
                    JobState::Done
                };
            }
            j.finished_at = Some(now_secs() as u64);
        });
        let j = cell.job.lock().clone();
        tracing::info!(
            job = j.id,
            kind = j.kind,
            state = ?j.state,
            objects = j.objects_done,
            bytes = j.bytes_done,
            errors = j.error_count,
            "job finished"
        );
    }

    /// Starts a job filling the shared tier with the chunks under `prefix` of backend
    /// `name` (`origin`), and returns its record. Its `objects_*` count chunks.
    pub fn start_fleet_warm(
        &self,
        tier: Arc<warpdrive_fleet::SharedTier>,
        name: String,
        origin: Arc<warpdrive_store::Backend>,
        prefix: String,
        req: crate::api::FleetWarmRequest,
    ) -> Job {
        let cell = self.create("fleet-warm", vec![req.path.clone()]);
        let job = cell.job.lock().clone();
        tokio::spawn(async move {
            let progress = warpdrive_fleet::ops::Warmed::default();
            let parallel = req.parallel.unwrap_or(DEFAULT_WARM_PARALLEL).max(1);
            cell.update(|j| j.state = JobState::Running);
            let mirror = |p: &warpdrive_fleet::ops::Warmed| {
                let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
                cell.update(|j| {
                    j.objects_total = n(&p.chunks);
                    j.objects_done = n(&p.written) + n(&p.present) + n(&p.failed);
                    j.objects_skipped = n(&p.present);
                    j.bytes_written = n(&p.written_bytes);
                    j.bytes_fetched = n(&p.written_bytes);
                });
            };
            let run = warpdrive_fleet::ops::warm(
                &tier,
                &name,
                &origin,
                &prefix,
                parallel,
                &progress,
                &cell.cancel,
            );
            tokio::pin!(run);
            let r = loop {
                tokio::select! {
                    r = &mut run => break r,
                    () = tokio::time::sleep(std::time::Duration::from_millis(200)) => mirror(&progress),
                }
            };
            mirror(&progress);
            if let Some(e) = progress.first_error.lock().clone() {
                let failed = progress.failed.load(Ordering::Relaxed);
                cell.update(|j| {
                    j.error_count = failed;
                    j.errors
                        .push(format!("{failed} chunks failed; the first: {e}"));
                });
            }
            if let Err(e) = r {
                cell.error(format!("{}: {e}", req.path));
                cell.update(|j| j.state = JobState::Failed);
            }
            Jobs::finish(&cell);
        });
        job
    }

    /// Starts a warm job on the current runtime and returns its record.
    pub fn start_warm(&self, config: Arc<Config>, fs: Arc<Fs>, req: WarmRequest) -> Job {
        let cell = self.create("warm", req.paths.clone());
        let job = cell.job.lock().clone();
        tokio::spawn(async move {
            run_warm(&config, &fs, &req, &cell).await;
            Jobs::finish(&cell);
        });
        job
    }
}

/// The files a warm request names: (backend, key, metadata).
async fn list_targets(
    config: &Config,
    fs: &Fs,
    req: &WarmRequest,
    cell: &JobCell,
) -> Vec<(String, Listed)> {
    let mut out = Vec::new();
    for path in &req.paths {
        let target = match Target::resolve(config, Some(path)) {
            Ok(t) => t,
            Err(e) => {
                cell.error(format!("{e:#}"));
                continue;
            }
        };
        let backends: Vec<String> = match &target.backend {
            Some(b) => vec![b.clone()],
            None => config.backends.iter().map(|b| b.name.clone()).collect(),
        };
        for b in backends {
            let dir = target.dir();
            if !dir.is_empty() {
                match fs.head(&b, dir).await {
                    Ok(Some(info)) => {
                        out.push((b, (dir.to_string(), info)));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        cell.error(format!("{path}: {e}"));
                        continue;
                    }
                }
            }
            match fs.list_files(&b, dir, req.recursive).await {
                Ok(files) if files.is_empty() && !dir.is_empty() => {
                    cell.error(format!("{path}: no such file or directory"));
                }
                Ok(files) => out.extend(files.into_iter().map(|f| (b.clone(), f))),
                Err(e) => cell.error(format!("{path}: {e}")),
            }
        }
    }
    out
}

async fn run_warm(config: &Config, fs: &Arc<Fs>, req: &WarmRequest, cell: &Arc<JobCell>) {
    let files = list_targets(config, fs, req, cell).await;
    cell.update(|j| {
        j.state = JobState::Running;
        j.objects_total = files.len() as u64;
        j.bytes_total = files.iter().map(|(_, (_, i))| i.size).sum();
    });
    let parallel = req.parallel.unwrap_or(DEFAULT_WARM_PARALLEL).max(1);
    futures::stream::iter(files)
        .for_each_concurrent(parallel, |(backend, (key, info))| {
            let (fs, cell) = (fs.clone(), cell.clone());
            async move {
                if cell.cancel.load(Ordering::Relaxed) {
                    return;
                }
                let size = info.size;
                let progress = |n: u64| {
                    cell.update(|j| {
                        j.bytes_fetched += n;
                        j.bytes_done += n;
                    })
                };
                match fs
                    .warm_object(&backend, &key, info, &progress, &cell.cancel)
                    .await
                {
                    Ok(w) if w.cancelled => {}
                    Ok(w) if w.uncacheable => cell.error(format!(
                        "{backend}/{key}: the store gives it no ETag, so it cannot be cached"
                    )),
                    Ok(w) => cell.update(|j| {
                        j.objects_done += 1;
                        j.bytes_done += size - w.fetched;
                        if w.already_cached {
                            j.objects_skipped += 1;
                        }
                    }),
                    Err(e) => cell.error(format!("{backend}/{key}: {e}")),
                }
            }
        })
        .await;
}
