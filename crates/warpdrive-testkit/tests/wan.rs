//! The WAN simulator holds bytes for its delay and caps what flows back at its bandwidth.
//! Only lower bounds are checked (a simulated link can be slower on a busy machine, never
//! faster than itself).

use std::time::{Duration, Instant};

use warpdrive_store::Backend;
use warpdrive_testkit::{
    Emulator, Kind, Link, WanProxy, emulator_backend, random_bytes, upload_many,
};

#[test]
fn the_link_costs_its_delay_and_caps_its_bandwidth() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("wan").expect("bucket");
    let data = random_bytes(8 << 20, 5);
    rt.block_on(upload_many(
        &s3.backend("direct", "wan", ""),
        vec![("obj".into(), data.clone())],
        1,
    ))
    .expect("upload");
    let link = Link {
        one_way_delay: Duration::from_millis(25),
        bandwidth: Some(16 << 20),
    };
    let wan = WanProxy::start(s3.port, link).expect("proxy");
    let far = Backend::build(&emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", wan.port),
        "far",
        "wan",
        "",
    ))
    .expect("backend");
    rt.block_on(async {
        // A request costs at least a round trip.
        let t = Instant::now();
        let info = far.head("obj").await.expect("head");
        assert_eq!(info.size, data.len() as u64);
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
        // 8 MiB at 16 MiB/s: at least half a second, less the bucket's 0.1 s of burst.
        let t = Instant::now();
        let got = far
            .get_range("obj", 0..data.len() as u64, None)
            .await
            .expect("get");
        let took = t.elapsed();
        assert_eq!(got.as_ref(), data.as_slice(), "bytes pass unchanged");
        assert!(
            took >= Duration::from_millis(400),
            "8 MiB over 16 MiB/s took {took:?}"
        );
    });
}
