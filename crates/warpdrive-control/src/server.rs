//! The control API server: one router, served by the daemon on its Unix socket (and on TCP
//! with a token when configured), and by `warpdrive-ctl serve` (TCP, token).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use warpdrive_cache::Cache;
use warpdrive_config::Config;
use warpdrive_fs::Fs;

use crate::api::{
    self, ApiError, CopyRequest, DaemonStatus, EvictRequest, Job, QuotaSet, QuotaUse, StaleQuery,
    UsageQuery, VerifyRequest, WarmRequest,
};
use crate::jobs::Jobs;
use crate::{Target, quotas, report};

/// What the handlers work on.
#[derive(Debug)]
pub struct Control {
    pub config: Arc<Config>,
    pub fs: Arc<Fs>,
    pub cache: Arc<Cache>,
    pub mounted: bool,
    pub version: String,
    pub commit: String,
    started: Instant,
    jobs: Jobs,
    /// One quota change at a time (read, change, save, apply).
    quota_edit: tokio::sync::Mutex<()>,
    /// The daemon's place in its mount's line of daemons, and where restarts are asked
    /// for; unset for `warpdrive-ctl serve`.
    daemon: std::sync::OnceLock<DaemonLine>,
}

/// A daemon serving a mount its keeper owns (see the daemon's `keeper` module).
#[derive(Debug, Clone)]
pub struct DaemonLine {
    pub keeper_pid: u32,
    pub generation: u64,
    pub took_over_ms: Option<u64>,
    /// The daemon's main loop, which decides whether a restart may go ahead now.
    pub restart: tokio::sync::mpsc::Sender<Restart>,
}

/// A restart asked for through the API: the main loop answers `Ok` just before it hands
/// the mount over, or why it will not; after an `Ok` it waits for `delivered` (the answer's
/// body was handed to the connection, or the client went away) before the process goes.
#[derive(Debug)]
pub struct Restart {
    pub wait: std::time::Duration,
    pub answer: tokio::sync::oneshot::Sender<Result<(), String>>,
    pub delivered: tokio::sync::oneshot::Receiver<()>,
}

/// Fires its sender when dropped: held by a response body, it says the body is done with.
struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Control {
    pub fn new(
        config: Arc<Config>,
        fs: Arc<Fs>,
        cache: Arc<Cache>,
        mounted: bool,
        (version, commit): (&str, &str),
    ) -> Arc<Control> {
        Arc::new(Control {
            config,
            fs,
            cache,
            mounted,
            version: version.into(),
            commit: commit.into(),
            started: Instant::now(),
            jobs: Jobs::default(),
            quota_edit: tokio::sync::Mutex::new(()),
            daemon: std::sync::OnceLock::new(),
        })
    }

    /// Tells the API which daemon of the mount this is and where restarts go.
    pub fn set_daemon_line(&self, line: DaemonLine) {
        let _ = self.daemon.set(line);
    }

    /// Jobs (`warm`, `copy`, ...) still running: a restart would stop them.
    pub fn jobs_running(&self) -> usize {
        self.jobs.running()
    }
}

