//! Every WarpDrive metric, defined once: names, types, help and label sets (doc/METRICS.md
//! lists them). Built on `prometheus-client`, served by the daemon at `/metrics`.
//!
//! Recording on the hot path is an atomic add on a handle resolved in advance (a counter per
//! FUSE operation, per backend and operation, ...); the only label lookups happen on error
//! paths. Values that other parts of the daemon already keep (the cache's bytes and objects,
//! process figures) are read at scrape time by collectors, so nothing is counted twice and a
//! scrape holds no lock that the read path takes for more than a map lookup.
//!
//! Conventions: every name starts with `warpdrive_`; counters end in `_total` (the encoder
//! adds it); units are `_seconds` and `_bytes`; things are labels, not separate metrics.

mod histogram;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether recording is on (`metrics.enabled`). Off only to measure what recording costs.
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Turns recording on or off for the whole process (`metrics.enabled: false` turns it off).
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// Whether recording is on.
#[inline]
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Adds `n` to a counter (if recording is on).
#[inline]
pub fn add(c: &Counter, n: u64) {
    if recording() {
        c.inc_by(n);
    }
}

/// Moves a gauge by `n` (if recording is on).
#[inline]
pub fn shift(g: &Gauge, n: i64) {
    if recording() {
        g.inc_by(n);
    }
}

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;

pub use snapshot::Snapshot;

pub use histogram::{Histogram, READ_LATENCY_BOUNDS, READ_SIZE_BOUNDS, REQUEST_LATENCY_BOUNDS};

/// FUSE operations counted one by one (every other operation counts as `other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Getattr,
    Open,
    Read,
    Release,
    Opendir,
    Readdir,
    Releasedir,
    Statfs,
    Flush,
    Getxattr,
    Listxattr,
    /// Device controls (`isatty` on every Python `open`): always `ENOTTY`.
    Ioctl,
    /// Any operation that would change the tree or write to a file: `EROFS`, but for
    /// writes to the control file (`.warpdrive/plan`).
    Write,
}

