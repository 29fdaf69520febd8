//! The tier over a local directory (the store kind a shared filesystem uses), and over a
//! store that does not answer.

use std::time::Duration;

use warpdrive_config::{BackendConfig, DEFAULT_LEASE_TTL, SharedCacheConfig, SharedMode};
use warpdrive_testkit::{Kind, emulator_backend, local_backend};

use super::*;

const CHUNK: u64 = 1 << 20;

fn origin() -> BackendConfig {
    // Never asked: only its identity matters here.
    emulator_backend(Kind::Moto, "http://127.0.0.1:9", "data", "bucket", "ds/")
}

fn tier(store: BackendConfig, mode: SharedMode) -> (Arc<SharedTier>, SharedMetrics) {
    tier_with(store, mode, DEFAULT_LEASE_TTL, CHUNK)
}

fn tier_with(
    store: BackendConfig,
    mode: SharedMode,
    lease_ttl: Duration,
    chunk_size: u64,
) -> (Arc<SharedTier>, SharedMetrics) {
    let metrics = SharedMetrics::detached();
    let cfg = SharedCacheConfig {
        store,
        chunk_size,
        lease_ttl,
        mode,
        backends: vec!["data".into()],
        leases: true,
    };
    let t = SharedTier::new(&cfg, &[origin()], metrics.clone()).expect("tier");
    (t, metrics)
}

fn bytes(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Waits for `n` fills to have ended one way or another.
async fn fills_done(m: &SharedMetrics, n: u64) {
    let t0 = Instant::now();
    while ["created", "exists", "error", "timeout"]
        .iter()
        .map(|r| m.requests("put", r))
        .sum::<u64>()
        < n
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "fills never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_filled_chunk_is_read_back_and_a_second_fill_finds_it_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, m) = tier(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
    );
    let id = t
        .identity("data", "train/a.tar", "\"v1\"", 3 * CHUNK - 5)
        .expect("served");
    assert_eq!(
        id.key, "ds/train/a.tar",
        "the backend's prefix is part of the key"
    );
    assert!(
        t.identity("other", "k", "\"v\"", 1).is_none(),
        "not a served backend"
    );
    assert!(
        t.identity("data", "k", "", 1).is_none(),
        "no ETag, no identity"
    );

    assert_eq!(t.read("data", &id, 2).await, None);
    assert_eq!(m.requests("get", "absent"), 1);
    let last = bytes((CHUNK - 5) as usize, 1);
    t.fill(id.clone(), 2, last.clone(), None);
    fills_done(&m, 1).await;
    assert_eq!(m.requests("put", "created"), 1);
    assert_eq!(t.read("data", &id, 2).await, Some(last.clone()));
    assert_eq!(m.requests("get", "hit"), 1);

    // Another node's fill of the same chunk finds it and leaves it as it is.
    t.fill(id.clone(), 2, bytes((CHUNK - 5) as usize, 9), None);
    fills_done(&m, 2).await;
    assert_eq!(m.requests("put", "exists"), 1);
    assert_eq!(t.read("data", &id, 2).await, Some(last));

    // The object's key is nowhere in the store's names.
    let mut names = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            names.push(p.to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    assert!(
        names
            .iter()
            .all(|n| !n.contains("train") && !n.contains("a.tar")),
        "{names:?}"
    );
}

/// Chunks damaged, cut short, or stored under another chunk's key are refused by reason,
/// and read as misses: the caller goes to the origin.
#[tokio::test]
async fn damaged_and_swapped_chunks_are_misses_counted_by_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, m) = tier(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
    );
    let id = t
        .identity("data", "obj", "\"v1\"", 2 * CHUNK)
        .expect("served");
    t.fill(id.clone(), 0, bytes(CHUNK as usize, 1), None);
    t.fill(id.clone(), 1, bytes(CHUNK as usize, 2), None);
    fills_done(&m, 2).await;
    let path = |i| dir.path().join(chunk::key(&id, i));
    let good0 = std::fs::read(path(0)).expect("chunk 0");

    let mut flipped = good0.clone();
    flipped[chunk::header_len(CHUNK) + 4242] ^= 1;
    std::fs::write(path(0), &flipped).expect("flip");
    assert_eq!(t.read("data", &id, 0).await, None);
    assert_eq!(m.invalids("data"), 1);

    std::fs::write(path(0), &good0[..good0.len() - 100]).expect("truncate");
    assert_eq!(t.read("data", &id, 0).await, None);
    assert_eq!(m.invalids("length"), 1);

    std::fs::copy(path(1), path(0)).expect("swap");
    assert_eq!(t.read("data", &id, 0).await, None);
    assert_eq!(m.invalids("identity"), 1);

    // The same chunk asked for as another version of the object.
    let v2 = t
        .identity("data", "obj", "\"v2\"", 2 * CHUNK)
        .expect("served");
    std::fs::create_dir_all(path(1).parent().expect("dir")).expect("mkdir");
    let other = dir.path().join(chunk::key(&v2, 1));
    std::fs::create_dir_all(other.parent().expect("dir")).expect("mkdir");
    std::fs::copy(path(1), &other).expect("copy");
    assert_eq!(t.read("data", &v2, 1).await, None);
    assert_eq!(m.invalids("identity"), 2);
    assert_eq!(m.requests("get", "invalid"), 4, "every refusal is counted");
    assert_eq!(m.requests("get", "hit"), 0);
    std::fs::write(path(0), &good0).expect("restore");
    assert!(t.read("data", &id, 0).await.is_some());
}

