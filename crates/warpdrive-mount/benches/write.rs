//! `make bench`, section `write`: checkpoints written through the mount, on Azurite. In one
//! run:
//!
//! * a sequential write of a 1 GiB file through the mount (`write` in 1 MiB calls, then
//!   `close`, which commits) ÷ a direct multipart upload of the same bytes with the same part
//!   size through the store's client (target ≥ 0.9), each the median of three, each kind
//!   once in each place of the order;
//! * save-then-load: reading the file back right after its close ÷ reading the same bytes
//!   from a file on local disk (target ≥ 0.9), both with the page cache dropped first (the
//!   read comes from the cache disk, through passthrough, as a fresh process would see it),
//!   and both with it warm.
//!
//! `WRITE_MIB=N` writes N MiB instead of 1,024. Prints a table; asserts only that the bytes
//! read back are the bytes written.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::time::Instant;

use common::{Mount, cpu_ns, drop_page_cache, runtime, selected, sha256};
use object_store::ObjectStoreExt;
use warpdrive_store::Backend;
use warpdrive_testkit::{Emulator, Kind, random_bytes};

/// MiB/s of `bytes` in `secs`.
fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1 << 20) as f64
}

/// Runs' rates, as the table lists them.
fn runs(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reads `path` whole in 1 MiB reads; (MiB/s, SHA-256).
fn read_file(path: &std::path::Path) -> (f64, String) {
    let t0 = Instant::now();
    let mut f = std::fs::File::open(path).expect("open");
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    (rate(all.len(), t0.elapsed().as_secs_f64()), sha256(&all))
}

fn main() {
    if !selected("write") {
        return;
    }
    let mib: usize = std::env::var("WRITE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let rt = runtime();
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("ckpts").expect("container");
    let mut b = em.backend("cp", "ckpts", "");
    b.write.prefixes = vec!["ckpt/".into()];
    b.write.overwrite = true;
    let data = random_bytes(size, 7);
    let digest = sha256(&data);
    let part = warpdrive_fs::core::WRITE_PART_SIZE as usize;
    let direct = Backend::build(&b).expect("backend");
    let store = direct.object_store().expect("a cloud store");
    let m = Mount::start_with_cache(std::slice::from_ref(&b), "", "max_size: 8GiB");
    std::fs::create_dir(m.path("cp/ckpt")).expect("mkdir");

    let mut mount_runs = Vec::new();
    let mut direct_runs = Vec::new();
    // The floor: the same direct upload by a client that also keeps the bytes in a file on
    // the cache's disk as it sends them (what the mount must do to have them cached).
    let mut floor_runs = Vec::new();
    let me = std::process::id() as i32;
    // CPU seconds (client side, emulator) of the direct uploads and of the mount's writes.
    let (mut cpu_direct, mut cpu_mount) = ([0f64; 2], [0f64; 3]);
    let secs = |ns: u64| ns as f64 / 1e9;
    for i in 0..3 {
        // Each kind runs once in each place of the order (the emulator slows as it keeps
        // objects, and a run right after another shares the disk with its writeback): every
        // run starts with the dirty pages written out, and every object but the last one the
        // mount wrote (read back below, right after its close) is deleted once timed.
        let order = [
            ["mount", "direct", "floor"],
            ["floor", "mount", "direct"],
            ["direct", "floor", "mount"],
        ];
        for kind in &order[i] {
            // SAFETY: sync(2) takes no arguments.
            unsafe { libc::sync() };
            let c0 = [cpu_ns(me), cpu_ns(em.pid()), cpu_ns(m.pid())];
            let t0 = Instant::now();
            match *kind {
                "direct" | "floor" => {
                    // A multipart upload of the same parts, four in flight (the mount's
                    // budget holds more, but one file's parts go up in order); the floor also
                    // writes each chunk to a file on the cache's disk before sending it.
                    let kept = m.dir.path().join(format!("floor-{i}.bin"));
                    let path = object_store::path::Path::from(format!("ckpt/{kind}-{i}.bin"));
                    rt.block_on(async {
                        let mut local = (*kind == "floor")
                            .then(|| std::fs::File::create(&kept).expect("local copy"));
                        let upload = store.put_multipart(&path).await.expect("upload");
                        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, part);
                        for c in data.chunks(1 << 20) {
                            w.wait_for_capacity(4).await.expect("capacity");
                            if let Some(f) = local.as_mut() {
                                f.write_all(c).expect("local write");
                            }
                            w.write(c);
                        }
                        w.finish().await.expect("complete");
                    });
                    let secs_taken = t0.elapsed().as_secs_f64();
                    let c1 = [cpu_ns(me), cpu_ns(em.pid()), cpu_ns(m.pid())];
                    if *kind == "direct" {
                        direct_runs.push(rate(size, secs_taken));
                        cpu_direct[0] += secs(c1[0] - c0[0]);
                        cpu_direct[1] += secs(c1[1] - c0[1]);
                    } else {
                        floor_runs.push(rate(size, secs_taken));
                    }
                    let _ = std::fs::remove_file(&kept);
                    rt.block_on(store.delete(&path)).expect("delete");
                }
                _ => {
                    let mut f = std::fs::File::create(m.path(&format!("cp/ckpt/mount-{i}.bin")))
                        .expect("create");
                    for c in data.chunks(1 << 20) {
                        f.write_all(c).expect("write");
                    }
                    drop(f); // the close commits
                    mount_runs.push(rate(size, t0.elapsed().as_secs_f64()));
                    let c1 = [cpu_ns(me), cpu_ns(em.pid()), cpu_ns(m.pid())];
                    cpu_mount[0] += secs(c1[0] - c0[0]);
                    cpu_mount[1] += secs(c1[1] - c0[1]);
                    cpu_mount[2] += secs(c1[2] - c0[2]);
                    if i < 2 {
                        let path = object_store::path::Path::from(format!("ckpt/mount-{i}.bin"));
                        rt.block_on(store.delete(&path)).expect("delete");
                    }
                }
            }
        }
        eprintln!(
            "round {i}: direct {:.0} MiB/s, floor {:.0} MiB/s, mount {:.0} MiB/s",
            direct_runs[i], floor_runs[i], mount_runs[i]
        );
    }
    let (w_mount, w_direct) = (median(mount_runs.clone()), median(direct_runs.clone()));
    let w_floor = median(floor_runs.clone());

    // Save-then-load: the last file written, read back at once (its spool became its
    // cached copy at the close), against the same bytes in a local file.
    let local = tempfile::NamedTempFile::new_in(m.dir.path()).expect("tmp");
    std::fs::write(local.path(), &data).expect("local copy");
    let written = m.path("cp/ckpt/mount-2.bin");
    // The GETs after this show whether the read back was served from the store.
    let gets0 = common::value(
        &common::scrape(&m).0,
        "warpdrive_backend_requests_total",
        &[("op", "get")],
    );
    // Cold reads alternated (the emulator and the disk are still busy with the upload just
    // made): the first mount read is the one right after the close; the ratio takes the
    // medians of three each.
    let (mut mount_colds, mut local_colds) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        drop_page_cache();
        let (r, d) = read_file(&written);
        assert_eq!(d, digest, "the bytes read back are the bytes written");
        mount_colds.push(r);
        drop_page_cache();
        let (r, d) = read_file(local.path());
        assert_eq!(d, digest);
        local_colds.push(r);
    }
    let first = mount_colds[0];
    let (mount_cold, local_cold) = (median(mount_colds), median(local_colds));
    // Warm: each file read twice in a row, the second read timed (the loop above left the
    // page cache holding the local file only).
    let _ = read_file(&written);
    let (mount_warm, d3) = read_file(&written);
    let _ = read_file(local.path());
    let (local_warm, d4) = read_file(local.path());
    for d in [&d3, &d4] {
        assert_eq!(d, &digest, "the bytes read back are the bytes written");
    }
    let gets = common::value(
        &common::scrape(&m).0,
        "warpdrive_backend_requests_total",
        &[("op", "get")],
    ) - gets0;

    println!(
        "\n# Writes: {mib} MiB through the mount on Azurite, parts of {} MiB\n",
        part >> 20
    );
    println!("| | MiB/s | ratio | target |");
    println!("|---|---:|---:|---:|");
    println!(
        "| sequential write through the mount, close included (runs: {}) ÷ direct multipart upload (runs: {}) | {w_mount:.0} | **{:.2}** | ≥ 0.9 |",
        runs(&mount_runs),
        runs(&direct_runs),
        w_mount / w_direct
    );
    println!(
        "| floor: the direct upload keeping a copy on the cache disk as it sends (runs: {}) ÷ direct | {w_floor:.0} | {:.2} | |",
        runs(&floor_runs),
        w_floor / w_direct
    );
    let gib = (3 * size) as f64 / (1u64 << 30) as f64;
    println!(
        "| CPU seconds per GiB: direct upload: client {:.2}, emulator {:.2}; through the mount: writer {:.2}, daemon {:.2}, emulator {:.2} (two cores) | | | |",
        cpu_direct[0] / gib,
        cpu_direct[1] / gib,
        cpu_mount[0] / gib,
        cpu_mount[2] / gib,
        cpu_mount[1] / gib
    );
    println!(
        "| read back after the close, page cache dropped (the first read, right after the close: {first:.0} MiB/s; {gets:.0} GETs in all), median of 3 ÷ local disk, alternated ({local_cold:.0} MiB/s) | {mount_cold:.0} | **{:.2}** | ≥ 0.9 |",
        mount_cold / local_cold
    );
    println!(
        "| read back again, page cache warm ÷ local disk ({local_warm:.0} MiB/s) | {mount_warm:.0} | {:.2} | |",
        mount_warm / local_warm
    );
    drop(local);
    drop(m);
    drop(em);
    many_writers(&rt);
}

/// Eight writers of 512 MiB at once through a fresh mount: the daemon's peak RSS against its
/// upload memory budget.
fn many_writers(_rt: &tokio::runtime::Runtime) {
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("ckpts").expect("container");
    let mut b = em.backend("cp", "ckpts", "");
    b.write.prefixes = vec!["ckpt/".into()];
    let m = Mount::start_with_cache(std::slice::from_ref(&b), "", "max_size: 1GiB");
    std::fs::create_dir(m.path("cp/ckpt")).expect("mkdir");
    let rss = |what: &str| common::rss(m.pid(), what);
    let idle = rss("VmRSS:");
    let t0 = Instant::now();
    common::write_at_once(
        (0..8)
            .map(|i| m.path(&format!("cp/ckpt/w{i}.bin")))
            .collect(),
        512,
    );
    let took = t0.elapsed().as_secs_f64();
    let peak = rss("VmHWM:");
    println!(
        "| 8 writers × 512 MiB at once: {:.0} MiB/s in all; daemon RSS idle {} MiB, peak {} MiB (upload memory budget {} MiB) | | | |",
        (8 * 512) as f64 / took,
        idle >> 20,
        peak >> 20,
        warpdrive_fs::core::WRITE_MEMORY >> 20
    );
}
