//! `forge train`: an I/O-bound training loop over WebDataset shards, deterministic whatever
//! the timing of its workers.
//!
//! The shard order is a seeded shuffle of every shard under every root, reshuffled (with a
//! seed derived from the run's seed and the epoch) each time the list is used up, so position
//! `p` of the order is a pure function of the seed. There are `W` workers ("lanes"); lane `k`
//! reads the shards at positions `k, k + W, k + 2W, ...` one after another, streams each one
//! (see [`crate::shards`]), turns every sample into features, and sends them down its own
//! bounded channel. The training loop takes sample `n` from lane `n mod W`, so the stream of
//! samples, and hence every batch and every loss, is fixed by the seed and the worker count,
//! never by which worker happens to be faster; meanwhile all `W` lanes read at once, and each
//! channel's bound (`--queue-depth` samples) caps the memory.
//!
//! The bytes read are fixed the same way. A run of `S` steps of batch `B` uses samples
//! `0 .. S·B`, so lane `k` delivers exactly `⌈(S·B − k) / W⌉` of them ([`lane_quota`]); it stops
//! reading the moment it has produced its last one instead of reading on until its channel is
//! full. How far a lane gets ahead of the trainer then changes only *when* it reads, never
//! *what*: a cold and a warm run of one command read the same byte ranges of the same shards
//! (the summary's `shard_reads`), which is what lets a warm run through a cache fetch nothing.
//!
//! Over loose files (`--files LIST` or `--image-folder ROOT`, see [`crate::files`]) the same
//! holds with one file per position: the order is a seeded shuffle of the files, and lane `k`
//! opens and reads whole the files at positions `k, k + W, ...` by their paths, as a PyTorch
//! `DataLoader` over an `ImageFolder` does.
//!
//! A lane whose every shard yields nothing (all corrupt or unreadable) reports it, and the run
//! stops with an error rather than train on nothing.
//!
//! Per step, `data_ms` is the time the loop waited to assemble the batch and `compute_ms` the
//! time of the forward and backward pass. Every `--log-every` steps one line gives the
//! throughput, mean `data_ms`, mean `compute_ms` and mean loss over those steps.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::files::{FileSet, read_file};
use crate::model::{Features, Linear, features};
use crate::shards::{ProblemCounts, Problems, discover, read_shard};

/// What a run reads.
#[derive(Debug, Clone)]
pub enum Data {
    /// Directories of WebDataset shards.
    Shards(Vec<PathBuf>),
    /// Loose files, one sample each.
    Files(FileSet),
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub data: Data,
    pub steps: u64,
    pub batch_size: usize,
    pub workers: usize,
    pub seed: u64,
    pub log_every: u64,
    pub learning_rate: f32,
    pub classes: u32,
    /// Samples each lane may hold ready.
    pub queue_depth: usize,
    /// Submit each epoch's order to the daemon as a plan (`--plan`).
    pub plan: Option<crate::plan::PlanTarget>,
    /// The epoch the run starts at (`--first-epoch`: a run resumed from a checkpoint reads
    /// that epoch's order, not the first one's).
    pub first_epoch: u64,
}

/// One `--log-every` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub step: u64,
    pub images_per_sec: f64,
    pub data_ms: f64,
    pub compute_ms: f64,
    pub loss: f64,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step={} images_per_sec={:.1} data_ms={:.2} compute_ms={:.2} loss={:.4}",
            self.step, self.images_per_sec, self.data_ms, self.compute_ms, self.loss
        )
    }
}

/// The run's summary (`--summary FILE`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub batch_size: usize,
    pub num_workers: usize,
    pub seed: u64,
    /// The shard directories, or the root of the loose files.
    pub roots: Vec<PathBuf>,
    /// Shards, or loose files, to choose from.
    pub shards_available: usize,
    pub wall_ms: f64,
    pub images_per_sec: f64,
    pub mean_data_ms: f64,
    pub mean_compute_ms: f64,
    pub final_loss: f64,
    /// Images trained on.
    pub images: u64,
    /// Bytes read from shard files by the workers: exactly the extents that hold the samples
    /// trained on (and the tar headers around them), the same in every run of one command.
    pub bytes_read: u64,
    /// Shards (or loose files) opened.
    pub shards_opened: u64,
    /// Every shard read: its file name and the bytes read from its start, sorted; a cold and
    /// a warm run of one command list the same reads.
    pub shard_reads: Vec<ShardRead>,
    pub skipped: ProblemCounts,
    /// FNV-1a over every batch's (shard file name, sample key, class), in order: equal digests
    /// mean the same samples in the same batches.
    pub batch_digest: String,
    pub log: Vec<LogLine>,
    /// The loss of every step.
    pub losses: Vec<f32>,
    /// The wall time of every step (waiting for data plus computing), in ms.
    pub step_ms: Vec<f32>,
    /// Plans submitted to the daemon (`--plan`): one per epoch begun.
    pub plans_submitted: u64,
}

