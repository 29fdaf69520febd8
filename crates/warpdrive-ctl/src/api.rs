//! How a command reaches the cache: through the running daemon's control API (its Unix
//! socket) when one answers, so the daemon's live index and metrics see everything, or
//! directly otherwise.

use anyhow::{Result, bail};
use warpdrive_cache::{Cache, CacheConfig, CacheError};
use warpdrive_config::Config;
use warpdrive_control::client::Client;

/// The running daemon's API, if its socket answers.
pub fn daemon(config: &Config) -> Option<Client> {
    Client::daemon(config)
}

/// Opens the cache for a command that changes it while no daemon runs.
pub fn open_cache(config: &Config) -> Result<Cache> {
    if !config.cache.dir.join("index.db").exists() {
        bail!(
            "no cache index in {} yet (warpdrive-mount creates it when it first starts)",
            config.cache.dir.display()
        );
    }
    match Cache::open(CacheConfig {
        dir: config.cache.dir.clone(),
        block_size: config.cache.block_size,
    }) {
        Ok(c) => Ok(c),
        Err(e @ CacheError::Locked { .. }) => bail!(
            "{e}, but its control socket {} does not answer; is control.socket the same in the daemon's config?",
            config.control.socket.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Every cached object, read from the index without a daemon (none before the first start).
pub fn local_objects(dir: &std::path::Path) -> Result<Vec<warpdrive_cache::IndexObject>> {
    if !dir.join("index.db").exists() {
        return Ok(Vec::new());
    }
    warpdrive_cache::read_index_objects(dir)
        .map_err(|e| anyhow::anyhow!("reading the cache index in {}: {e}", dir.display()))
}
