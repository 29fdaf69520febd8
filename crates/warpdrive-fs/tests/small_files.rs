//! Loose files over the in-memory store, without a kernel: what each lookup and read costs
//! the store. A loader opens files by path in directories it never lists; the mount answers
//! from what it knows, from one listing per directory per TTL, and from names known absent,
//! and fetches each small file with one GET.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use warpdrive_cache::{BlockIndex, ObjectId};
use warpdrive_config::MetadataTtl;
use warpdrive_fs::core::LOOKUP_LISTING_MAX;
use warpdrive_fs::{Fs, FsConfig, FsError, Ino, Kind};
use warpdrive_metrics::{BackendMetrics, LookupAnswer};
use warpdrive_store::memory::MemoryStore;
use warpdrive_store::{Backend, Store};
use warpdrive_testkit::shuffled;

struct Setup {
    mem: Arc<MemoryStore>,
    metrics: BackendMetrics,
    fs: Arc<Fs>,
    _cache_dir: Option<tempfile::TempDir>,
}

fn setup(mem: MemoryStore, ttl: MetadataTtl, negative_ttl: Duration) -> Setup {
    setup_with(mem, ttl, negative_ttl, false)
}

/// As [`setup`], with a block cache of 1 MiB blocks when `cached`.
fn setup_with(mem: MemoryStore, ttl: MetadataTtl, negative_ttl: Duration, cached: bool) -> Setup {
    let mem = Arc::new(mem);
    let metrics = BackendMetrics::detached("mem");
    let backend = Arc::new(Backend::with_store(
        &support::mem_config(),
        mem.clone() as Arc<dyn Store>,
        metrics.clone(),
    ));
    let (dir, cache) = match cached.then(support::temp_cache) {
        Some((d, c)) => (Some(d), Some(c)),
        None => (None, None),
    };
    let fs = Fs::new(
        FsConfig {
            negative_ttl,
            ..support::fs_config(ttl, 0)
        },
        vec![backend],
        cache,
    );
    Setup {
        mem,
        metrics,
        fs,
        _cache_dir: dir,
    }
}

/// (list, head, get) requests since `before`.
fn since(s: &Setup, before: (u64, u64, u64)) -> (u64, u64, u64) {
    let now = s.mem.counts.get();
    (now.0 - before.0, now.1 - before.1, now.2 - before.2)
}

/// Looks a path up component by component from the root, as the kernel does.
async fn lookup_path(fs: &Arc<Fs>, path: &str) -> Result<(Ino, Kind), FsError> {
    let mut ino = Ino::ROOT;
    let mut kind = Kind::Dir;
    for c in path.split('/') {
        let a = fs.lookup(ino, c).await?;
        (ino, kind) = (a.ino, a.kind);
    }
    Ok((ino, kind))
}

/// Looks every path up from `tasks` concurrent tasks; every one must resolve to a file.
async fn lookup_all(fs: &Arc<Fs>, paths: &[String], tasks: usize) {
    let paths = Arc::new(paths.to_vec());
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (fs, paths) = (fs.clone(), paths.clone());
        joins.push(tokio::spawn(async move {
            for p in paths.iter().skip(t).step_by(tasks) {
                let (_, kind) = lookup_path(&fs, p)
                    .await
                    .unwrap_or_else(|e| panic!("{p}: {e}"));
                assert_eq!(kind, Kind::File, "{p}");
            }
        }));
    }
    for j in joins {
        j.await.expect("lookup task");
    }
}

