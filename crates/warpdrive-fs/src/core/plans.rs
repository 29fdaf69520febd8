//! Plans in the daemon: submitting, replacing and clearing them, following their readers, and
//! one prefetch task per plan that keeps it ahead of its reader (the algorithm is in
//! [`crate::plan`]).
//!
//! The prefetch task walks the plan from the reader's position: while the bytes fetched
//! ahead of the reader are under the plan's lead target and fewer than [`IN_FLIGHT`] entries
//! are being fetched, it claims the next entry, resolves its path (lookups from the backend's
//! root: one listing per directory answers its siblings, so `open` later needs no round
//! trip) and fills the entry's blocks through the read path's fetches (a reader arriving
//! meanwhile joins the fetch in flight). It wakes when the reader moves or a fetch ends, and
//! stops when every entry is fetched or passed, or when the plan is replaced or cleared.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::Notify;
use warpdrive_api::api::{PlanRequest, PlanStatus};
use warpdrive_cache::NextUse;

use super::Fs;
use crate::blocks::Object;
use crate::error::{FsError, FsResult};
use crate::inode::{BackendId, Ino, Kind};
use crate::plan::{MAX_PLANS, Outcome, Plan, PlanError, Reach};

/// Entries of one plan fetched at once.
pub const IN_FLIGHT: usize = 16;
/// The most a plan keeps fetched ahead of its reader, whatever its pace: also never more
/// than a quarter of the cache, so a plan cannot evict what it fetched for itself.
pub const MAX_LEAD: u64 = 8 << 30;
/// How often a plan's prefetch task looks again when nothing woke it.
const TICK: Duration = Duration::from_millis(200);

/// A plan with its prefetch task's controls.
#[derive(Debug)]
pub(super) struct Run {
    plan: Plan,
    /// Set when the plan is replaced or cleared: the task stops.
    stop: AtomicBool,
    /// Set when every entry is fetched or passed.
    done: AtomicBool,
    /// The reader moved (or the plan was stopped).
    wake: Notify,
}

impl Run {
    /// The plan's job and rank.
    pub(super) fn id(&self) -> (&str, u32) {
        (&self.plan.job, self.plan.rank)
    }

    fn state(&self) -> &'static str {
        if self.stop.load(Ordering::Relaxed) {
            "replaced"
        } else if self.done.load(Ordering::Relaxed) {
            "done"
        } else {
            "running"
        }
    }
}

/// The daemon's plans, one per job and rank.
#[derive(Debug, Default)]
pub(super) struct Plans {
    /// Whether any plan is kept: reads look plans up only then.
    active: AtomicBool,
    runs: Mutex<HashMap<(String, u32), Arc<Run>>>,
}