impl Op {
    pub const ALL: [Op; 14] = [
        Op::Lookup,
        Op::Getattr,
        Op::Open,
        Op::Read,
        Op::Release,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Statfs,
        Op::Flush,
        Op::Getxattr,
        Op::Listxattr,
        Op::Ioctl,
        Op::Write,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Open => "open",
            Op::Read => "read",
            Op::Release => "release",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Statfs => "statfs",
            Op::Flush => "flush",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Ioctl => "ioctl",
            Op::Write => "write",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpErrnoLabels {
    op: &'static str,
    errno: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOpLabels {
    backend: String,
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendKindLabels {
    backend: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendAnswerLabels {
    backend: String,
    answer: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendReasonLabels {
    backend: String,
    reason: &'static str,
}

/// Why the retry policy stopped retrying a request (it then fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// It kept failing transiently until `retry.deadline`.
    Deadline,
    /// The store answered nothing at all for `retry.unreachable`.
    Unreachable,
}

impl GiveUp {
    pub const ALL: [GiveUp; 2] = [GiveUp::Deadline, GiveUp::Unreachable];

    pub fn name(self) -> &'static str {
        match self {
            GiveUp::Deadline => "deadline",
            GiveUp::Unreachable => "unreachable",
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn read_latency() -> Histogram {
    Histogram::seconds(READ_LATENCY_BOUNDS)
}

fn request_latency() -> Histogram {
    Histogram::seconds(REQUEST_LATENCY_BOUNDS)
}

/// FUSE operations.
#[derive(Debug)]
pub struct FuseMetrics {
    ops: Vec<Counter>,
    errors: Family<OpErrnoLabels, Counter>,
    pub read_latency: Histogram,
    pub read_size: Histogram,
    /// Files open through the mount now.
    pub open_handles: Gauge,
}

impl FuseMetrics {
    /// Counts one operation.
    pub fn op(&self, op: Op) {
        add(&self.ops[op as usize], 1);
    }

    /// Counts one failed operation (`errno` by name, such as `ENOENT`).
    pub fn error(&self, op: Op, errno: i32) {
        if !recording() {
            return;
        }
        self.errors
            .get_or_create(&OpErrnoLabels {
                op: op.name(),
                errno: errno_name(errno),
            })
            .inc();
    }
}

/// The errno values this crate names in advance (Linux numbering).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EROFS: i32 = 30;
    pub const ESTALE: i32 = 116;
}

/// The symbolic name of an errno value (`ENOENT`), or its number.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        9 => "EBADF",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        28 => "ENOSPC",
        30 => "EROFS",
        34 => "ERANGE",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        61 => "ENODATA",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        116 => "ESTALE",
        _ => return errno.to_string(),
    };
    name.to_string()
}

/// The block read path: cache hits and misses, prefetch, passthrough. Kept by the read path
/// itself (these are its counters, not copies).
#[derive(Debug, Default, Clone)]
pub struct ReadMetrics {
    pub hit_blocks: Counter,
    pub hit_bytes: Counter,
    pub miss_blocks: Counter,
    pub miss_bytes: Counter,
    pub prefetch_hits: Counter,
    pub prefetch_wasted: Counter,
    pub window_resets: Counter,
    pub prefetch_in_flight_bytes: Gauge,
    pub cache_disk_failures: Counter,
    pub not_admitted_blocks: Counter,
    pub passthrough_opens: Counter,
    pub keep_cache_opens: Counter,
    /// Fully cached objects whose bytes did not match the store's checksum of the object.
    pub store_checksum_mismatches: Counter,
    /// Fully cached objects whose bytes matched the store's checksum of the object.
    pub store_checksum_matches: Counter,
}

/// One backend's handles, resolved once so that recording is an atomic add.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    name: String,
    pub read_bytes: Counter,
    /// Bytes stored by writes (single PUTs and upload parts).
    pub written_bytes: Counter,
    requests: [Counter; REQUESTS],
    first_byte: [Histogram; REQUESTS],
    total: [Histogram; REQUESTS],
    errors: Family<BackendKindLabels, Counter>,
    retries: Family<BackendReasonLabels, Counter>,
    give_ups: Family<BackendReasonLabels, Counter>,
    /// Seconds retries waited for a store's `Retry-After` or for the shared retry budget.
    retry_wait_seconds: Family<BackendReasonLabels, Counter<f64, AtomicU64>>,
    /// Metadata answers served from what the mount knew while the store could not be asked.
    pub stale_served: Counter,
    /// Lookups by where their answer came from ([`LookupAnswer`]).
    lookups: [Counter; 4],
    /// Listing pages fetched because a lookup started the listing (not `ls`).
    pub lookup_listing_pages: Counter,
    auth_refreshes: Counter,
    auth_failures: Counter,
    /// Created at the first token, so backends without tokens show no expiry.
    auth_expiry: Family<AuthLabels, Gauge<f64, AtomicU64>>,
}

/// Backend request kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Get,
    Head,
    List,
    /// An object stored in one request.
    Put,
    /// A multipart upload started.
    Upload,
    /// A part of an upload stored.
    Part,
    /// An upload made the object.
    Complete,
    /// An upload dropped.
    Abort,
    /// A copy inside the store (a rename).
    Copy,
    Delete,
}

/// How many [`Request`] kinds there are.
const REQUESTS: usize = 10;

impl Request {
    const ALL: [Request; REQUESTS] = [
        Request::Get,
        Request::Head,
        Request::List,
        Request::Put,
        Request::Upload,
        Request::Part,
        Request::Complete,
        Request::Abort,
        Request::Copy,
        Request::Delete,
    ];

    fn name(self) -> &'static str {
        match self {
            Request::Get => "get",
            Request::Head => "head",
            Request::List => "list",
            Request::Put => "put",
            Request::Upload => "upload",
            Request::Part => "part",
            Request::Complete => "complete",
            Request::Abort => "abort",
            Request::Copy => "copy",
            Request::Delete => "delete",
        }
    }
}

/// Where a lookup's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupAnswer {
    /// What the mount knew: a complete listing of the parent, or the child's metadata,
    /// younger than `metadata_ttl`.
    Known,
    /// A listing of the parent in progress (started by this or an earlier lookup).
    Listing,
    /// The name is known not to exist (`negative_ttl`).
    Negative,
    /// The store was asked (a HEAD of the object and a one-key list of the prefix).
    Store,
}

impl LookupAnswer {
    const ALL: [LookupAnswer; 4] = [
        LookupAnswer::Known,
        LookupAnswer::Listing,
        LookupAnswer::Negative,
        LookupAnswer::Store,
    ];

    fn name(self) -> &'static str {
        match self {
            LookupAnswer::Known => "known",
            LookupAnswer::Listing => "listing",
            LookupAnswer::Negative => "negative",
            LookupAnswer::Store => "store",
        }
    }
}

/// Classes of backend errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store asked us to slow down (HTTP 429, 503 SlowDown).
    Throttled,
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// HTTP 5xx.
    Server,
    /// HTTP 4xx, including a missing object and a changed ETag (412).
    Client,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Throttled,
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Server,
        ErrorKind::Client,
        ErrorKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Server => "server",
            ErrorKind::Client => "client",
            ErrorKind::Other => "other",
        }
    }
}

impl BackendMetrics {
    /// Handles that no registry exposes (for tools and tests that build backends alone).
    pub fn detached(name: &str) -> BackendMetrics {
        BackendMetrics {
            name: name.to_string(),
            read_bytes: Counter::default(),
            written_bytes: Counter::default(),
            requests: Default::default(),
            first_byte: std::array::from_fn(|_| request_latency()),
            total: std::array::from_fn(|_| request_latency()),
            errors: Family::default(),
            retries: Family::default(),
            give_ups: Family::default(),
            retry_wait_seconds: Family::default(),
            stale_served: Counter::default(),
            lookups: Default::default(),
            lookup_listing_pages: Counter::default(),
            auth_refreshes: Counter::default(),
            auth_failures: Counter::default(),
            auth_expiry: Family::default(),
        }
    }

