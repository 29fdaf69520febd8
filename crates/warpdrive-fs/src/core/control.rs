//! The control directory's operations (`<mount>/.warpdrive/plan`; the protocol is in
//! [`crate::control`]): the core's operations hand their control inodes and handles here
//! (writes, sizes and closes from the write path's entry points in `core/write.rs`), so the
//! FUSE adapter serves the control file like any other.

use std::sync::Arc;

use super::meta::KERNEL_TTL_MAX;
use super::{Attr, DirEntry, Fs, Opened};
use crate::control::{self, Command, DIR_INO, DIR_NAME, PLAN_INO, PLAN_NAME, WriteError};
use crate::error::{FsError, FsResult};
use crate::inode::{Ino, Kind};

impl Fs {
    /// The attributes of a control inode.
    pub(super) fn control_attr(&self, ino: Ino) -> Attr {
        let dir = ino == DIR_INO;
        Attr {
            ino,
            kind: if dir { Kind::Dir } else { Kind::File },
            size: 0,
            mtime: self.started,
            // Anyone who can read the mount may submit plans: a plan only fetches early what
            // the mount serves to everyone who can read it.
            perm: if dir { 0o555 } else { 0o666 },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            kernel_ttl: KERNEL_TTL_MAX,
        }
    }

    /// A lookup the control directory answers: `.warpdrive` in the root, anything in
    /// `.warpdrive`. `None`: not the control directory's.
    pub(super) fn control_lookup(&self, parent: Ino, name: &str) -> Option<FsResult<Attr>> {
        if parent == Ino::ROOT && name == DIR_NAME && self.control.enabled() {
            return Some(Ok(self.control_attr(DIR_INO)));
        }
        if parent == PLAN_INO {
            return Some(Err(FsError::NotDir));
        }
        (parent == DIR_INO).then(|| {
            if name == PLAN_NAME {
                Ok(self.control_attr(PLAN_INO))
            } else {
                Err(FsError::NotFound)
            }
        })
    }

    /// Opens the control file (for reading its status, writing a plan, or both).
    pub(super) fn control_open(&self, ino: Ino) -> FsResult<Opened> {
        if ino == DIR_INO {
            return Err(FsError::IsDir);
        }
        Ok(Opened {
            fh: self.control.open(),
            keep_cache: false,
            passthrough: None,
            direct: true,
        })
    }

    /// Opens the control directory: a handle whose reads list `plan`.
    pub(super) fn control_opendir(&self, ino: Ino) -> FsResult<u64> {
        if ino != DIR_INO {
            return Err(FsError::NotDir);
        }
        Ok(self.control.open())
    }

    /// The control directory's entries from `offset` on.
    pub(super) fn control_readdir(&self, offset: u64) -> Vec<DirEntry> {
        [
            (".", DIR_INO, Kind::Dir),
            ("..", Ino::ROOT, Kind::Dir),
            (PLAN_NAME, PLAN_INO, Kind::File),
        ]
        .into_iter()
        .zip(1u64..)
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .map(|((name, ino, kind), next_offset)| DirEntry {
            ino,
            kind,
            name: name.to_string(),
            next_offset,
        })
        .collect()
    }

    /// A read of the control file: its status text.
    pub(super) fn control_read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.control
            .read(fh, offset, size, |own, results| {
                control::status_text(own, results, &self.plans())
            })
            .ok_or(FsError::BadHandle)
    }

    /// A write to the control file: its handle collects what is written.
    pub(super) fn control_write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.control.write(fh, offset, data).map_err(|e| match e {
            WriteError::BadHandle => FsError::BadHandle,
            WriteError::TooLarge => FsError::TooLarge,
        })
    }

    /// A new size for the control file (an open with `O_TRUNC` truncates its handle's
    /// text); new times are ignored.
    pub(super) fn control_setattr(&self, fh: Option<u64>, size: Option<u64>) -> Attr {
        if let (Some(fh), Some(size)) = (fh, size) {
            self.control.truncate(fh, size);
        }
        self.control_attr(PLAN_INO)
    }

    /// A `close` (or `fsync`) of the control file: what was written since the last one is
    /// submitted (or cleared), a refused text being `EINVAL`. Must run inside the runtime.
    pub(super) fn control_flush(self: &Arc<Self>, fh: u64) -> FsResult<()> {
        let Some(text) = self.control.take_dirty(fh) else {
            return Ok(());
        };
        let result = self.control_command(&text);
        let line = match &result {
            Ok(done) => done.clone(),
            Err(why) => {
                tracing::warn!(reason = %why, "the control file refused what was written to it");
                format!("refused: {why}")
            }
        };
        self.control.record(fh, line);
        result.map(|_| ()).map_err(FsError::Invalid)
    }

    /// Runs what was written to the control file: what was done, or why it was refused.
    fn control_command(self: &Arc<Self>, text: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8 text: {e}"))?;
        let mount_point = self.control.mount_point.as_deref().unwrap_or("/".as_ref());
        match control::parse(text, mount_point).map_err(|e| e.0)? {
            Command::Submit(req) => {
                let s = self.submit_plan(&req).map_err(|e| e.0)?;
                Ok(format!(
                    "accepted job={} rank={} epoch={} entries={}",
                    s.job, s.rank, s.epoch, s.entries
                ))
            }
            Command::Clear { job, rank } => {
                let rank_text = rank.map(|r| format!(" rank={r}")).unwrap_or_default();
                match self.clear_plans(&job, rank) {
                    0 => Err(format!("no plan for job={job}{rank_text}")),
                    n => Ok(format!("cleared job={job}{rank_text} plans={n}")),
                }
            }
        }
    }
}
