//! Epoch plans through a real mount: a plan submitted with `warpdrive-ctl plan submit` has
//! every file fetched before the reader opens it by path (no GET and no wait while the epoch
//! is read), and a bad plan is refused, naming its line, changing nothing.

mod common;

use common::{Mount, ctl, ctl_any, forge, forge_gen, runtime, scrape, sha256, value};
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

/// The pure-Python module (`python/warpdrive_plan`) as a loader uses it: a sampler wrapped in
/// `PlannedSampler` submits each epoch's order over the control socket, the daemon fetches it,
/// and a plan the daemon refuses raises `PlanError` with the daemon's reason.
#[test]
fn the_python_module_submits_each_epochs_order() {
    let data = tempfile::tempdir().expect("tmp");
    let mut paths = Vec::new();
    for i in 0..50 {
        let p = data.path().join(format!("c{}/f{i:03}.bin", i % 5));
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(&p, random_bytes(10_000 + i * 100, i as u64)).expect("write");
        paths.push(format!("c{}/f{i:03}.bin", i % 5));
    }
    let b = warpdrive_testkit::local_backend("ds", data.path());
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    let files: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", m.path(&format!("ds/{p}")).display().to_string()))
        .collect();
    let script = format!(
        r#"
import random, warnings
from warpdrive_plan import PlannedSampler, PlanError, plan_status, submit_plan, clear_plan

class Sampler:
    def __init__(self, n): self.n, self.epoch = n, 0
    def set_epoch(self, e): self.epoch = e
    def __iter__(self):
        idx = list(range(self.n)); random.Random(self.epoch).shuffle(idx); return iter(idx)
    def __len__(self): return self.n

paths = [{files}]
s = PlannedSampler(Sampler(len(paths)), paths, job="py", rank=1)
s.set_epoch(2)
order = list(s)
assert sorted(order) == list(range(len(paths)))
st = plan_status()
assert [(p["job"], p["rank"], p["epoch"], p["entries"]) for p in st] == [("py", 1, 2, 50)], st
try:
    submit_plan(["/not/the/mount/x"], job="py", rank=1, epoch=3)
    raise SystemExit("a path outside the mount was accepted")
except PlanError as e:
    assert "entry 1" in str(e) and "not under the mount point" in str(e), e
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    bad = PlannedSampler(Sampler(1), ["/not/the/mount/x"], job="py", rank=1)
    assert list(bad) == [0]
    assert len(w) == 1 and "not submitted" in str(w[0].message), [str(x.message) for x in w]
assert plan_status()[0]["epoch"] == 2, "a refused plan changes nothing"
assert clear_plan("py") == 1
print("python module ok")
"#,
        files = files.join(", ")
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../python"),
        )
        .env("WARPDRIVE_SOCKET", m.dir.path().join("cache/control.sock"))
        .output()
        .expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", m.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("python module ok"));
}

/// `warpdrive-forge train --plan` on loose files through the mount: it submits each epoch's
/// order (known from its seed) as it enters the epoch, the daemon fetches ahead of it, and
/// the run is the same computation as without a plan.
#[test]
fn forge_submits_each_epochs_order_and_trains_the_same() {
    let data = tempfile::tempdir().expect("tmp");
    forge_gen(&["--layout", "files", "--files", "300"], data.path());
    let b = warpdrive_testkit::local_backend("ds", data.path());
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    let runs = tempfile::tempdir().expect("tmp");
    let train = |name: &str, plan: bool| -> serde_json::Value {
        let summary = runs.path().join(format!("{name}.json"));
        let mut c = std::process::Command::new(forge());
        // 40 steps of 16 over 300 files: a little over two epochs.
        c.arg("train")
            .arg("--files")
            .arg(m.path("ds/files.txt"))
            .args(["--steps", "40", "--batch-size", "16", "--num-workers", "4"])
            .arg("--summary")
            .arg(&summary);
        if plan {
            c.args(["--plan", "forge-test", "--plan-rank", "2"])
                .env("WARPDRIVE_SOCKET", m.dir.path().join("cache/control.sock"));
        }
        let out = c.output().expect("forge train");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("plan not submitted"), "{err}\n{}", m.log());
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("JSON")
    };
    let planned = train("planned", true);
    let plain = train("plain", false);
    assert_eq!(
        planned["plans_submitted"], 3,
        "epochs 0, 1 and 2: {planned}"
    );
    assert_eq!(planned["batch_digest"], plain["batch_digest"]);
    assert_eq!(planned["losses"], plain["losses"]);
    let s: serde_json::Value =
        serde_json::from_str(&ctl(&m, &["plan", "status", "--json"])).expect("JSON");
    println!("figures: forge --plan over 300 files, 2.1 epochs: {s}");
    assert_eq!(
        (s[0]["job"].as_str(), s[0]["rank"].as_u64()),
        (Some("forge-test"), Some(2))
    );
    assert_eq!(s[0]["epoch"], 2);
    assert_eq!(s[0]["entries"], 600, "the epoch's order and the next one's");
}
