//! Epoch plans over the in-memory store, without a kernel: a plan's files are fetched before
//! their reader reaches them, a new epoch's plan replaces the old one, and bad plans change
//! nothing.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use warpdrive_api::api::{PlanEntry, PlanRequest, PlanStatus};
use warpdrive_cache::{Limit, Limits, NextUse};
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

/// The daemon's plans order its cache's eviction: after the reader has read a, b, c and d of
/// the plan a b c d e a b, the cache is told that c and d are read no more (they go first)
/// and that a, b and e are kept; with no plan, nothing (LRU).
/// The order itself is the cache's (`eviction_follows_the_plans_next_uses`); its effect on a
/// dataset twice the cache is measured in doc/BENCHMARKS.md, "Epoch plans".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_is_told_what_the_plan_reads_next() {
    let mem = MemoryStore::new("mem");
    for f in ["a", "b", "c", "d", "e"] {
        mem.put(&format!("d/{f}"), vec![f.as_bytes()[0]; 1000]);
    }
    let s = setup(mem);
    let cache = s.fs.cache().expect("cache").clone();
    let names: Vec<(&str, &str)> = ["d/a", "d/b", "d/c", "d/d", "d/e"]
        .iter()
        .map(|k| ("mem", *k))
        .collect();
    assert_eq!(cache.advice(&names), None, "no plan: LRU");
    let order: Vec<String> = ["a", "b", "c", "d", "e", "a", "b"]
        .iter()
        .map(|f| format!("d/{f}"))
        .collect();
    s.fs.submit_plan(&plan("job", 1, &order)).expect("plan");
    for p in &order[..4] {
        read_file(&s.fs, p).await;
    }
    until(&s.fs, "job", |s| s.state == "done").await;
    let advice = cache.advice(&names).expect("a plan is kept");
    assert_eq!(
        (advice[2], advice[3]),
        (NextUse::Unplanned, NextUse::Unplanned),
        "c and d are read no more: {advice:?}"
    );
    // a, b and e are read again: kept (the prefetch of an uncapped cache has claimed the
    // whole plan, so they are inside its window).
    for (i, f) in [(0, "a"), (1, "b"), (4, "e")] {
        assert_eq!(advice[i], NextUse::Protected, "{f}: {advice:?}");
    }
    s.fs.clear_plans("job", None);
    assert_eq!(cache.advice(&names), None, "cleared: LRU again");
}