#[tokio::test]
async fn a_read_only_node_never_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, m) = tier(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadOnly,
    );
    let id = t.identity("data", "obj", "\"v1\"", CHUNK).expect("served");
    t.fill(id.clone(), 0, bytes(CHUNK as usize, 1), None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    assert_eq!(
        m.requests("put", "created") + m.requests("put", "skipped"),
        0
    );
}

/// A tier that refuses connections costs each read at most its first failures, then is not
/// asked at all until its breaker lets a probe through.
#[tokio::test]
async fn a_dead_tier_is_skipped_after_a_few_failures() {
    // Nothing listens on port 9 of the loopback address.
    let store = emulator_backend(Kind::Moto, "http://127.0.0.1:9", "shared_cache", "tier", "");
    let (t, m) = tier(store, SharedMode::ReadWrite);
    let id = t.identity("data", "obj", "\"v1\"", CHUNK).expect("served");
    let t0 = Instant::now();
    for _ in 0..20 {
        assert_eq!(t.read("data", &id, 0).await, None);
    }
    let failed = m.requests("get", "error") + m.requests("get", "timeout");
    assert_eq!(failed, u64::from(BREAKER_FAILURES), "then skipped");
    assert_eq!(m.requests("get", "skipped"), 20 - failed);
    assert!(t0.elapsed() < FIRST_BYTE_DEADLINE * 4, "{:?}", t0.elapsed());
    tokio::time::sleep(BREAKER_MIN_OPEN).await;
    assert_eq!(t.read("data", &id, 0).await, None);
    assert_eq!(
        m.requests("get", "error") + m.requests("get", "timeout"),
        failed + 1,
        "one probe once the breaker's while is over"
    );
}

