//! Telling a supervisor when the mount serves, so nothing starts on an empty directory.
//!
//! Algorithm. After the FUSE session threads start, the daemon stats its own mount point until
//! the kernel answers through it (the state `warpdrive-ctl status` calls live), then says so
//! two ways: systemd's notify protocol (one datagram `READY=1` with a `STATUS=` line to the
//! socket named by `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract name; nothing
//! without it) and `--ready-file` (the daemon's pid written to a temporary name and renamed,
//! so a reader sees the whole file or none). At stop: `STOPPING=1`, and the ready file goes
//! before the unmount, so it is never there while the mount is not.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use warpdrive_fs::mountinfo::{MountState, wait_live};

/// How long the daemon waits for its own mount to answer before it gives up on starting.
const LIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the supervisor hears, and where the ready file goes.
#[derive(Debug)]
pub(crate) struct Readiness {
    ready_file: Option<PathBuf>,
}

impl Readiness {
    /// Checks `--ready-file` before anything is mounted (its directory must exist) and
    /// removes a ready file left by an earlier daemon.
    pub(crate) fn new(ready_file: Option<PathBuf>) -> Result<Readiness> {
        if let Some(f) = &ready_file {
            let dir = match f.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                bail!(
                    "--ready-file {}: the directory {} does not exist",
                    f.display(),
                    dir.display()
                );
            }
            match std::fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("--ready-file {}: removing the old one", f.display())
                    });
                }
            }
        }
        Ok(Readiness { ready_file })
    }

    /// Waits until `mount_point` answers as a WarpDrive mount, runs `first` (settings that
    /// need the live mount), then tells the supervisor.
    pub(crate) fn wait_live_and_tell(
        &self,
        mount_point: &Path,
        first: impl FnOnce(),
    ) -> Result<Duration> {
        let start = Instant::now();
        if wait_live(mount_point, LIVE_TIMEOUT) != MountState::Live {
            bail!(
                "the mount at {} did not answer within {LIVE_TIMEOUT:?}",
                mount_point.display()
            );
        }
        first();
        if let Some(f) = &self.ready_file {
            let tmp = f.with_extension("tmp-warpdrive");
            std::fs::write(&tmp, format!("{}\n", std::process::id()))
                .and_then(|()| std::fs::rename(&tmp, f))
                .with_context(|| format!("writing --ready-file {}", f.display()))?;
        }
        notify(&format!(
            "READY=1\nSTATUS=serving {}\nMAINPID={}",
            mount_point.display(),
            std::process::id()
        ));
        Ok(start.elapsed())
    }

    /// The daemon is stopping: the ready file goes first, then systemd hears `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        if let Some(f) = &self.ready_file {
            let _ = std::fs::remove_file(f);
        }
        notify("STOPPING=1");
    }
}

/// Sends `state` to systemd's notify socket, if the daemon has one; a failure is logged,
/// never fatal (the mount serves either way).
fn notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&addr, state) {
        tracing::warn!(socket = ?addr, error = %e, "could not tell systemd (NOTIFY_SOCKET)");
    }
}

fn send(addr: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = addr.as_bytes();
    let to = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(addr)?,
    };
    sock.send_to_addr(state.as_bytes(), &to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path)?;
        send(path.as_os_str(), "READY=1")?;
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("warpdrive-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(
            name.as_bytes(),
        )?)?;
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1")?;
        let n = abs.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"STOPPING=1");
        Ok(())
    }

    #[test]
    fn a_ready_file_in_a_missing_directory_is_refused_and_an_old_one_removed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let e = Readiness::new(Some(dir.path().join("no/such/ready"))).expect_err("refused");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let old = dir.path().join("ready");
        std::fs::write(&old, "1\n")?;
        Readiness::new(Some(old.clone()))?;
        assert!(!old.exists(), "an old ready file is removed at start");
        Ok(())
    }
}
