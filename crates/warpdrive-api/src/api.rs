//! The control API's requests and answers: JSON bodies of `/api/v1/...` (doc/API.md,
//! doc/openapi.yaml). The server and `warpdrive-ctl` share these types, so a field is named
//! once.

use serde::{Deserialize, Serialize};
pub use warpdrive_cache::{QuotaPath, QuotaUse};

/// Every route: method and path, as the router serves them and doc/openapi.yaml lists them
/// (a test keeps the three in step).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/usage"),
    ("GET", "/api/v1/stale"),
    ("POST", "/api/v1/evict"),
    ("POST", "/api/v1/verify"),
    ("POST", "/api/v1/warm"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{id}"),
    ("DELETE", "/api/v1/jobs/{id}"),
    ("POST", "/api/v1/copy"),
    ("GET", "/api/v1/quotas"),
    ("PUT", "/api/v1/quotas/{team}"),
    ("DELETE", "/api/v1/quotas/{team}"),
    ("GET", "/api/v1/fleet/status"),
    ("POST", "/api/v1/fleet/warm"),
    ("POST", "/api/v1/fleet/gc"),
    ("GET", "/api/v1/plans"),
    ("POST", "/api/v1/plans"),
    ("DELETE", "/api/v1/plans/{job}"),
    ("POST", "/api/v1/restart"),
];

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `GET /status`: the daemon and its cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub commit: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub mount_point: String,
    /// `false` for `warpdrive-ctl serve` without a mount.
    pub mounted: bool,
    pub cache: CacheHealth,
    /// Each team's quota and use.
    pub quotas: Vec<QuotaUse>,
    /// Each backend's auth mode, identity and token lifetime.
    #[serde(default)]
    pub backends: Vec<BackendAuth>,
    pub jobs_running: usize,
    /// The epoch plans kept, as `GET /plans` lists them.
    #[serde(default)]
    pub plans: Vec<PlanStatus>,
    /// Files being written through the mount (not yet released).
    #[serde(default)]
    pub writes: Vec<WriteStatus>,
    /// The process that owns the mount and starts a new daemon when this one stops
    /// (`None` for `warpdrive-ctl serve`).
    #[serde(default)]
    pub keeper_pid: Option<u32>,
    /// Which daemon of this mount this is: 0 for the one that mounted, one more for each
    /// that took the mount over since (after a crash, a kill or a restart).
    #[serde(default)]
    pub generation: u64,
    /// For a daemon that took the mount over: milliseconds from its start to serving, the
    /// time its predecessor's readers waited on it.
    #[serde(default)]
    pub took_over_ms: Option<u64>,
}

/// `POST /restart`: hand the mount to a new daemon without unmounting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestartRequest {
    /// How long to wait for files being written through the mount to be closed first (the
    /// restart is refused if they are not by then); default 30 seconds.
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

/// The answer to `POST /restart`: the daemon that hands over (it exits, its successor
/// serves the same mount).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartAccepted {
    pub pid: u32,
    pub generation: u64,
}

/// A file being written through the mount, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStatus {
    pub backend: String,
    /// The key its commit writes.
    pub key: String,
    /// Its length so far.
    pub bytes: u64,
}

/// The cache's health, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheHealth {
    pub dir: String,
    pub format_version: i64,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    /// `cache.min_free` in bytes: below it, new blocks are not cached.
    #[serde(default)]
    pub min_free_bytes: u64,
    /// SQLite's `quick_check` of the index passed.
    pub index_ok: bool,
    pub index_error: Option<String>,
}

/// `GET /stats`: cache totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub cache_dir: String,
    pub format_version: i64,
    pub block_size: u64,
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
    /// `cache.max_size` in bytes (a share of the disk resolved against its size).
    pub capacity_bytes: u64,
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    /// Cached bytes ÷ the disk's size.
    pub share_of_disk: f64,
    pub hit_blocks: i64,
    pub hit_bytes: i64,
    pub miss_blocks: i64,
    pub miss_bytes: i64,
    /// Hit bytes ÷ (hit + miss bytes), over the cache's lifetime.
    pub hit_ratio: Option<f64>,
    pub evicted_blocks: i64,
    pub corrupt_blocks: i64,
    /// Unix seconds of the least and most recently read cached objects.
    pub oldest_access: Option<i64>,
    pub newest_access: Option<i64>,
}

/// How `usage` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageBy {
    Backend,
    Path,
    Team,
}

