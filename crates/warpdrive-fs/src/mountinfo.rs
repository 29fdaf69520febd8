//! Is a WarpDrive filesystem mounted at a path, live or stale?
//!
//! Read from `/proc/self/mountinfo` (the kernel's mount table) and a `stat` of the path: a
//! FUSE mount whose daemon died still appears in the table, but `statfs` fails with `ENOTCONN`.

use std::path::Path;

/// The filesystem name WarpDrive mounts with (`fsname=`), shown as the mount's source.
pub const FS_NAME: &str = "warpdrive";

/// What is at a mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountState {
    /// No FUSE filesystem is mounted there.
    NotMounted,
    /// A WarpDrive mount answers.
    Live,
    /// A FUSE mount whose daemon is gone (`ENOTCONN`).
    Stale,
    /// Another FUSE filesystem is mounted there.
    Other,
}

impl MountState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MountState::NotMounted => "not mounted",
            MountState::Live => "mounted",
            MountState::Stale => "stale (daemon gone)",
            MountState::Other => "another filesystem is mounted",
        }
    }
}

/// Decodes the octal escapes (`\040` for a space) mountinfo uses in paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (fstype, source) of the topmost mount at `path`, if any.
pub fn mount_entry(path: &Path) -> Option<(String, String)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    let mut found = None;
    for line in table.lines() {
        // id parent major:minor root mount_point options [optional...] - fstype source superopts
        let mut parts = line.split(" - ");
        let (Some(left), Some(right)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(mp) = left.split(' ').nth(4) else {
            continue;
        };
        if unescape(mp) != want {
            continue;
        }
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or_default().to_string();
        let source = unescape(r.next().unwrap_or_default());
        found = Some((fstype, source));
    }
    found
}

/// `statfs` of `path`: unlike `stat`, it always reaches the filesystem (the kernel caches
/// attributes but not `statfs`), so a dead daemon shows up as `ENOTCONN` at once.
fn probe(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable statfs struct.
    let r = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_ours(fstype: &str, source: &str) -> bool {
    source == FS_NAME || fstype == format!("fuse.{FS_NAME}")
}

/// The state of `path` as a WarpDrive mount point.
pub fn mount_state(path: &Path) -> MountState {
    let entry = mount_entry(path);
    let stat = probe(path);
    if let Err(e) = &stat
        && e.raw_os_error() == Some(libc::ENOTCONN)
        && entry
            .as_ref()
            .is_none_or(|(fstype, source)| is_ours(fstype, source))
    {
        // Disconnected: a FUSE mount whose daemon died. Only WarpDrive's own mounts (or one
        // missing from this namespace's table) count as stale; another's is left alone.
        return MountState::Stale;
    }
    match entry {
        Some((fstype, source)) if fstype.starts_with("fuse") => {
            if is_ours(&fstype, &source) {
                if stat.is_ok() {
                    MountState::Live
                } else {
                    MountState::Stale
                }
            } else {
                MountState::Other
            }
        }
        _ => MountState::NotMounted,
    }
}

/// Polls `path` until it is a live WarpDrive mount or `within` has passed; its last state.
/// (The daemon waits so for its own mount before it reports ready; `warpdrive-ctl status
/// --wait` for a daemon's.)
pub fn wait_live(path: &Path, within: std::time::Duration) -> MountState {
    let start = std::time::Instant::now();
    loop {
        let state = mount_state(path);
        if state == MountState::Live || start.elapsed() >= within {
            return state;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn root_is_not_a_warpdrive_mount() {
        assert_ne!(mount_state(Path::new("/")), MountState::Live);
        assert_eq!(
            mount_state(Path::new("/nonexistent-warpdrive")),
            MountState::NotMounted
        );
    }
}
