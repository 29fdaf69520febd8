//! The core's tests without a kernel: the namespace, reads, prefetch budget and the reference
//! models (random reads, overwrites, evictions and remounts, concurrent handles).

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn fs_over(dir: &Path) -> Arc<Fs> {
    let backend = Arc::new(
        Backend::build(&warpdrive_testkit::local_backend("data", dir)).expect("local backend"),
    );
    Fs::new(
        FsConfig {
            metadata_ttl: MetadataTtl::For(Duration::from_secs(60)),
            stale_if_error: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            uid: 0,
            gid: 0,
            block_size: 1 << 20,
            prefetch_budget: 64 << 20,
            passthrough: false,
            passthrough_min_size: 0,
            control: None,
            write_part_size: crate::core::WRITE_PART_SIZE,
            write_memory: crate::core::WRITE_MEMORY,
        },
        vec![backend],
        None,
    )
}

async fn all_entries(fs: &Arc<Fs>, ino: Ino) -> Vec<String> {
    let fh = fs.opendir(ino).expect("opendir");
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        // Small batches exercise resuming from the kernel's offset.
        let batch = fs.readdir(fh, offset, 2).await.expect("readdir");
        let Some(last) = batch.last() else { break };
        offset = last.next_offset;
        names.extend(batch.into_iter().map(|e| e.name));
    }
    fs.releasedir(fh);
    names
}

/// Ten thousand changed objects are invalidated by one worker thread, each once, in the
/// order found (each change used to start an OS thread of its own).
#[tokio::test]
async fn invalidations_go_through_one_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs_over(dir.path());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let (s, t) = (seen.clone(), threads.clone());
    fs.set_invalidator(Arc::new(move |ino: Ino| {
        s.lock().push(ino);
        t.lock()
            .insert(std::thread::current().name().unwrap_or("").to_string());
    }));
    for i in 0..10_000u64 {
        fs.queue_invalidation(Ino(1000 + i));
    }
    let t0 = Instant::now();
    while seen.lock().len() < 10_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "invalidations stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.lock().clone();
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, ino)| ino.0 == 1000 + i as u64)
    );
    assert_eq!(
        threads.lock().iter().cloned().collect::<Vec<_>>(),
        vec!["warpdrive-inval".to_string()]
    );
}

#[tokio::test]
async fn namespace_and_reads_without_a_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
    std::fs::write(dir.path().join("a/b.txt"), b"hello").expect("write");
    std::fs::write(dir.path().join("a/c.txt"), b"").expect("write");
    std::fs::write(dir.path().join("top"), b"t").expect("write");
    let fs = fs_over(dir.path());

    assert_eq!(all_entries(&fs, Ino::ROOT).await, vec![".", "..", "data"]);
    let data = fs.lookup(Ino::ROOT, "data").await.expect("backend dir");
    assert_eq!(data.kind, Kind::Dir);
    assert_eq!(
        all_entries(&fs, data.ino).await,
        vec![".", "..", "a", "top"]
    );
    let a = fs.lookup(data.ino, "a").await.expect("a");
    assert_eq!(
        all_entries(&fs, a.ino).await,
        vec![".", "..", "b.txt", "c.txt"]
    );
    let b = fs.lookup(a.ino, "b.txt").await.expect("b.txt");
    assert_eq!((b.kind, b.size, b.perm), (Kind::File, 5, 0o444));
    assert_eq!(fs.lookup(a.ino, "b.txt").await.expect("again").ino, b.ino);
    assert!(matches!(
        fs.lookup(a.ino, "nope").await,
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        fs.lookup(a.ino, "..").await,
        Err(FsError::NotFound)
    ));
    assert!(matches!(fs.open(b.ino, true).await, Err(FsError::ReadOnly)));
    assert!(matches!(fs.open(a.ino, false).await, Err(FsError::IsDir)));

    let fh = fs.open(b.ino, false).await.expect("open").fh;
    assert_eq!(&fs.read(fh, 0, 100).await.expect("read")[..], b"hello");
    assert_eq!(&fs.read(fh, 3, 100).await.expect("read")[..], b"lo");
    assert!(fs.read(fh, 10, 100).await.expect("past end").is_empty());
    fs.release(fh);
    assert!(matches!(fs.read(fh, 0, 1).await, Err(FsError::BadHandle)));
}