/// 1,000 files in 10 class directories, looked up by path in shuffled order from 16 tasks:
/// cold, one listing of the backend root and one of each class directory (a page each), no
/// HEAD; warm within the TTL, nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_in_unlisted_directories_cost_one_listing_each() {
    let mem = MemoryStore::new("mem");
    let mut paths = Vec::new();
    for c in 0..10 {
        for i in 0..100 {
            let key = format!("train/class{c:02}/img{i:04}.jpg");
            mem.put(&key, vec![c as u8; 100]);
            paths.push(format!("mem/{key}"));
        }
    }
    let s = setup(
        mem,
        MetadataTtl::For(Duration::from_secs(600)),
        Duration::from_secs(10),
    );
    let paths = shuffled(paths, 7);
    let before = s.mem.counts.get();
    lookup_all(&s.fs, &paths, 16).await;
    let (list, head, get) = since(&s, before);
    println!(
        "figures: 1,000 cold lookups in 10 unlisted directories: {list} LIST, {head} HEAD, {get} GET; answered known {}, listing {}, store {}; listing pages for lookups {}",
        s.metrics.lookups(LookupAnswer::Known),
        s.metrics.lookups(LookupAnswer::Listing),
        s.metrics.lookups(LookupAnswer::Store),
        s.metrics.lookup_listing_pages.get()
    );
    // mem/ (1 listing), mem/train (1), and 10 class directories.
    assert_eq!(
        head, 0,
        "no HEAD: every name came from its directory's listing"
    );
    assert_eq!(list, 12, "one listing per directory");
    assert_eq!(s.metrics.lookups(LookupAnswer::Store), 0);
    assert_eq!(s.metrics.lookup_listing_pages.get(), 12);

    let before = s.mem.counts.get();
    lookup_all(&s.fs, &shuffled(paths.clone(), 11), 16).await;
    assert_eq!(
        since(&s, before),
        (0, 0, 0),
        "a warm pass within the TTL asks nothing"
    );
}

/// With `metadata_ttl: indefinite`, opening and reading every file a second time costs no
/// request at all (the reads come from the cache).
#[tokio::test]
async fn an_indefinite_ttl_warm_epoch_sends_nothing() {
    let mem = MemoryStore::new("mem");
    let mut paths = Vec::new();
    for i in 0..50 {
        let key = format!("d/f{i:03}");
        mem.put(&key, vec![i as u8; 3000]);
        paths.push(format!("mem/{key}"));
    }
    let s = setup(mem, MetadataTtl::Indefinite, Duration::from_secs(10));
    let read_all = |fs: Arc<Fs>, paths: Vec<String>| async move {
        for p in &paths {
            let (ino, _) = lookup_path(&fs, p).await.expect("lookup");
            let o = fs.open(ino, false).await.expect("open");
            let got = fs.read(o.fh, 0, 1 << 20).await.expect("read");
            assert_eq!(got.len(), 3000, "{p}");
            fs.release(o.fh);
        }
    };
    read_all(s.fs.clone(), paths.clone()).await;
    let before = s.mem.counts.get();
    read_all(s.fs.clone(), shuffled(paths, 3)).await;
    // No cache here, so the bytes are fetched again; metadata costs nothing.
    let (list, head, _) = since(&s, before);
    assert_eq!((list, head), (0, 0), "no metadata request in a warm epoch");
}

