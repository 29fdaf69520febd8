//! `warpdrive-ctl restart`: hands the mount to a new daemon without unmounting, then waits
//! until the new one answers (the mount keeps serving throughout; readers wait for the few
//! milliseconds between the two daemons and see no error).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::http::Method;
use warpdrive_config::Config;
use warpdrive_control::api::{ApiError, DaemonStatus, RestartAccepted, RestartRequest};

use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The daemon serving the mount stops and a new one, started from the warpdrive-mount binary
installed now, takes the same mount over: open files stay open, passthrough reads go on,
requests made meanwhile wait and are answered by the new daemon. Use it after upgrading the
package, or to pick up config changes that need no new mount. The backends, the mount point,
the cache directory, read-only or not, fuse.allow_other, fuse.control_file and
fuse.zero_message_opens need one (systemctl restart). `systemctl reload warpdrive` does the
same under systemd.

The restart is refused, and the daemon keeps serving, if a file written through the mount is
still open after --wait (its data would die with the daemon), if a warm or copy job runs, or
if the config file is invalid or changes what needs a new mount. The reason is printed.

Exit codes: 0 the new daemon serves; 1 refused, no daemon answers, or no new daemon answered
within --timeout; 2 bad config.")]
pub struct RestartArgs {
    /// How long the daemon waits for files open for writing to be closed before it refuses.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// How long to wait for the new daemon to answer.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print JSON (the new daemon's status) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, a: &RestartArgs) -> Result<u8> {
    let Some(c) = api::daemon(config) else {
        bail!(
            "no daemon answers on {}; start the mount first (warpdrive-mount, or systemctl start warpdrive)",
            config.control.socket.display()
        );
    };
    let before: DaemonStatus = c.get("/api/v1/status")?;
    let req = RestartRequest {
        wait_seconds: Some(a.wait.as_secs()),
    };
    let old = match c.raw(
        Method::POST,
        "/api/v1/restart",
        Some(serde_json::to_vec(&req)?),
    ) {
        Ok((status, body)) if status.is_success() => {
            serde_json::from_slice::<RestartAccepted>(&body)?
        }
        Ok((status, body)) => {
            let why = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            bail!("restart refused ({status}): {why}; the daemon serves on");
        }
        // The answer was lost on its way (the daemon went as it sent it): whether the restart
        // happened shows in which daemon answers next.
        Err(_) => RestartAccepted {
            pid: before.pid,
            generation: before.generation,
        },
    };
    let started = Instant::now();
    loop {
        if let Some(c) = api::daemon(config)
            && let Ok(s) = c.get::<DaemonStatus>("/api/v1/status")
            && s.generation > old.generation
        {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "restarted: daemon pid {} handed {} to pid {}, which served after {} ms; the mount stayed mounted",
                    old.pid,
                    s.mount_point,
                    s.pid,
                    s.took_over_ms.unwrap_or_default()
                );
            }
            return Ok(exit::OK);
        }
        if started.elapsed() > a.timeout {
            bail!(
                "daemon pid {} handed the mount over, but no new daemon answered within {}; see the daemon's log (journalctl -u warpdrive)",
                old.pid,
                humantime::format_duration(a.timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
