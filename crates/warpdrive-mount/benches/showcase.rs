//! `make bench` (showcase part): warpdrive-forge through the mount, on generated shards split
//! over two Azurite "regions" as in the demo. Sections (filter by name: `cargo bench --bench
//! showcase -- warm-vs-local`):
//!
//! * `warm-vs-local`: forge on a warm mount (no WAN) ÷ forge on a local-disk copy of the same
//!   shards, images/s, the page cache dropped before every run, median of 5 alternating pairs.
//!   Target ≥ 0.95.
//! * `cold-wan`: forge cold through the WAN simulator with two equal links (24 MB/s each, the
//!   default total): backend bytes/s achieved ÷ the links' capacity. Target ≥ 0.9.
//! * `headline`: at the default WAN settings (see warpdrive_testkit::CANADA_CENTRAL and
//!   WEST_US_3), the seed's headline ratio, warm ÷ cold images/s, and what each link carried
//!   ÷ its capacity.
//!
//! Prints what it measured; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Mount, drop_page_cache, runtime, selected};
use serde_json::Value;
use warpdrive_config::BackendConfig;
use warpdrive_metrics::Snapshot;
use warpdrive_testkit::{
    CANADA_CENTRAL, Emulator, Kind, Link, WEST_US_3, WanProxy, emulator_backend, shard_files,
    upload_files,
};

/// The demo's quick dataset: 40 shards of 256 images of 320×240, about 450 MB.
const GEN: [&str; 6] = [
    "--shards",
    "40",
    "--samples-per-shard",
    "256",
    "--image-size",
    "320x240",
];
/// Cold runs read 8,000 of the 10,240 images, so (almost) every byte crosses the link.
const COLD_STEPS: &str = "250";
/// Warm runs are long enough (about 5 epochs) to measure on a noisy machine.
const WARM_STEPS: &str = "1500";
const PAIRS: usize = 5;

fn bin(name: &str) -> PathBuf {
    Path::new(common::BIN).with_file_name(name)
}

/// The dataset, generated once under target/bench-data and split into two roots of hard links
/// (even shards, odd shards) for the local-disk runs.
fn dataset() -> (PathBuf, [PathBuf; 2]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data/showcase");
    let all = dir.join("all");
    let st = Command::new(bin("warpdrive-forge"))
        .arg("gen")
        .arg("--out")
        .arg(&all)
        .args(GEN)
        .status()
        .expect("warpdrive-forge gen (run `cargo build --release --bins` first)");
    assert!(st.success(), "generating the dataset");
    let roots = [dir.join("even"), dir.join("odd")];
    for r in &roots {
        std::fs::create_dir_all(r).expect("mkdir");
    }
    for (n, path) in shard_files(&all).expect("dataset") {
        let to = roots[(n % 2) as usize].join(path.file_name().expect("name"));
        if !to.exists() {
            std::fs::hard_link(&path, &to).expect("link");
        }
    }
    (all, roots)
}

