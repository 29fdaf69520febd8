//! Faults a training job must never see, through a real mount over moto with a fault-
//! injecting proxy in between (the real HTTP client stack is exercised): bursts of
//! throttling ridden out by 32 concurrent readers, first-byte stalls abandoned and retried,
//! and a dead endpoint that fails uncached reads within the documented bound instead of
//! hanging. Every byte read is checked against what was uploaded.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Mount, runtime, sha256, value};
use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend, random_bytes, upload_many};

fn scrape(m: &Mount) -> prometheus_parse::Scrape {
    common::scrape(m).0
}

const MIB: usize = 1 << 20;
/// Concurrent readers, as many as the run had.
const READERS: usize = 32;

/// Moto holding `files` objects `f/NN` of `size` bytes, a proxy in front, and a mount
/// through the proxy.
fn setup(files: usize, size: usize, extra: &str) -> (Emulator, DelayProxy, Mount, Vec<Vec<u8>>) {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("faults").expect("bucket");
    let objects: Vec<(String, Vec<u8>)> = (0..files)
        .map(|i| (format!("f/{i:02}"), random_bytes(size, 100 + i as u64)))
        .collect();
    let data = objects.iter().map(|(_, d)| d.clone()).collect();
    runtime()
        .block_on(upload_many(&s3.backend("direct", "faults", ""), objects, 8))
        .expect("upload");
    let proxy = DelayProxy::counting(s3.port).expect("proxy");
    let backend = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s3",
        "faults",
        "",
    );
    let m = Mount::start(&[backend], extra);
    (s3, proxy, m, data)
}

/// Moto with `bucket` holding `obj` = `data` (a single-part upload).
fn moto_with_obj(bucket: &str, data: &[u8]) -> Emulator {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket(bucket).expect("bucket");
    runtime()
        .block_on(upload_many(
            &s3.backend("direct", bucket, ""),
            vec![("obj".into(), data.to_vec())],
            1,
        ))
        .expect("upload");
    s3
}

/// Reads `path` expecting `EIO` within the documented bound for an unreachable store:
/// `retry.unreachable` (3 s in these tests) plus one backoff (at most 8 s) and one attempt's
/// timeout; the retry deadline (2 min) is far beyond it.
fn fails_with_eio_within(path: &std::path::Path, what: &str) {
    let start = Instant::now();
    let e = std::fs::read(path).expect_err(what);
    let took = start.elapsed();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}");
    assert!(
        took < Duration::from_secs(30),
        "{what} took {took:?} to fail"
    );
    eprintln!("figures: {what}: EIO after {took:.2?}");
}