impl Plans {
    pub(super) fn any(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Eviction's advice for `names` ((backend name, key) pairs; `backends` are the names
    /// by id): the nearest next use over every plan, protected if any plan's fetched-ahead
    /// window holds it. `None` without plans.
    pub(super) fn advise(
        &self,
        backends: &[String],
        names: &[(&str, &str)],
    ) -> Option<Vec<NextUse>> {
        if !self.any() {
            return None;
        }
        let runs: Vec<Arc<Run>> = self.runs.lock().values().cloned().collect();
        Some(
            names
                .iter()
                .map(|(b, key)| {
                    let Some(id) = backends.iter().position(|n| n == b) else {
                        return NextUse::Unplanned;
                    };
                    let mut nearest: Option<u64> = None;
                    for r in &runs {
                        match r.plan.next_use(BackendId(id), key) {
                            Some((_, true)) => return NextUse::Protected,
                            Some((d, false)) => nearest = Some(nearest.map_or(d, |n| n.min(d))),
                            None => {}
                        }
                    }
                    nearest.map_or(NextUse::Unplanned, NextUse::In)
                })
                .collect(),
        )
    }
}

impl Fs {
    /// Takes `req` as the plan of its job and rank, replacing the one before (whose prefetch
    /// stops), and starts its prefetch. Paths are `BACKEND/KEY`. A refused plan changes
    /// nothing. Must run inside the runtime.
    pub fn submit_plan(self: &Arc<Self>, req: &PlanRequest) -> Result<PlanStatus, PlanError> {
        let names: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
        let plan = Plan::new(req, &names)?;
        let key = (plan.job.clone(), plan.rank);
        let run = Arc::new(Run {
            plan,
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let old = {
            let mut runs = self.plans.runs.lock();
            match runs.get(&key) {
                Some(old) if old.plan.epoch > req.epoch => {
                    return Err(PlanError(format!(
                        "job {} rank {} already has a plan for epoch {}; a plan for epoch {} would go back",
                        req.job, req.rank, old.plan.epoch, req.epoch
                    )));
                }
                None if runs.len() >= MAX_PLANS => {
                    return Err(PlanError(format!(
                        "{MAX_PLANS} plans are kept already; clear finished jobs' plans first"
                    )));
                }
                _ => {}
            }
            self.plans.active.store(true, Ordering::Relaxed);
            runs.insert(key, run.clone())
        };
        if let Some(old) = old {
            old.stop.store(true, Ordering::Relaxed);
            old.wake.notify_one();
            self.metrics.plan.remove(&old.plan.job, old.plan.rank);
        }
        tracing::info!(
            job = req.job,
            rank = req.rank,
            epoch = req.epoch,
            entries = run.plan.entries.len(),
            "plan submitted"
        );
        tokio::spawn(prefetch(self.clone(), run.clone()));
        Ok(run.plan.status(run.state()))
    }

    /// Every plan kept, by job and rank.
    pub fn plans(&self) -> Vec<PlanStatus> {
        let mut all: Vec<PlanStatus> = self
            .plans
            .runs
            .lock()
            .values()
            .map(|r| r.plan.status(r.state()))
            .collect();
        all.sort_by(|a, b| (&a.job, a.rank).cmp(&(&b.job, b.rank)));
        all
    }

    /// Drops `job`'s plans (one rank's, or all its ranks'); how many were dropped.
    pub fn clear_plans(&self, job: &str, rank: Option<u32>) -> usize {
        let gone: Vec<Arc<Run>> = {
            let mut runs = self.plans.runs.lock();
            let keys: Vec<(String, u32)> = runs
                .keys()
                .filter(|(j, r)| j == job && rank.is_none_or(|want| want == *r))
                .cloned()
                .collect();
            let gone = keys.iter().filter_map(|k| runs.remove(k)).collect();
            self.plans.active.store(!runs.is_empty(), Ordering::Relaxed);
            gone
        };
        for r in &gone {
            r.stop.store(true, Ordering::Relaxed);
            r.wake.notify_one();
            self.metrics.plan.remove(&r.plan.job, r.plan.rank);
        }
        gone.len()
    }

    /// A reader started on `obj` (`reach`: opened it, or read at an offset): moves the
    /// position of each plan that reads the file. Returns the first such plan (its reader's
    /// waits are counted as its stalls).
    pub(super) fn plan_read(&self, obj: &Object, reach: Reach) -> Option<Arc<Run>> {
        let backend = self.backend_id(&obj.id.backend).ok()?;
        let runs: Vec<Arc<Run>> = self.plans.runs.lock().values().cloned().collect();
        let mut first = None;
        for r in runs {
            if !r.plan.has_file(backend, &obj.id.key) {
                continue;
            }
            first.get_or_insert_with(|| r.clone());
            let outcomes = r.plan.read(backend, &obj.id.key, reach, obj.size);
            for o in &outcomes {
                let name = match o {
                    Outcome::Ahead => "ahead",
                    Outcome::Late => "late",
                    Outcome::Failed => "failed",
                };
                self.metrics.plan.entry(&r.plan.job, r.plan.rank, name);
            }
            if !outcomes.is_empty() {
                r.wake.notify_one();
            }
        }
        first
    }

    /// The most a plan keeps ahead: a quarter of the cache's cap, at most [`MAX_LEAD`].
    fn plan_lead_cap(&self) -> u64 {
        let max = self
            .reader
            .cache()
            .map_or(0, |c| c.capacity().unwrap_or(u64::MAX));
        (max / 4).min(MAX_LEAD)
    }

    /// Fetches plan entry `backend`/`key` (`range`, or whole) into the cache: (the bytes the
    /// entry reads, the bytes fetched from the backend now).
    async fn plan_fetch(
        self: &Arc<Self>,
        backend: BackendId,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> FsResult<(u64, u64)> {
        let mut ino = self
            .lookup(Ino::ROOT, self.backend(backend).name())
            .await?
            .ino;
        for c in key.split('/') {
            ino = self.lookup(ino, c).await?.ino;
        }
        let node = self.node(ino)?;
        if node.kind != Kind::File {
            return Err(FsError::IsDir);
        }
        let obj = self.object_of(&node).await?;
        let (start, len) = match range {
            Some((o, l)) => (o.min(obj.size), l.min(obj.size.saturating_sub(o))),
            None => (0, obj.size),
        };
        if len == 0 {
            return Ok((0, 0));
        }
        let bs = self.reader.block_size();
        let missing: Vec<u64> = self
            .reader
            .missing_blocks(&obj)
            .into_iter()
            .filter(|b| *b >= start / bs && *b <= (start + len - 1) / bs)
            .collect();
        let fetched = missing
            .iter()
            .map(|b| (obj.size - b * bs).min(bs))
            .sum::<u64>();
        self.reader
            .fill_blocks(&obj, &missing)
            .await
            .map_err(|e| FsError::Store((*e).clone()))?;
        Ok((len, fetched))
    }
}

/// The prefetch task of one plan (module docs).
async fn prefetch(fs: Arc<Fs>, run: Arc<Run>) {
    let plan = &run.plan;
    let cap = fs.plan_lead_cap();
    let mut next = 0usize;
    let mut flights = FuturesUnordered::new();
    // The average entry's bytes, for entries whose size is not known yet.
    let (mut seen, mut seen_bytes) = (0u64, 0u64);
    loop {
        if run.stop.load(Ordering::Relaxed) {
            break;
        }
        next = next.max(plan.reached());
        let target = plan.lead_target(cap);
        let avg = seen_bytes.checked_div(seen).unwrap_or(1 << 20);
        while flights.len() < IN_FLIGHT
            && next < plan.entries.len()
            && plan.lead() + flights.len() as u64 * avg < target
        {
            let i = next;
            next += 1;
            if !plan.claim(i) {
                continue;
            }
            let (fs, run) = (fs.clone(), run.clone());
            flights.push(async move {
                let e = &run.plan.entries[i];
                let started = Instant::now();
                let r = fs.plan_fetch(e.backend, &e.key, e.range).await;
                if let Err(err) = &r {
                    tracing::debug!(job = run.plan.job, key = e.key, error = %err, waited = ?started.elapsed(), "plan entry not fetched");
                }
                (i, r)
            });
        }
        fs.metrics
            .plan
            .lead(&plan.job, plan.rank, plan.lead(), plan.lead_seconds());
        if flights.is_empty() && next >= plan.entries.len() {
            run.done.store(true, Ordering::Relaxed);
            break;
        }
        tokio::select! {
            Some((i, r)) = flights.next(), if !flights.is_empty() => {
                let r = r.map_err(|_| ());
                if let Ok((size, fetched)) = r {
                    seen += 1;
                    seen_bytes += size;
                    fs.metrics.plan.fetched(&plan.job, plan.rank, fetched);
                }
                plan.fetched(i, r);
            }
            _ = run.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}
