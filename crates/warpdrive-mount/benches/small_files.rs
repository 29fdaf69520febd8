//! `make bench`, sections `small-files-*` (`cargo bench --bench small_files -- main` runs
//! one): a loose-file dataset read the way a PyTorch loader reads an ImageFolder: 10,000 files of about 110 KB in 100 class directories on Azurite
//! behind a proxy adding 5 ms to every answer, 16 reader threads, shuffled order, every file
//! opened by its path (no directory listed by the reader). In one run:
//!
//! * cold files/s through a fresh mount ÷ direct whole-object GETs of the same files at the
//!   same concurrency (target ≥ 0.9), and backend requests per file (target ≤ 1.05), with the
//!   floor beside it: a minimal caching client sending the mount's requests and writing each
//!   file to a new local file (the emulator and the mount share two cores);
//! * warm files/s (page cache warm; the median of three passes) ÷ the same tree on local
//!   disk, page cache warm (target ≥ 0.5), with the floor beside it: opens and closes alone
//!   through the mount; and the same, cold and warm, with `fuse.zero_message_opens` (no
//!   `OPEN` or `RELEASE` per file);
//! * warm files/s ÷ rclone's VFS cache (`--vfs-cache-mode full`) over the same emulator and
//!   proxy (target ≥ 10), when `rclone` is installed (`make deps` installs it);
//! * warm opens and reads of files of 64 KiB to 16 MiB, by passthrough vs keep-cache
//!   (`small-files-passthrough`: where `fuse.passthrough_min_size` belongs);
//! * `fuse.threads` 2, 4, 8 and 16: cold and warm files/s (`small-files-threads`);
//! * epoch plans (`small-files-plan`): a cold epoch with the read order submitted as a plan,
//!   and without, ÷ direct GETs around it, behind the proxy and behind the WAN simulator
//!   (the cross-region link, and its latency alone), with the emulator's CPU in each pass;
//!   and the warm epoch ÷ local disk.
//!
//! `SMALL_FILES=N` reads N files instead of 10,000 (for a quick look). Prints tables; asserts
//! only that every file read back at its size.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use common::{Mount, cpu_ns, ctl, runtime, scrape, selected, value};
use futures::StreamExt;
use warpdrive_store::Backend;
use warpdrive_testkit::{
    DelayProxy, Emulator, Kind, Link, WEST_US_3, WanProxy, emulator_backend, random_bytes,
    shuffled, upload_many,
};

const DIRS: usize = 100;
const THREADS: usize = 16;
const DELAY: Duration = Duration::from_millis(5);

/// One file of the dataset: its key and size.
#[derive(Debug, Clone)]
struct File {
    key: String,
    size: usize,
}

/// Sizes from 40 KB to 180 KB, 110 KB on average (ImageNet's mean), fixed by the index.
fn size_of(i: usize) -> usize {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    40_000 + (h % 140_001) as usize
}

/// Does `each` to every file under `root` from `THREADS` threads; files per second.
fn pass(root: &Path, files: &[File], each: impl Fn(&Path, &File) + Sync) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let each = &each;
            s.spawn(move || {
                for f in files.iter().skip(t).step_by(THREADS) {
                    each(&root.join(&f.key), f);
                }
            });
        }
    });
    files.len() as f64 / start.elapsed().as_secs_f64()
}

/// Reads every file whole by its path; files per second.
fn read_pass(root: &Path, files: &[File]) -> f64 {
    pass(root, files, |path, f| {
        let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", f.key));
        assert_eq!(got.len(), f.size, "{}", f.key);
    })
}

/// Opens and closes every file (no read): the per-file cost of the FUSE round trips alone.
fn open_pass(root: &Path, files: &[File]) -> f64 {
    pass(root, files, |path, _| {
        drop(std::fs::File::open(path).expect("open"))
    })
}