/// A client per configured backend (no request is made).
pub fn build_backends(config: &Config) -> Result<Vec<Arc<warpdrive_store::Backend>>> {
    config
        .backends
        .iter()
        .map(|b| warpdrive_store::Backend::build(b).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .context("building backend clients")
}

impl Control {
    /// The API over `cache` and the configured backends without a mount (`warpdrive-ctl
    /// serve` when no daemon runs): the filesystem core serves `warm` with no FUSE session.
    pub fn standalone(config: &Config, cache: Arc<Cache>, version: &str) -> Result<Arc<Control>> {
        let fs = Fs::new(
            warpdrive_fs::FsConfig {
                metadata_ttl: config.metadata_ttl,
                stale_if_error: config.stale_if_error,
                negative_ttl: config.negative_ttl,
                uid: 0,
                gid: 0,
                block_size: config.cache.block_size,
                prefetch_budget: config.cache.prefetch_budget,
                passthrough: false,
                passthrough_min_size: 0,
                control: None,
                write_part_size: warpdrive_fs::core::WRITE_PART_SIZE,
                write_memory: warpdrive_fs::core::WRITE_MEMORY,
            },
            build_backends(config)?,
            Some(cache.clone()),
        );
        if let Some(shared) = &config.shared_cache {
            let tier = warpdrive_fleet::SharedTier::new(
                shared,
                &config.backends,
                warpdrive_metrics::SharedMetrics::detached(),
            )
            .context("building the shared tier's client")?;
            fs.reader().set_tier(tier);
        }
        Ok(Control::new(
            Arc::new(config.clone()),
            fs,
            cache,
            false,
            (version, "unknown"),
        ))
    }
}

/// An error answer: a status and one sentence.
#[derive(Debug)]
pub struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

fn bad_request(e: anyhow::Error) -> Failure {
    Failure(StatusCode::BAD_REQUEST, format!("{e:#}"))
}

fn internal(e: anyhow::Error) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

type Answer<T> = Result<Json<T>, Failure>;

/// Runs blocking cache work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// The API's routes (the same as [`api::ROUTES`]).
pub fn router(c: Arc<Control>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/stale", get(stale))
        .route("/api/v1/evict", post(evict))
        .route("/api/v1/verify", post(verify))
        .route("/api/v1/warm", post(warm))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job).delete(cancel_job))
        .route("/api/v1/copy", post(copy))
        .route("/api/v1/quotas", get(quota_list))
        .route("/api/v1/quotas/{team}", put(quota_set).delete(quota_rm))
        .route("/api/v1/fleet/status", get(fleet_status))
        .route("/api/v1/fleet/warm", post(fleet_warm))
        .route("/api/v1/fleet/gc", post(fleet_gc))
        .route(
            "/api/v1/plans",
            get(plan_list)
                .post(plan_submit)
                .layer(axum::extract::DefaultBodyLimit::max(PLAN_BODY_MAX)),
        )
        .route("/api/v1/plans/{job}", axum::routing::delete(plan_clear))
        .route("/api/v1/restart", post(restart))
        .fallback(|| async {
            Failure(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API lives under /api/v1 (see doc/API.md)".into(),
            )
        })
        .with_state(c)
}

async fn status(State(c): State<Arc<Control>>) -> Answer<DaemonStatus> {
    let cc = c.clone();
    let cache =
        blocking(move || Ok(report::cache_health(&cc.config, cc.cache.used_bytes()))).await?;
    Ok(Json(DaemonStatus {
        version: c.version.clone(),
        commit: c.commit.clone(),
        pid: std::process::id(),
        uptime_seconds: c.started.elapsed().as_secs(),
        mount_point: c.config.mount_point.display().to_string(),
        mounted: c.mounted,
        cache,
        quotas: c.cache.quota_use(),
        backends: c
            .fs
            .backends()
            .iter()
            .map(|b| api::BackendAuth {
                name: b.name().to_string(),
                auth: b.auth_state(),
            })
            .collect(),
        jobs_running: c.jobs.running(),
        plans: c.fs.plans(),
        writes: c.fs.writing().await,
        keeper_pid: c.daemon.get().map(|d| d.keeper_pid),
        generation: c.daemon.get().map_or(0, |d| d.generation),
        took_over_ms: c.daemon.get().and_then(|d| d.took_over_ms),
    }))
}

