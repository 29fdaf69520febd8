use std::os::unix::fs::PermissionsExt;

use sha2::Digest;

use super::*;

/// A small block size keeps the tests fast and makes partial last blocks easy to reach.
const BS: u64 = 4096;

fn cfg(dir: &Path) -> CacheConfig {
    CacheConfig {
        dir: dir.join("cache"),
        block_size: BS,
    }
}

fn obj(etag: &str) -> ObjectId {
    ObjectId {
        backend: "b".into(),
        key: "train/shard-000.tar".into(),
        etag: etag.into(),
    }
}

fn block(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn blocks_round_trip_and_survive_reopen() {
    let d = tempfile::tempdir().expect("tempdir");
    let size = 2 * BS + 100;
    {
        let c = Cache::open(cfg(d.path())).expect("open");
        let mode = std::fs::metadata(d.path().join("cache"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!c.has_block(&obj("v1"), BlockIndex(0)));
        c.write_block(&obj("v1"), size, BlockIndex(0), &block(1, BS))
            .expect("write 0");
        c.write_block(&obj("v1"), size, BlockIndex(2), &block(3, 100))
            .expect("write last");
        assert!(c.has_block(&obj("v1"), BlockIndex(2)));
        assert!(
            !c.has_block(&obj("v2"), BlockIndex(0)),
            "another version is not cached"
        );
        assert_eq!(c.read_block(&obj("v1"), BlockIndex(1)).expect("read"), None);
        assert!(matches!(
            c.write_block(&obj("v1"), size, BlockIndex(1), &block(2, 10)),
            Err(CacheError::WrongLength { .. })
        ));
        assert!(matches!(
            c.block_len(size, BlockIndex(3)),
            Err(CacheError::OutOfRange { .. })
        ));
        assert_eq!(
            c.stats(),
            CacheStats {
                objects: 1,
                blocks: 2,
                bytes: BS + 100,
                corrupt_blocks: 0,
                evicted_blocks: 0,
            }
        );
    }
    let c = Cache::open(cfg(d.path())).expect("reopen");
    let first_seen = c.last_access("b", "train/shard-000.tar").expect("cached");
    assert!(first_seen > 0, "last access persisted");
    assert_eq!(
        c.read_block(&obj("v1"), BlockIndex(0))
            .expect("read")
            .as_deref(),
        Some(&block(1, BS)[..])
    );
    assert_eq!(
        c.read_block(&obj("v1"), BlockIndex(2))
            .expect("read")
            .as_deref(),
        Some(&block(3, 100)[..])
    );
    assert_eq!(c.stats().blocks, 2);
}

#[test]
fn a_new_version_replaces_the_old_one() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    c.write_block(&obj("v1"), BS, BlockIndex(0), &block(1, BS))
        .expect("v1");
    c.write_block(&obj("v2"), BS, BlockIndex(0), &block(2, BS))
        .expect("v2");
    assert_eq!(c.read_block(&obj("v1"), BlockIndex(0)).expect("read"), None);
    assert_eq!(
        c.read_block(&obj("v2"), BlockIndex(0))
            .expect("read")
            .as_deref(),
        Some(&block(2, BS)[..])
    );
    c.flush().expect("flush");
    assert_eq!(
        std::fs::read_dir(d.path().join("cache/data"))
            .expect("ls")
            .count(),
        1,
        "old data file removed"
    );
    c.invalidate("b", "train/shard-000.tar")
        .expect("invalidate");
    assert_eq!(c.read_block(&obj("v2"), BlockIndex(0)).expect("read"), None);
    drop(c);
    let c = Cache::open(cfg(d.path())).expect("reopen");
    assert_eq!(c.stats().objects, 0);
}

#[test]
fn a_corrupt_block_is_dropped_and_counted() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let c = Cache::open(cfg(d.path())).expect("open");
        c.write_block(&obj("v1"), 2 * BS, BlockIndex(1), &block(9, BS))
            .expect("write");
    }
    let file = std::fs::read_dir(d.path().join("cache/data"))
        .expect("ls")
        .next()
        .expect("one file")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&file).expect("read file");
    bytes[BS as usize + 17] ^= 0xff;
    std::fs::write(&file, bytes).expect("damage");
    {
        let c = Cache::open(cfg(d.path())).expect("reopen");
        assert_eq!(c.read_block(&obj("v1"), BlockIndex(1)).expect("read"), None);
        assert!(!c.has_block(&obj("v1"), BlockIndex(1)));
        assert_eq!(c.stats().corrupt_blocks, 1);
    }
    let c = Cache::open(cfg(d.path())).expect("reopen again");
    assert_eq!(c.stats().corrupt_blocks, 1, "the counter persists");
    assert_eq!(c.stats().blocks, 0, "the drop persists");
}

