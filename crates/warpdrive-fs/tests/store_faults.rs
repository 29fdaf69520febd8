//! The filesystem core over the in-memory store and the fault-injecting wrapper, without a
//! kernel: exact faults on exact requests. Every injected fault class either reads the right
//! bytes or fails with its documented errno; wrong bytes are never returned (checked against
//! every version the in-memory store ever held).

mod support;

use std::sync::Arc;
use std::time::Duration;

use warpdrive_cache::{Cache, ObjectId};
use warpdrive_config::MetadataTtl;
use warpdrive_fs::{Fs, FsError, Ino};
use warpdrive_metrics::BackendMetrics;
use warpdrive_store::faulty::{Fault, FaultyStore, Op};
use warpdrive_store::memory::MemoryStore;
use warpdrive_store::{Backend, Store};

const MIB: usize = 1 << 20;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

struct Setup {
    mem: Arc<MemoryStore>,
    faulty: Arc<FaultyStore>,
    fs: Arc<Fs>,
    _dir: Option<tempfile::TempDir>,
}

/// An fs over `faulty(mem)`, with a block cache when `cached`.
fn setup(cached: bool) -> Setup {
    setup_with(cached, 8 << 20)
}

/// As [`setup`], with a prefetch budget of `prefetch` bytes (0: no prefetch).
fn setup_with(cached: bool, prefetch: u64) -> Setup {
    let mem = Arc::new(MemoryStore::new("mem"));
    let faulty = Arc::new(FaultyStore::new("mem", mem.clone() as Arc<dyn Store>));
    let backend = Arc::new(Backend::with_store(
        &support::mem_config(),
        faulty.clone(),
        BackendMetrics::detached("mem"),
    ));
    let (dir, cache) = match cached.then(support::temp_cache) {
        Some((d, c)) => (Some(d), Some(c)),
        None => (None, None),
    };
    let fs = Fs::new(
        support::fs_config(MetadataTtl::For(Duration::ZERO), prefetch),
        vec![backend],
        cache,
    );
    Setup {
        mem,
        faulty,
        fs,
        _dir: dir,
    }
}

/// Waits until `held(cache, current version of name)` (blocks are written to the cache just
/// after their readers have them).
async fn wait_cached(s: &Setup, name: &str, what: &str, held: impl Fn(&Cache, &ObjectId) -> bool) {
    let id = ObjectId {
        backend: "mem".into(),
        key: name.into(),
        etag: s.mem.current(name).expect("object").etag,
    };
    let cache = s.fs.reader().cache().expect("cache").clone();
    let t0 = std::time::Instant::now();
    while !held(&cache, &id) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what} never cached"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Opens `mem/<name>` and reads it whole, in 128 KiB reads.
async fn read_file(fs: &Arc<Fs>, name: &str) -> Result<Vec<u8>, FsError> {
    let root = fs.lookup(Ino::ROOT, "mem").await?;
    let attr = fs.lookup(root.ino, name).await?;
    let opened = fs.open(attr.ino, false).await?;
    let mut out = Vec::new();
    let r = loop {
        match fs.read(opened.fh, out.len() as u64, 128 << 10).await {
            Ok(b) if b.is_empty() => break Ok(()),
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => break Err(e),
        }
    };
    fs.release(opened.fh);
    r.map(|()| out)
}

#[tokio::test]
async fn the_core_reads_the_memory_store_and_counts_its_requests() {
    let s = setup(true);
    let obj = data(3 * MIB + 5, 1);
    s.mem.put("obj", obj.clone());
    assert!(read_file(&s.fs, "obj").await.expect("cold") == obj);
    let (_, _, gets) = s.mem.counts.get();
    assert!(gets >= 1);
    // Fully cached once the last blocks are written (just after the readers had them): the
    // second read sends no GET (the TTL of 0 still revalidates metadata with a HEAD).
    wait_cached(&s, "obj", "fully", |c, id| c.is_complete(id)).await;
    assert!(read_file(&s.fs, "obj").await.expect("warm") == obj);
    assert_eq!(s.mem.counts.get().2, gets, "a warm read fetched again");
}

