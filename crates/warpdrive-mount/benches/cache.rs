//! `make bench` (cache part): the block cache's figures, each measured against its baseline
//! in the same run. Sections (filter by name: `cargo bench --bench cache -- warm-seq`):
//!
//! * `block-size`: for each candidate block size, the cold read of a 256 MiB object on Azurite
//!   (mount ÷ a loop of 8 MiB ranged GETs, best of 2) and warm 128 KiB random reads without
//!   passthrough (p50/p99 latency seen by the reader, cache files in the page cache, the
//!   mount's own page cache empty), beside two floors measured in the same run: the same reads
//!   of the cache file directly, and 4 KiB reads through the mount (a FUSE round trip). This is
//!   how the default block size was chosen.
//! * `get-size`: direct ranged-GET throughput on Azurite by GET size and concurrency, which
//!   sizes prefetch GETs.
//! * `warm-seq`: 8 cached 64 MiB files read in parallel with 1 MiB reads through the mount,
//!   with and without passthrough, ÷ the same read of the cache files directly (median of 7
//!   pairs). The page cache is dropped before every run, so every side reads the disk.
//! * `rss`: the daemon's peak RSS (VmHWM) while 8 readers stream 8 cold 64 MiB objects.
//! * `metrics-cost`: warm read throughput with metrics recorded ÷ with `metrics.enabled:
//!   false`, alternating runs.
//! * `startup`: time from starting the daemon over an index of 1,000,000 cached blocks to
//!   the first read served.
//!
//! Prints what it measured; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Mount, cpu_ns, drop_page_cache, runtime, selected, sha256};
use warpdrive_store::Backend;
use warpdrive_testkit::{Emulator, Kind, random_bytes, upload_many};

const MIB: usize = 1 << 20;
const REPS: usize = 7;

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn read_file(path: &std::path::Path) -> usize {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; MIB];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// Reads `paths` in parallel, one thread each; returns the elapsed time.
fn parallel_read(paths: &[std::path::PathBuf], expect_each: usize) -> Duration {
    let start = Instant::now();
    let threads: Vec<_> = paths
        .iter()
        .cloned()
        .map(|p| std::thread::spawn(move || read_file(&p)))
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("reader"), expect_each);
    }
    start.elapsed()
}

/// A moto bucket holding `objects`.
fn moto_with(bucket: &str, objects: Vec<(String, Vec<u8>)>) -> Emulator {
    let em = Emulator::start(Kind::Moto).expect("moto");
    em.create_bucket(bucket).expect("bucket");
    runtime()
        .block_on(upload_many(&em.backend("b", bucket, ""), objects, 4))
        .expect("upload");
    em
}

/// Restarts the daemon over an empty cache.
fn restart_cold(m: &mut Mount) {
    if m.child.is_some() {
        m.stop_with(libc::SIGTERM);
    }
    let _ = std::fs::remove_dir_all(m.cache_dir());
    m.spawn();
}