#[test]
fn unknown_files_are_removed_and_other_formats_rebuilt() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let c = Cache::open(cfg(d.path())).expect("open");
        c.write_block(&obj("v1"), BS, BlockIndex(0), &block(1, BS))
            .expect("write");
    }
    let stray = d.path().join("cache/data/ffffffffffffffff.blk");
    std::fs::write(&stray, b"junk").expect("stray");
    {
        let c = Cache::open(cfg(d.path())).expect("reopen");
        assert!(!stray.exists(), "stray data file removed");
        assert_eq!(c.stats().blocks, 1);
    }
    // An index written by another format version is discarded with its data.
    let conn = rusqlite::Connection::open(d.path().join("cache/index.db")).expect("sqlite");
    conn.pragma_update(None, "user_version", FORMAT_VERSION + 1)
        .expect("bump");
    drop(conn);
    let c = Cache::open(cfg(d.path())).expect("rebuild");
    assert_eq!(c.stats(), CacheStats::default());
    assert_eq!(
        std::fs::read_dir(d.path().join("cache/data"))
            .expect("ls")
            .count(),
        0
    );
}

/// Golden bytes for format 3: the index schema, the checksum encoding and the data file
/// layout. A change to either without bumping `FORMAT_VERSION` (and updating this test)
/// fails here.
#[test]
fn golden_format() {
    assert_eq!(FORMAT_VERSION, 3);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(index::SCHEMA.as_bytes())),
        "4a07195bb933f3f3b3075af5f2b2f5817b7ee819d172ab81743c2c056c197eaf",
        "the index schema changed: bump FORMAT_VERSION"
    );
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    c.write_block(&obj("v1"), 2 * BS + 3, BlockIndex(2), b"abc")
        .expect("write");
    c.flush().expect("flush");
    let file = d.path().join("cache/data/0000000000000001.blk");
    let bytes = std::fs::read(&file).expect("data file named by object id");
    assert_eq!(
        bytes.len() as u64,
        2 * BS + 3,
        "the data file is as long as the object"
    );
    assert!(
        bytes[..2 * BS as usize].iter().all(|b| *b == 0),
        "unwritten blocks are holes"
    );
    assert_eq!(
        &bytes[2 * BS as usize..],
        b"abc",
        "a block lives at its own offset"
    );
    let conn = rusqlite::Connection::open(d.path().join("cache/index.db")).expect("index");
    let blob: Vec<u8> = conn
        .query_row("SELECT crc32c FROM blocks WHERE block = 2", [], |r| {
            r.get(0)
        })
        .expect("block row");
    assert_eq!(
        blob,
        crc32c::crc32c(b"abc").to_le_bytes(),
        "one little-endian CRC32C per check unit"
    );
}

