//! WarpDrive's configuration: the YAML schema, its parsing and its validation.
//!
//! The file is parsed in two steps. First `serde` reads it into the `raw` structs, which
//! mirror the YAML one to one and reject unknown fields (`deny_unknown_fields`), so a typo
//! such as `metdata_ttl` is an error and not a silently ignored line. Then [`Config::from_raw`]
//! checks everything serde cannot express (a backend has exactly one kind, names are unique
//! and are one path component, sizes and durations parse, addresses are sockets) and builds
//! the resolved [`Config`] that every other layer consumes. No other crate reads YAML.
//!
//! Every error is one [`ConfigError`] whose message names the field and says what to change;
//! binaries print it as is and exit with code 2.

mod raw;
mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use units::{format_size, parse_duration, parse_size};

/// The default location of the config file, as in the seed.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/warpdrive/config.yaml";

/// Default metadata TTL: a listing or attribute older than this is fetched again.
/// One minute matches the seed and is short enough that new shards appear quickly.
pub const DEFAULT_METADATA_TTL: Duration = Duration::from_secs(60);

/// Default number of FUSE worker threads. Reads never block these threads on the network
/// (backend I/O runs on the tokio runtime), so a few are enough to keep the kernel queue busy.
/// Measured with 16 readers of small files on two cores: 2 and 4 threads equal within noise,
/// 8 and 16 up to 60 % slower warm (doc/BENCHMARKS.md, "Small files").
pub const DEFAULT_FUSE_THREADS: usize = 4;

/// Default [`FuseConfig::passthrough_min_size`]: one default block. Warm opens of 110 KB files
/// ran 1.26× faster keep-cache than by passthrough (doc/BENCHMARKS.md, "Small files").
pub const DEFAULT_PASSTHROUGH_MIN_SIZE: u64 = 1 << 20;

/// Default metrics listener: loopback only, so nothing is exposed unless asked for.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";

/// The control directory in the mount root (`<mount>/.warpdrive/plan`): no backend may take
/// its name.
pub const CONTROL_DIR: &str = ".warpdrive";

/// Longest backend name: it becomes a directory name under the mount point.
const MAX_NAME_BYTES: usize = 255;

/// A configuration error: one sentence that names the field and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the path given with --config")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// How long listings and attributes are trusted before they are fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataTtl {
    /// Re-fetch after this long.
    For(Duration),
    /// Never re-fetch while mounted: for immutable datasets.
    Indefinite,
}

impl MetadataTtl {
    /// Whether something fetched `age` ago must be fetched again.
    pub fn expired(&self, age: Duration) -> bool {
        match self {
            MetadataTtl::For(ttl) => age >= *ttl,
            MetadataTtl::Indefinite => false,
        }
    }
}

impl Serialize for MetadataTtl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeLimit::Bytes(b) => write!(f, "{}", units::format_size(*b)),
            SizeLimit::PercentOfDisk(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for SizeLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for MetadataTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataTtl::For(d) => write!(f, "{}", humantime::format_duration(*d)),
            MetadataTtl::Indefinite => f.write_str("indefinite"),
        }
    }
}

/// The cache size limit: absolute, or a share of the cache disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeLimit {
    Bytes(u64),
    PercentOfDisk(f64),
}

impl SizeLimit {
    /// The limit in bytes on a disk of `disk` bytes.
    pub fn bytes(self, disk: u64) -> u64 {
        match self {
            SizeLimit::Bytes(b) => b,
            SizeLimit::PercentOfDisk(p) => (disk as f64 * p / 100.0) as u64,
        }
    }
}

/// The block cache's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheConfig {
    pub dir: PathBuf,
    /// Most the cache may hold.
    pub max_size: SizeLimit,
    /// Free space the cache always leaves on its disk.
    pub min_free: SizeLimit,
    /// Bytes per cache block (a power of two).
    #[serde(serialize_with = "ser_size")]
    pub block_size: u64,
    /// Bytes of prefetch in flight at once, over every open file.
    #[serde(serialize_with = "ser_size")]
    pub prefetch_budget: u64,
}

fn ser_size<S: serde::Serializer>(b: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&units::format_size(*b))
}