/// Files being written are waited for this long by default before a restart is refused.
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn restart(
    State(c): State<Arc<Control>>,
    body: Option<Json<api::RestartRequest>>,
) -> Result<Response, Failure> {
    let Some(line) = c.daemon.get() else {
        return Err(Failure(
            StatusCode::CONFLICT,
            "no mount to restart here (warpdrive-ctl serve serves the API without one)".into(),
        ));
    };
    let wait = body
        .and_then(|b| b.0.wait_seconds)
        .map_or(RESTART_WAIT, std::time::Duration::from_secs);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (delivered_tx, delivered) = tokio::sync::oneshot::channel();
    let gone = || {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping".into(),
        )
    };
    line.restart
        .send(Restart {
            wait,
            answer: tx,
            delivered,
        })
        .await
        .map_err(|_| gone())?;
    match rx.await.map_err(|_| gone())? {
        Ok(()) => {
            let json = serde_json::to_vec(&api::RestartAccepted {
                pid: std::process::id(),
                generation: line.generation,
            })
            .map_err(|e| internal(e.into()))?;
            // The body tells the daemon when it has been sent (dropped after its last chunk),
            // so the process does not go before its answer does.
            let guard = OnDrop(Some(delivered_tx));
            let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(
                bytes::Bytes::from(json),
            )])
            .chain(futures::stream::poll_fn(move |_| {
                let _ = &guard;
                std::task::Poll::Ready(None)
            }));
            Ok((
                StatusCode::ACCEPTED,
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(body),
            )
                .into_response())
        }
        Err(why) => Err(Failure(StatusCode::CONFLICT, why)),
    }
}

async fn stats(State(c): State<Arc<Control>>) -> Answer<api::Stats> {
    blocking(move || {
        let s = c.cache.summary().map_err(|e| internal(e.into()))?;
        Ok(Json(report::stats(&c.config, &s)))
    })
    .await
}

async fn usage(State(c): State<Arc<Control>>, Query(q): Query<UsageQuery>) -> Answer<api::Usage> {
    let target = Target::resolve(&c.config, q.path.as_deref()).map_err(bad_request)?;
    blocking(move || {
        let objects = c.cache.objects();
        let quotas = quotas::of_use(&c.cache.quota_use());
        Ok(Json(report::usage(
            &objects, &target, q.by, q.depth, &quotas,
        )))
    })
    .await
}

async fn stale(State(c): State<Arc<Control>>, Query(q): Query<StaleQuery>) -> Answer<api::Stale> {
    let target = Target::resolve(&c.config, q.path.as_deref()).map_err(bad_request)?;
    let age = report::parse_age(&q.older_than).map_err(bad_request)?;
    blocking(move || Ok(Json(report::stale(c.cache.objects(), &target, age)))).await
}

async fn evict(
    State(c): State<Arc<Control>>,
    Json(r): Json<EvictRequest>,
) -> Answer<api::EvictReport> {
    let target = Target::resolve(&c.config, r.path.as_deref()).map_err(bad_request)?;
    let age = r
        .older_than
        .as_deref()
        .map(report::parse_age)
        .transpose()
        .map_err(bad_request)?;
    blocking(move || {
        report::evict(&c.cache, &target, age, r.dry_run)
            .map(Json)
            .map_err(internal)
    })
    .await
}

async fn verify(
    State(c): State<Arc<Control>>,
    Json(r): Json<VerifyRequest>,
) -> Answer<api::VerifyReport> {
    let target = Target::resolve(&c.config, r.path.as_deref()).map_err(bad_request)?;
    blocking(move || {
        report::verify(&c.cache, &target, r.each)
            .map(Json)
            .map_err(internal)
    })
    .await
}

async fn warm(
    State(c): State<Arc<Control>>,
    Json(r): Json<WarmRequest>,
) -> Result<(StatusCode, Json<Job>), Failure> {
    if r.paths.is_empty() {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "paths is empty; name at least one file or directory to warm".into(),
        ));
    }
    for p in &r.paths {
        Target::resolve(&c.config, Some(p)).map_err(bad_request)?;
    }
    let job = c.jobs.start_warm(c.config.clone(), c.fs.clone(), r);
    Ok((StatusCode::ACCEPTED, Json(job)))
}