/// One shard read by a lane: `bytes` from the start of the file `shard`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ShardRead {
    pub shard: String,
    pub bytes: u64,
}

/// The samples lane `lane` of `workers` delivers when the run uses `total` samples: the `n`
/// in `0 .. total` with `n mod workers == lane`.
pub fn lane_quota(total: u64, workers: usize, lane: usize) -> u64 {
    let (w, k) = (workers as u64, lane as u64);
    if total > k {
        (total - k - 1) / w + 1
    } else {
        0
    }
}

/// A message on a lane.
enum Item {
    Sample {
        shard: usize,
        key: String,
        class: u32,
        features: Box<Features>,
    },
    /// Every shard gave nothing.
    Exhausted,
}

/// The shard index at each position of the order.
struct Order {
    seed: u64,
    shards: usize,
    epoch: Option<(u64, Vec<usize>)>,
}

impl Order {
    fn at(&mut self, position: u64) -> usize {
        let n = self.shards as u64;
        let epoch = position / n;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.epoch = Some((
                epoch,
                crate::plan::permutation(self.seed, self.shards, epoch),
            ));
        }
        self.epoch
            .as_ref()
            .map_or(0, |(_, p)| p[(position % n) as usize])
    }
}

/// Shared worker counters.
#[derive(Debug, Default)]
struct Io {
    bytes_read: AtomicU64,
    shards_opened: AtomicU64,
    /// (shard index, bytes) of every shard read, in no particular order.
    reads: std::sync::Mutex<Vec<(usize, u64)>>,
    /// The furthest position a lane has started: its epoch is the one being read.
    furthest: AtomicU64,
    /// Where a lane that starts a new epoch says so (`--plan`): the planner submits it.
    begun: std::sync::Mutex<Option<std::sync::mpsc::Sender<u64>>>,
}

/// What the lanes read: shards, or loose files with their classes.
struct Source {
    paths: Vec<PathBuf>,
    /// Loose files: each one's class (`None`: the paths are shards).
    classes: Option<Vec<u32>>,
}

fn lane(
    k: usize,
    cfg: &TrainConfig,
    src: &Source,
    problems: &Problems,
    io: &Io,
    tx: SyncSender<Item>,
) {
    let shards = &src.paths;
    let mut order = Order {
        seed: cfg.seed,
        shards: shards.len(),
        epoch: None,
    };
    // Shards that gave nothing since this lane last got a sample: when that is all of them,
    // there is nothing to read anywhere.
    let mut barren = BTreeSet::new();
    let n = shards.len().max(1) as u64;
    let mut position = cfg.first_epoch * n + k as u64;
    let mut left = lane_quota(cfg.steps * cfg.batch_size as u64, cfg.workers, k);
    while left > 0 {
        let before = io.furthest.fetch_max(position, Ordering::Relaxed);
        if position / n > before / n
            && let Some(tx) = &*io.begun.lock().unwrap_or_else(|p| p.into_inner())
        {
            let _ = tx.send(position / n);
        }
        let shard = order.at(position);
        io.shards_opened.fetch_add(1, Ordering::Relaxed);
        let mut produced = false;
        let mut open = true;
        let mut emit = |s: crate::shards::Sample| {
            produced = true;
            let item = Item::Sample {
                shard,
                features: Box::new(features(&s.image)),
                key: s.key,
                class: s.class,
            };
            open = tx.send(item).is_ok();
            left -= 1;
            // Stop reading with the last sample this lane delivers: not a byte further.
            open && left > 0
        };
        let bytes = match &src.classes {
            None => read_shard(&shards[shard], cfg.classes, problems, &mut emit),
            Some(classes) => read_file(&shards[shard], classes[shard], problems, |s| {
                emit(s);
            }),
        };
        io.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        io.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((shard, bytes));
        if !open {
            return;
        }
        if produced {
            barren.clear();
        } else {
            barren.insert(shard);
            if barren.len() == shards.len() {
                let _ = tx.send(Item::Exhausted);
                return;
            }
        }
        position += cfg.workers as u64;
    }
}

