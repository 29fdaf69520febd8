//! Restarts readers do not notice: the daemon serving a mount is killed (SIGKILL) or
//! restarted (`warpdrive-ctl restart`) while eight readers loop over its files, and the
//! mount stays mounted. Every call's outcome and duration is counted: failed calls by errno
//! and the longest stall, per phase.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Mount;
use parking_lot::Mutex;
use warpdrive_fs::mountinfo::{MountState, mount_state};

const READERS: usize = 8;
const KILLS: usize = 20;
const RESTARTS: usize = 20;
/// Calls the readers must complete between two restarts: each restart lands among reads.
const CALLS_BETWEEN: u64 = 300;
/// A hang guard, not a figure: any call taking this long fails the test.
const HANG: Duration = Duration::from_secs(30);

/// What the readers saw in one phase.
#[derive(Default)]
struct Phase {
    calls: AtomicU64,
    wrong_bytes: AtomicU64,
    failed: Mutex<BTreeMap<i32, u64>>,
    longest: Mutex<Duration>,
}

impl Phase {
    fn failed_calls(&self) -> u64 {
        self.failed.lock().values().sum()
    }

    fn describe(&self) -> String {
        let failed = self.failed.lock();
        let by_errno = if failed.is_empty() {
            "none".to_string()
        } else {
            failed
                .iter()
                .map(|(e, n)| format!("{n} × {}", errno_name(*e)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} calls, failed: {by_errno}, wrong bytes: {}, longest stall {:.1} ms",
            self.calls.load(Ordering::Relaxed),
            self.wrong_bytes.load(Ordering::Relaxed),
            self.longest.lock().as_secs_f64() * 1e3
        )
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EIO => "EIO".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::EBADF => "EBADF".into(),
        libc::ESTALE => "ESTALE".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::ENOENT => "ENOENT".into(),
        -1 => "other".into(),
        e => format!("errno {e}"),
    }
}

/// The phases: warming up, SIGKILLs, graceful restarts.
struct Tally {
    phases: [Phase; 3],
    now: AtomicUsize,
    stop: AtomicBool,
}

impl Tally {
    fn phase(&self) -> &Phase {
        &self.phases[self.now.load(Ordering::Relaxed)]
    }

    fn calls(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.calls.load(Ordering::Relaxed))
            .sum()
    }

