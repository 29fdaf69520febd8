//! `warpdrive-forge`: the showcase's workload. `gen` writes WebDataset shards of JPEG images
//! (`NNNNNN.jpg` + `NNNNNN.cls`) whose pictures depend on their class; training on them
//! through the mount comes next.

mod generate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The WarpDrive showcase workload.
#[derive(Debug, Parser)]
#[command(name = "warpdrive-forge", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write WebDataset shards of generated JPEG images in 10 classes: `shard-NNNNNN.tar`,
    /// each holding `NNNNNN.jpg` and `NNNNNN.cls` per sample. The same seed writes the same
    /// bytes; shards already in `--out` are kept (use `--force` to write them again).
    Gen(GenArgs),
}

#[derive(Debug, clap::Args)]
struct GenArgs {
    /// Directory to write the shards to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// A preset scale: `quick` (16 shards × 64 images of 160×120, a few seconds) or `coco`
    /// (the seed's scale: 200 shards × 592 images of 640×480, about 95 MB a shard, 19 GB).
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Gen(a) => {
            let base = a.preset.unwrap_or(generate::Preset::Quick).spec();
            let spec = generate::Spec {
                shards: a.shards.unwrap_or(base.shards),
                samples_per_shard: a.samples_per_shard.unwrap_or(base.samples_per_shard),
                width: a.image_size.map_or(base.width, |s| s.0),
                height: a.image_size.map_or(base.height, |s| s.1),
                seed: a.seed,
            };
            generate::write_shards(&a.out, &spec, a.force, &mut std::io::stderr())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warpdrive-forge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