/// Default cache block: see doc/BENCHMARKS.md ("Block size") for the measurement behind it.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
/// Default prefetch budget, shared by every open file.
pub const DEFAULT_PREFETCH_BUDGET: u64 = 256 << 20;

/// Whether fully cached files are served by FUSE passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Passthrough {
    /// When the kernel supports it.
    Auto,
    /// Never: every read reaches the daemon (and is checksummed).
    Off,
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// The config asked, explicitly, for a listener other programs on the network can reach.
    pub allow_remote: bool,
    /// Record and serve metrics (on by default; off only to measure what they cost).
    pub enabled: bool,
}

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where the control API is served: always on a Unix socket private to the daemon's user,
/// and on TCP only when `listen` is set, behind a bearer token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlConfig {
    /// The Unix socket (`control.sock` in the cache directory unless set).
    pub socket: PathBuf,
    /// An optional TCP listener (loopback unless `allow_remote`), always behind the token.
    pub listen: Option<SocketAddr>,
    /// A file (mode 0600) holding the bearer token for TCP; without one, the token comes from
    /// `WARPDRIVE_TOKEN` or is generated into `control.token` in the cache directory.
    pub token_file: Option<PathBuf>,
    pub allow_remote: bool,
}

/// FUSE session settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FuseConfig {
    /// Threads reading requests from `/dev/fuse`.
    pub threads: usize,
    /// Let other users see the mount. Off by default: a mount is private to its owner.
    pub allow_other: bool,
    pub passthrough: Passthrough,
    /// Files smaller than this are opened with the kernel's page cache kept (served by the
    /// daemon) even when passthrough is on: for small files the passthrough open costs more
    /// than it saves (doc/BENCHMARKS.md, "Small files"). 0: passthrough for every size.
    #[serde(serialize_with = "ser_size")]
    pub passthrough_min_size: u64,
    /// The kernel opens files without asking the daemon (the daemon answers the first `open`
    /// `ENOSYS`): no `OPEN` or `RELEASE` round trip per file, which is most of what a warm
    /// small file costs, at the price of passthrough and of per-descriptor versions (every
    /// descriptor of an inode reads the inode's one version). Off by default.
    pub zero_message_opens: bool,
    /// Serve the control file `<mount>/.warpdrive/plan`, through which readers that cannot
    /// reach the control socket submit epoch plans. On by default; not served with
    /// zero-message opens (the daemon would never hear of the `close` that submits).
    pub control_file: bool,
}

/// A backend's identity and its token, as `status` shows it: filled in by the store layer,
/// carried by the control API (one type for both, so that API clients need not link the
/// stores).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuthState {
    pub mode: String,
    /// Which identity (a client id, never a secret), or what the mode uses.
    pub identity: String,
    /// Seconds the current token remains valid (`None`: no token yet, or none used).
    pub expires_in_seconds: Option<i64>,
    pub refreshes: u64,
    pub failures: u64,
    /// The last refresh failure, while failing.
    pub last_error: Option<String>,
}

/// How a backend authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// The cloud's instance identity (Azure IMDS, AWS instance role, GCP metadata server).
    ManagedIdentity,
    /// Federated tokens from a file (AKS, EKS, GKE).
    WorkloadIdentity,
    /// The cloud's usual environment variables.
    Environment,
    /// No credentials: public data.
    Anonymous,
    /// The emulator's well-known development credentials. Only for loopback endpoints.
    Emulator,
    /// A long-lived key, for those who must: Azure's account key, an S3 access key pair
    /// (`ID:SECRET`), a GCS service-account JSON. Read from `secret_file` (mode 0600) or
    /// `secret_env`, never from the config itself.
    SharedKey,
    /// An Azure SAS token, from `secret_file` (mode 0600) or `secret_env`.
    Sas,
}

impl AuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMode::ManagedIdentity => "managed_identity",
            AuthMode::WorkloadIdentity => "workload_identity",
            AuthMode::Environment => "environment",
            AuthMode::Anonymous => "anonymous",
            AuthMode::Emulator => "emulator",
            AuthMode::SharedKey => "shared_key",
            AuthMode::Sas => "sas",
        }
    }
}

