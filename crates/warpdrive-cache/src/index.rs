//! The persistent index: `index.db`, SQLite in WAL mode, written by one background thread.
//!
//! The hot path never waits on SQLite. [`Cache`](crate::Cache) keeps the whole index in memory
//! and sends every change to the writer thread as an [`Op`]; the thread takes the first op,
//! drains whatever else arrived (up to [`MAX_BATCH`]), and commits them in one transaction.
//! `flush` sends a marker and waits for the commit that includes it.
//!
//! Crash safety comes from the order of writes, not from syncing: a block's bytes are written
//! to its data file before its index row is queued, so a committed row never names bytes that
//! were not written. If the machine loses power after the row is committed but before the
//! page cache reached the disk, the block's CRC32C no longer matches and the block is dropped
//! on its next read. WAL mode lets `warpdrive-ctl` read the index while the daemon writes.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, params};

use crate::{CacheError, Crcs};

/// The on-disk format version: bump it with any change to the schema or the data file
/// layout. An index with another version is discarded and rebuilt (with a log line).
pub const FORMAT_VERSION: i64 = 3;

/// Older formats upgraded in place instead of rebuilt: (from version, statements to the next).
/// Format 3 added each object's store checksum.
const MIGRATIONS: [(i64, &str); 1] = [(
    2,
    "ALTER TABLE objects ADD COLUMN store_checksum TEXT;
     ALTER TABLE objects ADD COLUMN store_verified INTEGER NOT NULL DEFAULT 0;",
)];

/// The schema of format [`FORMAT_VERSION`]. The golden test in `tests.rs` fails if this text
/// changes without a version bump.
pub(crate) const SCHEMA: &str = "\
CREATE TABLE objects (
    id INTEGER PRIMARY KEY,
    backend TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    last_access INTEGER NOT NULL,
    store_checksum TEXT,
    store_verified INTEGER NOT NULL DEFAULT 0,
    UNIQUE (backend, key)
);
CREATE TABLE blocks (
    object_id INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    block INTEGER NOT NULL,
    crc32c BLOB NOT NULL,
    PRIMARY KEY (object_id, block)
) WITHOUT ROWID;
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 4096;

/// One change to the index.
#[derive(Debug)]
pub(crate) enum Op {
    PutObject {
        id: u64,
        backend: String,
        key: String,
        etag: String,
        size: u64,
        last_access: i64,
    },
    /// The store's checksum of the object's version, in its text form (`None`: it has none).
    SetChecksum {
        id: u64,
        checksum: Option<String>,
    },
    /// Whether the cached bytes were last found to match the store's checksum (any block
    /// written since clears it).
    SetVerified {
        id: u64,
        verified: bool,
    },
    /// `crcs`: one CRC32C per check unit of the block.
    PutBlock {
        object_id: u64,
        block: u64,
        crcs: Crcs,
    },
    DropBlock {
        object_id: u64,
        block: u64,
    },
    DropObject {
        id: u64,
    },
    Touch {
        id: u64,
        last_access: i64,
    },
    AddCounter {
        name: &'static str,
        delta: i64,
    },
    Flush(mpsc::Sender<()>),
}

/// An object row as loaded at start.
#[derive(Debug)]
pub(crate) struct LoadedObject {
    pub id: u64,
    pub backend: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub last_access: i64,
    pub store_checksum: Option<String>,
    pub store_verified: bool,
    pub blocks: Vec<(u64, Crcs)>,
}