    /// Counts one lookup answered from `answer`.
    pub fn lookup(&self, answer: LookupAnswer) {
        self.lookups[answer as usize].inc();
    }

    /// Lookups answered from `answer` so far.
    pub fn lookups(&self, answer: LookupAnswer) -> u64 {
        self.lookups[answer as usize].get()
    }

    /// A token was refreshed; it is valid for `expires_in` seconds.
    pub fn auth_refreshed(&self, expires_in: f64) {
        self.auth_refreshes.inc();
        self.auth_expiry(expires_in);
    }

    /// A token refresh failed.
    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    /// Seconds until the current token expires (negative once it has).
    pub fn auth_expiry(&self, seconds: f64) {
        self.auth_expiry
            .get_or_create(&AuthLabels {
                backend: self.name.clone(),
            })
            .set(seconds);
    }

    /// Counts one request and its latency: until the first byte of the answer, and in all.
    pub fn request(&self, r: Request, first_byte: std::time::Duration, total: std::time::Duration) {
        if !recording() {
            return;
        }
        let i = r as usize;
        self.requests[i].inc();
        self.first_byte[i].observe_duration(first_byte);
        self.total[i].observe_duration(total);
    }

    /// This backend's labels with `reason`.
    fn reason(&self, reason: &'static str) -> BackendReasonLabels {
        BackendReasonLabels {
            backend: self.name.clone(),
            reason,
        }
    }

    /// Counts one attempt that repeats a request whose last attempt failed with `reason`.
    pub fn retry(&self, reason: ErrorKind) {
        if recording() {
            self.retries
                .get_or_create(&self.reason(reason.name()))
                .inc();
        }
    }

    /// Counts one request the retry policy stopped retrying.
    pub fn give_up(&self, why: GiveUp) {
        if recording() {
            self.give_ups.get_or_create(&self.reason(why.name())).inc();
        }
    }

    /// Adds time a retry waited, for `cause`: `retry_after` (the store asked for it) or
    /// `budget` (the backend's shared retry budget was spent).
    pub fn retry_wait(&self, cause: &'static str, waited: std::time::Duration) {
        if recording() {
            self.retry_wait_seconds
                .get_or_create(&self.reason(cause))
                .inc_by(waited.as_secs_f64());
        }
    }

    /// Counts one failed request.
    pub fn error(&self, kind: ErrorKind) {
        if !recording() {
            return;
        }
        self.errors
            .get_or_create(&BackendKindLabels {
                backend: self.name.clone(),
                kind: kind.name(),
            })
            .inc();
    }
}

/// What the cache reports at scrape time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheFigures {
    pub used_bytes: u64,
    /// The size cap in bytes (`cache.max_size`, resolved).
    pub capacity_bytes: u64,
    pub objects: u64,
    /// The cache disk's size and free bytes.
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    /// Since the daemon started.
    pub evicted_blocks: u64,
    pub corrupt_blocks: u64,
}

/// Reads the cache's figures at scrape time.
pub type CacheSource = Box<dyn Fn() -> CacheFigures + Send + Sync>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SharedOpLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The shared tier's handles (`warpdrive_shared_*`; doc/METRICS.md). Events are per chunk,
/// so a family lookup per event costs nothing that matters.
#[derive(Debug, Clone)]
pub struct SharedMetrics {
    requests: Family<SharedOpLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    invalid: Family<ReasonLabels, Counter>,
    avoided: Family<BackendLabels, Counter>,
    waits: HistogramFamily<OutcomeLabels>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl Default for SharedMetrics {
    fn default() -> SharedMetrics {
        SharedMetrics {
            requests: Family::default(),
            bytes: Family::default(),
            invalid: Family::default(),
            avoided: Family::default(),
            waits: Family::new_with_constructor(request_latency),
        }
    }
}

impl SharedMetrics {
    /// Handles that record into families of their own, registered nowhere (tests).
    pub fn detached() -> SharedMetrics {
        SharedMetrics::default()
    }

    /// A request to the shared store: `op` (`get`, `put`, ...) and how it ended.
    pub fn request(&self, op: &'static str, result: &'static str) {
        add(
            &self.requests.get_or_create(&SharedOpLabels { op, result }),
            1,
        );
    }

    pub fn requests(&self, op: &'static str, result: &'static str) -> u64 {
        self.requests
            .get_or_create(&SharedOpLabels { op, result })
            .get()
    }

    /// Chunk bytes read from (`read`) or written to (`written`) the shared store.
    pub fn bytes(&self, direction: &'static str, n: u64) {
        add(&self.bytes.get_or_create(&DirectionLabels { direction }), n);
    }

    /// A chunk refused on reading, by why.
    pub fn invalid(&self, reason: &'static str) {
        add(&self.invalid.get_or_create(&ReasonLabels { reason }), 1);
    }

