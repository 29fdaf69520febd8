//! Loose-file datasets through a real mount: a loader opens each file by its path in class
//! directories it never lists. Cold, each directory costs one listing and each file one GET,
//! with no HEAD; warm within the TTL, nothing at all.

mod common;

use std::sync::Arc;

use common::{Mount, drop_page_cache, runtime, scrape, sha256, value};
use warpdrive_testkit::{Emulator, Kind, random_bytes, shuffled, upload_many};

const CLASSES: usize = 10;
const PER_CLASS: usize = 100;

/// Opens and reads every file from `threads` threads, checking each file's bytes.
fn read_by_path(m: &Mount, files: &[(String, String)], threads: usize) {
    let files = Arc::new(files.to_vec());
    std::thread::scope(|s| {
        for t in 0..threads {
            let files = files.clone();
            s.spawn(move || {
                for (rel, digest) in files.iter().skip(t).step_by(threads) {
                    let got = std::fs::read(m.path(rel))
                        .unwrap_or_else(|e| panic!("{rel}: {e}\n{}", m.log()));
                    assert_eq!(&sha256(&got), digest, "{rel}");
                }
            });
        }
    });
}

/// Backend requests so far: (list, head, get).
fn requests(m: &Mount) -> (f64, f64, f64) {
    let (s, _) = scrape(m);
    let op = |op| value(&s, "warpdrive_backend_requests_total", &[("op", op)]);
    (op("list"), op("head"), op("get"))
}

