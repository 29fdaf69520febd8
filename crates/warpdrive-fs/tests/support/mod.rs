//! What the core's integration tests share: the in-memory backend's config, a block cache in
//! a temporary directory, and the core's settings with nothing the test does not ask for
//! (no stale answers, no negative answers, no passthrough).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use warpdrive_cache::{Cache, CacheConfig};
use warpdrive_config::{BackendConfig, MetadataTtl};
use warpdrive_fs::FsConfig;

/// The backend's name (`mem`) and empty prefix; its kind is not used: requests go to the
/// store given to `Backend::with_store`.
pub fn mem_config() -> BackendConfig {
    warpdrive_testkit::local_backend("mem", std::path::Path::new("/nonexistent"))
}

/// A block cache of 1 MiB blocks in a new temporary directory (kept alive by the caller).
pub fn temp_cache() -> (tempfile::TempDir, Arc<Cache>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(CacheConfig {
        dir: dir.path().join("cache"),
        block_size: 1 << 20,
    })
    .expect("cache");
    (dir, Arc::new(cache))
}

/// The core's settings: `metadata_ttl`, a prefetch budget of `prefetch` bytes, 1 MiB blocks,
/// and nothing else on.
pub fn fs_config(metadata_ttl: MetadataTtl, prefetch: u64) -> FsConfig {
    FsConfig {
        metadata_ttl,
        stale_if_error: Duration::ZERO,
        negative_ttl: Duration::ZERO,
        uid: 0,
        gid: 0,
        block_size: 1 << 20,
        prefetch_budget: prefetch,
        passthrough: false,
        passthrough_min_size: 0,
        control: None,
        write_part_size: warpdrive_fs::core::WRITE_PART_SIZE,
        write_memory: warpdrive_fs::core::WRITE_MEMORY,
    }
}