    pub fn invalids(&self, reason: &'static str) -> u64 {
        self.invalid.get_or_create(&ReasonLabels { reason }).get()
    }

    /// A wait for a chunk another node holds the lease of, by how it ended (`filled`,
    /// `expired`, `failed`).
    pub fn wait(&self, outcome: &'static str, waited: std::time::Duration) {
        self.waits
            .get_or_create(&OutcomeLabels { outcome })
            .observe_duration(waited);
    }

    pub fn waits(&self, outcome: &'static str) -> u64 {
        self.waits.get_or_create(&OutcomeLabels { outcome }).count()
    }

    /// Bytes of `backend`'s objects read from the tier instead of the origin.
    pub fn avoided(&self, backend: &str, n: u64) {
        let l = BackendLabels {
            backend: backend.to_string(),
        };
        add(&self.avoided.get_or_create(&l), n);
    }
}

/// A plan's labels: its job and rank. Plans are few (at most 256 at once), and a replaced
/// or cleared plan's series are removed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    job: String,
    rank: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanOutcomeLabels {
    job: String,
    rank: String,
    outcome: &'static str,
}

/// Epoch plans and data stalls (`warpdrive_plan_*`, `warpdrive_read_wait_seconds`;
/// doc/METRICS.md).
#[derive(Debug, Clone, Default)]
pub struct PlanMetrics {
    entries: Family<PlanOutcomeLabels, Counter>,
    fetched: Family<PlanLabels, Counter>,
    lead_bytes: Family<PlanLabels, Gauge>,
    lead_seconds: Family<PlanLabels, Gauge<f64, AtomicU64>>,
    plan_wait: Family<PlanLabels, Counter<f64, AtomicU64>>,
    read_wait: Family<BackendLabels, Counter<f64, AtomicU64>>,
}

impl PlanMetrics {
    fn labels(job: &str, rank: u32) -> PlanLabels {
        PlanLabels {
            job: job.to_string(),
            rank: rank.to_string(),
        }
    }

    /// A planned entry the reader reached, by outcome (`ahead`, `late`, `failed`).
    pub fn entry(&self, job: &str, rank: u32, outcome: &'static str) {
        let l = PlanOutcomeLabels {
            job: job.to_string(),
            rank: rank.to_string(),
            outcome,
        };
        add(&self.entries.get_or_create(&l), 1);
    }

    /// Bytes a plan's prefetch fetched from the backends.
    pub fn fetched(&self, job: &str, rank: u32, n: u64) {
        add(&self.fetched.get_or_create(&Self::labels(job, rank)), n);
    }

    /// A plan's lead: bytes fetched ahead of its reader, and seconds at its pace.
    pub fn lead(&self, job: &str, rank: u32, bytes: u64, seconds: f64) {
        if recording() {
            let l = Self::labels(job, rank);
            self.lead_bytes
                .get_or_create(&l)
                .set(bytes.min(i64::MAX as u64) as i64);
            self.lead_seconds.get_or_create(&l).set(seconds);
        }
    }

    /// Seconds a read waited on a backend: per backend, and per plan when the file is in one.
    pub fn read_wait(&self, backend: &str, plan: Option<(&str, u32)>, waited: std::time::Duration) {
        if !recording() {
            return;
        }
        let l = BackendLabels {
            backend: backend.to_string(),
        };
        self.read_wait
            .get_or_create(&l)
            .inc_by(waited.as_secs_f64());
        if let Some((job, rank)) = plan {
            self.plan_wait
                .get_or_create(&Self::labels(job, rank))
                .inc_by(waited.as_secs_f64());
        }
    }

    pub fn read_wait_seconds(&self, backend: &str) -> f64 {
        let l = BackendLabels {
            backend: backend.to_string(),
        };
        self.read_wait.get_or_create(&l).get()
    }

    /// Forgets a replaced or cleared plan's series.
    pub fn remove(&self, job: &str, rank: u32) {
        let l = Self::labels(job, rank);
        self.fetched.remove(&l);
        self.lead_bytes.remove(&l);
        self.lead_seconds.remove(&l);
        self.plan_wait.remove(&l);
        for outcome in ["ahead", "late", "failed"] {
            self.entries.remove(&PlanOutcomeLabels {
                job: job.to_string(),
                rank: rank.to_string(),
                outcome,
            });
        }
    }
}

/// Files written through the mount (`warpdrive_write_*`; doc/METRICS.md).
#[derive(Debug, Clone)]
pub struct WriteMetrics {
    /// Bytes written by processes (before any upload).
    pub bytes: Counter,
    /// Seconds each `write` call took in the daemon (a part waiting for room in the memory
    /// budget makes it longer).
    pub write_seconds: Histogram,
    /// Commits that made an object.
    pub commits: Counter,
    /// Commits that failed (the writer got the error).
    pub commit_failures: Counter,
    /// Seconds each commit took (the last part, the completion, the new object's HEAD).
    pub commit_seconds: Histogram,
    /// Write handles open.
    pub open_files: Gauge,
    /// Bytes spooled on the cache disk by files being written (until their last close).
    pub spool_bytes: Gauge,
}

impl Default for WriteMetrics {
    fn default() -> Self {
        WriteMetrics {
            bytes: Counter::default(),
            write_seconds: request_latency(),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            commit_seconds: request_latency(),
            open_files: Gauge::default(),
            spool_bytes: Gauge::default(),
        }
    }
}

impl WriteMetrics {
    /// One `write` of `n` bytes that took `took`.
    pub fn write(&self, n: u64, took: std::time::Duration) {
        if recording() {
            self.bytes.inc_by(n);
            self.write_seconds.observe_duration(took);
        }
    }