/// A read of part of a block checks only the units it reads; damage in one of them drops the
/// whole block and is counted once.
#[test]
fn partial_reads_check_their_units() {
    let d = tempfile::tempdir().expect("tempdir");
    let bs = 4 * CHECK_UNIT;
    let c = Cache::open(CacheConfig {
        dir: d.path().join("cache"),
        block_size: bs,
    })
    .expect("open");
    let data: Vec<u8> = (0..bs + 1000).map(|i| (i * 7 % 251) as u8).collect();
    let id = obj("v1");
    c.write_block(&id, data.len() as u64, BlockIndex(0), &data[..bs as usize])
        .expect("write");
    c.write_block(&id, data.len() as u64, BlockIndex(1), &data[bs as usize..])
        .expect("write");
    let u = CHECK_UNIT as usize;
    // Unaligned, across units, and clamped at the short last block.
    for (b, r) in [
        (0, 10..u as u64 + 5),
        (0, 3 * u as u64..bs),
        (1, 0..bs),
        (1, 990..5000),
    ] {
        let got = c
            .read_range(&id, BlockIndex(b), r.clone())
            .expect("read")
            .expect("hit");
        let start = (b * bs + r.start) as usize;
        let end = (b * bs + r.end).min(data.len() as u64) as usize;
        assert_eq!(&got[..], &data[start..end], "block {b} range {r:?}");
    }
    // Damage unit 2 of block 0: units 0 and 1 still read; unit 2 drops the block.
    let file = d.path().join("cache/data/0000000000000001.blk");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("data file");
    f.write_all_at(&[data[2 * u] ^ 1], 2 * CHECK_UNIT)
        .expect("damage");
    assert!(
        c.read_range(&id, BlockIndex(0), 0..2 * CHECK_UNIT)
            .expect("read")
            .is_some()
    );
    assert_eq!(c.stats().corrupt_blocks, 0);
    assert_eq!(
        c.read_range(&id, BlockIndex(0), 2 * CHECK_UNIT..2 * CHECK_UNIT + 1)
            .expect("read"),
        None
    );
    assert_eq!(c.stats().corrupt_blocks, 1);
    assert!(
        !c.has_block(&id, BlockIndex(0)),
        "the damaged block is dropped"
    );
    assert!(c.has_block(&id, BlockIndex(1)));
}

fn named(key: &str) -> ObjectId {
    ObjectId {
        backend: "b".into(),
        key: key.into(),
        etag: "e".into(),
    }
}

impl Cache {
    /// Test hook: pretend `key` was last read at `t`.
    fn set_last_access(&self, key: &str, t: i64) {
        let objects = self.objects.read();
        let e = objects.get("b", key).expect("cached");
        e.last_access.store(t, Ordering::Relaxed);
    }
}

#[test]
fn eviction_drops_least_recently_used_objects_first() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let c = Cache::open(cfg(d.path())).expect("open");
        for (i, k) in ["old", "mid", "new"].iter().enumerate() {
            for b in 0..2 {
                c.write_block(&named(k), 2 * BS, BlockIndex(b), &block(b as u8, BS))
                    .expect("write");
            }
            c.set_last_access(k, 1000 + i as i64);
        }
        assert_eq!(c.stats().bytes, 6 * BS);
        let ev = c.evict_to(4 * BS).expect("evict");
        assert_eq!(
            ev,
            Evicted {
                objects: 1,
                blocks: 2,
                bytes: 2 * BS
            }
        );
        assert!(!c.has_block(&named("old"), BlockIndex(0)));
        assert!(
            c.has_block(&named("mid"), BlockIndex(0)) && c.has_block(&named("new"), BlockIndex(1))
        );
        let ev = c.evict_to(BS).expect("evict more");
        assert_eq!(
            (ev.objects, ev.bytes),
            (2, 4 * BS),
            "mid, then new (nothing punched: each is small)"
        );
        assert_eq!(c.evict_to(0).expect("nothing left"), Evicted::default());
        assert_eq!(
            std::fs::read_dir(d.path().join("cache/data"))
                .expect("ls")
                .count(),
            0
        );
    }
    let c = Cache::open(cfg(d.path())).expect("reopen");
    assert_eq!(c.stats().objects, 0);
    assert_eq!(c.stats().evicted_blocks, 6, "the eviction count persists");
}

