//! The control plane against a live mount: the daemon's socket, `warm`, `evict`, `verify`
//! and `serve`, with the bytes each moves counted at a proxy in front of the store.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{Mount, ctl, ctl_any, ctl_command, runtime, sha256};
use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend, random_bytes, upload_many};

const MIB: usize = 1 << 20;

fn seeded(bucket: &str, objects: &[(String, Vec<u8>)], delay: Duration) -> (Emulator, DelayProxy) {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket(bucket).expect("bucket");
    let direct = s3.backend("direct", bucket, "");
    runtime()
        .block_on(upload_many(&direct, objects.to_vec(), 4))
        .expect("upload");
    let proxy = if delay.is_zero() {
        DelayProxy::counting(s3.port)
    } else {
        DelayProxy::start(s3.port, delay)
    }
    .expect("proxy");
    (s3, proxy)
}

fn mount_via(proxy: &DelayProxy, bucket: &str) -> Mount {
    let b = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s3",
        bucket,
        "",
    );
    Mount::start(std::slice::from_ref(&b), "fuse: { passthrough: off }\n")
}

fn fetched(proxy: &DelayProxy) -> u64 {
    proxy.stats.data_reads().1
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn dataset() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("ds/part-{i}.bin"),
                random_bytes(MIB + 1000 * i, 100 + i as u64),
            )
        })
        .collect();
    v.push(("ds/sub/big.bin".into(), random_bytes(5 * MIB + 3, 120)));
    v.push(("other/x.bin".into(), random_bytes(MIB / 2, 121)));
    v
}