    /// A commit that made an object in `took`.
    pub fn commit(&self, took: std::time::Duration) {
        if recording() {
            self.commits.inc();
            self.commit_seconds.observe_duration(took);
        }
    }

    /// A commit that failed.
    pub fn failed(&self) {
        add(&self.commit_failures, 1);
    }
}

/// The daemon's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub fuse: FuseMetrics,
    pub read: ReadMetrics,
    backend_read_bytes: Family<BackendLabels, Counter>,
    backend_written_bytes: Family<BackendLabels, Counter>,
    backend_requests: Family<BackendOpLabels, Counter>,
    backend_first_byte: HistogramFamily<BackendOpLabels>,
    backend_total: HistogramFamily<BackendOpLabels>,
    backend_errors: Family<BackendKindLabels, Counter>,
    backend_retries: Family<BackendReasonLabels, Counter>,
    backend_give_ups: Family<BackendReasonLabels, Counter>,
    backend_retry_wait: Family<BackendReasonLabels, Counter<f64, AtomicU64>>,
    backend_stale_served: Family<BackendLabels, Counter>,
    backend_lookups: Family<BackendAnswerLabels, Counter>,
    backend_lookup_listing_pages: Family<BackendLabels, Counter>,
    pub shared: SharedMetrics,
    pub plan: PlanMetrics,
    pub write: WriteMetrics,
    pub auth_refreshes: Family<AuthLabels, Counter>,
    pub auth_refresh_failures: Family<AuthLabels, Counter>,
    pub auth_token_expiry: Family<AuthLabels, Gauge<f64, AtomicU64>>,
    cache: CacheSlot,
}

/// The `backend` label of the auth families, which the credential code records into.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub backend: String,
}

