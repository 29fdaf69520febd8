//! The daemon's lifecycle on a local-directory backend: read-only enforcement, signals, a
//! killed daemon's stale mount, `--daemon`, bad config and bad mount points.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Mount, config_yaml};
use warpdrive_config::{AuthMode, BackendConfig, BackendKind};
use warpdrive_fs::mountinfo::{MountState, mount_state};

fn local_backend(dir: &Path) -> BackendConfig {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("file.txt"), b"contents\n").expect("write");
    std::fs::write(dir.join("sub/inner.txt"), b"inner\n").expect("write");
    BackendConfig {
        name: "data".into(),
        kind: BackendKind::Local {
            path: dir.to_path_buf(),
        },
        prefix: String::new(),
        auth: AuthMode::Anonymous,
        identity: Default::default(),
        ca_file: None,
        write: Default::default(),
        retry: Default::default(),
    }
}

fn assert_erofs<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    let e = r.expect_err(&format!("{what} must fail"));
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
}

#[test]
fn every_write_operation_fails_with_erofs() {
    let src = tempfile::tempdir().expect("tempdir");
    let m = Mount::start(&[local_backend(src.path())], "");
    let f = m.path("data/file.txt");
    let d = m.path("data/sub");

    assert_erofs("create", std::fs::File::create(m.path("data/new.txt")));
    assert_erofs(
        "open for write",
        std::fs::OpenOptions::new().write(true).open(&f),
    );
    assert_erofs(
        "open for append",
        std::fs::OpenOptions::new().append(true).open(&f),
    );
    assert_erofs(
        "truncate",
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&f),
    );
    assert_erofs("mkdir", std::fs::create_dir(m.path("data/newdir")));
    assert_erofs("rmdir", std::fs::remove_dir(&d));
    assert_erofs("unlink", std::fs::remove_file(&f));
    assert_erofs("rename", std::fs::rename(&f, m.path("data/renamed.txt")));
    assert_erofs(
        "chmod",
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o777)),
    );
    assert_erofs("symlink", symlink("file.txt", m.path("data/link")));
    assert_erofs("hard link", std::fs::hard_link(&f, m.path("data/hard")));
    let c = std::ffi::CString::new(f.to_string_lossy().as_bytes()).expect("cstring");
    let name = c"user.test";
    // SAFETY: valid NUL-terminated strings and a valid buffer of the given length.
    let r = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS),
        "setxattr"
    );

    // The control file is the one writable path; nothing else in its directory is.
    assert_erofs(
        "create beside the control file",
        std::fs::File::create(m.path(".warpdrive/other")),
    );
    assert_erofs(
        "chmod of the control file",
        std::fs::set_permissions(
            m.path(".warpdrive/plan"),
            std::fs::Permissions::from_mode(0o600),
        ),
    );

    // Nothing changed, and reading still works.
    assert_eq!(std::fs::read(&f).expect("read"), b"contents\n");
    assert!(!src.path().join("new.txt").exists());
}

/// `fuse.control_file: false`: no control directory, and the kernel itself holds the mount
/// read-only.
#[test]
fn without_the_control_file_the_mount_is_read_only_in_the_kernel() {
    let src = tempfile::tempdir().expect("tempdir");
    let m = Mount::start(
        &[local_backend(src.path())],
        "fuse: { control_file: false }\n",
    );
    let e = std::fs::metadata(m.path(".warpdrive/plan")).expect_err("no control file");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    let st = nix::sys::statvfs::statvfs(&m.mount_point).expect("statvfs");
    assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    assert_erofs("create", std::fs::File::create(m.path("data/new.txt")));
    assert_eq!(
        std::fs::read(m.path("data/file.txt")).expect("read"),
        b"contents\n"
    );
}