async fn copy(
    State(c): State<Arc<Control>>,
    Json(r): Json<CopyRequest>,
) -> Result<(StatusCode, Json<Job>), Failure> {
    crate::copy::check(&c.config, &r).map_err(bad_request)?;
    let job = c
        .jobs
        .start_copy(c.config.clone(), c.fs.backends().to_vec(), r);
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The shared tier, or 409 when the config has none.
fn tier(c: &Control) -> Result<Arc<warpdrive_fleet::SharedTier>, Failure> {
    c.fs.reader().tier().cloned().ok_or_else(|| {
        Failure(
            StatusCode::CONFLICT,
            "no shared tier: the config has no `shared_cache:` block".into(),
        )
    })
}

fn tier_failed(e: warpdrive_store::StoreError) -> Failure {
    Failure(StatusCode::BAD_GATEWAY, format!("the shared tier: {e}"))
}

async fn fleet_status(State(c): State<Arc<Control>>) -> Answer<api::FleetStatus> {
    let t = tier(&c)?;
    warpdrive_fleet::ops::status(&t)
        .await
        .map(Json)
        .map_err(tier_failed)
}

async fn fleet_gc(
    State(c): State<Arc<Control>>,
    Json(r): Json<api::FleetGcRequest>,
) -> Answer<api::FleetGc> {
    let t = tier(&c)?;
    let age = report::parse_age(&r.older_than).map_err(bad_request)?;
    warpdrive_fleet::ops::gc(&t, age, r.dry_run)
        .await
        .map(Json)
        .map_err(tier_failed)
}

async fn fleet_warm(
    State(c): State<Arc<Control>>,
    Json(r): Json<api::FleetWarmRequest>,
) -> Result<(StatusCode, Json<Job>), Failure> {
    let t = tier(&c)?;
    let target = Target::resolve(&c.config, Some(&r.path)).map_err(bad_request)?;
    let Some(name) = target.backend.clone() else {
        return Err(bad_request(anyhow::anyhow!(
            "{}: name a backend and a path in it (BACKEND/PREFIX)",
            r.path
        )));
    };
    let served = c
        .config
        .shared_cache
        .as_ref()
        .is_some_and(|s| s.backends.contains(&name));
    let origin = c.fs.backends().iter().find(|b| b.name() == name).cloned();
    let (true, Some(origin)) = (served, origin) else {
        return Err(bad_request(anyhow::anyhow!(
            "backend `{name}` does not use the shared tier (shared_cache.backends)"
        )));
    };
    let job = c.jobs.start_fleet_warm(t, name, origin, target.prefix, r);
    Ok((StatusCode::ACCEPTED, Json(job)))
}

async fn jobs(State(c): State<Arc<Control>>) -> Json<Vec<Job>> {
    Json(c.jobs.list())
}

/// The largest plan body accepted: room for the most entries a plan may have
/// ([`warpdrive_fs::plan::MAX_ENTRIES`]) at about 128 bytes of JSON each.
const PLAN_BODY_MAX: usize = 256 << 20;

async fn plan_submit(
    State(c): State<Arc<Control>>,
    Json(mut r): Json<api::PlanRequest>,
) -> Result<(StatusCode, Json<api::PlanStatus>), Failure> {
    for (i, e) in r.entries.iter_mut().enumerate() {
        e.path = crate::target::relative(&c.config, &e.path)
            .map_err(|m| bad_request(m.context(format!("entry {}", i + 1))))?;
    }
    c.fs.submit_plan(&r)
        .map(|s| (StatusCode::CREATED, Json(s)))
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, e.0))
}

async fn plan_list(State(c): State<Arc<Control>>) -> Json<Vec<api::PlanStatus>> {
    Json(c.fs.plans())
}

async fn plan_clear(
    State(c): State<Arc<Control>>,
    UrlPath(job): UrlPath<String>,
    Query(q): Query<api::PlanClearQuery>,
) -> Answer<api::PlansCleared> {
    match c.fs.clear_plans(&job, q.rank) {
        0 => Err(Failure(
            StatusCode::NOT_FOUND,
            format!(
                "no plan for job {job}{}",
                q.rank.map(|r| format!(" rank {r}")).unwrap_or_default()
            ),
        )),
        n => Ok(Json(api::PlansCleared { cleared: n as u64 })),
    }
}

fn no_job(id: u64) -> Failure {
    Failure(StatusCode::NOT_FOUND, format!("no job {id}"))
}