#[test]
fn a_huge_object_loses_only_some_blocks() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    let huge = named("huge");
    for b in 0..10 {
        c.write_block(&huge, 10 * BS, BlockIndex(b), &block(b as u8, BS))
            .expect("write");
    }
    let ev = c.evict_to(7 * BS).expect("evict");
    assert_eq!(
        ev,
        Evicted {
            objects: 0,
            blocks: 3,
            bytes: 3 * BS
        }
    );
    for b in 0..7 {
        assert_eq!(
            c.read_block(&huge, BlockIndex(b)).expect("read").as_deref(),
            Some(&block(b as u8, BS)[..]),
            "block {b} kept intact"
        );
    }
    for b in 7..10 {
        assert!(!c.has_block(&huge, BlockIndex(b)), "block {b} punched");
    }
    let file = d.path().join("cache/data/0000000000000001.blk");
    let bytes = std::fs::read(&file).expect("data");
    assert_eq!(bytes.len() as u64, 10 * BS, "size kept");
    assert!(
        bytes[7 * BS as usize..].iter().all(|b| *b == 0),
        "punched range reads as zeros"
    );
}

#[test]
fn limits_combine_size_cap_and_free_space_floor() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    for b in 0..4 {
        c.write_block(&named("x"), 4 * BS, BlockIndex(b), &block(1, BS))
            .expect("write");
    }
    let (total, free) = c.disk_usage().expect("statvfs");
    assert!(total > 0 && free <= total);
    // No limits set, or generous ones: nothing to do.
    assert_eq!(c.enforce_limits().expect("noop"), Evicted::default());
    c.set_limits(Limits {
        max_size: Limit::Bytes(u64::MAX),
        min_free: Limit::Bytes(0),
    });
    assert_eq!(c.enforce_limits().expect("noop"), Evicted::default());
    // A cap below the cached bytes evicts down to it; an object not much larger than what
    // must go is dropped whole.
    c.set_limits(Limits {
        max_size: Limit::Bytes(2 * BS),
        min_free: Limit::Bytes(0),
    });
    assert_eq!(c.enforce_limits().expect("cap").bytes, 4 * BS);
    assert_eq!(c.used_bytes(), 0);
    // Admission keeps the cap: writing 5 blocks under a 2-block cap leaves at most 2.
    for b in 0..5 {
        c.write_block(&named(&format!("k{b}")), BS, BlockIndex(0), &block(2, BS))
            .expect("admitted after eviction");
        assert!(c.used_bytes() <= 2 * BS, "cap held after block {b}");
    }
    assert_eq!(
        c.used_bytes(),
        c.stats().bytes,
        "the running count matches a walk"
    );
    // A floor the disk cannot meet empties the cache rather than fill the disk, and a new
    // block is refused rather than written.
    c.set_limits(Limits {
        max_size: Limit::Bytes(u64::MAX),
        min_free: Limit::ShareOfDisk(1.0),
    });
    c.enforce_limits().expect("floor");
    assert_eq!(c.stats().bytes, 0);
    assert!(matches!(
        c.write_block(&named("z"), BS, BlockIndex(0), &block(3, BS)),
        Err(CacheError::NoRoom { .. })
    ));
}

/// With an advisor, objects no plan reads go first (even recently read ones), then the one
/// read furthest in the future; objects in a plan's protected window stay. Without plans
/// (the advisor answers `None`), least recently used first as before.
#[test]
fn eviction_follows_the_plans_next_uses() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    let keys = ["unplanned", "soon", "later", "window", "next"];
    for (i, k) in keys.iter().enumerate() {
        c.write_block(&named(k), BS, BlockIndex(0), &block(i as u8, BS))
            .expect("write");
        // `window` read longest ago, `unplanned` most recently.
        c.set_last_access(k, [900, 500, 400, 100, 300][i]);
    }
    let planned = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let p = planned.clone();
    c.set_advisor(Arc::new(move |names: &[(&str, &str)]| {
        p.load(Ordering::Relaxed).then(|| {
            names
                .iter()
                .map(|(_, k)| match *k {
                    "soon" => NextUse::In(5),
                    "later" => NextUse::In(50),
                    "window" => NextUse::Protected,
                    "next" => NextUse::In(1),
                    _ => NextUse::Unplanned,
                })
                .collect()
        })
    }));
    let gone = |c: &Cache| -> Vec<&str> {
        keys.iter()
            .copied()
            .filter(|k| !c.has_block(&named(k), BlockIndex(0)))
            .collect()
    };
    c.evict_to(4 * BS).expect("evict");
    assert_eq!(
        gone(&c),
        ["unplanned"],
        "no plan reads it: first, however recent"
    );
    c.evict_to(3 * BS).expect("evict");
    assert_eq!(gone(&c), ["unplanned", "later"], "the furthest next use");
    c.evict_to(0).expect("evict");
    assert_eq!(
        gone(&c),
        ["unplanned", "soon", "later", "next"],
        "the protected window stays"
    );
    // No plans: least recently used first.
    planned.store(false, Ordering::Relaxed);
    c.write_block(&named("soon"), BS, BlockIndex(0), &block(9, BS))
        .expect("write");
    c.set_last_access("soon", 2000);
    c.evict_to(BS).expect("evict");
    assert_eq!(
        gone(&c),
        ["unplanned", "later", "window", "next"],
        "LRU: window (oldest) goes"
    );
}

