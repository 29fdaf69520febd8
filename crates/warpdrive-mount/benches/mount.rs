//! `make bench`: listing and sequential-read throughput through the mount, each divided by the
//! same work done with the store API directly, against the same emulator in the same run.
//!
//! * Listing: a prefix of N one-byte objects (moto, seeded in-process), listed with
//!   `read_dir` through a fresh mount vs paging `Backend::list_page` directly (1,000 per page).
//!   Target: mount ÷ direct ≤ 1.2.
//! * Reading: a 256 MiB object read sequentially with 1 MiB `read`s through a fresh daemon
//!   over an empty block cache (a cold read) vs a loop of sequential 8 MiB ranged GETs, on
//!   Azurite, moto and fake-gcs-server. Target:
//!   mount throughput ÷ direct ≥ 0.9. Best of `REPS` runs each, alternating, so a noisy
//!   neighbour hurts both sides alike. Beside it, the CPU time each side burns per GiB
//!   (client or reader, daemon, emulator) and the cold throughput at which the mount would
//!   keep every core of the machine busy: its ceiling here.
//!
//! Prints a table of what it measured; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Mount, cpu_ns, runtime, selected};
use warpdrive_config::BackendConfig;
use warpdrive_store::Backend;
use warpdrive_testkit::{Emulator, Kind, random_bytes, upload_many};

const READ_SIZE: usize = 256 << 20;
const DIRECT_CHUNK: u64 = 8 << 20;
const REPS: usize = 3;

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

async fn direct_list(b: &Backend, dir: &str) -> (usize, Duration) {
    let start = Instant::now();
    let mut n = 0;
    let mut token = None;
    loop {
        let page = b
            .list_page(dir, token.take(), None)
            .await
            .expect("list page");
        n += page.dirs.len() + page.objects.len();
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    (n, start.elapsed())
}

fn mount_list(m: &Mount, rel: &str) -> (usize, Duration) {
    let start = Instant::now();
    let n = std::fs::read_dir(m.path(rel)).expect("read_dir").count();
    (n, start.elapsed())
}

async fn direct_read(b: &Backend, key: &str, size: u64) -> Duration {
    let start = Instant::now();
    let mut off = 0;
    while off < size {
        let end = (off + DIRECT_CHUNK).min(size);
        let bytes = b.get_range(key, off..end, None).await.expect("get_range");
        assert_eq!(bytes.len() as u64, end - off);
        off = end;
    }
    start.elapsed()
}

fn mount_read(m: &Mount, rel: &str) -> Duration {
    let start = Instant::now();
    let mut f = std::fs::File::open(m.path(rel)).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, READ_SIZE);
    start.elapsed()
}