async fn job(State(c): State<Arc<Control>>, UrlPath(id): UrlPath<u64>) -> Answer<Job> {
    c.jobs.get(id).map(Json).ok_or_else(|| no_job(id))
}

async fn cancel_job(State(c): State<Arc<Control>>, UrlPath(id): UrlPath<u64>) -> Answer<Job> {
    if !c.jobs.cancel(id) {
        return Err(no_job(id));
    }
    c.jobs.get(id).map(Json).ok_or_else(|| no_job(id))
}

async fn quota_list(State(c): State<Arc<Control>>) -> Json<Vec<QuotaUse>> {
    Json(c.cache.quota_use())
}

/// Applies a new quota list: saved first (so a failed save changes nothing), then enforced.
fn apply_quotas(c: &Control, list: Vec<warpdrive_cache::Quota>) -> Result<Vec<QuotaUse>, Failure> {
    warpdrive_cache::validate_quotas(&list).map_err(|m| bad_request(anyhow::anyhow!(m)))?;
    quotas::save(&c.config.cache.dir, &list).map_err(internal)?;
    c.cache
        .set_quotas(list)
        .map_err(|m| bad_request(anyhow::anyhow!(m)))?;
    Ok(c.cache.quota_use())
}

async fn quota_set(
    State(c): State<Arc<Control>>,
    UrlPath(team): UrlPath<String>,
    Json(r): Json<QuotaSet>,
) -> Answer<Vec<QuotaUse>> {
    let q = quotas::resolve(&c.config, &team, &r).map_err(bad_request)?;
    let _one = c.quota_edit.lock().await;
    let list = quotas::with(&quotas::of_use(&c.cache.quota_use()), q).map_err(bad_request)?;
    let cc = c.clone();
    let out = blocking(move || apply_quotas(&cc, list)).await?;
    tracing::info!(team, "quota set");
    Ok(Json(out))
}

async fn quota_rm(
    State(c): State<Arc<Control>>,
    UrlPath(team): UrlPath<String>,
) -> Answer<Vec<QuotaUse>> {
    let _one = c.quota_edit.lock().await;
    let mut list = quotas::of_use(&c.cache.quota_use());
    let before = list.len();
    list.retain(|q| q.team != team);
    if list.len() == before {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no quota for team {team}"),
        ));
    }
    let cc = c.clone();
    let out = blocking(move || apply_quotas(&cc, list)).await?;
    tracing::info!(team, "quota removed");
    Ok(Json(out))
}

/// Requires `Authorization: Bearer <token>` (compared in constant time); 401 otherwise.
pub fn require_token(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    return Failure(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong bearer token (send `Authorization: Bearer <token>`)"
                            .into(),
                    )
                    .into_response();
                }
                next.run(req).await
            }
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds the Unix socket at `path`, private to this user (0600). A socket file left by a
/// daemon that is gone is replaced; one a live process answers on is an error.
pub fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control.socket {} is in use by another process; give each daemon its own socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of {}", path.display()))?;
    }
    // Created with no access for others from the start (the umask), then set exactly.
    // SAFETY: umask(2) only changes this process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("control.socket: cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (0600)", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `router` on a bound Unix socket until the runtime stops; removes the socket file
/// when done.
pub async fn serve_unix(l: std::os::unix::net::UnixListener, path: PathBuf, router: Router) {
    match tokio::net::UnixListener::from_std(l) {
        Ok(l) => {
            if let Err(e) = axum::serve(l, router).await {
                tracing::error!(error = %e, "control socket stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, "control socket unusable"),
    }
    let _ = std::fs::remove_file(path);
}

/// Serves `router` on a bound TCP listener until the runtime stops.
pub async fn serve_tcp(l: std::net::TcpListener, router: Router) {
    match tokio::net::TcpListener::from_std(l) {
        Ok(l) => {
            if let Err(e) = axum::serve(l, router).await {
                tracing::error!(error = %e, "control listener stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, "control listener unusable"),
    }
}
