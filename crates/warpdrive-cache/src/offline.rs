//! Reading a cache's index without opening the cache: what `warpdrive-ctl` reports about a
//! cache directory whether or not a daemon holds it (SQLite in WAL mode lets a reader beside
//! the writer), and the same summary for a running cache.

use std::path::Path;

use crate::{Cache, CacheError, CachedBlock, Result, block_len, index, push_blocks};

/// What the index of the cache in `dir` holds, read without taking the cache's lock (a running
/// daemon may hold it): what `warpdrive-ctl stats` prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexSummary {
    pub format_version: i64,
    pub block_size: u64,
    pub objects: u64,
    pub blocks: u64,
    pub bytes: u64,
    /// Persisted lifetime counters (`hit_blocks`, `hit_bytes`, `miss_blocks`, `miss_bytes`,
    /// `evicted_blocks`, `corrupt_blocks`), as of the daemon's last commit.
    pub counters: std::collections::BTreeMap<String, i64>,
    /// Unix seconds of the least and most recent access among cached objects.
    pub oldest_access: Option<i64>,
    pub newest_access: Option<i64>,
}

/// One cached object version as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexObject {
    pub backend: String,
    pub key: String,
    pub etag: String,
    /// The object's size.
    pub size: u64,
    pub blocks: u64,
    /// Bytes of its cached blocks.
    pub cached_bytes: u64,
    /// Unix seconds of its last read (to the minute).
    pub last_access: i64,
}

/// Every cached object in the index of the cache in `dir`, read without the cache's lock.
pub fn read_index_objects(dir: &Path) -> Result<Vec<IndexObject>> {
    Ok(read_index(dir)?.1)
}

/// Reads the summary of the cache in `dir` (see [`IndexSummary`]).
pub fn read_index_summary(dir: &Path) -> Result<IndexSummary> {
    Ok(read_index(dir)?.0)
}

fn read_index(dir: &Path) -> Result<(IndexSummary, Vec<IndexObject>)> {
    let conn = index::open_read_only(&dir.join("index.db"))?;
    let block_size = index::counter(&conn, "block_size")? as u64;
    let mut s = IndexSummary {
        format_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
        block_size,
        counters: index::counters(&conn)?,
        ..Default::default()
    };
    let mut objects = Vec::new();
    for o in index::load(&conn)? {
        let cached: u64 = o
            .blocks
            .iter()
            .map(|(b, _)| block_len(block_size, o.size, *b))
            .sum();
        let o = IndexObject {
            blocks: o.blocks.len() as u64,
            backend: o.backend,
            key: o.key,
            etag: o.etag,
            size: o.size,
            cached_bytes: cached,
            last_access: o.last_access,
        };
        s.add(&o);
        objects.push(o);
    }
    Ok((s, objects))
}

impl IndexSummary {
    /// Counts one cached object into the totals.
    fn add(&mut self, o: &IndexObject) {
        self.objects += 1;
        self.blocks += o.blocks;
        self.bytes += o.cached_bytes;
        let t = o.last_access;
        self.oldest_access = Some(self.oldest_access.map_or(t, |x| x.min(t)));
        self.newest_access = Some(self.newest_access.map_or(t, |x| x.max(t)));
    }
}

impl Cache {
    /// What `stats` prints, for a running cache: the totals from memory (no walk of the
    /// index's block table), the lifetime counters as committed after a flush.
    pub fn summary(&self) -> Result<IndexSummary> {
        self.flush()?;
        let conn = index::open_read_only(&self.cfg.dir.join("index.db"))?;
        let mut s = IndexSummary {
            format_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            block_size: self.cfg.block_size,
            counters: index::counters(&conn)?,
            ..Default::default()
        };
        for o in self.objects() {
            s.add(&o);
        }
        Ok(s)
    }
}

/// Runs SQLite's `quick_check` on the index in `dir` (read-only, beside a live daemon);
/// returns its format version when the index is sound.
pub fn check_index(dir: &Path) -> Result<i64> {
    let conn = index::open_read_only(&dir.join("index.db"))?;
    let r: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if r != "ok" {
        return Err(CacheError::Io {
            path: dir.join("index.db"),
            source: std::io::Error::other(format!("index integrity check failed: {r}")),
        });
    }
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Every cached block recorded in the index of the cache in `dir`, read without taking the
/// cache's lock (a running daemon may hold it): what `warpdrive-ctl` and tests inspect.
pub fn read_index_blocks(dir: &Path) -> Result<Vec<CachedBlock>> {
    let conn = index::open_read_only(&dir.join("index.db"))?;
    let block_size = index::counter(&conn, "block_size")? as u64;
    let data_dir = dir.join("data");
    let mut out = Vec::new();
    for o in index::load(&conn)? {
        push_blocks(
            &mut out,
            (&data_dir, block_size),
            (&o.backend, &o.key, o.id, o.size),
            o.blocks.iter().map(|(b, _)| *b),
        );
    }
    out.sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
    Ok(out)
}