/// Each fault class once, on the first GET of a cold read: the read returns the object's
/// bytes or fails with the class's errno, and the next read returns the bytes.
#[tokio::test]
async fn every_get_fault_class_reads_right_or_fails_with_its_errno() {
    let cases: [(Fault, &[i32]); 8] = [
        (Fault::Status(500), &[libc::EIO]),
        (Fault::Status(503), &[libc::EIO]),
        (Fault::Status(429), &[libc::EIO]),
        (Fault::Timeout, &[libc::ETIMEDOUT]),
        (Fault::Stall(Duration::from_millis(50)), &[]),
        (Fault::ResetAfter(1000), &[libc::EIO]),
        (Fault::ShortBody(1000), &[libc::EIO]),
        (Fault::WrongVersion, &[]),
    ];
    for cached in [false, true] {
        for (fault, errnos) in cases {
            let s = setup(cached);
            let obj = data(2 * MIB + 7, 2);
            s.mem.put("obj", obj.clone());
            s.faulty.script(Op::Get, [fault]);
            match read_file(&s.fs, "obj").await {
                Ok(got) => assert!(got == obj, "{fault:?} (cache {cached}): wrong bytes"),
                Err(e) => assert!(
                    errnos.contains(&e.errno()),
                    "{fault:?} (cache {cached}): {e} (errno {})",
                    e.errno()
                ),
            }
            assert_eq!(s.faulty.injected().len(), 1, "{fault:?}");
            let again = read_file(&s.fs, "obj")
                .await
                .unwrap_or_else(|e| panic!("{fault:?} (cache {cached}): the next read: {e}"));
            assert!(
                again == obj,
                "{fault:?} (cache {cached}): wrong bytes after"
            );
        }
    }
}

/// A store (or proxy) that ignores `If-Match` served the new version's bytes to a handle of
/// the old one; the body says which version it is, and the read fails with `ESTALE` instead
/// of returning bytes of another version.
#[tokio::test]
async fn a_body_of_another_version_is_refused() {
    let s = setup(false);
    let v1 = data(2 * MIB, 3);
    s.mem.put("obj", v1.clone());
    let root = s.fs.lookup(Ino::ROOT, "mem").await.expect("root");
    let attr = s.fs.lookup(root.ino, "obj").await.expect("obj");
    let opened = s.fs.open(attr.ino, false).await.expect("open");
    s.mem.put("obj", data(2 * MIB, 4));
    s.faulty.script(Op::Get, [Fault::WrongVersion]);
    let e =
        s.fs.read(opened.fh, 0, 4096)
            .await
            .expect_err("bytes of the new version were returned");
    assert_eq!(e.errno(), libc::ESTALE, "{e}");
    s.fs.release(opened.fh);
}

/// Seeded random faults on every kind of request, with overwrites between reads: every read
/// that succeeds returns exactly one version's bytes, the one current when it was opened.
#[tokio::test]
async fn random_faults_never_return_wrong_bytes() {
    for seed in 1..=6u64 {
        let s = setup(seed % 2 == 0);
        let mut current = data(MIB + 333, 0);
        s.mem.put("obj", current.clone());
        s.faulty.random(
            seed,
            0.3,
            &[
                Fault::Status(503),
                Fault::Status(500),
                Fault::Timeout,
                Fault::ResetAfter(4096),
                Fault::ShortBody(100),
                Fault::WrongVersion,
            ],
        );
        let (mut ok, mut failed) = (0, 0);
        for round in 0..30u8 {
            if round % 7 == 6 {
                current = data(MIB + 333 + round as usize, round);
                s.mem.put("obj", current.clone());
            }
            match read_file(&s.fs, "obj").await {
                Ok(got) => {
                    assert!(
                        got == current,
                        "seed {seed} round {round}: bytes that are not the current version's"
                    );
                    ok += 1;
                }
                Err(e) => {
                    assert!(
                        [libc::EIO, libc::ETIMEDOUT, libc::ESTALE].contains(&e.errno()),
                        "seed {seed}: {e}"
                    );
                    failed += 1;
                }
            }
        }
        assert!(
            ok > 0 && failed > 0,
            "seed {seed}: {ok} ok, {failed} failed"
        );
        s.faulty.calm();
        assert!(read_file(&s.fs, "obj").await.expect("calm") == current);
    }
}

/// A listing the store refuses answers `readdir` with `EACCES`, as any other denied request
/// does (the listing's error used to be kept as text only, and became `EIO`); a listing that
/// keeps failing for the store's own reasons is `EIO`.
#[tokio::test]
async fn a_denied_listing_is_eacces_and_a_failing_one_eio() {
    for (status, errno) in [(403, libc::EACCES), (503, libc::EIO), (500, libc::EIO)] {
        let s = setup(false);
        s.mem.put("d/a", b"x".to_vec());
        let root = s.fs.lookup(Ino::ROOT, "mem").await.expect("root");
        s.faulty.script(Op::List, [Fault::Status(status)]);
        let fh = s.fs.opendir(root.ino).expect("opendir");
        let e =
            s.fs.readdir(fh, 0, 100)
                .await
                .expect_err("the listing should fail");
        assert_eq!(e.errno(), errno, "HTTP {status}: {e}");
        s.fs.releasedir(fh);
    }
}