fn set_config(m: &Mount, from: &str, to: &str) {
    let cfg = std::fs::read_to_string(&m.config).expect("config");
    std::fs::write(&m.config, cfg.replace(from, to)).expect("config");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn block_size_section() {
    let rt = runtime();
    let size = 256 * MIB;
    let data = random_bytes(size, 7);
    // Azurite: moto copies the whole object for every ranged GET, which would measure moto.
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("bsz").expect("container");
    let cfg = em.backend("r", "bsz", "");
    rt.block_on(upload_many(&cfg, vec![("big.bin".into(), data)], 1))
        .expect("upload");
    let b = Arc::new(Backend::build(&cfg).expect("backend"));
    println!(
        "| block size (Azurite) | cold read mount ÷ direct (target ≥ 0.9) | warm 128 KiB random p50 | p99 (target ≤ 100 µs) |"
    );
    println!("|---:|---:|---:|---:|");
    let mut floors = Vec::new();
    for bs in ["256KiB", "1MiB"] {
        let mut m = Mount::prepare(
            std::slice::from_ref(&cfg),
            "fuse: { passthrough: off }\n",
            &format!("max_size: 1GiB, block_size: {bs}"),
        );
        let mut ratio: f64 = 0.0;
        for _ in 0..2 {
            let start = Instant::now();
            let mut off = 0u64;
            while off < size as u64 {
                let end = (off + 8 * MIB as u64).min(size as u64);
                rt.block_on(b.get_range("big.bin", off..end, None))
                    .expect("get");
                off = end;
            }
            let direct = start.elapsed();
            restart_cold(&mut m);
            let start = Instant::now();
            assert_eq!(read_file(&m.path("r/big.bin")), size);
            let mount = start.elapsed();
            ratio = ratio.max(direct.as_secs_f64() / mount.as_secs_f64());
        }
        // Warm: a new daemon over the full cache, the cache file still in the page cache.
        std::thread::sleep(Duration::from_millis(500));
        m.stop_with(libc::SIGTERM);
        m.spawn();
        let (p50, p99) = random_reads(&m.path("r/big.bin"), size, 128 << 10);
        println!("| {bs} | {ratio:.2} | {p50:.0} µs | {p99:.0} µs |");
        floors.push((bs, m));
    }
    // What a read costs without WarpDrive's work in it: the same reads of the cache file
    // itself (no FUSE), and 4 KiB reads through the mount (a FUSE round trip that copies
    // almost nothing).
    println!();
    println!("| warm random reads, same run | p50 | p99 |");
    println!("|---|---:|---:|");
    for (bs, mut m) in floors {
        m.stop_with(libc::SIGTERM);
        let file = warpdrive_cache::read_index_blocks(&m.cache_dir()).expect("index")[0]
            .path
            .clone();
        let (p50, p99) = random_reads(&file, size, 128 << 10);
        println!(
            "| 128 KiB from the cache file directly ({bs} blocks) | {p50:.0} µs | {p99:.0} µs |"
        );
        m.spawn();
        let (p50, p99) = random_reads(&m.path("r/big.bin"), size, 4 << 10);
        println!(
            "| 4 KiB through the mount ({bs} blocks): the FUSE round trip | {p50:.0} µs | {p99:.0} µs |"
        );
    }
    let (p50, p99) = first_touch(size, 128 << 10);
    println!(
        "| first write to 128 KiB of fresh memory (what giving a 128 KiB read new page-cache pages costs the machine) | {p50:.0} µs | {p99:.0} µs |"
    );
}

/// Writes each `chunk` of `size` bytes of freshly allocated memory once: every write
/// faults in pages never touched before, as the kernel must when a read through the mount
/// (`FOPEN_KEEP_CACHE`) gets new page-cache pages. On a VM whose free memory is returned to
/// the host, that is where a 128 KiB read's tail goes. Returns p50 and p99 latency in µs.
fn first_touch(size: usize, chunk: usize) -> (f64, f64) {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let mut lat: Vec<Duration> = v
        .spare_capacity_mut()
        .chunks_mut(chunk)
        .map(|c| {
            let t = Instant::now();
            c.fill(std::mem::MaybeUninit::new(1));
            t.elapsed()
        })
        .collect();
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(percentile(&lat, 0.5)), us(percentile(&lat, 0.99)))
}

/// Reads `read` bytes at the start of every 128 KiB slot of `path` once, in a fixed
/// shuffled order (so each read misses the mount's page cache and reaches the daemon).
/// Returns p50 and p99 latency in µs.
fn random_reads(path: &std::path::Path, size: usize, read: usize) -> (f64, f64) {
    let f = std::fs::File::open(path).expect("open");
    let slots = size / (128 << 10);
    let mut order: Vec<usize> = (0..slots).collect();
    for i in (1..order.len()).rev() {
        let j = (i * 2_654_435_761) % (i + 1);
        order.swap(i, j);
    }
    let mut buf = vec![0u8; read];
    let mut lat: Vec<Duration> = order
        .iter()
        .map(|slot| {
            let t = Instant::now();
            f.read_exact_at(&mut buf, (*slot * (128 << 10)) as u64)
                .expect("read");
            t.elapsed()
        })
        .collect();
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(percentile(&lat, 0.5)), us(percentile(&lat, 0.99)))
}

/// Direct ranged-GET throughput on Azurite by request size and concurrency: what prefetch
/// runs are sized by.
fn get_size_section() {
    let rt = runtime();
    let size = 256 * MIB;
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("gsz").expect("container");
    let cfg = em.backend("r", "gsz", "");
    rt.block_on(upload_many(
        &cfg,
        vec![("big.bin".into(), random_bytes(size, 9))],
        1,
    ))
    .expect("upload");
    let b = Arc::new(Backend::build(&cfg).expect("backend"));
    println!("| GET size (Azurite, 256 MiB read) | 1 at a time | 2 at a time | 4 at a time |");
    println!("|---:|---:|---:|---:|");
    for get in [MIB, 4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB] {
        let mut row = format!("| {} MiB |", get / MIB);
        for par in [1usize, 2, 4] {
            let start = Instant::now();
            rt.block_on(async {
                let offsets: Vec<u64> = (0..size).step_by(get).map(|o| o as u64).collect();
                let mut set = tokio::task::JoinSet::new();
                let mut it = offsets.into_iter();
                loop {
                    while set.len() < par {
                        let Some(off) = it.next() else { break };
                        let b = b.clone();
                        set.spawn(async move {
                            b.get_range("big.bin", off..off + get as u64, None)
                                .await
                                .expect("get")
                        });
                    }
                    if set.join_next().await.is_none() {
                        break;
                    }
                }
            });
            row.push_str(&format!(" {:.0} MiB/s |", mib_s(size, start.elapsed())));
        }
        println!("{row}");
    }
}

