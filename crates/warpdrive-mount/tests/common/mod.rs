//! Shared helpers for the integration tests: a real `warpdrive-mount` process over real
//! emulators, with its mount point, cache and config in a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warpdrive_config::{BackendConfig, BackendKind};
use warpdrive_fs::mountinfo::{MountState, mount_state};

pub const BIN: &str = env!("CARGO_BIN_EXE_warpdrive-mount");

/// Renders a config file for `backends`.
pub fn config_yaml(
    mount_point: &Path,
    cache: &Path,
    backends: &[BackendConfig],
    extra: &str,
) -> String {
    config_yaml_with(mount_point, cache, backends, extra, "max_size: 1GiB")
}

/// Renders a config file for `backends` with these `cache:` fields besides `dir`. Unless
/// they set `min_free`, it is 0: the default (10 % of the disk) would turn the cache off on
/// a host whose disk other work has nearly filled, and the test would measure that instead.
pub fn config_yaml_with(
    mount_point: &Path,
    cache: &Path,
    backends: &[BackendConfig],
    extra: &str,
    cache_fields: &str,
) -> String {
    // Every daemon of a test run gets its own metrics port.
    let port = warpdrive_testkit::free_port().expect("metrics port");
    let floor = if cache_fields.contains("min_free") {
        ""
    } else {
        ", min_free: 0"
    };
    let mut y = format!(
        "mount_point: {}\ncache: {{ dir: {}, {cache_fields}{floor} }}\nmetrics: {{ listen: 127.0.0.1:{port} }}\n{extra}backends:\n",
        mount_point.display(),
        cache.display()
    );
    for b in backends {
        y.push_str(&format!("  - name: {}\n", b.name));
        let prefix = &b.prefix;
        match &b.kind {
            BackendKind::Azure { account, container, endpoint } => y.push_str(&format!(
                "    azure: {{ account: {account}, container: {container}, prefix: \"{prefix}\", endpoint: \"{}\" }}\n",
                endpoint.as_deref().unwrap_or_default()
            )),
            BackendKind::S3 { bucket, region, endpoint } => y.push_str(&format!(
                "    s3: {{ bucket: {bucket}, region: {}, prefix: \"{prefix}\", endpoint: \"{}\" }}\n",
                region.as_deref().unwrap_or("us-east-1"),
                endpoint.as_deref().unwrap_or_default()
            )),
            BackendKind::Gcs { bucket, endpoint } => y.push_str(&format!(
                "    gcs: {{ bucket: {bucket}, prefix: \"{prefix}\", endpoint: \"{}\" }}\n",
                endpoint.as_deref().unwrap_or_default()
            )),
            BackendKind::Local { path } => y.push_str(&format!("    local: {{ path: {} }}\n", path.display())),
        }
        let id = &b.identity;
        if *id == Default::default() {
            y.push_str(&format!("    auth: {}\n", b.auth.as_str()));
        } else {
            y.push_str(&format!("    auth: {{ mode: {}", b.auth.as_str()));
            for (k, v) in [
                ("client_id", &id.client_id),
                ("object_id", &id.object_id),
                ("resource_id", &id.resource_id),
                ("endpoint", &id.endpoint),
                ("tenant_id", &id.tenant_id),
                ("role_arn", &id.role_arn),
                ("secret_env", &id.secret_env),
            ] {
                if let Some(v) = v {
                    y.push_str(&format!(", {k}: \"{v}\""));
                }
            }
            if let Some(f) = &id.token_file {
                y.push_str(&format!(", token_file: {}", f.display()));
            }
            if let Some(f) = &id.secret_file {
                y.push_str(&format!(", secret_file: {}", f.display()));
            }
            y.push_str(" }\n");
        }
        if let Some(ca) = &b.ca_file {
            y.push_str(&format!("    ca_file: {}\n", ca.display()));
        }
        let w = &b.write;
        if !w.prefixes.is_empty() {
            let list: Vec<String> = w
                .prefixes
                .iter()
                .map(|p| format!("\"{}\"", if p.is_empty() { "/" } else { p }))
                .collect();
            y.push_str(&format!(
                "    writable: [{}]\n    overwrite: {}\n    delete: {}\n",
                list.join(", "),
                w.overwrite,
                w.delete
            ));
        }
    }
    y
}