/// Opens (or creates) the index. The flag is true when an existing index had another format
/// and was discarded; its data files are then unknown and removed by the caller.
pub(crate) fn open(path: &Path, block_size: u64) -> Result<(Connection, bool), CacheError> {
    let fresh = !path.exists();
    let mut conn = connect(path)?;
    let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    while !fresh && let Some((_, sql)) = MIGRATIONS.iter().find(|(v, _)| *v == version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(
            from = version,
            to = version + 1,
            "cache index upgraded in place"
        );
        version += 1;
    }
    let stored_bs = if version == FORMAT_VERSION {
        counter(&conn, "block_size")?
    } else {
        0
    };
    let mut rebuilt = false;
    if !fresh && (version != FORMAT_VERSION || (stored_bs != 0 && stored_bs as u64 != block_size)) {
        tracing::warn!(
            found = version,
            expected = FORMAT_VERSION,
            found_block_size = stored_bs,
            block_size,
            path = %path.display(),
            "cache index has another format version or block size; rebuilding the cache empty"
        );
        drop(conn);
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{}{suffix}", path.display());
            let _ = std::fs::remove_file(p);
        }
        conn = connect(path)?;
        rebuilt = true;
    }
    if fresh || rebuilt {
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", FORMAT_VERSION)?;
        tx.commit()?;
    }
    if stored_bs == 0 || rebuilt {
        conn.execute(
            "INSERT OR REPLACE INTO counters (name, value) VALUES ('block_size', ?1)",
            [block_size as i64],
        )?;
    }
    Ok((conn, rebuilt))
}

/// Whether an error says the index file itself is damaged (not a database, corrupt pages),
/// as opposed to a failure to reach it (permissions, a full disk, a lock).
pub(crate) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Moves a damaged index (and its WAL files) to `index.db.damaged-<unix seconds>` beside it;
/// returns the new path of the index file.
pub(crate) fn move_aside(path: &Path) -> std::path::PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tag = format!("damaged-{secs}");
    for suffix in ["-wal", "-shm", ""] {
        let from = format!("{}{suffix}", path.display());
        let to = format!("{}.{tag}{suffix}", path.display());
        let _ = std::fs::rename(&from, &to);
    }
    std::path::PathBuf::from(format!("{}.{tag}", path.display()))
}

fn connect(path: &Path) -> Result<Connection, CacheError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with NORMAL is durable across process crashes; a power loss may drop the last
    // commits, which only costs refetching those blocks.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Opens an index read-only, beside a daemon that may be writing it (WAL allows this).
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, CacheError> {
    Ok(Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?)
}

/// Every object with its blocks.
pub(crate) fn load(conn: &Connection) -> Result<Vec<LoadedObject>, CacheError> {
    let mut objects = Vec::new();
    let mut stmt = conn
        .prepare("SELECT id, backend, key, etag, size, last_access, store_checksum, store_verified FROM objects")?;
    let rows = stmt.query_map([], |r| {
        Ok(LoadedObject {
            id: r.get::<_, i64>(0)? as u64,
            backend: r.get(1)?,
            key: r.get(2)?,
            etag: r.get(3)?,
            size: r.get::<_, i64>(4)? as u64,
            last_access: r.get(5)?,
            store_checksum: r.get(6)?,
            store_verified: r.get::<_, i64>(7)? != 0,
            blocks: Vec::new(),
        })
    })?;
    for row in rows {
        objects.push(row?);
    }
    let mut by_id: std::collections::HashMap<u64, usize> =
        objects.iter().enumerate().map(|(i, o)| (o.id, i)).collect();
    let mut stmt = conn.prepare("SELECT object_id, block, crc32c FROM blocks")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    for row in rows {
        let (oid, block, blob) = row?;
        // A blob that is not whole CRCs is damage: the block reads as corrupt and is refetched.
        let crcs: Crcs = blob
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = by_id.get_mut(&oid) {
            objects[*i].blocks.push((block, crcs));
        }
    }
    Ok(objects)
}

/// Every persisted counter.
pub(crate) fn counters(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<String, i64>, CacheError> {
    let mut stmt = conn.prepare("SELECT name, value FROM counters")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let (k, v) = row?;
        out.insert(k, v);
    }
    Ok(out)
}

/// A persisted counter's value.
pub(crate) fn counter(conn: &Connection, name: &str) -> Result<i64, CacheError> {
    Ok(conn
        .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .unwrap_or(0))
}

