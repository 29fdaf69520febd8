//! Epoch plans over the in-memory store, without a kernel: a plan's files are fetched before
//! their reader reaches them, a new epoch's plan replaces the old one, and bad plans change
//! nothing.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use warpdrive_api::api::{PlanEntry, PlanRequest, PlanStatus};
use warpdrive_cache::{Limit, Limits};
use warpdrive_config::MetadataTtl;
use warpdrive_fs::{Fs, Ino};
use warpdrive_metrics::BackendMetrics;
use warpdrive_store::memory::MemoryStore;
use warpdrive_store::{Backend, Store};
use warpdrive_testkit::shuffled;

struct Setup {
    mem: Arc<MemoryStore>,
    fs: Arc<Fs>,
    _cache_dir: tempfile::TempDir,
}

fn setup(mem: MemoryStore) -> Setup {
    setup_capped(mem, None)
}

/// As [`setup`], with the cache capped at `cap` bytes.
fn setup_capped(mem: MemoryStore, cap: Option<u64>) -> Setup {
    let mem = Arc::new(mem);
    let backend = Arc::new(Backend::with_store(
        &support::mem_config(),
        mem.clone() as Arc<dyn Store>,
        BackendMetrics::detached("mem"),
    ));
    let (dir, cache) = support::temp_cache();
    if let Some(cap) = cap {
        cache.set_limits(Limits {
            max_size: Limit::Bytes(cap),
            min_free: Limit::Bytes(0),
        });
    }
    let fs = Fs::new(
        support::fs_config(MetadataTtl::Indefinite, 0),
        vec![backend],
        Some(cache),
    );
    Setup {
        mem,
        fs,
        _cache_dir: dir,
    }
}

fn plan(job: &str, epoch: u64, paths: &[String]) -> PlanRequest {
    PlanRequest {
        job: job.into(),
        rank: 0,
        epoch,
        entries: paths
            .iter()
            .map(|p| PlanEntry {
                path: format!("mem/{p}"),
                offset: None,
                length: None,
            })
            .collect(),
    }
}

/// Waits until `job`'s plan satisfies `done`; its status then.
async fn until(fs: &Fs, job: &str, done: impl Fn(&PlanStatus) -> bool) -> PlanStatus {
    let t0 = Instant::now();
    loop {
        let s = fs
            .plans()
            .into_iter()
            .find(|s| s.job == job)
            .expect("plan kept");
        if done(&s) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "plan stuck: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens and reads `path` whole, as the kernel would after looking it up.
async fn read_file(fs: &Arc<Fs>, path: &str) -> Vec<u8> {
    let mut ino = Ino::ROOT;
    for c in format!("mem/{path}").split('/') {
        ino = fs.lookup(ino, c).await.expect(path).ino;
    }
    let o = fs.open(ino, false).await.expect("open");
    let mut all = Vec::new();
    loop {
        let b = fs
            .read(o.fh, all.len() as u64, 128 << 10)
            .await
            .expect("read");
        if b.is_empty() {
            break;
        }
        all.extend_from_slice(&b);
    }
    fs.release(o.fh);
    all
}

/// 1,000 small files in 10 directories, planned in a shuffled order: the plan's prefetch
/// fetches every one before the reader reaches it (no GET while the epoch is read, every
/// entry ahead), with one listing per directory for the lookups, and the bytes are right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_fetches_every_file_before_its_reader() {
    let mem = MemoryStore::new("mem");
    let mut files = Vec::new();
    for i in 0..1000usize {
        let key = format!("train/c{}/img_{i:04}.jpg", i % 10);
        let data: Vec<u8> = (0..2_000 + (i * 37) % 30_000)
            .map(|j| (i * 31 + j) as u8)
            .collect();
        mem.put(&key, data.clone());
        files.push((key, data));
    }
    let s = setup(mem);
    let order = shuffled(files, 5);
    let paths: Vec<String> = order.iter().map(|(k, _)| k.clone()).collect();
    let total: u64 = order.iter().map(|(_, d)| d.len() as u64).sum();
    let before = s.mem.counts.get();
    let st = s.fs.submit_plan(&plan("resnet", 1, &paths)).expect("plan");
    assert_eq!(
        (st.entries, st.reached, st.state.as_str()),
        (1000, 0, "running")
    );
    let st = until(&s.fs, "resnet", |s| s.state == "done").await;
    assert_eq!(st.lead_bytes, total, "every file fetched ahead: {st:?}");
    let fetched = s.mem.counts.get();
    println!(
        "figures: plan of 1,000 files prefetched: {} LIST, {} HEAD, {} GET",
        fetched.0 - before.0,
        fetched.1 - before.1,
        fetched.2 - before.2
    );
    assert_eq!(fetched.1 - before.1, 0, "names come from listings");
    assert!(fetched.0 - before.0 <= 12, "one listing per directory");
    assert_eq!(fetched.2 - before.2, 1000, "one GET per file");

    for (path, data) in &order {
        assert!(read_file(&s.fs, path).await == *data, "{path}");
    }
    assert_eq!(
        s.mem.counts.get(),
        fetched,
        "the epoch itself asks the store nothing"
    );
    let st = until(&s.fs, "resnet", |_| true).await;
    assert_eq!(
        (st.reached, st.ahead, st.late, st.failed),
        (1000, 1000, 0, 0)
    );
    assert_eq!(st.lead_bytes, 0);
    assert_eq!(s.fs.metrics().plan.read_wait_seconds("mem"), 0.0);
}

/// A new epoch's plan replaces the old one (whose prefetch stops); a plan for an older epoch
/// and malformed plans are refused and change nothing; clearing drops the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_replaced_by_epoch_refused_whole_and_cleared() {
    let mem = MemoryStore::new("mem");
    for i in 0..20 {
        mem.put(&format!("d/f{i}"), vec![i as u8; 1000]);
    }
    let s = setup(mem);
    let paths: Vec<String> = (0..20).map(|i| format!("d/f{i}")).collect();
    s.fs.submit_plan(&plan("job", 2, &paths)).expect("epoch 2");
    let e =
        s.fs.submit_plan(&plan("job", 1, &paths))
            .expect_err("epoch 1");
    assert!(e.0.contains("epoch 2"), "{e}");
    let mut bad = plan("job", 3, &paths);
    bad.entries[7].path = "elsewhere/x".into();
    let e = s.fs.submit_plan(&bad).expect_err("unknown backend");
    assert!(e.0.contains("entry 8"), "{e}");
    let kept = s.fs.plans();
    assert_eq!(
        (kept.len(), kept[0].epoch),
        (1, 2),
        "refused plans change nothing"
    );
    s.fs.submit_plan(&plan("job", 3, &paths[..5]))
        .expect("epoch 3");
    let kept = s.fs.plans();
    assert_eq!((kept.len(), kept[0].epoch, kept[0].entries), (1, 3, 5));
    s.fs.submit_plan(&plan("other", 1, &paths))
        .expect("another job");
    assert_eq!(s.fs.clear_plans("job", None), 1);
    assert_eq!(s.fs.plans().len(), 1);
    assert_eq!(s.fs.clear_plans("job", None), 0);
}

