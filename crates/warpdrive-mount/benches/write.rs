//! `make bench`, section `write`: checkpoints written through the mount, on Azurite. In one
//! run:
//!
//! * a sequential write of a 1 GiB file through the mount (`write` in 1 MiB calls, then
//!   `close`, which commits) ÷ a direct multipart upload of the same bytes with the same part
//!   size through the store's client (target ≥ 0.9), each the median of three, alternated;
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

use common::{Mount, drop_page_cache, runtime, selected, sha256};
use object_store::ObjectStoreExt;
use warpdrive_store::Backend;
use warpdrive_testkit::{Emulator, Kind, random_bytes};

/// MiB/s of `bytes` in `secs`.
fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1 << 20) as f64
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
    for i in 0..3 {
        // Direct: a multipart upload of the same parts, two in flight (the mount's budget
        // holds more, but one file's parts go up in order).
        let path = object_store::path::Path::from(format!("ckpt/direct-{i}.bin"));
        let t0 = Instant::now();
        rt.block_on(async {
            let upload = store.put_multipart(&path).await.expect("upload");
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, part);
            for c in data.chunks(1 << 20) {
                w.wait_for_capacity(4).await.expect("capacity");
                w.write(c);
            }
            w.finish().await.expect("complete");
        });
        direct_runs.push(rate(size, t0.elapsed().as_secs_f64()));

        let t0 = Instant::now();
        let mut f =
            std::fs::File::create(m.path(&format!("cp/ckpt/mount-{i}.bin"))).expect("create");
        for c in data.chunks(1 << 20) {
            f.write_all(c).expect("write");
        }
        drop(f); // the close commits
        mount_runs.push(rate(size, t0.elapsed().as_secs_f64()));
        eprintln!(
            "run {i}: direct {:.0} MiB/s, mount {:.0} MiB/s",
            direct_runs[i], mount_runs[i]
        );
    }
    let (w_mount, w_direct) = (median(mount_runs.clone()), median(direct_runs.clone()));

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
    drop_page_cache();
    let (mount_cold, d1) = read_file(&written);
    drop_page_cache();
    let (local_cold, d2) = read_file(local.path());
    let (mount_warm, d3) = read_file(&written);
    let (local_warm, d4) = read_file(local.path());
    for d in [&d1, &d2, &d3, &d4] {
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
        mount_runs
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        direct_runs
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        w_mount / w_direct
    );
    println!(
        "| read back right after the close, page cache dropped ({gets:.0} GETs) ÷ local disk ({local_cold:.0} MiB/s) | {mount_cold:.0} | **{:.2}** | ≥ 0.9 |",
        mount_cold / local_cold
    );
    println!(
        "| read back again, page cache warm ÷ local disk ({local_warm:.0} MiB/s) | {mount_warm:.0} | {:.2} | |",
        mount_warm / local_warm
    );
}