/// The model's view of one object: its current bytes.
fn write_version(dir: &Path, name: &str, seed: u64, size: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..size)
        .map(|i| {
            ((i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed * 7919)
                >> 11) as u8
        })
        .collect();
    // Write aside and rename: a new inode, so a new ETag, as a store's overwrite.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &data).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
    data
}

fn cached_fs(dir: &Path, cache_dir: &Path, block_size: u64) -> (Arc<Fs>, Arc<Cache>) {
    // The previous `Fs`'s fetch tasks may still hold the cache (and its lock) briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cache = loop {
        match Cache::open(warpdrive_cache::CacheConfig {
            dir: cache_dir.to_path_buf(),
            block_size,
        }) {
            Ok(c) => break Arc::new(c),
            Err(warpdrive_cache::CacheError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("cache: {e}"),
        }
    };
    let backend = Arc::new(
        Backend::build(&warpdrive_testkit::local_backend("data", dir)).expect("local backend"),
    );
    let fs = Fs::new(
        FsConfig {
            // Every open asks the store, so overwrites are seen at once.
            metadata_ttl: MetadataTtl::For(Duration::ZERO),
            stale_if_error: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            uid: 0,
            gid: 0,
            block_size,
            prefetch_budget: 8 * block_size,
            passthrough: false,
            passthrough_min_size: 0,
            control: None,
            write_part_size: crate::core::WRITE_PART_SIZE,
            write_memory: crate::core::WRITE_MEMORY,
        },
        vec![backend],
        Some(cache.clone()),
    );
    (fs, cache)
}

/// Many handles streaming at once share one prefetch budget: bytes in flight, and
/// prefetched blocks waiting in memory for their readers, never exceed it; prefetched
/// blocks are read; and every byte of the budget comes back, whether a handle read to the
/// end, stopped half-way, or jumped about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_shares_one_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let bs = 4096u64;
    let files: Vec<Vec<u8>> = (0..30)
        .map(|i| write_version(dir.path(), &format!("s{i}"), i, 40 * bs as usize + 9))
        .collect();
    let (fs, _cache) = cached_fs(dir.path(), cache_dir.path(), bs);
    let budget = 8 * bs;
    let root = fs.lookup(Ino::ROOT, "data").await.expect("dir");
    let mut fhs = Vec::new();
    for i in 0..files.len() {
        let f = fs.lookup(root.ino, &format!("s{i}")).await.expect("lookup");
        fhs.push(fs.open(f.ino, false).await.expect("open").fh);
    }
    let stats = &fs.metrics().read;
    let (mut peak, mut held) = (0, 0);
    for off in (0..41 * bs).step_by(bs as usize) {
        for (fh, data) in fhs.iter().zip(&files) {
            let got = fs.read(*fh, off, bs as u32).await.expect("read");
            let s = (off as usize).min(data.len());
            let e = (off + bs).min(data.len() as u64) as usize;
            assert_eq!(&got[..], &data[s..e]);
            peak = peak.max(stats.prefetch_in_flight_bytes.get() as u64);
            held = held.max(fs.reader().prefetch_held_bytes());
        }
    }
    assert!(
        peak <= budget,
        "{peak} bytes of prefetch in flight, budget {budget}"
    );
    assert!(
        held <= budget,
        "{held} bytes of the budget held, budget {budget}"
    );
    assert!(stats.prefetch_hits.get() > 0, "prefetch was used");
    for fh in fhs {
        fs.release(fh);
    }
    settle_budget(&fs).await;

    // Handles that stop half-way, or stop reading in order, give their share back (new
    // objects: the first ones are cached now, and cached blocks are not prefetched).
    let files: Vec<Vec<u8>> = (0..4)
        .map(|i| write_version(dir.path(), &format!("t{i}"), 50 + i, 40 * bs as usize + 9))
        .collect();
    let mut fhs = Vec::new();
    for i in 0..files.len() {
        let f = fs.lookup(root.ino, &format!("t{i}")).await.expect("lookup");
        fhs.push(fs.open(f.ino, false).await.expect("open").fh);
    }
    for off in (0..20 * bs).step_by(bs as usize) {
        for fh in &fhs {
            fs.read(*fh, off, bs as u32).await.expect("read");
        }
    }
    let (jumper, data) = (fhs[0], &files[0]);
    let got = fs.read(jumper, 3 * bs + 5, 100).await.expect("read back");
    assert_eq!(&got[..], &data[3 * bs as usize + 5..3 * bs as usize + 105]);
    // Reading about at random lets go of everything this handle prefetched.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fs.read(jumper, 30 * bs, 10).await.expect("read");
    fs.read(jumper, 2 * bs, 10).await.expect("read");
    for fh in fhs {
        fs.release(fh);
    }
    settle_budget(&fs).await;
}