/// Python's `open` asks `isatty` (an `ioctl`) of every file; each one wrote a three-line
/// warning to the daemon's log. Now: `ENOTTY`, and not a line.
#[test]
fn regression_every_isatty_wrote_a_warning_to_the_log() {
    use std::os::fd::AsRawFd;
    let src = tempfile::tempdir().expect("tempdir");
    let m = Mount::start(&[local_backend(src.path())], "");
    for _ in 0..200 {
        let f = std::fs::File::open(m.path("data/file.txt")).expect("open");
        // SAFETY: `f` is an open file for the whole call; isatty reads nothing from us.
        let tty = unsafe { libc::isatty(f.as_raw_fd()) };
        let e = std::io::Error::last_os_error();
        assert_eq!(tty, 0);
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}");
    }
    let log = m.log();
    assert!(!log.contains("ioctl"), "{log}");
    assert!(
        m.metrics_text().lines().any(|l| l
            .starts_with("warpdrive_fuse_operations_total{op=\"ioctl\"} ")
            && !l.ends_with(" 0")),
        "ioctls counted"
    );
}

/// A garbage `index.db` stopped the daemon from starting. Now it is moved aside with one log
/// line and the mount serves, with an empty cache.
#[test]
fn regression_a_garbage_cache_index_stopped_the_daemon() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut m = Mount::prepare(&[local_backend(src.path())], "", "max_size: 1GiB");
    std::fs::create_dir_all(m.cache_dir()).expect("cache dir");
    std::fs::write(m.cache_dir().join("index.db"), vec![0x5Au8; 64 << 10]).expect("garbage");
    m.spawn();
    assert_eq!(
        std::fs::read(m.path("data/sub/inner.txt")).expect("read"),
        b"inner\n"
    );
    let log = m.log();
    assert_eq!(
        log.matches("the cache index is damaged").count(),
        1,
        "{log}"
    );
    assert!(
        std::fs::read_dir(m.cache_dir())
            .expect("ls")
            .filter_map(|e| e.ok())
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("index.db.damaged-")),
        "kept aside"
    );
}

#[test]
fn sigterm_unmounts_cleanly() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut m = Mount::start(&[local_backend(src.path())], "");
    assert_eq!(
        std::fs::read(m.path("data/sub/inner.txt")).expect("read"),
        b"inner\n"
    );
    let status = m.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status}\n{}", m.log());
    assert_eq!(mount_state(&m.mount_point), MountState::NotMounted);
    assert!(m.log().contains("SIGTERM: unmounting"), "{}", m.log());
}

#[test]
fn external_umount_stops_the_daemon() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut m = Mount::start(&[local_backend(src.path())], "");
    // The keeper's own readiness check may still be looking at the mount for a moment.
    let t = Instant::now();
    loop {
        match nix::mount::umount2(&m.mount_point, nix::mount::MntFlags::empty()) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("umount: {e}"),
        }
    }
    let mut child = m.child.take().expect("child");
    let status = common::wait_exit(&mut child, Duration::from_secs(10), "umount");
    assert!(status.success(), "{status}\n{}", m.log());
}

#[test]
fn restart_after_sigkill_clears_the_stale_mount() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut m = Mount::start(&[local_backend(src.path())], "");
    m.stop_with(libc::SIGKILL);
    // The kernel still has the mount, but nobody serves it.
    assert_eq!(mount_state(&m.mount_point), MountState::Stale);
    let e = std::fs::read_dir(&m.mount_point).expect_err("stale mount");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));

    m.spawn();
    assert_eq!(
        std::fs::read(m.path("data/file.txt")).expect("read after restart"),
        b"contents\n"
    );
    assert!(m.log().contains("clearing a stale mount"), "{}", m.log());
}