/// A `shared_cache:` block over the cloud store `store` (emulator credentials), with the
/// tier's own `fields` (`chunk_size: 2MiB`, `mode: read_only`...), one per line.
pub fn shared_cache_yaml(store: &BackendConfig, fields: &[&str]) -> String {
    let prefix = &store.prefix;
    let mut y = String::from("shared_cache:\n");
    match &store.kind {
        BackendKind::Azure { account, container, endpoint } => y.push_str(&format!(
            "  azure: {{ account: {account}, container: {container}, prefix: \"{prefix}\", endpoint: \"{}\" }}\n",
            endpoint.as_deref().unwrap_or_default()
        )),
        BackendKind::S3 { bucket, endpoint, .. } => y.push_str(&format!(
            "  s3: {{ bucket: {bucket}, region: us-east-1, prefix: \"{prefix}\", endpoint: \"{}\" }}\n",
            endpoint.as_deref().unwrap_or_default()
        )),
        BackendKind::Gcs { bucket, endpoint } => y.push_str(&format!(
            "  gcs: {{ bucket: {bucket}, prefix: \"{prefix}\", endpoint: \"{}\" }}\n",
            endpoint.as_deref().unwrap_or_default()
        )),
        BackendKind::Local { path } => {
            y.push_str(&format!("  local: {{ path: {} }}\n", path.display()))
        }
    }
    y.push_str(&format!("  auth: {}\n", store.auth.as_str()));
    for f in fields {
        y.push_str(&format!("  {f}\n"));
    }
    y
}

/// A running daemon and its mount.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub mount_point: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
}

impl Mount {
    /// Writes the config and starts the daemon; returns once the mount is live.
    pub fn start(backends: &[BackendConfig], extra: &str) -> Mount {
        Mount::start_with_cache(backends, extra, "max_size: 1GiB")
    }

    /// As [`Mount::start`], with these `cache:` fields besides `dir`.
    pub fn start_with_cache(backends: &[BackendConfig], extra: &str, cache_fields: &str) -> Mount {
        let mut m = Mount::prepare(backends, extra, cache_fields);
        m.spawn();
        m
    }