#[test]
fn warm_evict_and_verify_through_the_daemon() {
    let objects = dataset();
    let (_s3, proxy) = seeded("ctl", &objects, Duration::ZERO);
    let m = mount_via(&proxy, "ctl");

    // The daemon's socket is private to its user.
    let sock = m.cache_dir().join("control.sock");
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Warm one directory level: only the files directly in ds/.
    let ds_top: u64 = objects
        .iter()
        .filter(|(k, _)| k.starts_with("ds/part"))
        .map(|(_, d)| d.len() as u64)
        .sum();
    let before = fetched(&proxy);
    let j = json(&ctl(
        &m,
        &[
            "warm",
            "--json",
            &format!("{}/s3/ds", m.mount_point.display()),
        ],
    ));
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["objects_total"], 6, "{j}");
    assert_eq!(j["bytes_fetched"], ds_top, "{j}");
    assert_eq!(
        fetched(&proxy) - before,
        ds_top,
        "the store saw what the job reports"
    );

    // Recursive: the rest of ds/ (the top level is skipped, already cached).
    let ds_all: u64 = objects
        .iter()
        .filter(|(k, _)| k.starts_with("ds/"))
        .map(|(_, d)| d.len() as u64)
        .sum();
    let before = fetched(&proxy);
    let j = json(&ctl(&m, &["warm", "--json", "--recursive", "wd://s3/ds"]));
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["objects_total"], 7, "{j}");
    assert_eq!(j["objects_skipped"], 6, "{j}");
    assert_eq!(j["bytes_done"], ds_all, "{j}");
    assert_eq!(fetched(&proxy) - before, ds_all - ds_top, "{j}");

    // Reading the warmed directory through the mount fetches nothing.
    let before = fetched(&proxy);
    for (k, d) in objects.iter().filter(|(k, _)| k.starts_with("ds/")) {
        let got = std::fs::read(m.path(&format!("s3/{k}"))).expect("read");
        assert_eq!(sha256(&got), sha256(d), "{k}");
    }
    assert_eq!(
        fetched(&proxy) - before,
        0,
        "warm reads fetch 0 backend bytes"
    );

    // stats, through the socket, agree with the index and the bytes on disk.
    let s = json(&ctl(&m, &["stats", "--json"]));
    assert_eq!(s["objects"], 7, "{s}");
    assert_eq!(s["bytes"], ds_all, "{s}");
    let blocks = warpdrive_cache::read_index_blocks(&m.cache_dir()).expect("index");
    assert_eq!(blocks.iter().map(|b| b.len).sum::<u64>(), ds_all);

    // verify: damage one block behind the daemon's back; it is found and dropped.
    let victim = blocks
        .iter()
        .find(|b| b.key == "ds/sub/big.bin" && b.offset == 2 * MIB as u64)
        .expect("block 2 of big.bin cached");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim.path)
        .expect("data file");
    f.write_all_at(b"rot", victim.offset + 12345)
        .expect("damage");
    let (code, out, err) = ctl_any(&m, &["verify", "--json"]);
    assert_eq!(code, Some(1), "damage found: {out} {err}");
    let v = json(&out);
    assert_eq!(v["damaged_blocks"], 1, "{v}");
    assert_eq!(v["objects"], 7, "{v}");
    assert_eq!(v["bytes"], ds_all, "{v}");
    assert_eq!(v["damaged"][0]["key"], "ds/sub/big.bin", "{v}");
    let text = ctl(&m, &["verify"]);
    assert!(
        text.contains("all sound"),
        "dropped, so the second pass is clean: {text}"
    );
    // The dropped block is fetched again on read, and only it.
    common::drop_page_cache();
    let before = fetched(&proxy);
    let big = &objects
        .iter()
        .find(|(k, _)| k == "ds/sub/big.bin")
        .expect("big")
        .1;
    assert_eq!(
        sha256(&std::fs::read(m.path("s3/ds/sub/big.bin")).expect("read")),
        sha256(big)
    );
    assert_eq!(fetched(&proxy) - before, MIB as u64, "one block refetched");
    std::thread::sleep(Duration::from_millis(300));

    // evict by path: a dry run changes nothing; the real one frees exactly that.
    let big_len = big.len() as u64;
    let dry = json(&ctl(
        &m,
        &["evict", "--json", "--dry-run", "wd://s3/ds/sub"],
    ));
    assert_eq!(dry["objects"], 1, "{dry}");
    assert_eq!(dry["bytes"], big_len, "{dry}");
    assert_eq!(json(&ctl(&m, &["stats", "--json"]))["objects"], 7);
    let ev = json(&ctl(&m, &["evict", "--json", "wd://s3/ds/sub"]));
    assert_eq!(ev["bytes"], big_len, "{ev}");
    let s = json(&ctl(&m, &["stats", "--json"]));
    assert_eq!(s["objects"], 6, "{s}");
    assert_eq!(s["bytes"], ds_all - big_len, "{s}");
    let on_disk: u64 = warpdrive_cache::read_index_blocks(&m.cache_dir())
        .expect("index")
        .iter()
        .map(|b| b.len)
        .sum();
    assert_eq!(on_disk, ds_all - big_len);
    // Readers of evicted data just fetch it again.
    common::drop_page_cache();
    let before = fetched(&proxy);
    assert_eq!(
        sha256(&std::fs::read(m.path("s3/ds/sub/big.bin")).expect("read")),
        sha256(big)
    );
    assert_eq!(fetched(&proxy) - before, big_len);
    // The table says what the JSON says.
    let table = ctl(&m, &["evict", "--dry-run", "--older-than", "0s"]);
    let j = json(&ctl(
        &m,
        &["evict", "--json", "--dry-run", "--older-than", "0s"],
    ));
    assert!(
        table.contains(&format!("in {} objects", j["objects"])),
        "{table} vs {j}"
    );
    // Without a narrowing argument, evict refuses to empty the cache.
    let (code, _, err) = ctl_any(&m, &["evict"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--all"), "{err}");

    // Every command's table says what its JSON says.
    let s = json(&ctl(&m, &["stats", "--json"]));
    let t = ctl(&m, &["stats"]);
    assert!(
        t.contains(&format!("objects    {}\n", s["objects"])),
        "{t}\n{s}"
    );
    assert!(
        t.contains(&format!("blocks     {}\n", s["blocks"])),
        "{t}\n{s}"
    );
    let st = json(&ctl(&m, &["stale", "--json", "--older-than", "0s"]));
    let t = ctl(&m, &["stale", "--older-than", "0s"]);
    let n = st["objects"].as_array().expect("objects").len();
    assert_eq!(
        t.lines().count(),
        n + 2,
        "header, one line per object, summary: {t}"
    );
    assert!(t.contains(&format!("{n} objects not read")), "{t}");
    let v = json(&ctl(&m, &["verify", "--json"]));
    let t = ctl(&m, &["verify"]);
    assert!(
        t.contains(&format!(
            "in {} blocks of {} objects",
            v["blocks"], v["objects"]
        )),
        "{t}\n{v}"
    );
    ctl(
        &m,
        &["quota", "set", "ds", "--path", "s3/ds", "--max", "1GiB"],
    );
    let q = json(&ctl(&m, &["quota", "list", "--json"]));
    let t = ctl(&m, &["quota", "list"]);
    let row = t.lines().nth(1).expect("one team");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "ds");
    assert_eq!(cols[6], q[0]["objects"].to_string(), "{t}\n{q}");

    // status reports the daemon and a sound index.
    let st = json(&ctl(&m, &["status", "--json"]));
    assert_eq!(st["daemon"]["pid"], m.pid(), "{st}");
    assert_eq!(st["daemon"]["quotas"][0]["team"], "ds", "{st}");
    let text = ctl(&m, &["status"]);
    assert!(
        text.contains("quota       team ds:") && text.contains("within quota"),
        "{text}"
    );
    assert_eq!(st["cache"]["index_ok"], true, "{st}");
}

