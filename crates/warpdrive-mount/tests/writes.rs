//! Checkpoint writes through a real mount over Azurite, moto and fake-gcs-server: the ways
//! frameworks save (a temporary name then `os.replace`, a named temporary file then a rename,
//! `numpy.savez` seeking back into its zip, `shutil.copyfile`, `dd conv=fsync`) each leave an
//! object byte-identical through the mount, the store's API and a second mount; nothing is
//! visible under a name before its close; a killed daemon leaves no object; outside the
//! writable prefixes everything stays `EROFS`, and names are create-only.

mod common;

use std::path::Path;

use common::{Mount, ctl_any, runtime, scrape, sha256, value};
use warpdrive_config::BackendConfig;
use warpdrive_store::Backend;
use warpdrive_testkit::{Emulator, Kind, random_bytes};

/// `b` with `ckpt/` writable.
fn writable(mut b: BackendConfig) -> BackendConfig {
    b.write.prefixes = vec!["ckpt/".into()];
    b
}

/// An emulator of `kind` with bucket `ckpts`, and backend `cp` on it, writable under `ckpt/`.
fn checkpoint_store(kind: Kind) -> (Emulator, BackendConfig) {
    let em = Emulator::start(kind).expect("emulator");
    em.create_bucket("ckpts").expect("bucket");
    let b = writable(em.backend("cp", "ckpts", ""));
    (em, b)
}

/// The object `key` read whole through the store's API.
fn store_bytes(b: &BackendConfig, key: &str) -> Vec<u8> {
    let rt = runtime();
    let backend = Backend::build(b).expect("backend");
    let size = rt.block_on(backend.head(key)).expect("head").size;
    rt.block_on(backend.get_range(key, 0..size, None))
        .expect("get")
        .to_vec()
}

