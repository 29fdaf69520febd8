//! The errno policy: every error the core or the adapter answers, and the one errno each
//! becomes. `FsError::errno` is the only place an errno is chosen; the FUSE adapter answers
//! its own refusals (a non-UTF-8 name, a write, an extended attribute, an ioctl) through it
//! too, and one table test below covers every class.

use warpdrive_store::StoreError;

/// Errors of filesystem operations, in the classes the FUSE adapter turns into an errno.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("name too long")]
    NameTooLong,
    #[error("unknown file handle")]
    BadHandle,
    #[error("object changed on the backend while it was open")]
    Stale,
    /// No such extended attribute (the mount keeps none).
    #[error("no such attribute")]
    NoAttribute,
    /// The file is read by passthrough through another handle, and this open cannot share
    /// its backing file now (doc/SEMANTICS.md, "Passthrough").
    #[error("open by passthrough elsewhere, and this open cannot share its cache file now")]
    Busy,
    /// A device control (`ioctl`): the mount's files are not devices.
    #[error("not a terminal or device")]
    NotATerminal,
    /// An operation the mount does not implement, and tells the kernel so (it then stops
    /// sending it): `flush` under zero-message opens, where no file has anything to do at
    /// `close`.
    #[error("not implemented")]
    NotImplemented,
    /// What was written to the control file was refused (the reason is logged and can be
    /// read back from the file).
    #[error("refused: {0}")]
    Invalid(String),
    /// A write past the most the control file takes.
    #[error("too large")]
    TooLarge,
    /// A create (or rename) onto a name that exists, where overwriting is not allowed.
    #[error("file exists")]
    Exists,
    /// The cache disk is below its free-space floor: no new file is spooled.
    #[error("no space left on the cache disk")]
    NoSpace,
    /// What the backend's write settings do not allow (a delete without `delete: true`).
    #[error("operation not permitted")]
    NotPermitted,
    #[error("directory not empty")]
    NotEmpty,
    /// A rename across backends or of a directory: the caller copies instead.
    #[error("cross-device rename")]
    CrossDevice,
    /// Changing an existing object in place (an open for writing without `O_TRUNC`).
    #[error("not supported")]
    NotSupported,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FsError {
    /// The errno the kernel sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::BadHandle => libc::EBADF,
            FsError::Stale => libc::ESTALE,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Busy => libc::EBUSY,
            FsError::NotATerminal => libc::ENOTTY,
            FsError::NotImplemented => libc::ENOSYS,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::TooLarge => libc::EFBIG,
            FsError::Exists => libc::EEXIST,
            FsError::NoSpace => libc::ENOSPC,
            FsError::NotPermitted => libc::EPERM,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::Store(e) => store_errno(e),
        }
    }
}

/// The errno of a store's error: an answer the store gave keeps its meaning (not found,
/// changed, denied); a store that could not answer is `EIO`, or `ETIMEDOUT` when it did not
/// answer in time.
fn store_errno(e: &StoreError) -> i32 {
    match e {
        StoreError::NotFound { .. } | StoreError::InvalidKey { .. } => libc::ENOENT,
        StoreError::AlreadyExists { .. } => libc::EEXIST,
        StoreError::PreconditionFailed { .. } => libc::ESTALE,
        StoreError::Denied { .. } => libc::EACCES,
        StoreError::Timeout { .. } => libc::ETIMEDOUT,
        StoreError::Throttled { .. }
        | StoreError::Server { .. }
        | StoreError::Transport { .. }
        | StoreError::ShortRead { .. }
        | StoreError::Cancelled { .. }
        | StoreError::Io { .. }
        | StoreError::Build { .. }
        | StoreError::Other { .. } => libc::EIO,
        // A class added later is a failure to answer until it is given its own errno here.
        _ => libc::EIO,
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every class, and the errno it must become (doc/SEMANTICS.md, "Errors").
    #[test]
    fn every_error_class_has_its_errno() {
        let b = || "b".to_string();
        let m = || "m".to_string();
        let store = [
            (
                StoreError::NotFound {
                    backend: b(),
                    key: m(),
                },
                libc::ENOENT,
            ),
            (
                StoreError::InvalidKey {
                    backend: b(),
                    key: m(),
                },
                libc::ENOENT,
            ),
            (
                StoreError::PreconditionFailed {
                    backend: b(),
                    key: m(),
                },
                libc::ESTALE,
            ),
            (
                StoreError::AlreadyExists {
                    backend: b(),
                    key: m(),
                },
                libc::EEXIST,
            ),
            (
                StoreError::Denied {
                    backend: b(),
                    message: m(),
                },
                libc::EACCES,
            ),
            (
                StoreError::Timeout {
                    backend: b(),
                    after: Duration::from_secs(1),
                },
                libc::ETIMEDOUT,
            ),
            (
                StoreError::Throttled {
                    backend: b(),
                    message: m(),
                },
                libc::EIO,
            ),
            (
                StoreError::Server {
                    backend: b(),
                    status: Some(500),
                    message: m(),
                },
                libc::EIO,
            ),
            (
                StoreError::Transport {
                    backend: b(),
                    message: m(),
                },
                libc::EIO,
            ),
            (
                StoreError::ShortRead {
                    backend: b(),
                    key: m(),
                    asked: 2,
                    got: 1,
                },
                libc::EIO,
            ),
            (
                StoreError::Cancelled {
                    backend: b(),
                    message: m(),
                },
                libc::EIO,
            ),
            (
                StoreError::Io {
                    backend: b(),
                    message: m(),
                },
                libc::EIO,
            ),
            (
                StoreError::Build {
                    backend: b(),
                    message: m(),
                },
                libc::EIO,
            ),
            (
                StoreError::Other {
                    backend: b(),
                    message: m(),
                },
                libc::EIO,
            ),
        ];
        for (e, errno) in store {
            assert_eq!(FsError::Store(e.clone()).errno(), errno, "{e:?}");
        }
        let fs = [
            (FsError::NotFound, libc::ENOENT),
            (FsError::NotDir, libc::ENOTDIR),
            (FsError::IsDir, libc::EISDIR),
            (FsError::ReadOnly, libc::EROFS),
            (FsError::NameTooLong, libc::ENAMETOOLONG),
            (FsError::BadHandle, libc::EBADF),
            (FsError::Stale, libc::ESTALE),
            (FsError::NoAttribute, libc::ENODATA),
            (FsError::Busy, libc::EBUSY),
            (FsError::NotATerminal, libc::ENOTTY),
            (FsError::NotImplemented, libc::ENOSYS),
            (FsError::Invalid("line 1".into()), libc::EINVAL),
            (FsError::TooLarge, libc::EFBIG),
            (FsError::Exists, libc::EEXIST),
            (FsError::NoSpace, libc::ENOSPC),
            (FsError::NotPermitted, libc::EPERM),
            (FsError::NotEmpty, libc::ENOTEMPTY),
            (FsError::CrossDevice, libc::EXDEV),
            (FsError::NotSupported, libc::EOPNOTSUPP),
        ];
        for (e, errno) in fs {
            assert_eq!(e.errno(), errno, "{e:?}");
        }
    }
}