#[test]
fn pinned_objects_are_not_evicted() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    let (a, b) = (named("a"), named("b"));
    c.write_block(&a, BS, BlockIndex(0), &block(1, BS))
        .expect("write");
    c.write_block(&b, 2 * BS, BlockIndex(0), &block(2, BS))
        .expect("write");
    c.set_last_access("a", 1);
    assert!(
        c.pin_complete(&b).expect("pin").is_none(),
        "b is incomplete"
    );
    let (oid, _file) = c.pin_complete(&a).expect("pin").expect("a is complete");
    assert_eq!(c.verify(&a).expect("verify"), 0);
    c.evict_to(0).expect("evict");
    assert!(c.has_block(&a, BlockIndex(0)), "pinned a stays");
    assert!(!c.has_block(&b, BlockIndex(0)), "b goes");
    c.unpin(&a, oid);
    c.evict_to(0).expect("evict");
    assert!(!c.has_block(&a, BlockIndex(0)), "unpinned a goes");
}

#[test]
fn a_second_user_of_the_directory_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    let e = Cache::open(cfg(d.path())).expect_err("second open");
    let msg = e.to_string();
    assert!(
        msg.contains("in use") && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    drop(c);
    Cache::open(cfg(d.path())).expect("free again after the first closes");
}

fn in_dir(dir: &str, i: u64) -> ObjectId {
    ObjectId {
        backend: "b".into(),
        key: format!("{dir}/obj-{i:03}"),
        etag: "e".into(),
    }
}

fn team(name: &str, dir: &str, blocks: u64) -> Quota {
    Quota {
        team: name.into(),
        paths: vec![QuotaPath {
            backend: "b".into(),
            prefix: dir.into(),
        }],
        max_bytes: blocks * BS,
    }
}

