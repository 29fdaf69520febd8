//! `warpdrive-ctl move` and `copy` between real emulators (Azurite → moto): every byte
//! arrives, sources go only after their copy is verified, and a run killed half-way and run
//! again copies nothing twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Mount, ctl, ctl_any, ctl_command, runtime, sha256};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use warpdrive_store::Backend;
use warpdrive_testkit::{Emulator, Kind, random_bytes, upload_many};

const SMALL: usize = 999;
const HUGE: usize = 200 << 20;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Every object under `prefix` of a backend: key → SHA-256.
fn listing(cfg: &warpdrive_config::BackendConfig, prefix: &str) -> BTreeMap<String, String> {
    runtime().block_on(async {
        let store = Backend::build(cfg)
            .expect("backend")
            .object_store()
            .expect("cloud");
        let metas: Vec<_> = store
            .list(Some(&prefix.into()))
            .try_collect()
            .await
            .expect("list");
        let mut out = BTreeMap::new();
        for m in metas {
            let data = store
                .get(&m.location)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("body");
            out.insert(m.location.to_string(), sha256(&data));
        }
        out
    })
}

fn journal_lines(m: &Mount) -> Vec<serde_json::Value> {
    let dir = m.cache_dir().join("copies");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The peak resident memory of a running process in MiB (`VmHWM`: since its exec, unlike
/// the rusage of a child, which also counts the test process it was forked from).
fn hwm_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Waits for `child`, sampling its peak memory until it exits: (exit code, peak MiB).
fn wait_sampling(child: &mut std::process::Child) -> (Option<i32>, f64) {
    let mut peak: f64 = 0.0;
    loop {
        if let Some(h) = hwm_mib(child.id()) {
            peak = peak.max(h);
        }
        if let Some(st) = child.try_wait().expect("wait") {
            return (st.code(), peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn move_between_clouds_survives_a_kill_and_copies_nothing_twice() {
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("src").expect("container");
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("dst").expect("bucket");
    let azc = az.backend("az", "src", "");
    let s3c = s3.backend("s3", "dst", "");

    let mut objects: Vec<(String, Vec<u8>)> = (0..SMALL)
        .map(|i| {
            (
                format!("train/d{}/obj-{i:04}.bin", i % 7),
                random_bytes(1000 + (i * 37) % 20_000, 5000 + i as u64),
            )
        })
        .collect();
    objects.push(("train/big/huge.bin".into(), random_bytes(HUGE, 77)));
    objects.push(("other/keep.bin".into(), random_bytes(1234, 78)));
    let want: BTreeMap<String, String> = objects
        .iter()
        .filter(|(k, _)| k.starts_with("train/"))
        .map(|(k, d)| (k["train/".len()..].to_string(), sha256(d)))
        .collect();
    runtime()
        .block_on(upload_many(&azc, objects, 16))
        .expect("upload");

    let m = Mount::prepare(&[azc.clone(), s3c.clone()], "", "max_size: 1GiB");

    // A dry run lists and changes nothing.
    let dry = json(&ctl(
        &m,
        &[
            "copy",
            "--dry-run",
            "--json",
            "wd://az/train",
            "wd://s3/copied",
        ],
    ));
    assert_eq!(dry["objects_total"], SMALL + 1, "{dry}");
    assert_eq!(dry["plan"].as_array().expect("plan").len(), SMALL + 1);
    assert!(
        listing(&s3c, "copied").is_empty(),
        "a dry run writes nothing"
    );
    // Copying into itself is refused.
    let (code, _, err) = ctl_any(&m, &["copy", "wd://az/train", "wd://az/train/sub"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("overlap"), "{err}");

    // First run (no daemon: in this process), killed once a third is through.
    let args = [
        "move",
        "--json",
        "--parallel",
        "4",
        "wd://az/train",
        "wd://s3/copied",
    ];
    let mut child = ctl_command(&m, &args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("move");
    let t0 = Instant::now();
    let mut rss1: f64 = 0.0;
    while journal_lines(&m).len() < SMALL / 3 {
        rss1 = rss1.max(hwm_mib(child.id()).unwrap_or(0.0));
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rss1 = rss1.max(hwm_mib(child.id()).unwrap_or(0.0));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let j1: BTreeSet<String> = journal_lines(&m)
        .iter()
        .map(|e| e["src"].as_str().expect("src").to_string())
        .collect();
    let left = listing(&azc, "train");
    // Nothing deleted that was not copied and verified.
    for k in want.keys() {
        let full = format!("train/{k}");
        if !left.contains_key(&full) {
            assert!(
                j1.contains(&full),
                "{full} deleted without a journaled copy"
            );
        }
    }
    let expect_skipped = left.keys().filter(|k| j1.contains(*k)).count();

    // Second run completes; what the first verified is skipped, not copied again.
    let mut child = ctl_command(&m, &args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("move");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("read");
        text
    });
    let (code, rss2) = wait_sampling(&mut child);
    let text = reader.join().expect("reader");
    assert_eq!(code, Some(0), "{text}");
    let out = json(&text);
    assert_eq!(out["state"], "done", "{out}");
    assert_eq!(out["error_count"], 0, "{out}");
    assert_eq!(out["objects_total"], left.len(), "{out}");
    assert_eq!(out["objects_skipped"], expect_skipped, "{out}");
    let lines = journal_lines(&m);
    let distinct: BTreeSet<&str> = lines.iter().filter_map(|e| e["src"].as_str()).collect();
    assert_eq!(
        lines.len(),
        SMALL + 1,
        "each object copied exactly once over both runs"
    );
    assert_eq!(distinct.len(), SMALL + 1);

    // Every byte arrived; the sources are gone, the rest of the container is untouched.
    let got: BTreeMap<String, String> = listing(&s3c, "copied")
        .into_iter()
        .map(|(k, v)| (k["copied/".len()..].to_string(), v))
        .collect();
    assert_eq!(got, want, "destination differs from the source");
    assert!(listing(&azc, "train").is_empty(), "sources deleted");
    assert_eq!(listing(&azc, "other").len(), 1);
    // Streaming: no process held the 200 MiB object in memory.
    assert!(
        rss1.max(rss2) < 120.0,
        "warpdrive-ctl peaked at {rss1:.0} and {rss2:.0} MiB"
    );

    // With a daemon: the copy runs as its job; one object lands inside a directory.
    let mut m = m;
    m.spawn();
    let out = json(&ctl(
        &m,
        &[
            "copy",
            "--json",
            "wd://az/other/keep.bin",
            "wd://s3/single/",
        ],
    ));
    assert_eq!(out["state"], "done", "{out}");
    assert_eq!(out["kind"], "copy", "{out}");
    assert_eq!(listing(&s3c, "single").len(), 1);
    assert!(listing(&s3c, "single").contains_key("single/keep.bin"));
    assert_eq!(listing(&azc, "other").len(), 1, "copy keeps its source");
    m.stop_with(libc::SIGTERM);
}
