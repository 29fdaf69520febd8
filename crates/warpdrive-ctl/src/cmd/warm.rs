//! `warpdrive-ctl warm`: pre-populates the cache with files or whole directories, through
//! the running daemon (so its index and metrics see every byte and a reader arriving
//! meanwhile joins the fetch in flight).
//!
//! The daemon runs the warm as a job; this command follows its progress (a bar on a
//! terminal, a line every few seconds otherwise). Ctrl-C cancels the job: what was fetched
//! stays cached, and running the same command again fetches only the rest.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use warpdrive_config::Config;
use warpdrive_control::api::{Job, JobState, WarmRequest};
use warpdrive_control::jobs::DEFAULT_WARM_PARALLEL;

use crate::fmt::size;
use crate::{api, exit};

/// Exit code after Ctrl-C (128 + SIGINT), as shells expect.
pub(crate) const INTERRUPTED: u8 = 130;
const POLL: Duration = Duration::from_millis(200);
/// Without a terminal, one progress line this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 everything warmed; 1 some objects failed (listed), or no daemon answers; 2 bad config; 130 interrupted with Ctrl-C (what was fetched stays cached)."
)]
pub struct WarmArgs {
    /// Files or directories: paths under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX.
    #[arg(required = true)]
    paths: Vec<String>,
    /// Include every level below each directory (otherwise only the files directly in it).
    #[arg(long, short)]
    recursive: bool,
    /// Objects fetched at once.
    #[arg(long, default_value_t = DEFAULT_WARM_PARALLEL)]
    parallel: usize,
    /// Print the finished job as JSON instead of progress and a summary.
    #[arg(long)]
    json: bool,
}

fn interrupted_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            f.store(true, Ordering::Relaxed);
        }
    });
    flag
}

fn line(j: &Job, elapsed: Duration) -> String {
    let rate = j.bytes_fetched as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 && j.bytes_total > j.bytes_done {
        format!(
            ", ETA {}",
            humantime::format_duration(Duration::from_secs(
                ((j.bytes_total - j.bytes_done) as f64 / rate) as u64
            ))
        )
    } else {
        String::new()
    };
    format!(
        "{} of {} ({}/{} objects), fetched {} at {}/s{eta}",
        size(j.bytes_done as f64),
        size(j.bytes_total as f64),
        j.objects_done,
        j.objects_total,
        size(j.bytes_fetched as f64),
        size(rate)
    )
}

pub fn run(config: &Config, a: &WarmArgs) -> Result<u8> {
    let Some(client) = api::daemon(config) else {
        bail!(
            "warm runs through the daemon, but nothing answers on {}; start warpdrive-mount first",
            config.control.socket.display()
        );
    };
    let job: Job = client.post(
        "/api/v1/warm",
        &WarmRequest {
            paths: a.paths.clone(),
            recursive: a.recursive,
            parallel: Some(a.parallel.max(1)),
        },
    )?;
    let id = job.id;
    let job = follow(
        job,
        !a.json && std::io::stdout().is_terminal(),
        || client.get(&format!("/api/v1/jobs/{id}")),
        || {
            client
                .delete::<Job>(&format!("/api/v1/jobs/{id}"))
                .map(|_| ())
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        for e in &job.errors {
            eprintln!("warpdrive-ctl: warm: {e}");
        }
        if job.error_count > job.errors.len() as u64 {
            eprintln!(
                "warpdrive-ctl: warm: {} more errors (see the daemon's log)",
                job.error_count - job.errors.len() as u64
            );
        }
        println!(
            "{}: {} objects ({} already cached), {} fetched; {} of {} now cached",
            match job.state {
                JobState::Cancelled => "interrupted",
                _ if job.error_count > 0 => "finished with errors",
                _ => "warm",
            },
            job.objects_done,
            job.objects_skipped,
            size(job.bytes_fetched as f64),
            size(job.bytes_done as f64),
            size(job.bytes_total as f64)
        );
    }
    Ok(match job.state {
        JobState::Cancelled => INTERRUPTED,
        JobState::Done if job.error_count == 0 => exit::OK,
        _ => exit::DEGRADED,
    })
}

/// Polls a job with `get` until it finishes, showing progress (a bar, or a line every few
/// seconds on stderr); Ctrl-C cancels it (once) with `cancel`.
pub(crate) fn follow(
    mut job: Job,
    bar: bool,
    get: impl Fn() -> Result<Job>,
    cancel: impl Fn() -> Result<()>,
) -> Result<Job> {
    let interrupted = interrupted_flag();
    let started = Instant::now();
    let mut cancelled = false;
    let mut last_line = Instant::now();
    let pb = bar.then(|| {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb
    });
    while !job.state.finished() {
        std::thread::sleep(POLL);
        if interrupted.load(Ordering::Relaxed) && !cancelled {
            cancelled = true;
            eprintln!(
                "warpdrive-ctl: stopping the {} (work done so far is kept)",
                job.kind
            );
            cancel()?;
        }
        job = get()?;
        if let Some(pb) = &pb {
            pb.set_length(job.bytes_total);
            pb.set_position(job.bytes_done);
            pb.set_message(format!(
                "{}/{} objects",
                job.objects_done, job.objects_total
            ));
        } else if last_line.elapsed() >= LINE_EVERY {
            last_line = Instant::now();
            eprintln!("{}: {}", job.kind, line(&job, started.elapsed()));
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(job)
}