/// Runs `script` with python3 (argv: `args`); its stdout. A failure shows the daemon's log.
fn python(m: &Mount, script: &str, args: &[&Path]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {err}\n{}", m.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (at most `secs`) for the writer process to create `marker`, failing if it stops.
fn wait_for_marker(m: &Mount, writer: &mut std::process::Child, marker: &Path, secs: u64) {
    let t0 = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            writer.try_wait().expect("wait").is_none(),
            "the writer stopped\n{}",
            m.log()
        );
        assert!(
            t0.elapsed().as_secs() < secs,
            "the writer never got there\n{}",
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The framework writers: each file written the way its framework writes it, then read back
/// through the mount and checked; prints `NAME SHA256` per file.
const WRITERS: &str = r#"
import hashlib, os, pickle, shutil, sys, tempfile
import numpy as np

d = os.path.join(sys.argv[1], "run")
os.makedirs(d, exist_ok=True)
blob = os.urandom(3 << 20)

# torch.save: a temporary name, closed, then os.replace.
with open(d + "/model.pt.tmp", "wb") as f:
    pickle.dump({"weights": blob, "step": 100}, f)
os.replace(d + "/model.pt.tmp", d + "/model.pt")
with open(d + "/model.pt", "rb") as f:
    assert pickle.load(f)["weights"] == blob

# safetensors: a named temporary file in the directory, then a rename.
with tempfile.NamedTemporaryFile(dir=d, delete=False, suffix=".tmp") as f:
    f.write(b"{\"header\": 1}" + blob[: 1 << 20])
    tmp = f.name
os.rename(tmp, d + "/model.safetensors")

# numpy.savez: a zip writer that seeks back to patch its headers.
a, b = np.arange(1_000_000), np.ones((300, 300))
np.savez(d + "/arrays.npz", a=a, b=b)
z = np.load(d + "/arrays.npz")
assert (z["a"] == a).all() and (z["b"] == b).all()

# shutil.copyfile of a larger file (several upload parts).
shutil.copyfile(sys.argv[2], d + "/big.bin")

for name in ["model.pt", "model.safetensors", "arrays.npz", "big.bin", "dd.bin"]:
    if name == "dd.bin":
        continue
    with open(os.path.join(d, name), "rb") as f:
        print(name, hashlib.sha256(f.read()).hexdigest())
assert sorted(n for n in os.listdir(d) if not n.endswith(".tmp")) == ["arrays.npz", "big.bin", "model.pt", "model.safetensors"], os.listdir(d)
print("written")
"#;

/// The framework writers on one store: a 1 GiB `shutil.copyfile`, a 64 MiB `dd`.
fn framework_writers_on(kind: Kind, big: &[u8], small: &tempfile::NamedTempFile) {
    let (_em, b) = checkpoint_store(kind);
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    let src = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(src.path(), big).expect("source");
    let t0 = std::time::Instant::now();
    let out = python(&m, WRITERS, &[&m.path("cp/ckpt"), src.path()]);
    assert!(out.contains("written"), "{out}\n{}", m.log());
    println!(
        "figures: {kind:?}: the framework writers and a 1 GiB copyfile took {:?}",
        t0.elapsed()
    );
    drop(src);

    // dd with conv=fsync: durable in the store when dd returns.
    let dd = std::process::Command::new("dd")
        .arg(format!("if={}", small.path().display()))
        .arg(format!("of={}", m.path("cp/ckpt/run/dd.bin").display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .status()
        .expect("dd");
    assert!(dd.success(), "{}", m.log());

    let mut digests: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    digests.push((
        "dd.bin".into(),
        sha256(&std::fs::read(small.path()).expect("dd source")),
    ));
    assert_eq!(
        digests
            .iter()
            .find(|(n, _)| n == "big.bin")
            .map(|(_, d)| d.as_str()),
        Some(sha256(big).as_str())
    );
    let second = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    for (name, digest) in &digests {
        let key = format!("ckpt/run/{name}");
        assert_eq!(
            &sha256(&store_bytes(&b, &key)),
            digest,
            "{kind:?} {name}: store API"
        );
        let again = std::fs::read(second.path(&format!("cp/{key}"))).expect("second mount");
        assert_eq!(&sha256(&again), digest, "{kind:?} {name}: second mount");
        let here = std::fs::read(m.path(&format!("cp/{key}"))).expect("this mount");
        assert_eq!(&sha256(&here), digest, "{kind:?} {name}: this mount");
    }
    // No temporary name was left in the store.
    let rt = runtime();
    let backend = Backend::build(&b).expect("backend");
    let page = rt
        .block_on(backend.list_page("ckpt/run", None, None))
        .expect("list");
    let mut names: Vec<&str> = page.objects.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "arrays.npz",
            "big.bin",
            "dd.bin",
            "model.pt",
            "model.safetensors"
        ],
        "{kind:?}"
    );
}

/// On each store in turn (one at a time: each holds a few GiB on the disk while it runs).
#[test]
fn framework_writers_leave_identical_objects_on_every_store() {
    let big = random_bytes(1 << 30, 9);
    let small = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(small.path(), random_bytes(64 << 20, 10)).expect("dd source");
    for kind in [Kind::Azurite, Kind::Moto, Kind::Gcs] {
        framework_writers_on(kind, &big, &small);
    }
}

/// Outside the writable prefixes nothing changes (`EROFS`); a name that exists is not
/// replaced (`EEXIST`), by a create or by a rename.
#[test]
fn writes_outside_writable_prefixes_are_erofs_and_names_are_create_only() {
    let data = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(data.path().join("ckpt")).expect("mkdir");
    std::fs::create_dir_all(data.path().join("train")).expect("mkdir");
    std::fs::write(data.path().join("ckpt/taken.pt"), b"theirs").expect("write");
    std::fs::write(data.path().join("train/a.bin"), b"data").expect("write");
    let b = writable(warpdrive_testkit::local_backend("ds", data.path()));
    let m = Mount::start(std::slice::from_ref(&b), "");
    let erofs = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs("create", std::fs::write(m.path("ds/train/new.bin"), b"x"));
    erofs("mkdir", std::fs::create_dir(m.path("ds/train/sub")));
    erofs("unlink", std::fs::remove_file(m.path("ds/train/a.bin")));
    erofs(
        "rename out of the prefix",
        std::fs::rename(m.path("ds/train/a.bin"), m.path("ds/ckpt/a.bin")),
    );
    let e = std::fs::write(m.path("ds/ckpt/taken.pt"), b"mine").expect_err("create over");
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    std::fs::write(m.path("ds/ckpt/new.pt"), b"mine").expect("a new name");
    let e = std::fs::rename(m.path("ds/ckpt/new.pt"), m.path("ds/ckpt/taken.pt"))
        .expect_err("rename over");
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    assert_eq!(
        std::fs::read(data.path().join("ckpt/taken.pt")).expect("kept"),
        b"theirs"
    );
    assert_eq!(
        std::fs::read(data.path().join("ckpt/new.pt")).expect("new"),
        b"mine"
    );
    assert_eq!(
        std::fs::read(data.path().join("train/a.bin")).expect("kept"),
        b"data"
    );
}

/// While a large file is written, a second mount and a direct listing see nothing under its
/// name; after its close they see the whole object.
#[test]
fn a_file_is_invisible_until_its_close() {
    let (_em, b) = checkpoint_store(Kind::Azurite);
    let m = Mount::start(std::slice::from_ref(&b), "");
    let other = Mount::start(
        std::slice::from_ref(&b),
        "metadata_ttl: 1s\nnegative_ttl: 0s\n",
    );
    std::fs::create_dir(m.path("cp/ckpt")).expect("mkdir");
    let sync = tempfile::tempdir().expect("tmp");
    let (half, go) = (sync.path().join("half"), sync.path().join("go"));
    let size: usize = 1 << 30;
    let script = r#"
import os, sys, time
path, half, go, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
chunk = os.urandom(1 << 20)
with open(path, "wb") as f:
    for i in range(size >> 20):
        f.write(chunk)
        if i == (size >> 21):
            f.flush()
            open(half, "w").close()
            while not os.path.exists(go):
                time.sleep(0.02)
print("closed")
"#;
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.path("cp/ckpt/big.bin"))
        .arg(&half)
        .arg(&go)
        .arg(size.to_string())
        .spawn()
        .expect("writer");
    wait_for_marker(&m, &mut writer, &half, 120);
    let rt = runtime();
    let backend = Backend::build(&b).expect("backend");
    assert!(matches!(
        rt.block_on(backend.head("ckpt/big.bin")),
        Err(warpdrive_store::StoreError::NotFound { .. })
    ));
    let listed = rt
        .block_on(backend.list_page("ckpt", None, None))
        .map(|p| p.objects.len())
        .unwrap_or(0);
    assert_eq!(listed, 0, "a direct listing sees nothing");
    assert!(std::fs::metadata(other.path("cp/ckpt/big.bin")).is_err());
    let names: Vec<String> = std::fs::read_dir(m.path("cp"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["ckpt"],
        "the directory made here is listed; the file is not yet"
    );
    let (_, status, _) = ctl_any(&m, &["status"]);
    assert!(status.contains("writing     cp/ckpt/big.bin"), "{status}");
    std::fs::write(&go, b"").expect("go");
    let status = writer.wait().expect("wait");
    assert!(status.success(), "{}", m.log());
    let head = rt
        .block_on(backend.head("ckpt/big.bin"))
        .expect("committed");
    assert_eq!(head.size, size as u64);
    let t0 = std::time::Instant::now();
    loop {
        match std::fs::metadata(other.path("cp/ckpt/big.bin")) {
            Ok(md) => {
                assert_eq!(md.len(), size as u64, "the whole object");
                break;
            }
            Err(e) => assert!(t0.elapsed().as_secs() < 10, "never visible: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A daemon killed mid-write leaves no object under the name (its upload was never
/// completed), and the mount restarts clean.
#[test]
fn a_daemon_killed_mid_write_leaves_no_object() {
    let (_em, b) = checkpoint_store(Kind::Azurite);
    let mut m = Mount::start(std::slice::from_ref(&b), "");
    std::fs::create_dir(m.path("cp/ckpt")).expect("mkdir");
    let sync = tempfile::tempdir().expect("tmp");
    let half = sync.path().join("half");
    let script = r#"
import os, sys, time
path, half = sys.argv[1], sys.argv[2]
chunk = os.urandom(1 << 20)
f = open(path, "wb")
for i in range(64):
    f.write(chunk)
f.flush()
open(half, "w").close()
time.sleep(60)
"#;
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.path("cp/ckpt/killed.bin"))
        .arg(&half)
        .spawn()
        .expect("writer");
    wait_for_marker(&m, &mut writer, &half, 60);
    let spool = m.dir.path().join("cache/writes");
    assert_eq!(
        std::fs::read_dir(&spool).expect("spool").count(),
        1,
        "spooled"
    );
    m.stop_with(libc::SIGKILL);
    let _ = writer.kill();
    let _ = writer.wait();
    let rt = runtime();
    let backend = Backend::build(&b).expect("backend");
    assert!(matches!(
        rt.block_on(backend.head("ckpt/killed.bin")),
        Err(warpdrive_store::StoreError::NotFound { .. })
    ));
    m.spawn();
    assert_eq!(
        std::fs::read_dir(&spool).expect("spool").count(),
        0,
        "the restart removed the spool of the write never committed"
    );
    // An empty directory made by mkdir lives in the daemon that made it (doc/SEMANTICS.md).
    std::fs::create_dir_all(m.path("cp/ckpt")).expect("mkdir again");
    std::fs::write(m.path("cp/ckpt/after.bin"), b"fine").expect("writes work again");
    assert_eq!(store_bytes(&b, "ckpt/after.bin"), b"fine");
    assert!(std::fs::metadata(m.path("cp/ckpt/killed.bin")).is_err());
}

/// A store that fails while files are written: a burst of throttling and server errors is
/// ridden out (the parts are retried and the object commits whole); a store that keeps
/// failing past `retry.deadline` fails the writer with `EIO` and leaves no object.
#[test]
fn upload_faults_are_retried_or_reported_never_a_corrupt_object() {
    let (em, direct) = checkpoint_store(Kind::Azurite);
    let proxy = warpdrive_testkit::DelayProxy::counting(em.port).expect("proxy");
    let b = writable(warpdrive_testkit::emulator_backend(
        Kind::Azurite,
        &em.endpoint_via(proxy.port),
        "cp",
        "ckpts",
        "",
    ));
    let m = Mount::start(
        std::slice::from_ref(&b),
        "retry: { deadline: 8s, unreachable: 8s }\n",
    );
    std::fs::create_dir(m.path("cp/ckpt")).expect("mkdir");
    let data = random_bytes(96 << 20, 11);
    // A burst while the parts go up: every request fails for 1.5 s.
    let mut f = std::fs::File::create(m.path("cp/ckpt/bursty.bin")).expect("create");
    for (i, c) in data.chunks(1 << 20).enumerate() {
        if i == 20 {
            proxy.throttle_for(std::time::Duration::from_millis(1500), &[503, 500], None);
        }
        std::io::Write::write_all(&mut f, c)
            .unwrap_or_else(|e| panic!("write through the burst: {e}\n{}", m.log()));
    }
    f.sync_all()
        .unwrap_or_else(|e| panic!("commit after the burst: {e}\n{}", m.log()));
    drop(f);
    assert_eq!(
        sha256(&store_bytes(&direct, "ckpt/bursty.bin")),
        sha256(&data)
    );
    let (s, _) = scrape(&m);
    let retried: f64 = ["throttled", "server"]
        .iter()
        .map(|r| value(&s, "warpdrive_backend_retries_total", &[("reason", r)]))
        .sum();
    println!(
        "figures: a 1.5 s burst of 503/500 during a 96 MiB write: {} requests refused, {retried} retries, the object whole",
        proxy
            .stats
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(retried > 0.0, "the parts were retried");

    // A store failing for longer than retry.deadline: the writer gets EIO, nothing is made.
    let mut f = std::fs::File::create(m.path("cp/ckpt/doomed.bin")).expect("create");
    proxy.throttle_for(std::time::Duration::from_secs(30), &[500], None);
    let mut failed = None;
    for c in data.chunks(1 << 20) {
        if let Err(e) = std::io::Write::write_all(&mut f, c) {
            failed = Some(e);
            break;
        }
    }
    let closed = f.sync_all();
    drop(f);
    let e = failed
        .or(closed.err())
        .expect("the writer hears of the failure");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    proxy.throttle_for(std::time::Duration::ZERO, &[500], None);
    let rt = runtime();
    let backend = Backend::build(&direct).expect("backend");
    assert!(matches!(
        rt.block_on(backend.head("ckpt/doomed.bin")),
        Err(warpdrive_store::StoreError::NotFound { .. })
    ));
    assert!(m.log().contains("could not be committed") || m.log().contains("a write failed"));
}

/// Eight writers of 512 MiB at once: the parts in flight stay within the upload memory
/// budget, so the daemon's peak RSS stays near its idle size plus the budget.
#[test]
fn many_writers_at_once_stay_within_the_memory_budget() {
    let (_em, b) = checkpoint_store(Kind::Azurite);
    let m = Mount::start(std::slice::from_ref(&b), "");
    std::fs::create_dir(m.path("cp/ckpt")).expect("mkdir");
    let rss = |what: &str| common::rss(m.pid(), what);
    let idle = rss("VmRSS:");
    let size = 512usize << 20;
    common::write_at_once(
        (0..8)
            .map(|i| m.path(&format!("cp/ckpt/w{i}.bin")))
            .collect(),
        size >> 20,
    );
    let peak = rss("VmHWM:");
    let budget = warpdrive_fs::core::WRITE_MEMORY;
    println!(
        "figures: 8 writers x 512 MiB: daemon RSS idle {} MiB, peak {} MiB (upload budget {} MiB)",
        idle >> 20,
        peak >> 20,
        budget >> 20
    );
    assert!(
        peak < idle + budget + (128 << 20),
        "peak RSS {} MiB is past idle + budget + 128 MiB",
        peak >> 20
    );
    for i in 0..8u64 {
        let md = std::fs::metadata(m.path(&format!("cp/ckpt/w{i}.bin"))).expect("committed");
        assert_eq!(md.len(), size as u64);
    }
}

/// A cache disk below `cache.min_free` refuses a new file at its creation with `ENOSPC`
/// (rather than failing when its spool fills the disk); reads go on.
#[test]
fn a_cache_disk_below_its_floor_refuses_new_files_at_creation() {
    let data = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(data.path().join("ckpt")).expect("mkdir");
    std::fs::write(data.path().join("ckpt/old.pt"), b"kept").expect("write");
    let b = writable(warpdrive_testkit::local_backend("ds", data.path()));
    // A floor of 99 % of the disk: no disk here has that much free.
    let m = Mount::start_with_cache(
        std::slice::from_ref(&b),
        "",
        "max_size: 1GiB, min_free: 99%",
    );
    let e = std::fs::write(m.path("ds/ckpt/new.pt"), b"x").expect_err("refused");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(!data.path().join("ckpt/new.pt").exists());
    assert_eq!(
        std::fs::read(m.path("ds/ckpt/old.pt")).expect("read"),
        b"kept"
    );
    assert!(m.log().contains("cache.min_free"), "the refusal is logged");
}