fn main() {
    let rt = runtime();
    println!("# WarpDrive benchmarks (mount vs direct store API, same emulator, same run)\n");

    // Listing.
    println!("| listing | objects | direct | mount | mount ÷ direct (target ≤ 1.2) |");
    println!("|---|---:|---:|---:|---:|");
    for n in [10_000usize, 100_000] {
        if !selected(&format!("list-{n}")) {
            continue;
        }
        let em = Emulator::start_moto_seeded("list", "big/", n).expect("seeded moto");
        let cfg = em.backend("list", "list", "");
        let b = Backend::build(&cfg).expect("backend");
        let (dn, dt) = rt.block_on(direct_list(&b, "big"));
        let m = Mount::start(std::slice::from_ref(&cfg), "");
        let (mn, mt) = mount_list(&m, "list/big");
        // `read_dir` excludes `.` and `..`; both must see every object.
        assert_eq!((dn, mn), (n, n), "listing counts");
        println!(
            "| moto, list-with-delimiter | {n} | {:.2} s | {:.2} s | {:.2} |",
            dt.as_secs_f64(),
            mt.as_secs_f64(),
            mt.as_secs_f64() / dt.as_secs_f64()
        );
    }

    // Sequential reads.
    println!(
        "\n| read 256 MiB | direct (8 MiB GETs) | mount, cold (1 MiB reads) | mount ÷ direct (target ≥ 0.9) | mount, warm without passthrough | warm ÷ direct |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let data = random_bytes(READ_SIZE, 7);
    let mut cpu_rows = Vec::new();
    for kind in [Kind::Azurite, Kind::Moto, Kind::Gcs] {
        if !selected(&format!("read-{}", kind.name())) {
            continue;
        }
        let em = Emulator::start(kind).expect("emulator");
        em.create_bucket("read").expect("bucket");
        let cfg: BackendConfig = em.backend("r", "read", "");
        rt.block_on(upload_many(&cfg, vec![("big.bin".into(), data.clone())], 1))
            .expect("upload");
        let b = Arc::new(Backend::build(&cfg).expect("backend"));
        let mut m = Mount::start(std::slice::from_ref(&cfg), "fuse: { passthrough: off }\n");
        let mut best_direct = Duration::MAX;
        let mut best_mount = Duration::MAX;
        // CPU spent over all repetitions, in ns, by process: the bench (the direct loop's
        // client, or the reader), the emulator, the daemon (printed as reader, daemon,
        // emulator).
        let me = std::process::id() as i32;
        let (mut direct_cpu, mut mount_cpu) = ([0u64; 2], [0u64; 3]);
        for _ in 0..REPS {
            let c0 = [cpu_ns(me), cpu_ns(em.pid())];
            best_direct =
                best_direct.min(rt.block_on(direct_read(&b, "big.bin", READ_SIZE as u64)));
            direct_cpu[0] += cpu_ns(me) - c0[0];
            direct_cpu[1] += cpu_ns(em.pid()) - c0[1];
            // Cold every time: a new daemon over an empty block cache.
            m.stop_with(libc::SIGTERM);
            let _ = std::fs::remove_dir_all(m.cache_dir());
            m.spawn();
            let c0 = [cpu_ns(me), cpu_ns(em.pid()), cpu_ns(m.pid())];
            best_mount = best_mount.min(mount_read(&m, "r/big.bin"));
            mount_cpu[0] += cpu_ns(me) - c0[0];
            mount_cpu[1] += cpu_ns(em.pid()) - c0[1];
            mount_cpu[2] += cpu_ns(m.pid()) - c0[2];
        }
        // Seconds per GiB read.
        let per_gib = |ns: u64| ns as f64 / 1e9 / ((REPS * READ_SIZE) as f64 / (1u64 << 30) as f64);
        cpu_rows.push((
            kind.name(),
            direct_cpu.map(per_gib),
            mount_cpu.map(per_gib),
            mib_s(READ_SIZE, best_direct),
        ));
        // The ceiling of the daemon's read path on this machine: the same read with every
        // block cached (a new daemon, so the mount's page cache is empty; the cache file
        // stays in the page cache). A cold read cannot beat it.
        let mut best_warm = Duration::MAX;
        for _ in 0..REPS {
            m.stop_with(libc::SIGTERM);
            m.spawn();
            best_warm = best_warm.min(mount_read(&m, "r/big.bin"));
        }
        let d = mib_s(READ_SIZE, best_direct);
        let mm = mib_s(READ_SIZE, best_mount);
        let w = mib_s(READ_SIZE, best_warm);
        println!(
            "| {} | {d:.0} MiB/s | {mm:.0} MiB/s | {:.2} | {w:.0} MiB/s | {:.2} |",
            kind.name(),
            mm / d,
            w / d
        );
    }
    // What the machine's cores allow: the CPU time both sides burn per GiB (summed over every
    // process doing the work), and the throughput at which a cold read through the mount
    // would use every core.
    if !cpu_rows.is_empty() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!();
        println!(
            "| CPU s per GiB read | direct: client | emulator | mount cold: reader | daemon | emulator | mount cold with every core busy | 0.9 × direct |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (kind, d, m, direct_mib_s) in cpu_rows {
            let total: f64 = m.iter().sum();
            println!(
                "| {kind} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} MiB/s | {:.0} MiB/s |",
                d[0],
                d[1],
                m[0],
                m[2],
                m[1],
                cores / total * 1024.0,
                0.9 * direct_mib_s
            );
        }
    }
}
