//! Every backend kind mounted together over real emulators: listings, byte-identical reads at
//! any offset, concurrent readers, prefixes.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::{Mount, runtime, sha256, walk};
use rand::{Rng, SeedableRng};
use warpdrive_config::{AuthMode, BackendConfig, BackendKind};
use warpdrive_testkit::{Emulator, Kind, random_bytes, upload_many};

/// Size of the large object: big enough to span many read windows and kernel reads.
const BIG: usize = 64 << 20;

/// The tree uploaded to every backend: nested prefixes, an empty and a 1-byte object, a
/// 64 MiB random object.
fn tree() -> BTreeMap<String, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("empty".to_string(), Vec::new());
    t.insert("one".to_string(), vec![0x5a]);
    t.insert("top.txt".to_string(), b"hello from the top\n".to_vec());
    t.insert("nested/a/b/c/deep.txt".to_string(), b"deep\n".to_vec());
    t.insert("nested/a/mid.bin".to_string(), random_bytes(300_000, 2));
    t.insert("nested/z.bin".to_string(), random_bytes(4097, 3));
    t.insert(
        "name with spaces & ünïcode.txt".to_string(),
        b"odd but valid\n".to_vec(),
    );
    t.insert("big.bin".to_string(), random_bytes(BIG, 1));
    t
}

#[test]
fn every_backend_serves_identical_bytes() {
    let rt = runtime();
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    let gcs = Emulator::start(Kind::Gcs).expect("gcs emulator");
    az.create_bucket("data").expect("container");
    s3.create_bucket("data").expect("bucket");
    gcs.create_bucket("data").expect("gcs bucket");
    let local_dir = tempfile::tempdir().expect("tempdir");

    let backends = vec![
        az.backend("az", "data", ""),
        // The S3 backend serves only `pre/`; an object beside the prefix must stay invisible.
        s3.backend("s3", "data", "pre/"),
        gcs.backend("gcs", "data", ""),
        BackendConfig {
            name: "local".into(),
            kind: BackendKind::Local {
                path: local_dir.path().to_path_buf(),
            },
            prefix: String::new(),
            auth: AuthMode::Anonymous,
            identity: Default::default(),
            ca_file: None,
            write: Default::default(),
            retry: Default::default(),
        },
    ];
    rt.block_on(async {
        for b in &backends {
            let t = tree();
            let objects: Vec<(String, Vec<u8>)> =
                t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            upload_many(b, objects, 4)
                .await
                .unwrap_or_else(|e| panic!("upload to {}: {e:#}", b.name));
        }
        let mut outside = s3.backend("s3-root", "data", "");
        outside.prefix = String::new();
        upload_many(
            &outside,
            vec![
                ("outside.txt".into(), b"not yours".to_vec()),
                ("prefix-sibling/x".into(), b"no".to_vec()),
            ],
            2,
        )
        .await
        .expect("upload outside prefix");
    });

    let m = Mount::start(&backends, "");

    let mut root: Vec<String> = std::fs::read_dir(&m.mount_point)
        .expect("read root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(root, vec!["az", "gcs", "local", "s3"]);

    for b in &backends {
        let t = tree();
        let want_names: Vec<String> = t.keys().cloned().collect();
        let base = m.path(&b.name);
        assert_eq!(walk(&base), want_names, "listing of {}", b.name);
        for (key, data) in &t {
            let p = base.join(key);
            let md = std::fs::metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
            assert_eq!(md.len(), data.len() as u64, "size of {}/{key}", b.name);
            let got = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            assert_eq!(sha256(&got), sha256(data), "sha256 of {}/{key}", b.name);
        }
    }
    assert!(
        !m.path("s3/outside.txt").exists(),
        "an object outside the prefix is visible"
    );
    assert!(!m.path("s3/../s3-root").exists());

    // Random offsets and sizes, including past the end.
    let big = &tree()["big.bin"];
    for b in &backends {
        let f = File::open(m.path(&format!("{}/big.bin", b.name))).expect("open big");
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..100 {
            let off = rng.random_range(0..BIG as u64 + 1000);
            let len = rng.random_range(1..2_000_000usize);
            let mut buf = vec![0u8; len];
            let n = read_at_full(&f, &mut buf, off);
            let s = (off as usize).min(BIG);
            let e = (off as usize + len).min(BIG);
            assert_eq!(n, e - s, "{}: length at {off}+{len}", b.name);
            assert!(
                buf[..n] == big[s..e],
                "{}: bytes differ at {off}+{len}",
                b.name
            );
        }
    }

    // Eight threads at once on every backend: four on their own handles, four sharing one.
    for b in &backends {
        let path = m.path(&format!("{}/big.bin", b.name));
        let shared = Arc::new(File::open(&path).expect("open shared"));
        let big = Arc::new(big.clone());
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let path = path.clone();
                let shared = shared.clone();
                let big = big.clone();
                std::thread::spawn(move || {
                    let own;
                    let f: &File = if i % 2 == 0 {
                        own = File::open(&path).expect("open own");
                        &own
                    } else {
                        &shared
                    };
                    let mut rng = rand::rngs::StdRng::seed_from_u64(i);
                    for _ in 0..40 {
                        let off = rng.random_range(0..BIG as u64);
                        let len = rng.random_range(1..1_500_000usize);
                        let mut buf = vec![0u8; len];
                        let n = read_at_full(f, &mut buf, off);
                        let e = (off as usize + len).min(BIG);
                        assert!(
                            buf[..n] == big[off as usize..e],
                            "thread {i}: bytes differ at {off}"
                        );
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("reader thread");
        }
    }
}

/// `pread` until `buf` is full or end of file; returns the bytes read.
fn read_at_full(f: &File, buf: &mut [u8], off: u64) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64).expect("pread") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Azure lists blobs with bare ETags and answers HEAD with quoted ones; the two spellings were
/// taken for two versions, so every object revalidated after its listing lost its cached
/// blocks at each `metadata_ttl` (a warm epoch longer than the TTL fetched again). For every
/// cloud kind: an object known from a listing, cached, then revalidated after the TTL, is
/// read again without a byte fetched.
#[test]
fn regression_revalidation_after_a_listing_dropped_azure_caches() {
    let rt = runtime();
    let data = warpdrive_testkit::random_bytes((2 << 20) + 3, 61);
    for kind in [Kind::Azurite, Kind::Moto, Kind::Gcs] {
        let em = Emulator::start(kind).expect("emulator");
        em.create_bucket("reval").expect("bucket");
        let b = em.backend("b", "reval", "");
        rt.block_on(upload_many(&b, vec![("d/obj".into(), data.clone())], 1))
            .expect("upload");
        let m = Mount::start(&[b], "metadata_ttl: 1s\n");
        // Known from a listing first, as a training job's loader finds its files.
        assert_eq!(
            std::fs::read_dir(m.path("b/d")).expect("ls").count(),
            1,
            "{kind:?}"
        );
        assert!(std::fs::read(m.path("b/d/obj")).expect("cold") == data);
        let fetched = |m: &Mount| {
            common::value(
                &common::scrape(m).0,
                "warpdrive_backend_read_bytes_total",
                &[("backend", "b")],
            )
        };
        let before = fetched(&m);
        // Past the TTL (and the kernel's 1 s): the next open revalidates with a HEAD.
        std::thread::sleep(std::time::Duration::from_millis(2200));
        common::drop_page_cache();
        assert!(std::fs::read(m.path("b/d/obj")).expect("warm") == data);
        assert_eq!(
            fetched(&m),
            before,
            "{kind:?}: the revalidated object was fetched again\n{}",
            m.log()
        );
    }
}