/// Which store a backend points at.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BackendKind {
    Azure {
        account: String,
        container: String,
        /// Blob service URL override (emulators, sovereign clouds).
        endpoint: Option<String>,
    },
    S3 {
        bucket: String,
        /// `None`: the environment's `AWS_REGION` with `auth: environment`, else us-east-1.
        region: Option<String>,
        /// S3-compatible endpoint override (emulators, MinIO, other clouds).
        endpoint: Option<String>,
    },
    Gcs {
        bucket: String,
        /// Base URL override (emulators); `object_store` uses GCS's XML API below it.
        endpoint: Option<String>,
    },
    Local {
        path: PathBuf,
    },
}

impl BackendKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendKind::Azure { .. } => "azure",
            BackendKind::S3 { .. } => "s3",
            BackendKind::Gcs { .. } => "gcs",
            BackendKind::Local { .. } => "local",
        }
    }

    /// A short human description: `azure://account/container`.
    pub fn describe(&self) -> String {
        match self {
            BackendKind::Azure {
                account, container, ..
            } => format!("azure://{account}/{container}"),
            BackendKind::S3 { bucket, .. } => format!("s3://{bucket}"),
            BackendKind::Gcs { bucket, .. } => format!("gs://{bucket}"),
            BackendKind::Local { path } => format!("file://{}", path.display()),
        }
    }

    pub fn endpoint(&self) -> Option<&str> {
        match self {
            BackendKind::Azure { endpoint, .. }
            | BackendKind::S3 { endpoint, .. }
            | BackendKind::Gcs { endpoint, .. } => endpoint.as_deref(),
            BackendKind::Local { .. } => None,
        }
    }
}

/// How long a request to a store is tried again before its reader gets `EIO`
/// (doc/SEMANTICS.md, "Retries"; the mechanism is in `warpdrive-store`'s `retry` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// How long a request that fails transiently (throttled, 5xx, timed out, reset) is tried
    /// again, from its first attempt. Long by default so that a store's bursts of throttling
    /// are never seen by a training job.
    #[serde(serialize_with = "ser_duration")]
    pub deadline: Duration,
    /// How long a store may go without answering anything at all (connections refused or
    /// timing out, no response headers) before requests stop being retried and fail at once,
    /// until it answers again: a dead endpoint costs readers seconds, not the whole deadline.
    #[serde(serialize_with = "ser_duration")]
    pub unreachable: Duration,
}

/// Default [`RetryPolicy::deadline`]: outlasts a 30 s throttling burst with room for the
/// backoff that follows it (at most [`MAX_BACKOFF`] between attempts).
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(120);
/// Default [`Config::stale_if_error`]: a day, so a store's outage does not stop a job that
/// reads what it has cached.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(24 * 3600);
/// Default [`Config::negative_ttl`]: short, because a new object should appear soon after
/// it is written, and long enough that a loop probing missing names does not reach the store
/// at the loop's pace.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Default [`RetryPolicy::unreachable`]: a few connect timeouts in a row.
pub const DEFAULT_UNREACHABLE: Duration = Duration::from_secs(10);
/// The longest pause between two attempts of one request (jittered exponential backoff
/// from 100 ms); also how soon after a burst ends every waiting request has tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            deadline: DEFAULT_RETRY_DEADLINE,
            unreachable: DEFAULT_UNREACHABLE,
        }
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// One backend: a directory under the mount point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendConfig {
    /// The directory name under the mount point.
    pub name: String,
    pub kind: BackendKind,
    /// Key prefix inside the bucket or container, either empty or ending in `/`.
    pub prefix: String,
    pub auth: AuthMode,
    /// Which identity `managed_identity` uses, and where it asks for tokens.
    pub identity: IdentityConfig,
    /// PEM certificates to trust for the store's endpoint, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Where the mount may write new objects (`writable`, `overwrite`, `delete`); nothing by
    /// default.
    #[serde(flatten)]
    pub write: WriteAccess,
    /// The mount's `retry:` policy, copied here because the store layer is built from a
    /// backend's config alone (shown once, at the top level, by `--check-config`).
    #[serde(skip)]
    pub retry: RetryPolicy,
}

