//! The persistent block cache through a real mount: warm reads fetch nothing (within a run,
//! after a remount, after `kill -9`), overwritten objects are revalidated, damaged cache
//! files are repaired, the size cap holds, passthrough keeps reads out of the daemon, and a
//! second daemon cannot share the cache directory.
//!
//! What the daemon fetched is counted outside it, by a proxy between it and the emulator
//! that sums the ranges of the `GET`s it forwards.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Mount, ctl, drop_page_cache, runtime, sha256};
use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend, random_bytes, upload_many};

const MIB: usize = 1 << 20;

/// The data set: sizes chosen to hit partial last blocks, an exact block, empty and tiny.
fn dataset() -> Vec<(String, Vec<u8>)> {
    vec![
        ("d/a.bin".into(), random_bytes(9 * MIB + 123, 1)),
        ("d/b.bin".into(), random_bytes(MIB, 2)),
        ("d/c.txt".into(), b"a small object".to_vec()),
        ("d/empty".into(), Vec::new()),
        ("big.bin".into(), random_bytes(24 * MIB + 7, 3)),
    ]
}

/// Moto with `bucket` holding `objects`, and a counting proxy in front of it.
fn seeded(bucket: &str, objects: Vec<(String, Vec<u8>)>) -> (Emulator, DelayProxy) {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket(bucket).expect("bucket");
    let direct = s3.backend("direct", bucket, "");
    runtime()
        .block_on(upload_many(&direct, objects, 4))
        .expect("upload");
    let proxy = DelayProxy::counting(s3.port).expect("proxy");
    (s3, proxy)
}

fn via(proxy: &DelayProxy, bucket: &str) -> warpdrive_config::BackendConfig {
    emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s3",
        bucket,
        "",
    )
}

