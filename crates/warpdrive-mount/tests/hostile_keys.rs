//! Keys that cannot be paths (`a//b`, `.`, `..`, names over 255 bytes) are left out of
//! listings with a warning, never break the listing of their neighbours, and nothing resolves
//! outside the backend's prefix.

mod common;

use common::{Mount, walk};
use warpdrive_testkit::{Emulator, Kind, put_raw};

#[test]
fn hostile_keys_never_appear_and_never_escape() {
    let long = "x".repeat(256);
    let hostile = [
        "pre/h/a//empty-segment.txt".to_string(),
        "pre/h/./dot.txt".to_string(),
        "pre/h/../escape.txt".to_string(),
        "pre/h/..".to_string(),
        "pre/h/.".to_string(),
        format!("pre/h/{long}"),
        format!("pre/h/{long}/under-long-dir.txt"),
        "pre//double-at-prefix.txt".to_string(),
    ];
    let fine = ["pre/h/ok.txt", "pre/h/a/fine.txt", "pre/top.txt"];
    for kind in [Kind::Moto, Kind::Gcs] {
        let em = Emulator::start(kind).expect("emulator");
        em.create_bucket("hostile").expect("bucket");
        for k in hostile.iter().map(String::as_str).chain(fine) {
            put_raw(kind, em.port, "hostile", k, k.as_bytes())
                .unwrap_or_else(|e| panic!("{kind:?} {k}: {e:#}"));
        }
        // Outside the prefix: must stay invisible.
        put_raw(kind, em.port, "hostile", "outside.txt", b"no").expect("outside");
        put_raw(kind, em.port, "hostile", "escape.txt", b"no").expect("escape");

        let m = Mount::start(&[em.backend("b", "hostile", "pre/")], "");
        let files = walk(&m.path("b"));
        assert_eq!(
            files,
            vec!["h/a/fine.txt", "h/ok.txt", "top.txt"],
            "{kind:?}\n{}",
            m.log()
        );
        assert_eq!(
            std::fs::read(m.path("b/h/ok.txt")).expect("read"),
            b"pre/h/ok.txt"
        );
        for name in ["escape.txt", "outside.txt"] {
            assert!(
                !m.path(&format!("b/{name}")).exists(),
                "{kind:?}: {name} visible"
            );
        }
        // `..` is resolved by the kernel to the parent, never sent to the daemon as a name.
        assert!(!m.path("b/h/../escape.txt").exists());
        let too_long = m.path(&format!("b/h/{long}"));
        let e = std::fs::metadata(&too_long).expect_err("256-byte name");
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{kind:?}: {e}");
        let log = m.log();
        assert!(
            log.contains("skipping an object whose key cannot be a path"),
            "{kind:?}: no warning\n{log}"
        );
        for k in [
            "pre/h/a//",
            "pre/h/./",
            "pre/h/../",
            "pre//",
            &format!("h/{long}"),
        ] {
            assert!(log.contains(k), "{kind:?}: no warning naming {k}\n{log}");
        }
        assert!(
            !log.contains("listing failed"),
            "{kind:?}: a hostile key broke a listing\n{log}"
        );
    }
}
