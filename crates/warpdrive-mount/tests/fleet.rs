//! The fleet tier through real mounts: several daemons on one machine, each with its own
//! cache directory and mount point, an origin (moto) behind a proxy that counts the bytes
//! fetched from it, and the shared tier in Azurite.

mod common;

use std::time::{Duration, Instant};

use common::{Mount, runtime, scrape, sha256, shared_cache_yaml, value};
use warpdrive_store::Backend;
use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend, random_bytes, upload_many};

const MIB: usize = 1 << 20;

/// Sizes that give whole chunks, a partial last chunk, and an object smaller than a chunk.
fn dataset() -> Vec<(String, Vec<u8>)> {
    vec![
        ("train/a.tar".into(), random_bytes(5 * MIB + 17, 1)),
        ("train/b.tar".into(), random_bytes(4 * MIB, 2)),
        ("train/c.json".into(), random_bytes(200_000, 3)),
    ]
}

/// Chunks of 2 MiB in `dataset()`.
const CHUNKS: f64 = 3.0 + 2.0 + 1.0;

struct Fleet {
    origin_emulator: Emulator,
    proxy: DelayProxy,
    _tier_emulator: Emulator,
    origin: warpdrive_config::BackendConfig,
    tier: warpdrive_config::BackendConfig,
}

fn fleet(objects: &[(String, Vec<u8>)]) -> Fleet {
    fleet_with(objects, Duration::ZERO)
}

/// [`fleet`], with the origin's proxy adding `delay` to every answer.
fn fleet_with(objects: &[(String, Vec<u8>)], delay: Duration) -> Fleet {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("origin").expect("bucket");
    runtime()
        .block_on(upload_many(
            &s3.backend("direct", "origin", ""),
            objects.to_vec(),
            4,
        ))
        .expect("upload");
    let proxy = DelayProxy::start(s3.port, delay).expect("proxy");
    let origin = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s3",
        "origin",
        "",
    );
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("tier").expect("container");
    let tier = az.backend("shared_cache", "tier", "chunks/");
    Fleet {
        origin_emulator: s3,
        proxy,
        _tier_emulator: az,
        origin,
        tier,
    }
}

impl Fleet {
    /// A node: its own daemon, cache and mount point, using the tier with `fields`.
    fn node(&self, fields: &[&str]) -> Mount {
        let mut all = vec!["chunk_size: 2MiB"];
        all.extend_from_slice(fields);
        Mount::start(
            std::slice::from_ref(&self.origin),
            &format!("metadata_ttl: 1s\n{}", shared_cache_yaml(&self.tier, &all)),
        )
    }

    /// Bytes fetched from the origin so far, by every node.
    fn origin_bytes(&self) -> u64 {
        self.proxy.stats.data_reads().1
    }

    /// Chunks in the tier's store.
    fn chunks_stored(&self) -> usize {
        let b = Backend::build(&self.tier).expect("tier backend");
        runtime()
            .block_on(b.list_files("", true))
            .expect("list the tier")
            .len()
    }
}

