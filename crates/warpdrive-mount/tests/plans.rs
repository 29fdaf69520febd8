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
    let (_, status, _) = ctl_any(&m, &["status"]);
    assert!(
        status.contains(
            "plan        resnet rank 0 epoch 1: 1000 of 1000 entries reached, 1000 ahead, 0 late"
        ),
        "{status}"
    );
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

/// A copy of the Python module where a process of another user can import it (the checkout
/// may sit in a directory only its owner can enter).
fn python_module_for_anyone(dir: &std::path::Path) -> std::path::PathBuf {
    let to = dir.join("python");
    std::fs::create_dir_all(to.join("warpdrive_plan")).expect("mkdir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../python/warpdrive_plan/__init__.py"
        ),
        to.join("warpdrive_plan/__init__.py"),
    )
    .expect("copy the module");
    to
}

/// The control file `<mount>/.warpdrive/plan` from a process that cannot reach the control
/// socket (another user, as a container given only the mount): the Python module submits
/// through it, a shell-style write is taken at `close`, bad texts (malformed, outside the
/// mount, past the size limit) are refused with their reason and change nothing, and the
/// daemon serves on unaffected. Not listed in the root, so tree walks never see it.
#[test]
fn the_control_file_takes_plans_from_a_process_without_the_socket() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().expect("tmp");
    let mut paths = Vec::new();
    for i in 0..200 {
        let p = format!("c{}/f{i:03}.bin", i % 4);
        std::fs::create_dir_all(data.path().join(format!("c{}", i % 4))).expect("mkdir");
        std::fs::write(data.path().join(&p), random_bytes(5_000 + i * 50, i as u64))
            .expect("write");
        paths.push(p);
    }
    let b = warpdrive_testkit::local_backend("ds", data.path());
    let m = Mount::start(
        std::slice::from_ref(&b),
        "metadata_ttl: 10m\nfuse: { allow_other: true }\n",
    );
    // Let another user reach the mount point (the cache directory stays 0700).
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pythonpath = python_module_for_anyone(m.dir.path());
    std::fs::set_permissions(&pythonpath, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let names: Vec<String> = std::fs::read_dir(&m.mount_point)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ds"], "the control directory is not listed");

    let files: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", m.path(&format!("ds/{p}")).display().to_string()))
        .collect();
    let script = format!(
        r#"
import errno, os, socket
from warpdrive_plan import PlanError, plan_status, submit_plan, clear_plan

mount = {mount:?}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect({sock:?})
    raise SystemExit("the control socket was reachable")
except PermissionError:
    pass

paths = [{files}]
st = submit_plan(list(reversed(paths)), job="ctr", rank=3, epoch=1, mount=mount)
assert (st["job"], st["rank"], st["epoch"], st["entries"]) == ("ctr", 3, 1, 200), st
assert [(p["job"], p["epoch"]) for p in plan_status(mount=mount)] == [("ctr", 1)]

def refused(text, says):
    fd = os.open(mount + "/.warpdrive/plan", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, text.encode())
    try:
        os.close(fd)
        raise SystemExit(f"accepted: {{text[:60]!r}}")
    except OSError as e:
        assert e.errno == errno.EINVAL, e
    status = open(mount + "/.warpdrive/plan").read()
    last = [l for l in status.splitlines() if l.startswith("last ")][-1]
    assert says in last, (says, last)

refused("ds/c0/f000.bin\n", "line 1: start with")
refused("warpdrive-plan job=ctr rank=3 epoch=2\nds/c0/f000.bin\nds/nope\t1\n", "line 3")
refused("warpdrive-plan job=ctr rank=3 epoch=2\n/etc/passwd\n", "not under the mount")
refused("warpdrive-plan job=ctr rank=3 epoch=2\nelsewhere/x\n", "no backend named `elsewhere`")
refused("warpdrive-plan job=ctr rank=3 epoch=0\nds/c0/f000.bin\n", "would go back")
refused("warpdrive-plan job=ctr rank=3 epoch=2\n" + "ds/c0/f000.bin\n" * 2_000_001, "at most 2000000")
try:
    submit_plan(["/somewhere/else/x"], job="ctr", rank=3, epoch=2, mount=mount)
    raise SystemExit("a path outside the mount was accepted")
except PlanError as e:
    assert "entry 1" in str(e) and "not under the mount" in str(e), e
# A shell's `cat plan.txt > .warpdrive/plan`, root= naming the mount as the writer sees it.
with open(mount + "/.warpdrive/plan", "w") as f:
    f.write(f"warpdrive-plan job=shell epoch=4 root={{mount}}\n{{paths[0]}}\n")
assert [(p["job"], p["epoch"], p["entries"]) for p in plan_status(mount=mount)] == [("ctr", 1, 200), ("shell", 4, 1)]
assert clear_plan("shell", mount=mount) == 1
print("control file ok")
"#,
        mount = m.mount_point.display().to_string(),
        sock = m
            .dir
            .path()
            .join("cache/control.sock")
            .display()
            .to_string(),
        files = files.join(", ")
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("PYTHONPATH", &pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("WARPDRIVE_SOCKET")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", m.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("control file ok"));

    // The daemon took the good plan, kept it through every refusal, and serves on.
    let s: serde_json::Value =
        serde_json::from_str(&ctl(&m, &["plan", "status", "--json"])).expect("JSON");
    assert_eq!(
        (
            s[0]["job"].as_str(),
            s[0]["rank"].as_u64(),
            s[0]["epoch"].as_u64()
        ),
        (Some("ctr"), Some(3), Some(1)),
        "{s}"
    );
    assert_eq!(s.as_array().map(Vec::len), Some(1), "{s}");
    for p in &paths {
        let got = std::fs::read(m.path(&format!("ds/{p}"))).expect("read");
        assert_eq!(
            got,
            std::fs::read(data.path().join(p)).expect("source"),
            "{p}"
        );
    }
    assert!(
        m.log().contains("the control file refused"),
        "refusals are logged"
    );
    // Everything else stays read-only.
    let e = std::fs::write(m.path("ds/c0/f000.bin"), b"x").expect_err("read-only");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
}

/// A plan whose files change on the store mid-epoch: the reader gets each file's current
/// version, never the bytes prefetched before the change.
#[test]
fn a_plan_whose_files_change_mid_epoch_serves_current_versions() {
    let rt = runtime();
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("imgs").expect("container");
    let b = az.backend("imgs", "imgs", "");
    let old: Vec<(String, Vec<u8>)> = (0..100usize)
        .map(|i| {
            (
                format!("e/f{i:03}.bin"),
                random_bytes(20_000 + i * 37, i as u64),
            )
        })
        .collect();
    rt.block_on(upload_many(&b, old.clone(), 16))
        .expect("upload");
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 1s\n");
    let text: String = std::iter::once("warpdrive-plan job=change epoch=1\n".to_string())
        .chain(old.iter().map(|(k, _)| format!("imgs/{k}\n")))
        .collect();
    std::fs::write(m.path(".warpdrive/plan"), text).expect("submit through the control file");
    let t0 = std::time::Instant::now();
    while !ctl(&m, &["plan", "status"]).contains("done") {
        assert!(t0.elapsed().as_secs() < 60, "plan never done\n{}", m.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The first half is read as prefetched; then every other file of the second half is
    // replaced on the store, and read after the metadata TTL.
    for (k, data) in &old[..50] {
        assert_eq!(
            &std::fs::read(m.path(&format!("imgs/{k}"))).expect("read"),
            data,
            "{k}"
        );
    }
    let new: Vec<(String, Vec<u8>)> = old[50..]
        .iter()
        .step_by(2)
        .map(|(k, d)| {
            (
                k.clone(),
                random_bytes(d.len() + 11, 1_000 + d.len() as u64),
            )
        })
        .collect();
    rt.block_on(upload_many(&b, new.clone(), 8))
        .expect("overwrite");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let mut changed = 0;
    for (k, data) in &old[50..] {
        let got = std::fs::read(m.path(&format!("imgs/{k}"))).expect("read");
        match new.iter().find(|(n, _)| n == k) {
            Some((_, fresh)) => {
                assert_eq!(&got, fresh, "{k}: the current version");
                changed += 1;
            }
            None => assert_eq!(&got, data, "{k}"),
        }
    }
    assert_eq!(changed, 25);
}