    /// Writes the config without starting the daemon ([`Mount::spawn`] starts it).
    pub fn prepare(backends: &[BackendConfig], extra: &str, cache_fields: &str) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("wd-mount-")
            .tempdir()
            .expect("tempdir");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mkdir mnt");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            config_yaml_with(
                &mount_point,
                &dir.path().join("cache"),
                backends,
                extra,
                cache_fields,
            ),
        )
        .expect("write config");
        Mount {
            dir,
            mount_point,
            config,
            child: None,
        }
    }

    /// Starts (or restarts) the daemon on the same config.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,warpdrive_fs=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn warpdrive-mount");
        self.child = Some(child);
        let start = Instant::now();
        while mount_state(&self.mount_point) != MountState::Live {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait"))
            {
                panic!("daemon exited ({status}) before mounting:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not mounted after 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mount_point.join(rel)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Opens the cache of a stopped daemon (to read its persisted counters and blocks).
    pub fn open_cache(&self) -> warpdrive_cache::Cache {
        warpdrive_cache::Cache::open(warpdrive_cache::CacheConfig {
            dir: self.cache_dir(),
            block_size: warpdrive_cache::DEFAULT_BLOCK_SIZE,
        })
        .expect("open the stopped daemon's cache")
    }

    /// The port of the daemon's metrics listener (from its config).
    pub fn metrics_port(&self) -> u16 {
        let cfg = std::fs::read_to_string(&self.config).expect("config");
        cfg.split("metrics: { listen: 127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("metrics port in the config")
    }

    /// `GET /metrics` from the running daemon: the raw text.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port()))
            .unwrap_or_else(|e| panic!("metrics listener: {e}\n{}", self.log()));
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }

    /// The process started: the keeper, which owns the mount (signals go to it).
    pub fn keeper_pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The daemon serving the mount now: the keeper's child (waited for while one daemon
    /// hands over to the next).
    pub fn pid(&self) -> i32 {
        let keeper = self.keeper_pid();
        let start = Instant::now();
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{keeper}/task/{keeper}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().expect("pid");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the keeper (pid {keeper}) runs no daemon:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` and waits for the process to exit.
    pub fn stop_with(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(child.id() as i32, sig) };
        wait_exit(
            &mut child,
            Duration::from_secs(20),
            &format!("signal {sig}"),
        )
    }
}

/// Starts the daemon on `config` expecting it to refuse: its exit code and stderr.
pub fn refused_start(config: &Path, what: &str) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut child, Duration::from_secs(20), what);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    (status.code(), err)
}

/// Runs `warpdrive-ctl` (built beside the daemon by `cargo build --bins`) on the mount's
/// config; returns its stdout.
pub fn ctl(m: &Mount, args: &[&str]) -> String {
    let (code, out, err) = ctl_any(m, args);
    assert_eq!(code, Some(0), "warpdrive-ctl {args:?}: {err}");
    out
}

/// Runs `warpdrive-ctl` on the mount's config whatever its outcome: exit code, stdout,
/// stderr.
pub fn ctl_any(m: &Mount, args: &[&str]) -> (Option<i32>, String, String) {
    let out = ctl_command(m, args)
        .output()
        .unwrap_or_else(|e| panic!("warpdrive-ctl: {e} (run `cargo build --bins` first)"));
    keep_output(
        "ctl",
        &format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `warpdrive-forge` binary built beside the daemon.
pub fn forge() -> PathBuf {
    Path::new(BIN).with_file_name("warpdrive-forge")
}

/// Runs `warpdrive-forge gen` with `args` into `out`; fails with its stderr if it fails.
pub fn forge_gen(args: &[&str], out: &Path) {
    let made = Command::new(forge())
        .arg("gen")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("warpdrive-forge: {e} (run `cargo build --bins` first)"));
    assert!(
        made.status.success(),
        "forge gen: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A `warpdrive-ctl` command on the mount's config, to spawn.
pub fn ctl_command(m: &Mount, args: &[&str]) -> Command {
    let mut c = Command::new(Path::new(BIN).with_file_name("warpdrive-ctl"));
    c.arg("--config").arg(&m.config).args(args);
    c
}

/// Waits for `child` to exit; fails the test after `timeout`, naming what should have
/// stopped it.
pub fn wait_exit(child: &mut Child, timeout: Duration, after: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "daemon still running {timeout:?} after {after}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Keeps `text` under `target/test-output/` for the secret scan `make test` runs after the
/// suite (scripts/scan-secrets.sh).
pub fn keep_output(what: &str, text: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output");
    let _ = std::fs::create_dir_all(&dir);
    let name = format!(
        "{}-{}-{what}.txt",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let _ = std::fs::write(dir.join(name), text);
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_with(libc::SIGTERM);
        }
        keep_output("daemon-log", &self.log());
        if mount_state(&self.mount_point) != MountState::NotMounted {
            let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Every regular file below `root`, as paths relative to it, sorted.
pub fn walk(root: &Path) -> Vec<String> {
    fn go(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                go(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .expect("prefix")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Drops the kernel's page cache, so reads reach the daemon (or the disk) again.
pub fn drop_page_cache() {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").expect("drop_caches (needs root)");
}

/// Benchmarks: whether a section runs. `cargo bench --bench X -- read` runs only sections
/// whose name contains "read".
pub fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// CPU time of every live thread of process `pid`, in ns (from each task's schedstat).
/// Writes each of `paths` from a thread of its own, all at once: `mib` MiB in 1 MiB writes,
/// then `fsync` (a file written through the mount commits there).
pub fn write_at_once(paths: Vec<PathBuf>, mib: usize) {
    let writers: Vec<_> = paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            std::thread::spawn(move || {
                let chunk = warpdrive_testkit::random_bytes(1 << 20, i as u64);
                let mut f = std::fs::File::create(&path).expect("create");
                for _ in 0..mib {
                    std::io::Write::write_all(&mut f, &chunk).expect("write");
                }
                f.sync_all().expect("fsync");
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
}

/// A memory figure of process `pid` in bytes: `VmRSS:` (now) or `VmHWM:` (its peak).
pub fn rss(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("a figure")
        << 10
}

pub fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// The daemon's `/metrics`, parsed, and its text (for messages).
pub fn scrape(m: &Mount) -> (prometheus_parse::Scrape, String) {
    let text = m.metrics_text();
    let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition format");
    (s, text)
}

/// The sum of the samples of `name` that carry all of `labels`.
pub fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
        .sum()
}