/// `GET /usage?by=backend|path&depth=N&path=P`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageQuery {
    pub by: UsageBy,
    #[serde(default = "one")]
    pub depth: usize,
    pub path: Option<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageRow {
    pub name: String,
    pub bytes: u64,
    pub objects: u64,
    /// With `by=team`: the team's quota (`None` for data of no team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub by: UsageBy,
    /// Largest first.
    pub rows: Vec<UsageRow>,
    pub total_bytes: u64,
    pub total_objects: u64,
}

/// `GET /stale?older_than=7d&path=P`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaleQuery {
    /// A duration such as `7d` or `90m`.
    pub older_than: String,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StaleObject {
    pub backend: String,
    pub key: String,
    pub cached_bytes: u64,
    /// Unix seconds of its last read (recorded to the minute).
    pub last_access: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stale {
    pub older_than_seconds: u64,
    /// Oldest first.
    pub objects: Vec<StaleObject>,
    /// Bytes evicting them all would free.
    pub total_bytes: u64,
}

/// `POST /evict`: drop cached objects not read for `older_than` (all, when absent) under
/// `path` (everything, when absent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvictRequest {
    pub older_than: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvictReport {
    pub dry_run: bool,
    /// What was (on a dry run: would be) freed.
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
    /// Matching objects kept because a reader has them open through passthrough.
    pub pinned_objects: u64,
    pub pinned_bytes: u64,
}

/// `POST /verify`: check every cached block's CRC32C under `path` (everything when absent),
/// and each fully cached object whole against the checksum its store keeps, where known.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub path: Option<String>,
    /// List how each object was checked ([`VerifyReport::each`]).
    #[serde(default)]
    pub each: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Damaged {
    pub backend: String,
    pub key: String,
    /// Blocks that failed their checksum and were dropped (they are refetched when read).
    pub blocks: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub damaged_blocks: u64,
    pub damaged: Vec<Damaged>,
    /// Objects whose whole bytes matched the checksum their store keeps.
    #[serde(default)]
    pub store_checked: u64,
    /// Objects checked against their own block checksums only (partly cached, or no store
    /// checksum known for them).
    #[serde(default)]
    pub self_checked: u64,
    /// Fully cached objects whose bytes did not match their store's checksum; dropped whole
    /// (fetched again when read).
    #[serde(default)]
    pub store_mismatched: Vec<ObjectRef>,
    /// With `each`: every object and how it was checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub each: Vec<ObjectChecked>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRef {
    pub backend: String,
    pub key: String,
}

/// How one object was checked by `verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectChecked {
    pub backend: String,
    pub key: String,
    /// `store` (whole, matched its store's checksum), `store_mismatch` (dropped),
    /// `store_cannot_tell` (a multipart ETag of an unusual part size), `no_store_checksum`,
    /// `partly_cached` or `damaged`; all but the first two were checked against their
    /// own block checksums only.
    pub check: String,
    /// The store's checksum as the cache recorded it (`md5:…`, `crc32c:…`,
    /// `md5-parts:N:…`, `none`), if any.
    pub store_checksum: Option<String>,
}

/// `POST /warm`: fetch files or whole directories into the cache, as a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmRequest {
    /// Paths under the mount point, `wd://BACKEND/PREFIX` or `BACKEND/PREFIX`.
    pub paths: Vec<String>,
    /// Include every level below a directory (otherwise only the files directly in it).
    #[serde(default)]
    pub recursive: bool,
    /// Objects fetched at once (default 4).
    pub parallel: Option<usize>,
}

/// `POST /plans`: what one reader of a training job will read next, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// The training job (letters, digits, `.`, `_`, `-`; at most 128).
    pub job: String,
    /// The reader within the job (its data-parallel rank; 0 for a single reader).
    #[serde(default)]
    pub rank: u32,
    /// The epoch this order is for: a plan replaces the job and rank's plan of an earlier
    /// or the same epoch, never a later one.
    #[serde(default)]
    pub epoch: u64,
    pub entries: Vec<PlanEntry>,
}

/// One read of a plan: a file (a path under the mount point, `wd://BACKEND/KEY` or
/// `BACKEND/KEY`), whole, or `length` bytes from `offset` (a tar member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// `GET /plans`, and the answer to `POST /plans`: a plan and how far ahead of its reader the
/// daemon is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStatus {
    pub job: String,
    pub rank: u32,
    pub epoch: u64,
    pub entries: u64,
    /// Entries the reader has reached (the furthest entry read, plus one).
    pub reached: u64,
    /// Entries fetched (or found cached) before the reader reached them, reached while their
    /// fetch was still under way or not yet started, and whose fetch failed.
    pub ahead: u64,
    pub late: u64,
    pub failed: u64,
    /// Bytes fetched for the plan from the backends.
    pub fetched_bytes: u64,
    /// Bytes fetched and not yet reached: the lead.
    pub lead_bytes: u64,
    /// The reader's pace (bytes of planned entries reached per second, recent).
    pub rate_bytes_per_second: f64,
    /// The lead in seconds at that pace (0 before the pace is known).
    pub lead_seconds: f64,
    /// `running`, `done` (every entry fetched or reached) or `replaced`.
    pub state: String,
}

