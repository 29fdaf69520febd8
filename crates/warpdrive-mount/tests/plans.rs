//! Epoch plans through a real mount: a plan submitted with `warpdrive-ctl plan submit` has
//! every file fetched before the reader opens it by path (no GET and no wait while the epoch
//! is read), and a bad plan is refused, naming its line, changing nothing.

mod common;

use common::{Mount, ctl, ctl_any, runtime, scrape, sha256, value};
use warpdrive_testkit::{Emulator, Kind, random_bytes, shuffled, upload_many};

#[test]
fn a_planned_epoch_finds_every_file_fetched() {
    let rt = runtime();
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("imgs").expect("container");
    let b = az.backend("imgs", "imgs", "");
    let mut objects = Vec::new();
    let mut files = Vec::new();
    for i in 0..1000usize {
        let key = format!("train/n{:03}/img_{i:05}.jpg", i % 10);
        let data = random_bytes(4_000 + (i * 131) % 40_000, i as u64);
        files.push((key.clone(), sha256(&data)));
        objects.push((key, data));
    }
    objects.push(("other.bin".to_string(), random_bytes(300_000, 7)));
    rt.block_on(upload_many(&b, objects, 16)).expect("upload");
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    let order = shuffled(files, 3);
    let wait = |m: &Mount| {
        value(
            &scrape(m).0,
            "warpdrive_read_wait_seconds_total",
            &[("backend", "imgs")],
        )
    };
    // A read outside any plan waits for its fetch: the stall is counted.
    std::fs::read(m.path("imgs/other.bin")).expect("read");
    let waited = wait(&m);
    assert!(waited > 0.0, "an unplanned cold read waits on the backend");

    // A plan with a bad line is refused whole.
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "imgs/train/n000/img_00000.jpg\nimgs/x\t12\n").expect("write");
    let (code, _, err) = ctl_any(
        &m,
        &[
            "plan",
            "submit",
            bad.to_str().expect("utf-8"),
            "--job",
            "resnet",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(ctl(&m, &["plan", "status"]).contains("no plans"));

    // The plan names files by their paths under the mount point, as a loader knows them.
    let list: String = order
        .iter()
        .map(|(k, _)| format!("{}\n", m.path(&format!("imgs/{k}")).display()))
        .collect();
    let plan = dir.path().join("plan.txt");
    std::fs::write(&plan, list).expect("write");
    let out = ctl(
        &m,
        &[
            "plan",
            "submit",
            plan.to_str().expect("utf-8"),
            "--job",
            "resnet",
            "--epoch",
            "1",
        ],
    );
    assert!(out.contains("resnet"), "{out}");
    let t0 = std::time::Instant::now();
    let status = loop {
        let s: serde_json::Value =
            serde_json::from_str(&ctl(&m, &["plan", "status", "--json"])).expect("JSON");
        if s[0]["state"] == "done" {
            break s;
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "plan never done: {s}\n{}",
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    println!("figures: plan prefetched in {:?}: {status}", t0.elapsed());

    let gets = |m: &Mount| {
        value(
            &scrape(m).0,
            "warpdrive_backend_requests_total",
            &[("op", "get")],
        )
    };
    let before = gets(&m);
    for (key, digest) in &order {
        let got = std::fs::read(m.path(&format!("imgs/{key}"))).expect("read");
        assert_eq!(&sha256(&got), digest, "{key}");
    }
    let (s, _) = scrape(&m);
    let wait = wait(&m) - waited;
    let ahead = value(
        &s,
        "warpdrive_plan_entries_total",
        &[("job", "resnet"), ("outcome", "ahead")],
    );
    println!(
        "figures: planned epoch of 1,000 files: {} GET while reading, {wait:.4} s waiting on the backend, {ahead} entries ahead",
        gets(&m) - before
    );
    assert_eq!(gets(&m), before, "every file was fetched before its read");
    assert_eq!(wait, 0.0, "no read waited on the backend");
    assert_eq!(ahead, 1000.0);
    ctl(&m, &["plan", "clear", "--job", "resnet"]);
    assert!(ctl(&m, &["plan", "status"]).contains("no plans"));
}