/// An object added or deleted on the store shows within the TTL, both for a name looked up
/// before (positive) and one that did not exist (negative).
#[tokio::test]
async fn changes_on_the_store_show_within_the_ttl() {
    let ttl = Duration::from_millis(800);
    let mem = MemoryStore::new("mem");
    mem.put("d/old", "x");
    mem.put("d/keep", "x");
    let s = setup(mem, MetadataTtl::For(ttl), Duration::from_secs(10));
    lookup_path(&s.fs, "mem/d/old").await.expect("old exists");
    assert!(matches!(
        lookup_path(&s.fs, "mem/d/new").await,
        Err(FsError::NotFound)
    ));
    s.mem.put("d/new", "y");
    assert!(s.mem.delete("d/old"));
    let t0 = Instant::now();
    let (mut new_seen, mut old_gone) = (None, None);
    while new_seen.is_none() || old_gone.is_none() {
        assert!(
            t0.elapsed() < ttl * 5,
            "changes not seen after {:?} (TTL {ttl:?})",
            t0.elapsed()
        );
        if new_seen.is_none() && lookup_path(&s.fs, "mem/d/new").await.is_ok() {
            new_seen = Some(t0.elapsed());
        }
        if old_gone.is_none()
            && matches!(
                lookup_path(&s.fs, "mem/d/old").await,
                Err(FsError::NotFound)
            )
        {
            old_gone = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "figures: TTL {ttl:?}: a new object appeared after {new_seen:?}, a deleted one went after {old_gone:?}"
    );
    // Negative TTL (10 s) is capped by the directory's listing: a fresh listing is newer.
    assert!(new_seen.expect("seen") <= ttl + Duration::from_millis(500));
    assert!(old_gone.expect("gone") <= ttl + Duration::from_millis(500));
}

/// A name that is both an object `a` and a prefix `a/` is the directory, whether the lookup
/// is answered by a listing or by the store.
#[tokio::test]
async fn a_prefix_wins_over_an_object_of_the_same_name() {
    for listed in [true, false] {
        let mem = MemoryStore::new("mem");
        mem.put("d/a", "object");
        mem.put("d/a/inner", "x");
        let s = setup(
            mem,
            MetadataTtl::For(Duration::from_secs(60)),
            Duration::ZERO,
        );
        let root = s.fs.lookup(Ino::ROOT, "mem").await.expect("mem");
        let d = s.fs.lookup(root.ino, "d").await.expect("d");
        if listed {
            // Let the listing of d finish first.
            let fh = s.fs.opendir(d.ino).expect("opendir");
            let _ = s.fs.readdir(fh, 0, 100).await.expect("readdir");
            s.fs.releasedir(fh);
        }
        let a = s.fs.lookup(d.ino, "a").await.expect("a");
        assert_eq!(a.kind, Kind::Dir, "listed first: {listed}");
    }
}

/// 200,000 objects in one directory, looked up by path without listing: the listing a lookup
/// starts stops at its cap, names past it are asked one by one, and a missing name is asked
/// once per negative TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_directory_costs_bounded_memory_and_requests() {
    let mem = MemoryStore::new("mem").with_page_size(1000);
    const N: usize = 200_000;
    for i in 0..N {
        mem.put(&format!("flat/{i:07}"), "");
    }
    let s = setup(
        mem,
        MetadataTtl::For(Duration::from_secs(600)),
        Duration::from_secs(60),
    );
    let flat = lookup_path(&s.fs, "mem/flat").await.expect("flat").0;
    // 2,000 names spread over the whole directory.
    let names: Vec<String> = shuffled((0..N).step_by(100).map(|i| format!("{i:07}")).collect(), 5);
    let pages_before = s.metrics.lookup_listing_pages.get();
    let before = s.mem.counts.get();
    let t0 = Instant::now();
    for n in &names {
        let a = s.fs.lookup(flat, n).await.expect("lookup");
        assert_eq!(a.kind, Kind::File);
    }
    let took = t0.elapsed();
    let (list, head, _) = since(&s, before);
    let pages = s.metrics.lookup_listing_pages.get() - pages_before;
    let inodes = s.fs.stats().inodes;
    println!(
        "figures: 2,000 lookups in a directory of 200,000: {list} LIST ({pages} listing pages, cap {LOOKUP_LISTING_MAX} entries), {head} HEAD, {inodes} inodes, {took:?}; answered listing {}, store {}",
        s.metrics.lookups(LookupAnswer::Listing),
        s.metrics.lookups(LookupAnswer::Store),
    );
    assert!(
        pages as usize <= LOOKUP_LISTING_MAX / 1000,
        "the listing stopped at its cap"
    );
    assert!(
        (inodes as usize) < LOOKUP_LISTING_MAX + names.len() + 10,
        "memory bounded: {inodes} inodes"
    );
    // Every name is one request at most: from the listing, or a HEAD plus a one-key list.
    assert!(head <= names.len() as u64);
    assert!(list <= pages + head);

    // A missing name: asked once, then known absent for the negative TTL.
    let before = s.mem.counts.get();
    for _ in 0..5 {
        assert!(matches!(
            s.fs.lookup(flat, "9999999x").await,
            Err(FsError::NotFound)
        ));
    }
    assert_eq!(
        since(&s, before),
        (1, 1, 0),
        "one HEAD and one prefix check, once"
    );
    assert_eq!(s.metrics.lookups(LookupAnswer::Negative), 4);
}

