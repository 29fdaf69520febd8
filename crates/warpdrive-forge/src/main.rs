//! `warpdrive-forge`: the showcase's workload. `train` fits a tiny classifier on WebDataset
//! shards read through plain paths (the mount), I/O-bound on purpose, and prints the seed's
//! log line; `gen` writes shards of generated JPEGs whose pictures depend on their class;
//! `pack` turns a labelled folder of JPEGs into shards.

mod files;
mod generate;
mod model;
mod pack;
mod plan;
mod shards;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The SGD step size: on generated shards it lowers the loss steadily over the seed's 300
/// steps without diverging (larger steps oscillate on the raw-byte features).
pub const DEFAULT_LEARNING_RATE: f32 = 0.05;

/// The WarpDrive showcase workload.
#[derive(Debug, Parser)]
#[command(name = "warpdrive-forge", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Train a linear classifier on WebDataset shards (`*.tar` holding `NNNNNN.jpg` +
    /// `NNNNNN.cls`) under the training roots, the way the seed's workload does: I/O-bound on
    /// purpose, deterministic for a given seed and worker count.
    Train(TrainArgs),
    /// Write WebDataset shards of generated JPEG images in 10 classes: `shard-NNNNNN.tar`,
    /// each holding `NNNNNN.jpg` and `NNNNNN.cls` per sample. The same seed writes the same
    /// bytes; shards already in `--out` are kept (use `--force` to write them again).
    Gen(GenArgs),
    /// Pack a folder of JPEGs (COCO train2017 or any labelled folder) into WebDataset shards
    /// for `train`.
    Pack(PackArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
How it reads: the shards under all roots are put in a seeded shuffled order (reshuffled each
epoch). Worker k streams the shards at positions k, k+W, k+2W... of that order through 1 MiB
reads, samples 256 bytes of each JPEG (not decoded) as features, and queues them; step after
step the trainer takes its batch from the workers in turn. So the same --seed and
--num-workers give the same shards, batches and losses, whatever the timing: a cold and a warm
run are the same computation.

Loose files (--files LIST, or --image-folder DIR) are read the same way with one file per
position: worker k opens the files at positions k, k+W... of a seeded shuffle by their paths
and reads each whole, as a PyTorch DataLoader over an ImageFolder does. A file's class is its
directory (the sorted directory names are classes 0, 1, ...).

Every --log-every steps it prints, over the steps since the previous line:
  step=150 images_per_sec=577.3 data_ms=55.18 compute_ms=0.25 loss=2.2941
images_per_sec is throughput, data_ms the mean wait for a batch, compute_ms the mean forward
and backward pass, loss the mean cross-entropy.

A corrupt or truncated shard, an image without a label, a bad label or an unreadable file is
counted, warned about once and skipped (the summary lists the counts).

Exit codes: 0 trained; 1 training failed (no readable samples, I/O error writing the summary);
2 bad arguments.")]
struct TrainArgs {
    /// A directory of shards (the seed's first region; add more with --train-root).
    #[arg(long, value_name = "DIR")]
    train_root_a: Option<PathBuf>,
    /// A second directory of shards (the seed's second region).
    #[arg(long, value_name = "DIR")]
    train_root_b: Option<PathBuf>,
    /// More directories of shards (repeat the flag).
    #[arg(long, value_name = "DIR")]
    train_root: Vec<PathBuf>,
    /// Train on loose files instead: the paths in LIST (one per line, relative to LIST's
    /// directory, as `gen --layout files` writes in files.txt), each opened by its path;
    /// a file's class is its directory. Nothing is listed.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["train_root_a", "train_root_b", "train_root", "image_folder"])]
    files: Option<PathBuf>,
    /// Train on loose files found as PyTorch's ImageFolder finds them: the subdirectories of
    /// DIR are the classes (sorted), their files the samples.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train_root_a", "train_root_b", "train_root"])]
    image_folder: Option<PathBuf>,
    /// Training steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Loader threads reading shards at once.
    #[arg(long, default_value_t = 8)]
    num_workers: usize,
    /// Seed of the shard order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print a progress line every N steps.
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// SGD learning rate.
    #[arg(long, default_value_t = DEFAULT_LEARNING_RATE)]
    learning_rate: f32,
    /// Number of classes (labels are 0 to N-1).
    #[arg(long, default_value_t = 10)]
    classes: u32,
    /// Samples each worker may hold ready (memory bound: workers × this × about 1 KiB).
    #[arg(long, default_value_t = 256)]
    queue_depth: usize,
    /// Write the run's summary as JSON to FILE: wall ms, images/s, mean data and compute ms
    /// per step, final loss, images and bytes read, shards opened, skipped samples, the log
    /// lines, every step's loss and a digest of the batches.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Tell the WarpDrive daemon the order of each epoch as the plan of JOB, so it fetches
    /// every shard or file before a worker opens it (the order is known from the seed).
    /// Needs the daemon's control socket (--plan-socket or WARPDRIVE_SOCKET).
    #[arg(long, value_name = "JOB", requires = "plan_socket")]
    plan: Option<String>,
    /// Start at this epoch's order, as a run resumed from a checkpoint taken at its start.
    #[arg(long, default_value_t = 0)]
    first_epoch: u64,
    /// This reader's rank in JOB's plans.
    #[arg(long, default_value_t = 0, requires = "plan")]
    plan_rank: u32,
    /// The daemon's control socket (the config's control.socket; `control.sock` in the cache
    /// directory by default).
    #[arg(long, value_name = "PATH", env = "WARPDRIVE_SOCKET", requires = "plan")]
    plan_socket: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The label file has one line per image: NAME LABEL, separated by a comma, a tab or spaces;
`#` starts a comment. NAME is a path relative to --images, or a file name when unique. LABEL
is a class number, or a class name (names are numbered in sorted order, written to
classes.txt beside the shards).

Exit codes: 0 packed; 1 failed (unreadable folder or label file, no labelled image, disk
full); 2 bad arguments.")]
struct PackArgs {
    /// The folder of JPEG images (searched recursively).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// The label file.
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Where to write the shards (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Images per shard (the seed's COCO shards hold about 592).
    #[arg(long, default_value_t = 592)]
    samples_per_shard: usize,
    /// Number of classes `train` will be told (labels must fall below it).
    #[arg(long, default_value_t = 10)]
    classes: u32,
    /// Shuffle the images with this seed before packing (mixes classes within shards);
    /// without it images are packed in sorted path order.
    #[arg(long)]
    shuffle_seed: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct GenArgs {
    /// Directory to write the shards (or the file tree) to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// A preset scale: `quick` (16 shards × 64 images of 160×120, a few seconds), `coco`
    /// (the seed's scale: 200 shards × 592 images of 640×480, about 100 MB a shard, 20 GB,
    /// some 40 minutes on two cores) or `imagenet` (10 × 1,000 images of 520×390, about
    /// 110 KB each: with `--layout files`, ImageNet-like loose files).
    /// Explicit flags override it.
    #[arg(long, value_enum)]
    preset: Option<generate::Preset>,
    /// Number of shards.
    #[arg(long)]
    shards: Option<u32>,
    /// Images per shard.
    #[arg(long)]
    samples_per_shard: Option<u32>,
    /// Image size, WIDTHxHEIGHT.
    #[arg(long, value_parser = generate::parse_size)]
    image_size: Option<(u32, u32)>,
    /// Seed of the generator: the same seed writes the same shards, byte for byte.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write shards again even if they exist.
    #[arg(long)]
    force: bool,
    /// `shards` (WebDataset tars) or `files` (an ImageNet-style tree `train/n<class>/<index>.jpg`
    /// of individual JPEGs, and `files.txt` listing them for `train --files`).
    #[arg(long, value_enum, default_value_t = Layout::Shards)]
    layout: Layout,
    /// With `--layout files`: how many files (default: the preset's shards × images per
    /// shard).
    #[arg(long)]
    files: Option<u64>,
}

/// How `gen` lays the samples out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    Shards,
    Files,
}

fn main() -> ExitCode {
    warpdrive_cli::generate_docs_if_asked::<Args>();
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Train(a) => run_train(a),
        Cmd::Gen(a) => {
            let base = a.preset.unwrap_or(generate::Preset::Quick).spec();
            let spec = generate::Spec {
                shards: a.shards.unwrap_or(base.shards),
                samples_per_shard: a.samples_per_shard.unwrap_or(base.samples_per_shard),
                width: a.image_size.map_or(base.width, |s| s.0),
                height: a.image_size.map_or(base.height, |s| s.1),
                seed: a.seed,
            };
            match a.layout {
                Layout::Shards => {
                    generate::write_shards(&a.out, &spec, a.force, &mut std::io::stderr())
                }
                Layout::Files => files::write_files(
                    &a.out,
                    &spec,
                    a.files
                        .unwrap_or(u64::from(spec.shards) * u64::from(spec.samples_per_shard)),
                    a.force,
                    &mut std::io::stderr(),
                ),
            }
        }
        Cmd::Pack(a) => pack::pack(
            &pack::PackConfig {
                images: a.images,
                labels: a.labels,
                out: a.out,
                samples_per_shard: a.samples_per_shard,
                classes: a.classes,
                shuffle_seed: a.shuffle_seed,
            },
            &mut std::io::stderr(),
        )
        .map(|_| ()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warpdrive-forge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let roots: Vec<PathBuf> = a
        .train_root_a
        .into_iter()
        .chain(a.train_root_b)
        .chain(a.train_root)
        .collect();
    let data = if let Some(list) = &a.files {
        train::Data::Files(files::from_list(list, a.classes)?)
    } else if let Some(dir) = &a.image_folder {
        train::Data::Files(files::from_folder(dir, a.classes)?)
    } else if roots.is_empty() {
        clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            "name what to train on: directories of shards (--train-root-a DIR, --train-root-b, --train-root), a file list (--files LIST) or an image folder (--image-folder DIR)\n",
        )
        .exit();
    } else {
        train::Data::Shards(roots)
    };
    let cfg = train::TrainConfig {
        data,
        steps: a.steps,
        batch_size: a.batch_size,
        workers: a.num_workers,
        seed: a.seed,
        log_every: a.log_every,
        learning_rate: a.learning_rate,
        classes: a.classes,
        queue_depth: a.queue_depth,
        plan: a
            .plan
            .as_ref()
            .zip(a.plan_socket.as_ref())
            .map(|(job, socket)| plan::PlanTarget {
                socket: socket.clone(),
                job: job.clone(),
                rank: a.plan_rank,
            }),
        first_epoch: a.first_epoch,
    };
    let s = train::train(&cfg, &mut std::io::stdout().lock())?;
    eprintln!(
        "trained {} steps on {} images in {:.0} ms ({:.1} images/s; {} {} opened, {:.1} MB read; skipped: {})",
        s.steps,
        s.images,
        s.wall_ms,
        s.images_per_sec,
        s.shards_opened,
        if a.files.is_some() || a.image_folder.is_some() {
            "files"
        } else {
            "shards"
        },
        s.bytes_read as f64 / 1e6,
        if s.skipped.total() == 0 {
            "nothing".to_string()
        } else {
            format!("{:?}", s.skipped)
        }
    );
    if let Some(path) = a.summary {
        let json = serde_json::to_string_pretty(&s)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(())
}