#[test]
fn daemon_mode_detaches_once_mounted() {
    let src = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        config_yaml(
            &mp,
            &dir.path().join("cache"),
            &[local_backend(src.path())],
            "",
        ),
    )
    .expect("cfg");
    let log = dir.path().join("logs/daemon.log");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--daemon")
        .arg("--log-file")
        .arg(&log)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The parent has exited; the mount is live and served by the detached child.
    assert_eq!(mount_state(&mp), MountState::Live);
    assert_eq!(
        std::fs::read(mp.join("data/file.txt")).expect("read"),
        b"contents\n"
    );
    let pid: i32 = stdout
        .split("pid ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"));
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while mount_state(&mp) != MountState::NotMounted {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still mounted after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(
        text.contains("mounted") && text.contains("SIGTERM"),
        "{text}"
    );
    // The cache directory was created private.
    let mode = std::fs::metadata(dir.path().join("cache"))
        .expect("cache dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// Runs the daemon on `yaml` and returns (exit code, stderr).
fn run_with(yaml: &str, mp: &Path) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, yaml).expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(
        mount_state(mp),
        MountState::NotMounted,
        "something was mounted"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_configs_exit_2_and_mount_nothing() {
    let src = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let good = config_yaml(
        &mp,
        &dir.path().join("cache"),
        &[local_backend(src.path())],
        "",
    );
    let cases: &[(&str, &str, &str)] = &[
        ("backends:", "bogus: 1\nbackends:", "unknown field `bogus`"),
        ("local: {", "hdfs: {", "unknown field `hdfs`"),
        ("max_size: 1GiB", "max_size: 1 furlong", "cache.max_size"),
        (
            "backends:",
            "metadata_ttl: forever\nbackends:",
            "metadata_ttl",
        ),
        (
            "  - name: data\n",
            "  - name: data\n    local: { path: /tmp }\n  - name: data\n",
            "used by two backends",
        ),
        ("name: data", "name: a/b", "backends[0].name"),
        (
            "backends:",
            "retry: { deadline: 0s }\nbackends:",
            "retry.deadline",
        ),
    ];
    // regression: a cache directory inside the mount point was accepted and mounted.
    let cache_from = format!("dir: {}", dir.path().join("cache").display());
    let cache_to = format!("dir: {}", mp.join(".cache").display());
    let inside = [(cache_from.as_str(), cache_to.as_str(), "inside mount_point")];
    for (from, to, want) in cases.iter().chain(inside.iter()) {
        assert!(good.contains(from), "pattern {from:?}");
        let (code, err) = run_with(&good.replacen(from, to, 1), &mp);
        assert_eq!(code, 2, "{from:?} -> {to:?}: {err}");
        assert!(
            err.contains(want),
            "{from:?} -> {to:?}: {err:?} lacks {want:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one sentence, not a backtrace: {err}"
        );
    }
    // regression: a port in use exited 1 with two lines instead of the config error form.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let at = good.find("listen: 127.0.0.1:").expect("metrics.listen") + "listen: ".len();
    let end = at + good[at..].find(' ').expect("end of address");
    let taken = format!("{}127.0.0.1:{busy_port}{}", &good[..at], &good[end..]);
    let (code, err) = run_with(&taken, &mp);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("metrics.listen") && err.contains("pick a free port"),
        "{err}"
    );
    // The start may have logged before the bind; the error itself is one line, the last.
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warpdrive-mount:"))
        .collect();
    assert_eq!(errors.len(), 1, "one sentence: {err}");
    assert_eq!(err.trim().lines().last(), Some(errors[0]), "{err}");
    drop(busy);

    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/wd.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    // --check-config validates and prints without mounting.
    let cfg = dir.path().join("good.yaml");
    std::fs::write(&cfg, &good).expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("is valid") && text.contains("metadata_ttl: 1m"),
        "{text}"
    );
    assert_eq!(mount_state(&mp), MountState::NotMounted);
}

#[test]
fn bad_mount_points_are_clear_errors() {
    let src = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let b = [local_backend(src.path())];
    let cache = dir.path().join("cache");

    let missing = dir.path().join("missing");
    let (code, err) = run_with(&config_yaml(&missing, &cache, &b, ""), &missing);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let (code, err) = run_with(&config_yaml(&file, &cache, &b, ""), &file);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a directory"), "{err}");

    let full = dir.path().join("full");
    std::fs::create_dir(&full).expect("mkdir");
    std::fs::write(full.join("precious"), b"x").expect("write");
    let (code, err) = run_with(&config_yaml(&full, &cache, &b, ""), &full);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert!(full.join("precious").exists());
}

