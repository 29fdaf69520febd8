//! The cache's errors: what went wrong, and whether it was the disk (which turns the cache
//! off for a while) or only a full cache or bad input (which do not).

use std::path::{Path, PathBuf};

/// Errors of the cache store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache index: {0}")]
    Index(#[from] rusqlite::Error),
    #[error("block {block} is outside an object of {size} bytes")]
    OutOfRange { block: u64, size: u64 },
    #[error("block {block} has {got} bytes, expected {want}")]
    WrongLength { block: u64, got: usize, want: u64 },
    #[error("the cache index writer has stopped")]
    WriterGone,
    #[error(
        "cache directory {dir} is in use by another warpdrive-mount (pid {pid}); give each daemon its own cache.dir"
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("no room in the cache for {bytes} more bytes within its limits")]
    NoRoom { bytes: u64 },
}

impl CacheError {
    /// Whether this is a failure of the cache disk (as opposed to a full cache or bad input).
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            CacheError::Io { .. } | CacheError::Index(_) | CacheError::WriterGone
        )
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;