/// Reads every file at once, one thread each; returns the failures (path: error).
fn read_concurrently(m: &Mount, data: &[Vec<u8>]) -> Vec<String> {
    let data = Arc::new(data.to_vec());
    let handles: Vec<_> = (0..data.len())
        .map(|i| {
            let path = m.path(&format!("s3/f/{i:02}"));
            let data = data.clone();
            std::thread::spawn(move || match std::fs::read(&path) {
                Ok(got) if sha256(&got) == sha256(&data[i]) => None,
                Ok(got) => Some(format!(
                    "{}: WRONG BYTES ({} bytes read)",
                    path.display(),
                    got.len()
                )),
                Err(e) => Some(format!("{}: {e}", path.display())),
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().expect("reader thread"))
        .collect()
}

/// A burst of `length` in which the store answers every request with 503 or 429 (taking
/// turns), starting as 32 readers open and read their files cold: none of them sees it.
fn throttling_burst_is_invisible(length: Duration) {
    let (_s3, proxy, m, data) = setup(READERS, 2 * MIB + 17, "");
    // The namespace is known before the burst: what the burst must not break is the reads.
    assert_eq!(
        std::fs::read_dir(m.path("s3/f")).expect("list").count(),
        READERS
    );
    proxy.throttle_for(length, &[503, 429], None);
    let start = Instant::now();
    let failures = read_concurrently(&m, &data);
    let took = start.elapsed();
    assert!(failures.is_empty(), "{failures:#?}\n{}", m.log());
    let throttled = proxy
        .stats
        .throttled
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        throttled >= READERS as u64,
        "the burst answered {throttled} requests: it did not hit the readers"
    );
    assert!(
        took >= length,
        "the reads ended in {took:?}, before the {length:?} burst did: it did not hold them"
    );
    let s = scrape(&m);
    let retries = value(&s, "warpdrive_backend_retries_total", &[("backend", "s3")]);
    let throttled_retries = value(
        &s,
        "warpdrive_backend_retries_total",
        &[("backend", "s3"), ("reason", "throttled")],
    );
    assert!(throttled_retries >= 1.0 && throttled_retries <= retries);
    assert_eq!(
        value(&s, "warpdrive_backend_give_ups_total", &[("backend", "s3")]),
        0.0
    );
    eprintln!(
        "figures: a {length:?} burst of 503/429: 0 of {READERS} reads failed; {throttled} answers throttled, {retries} retries, 0 give-ups; the reads ended after {took:.1?}"
    );
}

#[test]
fn a_3s_throttling_burst_is_invisible_to_32_readers() {
    throttling_burst_is_invisible(Duration::from_secs(3));
}

#[test]
fn regression_a_30s_throttling_burst_failed_reads_with_eio() {
    throttling_burst_is_invisible(Duration::from_secs(30));
}

/// The store's `Retry-After` is honoured: with `Retry-After: 2` on every throttled answer,
/// the waits are counted and the reads succeed.
#[test]
fn retry_after_is_honoured_and_counted() {
    let (_s3, proxy, m, data) = setup(4, MIB, "");
    assert_eq!(std::fs::read_dir(m.path("s3/f")).expect("list").count(), 4);
    proxy.throttle_for(Duration::from_secs(1), &[503], Some(2));
    let failures = read_concurrently(&m, &data);
    assert!(failures.is_empty(), "{failures:#?}\n{}", m.log());
    let s = scrape(&m);
    let waited = value(
        &s,
        "warpdrive_backend_retry_wait_seconds_total",
        &[("backend", "s3"), ("reason", "retry_after")],
    );
    assert!(waited >= 1.0, "waited {waited} s for Retry-After");
}

/// A request whose answer does not start is abandoned after the first-byte timeout (a few
/// times the recent p99, at least 2 s) and retried: two 30 s stalls in a row cost the reader
/// seconds, not a minute, and not an error.
#[test]
fn regression_a_first_byte_stall_cost_the_reader_the_whole_stall() {
    const STALL: Duration = Duration::from_secs(30);
    let (_s3, proxy, m, data) = setup(24, 64 << 10, "");
    // Twenty quick reads give the daemon a p99 to go by.
    for (i, d) in data.iter().enumerate().take(20) {
        let got = std::fs::read(m.path(&format!("s3/f/{i:02}"))).expect("read");
        assert_eq!(sha256(&got), sha256(d));
    }
    proxy.stall_next(2, STALL);
    let start = Instant::now();
    let got = std::fs::read(m.path("s3/f/21")).expect("read after stalls");
    let took = start.elapsed();
    assert_eq!(sha256(&got), sha256(&data[21]));
    assert_eq!(
        proxy
            .stats
            .stalled
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(
        took < STALL,
        "the read took {took:?}: it waited out a {STALL:?} stall"
    );
    eprintln!("figures: a read behind two {STALL:?} first-byte stalls took {took:.2?}");
    let s = scrape(&m);
    assert!(
        value(
            &s,
            "warpdrive_backend_errors_total",
            &[("backend", "s3"), ("kind", "timeout")]
        ) >= 2.0
    );
}

/// With the store gone (connections refused), an uncached read fails with `EIO` once the
/// store has been silent for `retry.unreachable`, and the next one at once: never the whole
/// retry deadline, never a hang.
#[test]
fn a_dead_endpoint_fails_uncached_reads_within_the_unreachable_bound() {
    let (s3, proxy, m, _data) = setup(3, MIB, "retry: { unreachable: 3s }\n");
    assert_eq!(std::fs::read_dir(m.path("s3/f")).expect("list").count(), 3);
    drop(proxy);
    drop(s3);
    fails_with_eio_within(&m.path("s3/f/00"), "a read with the store gone");
    let start = Instant::now();
    let e = std::fs::read(m.path("s3/f/01")).expect_err("store gone");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let second = start.elapsed();
    assert!(
        second < Duration::from_secs(5),
        "a known-dead store still cost {second:?}"
    );
    let s = scrape(&m);
    assert!(
        value(
            &s,
            "warpdrive_backend_give_ups_total",
            &[("backend", "s3"), ("reason", "unreachable")]
        ) >= 1.0
    );
}

/// How the store fails in an outage.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Connections refused.
    Down,
    /// Connections accepted, never answered.
    Blackholed,
}

/// With the store down or blackholed, cached files kept failing at `open` with `EIO` once
/// `metadata_ttl` had passed (a blackholed one after 120 s), and a `stat` of a file whose
/// directory was never listed failed even within the TTL. Now the mount serves what it knows
/// (stale_if_error): cached files open and read in well under a second after the TTL, known
/// names answer `stat`, and an uncached read fails with `EIO` within the documented bound.
fn an_outage_keeps_cached_files_readable(outage: Outage) {
    let (_s3, proxy, m, data) = setup(6, MIB + 5, "metadata_ttl: 2s\nretry: { unreachable: 3s }\n");
    // Files 0-2 are read (cached); 3-5 only looked up. Their directory is never listed.
    for (i, d) in data.iter().enumerate().take(3) {
        let got = std::fs::read(m.path(&format!("s3/f/{i:02}"))).expect("read");
        assert_eq!(sha256(&got), sha256(d));
    }
    for i in 3..6 {
        std::fs::metadata(m.path(&format!("s3/f/{i:02}"))).expect("stat");
    }
    let proxy = match outage {
        Outage::Down => {
            drop(proxy);
            None
        }
        Outage::Blackholed => {
            proxy.stall_next(u64::MAX, Duration::from_secs(3600));
            Some(proxy)
        }
    };
    // Past the TTL (and the kernel's 1 s), every answer needs the store or the fallback.
    std::thread::sleep(Duration::from_millis(2500));
    for (i, d) in data.iter().enumerate().take(3) {
        let start = Instant::now();
        let got = std::fs::read(m.path(&format!("s3/f/{i:02}")))
            .unwrap_or_else(|e| panic!("{outage:?}: cached f/{i:02}: {e}\n{}", m.log()));
        let took = start.elapsed();
        assert_eq!(sha256(&got), sha256(d));
        assert!(
            took < Duration::from_secs(1),
            "{outage:?}: a cached file took {took:?}"
        );
        eprintln!("figures: {outage:?}: cached f/{i:02} read after the TTL in {took:.3?}");
    }
    let meta = std::fs::metadata(m.path("s3/f/04")).expect("a known name answers stat");
    assert_eq!(meta.len(), (MIB + 5) as u64);
    fails_with_eio_within(&m.path("s3/f/05"), &format!("{outage:?}: an uncached read"));
    let s = scrape(&m);
    assert!(
        value(
            &s,
            "warpdrive_backend_stale_served_total",
            &[("backend", "s3")]
        ) >= 3.0
    );
    assert!(
        m.log().contains("serving what the mount knows"),
        "{}",
        m.log()
    );
    drop(proxy);
}

#[test]
fn regression_a_store_outage_made_cached_files_unreadable() {
    an_outage_keeps_cached_files_readable(Outage::Down);
}

#[test]
fn regression_a_blackholed_store_blocked_opens_of_cached_files_for_minutes() {
    an_outage_keeps_cached_files_readable(Outage::Blackholed);
}

/// A handle open on version 1 while the object is overwritten and a second handle opens
/// version 2. Before: with passthrough off the first handle read version 1's bytes and then
/// version 2's (the two handles shared the inode's page cache), or stopped short at the new
/// size; with passthrough on, every new open failed with `EIO` while the first handle lived.
/// Now the path gets a new inode for the new version: the second open reads exactly version
/// 2, and every read through the first handle returns version 1's bytes or `ESTALE`.
fn two_handles_across_an_overwrite(passthrough: &str) {
    use std::os::unix::fs::FileExt;
    let v1 = random_bytes(6 * MIB + 11, 31);
    let v2 = random_bytes(4 * MIB + 3, 32);
    let s3 = moto_with_obj("over", &v1);
    let direct = s3.backend("direct", "over", "");
    let backend = emulator_backend(Kind::Moto, &s3.endpoint(), "s3", "over", "");
    let m = Mount::start(
        &[backend],
        &format!("metadata_ttl: 1s\nfuse: {{ passthrough: {passthrough} }}\n"),
    );
    let path = m.path("s3/obj");
    // The whole of v1, cached (passthrough opens it from the cache file from now on).
    assert_eq!(sha256(&std::fs::read(&path).expect("v1")), sha256(&v1));
    let h1 = std::fs::File::open(&path).expect("open v1");
    let mut first = vec![0u8; MIB];
    h1.read_exact_at(&mut first, 0).expect("h1 first MiB");
    assert_eq!(first, v1[..MIB]);

    runtime()
        .block_on(upload_many(&direct, vec![("obj".into(), v2.clone())], 1))
        .expect("overwrite");
    std::thread::sleep(Duration::from_millis(2200)); // past metadata_ttl and the kernel's 1 s

    let got = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("passthrough {passthrough}: open of v2: {e}\n{}", m.log()));
    assert_eq!(got.len(), v2.len(), "passthrough {passthrough}");
    assert_eq!(sha256(&got), sha256(&v2), "passthrough {passthrough}");

    // Every read through h1: v1's bytes, or ESTALE; never v2's, never short of v1's size.
    let (mut good, mut stale) = (0, 0);
    for at in (0..v1.len()).step_by(MIB / 2) {
        let want = &v1[at..(at + MIB / 2).min(v1.len())];
        let mut buf = vec![0u8; want.len()];
        match h1.read_exact_at(&mut buf, at as u64) {
            Ok(()) => {
                assert!(
                    buf == want,
                    "passthrough {passthrough}: h1 at {at} returned bytes that are not v1's"
                );
                good += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => stale += 1,
            Err(e) => panic!("passthrough {passthrough}: h1 at {at}: {e}\n{}", m.log()),
        }
    }
    assert!(good > 0, "h1 read nothing of v1 ({stale} ESTALE)");
    eprintln!(
        "figures: passthrough {passthrough}: new open read v2 whole; old handle: {good} reads of v1's bytes, {stale} ESTALE, 0 mixed"
    );
    assert_eq!(
        h1.metadata().expect("fstat").len(),
        v1.len() as u64,
        "h1 keeps v1's size"
    );
    drop(h1);
    assert_eq!(
        sha256(&std::fs::read(&path).expect("v2 again")),
        sha256(&v2)
    );
}

#[test]
fn regression_an_overwrite_mixed_versions_in_one_handle_without_passthrough() {
    two_handles_across_an_overwrite("off");
}

#[test]
fn regression_an_overwrite_made_new_opens_fail_with_eio_under_passthrough() {
    two_handles_across_an_overwrite("auto");
}

/// Passthrough reads skip the daemon and so its checksums. Damage to a cache file after the
/// object's first check was served to readers (64 of 64 flipped bytes). Now a passthrough
/// open checks the object again whenever its data file changed since it was last checked
/// (its change time moved): the damage is found, the blocks refetched, the right bytes read.
#[test]
fn regression_damage_to_a_cache_file_after_its_first_check_was_served_by_passthrough() {
    let data = random_bytes(4 * MIB + 9, 41);
    let s3 = moto_with_obj("ptdmg", &data);
    let backend = emulator_backend(Kind::Moto, &s3.endpoint(), "s3", "ptdmg", "");
    let m = Mount::start(&[backend], "");
    let path = m.path("s3/obj");
    assert_eq!(sha256(&std::fs::read(&path).expect("cold")), sha256(&data));
    // Fully cached: this open is checked and served by passthrough.
    assert_eq!(sha256(&std::fs::read(&path).expect("warm")), sha256(&data));
    let opens = |m: &Mount| value(&scrape(m), "warpdrive_cache_passthrough_opens_total", &[]);
    let pt_before = opens(&m);
    assert!(pt_before >= 1.0, "passthrough was not used");
    // Flip 64 bytes across the object's data file, behind the daemon's back.
    let len = data.len() as u64;
    let at: Vec<u64> = (0..64u64).map(|i| i * (len / 64) + 7).collect();
    assert_eq!(damage_cache_files(&m, &at), 1);
    common::drop_page_cache();
    let got = std::fs::read(&path).expect("after damage");
    eprintln!(
        "figures: 64 bytes flipped in the cache file after its check: {} served",
        got.iter().zip(&data).filter(|(a, b)| a != b).count()
    );
    assert!(
        got == data,
        "damaged bytes were served: {} of {} differ",
        got.iter().zip(&data).filter(|(a, b)| a != b).count(),
        data.len()
    );
    let s = scrape(&m);
    assert!(
        value(&s, "warpdrive_cache_corrupt_blocks_total", &[]) >= 1.0,
        "the damage was not counted"
    );
    assert!(
        opens(&m) > pt_before,
        "served by passthrough again once repaired"
    );
    assert!(
        m.log()
            .contains("damaged cached blocks found before passthrough"),
        "{}",
        m.log()
    );
}

/// Polls the metric `name` until it reaches `at_least` (within 20 s).
fn wait_metric(m: &Mount, name: &str, at_least: f64, what: &str) {
    let t0 = Instant::now();
    while value(&scrape(m), name, &[]) < at_least {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: {name} stayed below {at_least}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A byte flipped on its way from the store was served, cached for good, and `verify`
/// called the cache sound: nothing compared the bytes with a checksum the store keeps. No
/// store gives a checksum of an arbitrary range, so the read that fetched the damage still
/// returns it (documented); but as soon as the object is fully cached its bytes are hashed
/// whole and compared with the store's checksum (S3: the ETag, the MD5 of a single-part
/// upload; Azure: Content-MD5; GCS: CRC32C): the mismatch is counted and logged, the object
/// dropped and refetched, every later read returns the store's bytes (by passthrough), and
/// `verify` reports the object checked against its store.
#[test]
fn regression_a_byte_corrupted_in_transit_was_cached_for_good() {
    let data = random_bytes(3 * MIB + 1, 51);
    for kind in [Kind::Moto, Kind::Azurite, Kind::Gcs] {
        let port = warpdrive_testkit::free_port().expect("port");
        let proxy = DelayProxy::counting(port).expect("proxy");
        let em = Emulator::start_behind(kind, port, proxy.port).expect("emulator");
        em.create_bucket("transit").expect("bucket");
        let backend = emulator_backend(kind, &em.endpoint_via(proxy.port), "b", "transit", "");
        runtime()
            .block_on(upload_many(&backend, vec![("obj".into(), data.clone())], 1))
            .expect("upload");
        let m = Mount::start(&[backend], "");
        let path = m.path("b/obj");
        proxy.corrupt_next_bodies(1);
        let first = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{kind:?}: cold read: {e}\n{}", m.log()));
        assert_eq!(
            proxy
                .stats
                .corrupted
                .load(std::sync::atomic::Ordering::Relaxed),
            1,
            "{kind:?}: the proxy damaged no answer"
        );
        assert!(
            first != data,
            "{kind:?}: the damaged range should have reached this read (no range checksum)"
        );
        // Fully cached now: checked whole against the store's checksum, and dropped.
        wait_metric(
            &m,
            "warpdrive_cache_store_checksum_mismatches_total",
            1.0,
            &format!("{kind:?}"),
        );
        let second = std::fs::read(&path).expect("second read");
        assert!(second == data, "{kind:?}: the damage was served again");
        wait_metric(
            &m,
            "warpdrive_cache_store_checksum_matches_total",
            1.0,
            &format!("{kind:?}: the refetched copy"),
        );
        common::drop_page_cache();
        let before = proxy.stats.data_reads().1;
        assert!(
            std::fs::read(&path).expect("third read") == data,
            "{kind:?}"
        );
        assert_eq!(
            proxy.stats.data_reads().1,
            before,
            "{kind:?}: served from the cache"
        );
        let s = scrape(&m);
        assert_eq!(
            value(&s, "warpdrive_cache_store_checksum_mismatches_total", &[]),
            1.0,
            "{kind:?}"
        );
        assert!(
            value(&s, "warpdrive_cache_passthrough_opens_total", &[]) >= 1.0,
            "{kind:?}"
        );
        assert!(
            m.log()
                .contains("does not match the store's checksum (damaged on its way in)"),
            "{kind:?}: {}",
            m.log()
        );
        let v: serde_json::Value =
            serde_json::from_str(&common::ctl(&m, &["verify", "--json", "--each"]))
                .expect("verify json");
        assert_eq!(v["store_checked"], 1, "{kind:?}: {v}");
        assert_eq!(v["self_checked"], 0, "{kind:?}: {v}");
        assert_eq!(v["each"][0]["check"], "store", "{kind:?}: {v}");
        eprintln!(
            "figures: {kind:?}: byte flipped in transit: served by the read that fetched it, then caught against the store's checksum ({}), 0 served after; verify: store_checked {}",
            v["each"][0]["store_checksum"], v["store_checked"]
        );
    }
}

/// `verify` says which objects were checked against their store and which only against
/// themselves: an S3 multipart upload (its ETag is the MD5 of its 8 MiB parts' MD5s) is
/// checked against the store; an Azure blob committed from a block list without a
/// `Content-MD5` has nothing to be checked against but its own block checksums.
#[test]
fn verify_reports_objects_checked_against_their_store_and_against_themselves() {
    let data = random_bytes(17 * MIB + 5, 52);
    for (kind, expected) in [(Kind::Moto, "store"), (Kind::Azurite, "no_store_checksum")] {
        let em = Emulator::start(kind).expect("emulator");
        em.create_bucket("multi").expect("bucket");
        // In 8 MiB parts, as `warpdrive-ctl copy` writes objects larger than a part.
        let writer =
            warpdrive_store::Backend::build(&em.backend("b", "multi", "")).expect("client");
        let chunks = futures::stream::iter(
            data.chunks(MIB)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        runtime()
            .block_on(writer.put_stream("big", data.len() as u64, chunks))
            .expect("multipart upload");
        let m = Mount::start(&[em.backend("b", "multi", "")], "");
        assert!(std::fs::read(m.path("b/big")).expect("read") == data);
        let t0 = Instant::now();
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&common::ctl(&m, &["verify", "--json", "--each"]))
                    .expect("verify json");
            let check = v["each"][0]["check"].as_str().unwrap_or("").to_string();
            if check == expected {
                if expected == "store" {
                    assert_eq!(v["store_checked"], 1, "{v}");
                    assert!(
                        v["each"][0]["store_checksum"]
                            .as_str()
                            .is_some_and(|c| c.starts_with("md5-parts:3:")),
                        "{v}"
                    );
                } else {
                    assert_eq!(v["self_checked"], 1, "{v}");
                }
                break;
            }
            // The last blocks are written (and the object checked) just after the read.
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{kind:?}: checked as {check}, not {expected}: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            value(
                &scrape(&m),
                "warpdrive_cache_store_checksum_mismatches_total",
                &[]
            ),
            0.0
        );
    }
}

/// Flips the bytes at offsets `at` of every cache data file, behind the daemon's back;
/// returns how many files.
fn damage_cache_files(m: &Mount, at: &[u64]) -> usize {
    use std::os::unix::fs::FileExt;
    let files: Vec<_> = std::fs::read_dir(m.cache_dir().join("data"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    for p in &files {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .expect("data file");
        for &at in at {
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).expect("read");
            b[0] ^= 0x5A;
            f.write_all_at(&b, at).expect("write");
        }
    }
    files.len()
}

/// While a handle reads a cached file by passthrough, the kernel accepts only opens of the
/// same inode that share its backing file. A new open that could not (here: `verify` dropped
/// a damaged block, so the file was no longer fully cached) was answered as a page-cached
/// open, which the kernel fails with `EIO`. Now the version's cache file is repaired in place
/// and the open shares it (the first handle's reads are repaired too); when the repair
/// cannot be done (the store is gone), the open fails with `EBUSY` at once, as documented
/// (doc/SEMANTICS.md, "Passthrough"), never `EIO`.
#[test]
fn an_open_beside_a_live_passthrough_handle_shares_its_repaired_cache_file() {
    use std::os::unix::fs::FileExt;
    let data = random_bytes(4 * MIB + 9, 43);
    let s3 = moto_with_obj("ptmix", &data);
    let backend = emulator_backend(Kind::Moto, &s3.endpoint(), "s3", "ptmix", "");
    let m = Mount::start(&[backend], "retry: { unreachable: 2s }\n");
    let path = m.path("s3/obj");
    assert_eq!(sha256(&std::fs::read(&path).expect("cold")), sha256(&data));
    let opens = |m: &Mount| value(&scrape(m), "warpdrive_cache_passthrough_opens_total", &[]);
    // Fully cached and checked: this handle reads by passthrough, and stays open.
    let t0 = Instant::now();
    let h1 = loop {
        let before = opens(&m);
        let h = std::fs::File::open(&path).expect("open");
        if opens(&m) > before {
            break h;
        }
        drop(h);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never opened by passthrough"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let at = 2 * MIB as u64 + 5;
    assert_eq!(damage_cache_files(&m, &[at]), 1);
    let v: serde_json::Value =
        serde_json::from_str(&common::ctl_any(&m, &["verify", "--json"]).1).expect("verify json");
    assert_eq!(v["damaged_blocks"], 1, "{v}");
    // A second open while h1 holds its backing: repaired, shared, the store's bytes.
    let before = opens(&m);
    let got = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("an open beside a passthrough handle: {e}\n{}", m.log()));
    assert!(got == data, "wrong bytes beside a passthrough handle");
    assert_eq!(
        opens(&m),
        before + 1.0,
        "the second open shared the backing"
    );
    let mut b = [0u8; 16];
    h1.read_exact_at(&mut b, at).expect("h1 reads on");
    assert_eq!(
        b,
        data[at as usize..at as usize + 16],
        "h1 reads the repaired file"
    );

    // Damaged and dropped again, with the store gone: the open cannot share, and says so.
    assert_eq!(damage_cache_files(&m, &[at]), 1);
    let v: serde_json::Value =
        serde_json::from_str(&common::ctl_any(&m, &["verify", "--json"]).1).expect("verify json");
    assert_eq!(v["damaged_blocks"], 1, "{v}");
    drop(s3);
    let t0 = Instant::now();
    let e = std::fs::File::open(&path).expect_err("no open can share the damaged file now");
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}\n{}", m.log());
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    drop(h1);
}