/// Opens `mem/<name>`; returns the handle.
async fn open(fs: &Arc<Fs>, name: &str) -> u64 {
    let root = fs.lookup(Ino::ROOT, "mem").await.expect("root");
    let attr = fs.lookup(root.ino, name).await.expect("lookup");
    fs.open(attr.ino, false).await.expect("open").fh
}

/// Two handles reading the same cold block at once cause one GET: the second joins the
/// first's fetch (held back 200 ms by a stall so that the reads overlap).
#[tokio::test]
async fn concurrent_readers_of_a_block_share_one_get() {
    let s = setup_with(true, 0);
    let obj = data(4 * MIB, 5);
    s.mem.put("obj", obj.clone());
    let (h1, h2) = (open(&s.fs, "obj").await, open(&s.fs, "obj").await);
    s.faulty
        .script(Op::Get, [Fault::Stall(Duration::from_millis(200))]);
    let (a, b) = tokio::join!(s.fs.read(h1, 0, 128 << 10), s.fs.read(h2, 4096, 128 << 10));
    assert!(a.expect("h1")[..] == obj[..128 << 10]);
    assert!(b.expect("h2")[..] == obj[4096..4096 + (128 << 10)]);
    assert_eq!(s.mem.counts.get().2, 1, "one GET for both readers");
    s.fs.release(h1);
    s.fs.release(h2);
}

/// A read over missing blocks around a cached one asks for each run of missing blocks in one
/// GET, and not for the cached block.
#[tokio::test]
async fn missing_blocks_are_fetched_in_runs_around_cached_ones() {
    let s = setup_with(true, 0);
    let obj = data(6 * MIB, 6);
    s.mem.put("obj", obj.clone());
    let h = open(&s.fs, "obj").await;
    // Block 2, alone.
    assert!(
        s.fs.read(h, 2 * MIB as u64, MIB as u32)
            .await
            .expect("block 2")[..]
            == obj[2 * MIB..3 * MIB]
    );
    wait_cached(&s, "obj", "block 2", |c, id| {
        c.has_block(id, warpdrive_cache::BlockIndex(2))
    })
    .await;
    let bytes_before = s
        .mem
        .counts
        .get_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    // Everything: blocks 0-1 and 3-5 are missing, two runs.
    let all = s.fs.read(h, 0, 6 * MIB as u32).await.expect("whole");
    assert!(all[..] == obj[..]);
    assert_eq!(s.mem.counts.get().2, 3, "block 2's GET, then one per run");
    assert_eq!(
        s.mem
            .counts
            .get_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            - bytes_before,
        5 * MIB as u64,
        "the cached block was not fetched again"
    );
    s.fs.release(h);
}

/// An inode's attributes stay its own version's across an overwrite, even when they were
/// being revalidated as the path moved to a new inode. A `getattr` whose HEAD (held back by a
/// stall) returns the new version after a lookup has already retired the inode (its handle
/// is open) used to answer the old inode with the new version's size: the kernel then cut
/// the old handle's reads short or let them run into the new version's length.
#[tokio::test]
async fn a_getattr_racing_an_overwrite_keeps_its_inodes_version() {
    let s = setup(false);
    let (v1, v2) = (data(3 * MIB + 5, 7), data(2 * MIB + 1, 8));
    s.mem.put("obj", v1.clone());
    let root = s.fs.lookup(Ino::ROOT, "mem").await.expect("root");
    let old = s.fs.lookup(root.ino, "obj").await.expect("lookup v1");
    let fh = s.fs.open(old.ino, false).await.expect("open v1").fh;
    s.mem.put("obj", v2.clone());

    s.faulty
        .script(Op::Head, [Fault::Stall(Duration::from_millis(300))]);
    let fs = s.fs.clone();
    let getattr = tokio::spawn(async move { fs.getattr(old.ino).await });
    // The stalled HEAD is in flight; the lookup's own requests are not held back.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let new = s.fs.lookup(root.ino, "obj").await.expect("lookup v2");
    assert_ne!(new.ino, old.ino, "the new version gets a new inode");
    assert_eq!(new.size, v2.len() as u64);
    let attr = getattr.await.expect("join").expect("getattr");
    assert_eq!(attr.size, v1.len() as u64, "the old inode keeps v1's size");
    assert_eq!(
        s.fs.getattr(old.ino).await.expect("getattr again").size,
        v1.len() as u64
    );
    s.fs.release(fh);
}