/// Where a backend may be written through the mount: new objects under `prefixes` only;
/// everywhere else stays read-only (`EROFS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteAccess {
    /// Directory prefixes below the backend's directory, each empty (the whole backend,
    /// written `/`) or ending in `/`.
    #[serde(rename = "writable", skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// A write may replace an existing object (create over it, rename over it). Off: such a
    /// create fails with `EEXIST`, so two writers cannot silently overwrite each other.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// Objects under the writable prefixes may be deleted (`unlink`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

impl WriteAccess {
    /// Whether `key` (relative to the backend's directory) lies under a writable prefix.
    pub fn allows(&self, key: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| p.is_empty() || key.starts_with(p.as_str()))
    }

    /// Whether files may be created somewhere below directory `dir` (relative, no trailing
    /// `/`; `""` is the backend's root): it is writable, or on the way to a writable prefix.
    pub fn leads_to(&self, dir: &str) -> bool {
        self.allows_dir(dir)
            || self
                .prefixes
                .iter()
                .any(|p| dir.is_empty() || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
    }

    /// Whether directory `dir` (relative, no trailing `/`) lies under a writable prefix, or
    /// is one (`dir/` starts with the prefix).
    pub fn allows_dir(&self, dir: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| match dir.strip_prefix(p.as_str()) {
                Some(_) => true,
                // `p` is `dir/` itself.
                None => p.strip_suffix('/') == Some(dir),
            })
    }
}

/// The details of `auth: { mode: managed_identity, ... }`. None of it is secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityConfig {
    /// A user-assigned identity (Azure), by client id, object id or resource id; the
    /// system-assigned one when none is given.
    pub client_id: Option<String>,
    pub object_id: Option<String>,
    pub resource_id: Option<String>,
    /// The identity endpoint instead of the cloud's standard one: for managed identity the
    /// Azure IMDS token URL, AWS instance metadata or GCP metadata server base URL; for
    /// workload identity the Azure AD token URL or the AWS STS endpoint.
    pub endpoint: Option<String>,
    /// Workload identity: the federated token file (default `AZURE_FEDERATED_TOKEN_FILE` or
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`), read again at every refresh so a rotated token is used.
    pub token_file: Option<PathBuf>,
    /// Workload identity on Azure: the tenant (default `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Workload identity on AWS: the role to assume (default `AWS_ROLE_ARN`).
    pub role_arn: Option<String>,
    /// `shared_key` and `sas`: a file (mode 0600, absolute path) holding the secret...
    pub secret_file: Option<PathBuf>,
    /// ...or the environment variable that holds it. The secret itself is never in the config.
    pub secret_env: Option<String>,
}

impl IdentityConfig {
    /// The identity's name for status output (a client, object or resource id; never a secret).
    pub fn describe(&self) -> String {
        match (&self.client_id, &self.object_id, &self.resource_id) {
            (Some(c), _, _) => format!("client_id {c}"),
            (_, Some(o), _) => format!("object_id {o}"),
            (_, _, Some(r)) => format!("resource_id {r}"),
            _ => "system-assigned".into(),
        }
    }
}

/// Default size of a shared-tier chunk: large enough that a chunk's request overhead is
/// small beside its transfer, small enough that a node holds few in memory while filling.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;
/// Largest shared-tier chunk (a fill holds one whole chunk in memory).
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;
/// Default lease on a chunk being filled: a fetch of one chunk from the origin plus margin.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Whether this node writes to the shared tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedMode {
    /// Reads chunks, fills the ones it fetched from the origin, takes leases.
    ReadWrite,
    /// Reads chunks only: never writes a chunk or a lease (a node with a read-only
    /// identity, or one that should not pay the tier's write requests).
    ReadOnly,
}

/// `shared_cache:`: a second cache tier in an object store near the cluster, shared by every
/// node (doc/ARCHITECTURE.md, "The fleet tier").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedCacheConfig {
    /// The tier's store, resolved as a backend named `shared_cache` is.
    pub store: BackendConfig,
    /// Bytes per chunk: a multiple of `cache.block_size`, so a chunk fills whole blocks.
    #[serde(serialize_with = "ser_size")]
    pub chunk_size: u64,
    /// How long a node's claim to fill a chunk holds others back; past it they fetch from
    /// the origin themselves (its holder is presumed dead).
    #[serde(serialize_with = "ser_duration")]
    pub lease_ttl: Duration,
    pub mode: SharedMode,
    /// The backends whose objects go through the tier (default: every cloud backend).
    pub backends: Vec<String>,
    /// Whether nodes missing one chunk at once agree through a lease that one fetches it
    /// (default). Off, each fetches it from the origin: only to measure what leases save.
    pub leases: bool,
}

