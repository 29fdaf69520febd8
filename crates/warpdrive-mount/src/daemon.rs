//! `--daemon`: run the daemon as a detached child and return once its mount is live.
//!
//! The parent re-executes itself with the same flags plus a hidden `--daemon-child`, in a new
//! session (`setsid`, so the terminal's signals and hang-up do not reach it), with stdin from
//! `/dev/null` and stdout/stderr appended to `--log-file`. It then waits until the mount point
//! is a live WarpDrive mount (exit 0, printing the child's pid) or the child exits (its exit
//! code, with the last lines of the log). Forking after the runtime and FUSE threads exist
//! would be unsafe; re-executing avoids that.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warpdrive_config::Config;
use warpdrive_fs::mountinfo::{MountState, mount_state};

use crate::{Args, exit};

/// How long the parent waits for the child's mount to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 20;

fn log_tail(path: &std::path::Path) -> String {
    let Ok(f) = std::fs::File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

pub(crate) fn detach(args: &Args, config: &Config) -> u8 {
    if let Some(dir) = args.log_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log_file)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warpdrive-mount: cannot open log file {}: {e}; choose another with --log-file",
                args.log_file.display()
            );
            return exit::FAILED;
        }
    };
    let (Ok(out), Ok(err)) = (log.try_clone(), log.try_clone()) else {
        eprintln!("warpdrive-mount: cannot duplicate the log file handle");
        return exit::FAILED;
    };
    let Some(exe) = crate::own_exe() else {
        return exit::FAILED;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(&args.config)
        .arg("--log-file")
        .arg(&args.log_file)
        .arg("--daemon")
        .arg("--daemon-child")
        .args(
            args.ready_file
                .iter()
                .flat_map(|f| [std::ffi::OsStr::new("--ready-file"), f.as_os_str()]),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent; it runs in
    // the forked child before exec, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warpdrive-mount: cannot start the daemon: {e}");
            return exit::FAILED;
        }
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "warpdrive-mount: the daemon exited before mounting ({status}); last lines of {}:\n{}",
                args.log_file.display(),
                log_tail(&args.log_file)
            );
            return status
                .code()
                .map(|c| c as u8)
                .filter(|c| *c != 0)
                .unwrap_or(exit::FAILED);
        }
        if mount_state(&config.mount_point) == MountState::Live {
            println!(
                "warpdrive-mount: mounted at {} (pid {}, log {})",
                config.mount_point.display(),
                child.id(),
                args.log_file.display()
            );
            return exit::OK;
        }
        if start.elapsed() > START_TIMEOUT {
            // Do not leave a daemon behind that might still mount later, unexpectedly.
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "warpdrive-mount: the daemon (pid {}) had not mounted {} after {:?} and was stopped; see {}",
                child.id(),
                config.mount_point.display(),
                START_TIMEOUT,
                args.log_file.display()
            );
            return exit::FAILED;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
