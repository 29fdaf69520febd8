//! One slow backend never stalls reads of another: FUSE threads hand every operation to the
//! I/O runtime and return, so even a single FUSE thread keeps serving while a request to a
//! slow store is in flight.

mod common;

use std::time::{Duration, Instant};

use common::{Mount, runtime};
use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend, random_bytes, upload_many};

/// The slow store answers every request this late; long enough that the ordering checked
/// below cannot happen by chance on a loaded machine.
const DELAY: Duration = Duration::from_secs(5);

#[test]
fn a_slow_backend_does_not_stall_another() {
    let rt = runtime();
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("both").expect("bucket");
    let fast = s3.backend("fast", "both", "");
    rt.block_on(upload_many(
        &fast,
        vec![
            ("slow.bin".into(), random_bytes(1 << 20, 5)),
            ("fast.txt".into(), b"quick".to_vec()),
        ],
        2,
    ))
    .expect("upload");
    let proxy = DelayProxy::start(s3.port, DELAY).expect("proxy");
    let slow = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "slow",
        "both",
        "",
    );

    // One FUSE thread: if it waited for the slow store, every other read would wait too.
    let m = Mount::start(&[fast, slow], "fuse: { threads: 1 }\n");
    let slow_path = m.path("slow/slow.bin");
    let start = Instant::now();
    let slow_reader = std::thread::spawn(move || std::fs::read(slow_path).map(|b| b.len()));
    std::thread::sleep(Duration::from_millis(300));

    let mut fast_reads = 0;
    for _ in 0..50 {
        assert_eq!(
            std::fs::read(m.path("fast/fast.txt")).expect("fast read"),
            b"quick"
        );
        fast_reads += 1;
    }
    assert!(
        !slow_reader.is_finished(),
        "the slow read finished before 50 fast reads ({:?}); the proxy did not delay it",
        start.elapsed()
    );
    assert_eq!(fast_reads, 50);
    assert_eq!(
        slow_reader.join().expect("slow thread").expect("slow read"),
        1 << 20
    );
    assert!(start.elapsed() >= DELAY, "the slow backend was not slow");
}