#[test]
fn quotas_cap_each_team_and_spare_teams_within_theirs() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = Cache::open(cfg(d.path())).expect("open");
    c.set_limits(Limits {
        max_size: Limit::Bytes(8 * BS),
        min_free: Limit::Bytes(0),
    });
    c.set_quotas(vec![team("a", "ta", 4), team("b", "tb", 3)])
        .expect("quotas");
    let used = |c: &Cache| -> Vec<u64> { c.quota_use().iter().map(|u| u.used_bytes).collect() };
    // Team b fills its quota exactly.
    for i in 0..3 {
        c.write_block(&in_dir("tb", i), BS, BlockIndex(0), &block(2, BS))
            .expect("b");
    }
    // Team a reads far more than its quota: it never holds more, it evicts its own oldest.
    for i in 0..20 {
        c.write_block(&in_dir("ta", i), BS, BlockIndex(0), &block(3, BS))
            .expect("a");
        let u = used(&c);
        assert!(u[0] <= 4 * BS, "team a over quota after {i}: {u:?}");
    }
    assert!(c.has_block(&in_dir("ta", 19), BlockIndex(0)), "newest kept");
    // b's data survived all of it: b is within its quota.
    for i in 0..3 {
        assert!(
            c.has_block(&in_dir("tb", i), BlockIndex(0)),
            "b's block {i}"
        );
    }
    // Unteamed data filling the cap takes room from itself and team a (over nothing) but
    // never from b.
    for i in 0..20 {
        c.write_block(&in_dir("free", i), BS, BlockIndex(0), &block(4, BS))
            .expect("free");
        assert!(c.used_bytes() <= 8 * BS);
    }
    for i in 0..3 {
        assert!(
            c.has_block(&in_dir("tb", i), BlockIndex(0)),
            "b's block {i} after unteamed reads"
        );
    }
    // Usage per team matches the blocks held.
    let u = c.quota_use();
    assert_eq!(u[1].used_bytes, 3 * BS);
    assert_eq!(u[1].objects, 3);
    // A new quota set recounts from what is cached; overlapping paths are refused.
    assert!(
        c.set_quotas(vec![team("a", "ta", 4), team("x", "ta/sub", 1)])
            .is_err()
    );
    c.set_quotas(vec![team("b", "tb", 2)]).expect("shrink b");
    assert_eq!(used(&c), vec![3 * BS], "b is now over its quota");
    c.write_block(&in_dir("tb", 9), BS, BlockIndex(0), &block(5, BS))
        .expect("b again");
    assert!(
        used(&c)[0] <= 2 * BS,
        "an over-quota team evicts its own data first"
    );
}

/// One change that cannot be written (a block row naming an object that is not there) was
/// rolled back with its whole batch: every other block of the batch was lost from the index
/// and refetched after a restart. Now only that change is left out.
#[test]
fn regression_one_bad_index_row_lost_its_whole_batch() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("index.db");
    let (mut conn, _) = index::open(&path, BS).expect("index");
    let batch = vec![
        index::Op::PutObject {
            id: 1,
            backend: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            size: 3 * BS,
            last_access: 1,
        },
        index::Op::PutBlock {
            object_id: 1,
            block: 0,
            crcs: vec![1].into(),
        },
        // Object 99 does not exist: the foreign key refuses this row.
        index::Op::PutBlock {
            object_id: 99,
            block: 0,
            crcs: vec![2].into(),
        },
        index::Op::PutBlock {
            object_id: 1,
            block: 2,
            crcs: vec![3].into(),
        },
    ];
    let skipped = index::apply(&mut conn, batch, &mut Vec::new()).expect("batch");
    assert_eq!(skipped.count, 1);
    assert!(
        skipped
            .first
            .as_deref()
            .unwrap_or("")
            .contains("FOREIGN KEY"),
        "{skipped:?}"
    );
    let loaded = index::load(&conn).expect("load");
    assert_eq!(loaded.len(), 1);
    let mut blocks: Vec<u64> = loaded[0].blocks.iter().map(|(b, _)| *b).collect();
    blocks.sort_unstable();
    assert_eq!(blocks, vec![0, 2]);
}

/// A garbage `index.db` stopped the daemon from starting, with a message that did not say
/// what to do. Now it is moved aside (kept for a post-mortem), the cache starts empty, and
/// the data files it named are removed.
#[test]
fn regression_a_garbage_index_stopped_the_start() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let c = Cache::open(cfg(d.path())).expect("open");
        c.write_block(&obj("v1"), BS, BlockIndex(0), &block(1, BS))
            .expect("write");
    }
    let index = d.path().join("cache/index.db");
    let _ = std::fs::remove_file(d.path().join("cache/index.db-wal"));
    let _ = std::fs::remove_file(d.path().join("cache/index.db-shm"));
    std::fs::write(&index, vec![0x5Au8; 64 << 10]).expect("garbage");
    let c = Cache::open(cfg(d.path())).expect("starts despite the damage");
    assert_eq!(c.stats(), CacheStats::default());
    assert!(!c.has_block(&obj("v1"), BlockIndex(0)));
    let aside: Vec<String> = std::fs::read_dir(d.path().join("cache"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index.db.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_dir(d.path().join("cache/data"))
            .expect("ls")
            .count(),
        0,
        "the data files the damaged index named are gone"
    );
    // And the new index works.
    c.write_block(&obj("v1"), BS, BlockIndex(0), &block(1, BS))
        .expect("write");
    drop(c);
    let c = Cache::open(cfg(d.path())).expect("reopen");
    assert!(c.has_block(&obj("v1"), BlockIndex(0)));
}