#[test]
fn interrupted_warm_resumes_without_refetching() {
    let objects: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("w/{i:02}.bin"), random_bytes(MIB + 7, 200 + i)))
        .collect();
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let (_s3, proxy) = seeded("warm", &objects, Duration::from_millis(150));
    let m = mount_via(&proxy, "warm");
    let before = fetched(&proxy);

    let mut child = ctl_command(&m, &["warm", "--json", "--parallel", "1", "wd://s3/w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn warm");
    // Interrupt once some, not all, objects are in.
    let t0 = Instant::now();
    while fetched(&proxy) - before < 2 * MIB as u64 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = common::wait_exit(&mut child, Duration::from_secs(30), "SIGINT");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(status.code(), Some(130), "{out}");
    let first = json(&out);
    assert_eq!(first["state"], "cancelled", "{first}");
    let got1 = first["bytes_fetched"].as_u64().expect("fetched");
    assert!(got1 > 0 && got1 < total, "interrupted part-way: {first}");

    let second = json(&ctl(&m, &["warm", "--json", "wd://s3/w"]));
    assert_eq!(second["state"], "done", "{second}");
    let got2 = second["bytes_fetched"].as_u64().expect("fetched");
    assert_eq!(
        got1 + got2,
        total,
        "nothing fetched twice: {first} {second}"
    );
    assert_eq!(fetched(&proxy) - before, total, "the store agrees");
    assert_eq!(second["bytes_done"], total, "{second}");
}

/// An HTTP/1.1 request by hand, with or without a token: the status code.
fn http_status(port: u16, path: &str, token: Option<&str>) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("read");
    r.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {r}"))
}

fn wait_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "nothing on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_requires_the_token_with_and_without_a_daemon() {
    let objects = vec![("a/b.bin".to_string(), random_bytes(MIB, 300))];
    let (_s3, proxy) = seeded("serve", &objects, Duration::ZERO);
    let mut m = mount_via(&proxy, "serve");
    std::fs::read(m.path("s3/a/b.bin")).expect("read");

    let token = "0123456789abcdef0123456789abcdef";
    let tf = m.dir.path().join("token");
    std::fs::write(&tf, token).expect("token");
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let port = warpdrive_testkit::free_port().expect("port");
    let listen = format!("127.0.0.1:{port}");
    let tfs = tf.display().to_string();
    let (code, _, err) = ctl_any(&m, &["serve", "--listen", &listen, "--token-file", &tfs]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("chmod 600"),
        "a token others can read is refused: {err}"
    );
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, _, err) = ctl_any(
        &m,
        &["serve", "--listen", "0.0.0.0:1", "--token-file", &tfs],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");

    let serve = |m: &Mount| {
        let mut c = ctl_command(m, &["serve", "--listen", &listen, "--token-file", &tfs])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve");
        wait_port(port);
        let statuses = (
            http_status(port, "/api/v1/stats", None),
            http_status(port, "/api/v1/stats", Some("wrong-token-wrong-token")),
            http_status(port, "/api/v1/stats", Some(token)),
        );
        let client = warpdrive_control::client::Client::tcp(&listen, token).expect("client");
        let stats: serde_json::Value = client.get("/api/v1/stats").expect("stats");
        // SAFETY: kill(2) on our own child has no memory effects.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        common::wait_exit(&mut c, Duration::from_secs(20), "SIGINT");
        (statuses, stats)
    };
    // Beside the daemon: forwarded to its socket.
    let ((none, wrong, right), stats) = serve(&m);
    assert_eq!((none, wrong, right), (401, 401, 200));
    assert_eq!(stats["objects"], 1, "{stats}");
    // Without a daemon: this process opens the cache itself.
    m.stop_with(libc::SIGTERM);
    let ((none, wrong, right), stats) = serve(&m);
    assert_eq!((none, wrong, right), (401, 401, 200));
    assert_eq!(stats["bytes"], MIB as u64, "{stats}");
}

/// Cached bytes per top-level directory, from the committed index, and allocated bytes of
/// those objects' data files on disk.
fn team_bytes(m: &Mount, dir: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    // Committed first: stats through the daemon flushes the index.
    ctl(m, &["stats", "--json"]);
    let blocks = warpdrive_cache::read_index_blocks(&m.cache_dir()).expect("index");
    let mine: Vec<_> = blocks
        .iter()
        .filter(|b| b.key.starts_with(&format!("{dir}/")))
        .collect();
    let files: std::collections::BTreeSet<_> = mine.iter().map(|b| b.path.clone()).collect();
    let on_disk = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |md| md.blocks() * 512))
        .sum();
    (mine.iter().map(|b| b.len).sum(), on_disk)
}