/// The resolved configuration every layer is built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub mount_point: PathBuf,
    pub cache: CacheConfig,
    pub metrics: MetricsConfig,
    pub control: ControlConfig,
    pub metadata_ttl: MetadataTtl,
    /// How long past `metadata_ttl` what the mount knows (a file's version, a directory's
    /// entries) is still served while the store cannot be asked (unreachable, throttling,
    /// failing); zero turns it off. See doc/SEMANTICS.md, "Stale if error".
    #[serde(serialize_with = "ser_duration")]
    pub stale_if_error: Duration,
    /// How long a name the store said does not exist is answered `ENOENT` without asking
    /// again: a loader probing optional files, or a typo retried in a loop, costs one request
    /// per name per interval. Never longer than `metadata_ttl`; zero turns it off. See
    /// doc/SEMANTICS.md, "Lookups".
    #[serde(serialize_with = "ser_duration")]
    pub negative_ttl: Duration,
    pub fuse: FuseConfig,
    pub retry: RetryPolicy,
    pub backends: Vec<BackendConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_cache: Option<SharedCacheConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: raw::explain_serde_error(&e.to_string()),
            })?;
        Config::from_raw(raw, path)
    }

    /// The backend with this name.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The resolved config as pretty YAML (for `--check-config` and `ctl status`).
    /// Holds no secrets: the config format has no secret fields.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    fn from_raw(raw: raw::RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };

        let mount_point = raw.mount_point.ok_or_else(|| {
            invalid(
                "mount_point",
                "missing; add `mount_point: /wd` (an absolute path to an empty directory)".into(),
            )
        })?;
        if !mount_point.is_absolute() {
            return Err(invalid(
                "mount_point",
                format!(
                    "`{}` is relative; use an absolute path such as /wd",
                    mount_point.display()
                ),
            ));
        }

        let raw_cache = raw.cache.ok_or_else(|| {
            invalid(
                "cache",
                "missing; add `cache: { dir: /mnt/nvme/warpdrive-cache, max_size: 80% }`".into(),
            )
        })?;
        let cache_dir = raw_cache.dir.ok_or_else(|| {
            invalid(
                "cache.dir",
                "missing; set it to a directory on a local disk".into(),
            )
        })?;
        if !cache_dir.is_absolute() {
            return Err(invalid(
                "cache.dir",
                format!(
                    "`{}` is relative; use an absolute path",
                    cache_dir.display()
                ),
            ));
        }
        // The cache must not live in the tree it caches: below the mount point it would be
        // hidden by the mount (and reached through it, by the daemon that serves it).
        if cache_dir.starts_with(&mount_point) {
            return Err(invalid(
                "cache.dir",
                format!(
                    "`{}` is inside mount_point `{}`; put the cache on a local disk outside the mount, e.g. /var/cache/warpdrive",
                    cache_dir.display(),
                    mount_point.display()
                ),
            ));
        }
        let max_size = match raw_cache.max_size.as_deref() {
            None => SizeLimit::PercentOfDisk(80.0),
            Some(s) => units::parse_size_limit(s).map_err(|m| invalid("cache.max_size", m))?,
        };
        let min_free = match raw_cache.min_free.as_deref() {
            None => SizeLimit::PercentOfDisk(10.0),
            Some(s) if matches!(s.trim(), "0" | "0%") => SizeLimit::Bytes(0),
            Some(s) => units::parse_size_limit(s).map_err(|m| invalid("cache.min_free", m))?,
        };
        let block_size = match raw_cache.block_size.as_deref() {
            None => DEFAULT_BLOCK_SIZE,
            Some(s) => {
                let b = units::parse_size(s).map_err(|m| invalid("cache.block_size", m))?;
                if !b.is_power_of_two() || !(64 << 10..=16 << 20).contains(&b) {
                    return Err(invalid(
                        "cache.block_size",
                        format!("`{s}` must be a power of two from 64KiB to 16MiB, e.g. 1MiB"),
                    ));
                }
                b
            }
        };
        let prefetch_budget = match raw_cache.prefetch_budget.as_deref() {
            None => DEFAULT_PREFETCH_BUDGET,
            Some(s) => units::parse_size(s).map_err(|m| invalid("cache.prefetch_budget", m))?,
        };
        if prefetch_budget != 0 && prefetch_budget < block_size {
            return Err(invalid(
                "cache.prefetch_budget",
                format!(
                    "is smaller than one block ({}); use 0 to turn prefetch off, or e.g. 256MiB",
                    units::format_size(block_size)
                ),
            ));
        }

        let (metrics_listen, allow_remote, metrics_enabled) = match raw.metrics {
            Some(m) => (
                m.listen,
                m.allow_remote.unwrap_or(false),
                m.enabled.unwrap_or(true),
            ),
            None => (None, false, true),
        };
        let metrics_listen = metrics_listen.unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_string());
        let listen: SocketAddr = metrics_listen.parse().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("`{metrics_listen}` is not an address; use IP:PORT such as 127.0.0.1:9090"),
            )
        })?;
        if !listen.ip().is_loopback() && !allow_remote {
            return Err(invalid(
                "metrics.listen",
                format!(
                    "`{listen}` is not a loopback address, so anyone on the network could read the metrics; use 127.0.0.1:PORT, or add `allow_remote: true` under `metrics:` to expose them on purpose"
                ),
            ));
        }

        let raw_control = raw.control.unwrap_or_default();
        let control_allow_remote = raw_control.allow_remote.unwrap_or(false);
        let control_listen = match raw_control.listen.as_deref() {
            None => None,
            Some(l) => {
                let a: SocketAddr = l.parse().map_err(|_| {
                    invalid(
                        "control.listen",
                        format!("`{l}` is not an address; use IP:PORT such as 127.0.0.1:7878"),
                    )
                })?;
                if !a.ip().is_loopback() && !control_allow_remote {
                    return Err(invalid(
                        "control.listen",
                        format!(
                            "`{a}` is not a loopback address, so the control API would be reachable from the network; use 127.0.0.1:PORT, or add `allow_remote: true` under `control:` to expose it (it always requires the token)"
                        ),
                    ));
                }
                Some(a)
            }
        };
        let socket = raw_control
            .socket
            .unwrap_or_else(|| cache_dir.join("control.sock"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(invalid(
                "control.socket",
                format!(
                    "{} is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes); set `socket:` under `control:` to a shorter path such as /run/warpdrive.sock",
                    socket.display()
                ),
            ));
        }
        let control = ControlConfig {
            socket,
            listen: control_listen,
            token_file: raw_control.token_file,
            allow_remote: control_allow_remote,
        };

        let metadata_ttl = match raw.metadata_ttl.as_deref() {
            None => MetadataTtl::For(DEFAULT_METADATA_TTL),
            Some("indefinite") => MetadataTtl::Indefinite,
            Some(s) => MetadataTtl::For(parse_duration(s).map_err(|m| {
                invalid(
                    "metadata_ttl",
                    format!("{m}; or use `indefinite` for immutable datasets"),
                )
            })?),
        };

        let stale_if_error = match raw.stale_if_error.as_deref() {
            None => DEFAULT_STALE_IF_ERROR,
            Some(s) => parse_duration(s).map_err(|m| {
                invalid(
                    "stale_if_error",
                    format!("{m}; or 0s to never serve stale metadata"),
                )
            })?,
        };

        let negative_ttl = match raw.negative_ttl.as_deref() {
            None => DEFAULT_NEGATIVE_TTL,
            Some(s) => parse_duration(s).map_err(|m| {
                invalid(
                    "negative_ttl",
                    format!("{m}; or 0s to ask the store again for every missing name"),
                )
            })?,
        };
        // A name is never known absent for longer than a name is known present.
        let negative_ttl = match metadata_ttl {
            MetadataTtl::For(ttl) => negative_ttl.min(ttl),
            MetadataTtl::Indefinite => negative_ttl,
        };

        let raw_fuse = raw.fuse.unwrap_or_default();
        let threads = raw_fuse.threads.unwrap_or(DEFAULT_FUSE_THREADS);
        if !(1..=64).contains(&threads) {
            return Err(invalid(
                "fuse.threads",
                format!("{threads} is out of range; use 1 to 64"),
            ));
        }
        let passthrough_min_size = match raw_fuse.passthrough_min_size.as_deref() {
            None => DEFAULT_PASSTHROUGH_MIN_SIZE,
            Some(s) => units::parse_size(s).map_err(|m| {
                invalid(
                    "fuse.passthrough_min_size",
                    format!("{m}; or 0 for passthrough at every size"),
                )
            })?,
        };
        let fuse = FuseConfig {
            threads,
            allow_other: raw_fuse.allow_other.unwrap_or(false),
            passthrough: raw_fuse.passthrough.unwrap_or(Passthrough::Auto),
            passthrough_min_size,
            zero_message_opens: raw_fuse.zero_message_opens.unwrap_or(false),
            control_file: raw_fuse.control_file.unwrap_or(true),
        };

        let raw_retry = raw.retry.unwrap_or_default();
        let duration = |field: &str, v: Option<&str>, default: Duration| match v {
            None => Ok(default),
            Some(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() => Err(invalid(
                    field,
                    format!("`{s}` is zero; give it at least a second, e.g. 10s"),
                )),
                Ok(d) => Ok(d),
                Err(m) => Err(invalid(field, m)),
            },
        };
        let retry = RetryPolicy {
            deadline: duration(
                "retry.deadline",
                raw_retry.deadline.as_deref(),
                DEFAULT_RETRY_DEADLINE,
            )?,
            unreachable: duration(
                "retry.unreachable",
                raw_retry.unreachable.as_deref(),
                DEFAULT_UNREACHABLE,
            )?,
        };
        if retry.unreachable > retry.deadline {
            return Err(invalid(
                "retry.unreachable",
                format!(
                    "{} is longer than retry.deadline ({}); make it shorter",
                    humantime::format_duration(retry.unreachable),
                    humantime::format_duration(retry.deadline)
                ),
            ));
        }

        let raw_backends = raw.backends.unwrap_or_default();
        if raw_backends.is_empty() {
            return Err(invalid(
                "backends",
                "no backend configured; add at least one, e.g. `- name: data` with `local: { path: /data }`".into(),
            ));
        }
        let mut backends: Vec<BackendConfig> = Vec::with_capacity(raw_backends.len());
        for (i, rb) in raw_backends.into_iter().enumerate() {
            let mut b = rb.resolve(i).map_err(|(field, m)| invalid(&field, m))?;
            b.retry = retry;
            if backends.iter().any(|o| o.name == b.name) {
                return Err(invalid(
                    &format!("backends[{i}].name"),
                    format!(
                        "`{}` is used by two backends; every backend needs its own name",
                        b.name
                    ),
                ));
            }
            if fuse.zero_message_opens && !b.write.prefixes.is_empty() {
                return Err(invalid(
                    &format!("backends[{i}].writable"),
                    "cannot be used with fuse.zero_message_opens: a file is committed at its close, which the daemon only hears of when opens reach it; turn one of them off".into(),
                ));
            }
            backends.push(b);
        }
        let shared_cache = match raw.shared_cache {
            None => None,
            Some(rs) => Some(shared_cache(rs, &backends, block_size, retry, &invalid)?),
        };

        Ok(Config {
            mount_point,
            cache: CacheConfig {
                dir: cache_dir,
                max_size,
                min_free,
                block_size,
                prefetch_budget,
            },
            metrics: MetricsConfig {
                listen,
                allow_remote,
                enabled: metrics_enabled,
            },
            control,
            metadata_ttl,
            stale_if_error,
            negative_ttl,
            fuse,
            retry,
            backends,
            shared_cache,
        })
    }
}