/// Direct whole-object GETs of every file, `THREADS` at a time; files per second.
async fn direct_pass(b: &Backend, files: &[File]) -> f64 {
    let start = Instant::now();
    futures::stream::iter(files)
        .map(|f| async move {
            let got = b
                .get_range(&f.key, 0..f.size as u64, None)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", f.key));
            assert_eq!(got.len(), f.size);
        })
        .buffer_unordered(THREADS)
        .collect::<Vec<_>>()
        .await;
    files.len() as f64 / start.elapsed().as_secs_f64()
}

/// A minimal caching client over the same store: the requests the mount sends (one listing
/// of each directory, whose ETags pin each file's GET with `If-Match`), and each file written
/// to a new file under `dir`, as any client that keeps what it fetched must. The floor of a
/// cold pass through a cache on this machine, where the emulator shares its two cores.
async fn direct_store_pass(b: &Backend, files: &[File], dir: &Path) -> f64 {
    let start = Instant::now();
    let dirs: std::collections::BTreeSet<&str> = files
        .iter()
        .map(|f| f.key.rsplit_once('/').map_or("", |(d, _)| d))
        .collect();
    let etags: std::collections::HashMap<String, String> = futures::stream::iter(dirs)
        .map(|d| async move {
            let mut found = Vec::new();
            let mut token = None;
            loop {
                let page = b.list_page(d, token, None).await.expect("list");
                found.extend(
                    page.objects
                        .into_iter()
                        .map(|(name, info)| (format!("{d}/{name}"), info.etag.expect("etag"))),
                );
                token = page.next;
                if token.is_none() {
                    return found;
                }
            }
        })
        .buffer_unordered(THREADS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    let etags = &etags;
    futures::stream::iter(files.iter().enumerate())
        .map(|(i, f)| async move {
            let got = b
                .get_range(&f.key, 0..f.size as u64, Some(&etags[&f.key]))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", f.key));
            let path = dir.join(format!("{i}"));
            tokio::task::spawn_blocking(move || std::fs::write(path, &got))
                .await
                .expect("join")
                .expect("write");
        })
        .buffer_unordered(THREADS)
        .collect::<Vec<_>>()
        .await;
    files.len() as f64 / start.elapsed().as_secs_f64()
}

/// Backend requests of the mount so far (list + head + get).
fn requests(m: &Mount) -> f64 {
    let (s, _) = scrape(m);
    ["list", "head", "get"]
        .iter()
        .map(|op| value(&s, "warpdrive_backend_requests_total", &[("op", op)]))
        .sum()
}

/// A mount of `cfg` with `extra` config and a cache that holds the whole dataset (the test
/// kit's default of 1 GiB holds 90 % of 10,000 files of 110 KB: warm passes would refetch).
fn mount(cfg: &warpdrive_config::BackendConfig, extra: &str) -> Mount {
    Mount::start_with_cache(std::slice::from_ref(cfg), extra, "max_size: 4GiB")
}

/// Waits for the daemon's start-up probe (a one-key listing), so it is not counted in a pass.
fn settle(m: &Mount) {
    let t0 = Instant::now();
    while requests(m) < 1.0 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The median of `passes` (files/s).
fn median(mut passes: Vec<f64>) -> f64 {
    passes.sort_by(f64::total_cmp);
    passes[passes.len() / 2]
}

/// Passes over a warm tree: [`WARM_PASSES`] read passes in new shuffles; their median files/s.
fn warm_passes(root: &Path, files: &[File]) -> f64 {
    median(
        (0..WARM_PASSES)
            .map(|i| read_pass(root, &shuffled(files.to_vec(), 99 + i as u64)))
            .collect(),
    )
}

/// Warm passes per measurement: single passes of 10,000 warm files last a fraction of a
/// second and move ±20 % with what else the two cores run.
const WARM_PASSES: usize = 3;

/// A cold pass and [`WARM_PASSES`] warm ones through a fresh mount with `extra` config; (cold
/// files/s, median warm files/s, requests per file cold, warm).
fn mount_passes(cfg: &warpdrive_config::BackendConfig, extra: &str, files: &[File]) -> [f64; 4] {
    let m = mount(cfg, extra);
    settle(&m);
    let root = m.path("imgs");
    let n = files.len() as f64;
    let em = EMULATOR_PID.load(Ordering::Relaxed);
    let cpu0 = [cpu_ns(m.pid()), cpu_ns(em)];
    let r0 = requests(&m);
    let cold_ops0 = fuse_ops(&m);
    let cold = read_pass(&root, files);
    let r1 = requests(&m);
    let cold_ops = per_file(fuse_ops(&m), cold_ops0, n);
    let cpu1 = [cpu_ns(m.pid()), cpu_ns(em)];
    quiet(m.pid());
    let ops0 = fuse_ops(&m);
    let warm = warm_passes(&root, files);
    let r2 = requests(&m);
    let ops = per_file(fuse_ops(&m), ops0, n * WARM_PASSES as f64);
    eprintln!(
        "{extra:?}: cold {cold:.0} files/s (CPU per file: daemon {:.2} ms, emulator {:.2} ms; emulator busy {:.0}% of a core; FUSE operations per file: {cold_ops}), warm {warm:.0} files/s (FUSE operations per file: {ops})",
        (cpu1[0] - cpu0[0]) as f64 / 1e6 / n,
        (cpu1[1] - cpu0[1]) as f64 / 1e6 / n,
        (cpu1[1] - cpu0[1]) as f64 / 1e9 / (n / cold) * 100.0,
    );
    [
        cold,
        warm,
        (r1 - r0) / n,
        (r2 - r1) / n / WARM_PASSES as f64,
    ]
}

/// FUSE operations between two [`fuse_ops`] samples, per file, as "op n, ...".
fn per_file(now: Vec<(String, f64)>, before: Vec<(String, f64)>, files: f64) -> String {
    now.into_iter()
        .zip(before)
        .filter(|((_, a), (_, b))| a > b)
        .map(|((op, a), (_, b))| format!("{op} {:.2}", (a - b) / files))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until `pid` is idle (under 2% of a core over 250 ms): the cold pass leaves the
/// daemon checksumming and indexing the files it cached, which a warm pass must not share
/// the two cores with.
fn quiet(pid: i32) {
    let t0 = Instant::now();
    loop {
        let before = cpu_ns(pid);
        std::thread::sleep(Duration::from_millis(250));
        if cpu_ns(pid) - before < 5_000_000 || t0.elapsed() > Duration::from_secs(60) {
            return;
        }
    }
}

/// The emulator's pid, for CPU accounting.
static EMULATOR_PID: AtomicI32 = AtomicI32::new(0);

/// FUSE operations so far, by name.
fn fuse_ops(m: &Mount) -> Vec<(String, f64)> {
    let (s, _) = scrape(m);
    let mut ops: Vec<(String, f64)> = s
        .samples
        .iter()
        .filter(|x| x.metric == "warpdrive_fuse_operations_total")
        .filter_map(|x| {
            let v = match x.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => return None,
            };
            Some((x.labels.get("op")?.to_string(), v))
        })
        .collect();
    ops.sort_by(|a, b| a.0.cmp(&b.0));
    ops
}

/// `rclone mount` of the container with its full VFS cache, through `endpoint` (emulator
/// credentials); unmounted when dropped, also if a pass panics.
struct Rclone {
    mp: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Rclone {
    fn mount(endpoint: &str) -> Option<Rclone> {
        let dir = tempfile::tempdir().ok()?;
        let mp = dir.path().join("mnt");
        std::fs::create_dir_all(&mp).ok()?;
        let conf = dir.path().join("rclone.conf");
        // `endpoint` must be given: without it this rclone builds a cloud URL even in
        // emulator mode.
        std::fs::write(
            &conf,
            format!("[az]\ntype = azureblob\nuse_emulator = true\nendpoint = {endpoint}\n"),
        )
        .ok()?;
        let child = Command::new("rclone")
            .args(["mount", "az:imgs"])
            .arg(&mp)
            .arg("--config")
            .arg(&conf)
            .args(["--vfs-cache-mode", "full", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .args(["--dir-cache-time", "10m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Rclone {
            mp,
            child,
            _dir: dir,
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if std::fs::read_to_string("/proc/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(&*r.mp.to_string_lossy()))
            {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mp).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let sections = [
        "small-files-main",
        "small-files-passthrough",
        "small-files-threads",
        "small-files-plan",
    ];
    if !sections.iter().any(|s| selected(s)) {
        return;
    }
    let n: usize = std::env::var("SMALL_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = runtime();
    let began = Instant::now();
    println!(
        "# Loose files: {n} files, {DIRS} directories, {THREADS} readers, +{DELAY:?} per request\n"
    );
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("imgs").expect("container");
    EMULATOR_PID.store(em.pid(), Ordering::Relaxed);
    let direct_cfg = em.backend("imgs", "imgs", "");
    let files: Vec<File> = (0..n)
        .map(|i| File {
            key: format!("train/n{:08}/img_{i:06}.jpg", i % DIRS),
            size: size_of(i),
        })
        .collect();
    let t0 = Instant::now();
    for chunk in files.chunks(500) {
        let objects = chunk
            .iter()
            .enumerate()
            .map(|(j, f)| {
                (
                    f.key.clone(),
                    random_bytes(f.size, j as u64 + f.size as u64),
                )
            })
            .collect();
        rt.block_on(upload_many(&direct_cfg, objects, 16))
            .expect("upload");
    }
    let mean = files.iter().map(|f| f.size).sum::<usize>() as f64 / n as f64 / 1e3;
    eprintln!(
        "uploaded {n} files (mean {mean:.0} KB) in {:?}",
        t0.elapsed()
    );
    // Every client reaches the emulator through the same proxy.
    let proxy = DelayProxy::start(em.port, DELAY).expect("proxy");
    let endpoint = em.endpoint_via(proxy.port);
    let cfg = emulator_backend(Kind::Azurite, &endpoint, "imgs", "imgs", "");
    let files = shuffled(files, 42);
    // Files deleted just before this bench (by an earlier one) make creating files cost this
    // disk up to twice the CPU for about 30 s (ext4 without a journal skips inodes freed
    // recently): the passes start at least 35 s after the bench did.
    std::thread::sleep(Duration::from_secs(35).saturating_sub(began.elapsed()));

    if selected("small-files-main") {
        main_table(&rt, &cfg, &endpoint, &files);
    }

    if selected("small-files-plan") {
        // The same emulator behind the WAN simulator: the cross-region link of the demo and
        // the benches (latency and a bandwidth cap), and its latency alone.
        let wan = WanProxy::start(em.port, WEST_US_3).expect("wan");
        let latency = Link {
            bandwidth: None,
            ..WEST_US_3
        };
        let far = WanProxy::start(em.port, latency).expect("wan");
        let via =
            |port| emulator_backend(Kind::Azurite, &em.endpoint_via(port), "imgs", "imgs", "");
        plan_table(
            &rt,
            &[
                (&format!("+{DELAY:?} per request"), cfg.clone()),
                (&format!("WAN {WEST_US_3}"), via(wan.port)),
                (&format!("WAN {latency}"), via(far.port)),
            ],
            &files,
        );
    }

    if selected("small-files-passthrough") {
        passthrough_by_size(&rt, &direct_cfg, &cfg);
    }

    if selected("small-files-threads") {
        println!("\n| fuse.threads | cold files/s | warm files/s |");
        println!("|---:|---:|---:|");
        for t in [2, 4, 8, 16] {
            let [c, w, _, _] = mount_passes(
                &cfg,
                &format!("metadata_ttl: 10m\nfuse: {{ threads: {t} }}\n"),
                &files,
            );
            println!("| {t} | {c:.0} | {w:.0} |");
        }
    }
}

/// Issue 18's loose-file figures, over each link to the emulator in `links` (a label and the
/// backend reached through it): a cold epoch through a fresh mount with a plan (the read
/// order, submitted just before the epoch starts) ÷ direct GETs on either side of it, the
/// same without a plan, each with the emulator's CPU (where it is saturated, no client can
/// read faster than it serves: the floor), and, over the first link, the warm epoch ÷ local
/// disk. Zero-message opens in every mount.
fn plan_table(
    rt: &tokio::runtime::Runtime,
    links: &[(&str, warpdrive_config::BackendConfig)],
    files: &[File],
) {
    let extra = "metadata_ttl: 10m\nfuse: { zero_message_opens: true }\n";
    let n = files.len() as f64;
    let em = EMULATOR_PID.load(Ordering::Relaxed);
    // Files/s of `pass` and the emulator's share of a core meanwhile.
    let busy = |pass: &mut dyn FnMut() -> f64| {
        let c0 = cpu_ns(em);
        let fps = pass();
        (fps, (cpu_ns(em) - c0) as f64 / 1e9 / (n / fps) * 100.0)
    };
    let around = |a: f64, b: f64| 2.0 / (1.0 / a + 1.0 / b);
    let mut warm = None;
    println!("\n| loose files, cold epoch | files/s | ratio | emulator busy | target |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (label, cfg)) in links.iter().enumerate() {
        let direct = Backend::build(cfg).expect("backend");
        let mut direct_pass = || rt.block_on(direct_pass(&direct, files));
        direct_pass();
        let (d0, d0_busy) = busy(&mut direct_pass);
        let (plain, plain_busy) = busy(&mut || mount_passes(cfg, extra, files)[0]);
        let (d1, d1_busy) = busy(&mut direct_pass);

        let m = mount(cfg, extra);
        settle(&m);
        let root = m.path("imgs");
        // The global read order: position i of `pass` is files[i].
        let list: String = files
            .iter()
            .map(|f| format!("{}\n", root.join(&f.key).display()))
            .collect();
        let plan = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(plan.path(), list).expect("plan");
        let r0 = requests(&m);
        ctl(
            &m,
            &[
                "plan",
                "submit",
                plan.path().to_str().expect("utf-8"),
                "--job",
                "bench",
            ],
        );
        let (cold, cold_busy) = busy(&mut || read_pass(&root, files));
        let r1 = requests(&m);
        let status = ctl(&m, &["plan", "status"]);
        let (s, _) = scrape(&m);
        let wait = value(
            &s,
            "warpdrive_read_wait_seconds_total",
            &[("backend", "imgs")],
        );
        let ahead = value(
            &s,
            "warpdrive_plan_entries_total",
            &[("job", "bench"), ("outcome", "ahead")],
        );
        if i == 0 {
            quiet(m.pid());
            warm = Some(warm_passes(&root, files));
        }
        drop(m);
        let (d2, d2_busy) = busy(&mut direct_pass);
        eprintln!("{label}: plan status after the cold epoch:\n{status}");
        println!(
            "| {label}: direct GETs, {THREADS} at a time (before, between, after: {d0:.0}, {d1:.0}, {d2:.0}) | | | {d0_busy:.0} %, {d1_busy:.0} %, {d2_busy:.0} % | |"
        );
        println!(
            "| {label}: no plan ÷ direct around it | {plain:.0} | {:.2} | {plain_busy:.0} % | (report) |",
            plain / around(d0, d1)
        );
        println!(
            "| {label}: with a plan ÷ direct around it ({:.3} requests per file; {ahead:.0} of {n:.0} entries fetched before their reader reached them; readers blocked on the backend {:.2} ms per file) | {cold:.0} | **{:.2}** | {cold_busy:.0} % | ≥ 0.9 |",
            (r1 - r0) / n,
            wait * 1e3 / n,
            cold / around(d1, d2)
        );
    }

    let local = tempfile::tempdir().expect("tempdir");
    for (i, f) in files.iter().enumerate() {
        let p = local.path().join(&f.key);
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(&p, random_bytes(f.size, i as u64)).expect("write");
    }
    read_pass(local.path(), files);
    let local_fps = warm_passes(local.path(), files);
    let warm = warm.expect("a first link");
    println!("\n| loose files, warm epoch | files/s | ratio | target |");
    println!("|---|---:|---:|---:|");
    println!(
        "| warm epoch (planned mount) ÷ local disk ({local_fps:.0} files/s) | {warm:.0} | **{:.2}** | ≥ 0.8 |",
        warm / local_fps
    );
}

/// Warm files/s and MB/s of files of several sizes, opened by passthrough
/// (`passthrough_min_size: 0`) and keep-cache (`passthrough: off`): 200 files each, page cache
/// warm, through the delaying proxy (which a warm pass does not reach).
fn passthrough_by_size(
    rt: &tokio::runtime::Runtime,
    upload: &warpdrive_config::BackendConfig,
    cfg: &warpdrive_config::BackendConfig,
) {
    println!(
        "\n| file size, warm | passthrough files/s | keep-cache files/s | keep-cache ÷ passthrough |"
    );
    println!("|---:|---:|---:|---:|");
    for size in [64usize << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20] {
        let count = (200usize).min((512 << 20) / size);
        let files: Vec<File> = (0..count)
            .map(|i| File {
                key: format!("sizes/{size}/f{i:04}"),
                size,
            })
            .collect();
        for chunk in files.chunks(50) {
            let objects = chunk
                .iter()
                .enumerate()
                .map(|(j, f)| (f.key.clone(), random_bytes(f.size, j as u64)))
                .collect();
            rt.block_on(upload_many(upload, objects, 8))
                .expect("upload");
        }
        let pt = mount_passes(
            cfg,
            "metadata_ttl: 10m\nfuse: { passthrough_min_size: 0 }\n",
            &files,
        )[1];
        let kc = mount_passes(
            cfg,
            "metadata_ttl: 10m\nfuse: { passthrough: off }\n",
            &files,
        )[1];
        println!(
            "| {} KiB | {pt:.0} | {kc:.0} | {:.2} |",
            size >> 10,
            kc / pt
        );
    }
}

/// The main table: cold and warm through the mount against direct GETs, local disk and
/// rclone.
fn main_table(
    rt: &tokio::runtime::Runtime,
    cfg: &warpdrive_config::BackendConfig,
    endpoint: &str,
    files: &[File],
) {
    let files = files.to_vec();
    let direct = Backend::build(cfg).expect("backend");
    let me = std::process::id() as i32;
    let em = EMULATOR_PID.load(Ordering::Relaxed);
    // The emulator's first requests run slower (its JIT warms up; a first pass over 10,000
    // files cost it 4.6 ms of CPU per file, later ones 2.5 ms): a whole pass, not measured.
    rt.block_on(direct_pass(&direct, &files));
    let cpu0 = [cpu_ns(me), cpu_ns(em)];
    let direct_before = rt.block_on(direct_pass(&direct, &files));
    let n = files.len() as f64;
    eprintln!(
        "direct: {direct_before:.0} files/s (CPU per file: client {:.2} ms, emulator {:.2} ms; emulator busy {:.0}% of a core)",
        (cpu_ns(me) - cpu0[0]) as f64 / 1e6 / n,
        (cpu_ns(em) - cpu0[1]) as f64 / 1e6 / n,
        (cpu_ns(em) - cpu0[1]) as f64 / 1e9 / (n / direct_before) * 100.0
    );

    // Kept until the mount's passes are done: on a filesystem without a journal (ext4 here),
    // creating files just after thousands were deleted costs twice as much CPU.
    let stored = tempfile::tempdir().expect("tempdir");
    let store_fps = rt.block_on(direct_store_pass(&direct, &files, stored.path()));
    let [cold, warm, req_cold, req_warm] = mount_passes(cfg, "metadata_ttl: 10m\n", &files);
    // Direct GETs again after each mount's passes: the emulator slows as it serves (its
    // heap grows; 2.5 ms of its CPU per file at first, up to 3.8 ms by the last pass), so
    // each cold pass is compared with the direct passes on either side of it.
    let direct_mid = rt.block_on(direct_pass(&direct, &files));
    let [zero_cold, zero_warm, zero_req_cold, zero_req_warm] = mount_passes(
        cfg,
        "metadata_ttl: 10m\nfuse: { zero_message_opens: true }\n",
        &files,
    );
    let direct_after = rt.block_on(direct_pass(&direct, &files));
    let around = |a: f64, b: f64| 2.0 / (1.0 / a + 1.0 / b);
    let direct_fps = around(direct_before, direct_mid);
    let zero_direct_fps = around(direct_mid, direct_after);
    drop(stored);
    // The floor: opens and closes alone through a warm mount.
    let m = mount(cfg, "metadata_ttl: 10m\n");
    settle(&m);
    read_pass(&m.path("imgs"), &files);
    quiet(m.pid());
    let opens = open_pass(&m.path("imgs"), &files);
    drop(m);

    // The same tree on local disk, page cache warm.
    let local = tempfile::tempdir().expect("tempdir");
    for (i, f) in files.iter().enumerate() {
        let p = local.path().join(&f.key);
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(&p, random_bytes(f.size, i as u64)).expect("write");
    }
    read_pass(local.path(), &files);
    let local_fps = warm_passes(local.path(), &files);
    let local_opens = open_pass(local.path(), &files);
    // The warm floor: the mount's opens and closes, plus what reading costs on local disk.
    let floor = 1.0 / (1.0 / opens + 1.0 / local_fps - 1.0 / local_opens);

    // rclone, if it can be run here.
    let rclone = match Rclone::mount(endpoint) {
        Some(r) => {
            let cold = read_pass(&r.mp, &files);
            let warm = read_pass(&r.mp, &shuffled(files.clone(), 99));
            Some((cold, warm))
        }
        None => {
            eprintln!("rclone could not mount (run `make deps`); its row is left out");
            None
        }
    };

    println!("| small files | files/s | ratio | target |");
    println!("|---|---:|---:|---:|");
    println!(
        "| direct GETs, {THREADS} at a time (before the mount, between the two mounts, after them: {direct_before:.0}, {direct_mid:.0}, {direct_after:.0}; the mean of the two around the default mount) | {direct_fps:.0} | | |"
    );
    println!(
        "| floor: a minimal caching client (the mount's LISTs and `If-Match` GETs, each file written to a new local file) ÷ direct | {store_fps:.0} | {:.2} | |",
        store_fps / direct_fps
    );
    println!(
        "| mount, cold ÷ direct | {cold:.0} | {:.2} | ≥ 0.9 |",
        cold / direct_fps
    );
    println!("| backend requests per file, cold | | {req_cold:.3} | ≤ 1.05 |");
    println!("| local disk, page cache warm | {local_fps:.0} | | |");
    println!(
        "| mount, warm ÷ local disk | {warm:.0} | {:.2} | ≥ 0.5 |",
        warm / local_fps
    );
    println!("| backend requests per file, warm | | {req_warm:.3} | 0 |");
    println!(
        "| floor: the mount's open + close ({opens:.0}/s), plus a local read | {floor:.0} | {:.2} of local | |",
        floor / local_fps
    );
    println!(
        "| zero-message opens, cold ÷ direct around it ({zero_direct_fps:.0}; {zero_req_cold:.3} requests per file) | {zero_cold:.0} | {:.2} | ≥ 0.9 |",
        zero_cold / zero_direct_fps
    );
    println!(
        "| zero-message opens, warm ÷ local disk ({zero_req_warm:.3} requests per file) | {zero_warm:.0} | {:.2} | ≥ 0.5 |",
        zero_warm / local_fps
    );
    if let Some((rc, rw)) = rclone {
        println!("| rclone --vfs-cache-mode full, cold | {rc:.0} | | |");
        println!(
            "| mount, warm ÷ rclone, warm | {rw:.0} | {:.1} | ≥ 10 |",
            warm / rw
        );
    }
}
