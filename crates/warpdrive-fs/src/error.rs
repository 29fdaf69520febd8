//! The errno policy: every error the core returns, and the one errno each becomes.

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
            FsError::Store(e) => match e {
                StoreError::NotFound { .. } => libc::ENOENT,
                StoreError::InvalidKey { .. } => libc::ENOENT,
                StoreError::PreconditionFailed { .. } => libc::ESTALE,
                StoreError::Timeout { .. } => libc::ETIMEDOUT,
                StoreError::Denied { .. } => libc::EACCES,
                StoreError::Build { .. } | StoreError::Io { .. } | StoreError::Other { .. } => {
                    libc::EIO
                }
            },
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        let nf = StoreError::NotFound {
            backend: "b".into(),
            key: "k".into(),
        };
        assert_eq!(FsError::Store(nf).errno(), libc::ENOENT);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        let other = StoreError::Other {
            backend: "b".into(),
            message: "boom".into(),
        };
        assert_eq!(FsError::Store(other).errno(), libc::EIO);
    }
}