/// A small file (up to 4 blocks, 4 MiB here) is fetched whole by its first read, in one GET, and its blocks
/// cached together; a larger one is not fetched past what its reads and prefetch ask.
#[tokio::test]
async fn a_small_cold_file_is_one_get() {
    let mem = MemoryStore::new("mem");
    let small: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
    let etag = mem.put("d/small", small.clone());
    mem.put("d/big", vec![7u8; 6 << 20]);
    let s = setup_with(
        mem,
        MetadataTtl::For(Duration::from_secs(60)),
        Duration::ZERO,
        true,
    );
    let (ino, _) = lookup_path(&s.fs, "mem/d/small").await.expect("small");
    let o = s.fs.open(ino, false).await.expect("open");
    // A read in the middle, as a reader that seeks to an index first might.
    let before = s.mem.counts.get();
    let got = s.fs.read(o.fh, 2 << 20, 4096).await.expect("read");
    assert_eq!(&got[..], &small[2 << 20..(2 << 20) + 4096]);
    let cache = s.fs.reader().cache().expect("cache").clone();
    let id = ObjectId {
        backend: "mem".into(),
        key: "d/small".into(),
        etag,
    };
    let t0 = Instant::now();
    while !cache.is_complete(&id) {
        assert!(t0.elapsed() < Duration::from_secs(10), "never cached whole");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    while all.len() < small.len() {
        all.extend_from_slice(
            &s.fs
                .read(o.fh, all.len() as u64, 128 << 10)
                .await
                .expect("read"),
        );
    }
    assert_eq!(all, small);
    s.fs.release(o.fh);
    assert_eq!(since(&s, before).2, 1, "one GET for the whole small file");
    assert_eq!(
        s.mem
            .counts
            .get_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        small.len() as u64
    );

    // 6 MiB is not small: a read of its fourth block fetches that block (and no more, with
    // no prefetch budget here).
    let (ino, _) = lookup_path(&s.fs, "mem/d/big").await.expect("big");
    let o = s.fs.open(ino, false).await.expect("open");
    s.fs.read(o.fh, 3 << 20, 4096).await.expect("read");
    s.fs.release(o.fh);
    let big = ObjectId {
        backend: "mem".into(),
        key: "d/big".into(),
        etag: s.mem.current("d/big").expect("big").etag,
    };
    let t0 = Instant::now();
    while !cache.has_block(&big, BlockIndex(3)) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "block 3 never cached"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!cache.has_block(&big, BlockIndex(0)));
    assert!(!cache.has_block(&big, BlockIndex(5)));
}

/// Zero-message opens: the kernel opens files without asking and reads with file handle 0;
/// each inode gets one handle at its first read (concurrent first reads share it), and an
/// inode reads one version: once the object is replaced its reads fail with `ESTALE`, never
/// serving the new bytes, and the path's next lookup after the TTL is a new inode that reads
/// the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_message_opens_read_one_version_per_inode() {
    let ttl = Duration::from_millis(300);
    let mem = MemoryStore::new("mem");
    let v1: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let v2: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8 + 1).collect();
    mem.put("d/f", v1.clone());
    let s = setup(mem, MetadataTtl::For(ttl), Duration::ZERO);
    let (ino, _) = lookup_path(&s.fs, "mem/d/f").await.expect("lookup");
    assert_eq!(s.fs.inode_handle(ino), None, "no handle before a read");
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let fs = s.fs.clone();
            tokio::spawn(async move { fs.open_inode(ino).await.expect("open_inode") })
        })
        .collect();
    let mut fhs = Vec::new();
    for o in opens {
        fhs.push(o.await.expect("task"));
    }
    fhs.dedup();
    assert_eq!(fhs.len(), 1, "one handle per inode: {fhs:?}");
    assert_eq!(s.fs.inode_handle(ino), Some(fhs[0]));
    let got = s.fs.read(fhs[0], 4096, 4096).await.expect("read v1");
    assert_eq!(&got[..], &v1[4096..8192]);

    s.mem.put("d/f", v2.clone());
    // The old inode serves the old version's bytes it still holds, or ESTALE; never new ones.
    let old_version_only = |r: Result<bytes::Bytes, FsError>, at: usize| match r {
        Ok(b) => assert!(
            b[..] == v1[at..at + b.len()],
            "old inode served other bytes at {at}"
        ),
        Err(FsError::Stale) => {}
        Err(e) => panic!("old inode at {at}: {e}"),
    };
    for at in [0, 100_000, 250_000] {
        old_version_only(s.fs.read(fhs[0], at as u64, 4096).await, at);
    }
    let t0 = Instant::now();
    let fresh = loop {
        assert!(t0.elapsed() < ttl * 10, "new version never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (now, _) = lookup_path(&s.fs, "mem/d/f").await.expect("lookup");
        if now == ino {
            continue;
        }
        let fh = s.fs.open_inode(now).await.expect("open new inode");
        match s.fs.read(fh, 0, 200_000).await {
            Ok(b) => break b,
            Err(FsError::Stale) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(fresh[..] == v2[..], "the new inode reads the new version");
    old_version_only(s.fs.read(fhs[0], 8192, 4096).await, 8192);
}
