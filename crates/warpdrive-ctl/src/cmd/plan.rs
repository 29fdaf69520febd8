//! `warpdrive-ctl plan`: epoch plans in the running daemon: `submit` a reader's order for an
//! epoch, `status` of every plan (how far ahead of its reader the daemon is), `clear`.

use std::io::Read;

use anyhow::{Context, Result, bail};
use warpdrive_config::Config;
use warpdrive_control::api::{PlanRequest, PlanStatus, PlansCleared};
use warpdrive_fs::plan::parse_lines;

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
A plan tells the daemon what one reader of a training job will read next, in order: the
daemon then fetches each file (or byte range) before the reader gets to it, keeping about ten
seconds of the reader's pace fetched ahead. A plan is an optimisation: reads outside it, or
without one, work as always.

Plan files have one entry per line: a path (under the mount point, wd://BACKEND/KEY or
BACKEND/KEY) for a whole file, or PATH<TAB>OFFSET<TAB>LENGTH for a byte range (a tar member).
Blank lines and lines starting with # are skipped. A bad line refuses the whole plan.

Exit codes: 0 done; 1 the plan was refused (the reason names the line or entry), no daemon
runs, or there was nothing to clear; 2 bad config.")]
pub struct PlanArgs {
    #[command(subcommand)]
    cmd: PlanCmd,
}

#[derive(Debug, clap::Subcommand)]
enum PlanCmd {
    /// Submits the order one reader will read an epoch in; replaces the job and rank's plan
    /// for an earlier epoch (its prefetch stops).
    Submit {
        /// The plan file, or - for standard input.
        file: String,
        /// The training job (letters, digits, `.`, `_`, `-`).
        #[arg(long)]
        job: String,
        /// The reader's rank within the job.
        #[arg(long, default_value_t = 0)]
        rank: u32,
        /// The epoch the order is for.
        #[arg(long, default_value_t = 0)]
        epoch: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every plan: entries reached, fetched ahead or late, the lead in bytes and seconds.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drops a job's plans (every rank's, or --rank's).
    Clear {
        #[arg(long)]
        job: String,
        #[arg(long)]
        rank: Option<u32>,
    },
}

fn print(list: &[PlanStatus], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no plans");
        return Ok(());
    }
    println!(
        "{:<20} {:>4} {:>5} {:>9} {:>9} {:>8} {:>7} {:>6} {:>10} {:>7}  state",
        "job", "rank", "epoch", "entries", "reached", "ahead", "late", "failed", "lead", "lead s"
    );
    for p in list {
        println!(
            "{:<20} {:>4} {:>5} {:>9} {:>9} {:>8} {:>7} {:>6} {:>10} {:>7.1}  {}",
            p.job,
            p.rank,
            p.epoch,
            p.entries,
            p.reached,
            p.ahead,
            p.late,
            p.failed,
            size(p.lead_bytes as f64),
            p.lead_seconds,
            p.state
        );
    }
    Ok(())
}

pub fn run(config: &Config, a: &PlanArgs) -> Result<u8> {
    let Some(c) = api::daemon(config) else {
        eprintln!(
            "warpdrive-ctl: no daemon answers at {}; plans live in the running daemon",
            config.control.socket.display()
        );
        return Ok(exit::DEGRADED);
    };
    match &a.cmd {
        PlanCmd::Submit {
            file,
            job,
            rank,
            epoch,
            json,
        } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the plan from standard input")?;
            } else {
                text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            }
            let entries = parse_lines(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            let req = PlanRequest {
                job: job.clone(),
                rank: *rank,
                epoch: *epoch,
                entries,
            };
            let s: PlanStatus = c.post("/api/v1/plans", &req)?;
            print(&[s], *json)?;
        }
        PlanCmd::Status { json } => {
            let list: Vec<PlanStatus> = c.get("/api/v1/plans")?;
            print(&list, *json)?;
        }
        PlanCmd::Clear { job, rank } => {
            let q = rank.map(|r| format!("?rank={r}")).unwrap_or_default();
            let r: PlansCleared = c.delete(&format!("/api/v1/plans/{job}{q}"))?;
            if r.cleared == 0 {
                bail!("no plan for job {job}");
            }
            println!("cleared {} plan(s) of job {job}", r.cleared);
        }
    }
    Ok(exit::OK)
}