/// Format 2 (before store checksums) is upgraded in place: its cached blocks stay, and the
/// store checksum recorded afterwards survives a reopen.
#[test]
fn a_format_2_index_is_upgraded_keeping_its_blocks() {
    let v2_schema = index::SCHEMA.replace(
        "    store_checksum TEXT,\n    store_verified INTEGER NOT NULL DEFAULT 0,\n",
        "",
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(v2_schema.as_bytes())),
        "c77270ce77736cb3e7ddf43d6ebd4ca419828528ec271e1e16a8311fc771de22",
        "format 2's schema is format 3's without the store checksum columns"
    );
    let d = tempfile::tempdir().expect("tempdir");
    {
        let c = Cache::open(cfg(d.path())).expect("open");
        c.write_block(&obj("v1"), 2 * BS, BlockIndex(0), &block(3, BS))
            .expect("write");
        c.flush().expect("flush");
    }
    let conn = rusqlite::Connection::open(d.path().join("cache/index.db")).expect("sqlite");
    conn.execute_batch(
        "ALTER TABLE objects DROP COLUMN store_checksum;
         ALTER TABLE objects DROP COLUMN store_verified;",
    )
    .expect("back to format 2");
    conn.pragma_update(None, "user_version", 2)
        .expect("version");
    drop(conn);
    {
        let c = Cache::open(cfg(d.path())).expect("upgrade");
        assert_eq!(c.stats().blocks, 1, "the block survived the upgrade");
        assert_eq!(
            c.read_block(&obj("v1"), BlockIndex(0)).expect("read"),
            Some(Bytes::from(block(3, BS)))
        );
        assert_eq!(c.store_checksum(&obj("v1")), None);
        c.set_store_checksum(&obj("v1"), Some("crc32c:0000002a"))
            .expect("record");
        c.mark_store_verified(&obj("v1")).expect("verified");
        c.flush().expect("flush");
    }
    let c = Cache::open(cfg(d.path())).expect("reopen");
    assert_eq!(
        c.store_checksum(&obj("v1")).as_deref(),
        Some("crc32c:0000002a")
    );
    assert_eq!(
        c.store_checksum(&obj("v2")),
        None,
        "another version has none"
    );
    assert!(c.store_verified(&obj("v1")));
    // New bytes were not checked against the store.
    c.write_block(&obj("v1"), 2 * BS, BlockIndex(1), &block(4, BS))
        .expect("write");
    assert!(!c.store_verified(&obj("v1")));
    c.flush().expect("flush");
    drop(c);
    let c = Cache::open(cfg(d.path())).expect("reopen");
    assert!(!c.store_verified(&obj("v1")), "the reset was persisted");
}

/// The read counters a daemon hands to the cache reach the index, across a reopen, without
/// counting anything twice.
#[test]
fn read_counters_persist_once_each() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let d = tempfile::tempdir().expect("tempdir");
    let hits = Arc::new(AtomicU64::new(0));
    {
        let c = Arc::new(Cache::open(cfg(d.path())).expect("open"));
        let h = hits.clone();
        let p = c
            .spawn_counter_persistence(std::time::Duration::from_secs(3600), move || ReadTotals {
                hit_blocks: h.load(Ordering::Relaxed),
                ..Default::default()
            })
            .expect("spawn");
        hits.store(5, Ordering::Relaxed);
        p.persist_now();
        p.persist_now();
        hits.store(7, Ordering::Relaxed);
        p.persist_now();
        c.flush().expect("flush");
    }
    let s = read_index_summary(&d.path().join("cache")).expect("summary");
    assert_eq!(s.counters.get("hit_blocks"), Some(&7), "{:?}", s.counters);
}