/// `DELETE /plans/{job}`: which of the job's plans to drop (all ranks when absent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanClearQuery {
    pub rank: Option<u32>,
}

/// The answer to `DELETE /plans/{job}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlansCleared {
    pub cleared: u64,
}

/// Chunks and bytes of one backend (or of sources the config does not name) in the shared
/// tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHeld {
    pub backend: String,
    pub chunks: u64,
    pub bytes: u64,
}

/// `GET /fleet/status`: what the shared tier holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The tier's store, as `kind://account/container/prefix`.
    pub store: String,
    /// `read_write` or `read_only`.
    pub mode: String,
    pub chunk_size: u64,
    pub lease_ttl_seconds: u64,
    /// Per configured backend that uses the tier.
    pub backends: Vec<FleetHeld>,
    /// Chunks of sources this config does not name (`backend` is empty).
    pub other: FleetHeld,
    /// Leases younger than `lease_ttl` (a node is filling that chunk) and older (stale).
    pub leases_held: u64,
    pub leases_expired: u64,
}

/// `POST /fleet/gc`: delete chunks written before `older_than`, and expired leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetGcRequest {
    /// An age such as `7d` or `12h`.
    pub older_than: String,
    /// Only count what would go.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `fleet gc` deleted (or would).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetGc {
    pub deleted: u64,
    pub deleted_bytes: u64,
    pub kept: u64,
    pub kept_bytes: u64,
    /// Deletes that failed (left for the next run).
    pub failed: u64,
    pub dry_run: bool,
}

/// `POST /fleet/warm`: fill the shared tier with the chunks of the objects under a path, from
/// their origin, as a job (`objects_*` of the job count chunks; `objects_skipped`, chunks
/// already in the tier; `bytes_written`, chunk bytes written). No local cache is filled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetWarmRequest {
    /// A path under the mount point, `wd://BACKEND/PREFIX` or `BACKEND/PREFIX`.
    pub path: String,
    /// Chunks fetched and written at once (default 4).
    pub parallel: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Finding the objects to work on.
    Listing,
    Running,
    /// Finished; `errors` lists any object that failed.
    Done,
    /// Stopped on request; work done so far is kept.
    Cancelled,
    /// Could not run at all (see `errors`).
    Failed,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Cancelled | JobState::Failed
        )
    }
}

/// A long operation (`warm`), its progress and outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: u64,
    pub kind: String,
    pub state: JobState,
    /// What it was asked to work on.
    pub paths: Vec<String>,
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub objects_total: u64,
    pub objects_done: u64,
    /// Objects that were already complete in the cache.
    pub objects_skipped: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Bytes fetched from backends by this job.
    pub bytes_fetched: u64,
    pub error_count: u64,
    /// The first errors (at most 20), one sentence each.
    pub errors: Vec<String>,
    /// `copy`: bytes written to the destination.
    #[serde(default)]
    pub bytes_written: u64,
    /// `copy` with `delete_source`: sources deleted after their copy was verified.
    #[serde(default)]
    pub objects_deleted: u64,
    /// A dry run: nothing was changed; `plan` says what would be.
    #[serde(default)]
    pub dry_run: bool,
    /// `copy --dry-run`: `SRC -> DST` of each object that would be copied (at most 1,000).
    #[serde(default)]
    pub plan: Vec<String>,
}

/// `POST /copy`: copy (or, with `delete_source`, move) an object or a whole prefix to
/// another place, as a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRequest {
    /// `wd://BACKEND/PREFIX`, `BACKEND/PREFIX` or a path under the mount point.
    pub src: String,
    pub dst: String,
    /// Delete each source object once its copy is verified (a move).
    #[serde(default)]
    pub delete_source: bool,
    /// Objects copied at once (default 4).
    pub parallel: Option<usize>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `PUT /quotas/{team}`: the team's paths and its quota.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaSet {
    /// Directories the team owns: paths under the mount point, `wd://BACKEND/PREFIX` or
    /// `BACKEND/PREFIX`.
    pub paths: Vec<String>,
    /// A size such as `500GiB`.
    pub max: String,
}

/// One backend's identity, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendAuth {
    pub name: String,
    pub auth: warpdrive_config::AuthState,
}