fn read_all(m: &Mount, objects: &[(String, Vec<u8>)]) {
    for (key, data) in objects {
        let got = std::fs::read(m.path(&format!("s3/{key}")))
            .unwrap_or_else(|e| panic!("read {key}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(data), "{key} differs");
    }
}

fn shared(m: &Mount, op: &str, result: &str) -> f64 {
    value(
        &scrape(m).0,
        "warpdrive_shared_requests_total",
        &[("op", op), ("result", result)],
    )
}

/// Waits until `m` has written `n` chunks to the tier (fills go on in the background).
fn filled(m: &Mount, n: f64) {
    let t0 = Instant::now();
    while shared(m, "put", "created") + shared(m, "put", "exists") < n {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} of {n} chunks written\n{}",
            shared(m, "put", "created"),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Node 1 reads a dataset cold from the origin and fills the tier; nodes 2 (read-write) and
/// 3 (read-only), with empty local caches, read every byte of it from the tier and nothing
/// from the origin; the read-only node writes nothing. An object overwritten at the origin
/// is read at its new version, never from the old version's chunks.
#[test]
fn later_nodes_read_the_dataset_from_the_tier_and_not_from_the_origin() {
    let objects = dataset();
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let f = fleet(&objects);

    let n1 = f.node(&[]);
    read_all(&n1, &objects);
    let from_origin = f.origin_bytes();
    assert!(
        from_origin >= total && from_origin <= total + total / 20,
        "node 1 fetched {from_origin} bytes of a {total}-byte dataset"
    );
    filled(&n1, CHUNKS);
    assert_eq!(f.chunks_stored(), CHUNKS as usize);

    let n2 = f.node(&[]);
    let before = f.origin_bytes();
    read_all(&n2, &objects);
    let s = scrape(&n2).0;
    let avoided = value(
        &s,
        "warpdrive_shared_origin_bytes_avoided_total",
        &[("backend", "s3")],
    );
    println!(
        "figures: dataset {total} bytes; node 1 fetched {from_origin} from the origin and wrote {CHUNKS} chunks; node 2 fetched {} from the origin, {avoided} from the tier",
        f.origin_bytes() - before
    );
    assert_eq!(
        f.origin_bytes() - before,
        0,
        "node 2 asked the origin for data"
    );
    assert_eq!(avoided, total as f64);
    assert_eq!(shared(&n2, "get", "hit"), CHUNKS);
    assert_eq!(shared(&n2, "put", "created"), 0.0, "nothing new to write");
    // The dashboard's shared-tier section.
    let dash = common::ctl(&n2, &["metrics"]);
    assert!(
        dash.contains("Shared tier") && dash.contains("origin bytes avoided"),
        "{dash}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&common::ctl(&n2, &["metrics", "--json"])).expect("json");
    assert_eq!(j["shared"]["hits"], CHUNKS);
    assert_eq!(j["shared"]["origin_bytes_avoided"][0][1], total as f64);

    // A read-only node reads from the tier; an object only at the origin it reads from
    // there, and does not write to the tier.
    let extra = ("train/d.bin".to_string(), random_bytes(3 * MIB, 4));
    let direct = f.origin_emulator.backend("direct", "origin", "");
    runtime()
        .block_on(upload_many(&direct, vec![extra.clone()], 1))
        .expect("upload d");
    let n3 = f.node(&["mode: read_only"]);
    let before = f.origin_bytes();
    read_all(&n3, &objects);
    assert_eq!(
        f.origin_bytes() - before,
        0,
        "node 3 asked the origin for data"
    );
    read_all(&n3, std::slice::from_ref(&extra));
    assert_eq!(f.origin_bytes() - before, extra.1.len() as u64);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        f.chunks_stored(),
        CHUNKS as usize,
        "the read-only node wrote"
    );
    assert_eq!(
        shared(&n3, "put", "created") + shared(&n3, "put", "skipped"),
        0.0
    );

    // Overwritten at the origin: once the TTL has passed, node 2 reads the new version from
    // the origin, never the old version's chunks.
    let v2 = ("train/c.json".to_string(), random_bytes(150_000, 9));
    runtime()
        .block_on(upload_many(&direct, vec![v2.clone()], 1))
        .expect("overwrite");
    std::thread::sleep(Duration::from_millis(1500));
    let before = f.origin_bytes();
    read_all(&n2, std::slice::from_ref(&v2));
    assert_eq!(f.origin_bytes() - before, v2.1.len() as u64);
}

/// Four nodes start the same cold read at the same moment (the origin 30 ms away, so their
/// misses overlap): each chunk is fetched from the origin once, by the node that took its
/// lease; the others wait for it and read it from the tier. Every byte is right.
#[test]
fn a_herd_of_four_nodes_fetches_each_chunk_from_the_origin_once() {
    let objects = dataset();
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let f = fleet_with(&objects, Duration::from_millis(30));
    let (proxy, origin, tier) = (&f.proxy, &f.origin, &f.tier);
    let nodes: Vec<Mount> = (0..4)
        .map(|_| {
            Mount::start(
                std::slice::from_ref(origin),
                &format!(
                    "metadata_ttl: 10m\n{}",
                    shared_cache_yaml(tier, &["chunk_size: 2MiB"])
                ),
            )
        })
        .collect();
    // Each node has looked the files up (metadata only), so the reads start together.
    for n in &nodes {
        for (key, data) in &objects {
            let md = std::fs::metadata(n.path(&format!("s3/{key}"))).expect("stat");
            assert_eq!(md.len(), data.len() as u64);
        }
    }
    let before = proxy.stats.data_reads();
    let go = std::sync::Barrier::new(nodes.len());
    std::thread::scope(|s| {
        for n in &nodes {
            let (go, objects) = (&go, &objects);
            s.spawn(move || {
                go.wait();
                read_all(n, objects);
            });
        }
    });
    let (gets, bytes) = proxy.stats.data_reads();
    let (gets, bytes) = (gets - before.0, bytes - before.1);
    let waits: f64 = nodes
        .iter()
        .map(|n| {
            value(
                &scrape(n).0,
                "warpdrive_shared_lease_wait_seconds_count",
                &[("outcome", "filled")],
            )
        })
        .sum();
    println!(
        "figures: herd of 4: {gets} origin GETs for {CHUNKS} chunks, {bytes} origin bytes for a {total}-byte dataset ({:.3}), {waits} waits for another node's fill",
        bytes as f64 / total as f64
    );
    let failures: f64 = nodes
        .iter()
        .map(|n| {
            ["error", "timeout", "skipped"]
                .iter()
                .map(|r| shared(n, "get", r) + shared(n, "lease", r))
                .sum::<f64>()
        })
        .sum();
    assert_eq!(
        bytes, total,
        "each byte fetched from the origin once ({failures} tier requests failed or skipped)"
    );
    assert_eq!(gets as f64, CHUNKS, "one origin GET per chunk");
    assert!(waits > 0.0, "no node waited for another's fill");
}

/// `warpdrive-ctl fleet`: `status` counts the tier's chunks per backend; `warm` fills the
/// tier from the origin without any local cache (a node then reads the data from the tier,
/// nothing from the origin), and a second `warm` finds everything there; `gc` deletes what
/// is older than asked, `--dry-run` only counts.
#[test]
fn fleet_status_warm_and_gc() {
    let objects = dataset();
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let f = fleet(&objects);
    let n1 = f.node(&[]);
    let json = |args: &[&str]| -> serde_json::Value {
        let (code, out, err) = common::ctl_any(&n1, args);
        assert_eq!(code, Some(0), "warpdrive-ctl {args:?}: {out}\n{err}");
        serde_json::from_str(&out).expect("json")
    };
    let s = json(&["fleet", "status", "--json"]);
    assert_eq!(s["reachable"], true);
    assert_eq!(s["backends"][0]["backend"], "s3");
    assert_eq!(s["backends"][0]["chunks"], 0);

    let before = f.origin_bytes();
    let w = json(&["fleet", "warm", "s3/train", "--json"]);
    assert_eq!(w["objects"], 3);
    assert_eq!(w["written"], CHUNKS as u64);
    assert_eq!(w["failed"], 0);
    assert_eq!(
        f.origin_bytes() - before,
        total,
        "warm reads the origin once"
    );
    assert_eq!(
        value(&scrape(&n1).0, "warpdrive_cache_objects", &[]),
        0.0,
        "warm fills no local cache"
    );
    let again = json(&["fleet", "warm", "s3/train", "--json"]);
    assert_eq!(
        (again["written"].as_u64(), again["present"].as_u64()),
        (Some(0), Some(CHUNKS as u64))
    );

    let s = json(&["fleet", "status", "--json"]);
    assert_eq!(s["backends"][0]["chunks"], CHUNKS as u64);
    let stored = s["backends"][0]["bytes"].as_u64().expect("bytes");
    assert!(
        stored > total && stored < total + 1024,
        "{stored} bytes for {total} of data"
    );

    // A node with an empty cache reads everything from the warmed tier.
    let before = f.origin_bytes();
    read_all(&n1, &objects);
    assert_eq!(f.origin_bytes() - before, 0);

    let g = json(&["fleet", "gc", "--older-than", "1h", "--json"]);
    assert_eq!(
        (g["deleted"].as_u64(), g["kept"].as_u64()),
        (Some(0), Some(CHUNKS as u64))
    );
    let g = json(&["fleet", "gc", "--older-than", "0s", "--dry-run", "--json"]);
    assert_eq!(g["deleted"], CHUNKS as u64);
    assert_eq!(
        f.chunks_stored(),
        CHUNKS as usize,
        "a dry run deletes nothing"
    );
    let g = json(&["fleet", "gc", "--older-than", "0s", "--json"]);
    assert_eq!(g["deleted"], CHUNKS as u64);
    assert_eq!(f.chunks_stored(), 0);
    let text = common::ctl(&n1, &["fleet", "status"]);
    assert!(text.contains("reachable") && text.contains("s3"), "{text}");
    // The control API's fleet routes: a warm job fills the emptied tier again.
    let config = warpdrive_config::Config::load(&n1.config).expect("config");
    let api = warpdrive_control::client::Client::daemon(&config).expect("the daemon's socket");
    let st: serde_json::Value = api.get("/api/v1/fleet/status").expect("fleet status");
    assert_eq!(st["backends"][0]["chunks"], 0);
    let job: serde_json::Value = api
        .post(
            "/api/v1/fleet/warm",
            &serde_json::json!({ "path": "s3/train" }),
        )
        .expect("fleet warm");
    let t0 = Instant::now();
    let job = loop {
        let j: serde_json::Value = api
            .get(&format!("/api/v1/jobs/{}", job["id"]))
            .expect("job");
        if j["state"] == "done" || j["state"] == "failed" {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["kind"], "fleet-warm");
    assert_eq!(job["objects_total"], CHUNKS as u64, "{job}");
    assert_eq!(job["objects_done"], CHUNKS as u64, "{job}");
    assert_eq!(f.chunks_stored(), CHUNKS as usize);
    let gc: serde_json::Value = api
        .post(
            "/api/v1/fleet/gc",
            &serde_json::json!({ "older_than": "1h", "dry_run": true }),
        )
        .expect("fleet gc");
    assert_eq!(gc["kept"], CHUNKS as u64);

    // `status` shows the tier, probed, and `--check-config` its resolved block.
    let text = common::ctl(&n1, &["status"]);
    assert!(
        text.contains("shared      azure://devstoreaccount1/tier/chunks")
            && text.contains("reachable")
            && text.contains("read_write"),
        "{text}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&common::ctl(&n1, &["status", "--json"])).expect("json");
    assert_eq!(status["shared_cache"]["reachable"], true);
}

/// The tier's store stops mid-run: reads go on from the origin with no error (the tier is
/// then skipped, not waited for); once it is back, the node uses it again.
#[test]
fn a_tier_that_stops_and_comes_back_costs_no_read_error() {
    let objects = dataset();
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let f = fleet(&objects);
    // Objects read only once the tier is back.
    let more: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("train/more-{i}.bin"),
                random_bytes(100_000, 100 + i),
            )
        })
        .collect();
    runtime()
        .block_on(upload_many(
            &f.origin_emulator.backend("direct", "origin", ""),
            more.clone(),
            4,
        ))
        .expect("upload more");
    let port = warpdrive_testkit::free_port().expect("port");
    let az = Emulator::start_on(Kind::Azurite, port).expect("azurite");
    az.create_bucket("tier").expect("container");
    let tier = az.backend("shared_cache", "tier", "");
    let node = Mount::start(
        std::slice::from_ref(&f.origin),
        &format!(
            "metadata_ttl: 10m\n{}",
            shared_cache_yaml(&tier, &["chunk_size: 2MiB"])
        ),
    );
    drop(az);
    let t0 = Instant::now();
    let before = f.origin_bytes();
    read_all(&node, &objects);
    let down = t0.elapsed();
    let failed = shared(&node, "get", "error") + shared(&node, "get", "timeout");
    let skipped = shared(&node, "get", "skipped");
    println!(
        "figures: tier down: {total} bytes read in {down:?}, all from the origin; tier requests failed {failed}, skipped {skipped}"
    );
    assert_eq!(f.origin_bytes() - before, total);
    assert!(
        failed >= 1.0 && failed + skipped >= CHUNKS,
        "{failed} failed, {skipped} skipped"
    );

    // Back (empty): new objects read after that are written to it again.
    let az = Emulator::start_on(Kind::Azurite, port).expect("azurite again");
    az.create_bucket("tier").expect("container");
    let t0 = Instant::now();
    let mut used = false;
    for o in &more {
        read_all(&node, std::slice::from_ref(o));
        if shared(&node, "put", "created") > 0.0 {
            used = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("figures: tier back: used again after {:?}", t0.elapsed());
    assert!(
        used,
        "the tier was not used again once back\n{}",
        node.log()
    );
    let fuse_errors: f64 = scrape(&node)
        .0
        .samples
        .iter()
        .filter(|s| s.metric == "warpdrive_fuse_errors_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(fuse_errors, 0.0, "a read failed while the tier was down");
}

/// Chunks damaged in the tier (a flipped byte, cut short, copied over another chunk, an
/// unknown format) are all refused by reason, read from the origin instead, never returned
/// as wrong bytes, and replaced: the next node reads every chunk from the tier again.
#[test]
fn damaged_and_swapped_chunks_in_the_tier_are_refused_and_replaced() {
    let objects = dataset();
    let f = fleet(&objects);
    let n1 = f.node(&[]);
    read_all(&n1, &objects);
    filled(&n1, CHUNKS);
    let tier = Backend::build(&f.tier).expect("tier backend");
    let rt = runtime();
    let mut chunks: Vec<(String, u64)> = rt
        .block_on(tier.list_files("", true))
        .expect("list")
        .into_iter()
        .map(|(k, i)| (k, i.size))
        .collect();
    chunks.sort();
    assert_eq!(chunks.len(), CHUNKS as usize);
    let read = |k: &str, size: u64| {
        rt.block_on(tier.get_range(k, 0..size, None))
            .expect("get")
            .to_vec()
    };
    let write = |k: &str, b: Vec<u8>| {
        let n = b.len() as u64;
        rt.block_on(tier.put_stream(k, n, futures::stream::iter(vec![Ok(bytes::Bytes::from(b))])))
            .expect("put");
    };
    // 0: a data byte flipped; 1: cut short; 2: another chunk's bytes; 3: a future format.
    let mut flipped = read(&chunks[0].0, chunks[0].1);
    flipped[5000] ^= 0x10;
    write(&chunks[0].0, flipped);
    let cut = read(&chunks[1].0, chunks[1].1);
    write(&chunks[1].0, cut[..cut.len() / 2].to_vec());
    let other = read(&chunks[4].0, chunks[4].1);
    write(&chunks[2].0, other);
    let mut future = read(&chunks[3].0, chunks[3].1);
    future[8] = 9;
    write(&chunks[3].0, future);

    let n2 = f.node(&[]);
    let before = f.origin_bytes();
    read_all(&n2, &objects);
    let s = scrape(&n2).0;
    let reason = |r| {
        value(
            &s,
            "warpdrive_shared_invalid_chunks_total",
            &[("reason", r)],
        )
    };
    println!(
        "figures: damaged chunks refused: data {}, length {}, identity {}, header {}, format {}; {} bytes read from the origin instead",
        reason("data"),
        reason("length"),
        reason("identity"),
        reason("header"),
        reason("format"),
        f.origin_bytes() - before
    );
    assert_eq!(
        shared(&n2, "get", "invalid"),
        4.0,
        "every damaged chunk refused"
    );
    assert_eq!(reason("data"), 1.0);
    assert_eq!(reason("length"), 1.0);
    assert_eq!(reason("identity"), 1.0);
    // A changed version byte fails the header's own checksum first.
    assert_eq!(reason("header") + reason("format"), 1.0);
    assert!(
        f.origin_bytes() > before,
        "the refused chunks came from the origin"
    );

    // Node 2 replaced them: node 3 reads everything from the tier.
    filled(&n2, 4.0);
    let n3 = f.node(&[]);
    let before = f.origin_bytes();
    read_all(&n3, &objects);
    assert_eq!(
        f.origin_bytes() - before,
        0,
        "the damaged chunks were not replaced"
    );
    assert_eq!(shared(&n3, "get", "invalid"), 0.0);
}

/// The node holding a chunk's lease is killed in the middle of its origin fetch: another
/// node missing that chunk waits no longer than the lease, then fetches it itself and reads
/// every byte right.
#[test]
fn a_killed_lease_holder_costs_the_others_at_most_the_lease() {
    let objects = vec![("train/x.bin".to_string(), random_bytes(1_500_000, 5))];
    let f = fleet(&objects);
    let ttl = Duration::from_secs(3);
    let node = |f: &Fleet| {
        let m = f.node(&["lease_ttl: 3s"]);
        std::fs::metadata(m.path("s3/train/x.bin")).expect("stat");
        m
    };
    let (mut a, b) = (node(&f), node(&f));
    // A's origin GET is held for 30 s: A takes the lease and then hangs in the fetch.
    f.proxy.stall_next(1, Duration::from_secs(30));
    let path = a.path("s3/train/x.bin");
    let reader = std::thread::spawn(move || std::fs::read(path).map(|d| d.len()));
    let tier = Backend::build(&f.tier).expect("tier");
    let t0 = Instant::now();
    let leased = loop {
        let files = runtime().block_on(tier.list_files("", true)).expect("list");
        if files.iter().any(|(k, _)| k.ends_with(".lease")) {
            break Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node A never took the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    a.stop_with(libc::SIGKILL);
    let _ = reader.join();

    let t1 = Instant::now();
    read_all(&b, &objects);
    let took = t1.elapsed();
    let since_lease = leased.elapsed();
    println!(
        "figures: lease holder killed: the other node read the chunk {took:?} after starting ({since_lease:?} after the lease was taken; lease {ttl:?})"
    );
    assert!(
        since_lease < ttl + Duration::from_secs(3),
        "waited {since_lease:?} for a {ttl:?} lease"
    );
    assert_eq!(
        value(
            &scrape(&b).0,
            "warpdrive_shared_lease_wait_seconds_count",
            &[("outcome", "expired")]
        ),
        1.0
    );
}