/// Resolves `shared_cache:` against the backends it serves.
fn shared_cache(
    mut rs: raw::RawSharedCache,
    backends: &[BackendConfig],
    block_size: u64,
    retry: RetryPolicy,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<SharedCacheConfig, ConfigError> {
    let mut store = rs.store().map_err(|(field, m)| invalid(&field, m))?;
    store.retry = retry;
    let chunk_size = match rs.chunk_size.as_deref() {
        None => DEFAULT_CHUNK_SIZE.max(block_size),
        Some(s) => units::parse_size(s).map_err(|m| invalid("shared_cache.chunk_size", m))?,
    };
    if chunk_size < block_size || chunk_size % block_size != 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(invalid(
            "shared_cache.chunk_size",
            format!(
                "{} is not a whole number of cache blocks ({}) up to {}; use e.g. {}",
                units::format_size(chunk_size),
                units::format_size(block_size),
                units::format_size(MAX_CHUNK_SIZE),
                units::format_size(DEFAULT_CHUNK_SIZE.max(block_size))
            ),
        ));
    }
    let lease_ttl = match rs.lease_ttl.as_deref() {
        None => DEFAULT_LEASE_TTL,
        Some(s) => {
            let d = parse_duration(s).map_err(|m| invalid("shared_cache.lease_ttl", m))?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(600) {
                return Err(invalid(
                    "shared_cache.lease_ttl",
                    format!(
                        "`{s}` is outside 1s to 10m; it should cover one chunk's fetch from the origin, e.g. 30s"
                    ),
                ));
            }
            d
        }
    };
    let cloud = |b: &&BackendConfig| !matches!(b.kind, BackendKind::Local { .. });
    let served: Vec<String> = match rs.backends.take() {
        None => backends
            .iter()
            .filter(cloud)
            .map(|b| b.name.clone())
            .collect(),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                let Some(b) = backends.iter().find(|b| b.name == n) else {
                    return Err(invalid(
                        "shared_cache.backends",
                        format!(
                            "`{n}` is not a backend; name some of: {}",
                            backends
                                .iter()
                                .map(|b| b.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                if !cloud(&b) {
                    return Err(invalid(
                        "shared_cache.backends",
                        format!(
                            "`{n}` is a local backend, already on this machine's disk; the shared tier is for cloud backends"
                        ),
                    ));
                }
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            out
        }
    };
    if served.is_empty() {
        return Err(invalid(
            "shared_cache.backends",
            "no cloud backend would use the shared tier; list some in `backends`, or remove `shared_cache`".into(),
        ));
    }
    // Chunks written where a backend lists would show up under the mount point.
    if let Some(b) = backends.iter().find(|b| overlaps(&store, b)) {
        return Err(invalid(
            "shared_cache",
            format!(
                "its chunks would be stored inside backend `{}` ({}{}); give the tier its own bucket or container, or a prefix outside the backend's",
                b.name,
                b.kind.describe(),
                if b.prefix.is_empty() {
                    String::new()
                } else {
                    format!("/{}", b.prefix)
                }
            ),
        ));
    }
    Ok(SharedCacheConfig {
        store,
        chunk_size,
        lease_ttl,
        mode: rs.mode.unwrap_or(SharedMode::ReadWrite),
        backends: served,
        leases: rs.leases.unwrap_or(true),
    })
}

/// Whether `a`'s keys and `b`'s could meet: the same bucket (or directory tree) with one
/// prefix inside the other.
fn overlaps(a: &BackendConfig, b: &BackendConfig) -> bool {
    let nested = |x: &str, y: &str| x.starts_with(y) || y.starts_with(x);
    match (&a.kind, &b.kind) {
        (BackendKind::Local { path: p }, BackendKind::Local { path: q }) => {
            p.starts_with(q) || q.starts_with(p)
        }
        (BackendKind::Local { .. }, _) | (_, BackendKind::Local { .. }) => false,
        _ => {
            a.kind.type_name() == b.kind.type_name()
                && a.kind.describe() == b.kind.describe()
                && a.kind.endpoint() == b.kind.endpoint()
                && nested(&a.prefix, &b.prefix)
        }
    }
}

/// Checks that `name` can be one path component under the mount point.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty; give the backend a directory name such as `datasets`".into());
    }
    if name == "." || name == ".." {
        return Err(format!(
            "`{name}` cannot be a directory name; choose another"
        ));
    }
    if name == CONTROL_DIR {
        return Err(format!(
            "`{name}` is the mount's control directory; choose another name"
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; use at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!(
            "`{}` contains {c:?}, which cannot appear in a directory name; use letters, digits, `-`, `_` or `.`",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