#[test]
fn files_opened_by_path_cost_one_listing_per_directory_and_one_get_each() {
    let rt = runtime();
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("imgs").expect("container");
    let b = az.backend("imgs", "imgs", "");
    let mut objects = Vec::new();
    let mut files = Vec::new();
    for c in 0..CLASSES {
        for i in 0..PER_CLASS {
            let key = format!("train/n{c:08}/img_{i:05}.jpg");
            let data = random_bytes(8_000 + (i * 97) % 20_000, (c * PER_CLASS + i) as u64);
            files.push((format!("imgs/{key}"), sha256(&data)));
            objects.push((key, data));
        }
    }
    rt.block_on(upload_many(&b, objects, 16)).expect("upload");
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    let n = files.len() as f64;
    // The daemon probes each backend with a one-key listing at start, in the background.
    let t0 = std::time::Instant::now();
    while requests(&m).0 < 1.0 {
        assert!(
            t0.elapsed().as_secs() < 30,
            "no start-up probe\n{}",
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let before = requests(&m);
    read_by_path(&m, &shuffled(files.clone(), 42), 16);
    let cold = requests(&m);
    let (list, head, get) = (cold.0 - before.0, cold.1 - before.1, cold.2 - before.2);
    let (s, _) = scrape(&m);
    let answers = |a| value(&s, "warpdrive_backend_lookups_total", &[("answer", a)]);
    println!(
        "figures: cold, {n} files in {CLASSES} directories opened by path from 16 threads: {list} LIST, {head} HEAD, {get} GET ({:.3} requests per file); lookups known {}, listing {}, store {}; listing pages for lookups {}",
        (list + head + get) / n,
        answers("known"),
        answers("listing"),
        answers("store"),
        value(&s, "warpdrive_backend_lookup_listing_pages_total", &[]),
    );
    assert_eq!(head, 0.0, "no HEAD: names and sizes come from the listings");
    // imgs/, imgs/train and the class directories: one listing (a page) each.
    assert!(
        list <= (CLASSES + 2) as f64,
        "{list} LIST for {CLASSES} class directories"
    );
    assert!(get <= n * 1.05, "{get} GET for {n} files");
    assert_eq!(answers("store"), 0.0);

    // Warm, within the TTL: the bytes come from the cache, and the kernel still holds every
    // name (its entry TTL is what is left of the daemon's 10 minutes), so it sends no
    // `lookup`, and no `flush` either (answered `ENOSYS` once, in the cold epoch).
    drop_page_cache();
    let fuse = |op| {
        value(
            &scrape(&m).0,
            "warpdrive_fuse_operations_total",
            &[("op", op)],
        )
    };
    let before = requests(&m);
    let ops = [fuse("lookup"), fuse("flush"), fuse("open")];
    read_by_path(&m, &shuffled(files, 7), 16);
    let warm = requests(&m);
    assert_eq!(
        (warm.0 - before.0, warm.1 - before.1, warm.2 - before.2),
        (0.0, 0.0, 0.0),
        "a warm epoch within the TTL asks the store nothing"
    );
    let ops = [
        fuse("lookup") - ops[0],
        fuse("flush") - ops[1],
        fuse("open") - ops[2],
    ];
    println!(
        "figures: warm, FUSE requests: {} lookup, {} flush, {} open for {n} files",
        ops[0], ops[1], ops[2]
    );
    assert_eq!(ops[..2], [0.0, 0.0], "warm: no lookup, no flush");
    assert_eq!(ops[2], n, "one open per file");
}

/// Runs `warpdrive-forge train` on the file list `list` and returns its summary.
fn forge_train(list: &std::path::Path, summary: &std::path::Path) -> serde_json::Value {
    let forge = common::forge();
    let out = std::process::Command::new(&forge)
        .arg("train")
        .arg("--files")
        .arg(list)
        .args(["--steps", "30", "--batch-size", "16", "--num-workers", "4"])
        .arg("--summary")
        .arg(summary)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", forge.display()));
    assert!(
        out.status.success(),
        "forge train: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("step=30 images_per_sec="), "{stdout}");
    serde_json::from_slice(&std::fs::read(summary).expect("summary")).expect("summary JSON")
}

/// forge in file mode trains on the same batches with the same losses cold through the
/// mount, warm through it (fetching nothing), and on a local copy of the tree.
#[test]
fn forge_on_loose_files_is_the_same_computation_cold_warm_and_local() {
    let rt = runtime();
    let local = tempfile::tempdir().expect("tempdir");
    common::forge_gen(&["--layout", "files", "--files", "400"], local.path());
    let list = local.path().join("files.txt");
    let mut objects = vec![("files.txt".to_string(), std::fs::read(&list).expect("list"))];
    for rel in std::fs::read_to_string(&list).expect("list").lines() {
        objects.push((
            rel.to_string(),
            std::fs::read(local.path().join(rel)).expect("file"),
        ));
    }
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("imgs").expect("container");
    let b = az.backend("imgs", "imgs", "");
    rt.block_on(upload_many(&b, objects, 16)).expect("upload");
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 10m\n");
    let runs = tempfile::tempdir().expect("tempdir");
    let cold = forge_train(&m.path("imgs/files.txt"), &runs.path().join("cold.json"));
    let before = requests(&m);
    drop_page_cache();
    let warm = forge_train(&m.path("imgs/files.txt"), &runs.path().join("warm.json"));
    let after = requests(&m);
    let copy = forge_train(&list, &runs.path().join("local.json"));
    for (name, run) in [("warm", &warm), ("local", &copy)] {
        assert_eq!(run["batch_digest"], cold["batch_digest"], "{name}");
        assert_eq!(run["losses"], cold["losses"], "{name}");
        assert_eq!(run["bytes_read"], cold["bytes_read"], "{name}");
    }
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (0.0, 0.0, 0.0),
        "the warm run asked the store nothing"
    );
    println!(
        "figures: forge on 400 loose files: batch digest {} cold, warm and local; final loss {}",
        cold["batch_digest"], cold["final_loss"]
    );
}

/// `fuse.zero_message_opens`: the kernel opens files without asking the daemon, so a warm
/// epoch costs the daemon no request at all (the first opens of the session are answered
/// `ENOSYS`, and none is sent after that); reads the page cache misses are served from the block cache by inode; and a
/// file replaced on the store is read whole in its new version once the TTL has passed,
/// while a descriptor opened on the old version never reads a byte of the new one.
#[test]
fn zero_message_opens_cost_a_warm_file_no_daemon_request() {
    let rt = runtime();
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("imgs").expect("container");
    let b = az.backend("imgs", "imgs", "");
    let mut objects = Vec::new();
    let mut files = Vec::new();
    for i in 0..300 {
        let key = format!("train/n{:08}/img_{i:05}.jpg", i % 3);
        let data = random_bytes(8_000 + (i * 97) % 200_000, i as u64);
        files.push((format!("imgs/{key}"), sha256(&data)));
        objects.push((key, data));
    }
    let v1 = random_bytes(300_000, 1000);
    objects.push(("swap/f.bin".to_string(), v1.clone()));
    rt.block_on(upload_many(&b, objects, 16)).expect("upload");
    let m = Mount::start(
        std::slice::from_ref(&b),
        "metadata_ttl: 1s\nfuse: { zero_message_opens: true }\n",
    );
    let fuse = |op| {
        value(
            &scrape(&m).0,
            "warpdrive_fuse_operations_total",
            &[("op", op)],
        )
    };

    read_by_path(&m, &shuffled(files.clone(), 42), 16);
    // Only the opens sent before the first `ENOSYS` came back (at most one per reader).
    let (opens, reads) = (fuse("open"), fuse("read"));
    assert!(
        opens <= 16.0,
        "{opens} opens: the kernel opens files itself"
    );
    assert!(reads >= files.len() as f64, "cold reads reach the daemon");
    // Warm, page cache warm: no open, no release, no read reaches the daemon.
    let before = [fuse("open"), fuse("release"), fuse("read")];
    read_by_path(&m, &shuffled(files.clone(), 7), 16);
    let after = [fuse("open"), fuse("release"), fuse("read")];
    println!(
        "figures: zero-message opens, {} files warm: {} open, {} release, {} read requests (session total: {} open)",
        files.len(),
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        after[0]
    );
    assert_eq!(before, after, "a warm file costs the daemon no request");
    // Page cache dropped: the reads come to the daemon with file handle 0 and are served
    // from the block cache.
    drop_page_cache();
    let gets = requests(&m).2;
    read_by_path(&m, &shuffled(files, 9), 16);
    assert_eq!(requests(&m).2, gets, "served from the block cache");
    assert_eq!(fuse("open"), opens);

    // A file replaced on the store: the descriptor open on the old version reads only old
    // bytes (or ESTALE); a new open by path, once the TTL has passed, reads the new version.
    use std::io::{Read, Seek, SeekFrom};
    let path = m.path("imgs/swap/f.bin");
    let mut old = std::fs::File::open(&path).expect("open");
    let mut head = vec![0u8; 4096];
    old.read_exact(&mut head).expect("read v1");
    assert_eq!(head[..], v1[..4096]);
    let v2 = random_bytes(200_000, 2000);
    rt.block_on(upload_many(
        &b,
        vec![("swap/f.bin".to_string(), v2.clone())],
        1,
    ))
    .expect("overwrite");
    drop_page_cache();
    let t0 = std::time::Instant::now();
    loop {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the new version was never read\n{}",
            m.log()
        );
        match std::fs::read(&path) {
            Ok(got) if got == v2 => break,
            Ok(got) => assert!(got == v1, "a new open read bytes of neither version"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!(
        "figures: zero-message opens: the replaced file was read whole in its new version {:?} after the overwrite (TTL 1s)",
        t0.elapsed()
    );
    for at in [8192u64, 150_000, 290_000] {
        let mut buf = vec![0u8; 4096];
        old.seek(SeekFrom::Start(at)).expect("seek");
        match old.read(&mut buf) {
            Ok(n) => assert!(
                buf[..n] == v1[at as usize..at as usize + n],
                "the old descriptor read other bytes at {at}"
            ),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
        }
    }
}
