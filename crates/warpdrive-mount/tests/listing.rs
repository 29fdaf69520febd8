//! Listings: a 100,000-object prefix lists completely through paged list calls, and listings
//! and attributes are cached for `metadata_ttl`, with stable inode numbers.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{Mount, runtime};
use warpdrive_testkit::{Emulator, Kind, upload_many};

/// Objects in the big prefix: 100 pages of 1,000.
const N: usize = 100_000;

fn names(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn hundred_thousand_objects_list_completely() {
    let rt = runtime();
    // Uploading 100,000 objects over HTTP takes every emulator minutes (Azurite and
    // fake-gcs-server slow down quadratically), so moto is seeded in-process; the listing
    // itself goes through moto's real S3 API, 1,000 keys per page.
    let start = Instant::now();
    let s3 = Emulator::start_moto_seeded("many", "big/", N).expect("seeded moto");
    eprintln!("seeded {N} objects in {:?}", start.elapsed());
    let b = s3.backend("many", "many", "");
    let want: BTreeSet<String> = (0..N).map(|i| format!("obj-{i:06}")).collect();
    rt.block_on(upload_many(
        &b,
        vec![
            ("big/sub/nested".into(), b"n".to_vec()),
            ("other".into(), b"o".to_vec()),
        ],
        2,
    ))
    .expect("upload extras");

    let m = Mount::start(&[b], "");
    let start = Instant::now();
    let mut got = names(&m.path("many/big"));
    eprintln!(
        "listed {} entries through the mount in {:?}",
        got.len(),
        start.elapsed()
    );
    assert!(got.remove("sub"), "the sub-prefix is listed as a directory");
    assert_eq!(got.len(), N);
    assert_eq!(got, want);
    assert!(m.path("many/big/sub").is_dir());
    assert_eq!(
        std::fs::read(m.path("many/big/obj-099999")).expect("read last"),
        b"x"
    );
    // A second listing within the TTL is served from memory and equal.
    let again = names(&m.path("many/big"));
    assert_eq!(again.len(), N + 1);
}

#[test]
fn metadata_is_cached_for_the_ttl_and_inodes_are_stable() {
    let rt = runtime();
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("ttl").expect("bucket");
    let b = s3.backend("ttl", "ttl", "");
    rt.block_on(upload_many(
        &b,
        vec![
            ("d/a".into(), b"1".to_vec()),
            ("d/b".into(), b"22".to_vec()),
        ],
        2,
    ))
    .expect("upload");
    let ttl = Duration::from_secs(4);
    let m = Mount::start(std::slice::from_ref(&b), "metadata_ttl: 4s\n");
    let dir = m.path("ttl/d");
    let listed_at = Instant::now();
    assert_eq!(
        names(&dir),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    let ino_a = std::fs::metadata(dir.join("a")).expect("stat a").ino();

    // Changed behind our back: a new object, and `a` rewritten with another size.
    rt.block_on(upload_many(
        &b,
        vec![
            ("d/c".into(), b"333".to_vec()),
            ("d/a".into(), b"4444".to_vec()),
        ],
        2,
    ))
    .expect("upload more");
    // Within the TTL the cached listing answers, including "no such file". A machine too
    // slow to get here within the TTL fails the test instead of skipping these checks.
    let before_checks = listed_at.elapsed();
    assert!(
        before_checks < ttl / 2,
        "the upload took until {before_checks:?} after the listing: the in-TTL checks cannot run within the {ttl:?} TTL"
    );
    assert_eq!(names(&dir).len(), 2, "listing refreshed before the TTL");
    assert!(
        !dir.join("c").exists(),
        "negative lookup should come from the fresh listing"
    );
    std::thread::sleep((listed_at + ttl + Duration::from_millis(300)) - Instant::now());
    assert_eq!(
        names(&dir),
        BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
    );
    let md = std::fs::metadata(dir.join("a")).expect("stat a again");
    assert_eq!(md.len(), 4, "new size after the TTL");
    assert_eq!(md.ino(), ino_a, "inode number stable for the same path");
    assert_eq!(std::fs::read(dir.join("a")).expect("read a"), b"4444");
}
