//! `make bench`, section `fleet`: the fleet tier. The origin is Azurite behind the demo's
//! cross-region link ([`WEST_US_3`]: 30 ms each way, 16 MB/s); the shared tier is a container
//! of the same Azurite behind an in-region link four times faster (1 ms, 64 MB/s). Each node
//! is its own daemon with an empty cache and its own mount, reading every file of a 128 MiB
//! dataset (8 files of 16 MiB) from 4 threads; chunks of 8 MiB (`FLEET_CHUNK=4MiB` to compare).
//! In one run:
//!
//! * four nodes one after another: origin bytes ÷ dataset (target ≤ 1.05); nodes 2–4 cold
//!   throughput ÷ the in-region link (target ≥ 0.8); node 2's cold epoch ÷ node 1's;
//! * four nodes at once (a herd): origin bytes ÷ dataset with leases (target ≤ 1.1) and
//!   without (`shared_cache.leases: false`), for comparison;
//! * the tier's cost on one node: its cold epoch with the tier ÷ without (target ≥ 0.95).
//!
//! Origin bytes are the daemons' own counts of what their ranged GETs received from the
//! origin backend. Prints a table; asserts only that every file read back whole.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;

use common::{Mount, runtime, scrape, selected, sha256, shared_cache_yaml, value};
use warpdrive_testkit::{Emulator, Kind, Link, WEST_US_3, WanProxy, random_bytes, upload_many};

const FILES: usize = 8;
const FILE_SIZE: usize = 16 << 20;
const THREADS: usize = 4;
const IN_REGION: Link = Link {
    one_way_delay: Duration::from_millis(1),
    bandwidth: Some(64_000_000),
};

/// The tier's chunk size: 8 MiB (the default), or `FLEET_CHUNK` (`4MiB`) to compare.
fn chunk_size() -> String {
    std::env::var("FLEET_CHUNK").unwrap_or_else(|_| "8MiB".into())
}

struct Setup {
    em: Emulator,
    origin: warpdrive_config::BackendConfig,
    tier_port: u16,
    files: Vec<(String, [u8; 32])>,
    _links: (WanProxy, WanProxy),
}

impl Setup {
    /// A node using tier container `container` (none: no tier), with `fields`.
    fn node(&self, container: Option<&str>, fields: &[&str]) -> Mount {
        let tier = match container {
            Some(c) => {
                let chunk = format!("chunk_size: {}", chunk_size());
                let mut all = vec![chunk.as_str()];
                all.extend_from_slice(fields);
                let store = warpdrive_testkit::emulator_backend(
                    Kind::Azurite,
                    &self.em.endpoint_via(self.tier_port),
                    "shared_cache",
                    c,
                    "",
                );
                shared_cache_yaml(&store, &all)
            }
            None => String::new(),
        };
        let m = Mount::start(
            std::slice::from_ref(&self.origin),
            &format!("metadata_ttl: 10m\n{tier}"),
        );
        // Names resolved before the clock starts, as a loader's file list would be.
        for (k, _) in &self.files {
            std::fs::metadata(m.path(&format!("data/{k}"))).expect("stat");
        }
        m
    }
}

/// Reads every file through `m` from `THREADS` threads; MB/s.
fn epoch(m: &Mount, files: &[(String, [u8; 32])]) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for (k, digest) in files.iter().skip(t).step_by(THREADS) {
                    let got = std::fs::read(m.path(&format!("data/{k}"))).expect("read");
                    assert_eq!(&sha256_bytes(&got), digest, "{k}");
                }
            });
        }
    });
    (FILES * FILE_SIZE) as f64 / 1e6 / t0.elapsed().as_secs_f64()
}

