//! `/metrics` through a real mount: every documented family is exposed with its type and
//! labels (parsed with a Prometheus exposition-format parser), the counters agree with a known
//! workload cold and warm, backend errors are classified, and the listener stays on loopback
//! unless the config says otherwise.

mod common;

use std::time::Duration;

use common::{Mount, ctl, runtime, scrape, sha256, value};
use prometheus_parse::{Sample, Scrape, Value};
use warpdrive_fs::mountinfo::{MountState, mount_state};
use warpdrive_testkit::{
    DelayProxy, Emulator, Kind, emulator_backend, free_port, random_bytes, upload_many,
};

const MIB: usize = 1 << 20;

/// Every family in doc/METRICS.md, with its type and label names (histograms and counters by
/// the name their samples carry).
const FAMILIES: &[(&str, &str, &[&str])] = &[
    ("warpdrive_fuse_operations_total", "counter", &["op"]),
    ("warpdrive_fuse_read_latency_seconds", "histogram", &[]),
    ("warpdrive_fuse_read_size_bytes", "histogram", &[]),
    ("warpdrive_fuse_open_handles", "gauge", &[]),
    ("warpdrive_cache_hit_blocks_total", "counter", &[]),
    ("warpdrive_cache_hit_bytes_total", "counter", &[]),
    ("warpdrive_cache_miss_blocks_total", "counter", &[]),
    ("warpdrive_cache_miss_bytes_total", "counter", &[]),
    ("warpdrive_cache_evicted_blocks_total", "counter", &[]),
    ("warpdrive_cache_corrupt_blocks_total", "counter", &[]),
    ("warpdrive_cache_used_bytes", "gauge", &[]),
    ("warpdrive_cache_capacity_bytes", "gauge", &[]),
    ("warpdrive_cache_objects", "gauge", &[]),
    ("warpdrive_cache_disk_bytes", "gauge", &[]),
    ("warpdrive_cache_disk_free_bytes", "gauge", &[]),
    ("warpdrive_cache_passthrough_opens_total", "counter", &[]),
    ("warpdrive_cache_keep_cache_opens_total", "counter", &[]),
    (
        "warpdrive_cache_store_checksum_mismatches_total",
        "counter",
        &[],
    ),
    ("warpdrive_cache_disk_failures_total", "counter", &[]),
    ("warpdrive_cache_not_admitted_blocks_total", "counter", &[]),
    ("warpdrive_prefetch_hits_total", "counter", &[]),
    ("warpdrive_prefetch_wasted_total", "counter", &[]),
    ("warpdrive_prefetch_window_resets_total", "counter", &[]),
    ("warpdrive_prefetch_in_flight_bytes", "gauge", &[]),
    (
        "warpdrive_backend_read_bytes_total",
        "counter",
        &["backend"],
    ),
    (
        "warpdrive_backend_requests_total",
        "counter",
        &["backend", "op"],
    ),
    (
        "warpdrive_backend_first_byte_seconds",
        "histogram",
        &["backend", "op"],
    ),
    (
        "warpdrive_backend_request_seconds",
        "histogram",
        &["backend", "op"],
    ),
    (
        "warpdrive_backend_retries_total",
        "counter",
        &["backend", "reason"],
    ),
    (
        "warpdrive_backend_give_ups_total",
        "counter",
        &["backend", "reason"],
    ),
    (
        "warpdrive_backend_retry_wait_seconds_total",
        "counter",
        &["backend", "reason"],
    ),
    (
        "warpdrive_backend_stale_served_total",
        "counter",
        &["backend"],
    ),
    (
        "warpdrive_backend_lookups_total",
        "counter",
        &["backend", "answer"],
    ),
    (
        "warpdrive_backend_lookup_listing_pages_total",
        "counter",
        &["backend"],
    ),
    ("warpdrive_fuse_errors_total", "counter", &["op", "errno"]),
    (
        "warpdrive_backend_errors_total",
        "counter",
        &["backend", "kind"],
    ),
    ("warpdrive_auth_refreshes_total", "counter", &["backend"]),
    (
        "warpdrive_auth_refresh_failures_total",
        "counter",
        &["backend"],
    ),
    ("warpdrive_uptime_seconds", "gauge", &[]),
    ("warpdrive_resident_memory_bytes", "gauge", &[]),
    ("warpdrive_open_fds", "gauge", &[]),
    ("warpdrive_build_info", "gauge", &["version", "commit"]),
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
        Value::Summary(_) => "summary",
        Value::Untyped(_) => "untyped",
    }
}

fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