#[test]
fn team_quotas_hold_and_spare_teams_within_theirs() {
    let mut objects = Vec::new();
    for t in ["ta", "tb"] {
        for i in 0..8 {
            objects.push((
                format!("{t}/f{i}.bin"),
                random_bytes(MIB, 400 + i + if t == "ta" { 0 } else { 50 }),
            ));
        }
    }
    let (_s3, proxy) = seeded("teams", &objects, Duration::ZERO);
    let b = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s3",
        "teams",
        "",
    );
    // The cap (8 MiB) is less than the two quotas together (6 + 4 MiB).
    let mut m = Mount::start_with_cache(
        std::slice::from_ref(&b),
        "fuse: { passthrough: off }\n",
        "max_size: 8MiB, min_free: 0",
    );
    let q = json(&ctl(
        &m,
        &[
            "quota",
            "set",
            "a",
            "--path",
            "wd://s3/ta",
            "--max",
            "6MiB",
            "--json",
        ],
    ));
    assert_eq!(q[0]["max_bytes"], 6 * MIB as u64, "{q}");
    ctl(
        &m,
        &["quota", "set", "b", "--path", "s3/tb", "--max", "4MiB"],
    );
    let (code, _, err) = ctl_any(
        &m,
        &["quota", "set", "c", "--path", "s3/ta/x", "--max", "1MiB"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("overlaps"), "{err}");

    let quota = |t: &str| {
        if t == "ta" {
            6 * MIB as u64
        } else {
            4 * MIB as u64
        }
    };
    let read_dir = |m: &Mount, t: &str| {
        for i in 0..8 {
            let k = format!("{t}/f{i}.bin");
            let want = &objects.iter().find(|(n, _)| *n == k).expect("object").1;
            let got = std::fs::read(m.path(&format!("s3/{k}"))).expect("read");
            assert_eq!(sha256(&got), sha256(want), "{k}");
            std::thread::sleep(Duration::from_millis(100));
            let (idx, disk) = team_bytes(m, t);
            assert!(idx <= quota(t) + MIB as u64, "{t} holds {idx} after {k}");
            assert!(
                disk <= quota(t) + MIB as u64 + 64 * 1024,
                "{t} has {disk} bytes on disk after {k}"
            );
        }
    };
    read_dir(&m, "tb");
    let b_blocks = |m: &Mount| -> Vec<(String, u64)> {
        ctl(m, &["stats", "--json"]);
        let mut v: Vec<(String, u64)> = warpdrive_cache::read_index_blocks(&m.cache_dir())
            .expect("index")
            .into_iter()
            .filter(|b| b.key.starts_with("tb/"))
            .map(|b| (b.key, b.offset))
            .collect();
        v.sort();
        v
    };
    let b_before = b_blocks(&m);
    assert!(!b_before.is_empty());
    assert!(team_bytes(&m, "tb").0 <= quota("tb"), "b within its quota");
    // Team a reads more than its quota, against a full cache: b's data is spared.
    read_dir(&m, "ta");
    read_dir(&m, "ta");
    assert_eq!(b_blocks(&m), b_before, "a's reads never evicted b's data");
    let u = json(&ctl(&m, &["usage", "--by", "team", "--json"]));
    let row = |t: &str| {
        u["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no row {t}: {u}"))
    };
    assert_eq!(row("b")["quota_bytes"], 4 * MIB as u64, "{u}");
    assert_eq!(row("b")["bytes"], team_bytes(&m, "tb").0, "{u}");
    let table = ctl(&m, &["usage", "--by", "team"]);
    assert!(
        table
            .lines()
            .any(|l| l.ends_with("  b") && l.contains("4.0 MiB")),
        "{table}"
    );

    // Quotas persist across a restart; without a daemon ctl reads them from the cache dir.
    m.stop_with(libc::SIGTERM);
    let l = json(&ctl(&m, &["quota", "list", "--json"]));
    assert_eq!(l.as_array().expect("list").len(), 2, "{l}");
    m.spawn();
    let l = json(&ctl(&m, &["quota", "list", "--json"]));
    assert_eq!(l[1]["team"], "b", "{l}");
    assert_eq!(l[1]["used_bytes"], team_bytes(&m, "tb").0, "{l}");
    let st = json(&ctl(&m, &["status", "--json"]));
    assert_eq!(
        st["daemon"]["quotas"].as_array().expect("quotas").len(),
        2,
        "{st}"
    );
    ctl(&m, &["quota", "rm", "a"]);
    let l = json(&ctl(&m, &["quota", "list", "--json"]));
    assert_eq!(l.as_array().expect("list").len(), 1, "{l}");
}