#[test]
fn an_unreachable_backend_answers_eio_and_is_logged() {
    let src = tempfile::tempdir().expect("tempdir");
    let port = warpdrive_testkit::free_port().expect("port");
    let dead = warpdrive_testkit::emulator_backend(
        warpdrive_testkit::Kind::Moto,
        &format!("http://127.0.0.1:{port}"),
        "down",
        "nothing",
        "",
    );
    let m = Mount::start(&[local_backend(src.path()), dead], "");
    // The healthy backend is unaffected.
    assert_eq!(
        std::fs::read(m.path("data/file.txt")).expect("read"),
        b"contents\n"
    );
    let e = std::fs::read_dir(m.path("down"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .expect_err("listing a dead endpoint");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let start = Instant::now();
    while !m.log().contains("backend unreachable at start") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no start-up warning:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Readiness: the daemon tells systemd (`$NOTIFY_SOCKET`) and `--ready-file` once the mount
/// serves, and `warpdrive-ctl status --wait` waits for it; at stop, `STOPPING=1` and the
/// ready file goes.
#[test]
fn the_daemon_says_when_the_mount_serves_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let src = tempfile::tempdir().expect("tempdir");
    let mut m = Mount::prepare(&[local_backend(src.path())], "", "max_size: 1GiB");
    let notify = m.dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let ready = m.dir.path().join("run/warpdrive.ready");
    std::fs::create_dir(m.dir.path().join("run")).expect("mkdir");
    std::fs::write(&ready, "1\n").expect("a ready file left by an earlier daemon");

    // Nothing serves yet: `--wait 1` gives up after a second, saying so.
    let t0 = Instant::now();
    let (code, _, err) = common::ctl_any(&m, &["status", "--wait", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(t0.elapsed() >= Duration::from_secs(1), "it waited");
    assert!(err.contains("not serving after 1s"), "{err}");

    let log = std::fs::File::create(m.dir.path().join("daemon.log")).expect("log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&m.config)
        .arg("--ready-file")
        .arg(&ready)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    let pid = child.id();
    m.child = Some(child);
    let waiter = common::ctl_command(&m, &["status", "--wait", "30"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ctl");

    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
    let said = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(said.starts_with("READY=1\n"), "{said}");
    assert!(said.contains("STATUS=serving "), "{said}");
    // When systemd hears it, the mount serves and the ready file names the daemon.
    assert_eq!(mount_state(&m.mount_point), MountState::Live);
    assert_eq!(
        std::fs::read(m.path("data/file.txt")).expect("read"),
        b"contents\n"
    );
    assert_eq!(
        std::fs::read_to_string(&ready).expect("ready file").trim(),
        pid.to_string()
    );
    let mut waiter = waiter;
    let status = common::wait_exit(&mut waiter, Duration::from_secs(30), "status --wait");
    assert!(
        status.success(),
        "status --wait 30 exits 0 once the mount serves"
    );

    let status = m.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", m.log());
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(!ready.exists(), "the ready file goes at stop");
}

/// The shipped service unit passes `systemd-analyze verify` (its binary paths pointed at this
/// build's; its man page is checked once the package installs it).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/warpdrive.service"),
    )
    .expect("unit");
    assert!(unit.contains("Type=notify"), "{unit}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warpdrive.service");
    let ctl = Path::new(BIN).with_file_name("warpdrive-ctl");
    let unit = unit
        .replace("/usr/bin/warpdrive-mount", BIN)
        .replace("/usr/bin/warpdrive-ctl", &ctl.display().to_string());
    std::fs::write(&path, unit).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (make deps installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("warpdrive.service"),
        "warnings about the unit: {err}"
    );
}
