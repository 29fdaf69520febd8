//! `make bench`, section `plan` (with `small_files`' section `small-files-plan` for loose
//! files): epoch plans on a dataset larger than the cache. `warpdrive-forge train` over
//! WebDataset shards on Azurite behind the demo's cross-region link ([`WEST_US_3`]: 30 ms each
//! way, 16 MB/s), through a mount whose cache holds half the dataset, for three epochs with a
//! new shuffle each (forge's `--first-epoch`: each epoch is a run resumed at its start), the
//! page cache dropped every second (a real dataset is larger than memory). In one run, with
//! plans (`--plan`: the daemon fetches ahead and evicts by the plans) and without (LRU):
//!
//! * the share of each epoch's bytes not fetched from the origin (the cache's hit ratio;
//!   target ≥ 0.45 with plans from epoch 2 on);
//! * images/s of epochs 2–3 with plans ÷ without (report).
//!
//! `PLAN_SHARDS=N` changes the number of shards (24). Prints a table; asserts only that
//! every run trained.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Mount, drop_page_cache, forge, forge_gen, runtime, scrape, selected, value};
use warpdrive_testkit::{Emulator, Kind, WEST_US_3, WanProxy, upload_many};

const SAMPLES: usize = 48;
const WORKERS: usize = 4;
const BATCH: usize = 32;
const EPOCHS: u64 = 3;

/// Bytes the daemon received from the origin.
fn origin_bytes(m: &Mount) -> f64 {
    value(
        &scrape(m).0,
        "warpdrive_backend_read_bytes_total",
        &[("backend", "data")],
    )
}

/// One epoch of forge through `m` (resumed at `epoch`, with a plan when `plan`): (share of
/// the bytes read not fetched from the origin, images/s).
fn epoch(m: &Mount, shards: usize, epoch: u64, plan: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tmp");
    let summary = dir.path().join("summary.json");
    let steps = (shards * SAMPLES / BATCH) as u64;
    let mut c = std::process::Command::new(forge());
    c.arg("train")
        .arg("--train-root")
        .arg(m.path("data"))
        .args(["--steps", &steps.to_string()])
        .args(["--batch-size", &BATCH.to_string()])
        .args(["--num-workers", &WORKERS.to_string()])
        .args(["--first-epoch", &epoch.to_string()])
        .args(["--log-every", "1000"])
        .arg("--summary")
        .arg(&summary);
    if plan {
        c.args(["--plan", "bench"])
            .env("WARPDRIVE_SOCKET", m.dir.path().join("cache/control.sock"));
    }
    let before = origin_bytes(m);
    // The page cache must not stand in for the block cache: drop it every second.
    let stop = Arc::new(AtomicBool::new(false));
    let dropper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop_page_cache();
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let out = c.output().expect("forge train");
    stop.store(true, Ordering::Relaxed);
    dropper.join().expect("dropper");
    assert!(
        out.status.success(),
        "forge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("JSON");
    let read = s["bytes_read"].as_f64().expect("bytes_read");
    let fetched = origin_bytes(m) - before;
    (
        1.0 - fetched / read,
        s["images_per_sec"].as_f64().expect("images/s"),
    )
}

fn main() {
    if !selected("plan") {
        return;
    }
    let shards: usize = std::env::var("PLAN_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    // The number of shards a multiple of the workers: one run of `shards × SAMPLES` samples
    // is then exactly one epoch.
    let shards = shards.div_ceil(WORKERS) * WORKERS;
    let rt = runtime();
    let local = tempfile::tempdir().expect("tmp");
    forge_gen(
        &[
            "--shards",
            &shards.to_string(),
            "--samples-per-shard",
            &SAMPLES.to_string(),
            "--image-size",
            "640x480",
        ],
        local.path(),
    );
    let mut objects = Vec::new();
    for e in std::fs::read_dir(local.path()).expect("ls") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        objects.push((name, std::fs::read(&p).expect("shard")));
    }
    let dataset: usize = objects.iter().map(|(_, d)| d.len()).sum();
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("origin").expect("container");
    rt.block_on(upload_many(&em.backend("up", "origin", ""), objects, 4))
        .expect("upload");
    let link = WanProxy::start(em.port, WEST_US_3).expect("wan");
    let origin = warpdrive_testkit::emulator_backend(
        Kind::Azurite,
        &em.endpoint_via(link.port),
        "data",
        "origin",
        "",
    );
    let cap_mib = (dataset / 2) >> 20;
    println!(
        "# Plans: forge over {shards} shards of {SAMPLES} images ({:.0} MB), cache {cap_mib} MiB (half), {WORKERS} workers, origin link {WEST_US_3}, page cache dropped every second\n",
        dataset as f64 / 1e6
    );
    let mut rows = Vec::new();
    for plan in [true, false] {
        let m = Mount::start_with_cache(
            std::slice::from_ref(&origin),
            "metadata_ttl: 10m\n",
            &format!("max_size: {cap_mib}MiB"),
        );
        let runs: Vec<(f64, f64)> = (0..EPOCHS).map(|e| epoch(&m, shards, e, plan)).collect();
        eprintln!("plan={plan}: {runs:?}");
        rows.push(runs);
    }
    println!(
        "| epoch | kept with plans | kept with LRU | target (plans) | images/s with plans | images/s LRU |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (e, (planned, lru)) in rows[0].iter().zip(&rows[1]).enumerate() {
        println!(
            "| {} | {:.2} | {:.2} | {} | {:.0} | {:.0} |",
            e + 1,
            planned.0,
            lru.0,
            if e >= 1 { "≥ 0.45" } else { "" },
            planned.1,
            lru.1
        );
    }
    let later = |r: &[(f64, f64)]| (r[1].1 + r[2].1) / 2.0;
    println!(
        "\nEpochs 2–3, images/s with plans ÷ without: {:.2}",
        later(&rows[0]) / later(&rows[1])
    );
}