/// Runs forge over `roots` and returns its summary.
fn forge(roots: &[PathBuf], steps: &str) -> Value {
    let summary = tempfile::NamedTempFile::new().expect("tmp");
    let st = Command::new(bin("warpdrive-forge"))
        .arg("train")
        .arg("--train-root-a")
        .arg(&roots[0])
        .arg("--train-root-b")
        .arg(&roots[1])
        .args(["--steps", steps, "--log-every", "100000"])
        .arg("--summary")
        .arg(summary.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("warpdrive-forge train");
    assert!(st.success(), "forge train failed");
    serde_json::from_str(&std::fs::read_to_string(summary.path()).expect("summary"))
        .expect("summary json")
}

fn ips(s: &Value) -> f64 {
    s["images_per_sec"].as_f64().unwrap_or(0.0)
}

/// The two regions with the shards uploaded: (Canada Central, West US 3).
fn regions(all: &Path) -> (Emulator, Emulator) {
    let cac = Emulator::start(Kind::Azurite).expect("azurite");
    let wus3 = Emulator::start(Kind::Azurite).expect("azurite");
    let mut files: [Vec<(String, PathBuf)>; 2] = Default::default();
    for (n, path) in shard_files(all).expect("dataset") {
        files[(n % 2) as usize].push((format!("train/shard-{n:06}.tar"), path));
    }
    let rt = runtime();
    for (emu, files) in [&cac, &wus3].into_iter().zip(files) {
        emu.create_bucket("datasets").expect("container");
        rt.block_on(upload_files(&emu.backend("up", "datasets", ""), files, 4))
            .expect("upload");
    }
    (cac, wus3)
}

/// Backends for both regions, through `links` (None: direct).
fn backends(
    cac: &Emulator,
    wus3: &Emulator,
    links: Option<[Link; 2]>,
) -> (Vec<BackendConfig>, Vec<WanProxy>) {
    let mut out = Vec::new();
    let mut proxies = Vec::new();
    for (i, (name, emu)) in [("datasets-cac", cac), ("datasets-wus3", wus3)]
        .into_iter()
        .enumerate()
    {
        let endpoint = match links {
            Some(l) => {
                let p = WanProxy::start(emu.port, l[i]).expect("wan");
                let e = emu.endpoint_via(p.port);
                proxies.push(p);
                e
            }
            None => emu.endpoint(),
        };
        out.push(emulator_backend(
            Kind::Azurite,
            &endpoint,
            name,
            "datasets",
            "",
        ));
    }
    (out, proxies)
}

fn mount_roots(m: &Mount) -> [PathBuf; 2] {
    [m.path("datasets-cac/train"), m.path("datasets-wus3/train")]
}

fn fetched(m: &Mount, before: &Snapshot) -> Vec<(String, f64)> {
    let d = Snapshot::parse(&m.metrics_text()).delta(before);
    ["datasets-cac", "datasets-wus3"]
        .iter()
        .map(|b| {
            (
                b.to_string(),
                d.value("warpdrive_backend_read_bytes_total", &[("backend", b)]),
            )
        })
        .collect()
}

/// A cold run's mount (with the WAN proxies it reads through), forge's summary and the bytes
/// fetched per backend.
type ColdRun = (Mount, Vec<WanProxy>, Value, Vec<(String, f64)>);

/// A cold forge run over `links`, on a new mount with an empty cache.
fn cold_run(cac: &Emulator, wus3: &Emulator, links: [Link; 2]) -> ColdRun {
    let (b, proxies) = backends(cac, wus3, Some(links));
    let m = Mount::start_with_cache(&b, "", "max_size: 4GiB");
    let before = Snapshot::parse(&m.metrics_text());
    drop_page_cache();
    let s = forge(&mount_roots(&m), COLD_STEPS);
    let f = fetched(&m, &before);
    (m, proxies, s, f)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("# WarpDrive showcase benchmarks (forge through the mount; same run, same machine)\n");
    let (all, local) = dataset();
    let (cac, wus3) = regions(&all);

    if selected("warm-vs-local") {
        let (b, _) = backends(&cac, &wus3, None);
        let m = Mount::start_with_cache(&b, "", "max_size: 4GiB");
        // Warm the cache: one epoch and more.
        forge(&mount_roots(&m), "400");
        let mut ratios = Vec::new();
        let (mut warm, mut disk) = (Vec::new(), Vec::new());
        for _ in 0..PAIRS {
            drop_page_cache();
            let w = ips(&forge(&mount_roots(&m), WARM_STEPS));
            drop_page_cache();
            let l = ips(&forge(&local, WARM_STEPS));
            ratios.push(w / l);
            warm.push(w);
            disk.push(l);
        }
        println!("| forge, {WARM_STEPS} steps | images/s (median of {PAIRS}) |");
        println!("|---|---:|");
        println!("| warm mount (passthrough) | {:.0} |", median(warm));
        println!("| local-disk copy | {:.0} |", median(disk));
        println!(
            "| **warm ÷ local** (target ≥ 0.95) | **{:.3}** (pairs: {}) |\n",
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    if selected("cold-wan") {
        let link = Link {
            one_way_delay: Duration::from_millis(30),
            bandwidth: Some(24_000_000),
        };
        let (_m, _wan, s, f) = cold_run(&cac, &wus3, [link, link]);
        let secs = s["wall_ms"].as_f64().unwrap_or(1.0) / 1e3;
        let total: f64 = f.iter().map(|x| x.1).sum();
        println!("| forge cold, {COLD_STEPS} steps, two links of {link} | value |");
        println!("|---|---:|");
        for (b, bytes) in &f {
            println!(
                "| {b}: {:.1} MB, {:.2} MB/s ÷ 24 MB/s | {:.3} |",
                bytes / 1e6,
                bytes / 1e6 / secs,
                bytes / secs / 24e6
            );
        }
        println!(
            "| **backend bytes/s ÷ link capacity** (target ≥ 0.9) | **{:.3}** ({:.1} MB/s of 48 MB/s, {:.1} s) |\n",
            total / secs / 48e6,
            total / 1e6 / secs,
            secs
        );
    }

    if selected("headline") {
        let (m, _wan, cold, f) = cold_run(&cac, &wus3, [CANADA_CENTRAL, WEST_US_3]);
        drop_page_cache();
        let warm = forge(&mount_roots(&m), COLD_STEPS);
        let secs = cold["wall_ms"].as_f64().unwrap_or(1.0) / 1e3;
        println!(
            "| default WAN (Canada Central {CANADA_CENTRAL}; West US 3 {WEST_US_3}), {COLD_STEPS} steps | value |"
        );
        println!("|---|---:|");
        println!("| cold images/s | {:.1} |", ips(&cold));
        println!("| warm images/s | {:.1} |", ips(&warm));
        for ((b, bytes), link) in f.iter().zip([CANADA_CENTRAL, WEST_US_3]) {
            let cap = link.bandwidth.unwrap_or(1) as f64;
            println!(
                "| {b}: {:.2} MB/s ÷ {:.0} MB/s | {:.3} |",
                bytes / 1e6 / secs,
                cap / 1e6,
                bytes / secs / cap
            );
        }
        println!(
            "| **headline: warm ÷ cold images/s** (the seed: 2.4) | **{:.1}** |",
            ips(&warm) / ips(&cold)
        );
    }
}