/// Two nodes miss one chunk at once: the first takes its lease and fetches it, the second
/// waits and reads what the first wrote (one origin fetch between them); a read-only node
/// waits too, and takes no lease.
#[tokio::test]
async fn a_node_that_finds_the_lease_held_waits_for_the_fill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t1, m1) = tier(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
    );
    let (t2, m2) = tier(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
    );
    let (t3, m3) = tier(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadOnly,
    );
    let id = t1.identity("data", "obj", "\"v1\"", CHUNK).expect("served");
    let Got::Miss(Some(claim)) = t1.get("data", &id, 0).await else {
        panic!("the first node takes the lease");
    };
    let (w2, w3) = (
        tokio::spawn({
            let (t2, id) = (t2.clone(), id.clone());
            async move { t2.get("data", &id, 0).await }
        }),
        tokio::spawn({
            let (t3, id) = (t3.clone(), id.clone());
            async move { t3.get("data", &id, 0).await }
        }),
    );
    // The holder's origin fetch takes a while; then it fills and lets the lease go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let data = bytes(CHUNK as usize, 5);
    t1.fill(id.clone(), 0, data.clone(), Some(claim));
    for (w, m) in [(w2, &m2), (w3, &m3)] {
        match w.await.expect("join") {
            Got::Hit(d) => assert_eq!(d, data),
            other => panic!("expected the filled chunk, got {other:?}"),
        }
        assert_eq!(m.waits("filled"), 1);
    }
    assert_eq!(m1.requests("lease", "taken"), 1);
    assert_eq!(m2.requests("lease", "held"), 1);
    assert_eq!(
        m3.requests("lease", "taken") + m3.requests("lease", "held"),
        0
    );
    fills_done(&m1, 1).await;
    let t0 = Instant::now();
    while dir.path().join(lease::key(&chunk::key(&id, 0))).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the lease was never given up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The lease holder dies before filling: the others wait no longer than the lease, then
/// fetch from the origin themselves; the stale lease is removed and taken over.
#[tokio::test]
async fn a_dead_holders_lease_costs_at_most_its_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = Duration::from_millis(800);
    let (t1, _) = tier_with(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
        ttl,
        CHUNK,
    );
    let (t2, m2) = tier_with(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
        ttl,
        CHUNK,
    );
    let id = t1.identity("data", "obj", "\"v1\"", CHUNK).expect("served");
    let Got::Miss(Some(_abandoned)) = t1.get("data", &id, 0).await else {
        panic!("the first node takes the lease");
    };
    let t0 = Instant::now();
    assert!(matches!(t2.get("data", &id, 0).await, Got::Miss(None)));
    let waited = t0.elapsed();
    assert!(
        waited >= ttl - Duration::from_millis(100) && waited < ttl + Duration::from_millis(700),
        "{waited:?}"
    );
    assert_eq!(m2.waits("expired"), 1);
    // The next miss finds the stale lease, removes it and takes the chunk over.
    let t0 = Instant::now();
    assert!(matches!(t2.get("data", &id, 0).await, Got::Miss(Some(_))));
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(m2.requests("lease", "stale"), 1);
}

/// A chunk is handed out piece by piece, each checked: a damaged third piece leaves the two
/// before it usable, and stops the chunk there.
#[tokio::test]
async fn pieces_before_a_damaged_one_are_handed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, metrics) = tier_with(
        local_backend("shared_cache", dir.path()),
        SharedMode::ReadWrite,
        DEFAULT_LEASE_TTL,
        4 * CHUNK,
    );
    let id = t
        .identity("data", "obj", "\"v1\"", 4 * CHUNK)
        .expect("served");
    let data = bytes(4 * CHUNK as usize, 3);
    t.fill(id.clone(), 0, data.clone(), None);
    fills_done(&metrics, 1).await;
    let path = dir.path().join(chunk::key(&id, 0));
    let mut raw = std::fs::read(&path).expect("chunk");
    raw[chunk::header_len(4 * CHUNK) + 2 * CHUNK as usize + 10] ^= 1;
    std::fs::write(&path, raw).expect("damage");
    let Fetched::Pieces(mut pieces) = t.fetch("data", &id, 0).await else {
        panic!("the chunk is there");
    };
    for i in 0..2 {
        let p = pieces.next().await.expect("a piece").expect("a good piece");
        assert_eq!(p, data.slice(i * CHUNK as usize..(i + 1) * CHUNK as usize));
    }
    assert_eq!(pieces.next().await, Some(Err(Refusal::Invalid)));
    assert_eq!(pieces.next().await, None);
    assert_eq!(metrics.invalids("data"), 1);
}
