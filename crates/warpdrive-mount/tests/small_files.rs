//! Loose-file datasets through a real mount: a loader opens each file by its path in class
//! directories it never lists. Cold, each directory costs one listing and each file one GET,
//! with no HEAD; warm within the TTL, nothing at all.

mod common;

use std::sync::Arc;

use common::{Mount, drop_page_cache, runtime, scrape, sha256, value};
use warpdrive_testkit::{Emulator, Kind, random_bytes, upload_many};

const CLASSES: usize = 10;
const PER_CLASS: usize = 100;

/// A deterministic shuffle (xorshift), so every run opens files in the same order.
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed.max(1);
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

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

    // Warm, within the TTL: the kernel asks again (its entry TTL is short) and the daemon
    // answers from what it knows; the bytes come from the cache.
    drop_page_cache();
    let before = requests(&m);
    read_by_path(&m, &shuffled(files, 7), 16);
    let warm = requests(&m);
    assert_eq!(
        (warm.0 - before.0, warm.1 - before.1, warm.2 - before.2),
        (0.0, 0.0, 0.0),
        "a warm epoch within the TTL asks the store nothing"
    );
}