/// FNV-1a, 64 bits.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Trains as `cfg` says, printing the log lines to `out`.
pub fn train(cfg: &TrainConfig, out: &mut impl Write) -> Result<Summary> {
    if cfg.steps == 0 || cfg.batch_size == 0 || cfg.workers == 0 || cfg.log_every == 0 {
        bail!("--steps, --batch-size, --num-workers and --log-every must be at least 1");
    }
    if cfg.classes < 2 {
        bail!("--classes must be at least 2");
    }
    let (src, names, roots) = match &cfg.data {
        Data::Shards(roots) => {
            let shards = discover(roots)?;
            let names: Vec<Vec<u8>> = shards
                .iter()
                .map(|p| {
                    p.file_name()
                        .map_or_else(Vec::new, |n| n.as_encoded_bytes().to_vec())
                })
                .collect();
            let src = Source {
                paths: shards,
                classes: None,
            };
            (src, names, roots.clone())
        }
        Data::Files(set) => {
            if set.files.is_empty() {
                bail!("no files to train on");
            }
            let src = Source {
                paths: set.files.iter().map(|(p, _)| set.root.join(p)).collect(),
                classes: Some(set.files.iter().map(|(_, c)| *c).collect()),
            };
            // The digest names a file by its path relative to the root, so a copy of the
            // tree elsewhere trains on the same batches.
            let names = set
                .files
                .iter()
                .map(|(p, _)| p.as_bytes().to_vec())
                .collect();
            (src, names, vec![set.root.clone()])
        }
    };
    let problems = Arc::new(Problems::default());
    let io = Arc::new(Io::default());
    io.furthest
        .store(cfg.first_epoch * src.paths.len() as u64, Ordering::Relaxed);
    let planner = match &cfg.plan {
        Some(t) => Some(crate::plan::Planner::new(t.clone(), &src.paths, cfg.seed)?),
        None => None,
    };
    let plans = planner.map(|p| {
        let (tx, rx) = std::sync::mpsc::channel();
        *io.begun.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let mut warned = false;
        // 1 when the plan was taken; a refusal is said once, and training goes on.
        let mut submit = move |epoch: u64| match p.submit(epoch) {
            Ok(()) => 1u64,
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    eprintln!("forge: plan not submitted ({e:#}); training without one");
                }
                0
            }
        };
        // The first epoch's plan goes before any lane reads.
        let first_epoch = cfg.first_epoch;
        let first = submit(first_epoch);
        // Each epoch a lane begins, in order (a later one may be announced first).
        std::thread::spawn(move || {
            let (mut last, mut submitted) = (first_epoch, first);
            for epoch in rx {
                if epoch > last {
                    last = epoch;
                    submitted += submit(epoch);
                }
            }
            submitted
        })
    });
    let start = Instant::now();
    let mut lanes: Vec<Receiver<Item>> = Vec::with_capacity(cfg.workers);
    let mut handles = Vec::with_capacity(cfg.workers);
    let shard_count = src.paths.len();
    let files_mode = src.classes.is_some();
    let shared = Arc::new((cfg.clone(), src));
    for k in 0..cfg.workers {
        let (tx, rx) = sync_channel(cfg.queue_depth.max(1));
        lanes.push(rx);
        let (shared, problems, io) = (shared.clone(), problems.clone(), io.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("forge-lane-{k}"))
                .spawn(move || lane(k, &shared.0, &shared.1, &problems, &io, tx))?,
        );
    }

    let mut model = Linear::new(cfg.classes as usize);
    let mut xs: Vec<Features> = Vec::with_capacity(cfg.batch_size);
    let mut ys: Vec<u32> = Vec::with_capacity(cfg.batch_size);
    let mut digest = 0xCBF2_9CE4_8422_2325u64;
    let mut cursor = 0usize;
    let (mut data_total, mut compute_total) = (0.0f64, 0.0f64);
    let mut window = (Instant::now(), 0.0f64, 0.0f64, 0.0f64); // start, data, compute, loss
    let mut log = Vec::new();
    let mut losses = Vec::with_capacity(cfg.steps as usize);
    let mut step_ms = Vec::with_capacity(cfg.steps as usize);
    let result = (|| -> Result<()> {
        for step in 1..=cfg.steps {
            let t0 = Instant::now();
            xs.clear();
            ys.clear();
            while xs.len() < cfg.batch_size {
                let item = lanes[cursor % cfg.workers].recv();
                cursor += 1;
                match item {
                    Ok(Item::Sample {
                        shard,
                        key,
                        class,
                        features,
                    }) => {
                        digest = fnv(digest, &names[shard]);
                        digest = fnv(digest, key.as_bytes());
                        digest = fnv(digest, &class.to_le_bytes());
                        xs.push(*features);
                        ys.push(class);
                    }
                    Ok(Item::Exhausted) => bail!(
                        "no readable samples: every one of the {} shards was corrupt, empty or unreadable",
                        shard_count
                    ),
                    Err(_) => bail!("a loader thread stopped unexpectedly"),
                }
            }
            let t1 = Instant::now();
            let loss = model.step(&xs, &ys, cfg.learning_rate);
            let t2 = Instant::now();
            let (data, compute) = ((t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3);
            data_total += data;
            compute_total += compute;
            losses.push(loss);
            step_ms.push((data + compute) as f32);
            window.1 += data;
            window.2 += compute;
            window.3 += f64::from(loss);
            if step % cfg.log_every == 0 || step == cfg.steps {
                let n = (step - 1) % cfg.log_every + 1;
                let line = LogLine {
                    step,
                    images_per_sec: (n as usize * cfg.batch_size) as f64
                        / window.0.elapsed().as_secs_f64().max(1e-9),
                    data_ms: window.1 / n as f64,
                    compute_ms: window.2 / n as f64,
                    loss: window.3 / n as f64,
                };
                writeln!(out, "{line}")?;
                out.flush()?;
                log.push(line);
                window = (Instant::now(), 0.0, 0.0, 0.0);
            }
        }
        Ok(())
    })();
    let wall = start.elapsed();
    drop(lanes); // the lanes see their channels close and stop
    for h in handles {
        let _ = h.join();
    }
    // The planner ends once the lanes' epochs are all submitted.
    drop(io.begun.lock().unwrap_or_else(|p| p.into_inner()).take());
    let plans_submitted = plans.map_or(0, |h| h.join().unwrap_or(0));
    result?;
    let images = cfg.steps * cfg.batch_size as u64;
    // Loose files are read whole, so their reads say nothing `bytes_read` does not.
    let reads = std::mem::take(&mut *io.reads.lock().unwrap_or_else(|p| p.into_inner()));
    let mut shard_reads: Vec<ShardRead> = if files_mode {
        Vec::new()
    } else {
        reads
            .into_iter()
            .map(|(i, bytes)| ShardRead {
                shard: String::from_utf8_lossy(&names[i]).into_owned(),
                bytes,
            })
            .collect()
    };
    shard_reads.sort();
    Ok(Summary {
        steps: cfg.steps,
        batch_size: cfg.batch_size,
        num_workers: cfg.workers,
        seed: cfg.seed,
        roots,
        shards_available: shard_count,
        wall_ms: wall.as_secs_f64() * 1e3,
        images_per_sec: images as f64 / wall.as_secs_f64().max(1e-9),
        mean_data_ms: data_total / cfg.steps as f64,
        mean_compute_ms: compute_total / cfg.steps as f64,
        final_loss: f64::from(losses.last().copied().unwrap_or(0.0)),
        images,
        bytes_read: io.bytes_read.load(Ordering::Relaxed),
        shards_opened: io.shards_opened.load(Ordering::Relaxed),
        shard_reads,
        skipped: problems.counts(),
        batch_digest: format!("{digest:016x}"),
        log,
        losses,
        step_ms,
        plans_submitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Spec, write_shards};

    fn config(roots: Vec<PathBuf>, steps: u64, workers: usize) -> TrainConfig {
        TrainConfig {
            data: Data::Shards(roots),
            steps,
            batch_size: 32,
            workers,
            seed: 42,
            log_every: 50,
            learning_rate: crate::DEFAULT_LEARNING_RATE,
            classes: 10,
            queue_depth: 16,
            plan: None,
            first_epoch: 0,
        }
    }

    /// Runs `f` while three threads hog the cores, so workers are slow and uneven.
    fn under_cpu_load<T>(f: impl FnOnce() -> T) -> T {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hogs: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(31).wrapping_add(7);
                    }
                    x
                })
            })
            .collect();
        let out = f();
        stop.store(true, Ordering::Relaxed);
        for h in hogs {
            let _ = h.join();
        }
        out
    }

    /// Two roots of generated shards, as the demo's two regions.
    fn dataset() -> (tempfile::TempDir, Vec<PathBuf>) {
        dataset_of(64, 48)
    }

    /// [`dataset`] with images of `width` × `height`.
    fn dataset_of(width: u32, height: u32) -> (tempfile::TempDir, Vec<PathBuf>) {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = Spec {
            shards: 6,
            samples_per_shard: 200,
            width,
            height,
            seed: 42,
        };
        let all = d.path().join("all");
        write_shards(&all, &spec, false, &mut Vec::new()).expect("gen");
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for dir in [&a, &b] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        for i in 0..spec.shards {
            let name = crate::shards::shard_name(i);
            let to = if i % 2 == 0 { &a } else { &b };
            std::fs::rename(all.join(&name), to.join(&name)).expect("move");
        }
        (d, vec![a, b])
    }

    #[test]
    fn loss_falls_over_300_steps_on_generated_data() {
        let (_d, roots) = dataset();
        let mut out = Vec::new();
        let s = train(&config(roots, 300, 8), &mut out).expect("train");
        let first: f32 = s.losses[..30].iter().sum::<f32>() / 30.0;
        let last: f32 = s.losses[270..].iter().sum::<f32>() / 30.0;
        assert!(
            last < first * 0.8,
            "mean loss of the first 30 steps {first}, of the last 30 {last}"
        );
        assert_eq!(s.images, 9600);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 6, "one line every 50 steps:\n{text}");
    }

    #[test]
    fn the_same_seed_gives_the_same_batches_and_losses_whatever_the_timing() {
        let (_d, roots) = dataset();
        let a = train(&config(roots.clone(), 60, 8), &mut Vec::new()).expect("train");
        // A second run with slow, uneven workers: other threads hog the cores meanwhile.
        let b = under_cpu_load(|| train(&config(roots.clone(), 60, 8), &mut Vec::new()))
            .expect("train");
        assert_eq!(a.batch_digest, b.batch_digest);
        assert_eq!(a.losses, b.losses, "bit-identical loss sequence");
        let c = train(
            &TrainConfig {
                seed: 7,
                ..config(roots, 60, 8)
            },
            &mut Vec::new(),
        )
        .expect("train");
        assert_ne!(
            a.batch_digest, c.batch_digest,
            "another seed, another order"
        );
    }

    #[test]
    fn lane_quotas_add_up_to_the_samples_used() {
        for (total, workers) in [(9600, 8), (7, 8), (0, 3), (10, 3), (1, 1), (33, 4)] {
            let q: Vec<u64> = (0..workers)
                .map(|k| lane_quota(total, workers, k))
                .collect();
            assert_eq!(
                q.iter().sum::<u64>(),
                total,
                "{total} over {workers}: {q:?}"
            );
            assert!(
                q.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1),
                "{q:?}"
            );
        }
    }

    /// The bytes a run reads are fixed by the command, not by how far its workers get ahead:
    /// a run with a deep queue under a competing CPU load reads exactly what a run with a
    /// one-sample queue reads (before, workers read on until their queues were full).
    #[test]
    fn the_same_command_reads_the_same_bytes_whatever_the_timing() {
        // Shards of several MiB, so that stopping part-way shows through the 1 MiB reads.
        let (_d, roots) = dataset_of(256, 192);
        let shallow = TrainConfig {
            queue_depth: 1,
            ..config(roots.clone(), 60, 8)
        };
        let a = train(&shallow, &mut Vec::new()).expect("train");
        let deep = TrainConfig {
            queue_depth: 1000,
            ..config(roots, 60, 8)
        };
        let b = under_cpu_load(|| train(&deep, &mut Vec::new())).expect("train");
        assert_eq!(a.batch_digest, b.batch_digest);
        assert_eq!(a.shard_reads, b.shard_reads);
        assert_eq!(a.bytes_read, b.bytes_read);
        assert_eq!(
            a.bytes_read,
            a.shard_reads.iter().map(|r| r.bytes).sum::<u64>()
        );
        // 1,920 samples over 8 lanes of 240: each lane reads one whole shard of 200 samples
        // and stops 40 samples into its second, so some reads end before their shard does.
        assert_eq!(a.shard_reads.len(), 16, "{:?}", a.shard_reads);
        let whole = a.shard_reads.iter().map(|r| r.bytes).max().unwrap_or(0);
        assert_eq!(
            a.shard_reads.iter().filter(|r| r.bytes < whole / 2).count(),
            8,
            "{:?}",
            a.shard_reads
        );
    }

    #[test]
    fn corrupt_and_missing_shards_are_skipped_and_counted() {
        let (_d, roots) = dataset();
        // Truncate one shard in the middle and replace another with garbage.
        let victim = roots[0].join("shard-000002.tar");
        let len = std::fs::metadata(&victim).expect("meta").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .expect("open");
        f.set_len(len / 2).expect("truncate");
        std::fs::write(roots[1].join("shard-000003.tar"), vec![0x5Au8; 10_000]).expect("junk");
        let s = train(&config(roots, 120, 4), &mut Vec::new()).expect("train");
        assert_eq!(s.images, 120 * 32);
        assert!(s.skipped.corrupt_shards >= 1, "{:?}", s.skipped);
        assert!(s.final_loss.is_finite());
    }

    #[test]
    fn nothing_readable_is_an_error_not_a_silent_zero() {
        let d = tempfile::tempdir().expect("tempdir");
        for i in 0..3 {
            std::fs::write(d.path().join(format!("s{i}.tar")), b"not a tar").expect("write");
        }
        let e = train(
            &config(vec![d.path().to_path_buf()], 10, 2),
            &mut Vec::new(),
        )
        .expect_err("nothing to train on");
        assert!(e.to_string().contains("no readable samples"), "{e}");
        let e = train(
            &config(vec![d.path().join("missing")], 10, 2),
            &mut Vec::new(),
        )
        .expect_err("missing root");
        assert!(e.to_string().contains("training root"), "{e:#}");
    }

    /// Loose files train like shards: the loss falls, and the same tree (or a copy of it
    /// elsewhere) under CPU load gives the same batches and losses.
    #[test]
    fn loose_files_train_deterministically_wherever_the_tree_is() {
        let spec = Spec {
            shards: 1,
            samples_per_shard: 1,
            width: 64,
            height: 48,
            seed: 9,
        };
        let d = tempfile::tempdir().expect("tempdir");
        crate::files::write_files(d.path(), &spec, 600, false, &mut Vec::new()).expect("gen");
        let set =
            crate::files::from_list(&d.path().join(crate::files::LIST_NAME), 10).expect("list");
        let cfg = |set: FileSet| TrainConfig {
            data: Data::Files(set),
            ..config(Vec::new(), 60, 4)
        };
        let a = train(&cfg(set.clone()), &mut Vec::new()).expect("train");
        assert_eq!(a.images, 60 * 32);
        assert_eq!(a.shards_available, 600);
        assert!(a.losses[59] < a.losses[0], "loss falls: {:?}", &a.log);
        // A copy of the tree elsewhere, trained under load.
        let e = tempfile::tempdir().expect("tempdir");
        for (p, _) in &set.files {
            let to = e.path().join(p);
            std::fs::create_dir_all(to.parent().expect("dir")).expect("mkdir");
            std::fs::copy(d.path().join(p), &to).expect("copy");
        }
        let copy = FileSet {
            root: e.path().to_path_buf(),
            ..set.clone()
        };
        let b = under_cpu_load(|| train(&cfg(copy), &mut Vec::new())).expect("train");
        assert_eq!(a.batch_digest, b.batch_digest);
        assert_eq!(a.losses, b.losses);
        assert_eq!(a.bytes_read, b.bytes_read);
        // An unreadable file is counted and skipped, not fatal.
        std::fs::remove_file(d.path().join(&set.files[0].0)).expect("rm");
        let c = train(&cfg(set), &mut Vec::new()).expect("train");
        assert!(c.skipped.unreadable_files >= 1, "{:?}", c.skipped);
    }
}
