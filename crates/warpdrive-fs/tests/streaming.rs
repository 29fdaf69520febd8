//! A large listing streams into `readdir`: the first entries are handed out while later pages
//! are still being fetched. Driven through the core, against moto behind a delaying proxy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use warpdrive_config::MetadataTtl;
use warpdrive_fs::listing::Status;
use warpdrive_fs::{Fs, Ino};
use warpdrive_store::Backend;
use warpdrive_testkit::{DelayProxy, Emulator, Kind, emulator_backend};

/// Three pages of 1,000 keys.
const N: usize = 3000;
/// Each list page answers this late, so the listing takes at least three times as long.
const DELAY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_entries_arrive_before_the_listing_ends() {
    // Both start their own processes or runtimes, so they are set up off this runtime.
    let (s3, proxy) = tokio::task::spawn_blocking(|| {
        let s3 = Emulator::start_moto_seeded("stream", "d/", N).expect("seeded moto");
        let proxy = DelayProxy::start(s3.port, DELAY).expect("proxy");
        (s3, proxy)
    })
    .await
    .expect("join");
    let cfg = emulator_backend(
        Kind::Moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        "s",
        "stream",
        "",
    );
    let fs = Fs::new(
        support::fs_config(MetadataTtl::For(Duration::from_secs(600)), 0),
        vec![Arc::new(Backend::build(&cfg).expect("backend"))],
        None,
    );
    let root = fs.lookup(Ino::ROOT, "s").await.expect("backend dir");
    let d = fs.lookup(root.ino, "d").await.expect("d");

    let fh = fs.opendir(d.ino).expect("opendir");
    let first = fs.readdir(fh, 0, 10_000).await.expect("first batch");
    let (status, fetched) = fs.listing_status(d.ino).expect("a listing exists");
    assert!(
        first.len() > 2,
        "the first batch has entries beyond . and .."
    );
    assert_eq!(
        status,
        Status::Running,
        "first batch came only after the listing ended"
    );
    assert!(
        fetched < N,
        "all {fetched} entries were there before the first batch"
    );

    // Reading on returns every entry exactly once.
    let mut names: Vec<String> = first.iter().map(|e| e.name.clone()).collect();
    let mut offset = first.last().expect("entry").next_offset;
    loop {
        let batch = fs.readdir(fh, offset, 700).await.expect("readdir");
        let Some(last) = batch.last() else { break };
        offset = last.next_offset;
        names.extend(batch.into_iter().map(|e| e.name));
    }
    assert_eq!(names.len(), N + 2);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N + 2, "an entry was handed out twice");
    assert_eq!(fs.listing_status(d.ino).map(|s| s.0), Some(Status::Done));
    drop(proxy);
    drop(s3);
}