/// A dataset twice the cache, a new shuffle every epoch, one reader: the share of each epoch's
/// bytes not fetched from the store, with plans (each epoch's order and the next one's, as
/// `forge train --plan` submits them) against least-recently-used eviction without. Under a
/// fresh shuffle LRU keeps little (0.12–0.39 of an epoch in runs of this test); the plans'
/// order (furthest next use evicted first) about half (0.46–0.59).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_keep_what_is_read_next_when_the_dataset_is_twice_the_cache() {
    const N: usize = 200;
    const SIZE: usize = 128 << 10;
    async fn epochs(planned: bool) -> Vec<f64> {
        let mem = MemoryStore::new("mem");
        for i in 0..N {
            mem.put(&format!("d/f{i:03}"), vec![i as u8; SIZE]);
        }
        let s = setup_capped(mem, Some((N * SIZE / 2) as u64));
        let order = |e: u64| -> Vec<String> {
            shuffled((0..N).collect::<Vec<_>>(), e + 1)
                .into_iter()
                .map(|i| format!("d/f{i:03}"))
                .collect()
        };
        let mut kept = Vec::new();
        for epoch in 0..3u64 {
            let bytes = get_bytes(&s);
            if planned {
                let both: Vec<String> = order(epoch).into_iter().chain(order(epoch + 1)).collect();
                s.fs.submit_plan(&plan("job", epoch, &both)).expect("plan");
            }
            for p in order(epoch) {
                assert_eq!(read_file(&s.fs, &p).await.len(), SIZE, "{p}");
            }
            let fetched = get_bytes(&s) - bytes;
            kept.push(1.0 - fetched as f64 / (N * SIZE) as f64);
        }
        kept
    }
    let planned = epochs(true).await;
    let lru = epochs(false).await;
    println!(
        "figures: dataset 2x the cache, 3 shuffled epochs, share not fetched again: with plans {planned:.2?}, LRU {lru:.2?}"
    );
    for e in 1..3 {
        assert!(planned[e] >= 0.4, "epoch {e} with plans: {planned:?}");
    }
    let mean = |v: &[f64]| (v[1] + v[2]) / 2.0;
    assert!(
        mean(&planned) >= mean(&lru) + 0.15,
        "plans {planned:?} against LRU {lru:?}"
    );
}

fn get_bytes(s: &Setup) -> u64 {
    s.mem
        .counts
        .get_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
}