impl Metrics {
    /// Every family, registered. `version` and `commit` go into `warpdrive_build_info`.
    pub fn new(version: &str, commit: &str) -> Metrics {
        let mut r = Registry::default();
        // Every operation's series exists from the start (at 0), and its handle is the
        // family's own counter.
        let ops: Family<OpLabels, Counter> = Family::default();
        let fuse = FuseMetrics {
            ops: Op::ALL
                .iter()
                .map(|op| ops.get_or_create(&OpLabels { op: op.name() }).clone())
                .collect(),
            errors: Family::default(),
            read_latency: read_latency(),
            read_size: Histogram::plain(READ_SIZE_BOUNDS),
            open_handles: Gauge::default(),
        };
        // The errors every mount can produce exist from the start (at 0), so dashboards and
        // alerts see the series before the first failure; others appear when they happen.
        for (op, errno) in [
            (Op::Lookup, libc_errno::ENOENT),
            (Op::Lookup, libc_errno::EIO),
            (Op::Getattr, libc_errno::EIO),
            (Op::Open, libc_errno::EIO),
            (Op::Open, libc_errno::ESTALE),
            (Op::Read, libc_errno::EIO),
            (Op::Read, libc_errno::ESTALE),
            (Op::Readdir, libc_errno::EIO),
            (Op::Opendir, libc_errno::EIO),
            (Op::Write, libc_errno::EROFS),
        ] {
            let _ = fuse.errors.get_or_create(&OpErrnoLabels {
                op: op.name(),
                errno: errno_name(errno),
            });
        }
        r.register(
            "warpdrive_fuse_operations",
            "FUSE operations received, by operation",
            ops,
        );
        r.register(
            "warpdrive_fuse_errors",
            "FUSE operations answered with an error, by operation and errno",
            fuse.errors.clone(),
        );
        r.register(
            "warpdrive_fuse_read_latency_seconds",
            "Time from a FUSE read request to its reply",
            fuse.read_latency.clone(),
        );
        r.register(
            "warpdrive_fuse_read_size_bytes",
            "Bytes returned by each FUSE read",
            fuse.read_size.clone(),
        );
        r.register(
            "warpdrive_fuse_open_handles",
            "Files open through the mount",
            fuse.open_handles.clone(),
        );

        let read = ReadMetrics::default();
        let counters: [(&str, &str, &Counter); 12] = [
            (
                "warpdrive_cache_hit_blocks",
                "Blocks read from the cache",
                &read.hit_blocks,
            ),
            (
                "warpdrive_cache_hit_bytes",
                "Bytes read from the cache",
                &read.hit_bytes,
            ),
            (
                "warpdrive_cache_miss_blocks",
                "Blocks a read needed that were not cached",
                &read.miss_blocks,
            ),
            (
                "warpdrive_cache_miss_bytes",
                "Bytes of blocks a read needed that were not cached",
                &read.miss_bytes,
            ),
            (
                "warpdrive_cache_disk_failures",
                "Cache disk failures (I/O errors, read-only disk); reads then bypass the cache",
                &read.cache_disk_failures,
            ),
            (
                "warpdrive_cache_not_admitted_blocks",
                "Blocks not cached because the cache could not make room within its limits",
                &read.not_admitted_blocks,
            ),
            (
                "warpdrive_cache_passthrough_opens",
                "Opens served with FUSE passthrough (the kernel reads the cache file)",
                &read.passthrough_opens,
            ),
            (
                "warpdrive_cache_keep_cache_opens",
                "Opens that kept the kernel's page cache of the file",
                &read.keep_cache_opens,
            ),
            (
                "warpdrive_cache_store_checksum_mismatches",
                "Fully cached objects whose bytes did not match the store's checksum (refetched)",
                &read.store_checksum_mismatches,
            ),
            (
                "warpdrive_cache_store_checksum_matches",
                "Fully cached objects whose bytes matched the store's checksum of the object",
                &read.store_checksum_matches,
            ),
            (
                "warpdrive_prefetch_hits",
                "Prefetched blocks later read",
                &read.prefetch_hits,
            ),
            (
                "warpdrive_prefetch_wasted",
                "Prefetched blocks evicted or abandoned before they were read",
                &read.prefetch_wasted,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "warpdrive_prefetch_window_resets",
            "Sequential windows reset by a random read",
            read.window_resets.clone(),
        );
        r.register(
            "warpdrive_prefetch_in_flight_bytes",
            "Prefetch bytes requested and not yet cached",
            read.prefetch_in_flight_bytes.clone(),
        );

        let m = Metrics {
            fuse,
            read,
            backend_read_bytes: Family::default(),
            backend_written_bytes: Family::default(),
            backend_requests: Family::default(),
            backend_first_byte: Family::new_with_constructor(request_latency),
            backend_total: Family::new_with_constructor(request_latency),
            backend_errors: Family::default(),
            backend_retries: Family::default(),
            backend_give_ups: Family::default(),
            backend_retry_wait: Family::default(),
            backend_stale_served: Family::default(),
            backend_lookups: Family::default(),
            backend_lookup_listing_pages: Family::default(),
            shared: SharedMetrics::default(),
            plan: PlanMetrics::default(),
            write: WriteMetrics::default(),
            auth_refreshes: Family::default(),
            auth_refresh_failures: Family::default(),
            auth_token_expiry: Family::default(),
            cache: CacheSlot::default(),
            registry: Registry::default(),
        };
        r.register(
            "warpdrive_backend_read_bytes",
            "Bytes received from a backend by ranged GETs",
            m.backend_read_bytes.clone(),
        );
        r.register(
            "warpdrive_backend_written_bytes",
            "Bytes stored in a backend by writes through the mount (PUTs and upload parts)",
            m.backend_written_bytes.clone(),
        );
        r.register(
            "warpdrive_backend_requests",
            "Requests to a backend, by operation (get, head, list; put, upload, part, complete, abort, copy, delete for writes)",
            m.backend_requests.clone(),
        );
        r.register(
            "warpdrive_backend_first_byte_seconds",
            "Time from sending a backend request to the first byte of its answer",
            m.backend_first_byte.clone(),
        );
        r.register(
            "warpdrive_backend_request_seconds",
            "Time from sending a backend request to the end of its answer",
            m.backend_total.clone(),
        );
        r.register(
            "warpdrive_backend_errors",
            "Failed backend requests, by kind (throttled, timeout, connection, server, client, other)",
            m.backend_errors.clone(),
        );
        r.register(
            "warpdrive_backend_retries",
            "Backend requests sent again after a transient failure, by the failure's kind",
            m.backend_retries.clone(),
        );
        r.register(
            "warpdrive_backend_give_ups",
            "Backend requests no longer retried: past retry.deadline, or the store unreachable",
            m.backend_give_ups.clone(),
        );
        r.register(
            "warpdrive_backend_retry_wait_seconds",
            "Time retries waited for a store's Retry-After or the shared retry budget",
            m.backend_retry_wait.clone(),
        );
        r.register(
            "warpdrive_backend_stale_served",
            "Metadata answers served from what the mount knew while the store could not be asked (stale_if_error)",
            m.backend_stale_served.clone(),
        );
        r.register(
            "warpdrive_backend_lookups",
            "Lookups by where the answer came from: known (fresh metadata or a complete listing), listing (a listing in progress), negative (a name known absent), store (asked the store)",
            m.backend_lookups.clone(),
        );
        r.register(
            "warpdrive_backend_lookup_listing_pages",
            "Listing pages fetched because a lookup in a directory not yet listed started its listing",
            m.backend_lookup_listing_pages.clone(),
        );
        r.register(
            "warpdrive_shared_requests",
            "Requests to the shared tier's store, by operation (get, put) and result (hit, absent, invalid, error, timeout, skipped while the tier is marked down; created, exists)",
            m.shared.requests.clone(),
        );
        r.register(
            "warpdrive_shared_bytes",
            "Chunk bytes read from (read) and written to (written) the shared tier",
            m.shared.bytes.clone(),
        );
        r.register(
            "warpdrive_shared_invalid_chunks",
            "Chunks refused on reading (then fetched from the origin), by reason: header, format, identity, length, data",
            m.shared.invalid.clone(),
        );
        r.register(
            "warpdrive_shared_lease_wait_seconds",
            "Waits for a chunk another node was filling (it held the chunk's lease), by outcome: filled (then read from the tier), expired (the lease ran out: read from the origin), failed",
            m.shared.waits.clone(),
        );
        r.register(
            "warpdrive_shared_origin_bytes_avoided",
            "Bytes of a backend's objects read from the shared tier instead of the origin",
            m.shared.avoided.clone(),
        );
        r.register(
            "warpdrive_read_wait_seconds",
            "Seconds reads spent waiting for a backend (a data stall: the reader was blocked in read), by backend",
            m.plan.read_wait.clone(),
        );
        r.register(
            "warpdrive_plan_entries",
            "Planned entries the reader reached, by plan (job, rank) and outcome: ahead (fetched before the reader reached it), late (its fetch was under way or not started), failed",
            m.plan.entries.clone(),
        );
        r.register(
            "warpdrive_plan_fetched_bytes",
            "Bytes a plan's prefetch fetched from the backends, by plan",
            m.plan.fetched.clone(),
        );
        r.register(
            "warpdrive_plan_lead_bytes",
            "Bytes fetched ahead of a plan's reader and not yet reached, by plan",
            m.plan.lead_bytes.clone(),
        );
        r.register(
            "warpdrive_plan_lead_seconds",
            "A plan's lead in seconds of its reader's recent pace, by plan",
            m.plan.lead_seconds.clone(),
        );
        r.register(
            "warpdrive_plan_read_wait_seconds",
            "Seconds reads of a plan's files spent waiting for a backend, by plan",
            m.plan.plan_wait.clone(),
        );
        r.register(
            "warpdrive_write_bytes",
            "Bytes processes wrote to files through the mount",
            m.write.bytes.clone(),
        );
        r.register(
            "warpdrive_write_seconds",
            "Seconds each write call to a file being written took in the daemon",
            m.write.write_seconds.clone(),
        );
        r.register(
            "warpdrive_write_commits",
            "Files written through the mount committed to their store (at close or fsync)",
            m.write.commits.clone(),
        );
        r.register(
            "warpdrive_write_commit_failures",
            "Commits of files written through the mount that failed (the writer got the error)",
            m.write.commit_failures.clone(),
        );
        r.register(
            "warpdrive_write_commit_seconds",
            "Seconds each commit took: the last part, completing the upload, reading back the new object's metadata",
            m.write.commit_seconds.clone(),
        );
        r.register(
            "warpdrive_write_open_files",
            "Handles open on files being written through the mount",
            m.write.open_files.clone(),
        );
        r.register(
            "warpdrive_write_spool_bytes",
            "Bytes spooled on the cache disk by files being written through the mount",
            m.write.spool_bytes.clone(),
        );
        r.register(
            "warpdrive_auth_refreshes",
            "Credential refreshes, by backend",
            m.auth_refreshes.clone(),
        );
        r.register(
            "warpdrive_auth_refresh_failures",
            "Failed credential refreshes, by backend",
            m.auth_refresh_failures.clone(),
        );
        r.register(
            "warpdrive_auth_token_expiry_seconds",
            "Seconds until the backend's current token expires",
            m.auth_token_expiry.clone(),
        );
        r.register_collector(Box::new(CacheCollector(m.cache.clone())));
        r.register_collector(Box::new(ProcessCollector {
            started: Instant::now(),
            version: version.to_string(),
            commit: commit.to_string(),
        }));
        Metrics { registry: r, ..m }
    }

    /// Handles for one backend, registered under its name.
    pub fn backend(&self, name: &str) -> BackendMetrics {
        let l = BackendLabels {
            backend: name.to_string(),
        };
        let op = |r: Request| BackendOpLabels {
            backend: name.to_string(),
            op: r.name(),
        };
        // Every error kind, retry reason, give-up reason and the auth counters exist from
        // the start, at 0.
        let reason = |reason: &'static str| BackendReasonLabels {
            backend: name.to_string(),
            reason,
        };
        for kind in ErrorKind::ALL {
            let _ = self.backend_errors.get_or_create(&BackendKindLabels {
                backend: name.to_string(),
                kind: kind.name(),
            });
            let _ = self.backend_retries.get_or_create(&reason(kind.name()));
        }
        for g in GiveUp::ALL {
            let _ = self.backend_give_ups.get_or_create(&reason(g.name()));
        }
        for cause in ["retry_after", "budget"] {
            let _ = self.backend_retry_wait.get_or_create(&reason(cause));
        }
        let auth = AuthLabels {
            backend: name.to_string(),
        };
        BackendMetrics {
            name: name.to_string(),
            read_bytes: self.backend_read_bytes.get_or_create(&l).clone(),
            written_bytes: self.backend_written_bytes.get_or_create(&l).clone(),
            requests: Request::ALL.map(|r| self.backend_requests.get_or_create(&op(r)).clone()),
            first_byte: Request::ALL.map(|r| self.backend_first_byte.get_or_create(&op(r)).clone()),
            total: Request::ALL.map(|r| self.backend_total.get_or_create(&op(r)).clone()),
            errors: self.backend_errors.clone(),
            retries: self.backend_retries.clone(),
            give_ups: self.backend_give_ups.clone(),
            retry_wait_seconds: self.backend_retry_wait.clone(),
            stale_served: self.backend_stale_served.get_or_create(&l).clone(),
            lookups: LookupAnswer::ALL.map(|a| {
                self.backend_lookups
                    .get_or_create(&BackendAnswerLabels {
                        backend: name.to_string(),
                        answer: a.name(),
                    })
                    .clone()
            }),
            lookup_listing_pages: self.backend_lookup_listing_pages.get_or_create(&l).clone(),
            auth_refreshes: self.auth_refreshes.get_or_create(&auth).clone(),
            auth_failures: self.auth_refresh_failures.get_or_create(&auth).clone(),
            auth_expiry: self.auth_token_expiry.clone(),
        }
    }