/// Waits for prefetches still landing, then checks that every byte of the prefetch
/// budget is back.
async fn settle_budget(fs: &Arc<Fs>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fs.reader().prefetch_held_bytes() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fs.reader().prefetch_held_bytes(),
        0,
        "budget held after close"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Open(usize),
    Read(usize, u64, u32),
    Close(usize),
    Overwrite(usize, u64, usize),
    Evict(u64),
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3).prop_map(Op::Open),
        8 => (0usize..8, 0u64..70_000, 1u32..40_000).prop_map(|(h, o, l)| Op::Read(h, o, l)),
        1 => (0usize..8).prop_map(Op::Close),
        1 => (0usize..3, 0u64..1000, 0usize..60_000).prop_map(|(i, s, n)| Op::Overwrite(i, s, n)),
        1 => (0u64..100_000).prop_map(Op::Evict),
        1 => Just(Op::Remount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Reference model of the cached read path: random opens and reads of random
    /// objects, interleaved with overwrites, evictions and remounts (a new `Fs` over the
    /// reopened cache). A read returns exactly the bytes of the version its handle
    /// opened, or `ESTALE` only once that version was overwritten on the store; never a
    /// mix of versions and never other bytes.
    #[test]
    fn cached_reads_equal_the_store(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = tempfile::tempdir().expect("cache dir");
        let names = ["a", "b", "c"];
        let bs = 4096;
        let mut current: Vec<Vec<u8>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| write_version(dir.path(), n, i as u64, 10_000 * (i + 1) + 17))
            .collect();
        // How many times each object was overwritten.
        let mut versions = [0u32; 3];
        rt.block_on(async {
            let (mut fs, mut cache) = cached_fs(dir.path(), cache_dir.path(), bs);
            // Open handles: (fh, the bytes of the version it opened, object index, that
            // version's number).
            let mut handles: Vec<(u64, Vec<u8>, usize, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Open(i) => {
                        let root = fs.lookup(Ino::ROOT, "data").await.expect("dir");
                        let f = fs.lookup(root.ino, names[i]).await.expect("lookup");
                        let o = fs.open(f.ino, false).await.expect("open");
                        handles.push((o.fh, current[i].clone(), i, versions[i]));
                    }
                    Op::Read(h, off, len) => {
                        let Some((fh, data, i, version)) = handles.get(h % handles.len().max(1)).cloned() else { continue };
                        match fs.read(fh, off, len).await {
                            Ok(got) => {
                                let s = (off as usize).min(data.len());
                                let e = (off as usize + len as usize).min(data.len());
                                prop_assert_eq!(&got[..], &data[s..e], "read {} +{}", off, len);
                            }
                            Err(e) if e.errno() == libc::ESTALE => prop_assert!(
                                versions[i] != version,
                                "ESTALE for a handle whose version is still the store's: {e}"
                            ),
                            Err(e) => prop_assert!(false, "read failed: {e}"),
                        }
                    }
                    Op::Close(h) => {
                        if !handles.is_empty() {
                            let (fh, ..) = handles.remove(h % handles.len());
                            fs.release(fh);
                        }
                    }
                    Op::Overwrite(i, seed, size) => {
                        current[i] = write_version(dir.path(), names[i], seed + 10, size);
                        versions[i] += 1;
                    }
                    Op::Evict(target) => {
                        cache.evict_to(target).expect("evict");
                    }
                    Op::Remount => {
                        for (fh, ..) in handles.drain(..) {
                            fs.release(fh);
                        }
                        drop(fs);
                        // Let fetch tasks finish writing before the cache is reopened.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        cache.flush().expect("flush");
                        drop(cache);
                        (fs, cache) = cached_fs(dir.path(), cache_dir.path(), bs);
                    }
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Reference model, concurrent: several handles of one cached object read at once
    /// (joining each other's fetches and taking prefetched blocks held in memory); every
    /// read returns exactly the object's bytes.
    #[test]
    fn concurrent_handles_read_the_object(
        size in 1usize..400_000,
        rounds in prop::collection::vec(
            prop::collection::vec((0usize..4, 0u64..420_000, 1u32..70_000), 1..8),
            1..12,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = tempfile::tempdir().expect("cache dir");
        let data = write_version(dir.path(), "obj", 3, size);
        rt.block_on(async {
            let (fs, _cache) = cached_fs(dir.path(), cache_dir.path(), 4096);
            let root = fs.lookup(Ino::ROOT, "data").await.expect("dir");
            let f = fs.lookup(root.ino, "obj").await.expect("obj");
            let mut fhs = Vec::new();
            for _ in 0..4 {
                fhs.push(fs.open(f.ino, false).await.expect("open").fh);
            }
            for round in rounds {
                let reads = round.iter().map(|&(h, off, len)| {
                    let fs = fs.clone();
                    let fh = fhs[h];
                    async move { (off, len, fs.read(fh, off, len).await) }
                });
                for (off, len, got) in futures::future::join_all(reads).await {
                    let got = got.expect("read");
                    let s = (off as usize).min(size);
                    let e = (off as usize + len as usize).min(size);
                    prop_assert_eq!(&got[..], &data[s..e], "read {} +{}", off, len);
                }
            }
            for fh in fhs {
                fs.release(fh);
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Reference model: any sequence of reads through one handle returns exactly the bytes
    /// of the object, whatever mix of sequential and random offsets it makes.
    #[test]
    fn random_reads_equal_the_object(
        size in 0usize..3_000_000,
        reads in prop::collection::vec((0u64..3_100_000, 1u32..1_100_000), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(dir.path().join("obj"), &data).expect("write");
        rt.block_on(async {
            let fs = fs_over(dir.path());
            let root = fs.lookup(Ino::ROOT, "data").await.expect("dir");
            let f = fs.lookup(root.ino, "obj").await.expect("obj");
            let fh = fs.open(f.ino, false).await.expect("open").fh;
            for (off, len) in reads {
                let got = fs.read(fh, off, len).await.expect("read");
                let s = (off as usize).min(size);
                let e = (off as usize + len as usize).min(size);
                prop_assert_eq!(&got[..], &data[s..e]);
            }
            Ok(())
        })?;
    }
}

/// The kernel may keep an answer for what is left of the TTL of the metadata behind it, and
/// the root and the backends' directories for the longest allowed.
#[tokio::test]
async fn the_kernel_keeps_an_answer_for_what_is_left_of_its_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a"), b"abc").expect("write");
    let fs = fs_over(dir.path());
    let ttl = Duration::from_secs(60);
    let root = fs.lookup(Ino::ROOT, "data").await.expect("backend");
    assert_eq!(root.kernel_ttl, meta::KERNEL_TTL_MAX);
    assert_eq!(
        fs.getattr(Ino::ROOT).await.expect("root").kernel_ttl,
        meta::KERNEL_TTL_MAX
    );
    let a = fs.lookup(root.ino, "a").await.expect("lookup");
    assert!(
        a.kernel_ttl <= ttl && a.kernel_ttl > ttl - Duration::from_secs(5),
        "{a:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = fs.getattr(a.ino).await.expect("getattr");
    assert!(
        again.kernel_ttl <= ttl - Duration::from_millis(300),
        "an answer from the same metadata gets what is left of its TTL: {again:?}"
    );
}
