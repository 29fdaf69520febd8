//! `warpdrive-ctl copy` and `move`: objects or whole prefixes between backends (for example
//! `wd://datasets-cac/train/` → `wd://datasets-wus3/train/`), streamed with multipart
//! uploads, each copy verified by reading it back (SHA-256) before a `move` deletes its
//! source. Resumable: a re-run skips what an earlier run copied and verified.
//!
//! Runs as a job in the daemon when one answers (so `ctl` may exit and the job goes on only
//! while followed; Ctrl-C cancels it), otherwise in this process.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result};
use warpdrive_config::Config;
use warpdrive_control::api::{CopyRequest, Job, JobState};
use warpdrive_control::jobs::{DEFAULT_WARM_PARALLEL, Jobs};

use crate::cmd::warm::{INTERRUPTED, follow};
use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every object copied and verified (and, for move, its source deleted); 1 some objects failed (listed) or bad input; 2 bad config; 130 interrupted with Ctrl-C (a re-run goes on from there)."
)]
pub struct CopyArgs {
    /// What to copy: wd://BACKEND/PREFIX (a prefix is copied with everything below it, an
    /// object by itself), BACKEND/PREFIX, or a path under the mount point.
    src: String,
    /// Where to: a prefix of another backend (or elsewhere in the same one). An object lands
    /// at DST itself, or inside it when DST ends with `/` or is a directory.
    dst: String,
    /// Delete each source object once its copy is verified (what `move` does).
    #[arg(long)]
    delete_source: bool,
    /// Objects copied at once.
    #[arg(long, default_value_t = DEFAULT_WARM_PARALLEL)]
    parallel: usize,
    /// List what would be copied; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the finished job as JSON instead of progress and a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, a: &CopyArgs, is_move: bool) -> Result<u8> {
    let req = CopyRequest {
        src: a.src.clone(),
        dst: a.dst.clone(),
        delete_source: a.delete_source || is_move,
        parallel: Some(a.parallel.max(1)),
        dry_run: a.dry_run,
    };
    warpdrive_control::copy::check(config, &req)?;
    let bar = !a.json && std::io::stdout().is_terminal();
    let job = match api::daemon(config) {
        Some(client) => {
            let job: Job = client.post("/api/v1/copy", &req)?;
            let id = job.id;
            follow(
                job,
                bar,
                || client.get(&format!("/api/v1/jobs/{id}")),
                || {
                    client
                        .delete::<Job>(&format!("/api/v1/jobs/{id}"))
                        .map(|_| ())
                },
            )?
        }
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let backends = warpdrive_control::server::build_backends(config)?;
            let jobs = Jobs::default();
            let job = {
                let _in = rt.enter();
                jobs.start_copy(Arc::new(config.clone()), backends, req)
            };
            let id = job.id;
            follow(
                job,
                bar,
                || jobs.get(id).context("the job vanished"),
                || {
                    jobs.cancel(id);
                    Ok(())
                },
            )?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        for p in &job.plan {
            println!("{p}");
        }
        for e in &job.errors {
            eprintln!("warpdrive-ctl: {}: {e}", job.kind);
        }
        if job.dry_run {
            println!(
                "would copy {} objects ({} already copied and verified), {} in all",
                job.objects_total - job.objects_skipped,
                job.objects_skipped,
                size(job.bytes_total as f64)
            );
        } else {
            println!(
                "{}: {} of {} objects ({} already there), {} written{}",
                match job.state {
                    JobState::Cancelled => "interrupted",
                    JobState::Failed => "failed",
                    _ if job.error_count > 0 => "finished with errors",
                    _ => "done",
                },
                job.objects_done,
                job.objects_total,
                job.objects_skipped,
                size(job.bytes_written as f64),
                if job.kind == "move" {
                    format!(
                        ", {} sources deleted after verification",
                        job.objects_deleted
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(match job.state {
        JobState::Cancelled => INTERRUPTED,
        JobState::Done if job.error_count == 0 => exit::OK,
        _ => exit::DEGRADED,
    })
}