    /// Where the cache's figures come from (set once the cache is open).
    pub fn set_cache_source(&self, source: CacheSource) {
        *self.cache.0.write() = Some(source);
    }

    /// The Prometheus text format (0.0.4), what `/metrics` serves by default.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The OpenMetrics text format, for scrapers that ask for it.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Where the cache's figures come from, once the cache is open.
#[derive(Default, Clone)]
struct CacheSlot(Arc<RwLock<Option<CacheSource>>>);

impl std::fmt::Debug for CacheSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSlot")
            .field("set", &self.0.read().is_some())
            .finish()
    }
}

#[derive(Debug)]
struct CacheCollector(CacheSlot);

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(v as i64);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for CacheCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(f) = self.0.0.read().as_ref().map(|s| s()) else {
            return Ok(());
        };
        gauge(
            &mut e,
            "warpdrive_cache_used_bytes",
            "Bytes of cached blocks",
            f.used_bytes,
        )?;
        gauge(
            &mut e,
            "warpdrive_cache_capacity_bytes",
            "The cache's size cap in bytes",
            f.capacity_bytes,
        )?;
        gauge(
            &mut e,
            "warpdrive_cache_objects",
            "Object versions with cached blocks",
            f.objects,
        )?;
        gauge(
            &mut e,
            "warpdrive_cache_disk_bytes",
            "Size of the cache's disk",
            f.disk_bytes,
        )?;
        gauge(
            &mut e,
            "warpdrive_cache_disk_free_bytes",
            "Free bytes on the cache's disk",
            f.disk_free_bytes,
        )?;
        counter(
            &mut e,
            "warpdrive_cache_evicted_blocks",
            "Blocks evicted to respect the cache's limits",
            f.evicted_blocks,
        )?;
        counter(
            &mut e,
            "warpdrive_cache_corrupt_blocks",
            "Cached blocks that failed their checksum (dropped and refetched)",
            f.corrupt_blocks,
        )
    }
}

#[derive(Debug)]
struct ProcessCollector {
    started: Instant,
    version: String,
    commit: String,
}

/// Resident memory from `/proc/self/statm` (pages × page size).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let up = ConstGauge::new(self.started.elapsed().as_secs_f64());
        up.encode(e.encode_descriptor(
            "warpdrive_uptime_seconds",
            "Seconds since the daemon started",
            None,
            up.metric_type(),
        )?)?;
        gauge(
            &mut e,
            "warpdrive_resident_memory_bytes",
            "The daemon's resident memory",
            resident_bytes(),
        )?;
        gauge(
            &mut e,
            "warpdrive_open_fds",
            "File descriptors the daemon has open",
            open_fds(),
        )?;
        let info = Family::<BuildLabels, Gauge>::default();
        info.get_or_create(&BuildLabels {
            version: self.version.clone(),
            commit: self.commit.clone(),
        })
        .set(1);
        info.encode(e.encode_descriptor(
            "warpdrive_build_info",
            "The daemon's version and git commit (always 1)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[cfg(test)]
mod tests;
