//! Preparing the mount point: it must be an empty directory; a stale WarpDrive mount left by a
//! killed daemon is cleared first.

use std::path::Path;

use anyhow::{Result, bail};
use warpdrive_fs::mountinfo::{MountState, mount_state};

/// Checks `mp` and clears a stale mount on it.
pub(crate) fn prepare(mp: &Path) -> Result<()> {
    match mount_state(mp) {
        MountState::Live => bail!(
            "{} is already a live WarpDrive mount; stop that daemon or run `umount {}` first",
            mp.display(),
            mp.display()
        ),
        MountState::Other => bail!(
            "another filesystem is mounted at {}; choose another mount_point or unmount it",
            mp.display()
        ),
        MountState::Stale => {
            tracing::warn!(mount_point = %mp.display(), "clearing a stale mount left by a daemon that is gone");
            nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                anyhow::anyhow!(
                    "{} holds a stale mount that cannot be cleared ({e}); run `umount -l {}` as root",
                    mp.display(),
                    mp.display()
                )
            })?;
        }
        MountState::NotMounted => {}
    }
    let md = match std::fs::metadata(mp) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mount point {} does not exist; create it with `mkdir -p {}`",
            mp.display(),
            mp.display()
        ),
        Err(e) => bail!("cannot access mount point {}: {e}", mp.display()),
    };
    if !md.is_dir() {
        bail!(
            "mount point {} is not a directory; point mount_point at an empty directory",
            mp.display()
        );
    }
    let mut entries = std::fs::read_dir(mp)
        .map_err(|e| anyhow::anyhow!("cannot read mount point {}: {e}", mp.display()))?;
    if entries.next().is_some() {
        bail!(
            "mount point {} is not empty; mounting over files would hide them, so use an empty directory",
            mp.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_and_nonempty_are_errors() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = d.path().join("nope");
        let e = prepare(&missing).expect_err("missing").to_string();
        assert!(
            e.contains("does not exist") && e.contains("mkdir -p"),
            "{e}"
        );

        let file = d.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let e = prepare(&file).expect_err("file").to_string();
        assert!(e.contains("not a directory"), "{e}");

        let full = d.path().join("full");
        std::fs::create_dir(&full).expect("mkdir");
        std::fs::write(full.join("a"), b"x").expect("write");
        let e = prepare(&full).expect_err("non-empty").to_string();
        assert!(e.contains("not empty"), "{e}");

        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        prepare(&empty).expect("empty dir is fine");
    }
}