/// Runs the writer until the channel closes.
pub(crate) fn run_writer(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        match apply(&mut conn, batch, &mut flushes) {
            Ok(Skipped { count: 0, .. }) => {}
            Ok(Skipped { count, first }) => tracing::warn!(
                skipped = count,
                error = first.as_deref().unwrap_or(""),
                "cache index: changes that could not be written were skipped (the rest of the batch was kept); the blocks they name are refetched after a restart"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cache index write failed; the affected blocks will be refetched after a restart")
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Changes of a batch that failed on their own and were left out.
#[derive(Debug, Default)]
pub(crate) struct Skipped {
    pub count: usize,
    /// The first one's error.
    pub first: Option<String>,
}

/// Commits `batch` in one transaction. If a change fails (a row naming an object that is gone,
/// a full disk for one page), the transaction is rolled back and the batch applied again with
/// each change in its own savepoint, so the failing one is rolled back and counted alone
/// instead of taking the whole batch with it. (Savepoints for every change cost two more
/// statements each, a third of the writer's time, for batches that almost never fail.)
pub(crate) fn apply(
    conn: &mut Connection,
    batch: Vec<Op>,
    flushes: &mut Vec<mpsc::Sender<()>>,
) -> rusqlite::Result<Skipped> {
    let (ops, done): (Vec<Op>, Vec<Op>) = batch
        .into_iter()
        .partition(|op| !matches!(op, Op::Flush(_)));
    flushes.extend(done.into_iter().filter_map(|op| match op {
        Op::Flush(done) => Some(done),
        _ => None,
    }));
    let tx = conn.transaction()?;
    if ops.iter().try_for_each(|op| apply_one(&tx, op)).is_ok() {
        tx.commit()?;
        return Ok(Skipped::default());
    }
    drop(tx);
    apply_each(conn, ops)
}

/// Commits `batch` in one transaction, each change in its own savepoint.
fn apply_each(conn: &mut Connection, batch: Vec<Op>) -> rusqlite::Result<Skipped> {
    let mut tx = conn.transaction()?;
    let mut skipped = Skipped::default();
    for op in batch {
        let sp = tx.savepoint()?;
        match apply_one(&sp, &op) {
            Ok(()) => sp.commit()?,
            Err(e) => {
                // Dropping the savepoint rolls this change back.
                skipped.count += 1;
                skipped.first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    tx.commit()?;
    Ok(skipped)
}

/// One change, inside the batch's transaction.
fn apply_one(tx: &Connection, op: &Op) -> rusqlite::Result<()> {
    {
        match op {
            Op::PutObject {
                id,
                backend,
                key,
                etag,
                size,
                last_access,
            } => {
                // One version per (backend, key): a new version replaces the old row.
                tx.prepare_cached("DELETE FROM objects WHERE backend = ?1 AND key = ?2")?
                    .execute(params![backend, key])?;
                tx.prepare_cached("INSERT OR REPLACE INTO objects (id, backend, key, etag, size, last_access) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![*id as i64, backend, key, etag, *size as i64, last_access],
                )?;
            }
            Op::SetChecksum { id, checksum } => {
                tx.prepare_cached("UPDATE objects SET store_checksum = ?2 WHERE id = ?1")?
                    .execute(params![*id as i64, checksum])?;
            }
            Op::SetVerified { id, verified } => {
                tx.prepare_cached("UPDATE objects SET store_verified = ?2 WHERE id = ?1")?
                    .execute(params![*id as i64, verified])?;
            }
            Op::PutBlock {
                object_id,
                block,
                crcs,
            } => {
                let blob: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO blocks (object_id, block, crc32c) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![*object_id as i64, *block as i64, blob])?;
            }
            Op::DropBlock { object_id, block } => {
                tx.prepare_cached("DELETE FROM blocks WHERE object_id = ?1 AND block = ?2")?
                    .execute(params![*object_id as i64, *block as i64])?;
            }
            Op::DropObject { id } => {
                tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?
                    .execute(params![*id as i64])?;
            }
            Op::Touch { id, last_access } => {
                tx.prepare_cached("UPDATE objects SET last_access = ?2 WHERE id = ?1")?
                    .execute(params![*id as i64, last_access])?;
            }
            Op::AddCounter { name, delta } => {
                tx.prepare_cached("INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2")?.execute(params![name, delta],
                )?;
            }
            Op::Flush(_) => {}
        }
    }
    Ok(())
}