fn sha256_bytes(b: &[u8]) -> [u8; 32] {
    let hex = sha256(b);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// Bytes `m` received from the origin.
fn origin_bytes(m: &Mount) -> f64 {
    value(
        &scrape(m).0,
        "warpdrive_backend_read_bytes_total",
        &[("backend", "data")],
    )
}

/// Waits until `m` has no chunk write going on (fills run after the reads).
fn filled(m: &Mount) {
    let t0 = Instant::now();
    let mut last = -1.0;
    loop {
        let s = scrape(m).0;
        let done: f64 = ["created", "exists", "error", "timeout", "skipped"]
            .iter()
            .map(|r| {
                value(
                    &s,
                    "warpdrive_shared_requests_total",
                    &[("op", "put"), ("result", r)],
                )
            })
            .sum();
        if done == last || t0.elapsed() > Duration::from_secs(60) {
            return;
        }
        last = done;
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() {
    if !selected("fleet") {
        return;
    }
    let rt = runtime();
    let em = Emulator::start(Kind::Azurite).expect("azurite");
    em.create_bucket("origin").expect("container");
    let mut files = Vec::new();
    let mut objects = Vec::new();
    for i in 0..FILES {
        let data = random_bytes(FILE_SIZE, i as u64 + 1);
        files.push((format!("shard-{i:02}.tar"), sha256_bytes(&data)));
        objects.push((format!("shard-{i:02}.tar"), data));
    }
    rt.block_on(upload_many(&em.backend("up", "origin", ""), objects, 4))
        .expect("upload");
    let origin_link = WanProxy::start(em.port, WEST_US_3).expect("wan");
    let tier_link = WanProxy::start(em.port, IN_REGION).expect("wan");
    let origin = warpdrive_testkit::emulator_backend(
        Kind::Azurite,
        &em.endpoint_via(origin_link.port),
        "data",
        "origin",
        "",
    );
    let s = Setup {
        tier_port: tier_link.port,
        em,
        origin,
        files,
        _links: (origin_link, tier_link),
    };
    let dataset = (FILES * FILE_SIZE) as f64;
    println!(
        "# Fleet: {FILES} files of {} MiB, {THREADS} readers per node, chunks of {}; origin link {WEST_US_3}, tier link {IN_REGION}\n",
        FILE_SIZE >> 20,
        chunk_size()
    );

    // Four nodes one after another.
    s.em.create_bucket("tier-seq").expect("container");
    let mut seq = Vec::new();
    let mut origin_total = 0.0;
    for n in 0..4 {
        let m = s.node(Some("tier-seq"), &[]);
        let mbps = epoch(&m, &s.files);
        filled(&m);
        origin_total += origin_bytes(&m);
        eprintln!(
            "node {}: {mbps:.1} MB/s, origin {:.1} MB",
            n + 1,
            origin_bytes(&m) / 1e6
        );
        seq.push(mbps);
    }
    let link = IN_REGION.bandwidth.expect("capped") as f64 / 1e6;
    let later = (seq[1] + seq[2] + seq[3]) / 3.0;
    // The floor: the same chunks read straight from the tier through its link, 8 at a time.
    let tier = warpdrive_store::Backend::build(&warpdrive_testkit::emulator_backend(
        Kind::Azurite,
        &s.em.endpoint_via(s.tier_port),
        "tier",
        "tier-seq",
        "",
    ))
    .expect("tier");
    let chunks = rt
        .block_on(tier.list_files("", true))
        .expect("list the tier");
    let t0 = Instant::now();
    let bytes: u64 = rt.block_on(
        futures::stream::iter(chunks)
            .map(|(k, i)| {
                let tier = &tier;
                async move {
                    tier.get_range(&k, 0..i.size, None)
                        .await
                        .expect("chunk")
                        .len() as u64
                }
            })
            .buffer_unordered(8)
            .fold(0, |a, n| async move { a + n }),
    );
    let direct = bytes as f64 / 1e6 / t0.elapsed().as_secs_f64();

    // Four at once, with leases and without.
    let mut herd = Vec::new();
    for (container, fields) in [
        ("tier-herd", &[][..]),
        ("tier-herd-nolease", &["leases: false"][..]),
    ] {
        s.em.create_bucket(container).expect("container");
        let nodes: Vec<Mount> = (0..4).map(|_| s.node(Some(container), fields)).collect();
        let go = std::sync::Barrier::new(4);
        std::thread::scope(|sc| {
            for m in &nodes {
                let (go, files) = (&go, &s.files);
                sc.spawn(move || {
                    go.wait();
                    epoch(m, files);
                });
            }
        });
        herd.push(nodes.iter().map(origin_bytes).sum::<f64>());
    }

    // One node, tier on and off.
    s.em.create_bucket("tier-cost").expect("container");
    let on = epoch(&s.node(Some("tier-cost"), &[]), &s.files);
    let off = epoch(&s.node(None, &[]), &s.files);

    println!("| fleet | figure | target |");
    println!("|---|---:|---:|");
    println!(
        "| 4 nodes in turn: origin bytes ÷ dataset | {:.3} | ≤ 1.05 |",
        origin_total / dataset
    );
    println!(
        "| node 1 cold (origin link {:.0} MB/s) | {:.1} MB/s | |",
        WEST_US_3.bandwidth.expect("capped") as f64 / 1e6,
        seq[0]
    );
    println!(
        "| nodes 2–4 cold: {:.1}, {:.1}, {:.1} MB/s ÷ in-region link ({link:.0} MB/s) | {:.2} | ≥ 0.8 |",
        seq[1],
        seq[2],
        seq[3],
        later / link
    );
    println!(
        "| floor: the tier's chunks read straight through its link, 8 at a time | {direct:.1} MB/s ({:.2} of the link) | |",
        direct / link
    );
    println!("| node 2 cold ÷ node 1 cold | {:.2} | |", seq[1] / seq[0]);
    println!(
        "| 4 nodes at once: origin bytes ÷ dataset, leases on | {:.3} | ≤ 1.1 |",
        herd[0] / dataset
    );
    println!(
        "| 4 nodes at once: origin bytes ÷ dataset, leases off | {:.3} | |",
        herd[1] / dataset
    );
    println!(
        "| one node: cold with the tier ({on:.1} MB/s) ÷ without ({off:.1} MB/s) | {:.2} | ≥ 0.95 |",
        on / off
    );
}
