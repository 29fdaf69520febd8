//! `warpdrive-ctl` governance commands against a live mount with a known cache state: the
//! figures they print match the index and what was read.

mod common;

use common::{Mount, ctl, runtime, sha256};
use warpdrive_testkit::{Emulator, Kind, random_bytes, upload_many};

const MIB: usize = 1 << 20;

fn stats(m: &Mount) -> serde_json::Value {
    serde_json::from_str(&ctl(m, &["stats", "--json"])).expect("stats --json")
}

#[test]
fn stats_match_the_cache_live_and_across_restarts() {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("gov").expect("bucket");
    let objects = vec![
        ("d1/a.bin".to_string(), random_bytes(2 * MIB + 1, 31)),
        ("d1/sub/b.bin".to_string(), random_bytes(MIB, 32)),
        ("c.bin".to_string(), random_bytes(10 << 10, 33)),
    ];
    let cfg = s3.backend("s3", "gov", "");
    runtime()
        .block_on(upload_many(&cfg, objects.clone(), 3))
        .expect("upload");
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let read_all = |m: &Mount| {
        for (k, d) in &objects {
            let got = std::fs::read(m.path(&format!("s3/{k}"))).expect("read");
            assert_eq!(sha256(&got), sha256(d), "{k}");
        }
    };
    let mut m = Mount::start(std::slice::from_ref(&cfg), "fuse: { passthrough: off }\n");
    read_all(&m);
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Live: the index as committed so far.
    let s = stats(&m);
    assert_eq!(s["objects"], 3, "{s}");
    assert_eq!(s["blocks"], 3 + 1 + 1, "{s}");
    assert_eq!(s["bytes"], total, "{s}");
    assert_eq!(s["format_version"], warpdrive_cache::FORMAT_VERSION, "{s}");
    assert_eq!(s["capacity_bytes"], 1u64 << 30, "max_size: 1GiB");
    assert!(s["newest_access"].as_i64().is_some(), "{s}");

    // Stopped: the daemon added its hits and misses to the lifetime counters at exit.
    m.stop_with(libc::SIGTERM);
    let s = stats(&m);
    let (hit, miss) = (
        s["hit_bytes"].as_u64().expect("hits"),
        s["miss_bytes"].as_u64().expect("misses"),
    );
    assert_eq!(hit + miss, total, "every byte read once: {s}");
    assert!(miss > 0, "{s}");

    // A warm run in a new daemon: its hits add to the lifetime counts; misses stay.
    m.spawn();
    read_all(&m);
    m.stop_with(libc::SIGTERM);
    let s = stats(&m);
    assert_eq!(s["hit_bytes"].as_u64(), Some(hit + total), "{s}");
    assert_eq!(s["miss_bytes"].as_u64(), Some(miss), "{s}");
    let ratio = s["hit_ratio"].as_f64().expect("ratio");
    assert!((ratio - (hit + total) as f64 / (hit + total + miss) as f64).abs() < 1e-9);
    let text = ctl(&m, &["stats"]);
    assert!(
        text.contains("hit ratio") && text.contains("objects    3"),
        "{text}"
    );

    // usage and stale read the same index.
    let len = |k: &str| {
        objects
            .iter()
            .find(|(n, _)| n == k)
            .map_or(0, |(_, d)| d.len() as u64)
    };
    let usage = |args: &[&str]| -> Vec<(String, u64, u64)> {
        let mut a = vec!["usage", "--json"];
        a.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&ctl(&m, &a)).expect("usage --json");
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().expect("name").to_string(),
                    r["bytes"].as_u64().expect("bytes"),
                    r["objects"].as_u64().expect("objects"),
                )
            })
            .collect()
    };
    assert_eq!(usage(&[]), vec![("s3".to_string(), total, 3)]);
    assert_eq!(
        usage(&["--by", "path"]),
        vec![
            (
                "s3/d1/".to_string(),
                len("d1/a.bin") + len("d1/sub/b.bin"),
                2
            ),
            ("s3/".to_string(), len("c.bin"), 1),
        ]
    );
    let under = format!("{}/s3/d1/", m.mount_point.display());
    assert_eq!(
        usage(&["--by", "path", "--depth", "2", &under]),
        vec![
            ("s3/d1/".to_string(), len("d1/a.bin"), 1),
            ("s3/d1/sub/".to_string(), len("d1/sub/b.bin"), 1),
        ],
        "a path under the mount point"
    );
    // The table says what the JSON says: same rows, same order, same object counts.
    let table = ctl(&m, &["usage", "--by", "path"]);
    let rows: Vec<(String, u64)> = table
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(" total"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[3].to_string(), f[2].parse().expect("objects column"))
        })
        .collect();
    let json: Vec<(String, u64)> = usage(&["--by", "path"])
        .into_iter()
        .map(|(n, _, o)| (n, o))
        .collect();
    assert_eq!(rows, json, "{table}");
    assert_eq!(
        usage(&["wd://s3/d1/sub/"]),
        vec![("s3".to_string(), len("d1/sub/b.bin"), 1)]
    );
    let stale = |age: &str| -> serde_json::Value {
        serde_json::from_str(&ctl(&m, &["stale", "--json", "--older-than", age])).expect("stale")
    };
    let all = stale("0s");
    assert_eq!(
        all["objects"].as_array().expect("objects").len(),
        3,
        "{all}"
    );
    assert_eq!(all["total_bytes"], total, "{all}");
    assert_eq!(stale("1d")["objects"].as_array().expect("objects").len(), 0);
    let bad = std::process::Command::new(
        std::path::Path::new(common::BIN).with_file_name("warpdrive-ctl"),
    )
    .arg("--config")
    .arg(&m.config)
    .args(["usage", "nosuch/x"])
    .output()
    .expect("ctl");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no backend named `nosuch`"));
}