fn warm_seq_section() {
    let objects: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("f{i}"), random_bytes(64 * MIB, 40 + i)))
        .collect();
    let sums: Vec<String> = objects.iter().map(|(_, d)| sha256(d)).collect();
    let em = moto_with("warm", objects);
    let cfg = em.backend("w", "warm", "");
    let mut m = Mount::prepare(std::slice::from_ref(&cfg), "", "max_size: 2GiB");
    m.spawn();
    let paths: Vec<_> = (0..8).map(|i| m.path(&format!("w/f{i}"))).collect();
    for (p, s) in paths.iter().zip(&sums) {
        assert_eq!(&sha256(&std::fs::read(p).expect("cold read")), s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let files: Vec<_> = warpdrive_cache::read_index_blocks(&m.cache_dir())
        .expect("index")
        .into_iter()
        .map(|b| b.path)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(files.len(), 8);
    let total = 8 * 64 * MIB;
    // First open in a daemon's life verifies the file; do that before measuring.
    m.stop_with(libc::SIGTERM);
    m.spawn();
    parallel_read(&paths, 64 * MIB);
    // Each mode runs in pairs with a direct read just before it, so both sides of a ratio
    // see the disk in the same state; the median pair is reported (the disk of a shared VM
    // moves by ±10 % between runs).
    let median = |paths: &[std::path::PathBuf]| {
        let mut pairs: Vec<(f64, f64)> = (0..REPS)
            .map(|_| {
                drop_page_cache();
                let d = mib_s(total, parallel_read(&files, 64 * MIB));
                drop_page_cache();
                (d, mib_s(total, parallel_read(paths, 64 * MIB)))
            })
            .collect();
        pairs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        pairs[pairs.len() / 2]
    };
    let (d_pt, pt) = median(&paths);
    m.stop_with(libc::SIGTERM);
    set_config(&m, "backends:", "fuse: { passthrough: off }\nbackends:");
    m.spawn();
    let (d_off, off) = median(&paths);
    println!(
        "| warm sequential, 8 × 64 MiB in parallel | cache files directly, MiB/s | mount, MiB/s | mount ÷ direct |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| passthrough (target ≥ 0.95) | {d_pt:.0} | {pt:.0} | {:.2} |",
        pt / d_pt
    );
    println!(
        "| passthrough off (target ≥ 0.7) | {d_off:.0} | {off:.0} | {:.2} |",
        off / d_off
    );
}

/// What recording metrics costs on the warm read path: 8 cached 256 MiB files read in parallel
/// through the mount without passthrough (every read reaches the daemon, which serves it from
/// the cache file in the page cache: the daemon's own work is all there is), with
/// `metrics.enabled` true and false, alternating, a new daemon each run (so the mount's page
/// cache is empty). Median ratio of 7 pairs.
fn metrics_cost_section() {
    const FILE: usize = 256 * MIB;
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..8 {
        std::fs::write(src.path().join(format!("m{i}")), random_bytes(FILE, 80 + i))
            .expect("write");
    }
    let cfg = warpdrive_testkit::local_backend("l", src.path());
    let mut m = Mount::prepare(
        std::slice::from_ref(&cfg),
        "fuse: { passthrough: off }\n",
        "max_size: 4GiB",
    );
    m.spawn();
    let paths: Vec<_> = (0..8).map(|i| m.path(&format!("l/m{i}"))).collect();
    parallel_read(&paths, FILE); // fills the cache
    let total = 8 * FILE;
    let (on, off) = (
        "metrics: { listen: 127.0.0.1:",
        "metrics: { enabled: false, listen: 127.0.0.1:",
    );
    // (throughput, daemon CPU seconds) of one run.
    let mut run = |enabled: bool| {
        m.stop_with(libc::SIGTERM);
        if enabled {
            set_config(&m, off, on);
        } else {
            set_config(&m, on, off);
        }
        m.spawn();
        let cpu = cpu_ns(m.pid());
        let t = parallel_read(&paths, FILE);
        (mib_s(total, t), (cpu_ns(m.pid()) - cpu) as f64 / 1e9)
    };
    run(true); // warms up the cache files in the page cache: not measured
    // Pairs alternate which side runs first, so a drift in the machine's speed cancels out.
    let runs: Vec<((f64, f64), (f64, f64))> = (0..REPS)
        .map(|i| {
            if i % 2 == 0 {
                let on = run(true);
                (on, run(false))
            } else {
                let off = run(false);
                (run(true), off)
            }
        })
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let throughput = median(runs.iter().map(|(a, b)| a.0 / b.0).collect());
    let spread: Vec<String> = {
        let mut r: Vec<f64> = runs.iter().map(|(a, b)| a.0 / b.0).collect();
        r.sort_by(f64::total_cmp);
        r.iter().map(|x| format!("{x:.2}")).collect()
    };
    // The daemon's CPU time for the same bytes: the cost itself, far steadier than
    // throughput on a shared machine.
    let cpu = median(runs.iter().map(|(a, b)| b.1 / a.1).collect());
    let cpu_on = median(runs.iter().map(|(a, _)| a.1).collect());
    let cpu_off = median(runs.iter().map(|(_, b)| b.1).collect());
    println!(
        "| warm read throughput, metrics on ÷ off (target ≥ 0.98) | {throughput:.3} | median of {REPS} pairs: {} |",
        spread.join(" ")
    );
    println!(
        "| daemon CPU for the same reads, off ÷ on | {cpu:.3} | {cpu_on:.2} s on, {cpu_off:.2} s off for {} GiB |",
        total / 1024 / MIB
    );
    // What the daemon records for one cached read, timed alone: two threads recording into
    // the same counters, as FUSE threads do.
    let metrics = std::sync::Arc::new(warpdrive_metrics::Metrics::new("bench", ""));
    const N: u32 = 2_000_000;
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = metrics.clone();
            std::thread::spawn(move || {
                for _ in 0..N {
                    let t = Instant::now();
                    m.fuse.op(warpdrive_metrics::Op::Read);
                    warpdrive_metrics::add(&m.read.hit_blocks, 1);
                    warpdrive_metrics::add(&m.read.hit_bytes, 1 << 20);
                    m.fuse.read_size.observe(1 << 20);
                    m.fuse.read_latency.observe_duration(t.elapsed());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("recorder");
    }
    println!(
        "| recording one read (2 threads at once) | {:.0} ns | a FUSE round trip alone: tens of µs |",
        start.elapsed().as_nanos() as f64 / f64::from(N)
    );
}

/// CPU time of every thread of `pid` so far, in ns (`/proc/<pid>/task/*/schedstat`).
fn vm_hwm(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

fn rss_section() {
    let objects: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("s{i}"), random_bytes(64 * MIB, 60 + i)))
        .collect();
    let em = moto_with("rss", objects);
    let cfg = em.backend("s", "rss", "");
    let m = Mount::start(std::slice::from_ref(&cfg), "");
    let paths: Vec<_> = (0..8).map(|i| m.path(&format!("s/s{i}"))).collect();
    let t = parallel_read(&paths, 64 * MIB);
    let peak = vm_hwm(m.pid());
    println!(
        "| daemon peak RSS, 8 readers × 64 MiB cold | {:.0} MiB (target ≤ 256 MiB) | {:.0} MiB/s |",
        peak as f64 / MIB as f64,
        mib_s(8 * 64 * MIB, t)
    );
}

fn startup_section() {
    let em = moto_with("start", vec![("tiny".into(), b"first read".to_vec())]);
    let cfg = em.backend("s", "start", "");
    let mut m = Mount::prepare(
        std::slice::from_ref(&cfg),
        "",
        "max_size: 100TiB, min_free: 0",
    );
    let t = Instant::now();
    warpdrive_cache::synthesize(
        &warpdrive_cache::CacheConfig {
            dir: m.cache_dir(),
            block_size: warpdrive_cache::DEFAULT_BLOCK_SIZE,
        },
        "other",
        1000,
        1000,
    )
    .expect("synthesize");
    let built = t.elapsed();
    let start = Instant::now();
    m.spawn();
    assert_eq!(
        std::fs::read(m.path("s/tiny")).expect("first read"),
        b"first read"
    );
    let first = start.elapsed();
    println!(
        "| start-up over 1,000,000 cached blocks → first read | {:.2} s (target ≤ 2 s) | index built in {:.1} s |",
        first.as_secs_f64(),
        built.as_secs_f64()
    );
}

fn main() {
    println!("# WarpDrive block cache benchmarks (same machine, same run)\n");
    if selected("block-size") {
        block_size_section();
        println!();
    }
    if selected("get-size") {
        get_size_section();
        println!();
    }
    if selected("warm-seq") {
        warm_seq_section();
        println!();
    }
    println!("| measurement | value | |\n|---|---:|---:|");
    if selected("rss") {
        rss_section();
    }
    if selected("startup") {
        startup_section();
    }
    if selected("metrics-cost") {
        metrics_cost_section();
    }
}