    /// Runs one call, counting its outcome and duration.
    fn call<T>(&self, f: impl FnOnce() -> std::io::Result<T>) -> Option<T> {
        let t = Instant::now();
        let r = f();
        let took = t.elapsed();
        let p = self.phase();
        p.calls.fetch_add(1, Ordering::Relaxed);
        {
            let mut l = p.longest.lock();
            *l = (*l).max(took);
        }
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                *p.failed
                    .lock()
                    .entry(e.raw_os_error().unwrap_or(-1))
                    .or_default() += 1;
                None
            }
        }
    }

    fn wrong(&self) {
        self.phase().wrong_bytes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Files of several sizes: the large ones are read by passthrough once cached, the small
/// ones through the daemon (and their pages dropped after each read, so the next read asks
/// again).
fn dataset(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let sizes = [
        4 << 10,
        64 << 10,
        300 << 10,
        900 << 10,
        (1 << 20) + 5,
        3 << 20,
    ];
    std::fs::create_dir_all(dir.join("set")).expect("mkdir");
    (0..24)
        .map(|i| {
            let len = sizes[i % sizes.len()];
            let data: Vec<u8> = (0..len)
                .map(|j| (j as u64 * 31 + i as u64 * 7 + (j as u64 >> 12)) as u8)
                .collect();
            let name = format!("set/f{i:02}.bin");
            std::fs::write(dir.join(&name), &data).expect("write");
            (name, data)
        })
        .collect()
}

fn drop_pages(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise on an open descriptor only advises the kernel.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// One reader: whole files in turn (open, read in 256 KiB calls, check, close), a listing
/// and a stat every 16 files, and one descriptor held open all along, read at moving
/// offsets (a handle opened by an earlier daemon).
fn reader(id: usize, root: PathBuf, files: Arc<Vec<(String, Vec<u8>)>>, t: Arc<Tally>) {
    let (held_name, held_data) = &files[(id * 5) % files.len()];
    let held = loop {
        if let Some(f) = t.call(|| std::fs::File::open(root.join(held_name))) {
            break f;
        }
    };
    let mut buf = vec![0u8; 256 << 10];
    let mut i = id;
    while !t.stop.load(Ordering::Relaxed) {
        let (name, data) = &files[i % files.len()];
        i += 3;
        if let Some(mut f) = t.call(|| std::fs::File::open(root.join(name))) {
            let mut at = 0;
            loop {
                match t.call(|| f.read(&mut buf)) {
                    Some(0) => break,
                    Some(n) => {
                        if data.get(at..at + n) != Some(&buf[..n]) {
                            t.wrong();
                            break;
                        }
                        at += n;
                    }
                    None => break,
                }
            }
            if at == data.len() || at > 0 {
                drop_pages(&f);
            }
        }
        let off = (i as u64 * 4093) % held_data.len() as u64;
        let mut small = [0u8; 4096];
        if let Some(n) = t.call(|| held.read_at(&mut small, off)) {
            let want = &held_data[off as usize..(off as usize + n).min(held_data.len())];
            if want != &small[..n] {
                t.wrong();
            }
        }
        drop_pages(&held);
        if i % 16 < 3 {
            if let Some(n) = t.call(|| std::fs::read_dir(root.join("set")).map(|d| d.count()))
                && n != files.len()
            {
                t.wrong();
            }
            if let Some(md) = t.call(|| std::fs::metadata(root.join(name)))
                && md.len() != data.len() as u64
            {
                t.wrong();
            }
        }
    }
}

/// Waits until the readers have made `n` more calls.
fn progress(t: &Tally, n: u64, m: &Mount) {
    let start = (t.calls(), Instant::now());
    while t.calls() < start.0 + n {
        assert!(
            start.1.elapsed() < HANG,
            "the readers made no progress for {HANG:?}:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills daemon `pid` with SIGKILL (if `kill`; else it is going by itself) and waits until
/// the keeper has started the next.
fn next_daemon(m: &Mount, pid: i32, kill: bool) {
    if kill {
        // SAFETY: kill(2) on the test's own daemon has no memory effects.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let t = Instant::now();
    while m.pid() == pid {
        assert!(t.elapsed() < HANG, "no new daemon:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn killed_and_restarted_daemons_are_replaced_without_readers_noticing() {
    let src = tempfile::tempdir().expect("tempdir");
    let files = Arc::new(dataset(src.path()));
    let backend = warpdrive_testkit::local_backend("data", src.path());
    let mut m = Mount::start(&[backend], "metadata_ttl: 1s\n");
    let root = m.path("data");

    let tally = Arc::new(Tally {
        phases: Default::default(),
        now: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let readers: Vec<_> = (0..READERS)
        .map(|id| {
            let (root, files, t) = (root.clone(), files.clone(), tally.clone());
            std::thread::spawn(move || reader(id, root, files, t))
        })
        .collect();
    progress(&tally, 2 * CALLS_BETWEEN, &m);

    // SIGKILL: the daemon dies mid-request; the keeper starts the next at once.
    tally.now.store(1, Ordering::Relaxed);
    let killed_at = Instant::now();
    for _ in 0..KILLS {
        progress(&tally, CALLS_BETWEEN, &m);
        next_daemon(&m, m.pid(), true);
    }
    progress(&tally, CALLS_BETWEEN, &m);
    let kill_secs = killed_at.elapsed().as_secs_f64();

    // Graceful: `warpdrive-ctl restart`, as after an upgrade.
    tally.now.store(2, Ordering::Relaxed);
    let mut handovers = Vec::new();
    for _ in 0..RESTARTS {
        progress(&tally, CALLS_BETWEEN, &m);
        let out = common::ctl(&m, &["restart"]);
        assert!(out.contains("restarted: daemon pid"), "{out}");
        let ms: u64 = out
            .split("served after ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        handovers.push(ms);
    }
    progress(&tally, CALLS_BETWEEN, &m);
    tally.stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }

    let [quiet, killed, graceful] = &tally.phases;
    let figures = format!(
        "{READERS} readers over {} files; before any restart (the floor: calls on this machine \
         with no restart): {}\n\
         {KILLS} × SIGKILL of the serving daemon in {kill_secs:.1} s: {}\n\
         {RESTARTS} × warpdrive-ctl restart: {}; each new daemon served after {:?} ms",
        files.len(),
        quiet.describe(),
        killed.describe(),
        graceful.describe(),
        handovers
    );
    println!("{figures}");
    common::keep_output("restart-figures", &figures);

    // The mount never went away, and is served by the last daemon of the line.
    assert_eq!(mount_state(&m.mount_point), MountState::Live);
    let st = common::ctl(&m, &["status", "--json", "--mount-only"]);
    let st: serde_json::Value = serde_json::from_str(&st).expect("status JSON");
    assert_eq!(
        st["daemon"]["generation"],
        (KILLS + RESTARTS) as u64,
        "{st}"
    );
    assert_eq!(st["daemon"]["keeper_pid"], m.keeper_pid(), "{st}");

    for (what, p) in [("SIGKILL", killed), ("restart", graceful)] {
        assert_eq!(
            p.wrong_bytes.load(Ordering::Relaxed),
            0,
            "{what}: {figures}"
        );
        assert!(
            !p.failed.lock().contains_key(&libc::ENOTCONN),
            "{what}: a reader saw the mount gone: {figures}"
        );
        assert!(*p.longest.lock() < HANG, "{what}: {figures}");
    }
    // A reader blocked when its daemon died may get EIO for that one call (documented);
    // nothing else.
    assert!(
        killed.failed.lock().keys().all(|e| *e == libc::EIO),
        "{figures}"
    );
    assert_eq!(graceful.failed_calls(), 0, "{figures}");

    let status = m.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", m.log());
    assert_eq!(mount_state(&m.mount_point), MountState::NotMounted);
}

/// A read the daemon had taken from the kernel, and was fetching when it was killed, is
/// queued again by the kernel for the next daemon (which asks it to, `FUSE_NOTIFY_RESEND`)
/// and answered: the reader gets its bytes, no error. Without that, the read would wait for
/// an answer forever.
#[test]
fn a_read_the_killed_daemon_had_taken_is_answered_by_the_next_one() {
    use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend, random_bytes};
    let rt = common::runtime();
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("held").expect("bucket");
    let direct = s3.backend("s3", "held", "");
    let data = random_bytes(2 << 20, 9);
    rt.block_on(warpdrive_testkit::upload_many(
        &direct,
        vec![("slow.bin".into(), data.clone())],
        1,
    ))
    .expect("upload");
    let proxy = DelayProxy::counting(s3.port).expect("proxy");
    let backend = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s3",
        "held",
        "",
    );
    let m = Mount::start(&[backend], "metadata_ttl: 1h\n");
    let path = m.path("s3/slow.bin");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        data.len() as u64
    );

    // The daemon's next request to the store is held, so it is in flight when it dies.
    let held = proxy.stats.stalled.load(Ordering::Relaxed);
    proxy.stall_next(1, Duration::from_secs(5));
    let reader = std::thread::spawn(move || std::fs::read(path));
    let t = Instant::now();
    while proxy.stats.stalled.load(Ordering::Relaxed) == held {
        assert!(
            t.elapsed() < HANG,
            "the read reached no store:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = m.pid();
    // SAFETY: kill(2) on the test's own daemon has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    while !reader.is_finished() {
        assert!(
            killed.elapsed() < HANG,
            "the read taken by the killed daemon was never answered:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = reader.join().expect("reader").expect("the read succeeds");
    assert!(got == data, "the bytes read are the object's");
    assert_ne!(m.pid(), pid);
    assert!(m.log().contains("took the mount over"), "{}", m.log());
    let figure = format!(
        "a read in flight at SIGKILL completed {:.0} ms after the kill",
        killed.elapsed().as_secs_f64() * 1e3
    );
    println!("{figure}");
    common::keep_output("restart-in-flight", &figure);
}

/// A restart that would lose something is refused, and the daemon serves on: a file still
/// open for writing (its data is in this daemon), a config that changes the backends. A
/// killed daemon's file being written is lost, and its writer is told (`EIO`), never
/// silently; nothing is published under its name.
#[test]
fn restarts_that_would_lose_something_are_refused_and_a_lost_write_says_so() {
    use std::io::Write;
    let src = tempfile::tempdir().expect("tempdir");
    let mut b = warpdrive_testkit::local_backend("ds", src.path());
    b.write.prefixes = vec!["ckpt/".into()];
    let m = Mount::start(&[b], "");
    std::fs::create_dir_all(src.path().join("ckpt")).expect("mkdir");
    let pid = m.pid();

    // A file open for writing: refused after --wait, with the reason; same daemon.
    let mut w = std::fs::File::create(m.path("ds/ckpt/open.bin")).expect("create");
    w.write_all(&[1u8; 4096]).expect("write");
    let (code, _, err) = common::ctl_any(&m, &["restart", "--wait", "1s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("still open for writing"), "{err}");
    assert_eq!(m.pid(), pid, "the daemon serves on");
    // Closed, the restart goes ahead and the file is there.
    drop(w);
    let out = common::ctl(&m, &["restart"]);
    assert!(out.contains("restarted"), "{out}");
    assert_eq!(
        std::fs::read(m.path("ds/ckpt/open.bin"))
            .expect("read")
            .len(),
        4096
    );

    // A config that changes the backends: refused, naming why; the daemon serves on.
    let config = std::fs::read_to_string(&m.config).expect("config");
    std::fs::write(&m.config, config.replace("name: ds", "name: other")).expect("edit");
    let pid = m.pid();
    let (code, _, err) = common::ctl_any(&m, &["restart"]);
    std::fs::write(&m.config, &config).expect("restore");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("changes the backends"), "{err}");
    assert_eq!(m.pid(), pid);

    // The daemon is killed while a file is being written: the writer's next call fails
    // with EIO (its data died with the daemon), and no object appears.
    let mut w = std::fs::File::create(m.path("ds/ckpt/lost.bin")).expect("create");
    w.write_all(&[2u8; 8192]).expect("write");
    next_daemon(&m, pid, true);
    let e = w
        .write_all(&[3u8; 8192])
        .and_then(|()| w.sync_all())
        .expect_err("a write to a file whose daemon died fails");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    drop(w);
    assert!(!src.path().join("ckpt/lost.bin").exists());
    // The mount serves on, and the name can be written again.
    std::fs::write(m.path("ds/ckpt/lost.bin"), b"again").expect("write again");
    assert_eq!(
        std::fs::read(src.path().join("ckpt/lost.bin")).expect("committed"),
        b"again"
    );
}

/// A directory being listed when its daemon is killed (or hands over) goes on from where it
/// was with the next: every name once, none missing.
#[test]
fn a_listing_in_progress_goes_on_with_the_next_daemon() {
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(src.path().join("big")).expect("mkdir");
    let names: std::collections::BTreeSet<String> =
        (0..3000).map(|i| format!("entry-{i:05}.dat")).collect();
    for n in &names {
        std::fs::write(src.path().join("big").join(n), b"x").expect("write");
    }
    let m = Mount::start(&[warpdrive_testkit::local_backend("d", src.path())], "");
    for graceful in [false, true] {
        let mut it = std::fs::read_dir(m.path("d/big")).expect("opendir");
        // The first getdents fills the libc buffer with the first few hundred entries.
        let mut seen: Vec<String> = it
            .by_ref()
            .take(10)
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        let pid = m.pid();
        if graceful {
            let out = common::ctl(&m, &["restart"]);
            assert!(out.contains("restarted"), "{out}");
        }
        next_daemon(&m, pid, !graceful);
        seen.extend(it.map(|e| e.expect("entry").file_name().into_string().expect("utf8")));
        let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "no name twice (graceful: {graceful})"
        );
        assert_eq!(unique, names, "every name (graceful: {graceful})");
    }
}

/// A descriptor a killed daemon opened reads the version it opened, or `ESTALE` once the
/// object has changed: its successor never serves it another version's bytes.
#[test]
fn an_old_handle_never_reads_another_version() {
    use std::os::fd::AsRawFd;
    let src = tempfile::tempdir().expect("tempdir");
    let old = vec![1u8; 300 << 10];
    std::fs::write(src.path().join("obj.bin"), &old).expect("write");
    let m = Mount::start(
        &[warpdrive_testkit::local_backend("d", src.path())],
        "metadata_ttl: 0s\n",
    );
    let f = std::fs::File::open(m.path("d/obj.bin")).expect("open");
    let mut buf = vec![0u8; 4096];
    f.read_at(&mut buf, 0).expect("read");
    assert_eq!(buf, old[..4096]);

    // The same version after a kill: the same bytes.
    next_daemon(&m, m.pid(), true);
    // SAFETY: posix_fadvise on an open descriptor only advises the kernel.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    f.read_at(&mut buf, 8192).expect("read after the kill");
    assert_eq!(buf, old[8192..8192 + 4096]);

    // Another version while no daemon knows the handle's: ESTALE, not new bytes.
    next_daemon(&m, m.pid(), true);
    std::fs::write(src.path().join("obj.bin"), vec![2u8; 300 << 10]).expect("rewrite");
    // SAFETY: as above.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let e = f
        .read_at(&mut buf, 65536)
        .expect_err("the object changed under the handle");
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
    // A new open reads the new version.
    assert_eq!(
        std::fs::read(m.path("d/obj.bin")).expect("reopen"),
        vec![2u8; 300 << 10]
    );
}