/// The sum of the counter or gauge series matching `labels` (0 when there is none).
/// A histogram's `_count` or `_sum`, from the raw text.
fn hist_line(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn read_all(m: &Mount, objects: &[(&str, &str, Vec<u8>)]) {
    for (backend, key, data) in objects {
        let got = std::fs::read(m.path(&format!("{backend}/{key}")))
            .unwrap_or_else(|e| panic!("{backend}/{key}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(data), "{backend}/{key}");
    }
}

#[test]
fn metrics_agree_with_a_known_workload() {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    let objects: Vec<(&str, &str, Vec<u8>)> = vec![
        ("alpha", "x/a.bin", random_bytes(3 * MIB + 5, 1)),
        ("alpha", "b.bin", random_bytes(MIB, 2)),
        ("alpha", "c.bin", random_bytes(200 << 10, 3)),
        ("beta", "d.bin", random_bytes(2 * MIB + 17, 4)),
        ("beta", "e.bin", random_bytes(64 << 10, 5)),
    ];
    let mut backends = Vec::new();
    for (name, bucket) in [("alpha", "mta"), ("beta", "mtb")] {
        s3.create_bucket(bucket).expect("bucket");
        let cfg = emulator_backend(Kind::Moto, &s3.endpoint(), name, bucket, "");
        let mine: Vec<(String, Vec<u8>)> = objects
            .iter()
            .filter(|(b, _, _)| *b == name)
            .map(|(_, k, d)| (k.to_string(), d.clone()))
            .collect();
        runtime()
            .block_on(upload_many(&cfg, mine, 2))
            .expect("upload");
        backends.push(cfg);
    }
    let bytes_of = |b: &str| -> f64 {
        objects
            .iter()
            .filter(|(n, _, _)| *n == b)
            .map(|(_, _, d)| d.len() as f64)
            .sum()
    };
    let total = bytes_of("alpha") + bytes_of("beta");
    // Passthrough off: warm reads must reach the daemon to be counted as cache hits.
    let mut m = Mount::start(&backends, "fuse: { passthrough: off }\n");

    let (s, _) = scrape(&m);
    for (name, ty, labels) in FAMILIES {
        let x = find(&s, name, &[]).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(kind(&x.value), *ty, "{name}");
        for l in *labels {
            assert!(x.labels.get(l).is_some(), "{name} lacks label {l}");
        }
    }
    let text = m.metrics_text();
    for bound in ["0.0001", "0.0005", "0.001", "0.005", "0.05"] {
        assert!(
            text.contains(&format!(
                "warpdrive_fuse_read_latency_seconds_bucket{{le=\"{bound}\"}}"
            )),
            "latency bucket {bound} missing"
        );
    }

    // Cold. Blocks are written to the cache just after their readers have them: wait for the
    // last writes before comparing figures.
    read_all(&m, &objects);
    let t0 = std::time::Instant::now();
    while value(&scrape(&m).0, "warpdrive_cache_used_bytes", &[]) < total {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the cache never held every block"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (s, text) = scrape(&m);
    let reads = value(&s, "warpdrive_fuse_operations_total", &[("op", "read")]);
    assert!(reads > 0.0);
    assert_eq!(
        hist_line(&text, "warpdrive_fuse_read_latency_seconds_count"),
        reads
    );
    assert_eq!(
        hist_line(&text, "warpdrive_fuse_read_size_bytes_count"),
        reads
    );
    assert_eq!(
        hist_line(&text, "warpdrive_fuse_read_size_bytes_sum"),
        total
    );
    assert_eq!(
        value(&s, "warpdrive_fuse_operations_total", &[("op", "open")]),
        objects.len() as f64
    );
    let hit = value(&s, "warpdrive_cache_hit_bytes_total", &[]);
    let miss = value(&s, "warpdrive_cache_miss_bytes_total", &[]);
    assert_eq!(hit + miss, total, "every byte read is a hit or a miss");
    assert!(miss > 0.0);
    for b in ["alpha", "beta"] {
        assert_eq!(
            value(&s, "warpdrive_backend_read_bytes_total", &[("backend", b)]),
            bytes_of(b),
            "{b}: every byte fetched once, attributed to its backend"
        );
        assert!(
            value(
                &s,
                "warpdrive_backend_requests_total",
                &[("backend", b), ("op", "get")]
            ) >= 1.0
        );
    }
    assert_eq!(value(&s, "warpdrive_cache_used_bytes", &[]), total);
    assert_eq!(value(&s, "warpdrive_fuse_open_handles", &[]), 0.0);

    // `warpdrive-ctl metrics`: a snapshot now, a warm pass in the same daemon (page cache
    // dropped), and the figures since the snapshot show that pass alone.
    let snap = m.dir.path().join("before.json");
    let out = ctl(&m, &["metrics", "--snapshot", snap.to_str().expect("path")]);
    assert!(
        out.contains("Read latency") && out.contains("≤100µs") && out.contains("alpha"),
        "{out}"
    );
    common::drop_page_cache();
    read_all(&m, &objects);
    let d: serde_json::Value = serde_json::from_str(&ctl(
        &m,
        &["metrics", "--json", "--since", snap.to_str().expect("path")],
    ))
    .expect("json");
    assert_eq!(d["since_snapshot"], true);
    assert_eq!(d["cache"]["miss_bytes"], 0.0, "{d}");
    assert_eq!(d["cache"]["hit_bytes"], total, "{d}");
    assert_eq!(d["read_bytes"], total, "{d}");
    for b in d["backends"].as_array().expect("backends") {
        assert_eq!(b["read_bytes"], 0.0, "{d}");
    }
    let rows: f64 = d["read_latency"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[1].as_f64().expect("count"))
        .sum();
    assert_eq!(rows, d["read_latency"]["count"].as_f64().expect("count"));

    // Warm, in a new daemon (counters start again; the mount's page cache is gone).
    std::thread::sleep(Duration::from_millis(300));
    m.stop_with(libc::SIGTERM);
    m.spawn();
    read_all(&m, &objects);
    let (s, text) = scrape(&m);
    let reads = value(&s, "warpdrive_fuse_operations_total", &[("op", "read")]);
    assert_eq!(
        hist_line(&text, "warpdrive_fuse_read_latency_seconds_count"),
        reads
    );
    assert_eq!(value(&s, "warpdrive_cache_miss_bytes_total", &[]), 0.0);
    assert_eq!(value(&s, "warpdrive_cache_hit_bytes_total", &[]), total);
    for b in ["alpha", "beta"] {
        assert_eq!(
            value(&s, "warpdrive_backend_read_bytes_total", &[("backend", b)]),
            0.0,
            "{b}"
        );
    }
    assert_eq!(
        value(
            &s,
            "warpdrive_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[test]
fn backend_errors_are_counted_by_kind() {
    let dead = free_port().expect("port");
    let down = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{dead}"),
        "down",
        "bkt",
        "",
    );
    let m = Mount::start(&[down], "");
    assert!(
        std::fs::read_dir(m.path("down"))
            .and_then(|d| d.collect::<Result<Vec<_>, _>>())
            .is_err()
    );
    let (s, _) = scrape(&m);
    assert!(
        value(
            &s,
            "warpdrive_backend_errors_total",
            &[("backend", "down"), ("kind", "connection")]
        ) >= 1.0,
        "{}",
        m.metrics_text()
    );
    assert!(
        value(&s, "warpdrive_fuse_errors_total", &[("errno", "EIO")]) >= 1.0,
        "{}",
        m.metrics_text()
    );
}

#[test]
fn the_metrics_listener_stays_on_loopback_unless_allowed() {
    let never = emulator_backend(Kind::Moto, "http://127.0.0.1:1", "never", "bkt", "");
    let m = Mount::prepare(&[never], "", "max_size: 1GiB");
    let cfg = std::fs::read_to_string(&m.config).expect("config");
    let port = m.metrics_port();
    std::fs::write(
        &m.config,
        cfg.replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}")),
    )
    .expect("config");
    let (code, err) = common::refused_start(&m.config, "a refused config");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("metrics.listen") && err.contains("allow_remote"),
        "{err}"
    );
    assert_eq!(
        mount_state(&m.mount_point),
        MountState::NotMounted,
        "nothing mounted"
    );
}

#[test]
fn injected_failures_are_classified_and_retries_counted() {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("rty").expect("bucket");
    let a = random_bytes(MIB + 3, 11);
    let b = random_bytes(100 << 10, 12);
    runtime()
        .block_on(upload_many(
            &s3.backend("direct", "rty", ""),
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            2,
        ))
        .expect("upload");
    let proxy = DelayProxy::counting(s3.port).expect("proxy");
    let flaky = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "flaky",
        "rty",
        "",
    );
    let m = Mount::start(&[flaky], "");
    // One 500, then one 429: each read still succeeds, on the retry.
    proxy.fail_reads(1, 500);
    assert_eq!(
        sha256(&std::fs::read(m.path("flaky/a")).expect("a")),
        sha256(&a)
    );
    proxy.fail_reads(1, 429);
    assert_eq!(
        sha256(&std::fs::read(m.path("flaky/b")).expect("b")),
        sha256(&b)
    );
    assert_eq!(
        proxy
            .stats
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let (s, text) = scrape(&m);
    let errors = |kind: &str| {
        value(
            &s,
            "warpdrive_backend_errors_total",
            &[("backend", "flaky"), ("kind", kind)],
        )
    };
    assert_eq!(errors("server"), 1.0, "{text}");
    assert_eq!(errors("throttled"), 1.0, "{text}");
    assert_eq!(
        value(
            &s,
            "warpdrive_backend_retries_total",
            &[("backend", "flaky")]
        ),
        2.0,
        "{text}"
    );
}