/// Reads every object through the mount and checks its bytes.
fn read_all(m: &Mount, objects: &[(String, Vec<u8>)]) {
    for (key, data) in objects {
        let got = std::fs::read(m.path(&format!("s3/{key}")))
            .unwrap_or_else(|e| panic!("read {key}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(data), "{key} differs");
    }
}

/// Bytes the daemon asked the store for since `before`.
fn fetched_since(proxy: &DelayProxy, before: u64) -> u64 {
    proxy.stats.data_reads().1 - before
}

/// Waits until the cache has absorbed what was fetched (blocks are written after readers
/// are answered): no prefetch in flight, and the cache's size the same in two scrapes in a
/// row.
fn settle(m: &Mount) {
    let t0 = std::time::Instant::now();
    let mut last = f64::NAN;
    loop {
        let s = common::scrape(m).0;
        let used = common::value(&s, "warpdrive_cache_used_bytes", &[]);
        let in_flight = common::value(&s, "warpdrive_prefetch_in_flight_bytes", &[]);
        if in_flight == 0.0 && used == last {
            return;
        }
        last = used;
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the cache never settled ({in_flight} bytes of prefetch in flight)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn warm_reads_fetch_nothing_within_a_run_and_after_a_remount() {
    let objects = dataset();
    let (_s3, proxy) = seeded("warm", objects.clone());
    let mut m = Mount::start(&[via(&proxy, "warm")], "fuse: { passthrough: off }\n");

    let before = proxy.stats.data_reads().1;
    read_all(&m, &objects);
    let cold = fetched_since(&proxy, before);
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    assert!(
        cold >= total,
        "the cold read fetched {cold} of {total} bytes"
    );
    settle(&m);

    // Within the run, with the kernel's page cache dropped: every block from the cache disk.
    drop_page_cache();
    let before = proxy.stats.data_reads().1;
    read_all(&m, &objects);
    assert_eq!(fetched_since(&proxy, before), 0, "warm read fetched bytes");

    // After an unmount and a new daemon.
    m.stop_with(libc::SIGTERM);
    m.spawn();
    let before = proxy.stats.data_reads().1;
    read_all(&m, &objects);
    assert_eq!(
        fetched_since(&proxy, before),
        0,
        "read after remount fetched bytes:\n{}",
        m.log()
    );
    m.stop_with(libc::SIGTERM);
    let s = m.open_cache().stats();
    assert_eq!(s.bytes, total, "every byte is cached once");
    assert_eq!(s.objects, 4, "the empty object has no blocks");
}

#[test]
fn kill_9_during_a_cold_read_keeps_completed_blocks() {
    let size = 48 * MIB;
    let data = random_bytes(size, 9);
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("kill").expect("bucket");
    runtime()
        .block_on(upload_many(
            &s3.backend("direct", "kill", ""),
            vec![("huge.bin".into(), data.clone())],
            1,
        ))
        .expect("upload");
    // Slow enough that the read is still going when the daemon dies: 150 ms a request, and
    // a small prefetch budget so that requests stay small (2 MiB).
    let proxy = DelayProxy::start(s3.port, Duration::from_millis(150)).expect("proxy");
    let mut m = Mount::start_with_cache(
        &[via(&proxy, "kill")],
        "fuse: { passthrough: off }\n",
        "max_size: 1GiB, prefetch_budget: 2MiB",
    );

    let path = m.path("s3/huge.bin");
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(path).expect("open");
        let mut buf = vec![0u8; MIB];
        let mut n = 0;
        while let Ok(k) = f.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    let start = Instant::now();
    while proxy.stats.data_reads().1 < (size / 2) as u64 {
        assert!(start.elapsed() < Duration::from_secs(60), "read too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the index commit what was written, then kill without warning.
    std::thread::sleep(Duration::from_millis(800));
    m.stop_with(libc::SIGKILL);
    let got = reader.join().expect("reader");
    assert!(got < size, "the read finished before the kill");

    m.spawn();
    let before = proxy.stats.data_reads().1;
    let back = std::fs::read(m.path("s3/huge.bin")).expect("read after restart");
    assert_eq!(
        sha256(&back),
        sha256(&data),
        "bytes after kill -9 and restart"
    );
    let refetched = fetched_since(&proxy, before);
    assert!(
        refetched <= (size - size / 4) as u64,
        "{refetched} bytes refetched: blocks completed before the kill were not reused\n{}",
        m.log()
    );
}

#[test]
fn an_overwritten_object_is_revalidated_and_never_mixed() {
    let v1 = random_bytes(3 * MIB + 5, 21);
    let v2 = random_bytes(2 * MIB + 77, 22);
    let (s3, proxy) = seeded("over", vec![("obj".into(), v1.clone())]);
    let m = Mount::start(
        &[via(&proxy, "over")],
        "metadata_ttl: 1s\nfuse: { passthrough: off }\n",
    );
    let path = m.path("s3/obj");
    assert_eq!(std::fs::read(&path).expect("v1"), v1);
    settle(&m);

    // A reader that checks every whole-file read against both versions.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((0u32, 0u32, 0u32)));
    let reader = {
        let (stop, seen, path, v1, v2) = (
            stop.clone(),
            seen.clone(),
            path.clone(),
            v1.clone(),
            v2.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read(&path) {
                    Ok(b) if b == v1 => seen.lock().expect("lock").0 += 1,
                    Ok(b) if b == v2 => seen.lock().expect("lock").1 += 1,
                    Ok(b) => {
                        let first_diff = |v: &[u8]| b.iter().zip(v).position(|(x, y)| x != y);
                        panic!(
                            "a read returned {} bytes matching neither version (v1 is {} bytes, v2 {}; first difference from v1 at {:?}, from v2 at {:?}; bytes past v2's end: {:?}; v1 there: {:?})",
                            b.len(),
                            v1.len(),
                            v2.len(),
                            first_diff(&v1),
                            first_diff(&v2),
                            &b[v2.len().min(b.len())..b.len().min(v2.len() + 40)],
                            &v1[v2.len()..v2.len() + 40]
                        )
                    }
                    // The version a handle opened disappeared under it.
                    Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                        seen.lock().expect("lock").2 += 1
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    runtime()
        .block_on(upload_many(
            &s3.backend("direct", "over", ""),
            vec![("obj".into(), v2.clone())],
            1,
        ))
        .expect("overwrite");
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    if reader.join().is_err() {
        panic!("a read saw neither version; daemon log:\n{}", m.log());
    }
    let (old, new, stale) = *seen.lock().expect("lock");
    assert!(
        old > 0 && new > 0,
        "v1 reads {old}, v2 reads {new}, stale {stale}"
    );
    // After the TTL, only the new bytes, from a fresh open and from the cache.
    assert_eq!(std::fs::read(&path).expect("v2"), v2);
    settle(&m);
    drop_page_cache();
    let before = proxy.stats.data_reads().1;
    assert_eq!(std::fs::read(&path).expect("v2 again"), v2);
    assert_eq!(fetched_since(&proxy, before), 0, "v2 is cached");
}

/// Flips one bit in each of `blocks` and returns how many it damaged.
fn flip_bits(blocks: &[warpdrive_cache::CachedBlock], seed: u64) -> usize {
    for (i, b) in blocks.iter().enumerate() {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&b.path)
            .expect("open data file");
        let at = b.offset + (seed.wrapping_mul(7919).wrapping_add(i as u64 * 104_729)) % b.len;
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at).expect("read byte");
        byte[0] ^= 1 << (i % 8);
        f.write_all_at(&byte, at).expect("write byte");
    }
    blocks.len()
}

#[test]
fn damaged_cache_blocks_are_detected_and_refetched() {
    let objects = dataset();
    let (_s3, proxy) = seeded("dmg", objects.clone());
    let mut m = Mount::start(&[via(&proxy, "dmg")], "fuse: { passthrough: off }\n");
    read_all(&m, &objects);
    settle(&m);
    m.stop_with(libc::SIGTERM);

    // While stopped: a bit flipped in 5 blocks of big.bin, and a.bin's file cut in half.
    let (blocks, corrupt_before) = {
        let c = m.open_cache();
        (c.cached_blocks(), c.stats().corrupt_blocks)
    };
    let big: Vec<_> = blocks
        .iter()
        .filter(|b| b.key == "big.bin")
        .cloned()
        .collect();
    let picked: Vec<_> = big.iter().step_by(5).take(5).cloned().collect();
    let mut damaged = flip_bits(&picked, 1);
    let a = blocks
        .iter()
        .find(|b| b.key == "d/a.bin")
        .expect("a.bin cached");
    let len = std::fs::metadata(&a.path).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a.path)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    damaged += blocks
        .iter()
        .filter(|b| b.key == "d/a.bin" && b.offset + b.len > len / 2)
        .count();

    m.spawn();
    let before = proxy.stats.data_reads().1;
    read_all(&m, &objects);
    assert!(
        fetched_since(&proxy, before) > 0,
        "damaged blocks were refetched"
    );
    settle(&m);
    m.stop_with(libc::SIGTERM);
    let after_stopped = m.open_cache().stats().corrupt_blocks;
    assert_eq!(
        after_stopped - corrupt_before,
        damaged as u64,
        "every damaged block detected and counted once\n{}",
        m.log()
    );

    // While running: 4 more blocks of big.bin, with the page cache dropped.
    m.spawn();
    read_all(&m, &objects);
    let blocks = m.open_cache_running_blocks();
    let big: Vec<_> = blocks
        .iter()
        .filter(|b| b.key == "big.bin")
        .cloned()
        .collect();
    let picked: Vec<_> = big.iter().skip(2).step_by(6).take(4).cloned().collect();
    let damaged = flip_bits(&picked, 2);
    drop_page_cache();
    let before = proxy.stats.data_reads().1;
    read_all(&m, &objects);
    assert_eq!(
        fetched_since(&proxy, before),
        (damaged * MIB) as u64,
        "exactly the damaged blocks are refetched"
    );
    settle(&m);
    m.stop_with(libc::SIGTERM);
    assert_eq!(
        m.open_cache().stats().corrupt_blocks - after_stopped,
        damaged as u64
    );
}

trait RunningBlocks {
    fn open_cache_running_blocks(&self) -> Vec<warpdrive_cache::CachedBlock>;
}

impl RunningBlocks for Mount {
    /// The cached blocks of a running daemon, from its index (read-only, so the daemon's
    /// lock is not needed): data file and offset of every block.
    fn open_cache_running_blocks(&self) -> Vec<warpdrive_cache::CachedBlock> {
        settle(self);
        warpdrive_cache::read_index_blocks(&self.cache_dir()).expect("read the index")
    }
}

#[test]
fn the_size_cap_holds_while_reading_far_more() {
    let cap = 64 * MIB as u64;
    let objects: Vec<(String, Vec<u8>)> = (0..16)
        .map(|i| (format!("part-{i:02}"), random_bytes(64 * MIB, 100 + i)))
        .collect();
    let sums: Vec<(String, String)> = objects
        .iter()
        .map(|(k, d)| (k.clone(), sha256(d)))
        .collect();
    let (_s3, proxy) = seeded("cap", objects);
    let mut m = Mount::start_with_cache(
        &[via(&proxy, "cap")],
        "fuse: { passthrough: off }\n",
        "max_size: 64MiB",
    );
    let data_dir = m.cache_dir().join("data");
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, data_dir) = (peak.clone(), stop.clone(), data_dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(allocated(&data_dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for (key, sum) in &sums {
        let got = std::fs::read(m.path(&format!("s3/{key}"))).expect("read");
        assert_eq!(&sha256(&got), sum, "{key}");
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= cap,
        "cache data reached {peak} bytes on disk, over the {cap}-byte cap"
    );
    m.stop_with(libc::SIGTERM);
    let s = m.open_cache().stats();
    assert!(s.bytes <= cap && s.evicted_blocks >= 900, "{s:?}");
}

/// Bytes allocated on disk by the files in `dir`.
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes the process has read with read(2)/pread(2) so far (`rchar` in /proc/PID/io).
fn rchar(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar")
}

#[test]
fn passthrough_keeps_warm_reads_out_of_the_daemon() {
    let data = random_bytes(32 * MIB, 77);
    let (_s3, proxy) = seeded("pass", vec![("f.bin".into(), data.clone())]);
    let mut m = Mount::start(&[via(&proxy, "pass")], "");
    assert_eq!(std::fs::read(m.path("s3/f.bin")).expect("cold"), data);
    settle(&m);
    m.stop_with(libc::SIGTERM);

    // passthrough: auto — the first open checks every block once (the daemon reads the
    // cache file once); the reads themselves go from the kernel to the cache file.
    m.spawn();
    let before = rchar(m.pid());
    assert_eq!(
        std::fs::read(m.path("s3/f.bin")).expect("passthrough"),
        data
    );
    let first = rchar(m.pid()) - before;
    assert!(
        first < data.len() as u64 + (MIB / 4) as u64,
        "the daemon read {first} bytes: more than one verification pass\n{}",
        m.log()
    );
    drop_page_cache();
    let before = rchar(m.pid());
    assert_eq!(
        std::fs::read(m.path("s3/f.bin")).expect("passthrough"),
        data
    );
    let again = rchar(m.pid()) - before;
    assert!(
        again < (MIB / 4) as u64,
        "the daemon read {again} bytes for an already verified passthrough file"
    );
    m.stop_with(libc::SIGTERM);

    // passthrough: off — the same read goes through the daemon, from its cache.
    let cfg = std::fs::read_to_string(&m.config).expect("config");
    std::fs::write(
        &m.config,
        cfg.replace("backends:", "fuse: { passthrough: off }\nbackends:"),
    )
    .expect("config");
    m.spawn();
    let before = (rchar(m.pid()), proxy.stats.data_reads().1);
    assert_eq!(std::fs::read(m.path("s3/f.bin")).expect("via daemon"), data);
    let daemon_read = rchar(m.pid()) - before.0;
    assert!(
        daemon_read >= data.len() as u64,
        "without passthrough the daemon read only {daemon_read} bytes"
    );
    assert_eq!(fetched_since(&proxy, before.1), 0, "served from the cache");
}

#[test]
fn a_second_daemon_refuses_the_same_cache_directory() {
    let (_s3, proxy) = seeded("lock", vec![("x".into(), b"x".to_vec())]);
    let m = Mount::start(&[via(&proxy, "lock")], "");
    let other_mp = m.dir.path().join("mnt2");
    std::fs::create_dir(&other_mp).expect("mkdir");
    let cfg = std::fs::read_to_string(&m.config).expect("config").replace(
        &format!("mount_point: {}", m.mount_point.display()),
        &format!("mount_point: {}", other_mp.display()),
    );
    let cfg_path = m.dir.path().join("second.yaml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let (code, err) = common::refused_start(&cfg_path, "a refused start");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("in use by another warpdrive-mount") && err.contains(&m.pid().to_string()),
        "{err}"
    );
    assert_eq!(
        warpdrive_fs::mountinfo::mount_state(&other_mp),
        warpdrive_fs::mountinfo::MountState::NotMounted
    );
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs (needs root)");
        Tmpfs(at.to_path_buf())
    }

    /// Makes `dir` on this disk immutable (`chattr +i`): nothing, not even root, can create
    /// a file in it any more, as on a failing disk.
    fn make_immutable(&self, dir: &Path) {
        use std::os::fd::AsRawFd;
        const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
        const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
        const FS_IMMUTABLE_FL: libc::c_long = 0x10;
        let d = std::fs::File::open(dir).expect("open dir");
        let mut flags: libc::c_long = 0;
        // SAFETY: the FS_IOC_*FLAGS ioctls read and write one `long` we own.
        unsafe {
            assert_eq!(libc::ioctl(d.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags), 0);
            flags |= FS_IMMUTABLE_FL;
            assert_eq!(
                libc::ioctl(d.as_raw_fd(), FS_IOC_SETFLAGS, &flags),
                0,
                "chattr +i: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_or_failing_cache_disk_never_fails_a_read() {
    let objects: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("o{i}"),
                random_bytes(12 * MIB + i * 1000, 300 + i as u64),
            )
        })
        .collect();
    let (_s3, proxy) = seeded("full", objects.clone());
    let mut m = Mount::prepare(
        &[via(&proxy, "full")],
        "fuse: { passthrough: off }\n",
        "max_size: 1GiB, min_free: 0",
    );
    // A 16 MiB cache disk: far smaller than the data, and than one object plus the index.
    let disk = Tmpfs::mount(&m.cache_dir(), "16m");
    m.spawn();
    for (key, data) in &objects[..4] {
        let got = std::fs::read(m.path(&format!("s3/{key}"))).expect("read with a full disk");
        assert_eq!(sha256(&got), sha256(data), "{key}");
    }

    // The disk fails under the daemon: reads go to the backend, with one log line.
    disk.make_immutable(&m.cache_dir().join("data"));
    for _ in 0..2 {
        for (key, data) in &objects {
            let got = std::fs::read(m.path(&format!("s3/{key}")))
                .unwrap_or_else(|e| panic!("read {key} with a read-only cache disk: {e}"));
            assert_eq!(sha256(&got), sha256(data), "{key}");
        }
        drop_page_cache();
    }
    let log = m.log();
    assert!(!log.contains("No space left"), "ENOSPC surfaced:\n{log}");
    assert_eq!(
        log.matches("the cache disk failed").count(),
        1,
        "the failure is logged once:\n{log}"
    );
    m.stop_with(libc::SIGTERM);
    drop(disk);
}

/// A disk with less free space than `cache.min_free` (here: all of it) keeps nothing, and
/// the daemon and `status` say why instead of caching nothing in silence.
#[test]
fn a_disk_under_min_free_caches_nothing_and_says_so() {
    let objects = vec![
        ("a.bin".to_string(), random_bytes(4 * MIB, 41)),
        ("b.bin".to_string(), random_bytes(3 * MIB + 5, 42)),
    ];
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let (_s3, proxy) = seeded("floor", objects.clone());
    let mut m = Mount::start_with_cache(
        &[via(&proxy, "floor")],
        "fuse: { passthrough: off }\n",
        "max_size: 1GiB, min_free: 100%",
    );
    for round in 0..2 {
        let before = proxy.stats.data_reads().1;
        read_all(&m, &objects);
        let fetched = fetched_since(&proxy, before);
        assert!(
            fetched >= total,
            "round {round} fetched {fetched} of {total} bytes"
        );
        settle(&m);
        drop_page_cache();
    }
    let log = m.log();
    assert_eq!(
        log.matches("not caching: the cache disk has less free space than cache.min_free")
            .count(),
        1,
        "said once:\n{log}"
    );
    let status = ctl(&m, &["status"]);
    assert!(
        status.contains("NOT CACHING") && status.contains("cache.min_free"),
        "status:\n{status}"
    );
    m.stop_with(libc::SIGTERM);
    assert_eq!(m.open_cache().stats().bytes, 0, "nothing was kept");
}
