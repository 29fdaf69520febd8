//! What a daemon leaves for the one that replaces it on a live mount (a crash, a kill, an
//! upgrade), so that the kernel's inode numbers and open files stay valid.
//!
//! The kernel keeps what it learnt from the daemon: inode numbers behind every cached
//! dentry and open file, and file handles in every open file. A replacement daemon has to
//! answer them all, so both are written down as they are handed out, in the session
//! directory (`<cache.dir>/session/`, private like the cache), where a process that is
//! killed still leaves them complete:
//!
//! * **The inode journal** (`inodes`): one record per inode numbered (its number, kind,
//!   backend and key), per rename and per unlink, appended with one `write` each while the
//!   inode table's path lock is held, so records are in the order the table changed. A
//!   `write` to a file survives the death of the process that made it (it is in the page
//!   cache); the journal is not synced, because a machine that crashes loses the mount too.
//!   The replacement replays it into its table: every number the kernel may hold means the
//!   same path again. A torn last record (a full disk) is ignored.
//! * **The handle ledger** (`handles`): a fixed table of 32-byte slots in a file mapped
//!   shared, one per open file handle: its number, inode, how it is served (passthrough,
//!   by the daemon, or being written) and, for passthrough, the cache file and the kernel's
//!   backing id. Memory writes, not system calls: an open of a small file costs no more.
//!   The replacement reads the live slots to rebuild the kernel's view of each inode's
//!   opens (the kernel refuses a passthrough open beside a cached one and a second backing
//!   for one inode), adopts the backing ids, and knows which handles were files being
//!   written, whose data died with the daemon (their next call fails `EIO`).
//!
//! Handle numbers of the replacement start above every earlier one ([`handle_base`]), so an
//! old handle is never taken for a new one; an old handle the replacement does not hold is
//! served by reopening its inode.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::inode::{BackendId, Ino, Kind, NodePath};

/// The session directory inside the cache directory.
pub fn session_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("session")
}

/// The first file handle number of daemon `generation` (0 for the one that mounted): each
/// generation numbers 2^40 handles of its own, below the control file's range.
pub fn handle_base(generation: u64) -> u64 {
    (generation << 40) | 1
}

const JOURNAL_MAGIC: &[u8; 8] = b"WDINOJ01";
const NEW: u8 = 1;
const RENAME: u8 = 2;
const UNLINK: u8 = 3;
/// Backend index of the mount root in a record.
const NO_BACKEND: u16 = u16::MAX;

/// Why a journal cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("reading the session journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a session journal")]
    NotAJournal { path: PathBuf },
    #[error(
        "the backends changed since the mount was made (it had {had}, the config now has {now}); \
         a running mount keeps its backends: unmount and mount again to change them"
    )]
    BackendsChanged { had: String, now: String },
}

/// One change of the inode table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `ino` was numbered for `path` and became the path's node.
    New {
        ino: Ino,
        kind: Kind,
        path: NodePath,
    },
    /// `ino` was renamed to `path`.
    Rename { ino: Ino, path: NodePath },
    /// `ino`'s path was forgotten (it stays valid by number).
    Unlink { ino: Ino },
}

/// The append-only inode journal.
#[derive(Debug)]
pub struct InodeJournal {
    file: Mutex<File>,
    path: PathBuf,
    /// Set after the first failed write, so a full disk logs once.
    failed: std::sync::atomic::AtomicBool,
    /// Bytes of whole records (and the header) in the file.
    len: std::sync::atomic::AtomicU64,
}

impl InodeJournal {
    /// A new, empty journal for a mount over `backends` (replacing any earlier one).
    pub fn create(path: &Path, backends: &[String]) -> io::Result<InodeJournal> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let mut head = JOURNAL_MAGIC.to_vec();
        head.extend_from_slice(&(backends.len() as u32).to_le_bytes());
        for b in backends {
            head.extend_from_slice(&(b.len() as u32).to_le_bytes());
            head.extend_from_slice(b.as_bytes());
        }
        file.write_all(&head)?;
        Ok(InodeJournal {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            failed: Default::default(),
            len: (head.len() as u64).into(),
        })
    }

    /// The journal at `path`, appended to from its end (after [`replay`]).
    pub fn append_to(path: &Path, whole: u64) -> io::Result<InodeJournal> {
        let file = OpenOptions::new().append(true).open(path)?;
        // A torn end [`replay`] ignored is cut off, so that new records follow whole ones.
        if file.metadata()?.len() > whole {
            file.set_len(whole)?;
        }
        Ok(InodeJournal {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            failed: Default::default(),
            len: whole.into(),
        })
    }

    pub fn record(&self, r: &Record) {
        let mut buf = Vec::with_capacity(64);
        encode(r, &mut buf);
        let mut f = self.file.lock();
        if let Err(e) = f.write_all(&buf) {
            // A record written in part (a full disk) is cut off again, so that later
            // records follow whole ones.
            if let Ok(end) = f.metadata().map(|m| m.len()) {
                let len = self.len.load(std::sync::atomic::Ordering::Relaxed);
                if end > len {
                    let _ = f.set_len(len);
                }
            }
            if !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "cannot write the inode journal; a daemon that replaces this one answers ESTALE for the files first seen from now on"
                );
            }
            return;
        }
        self.len
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

fn encode_path(p: &NodePath, buf: &mut Vec<u8>) {
    let b = p.backend.map_or(NO_BACKEND, |b| b.0 as u16);
    buf.extend_from_slice(&b.to_le_bytes());
    buf.extend_from_slice(&(p.key.len() as u32).to_le_bytes());
    buf.extend_from_slice(p.key.as_bytes());
}

fn encode(r: &Record, buf: &mut Vec<u8>) {
    match r {
        Record::New { ino, kind, path } => {
            buf.push(NEW);
            buf.extend_from_slice(&ino.0.to_le_bytes());
            buf.push(match kind {
                Kind::Dir => 0,
                Kind::File => 1,
            });
            encode_path(path, buf);
        }
        Record::Rename { ino, path } => {
            buf.push(RENAME);
            buf.extend_from_slice(&ino.0.to_le_bytes());
            encode_path(path, buf);
        }
        Record::Unlink { ino } => {
            buf.push(UNLINK);
            buf.extend_from_slice(&ino.0.to_le_bytes());
        }
    }
}

/// A cursor over the journal's bytes; `None` at a torn end.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn path(&mut self) -> Option<NodePath> {
        let b = self.u16()?;
        let key = self.string()?;
        Some(NodePath {
            backend: (b != NO_BACKEND).then_some(BackendId(b as usize)),
            key,
        })
    }
    fn record(&mut self) -> Option<Record> {
        let op = self.u8()?;
        let ino = Ino(self.u64()?);
        match op {
            NEW => {
                let kind = match self.u8()? {
                    0 => Kind::Dir,
                    _ => Kind::File,
                };
                let path = self.path()?;
                Some(Record::New { ino, kind, path })
            }
            RENAME => Some(Record::Rename {
                ino,
                path: self.path()?,
            }),
            UNLINK => Some(Record::Unlink { ino }),
            _ => None,
        }
    }
}

/// A journal read back.
#[derive(Debug)]
pub struct Replayed {
    pub records: Vec<Record>,
    /// Bytes of whole records (and the header): where the next record goes.
    pub whole: u64,
}

/// The records of the journal at `path`, for a mount over `backends` (which must be the
/// ones the journal was made for, in the same order: backend roots are numbered by it).
pub fn replay(path: &Path, backends: &[String]) -> Result<Replayed, ResumeError> {
    let io_err = |source| ResumeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err)?;
    let mut c = Cursor(&bytes);
    let not_journal = || ResumeError::NotAJournal {
        path: path.to_path_buf(),
    };
    if c.take(8) != Some(&JOURNAL_MAGIC[..]) {
        return Err(not_journal());
    }
    let n = c.u32().ok_or_else(not_journal)?;
    let mut had = Vec::new();
    for _ in 0..n {
        had.push(c.string().ok_or_else(not_journal)?);
    }
    if had != backends {
        return Err(ResumeError::BackendsChanged {
            had: had.join(","),
            now: backends.join(","),
        });
    }
    let mut records = Vec::new();
    let mut whole = bytes.len() as u64;
    while !c.0.is_empty() {
        let rest = c.0.len();
        match c.record() {
            Some(r) => records.push(r),
            None => {
                tracing::warn!(path = %path.display(), "the inode journal ends in a torn record; ignored");
                whole = (bytes.len() - rest) as u64;
                break;
            }
        }
    }
    Ok(Replayed { records, whole })
}

/// How a handle in the ledger is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleMode {
    /// Read by the kernel from a cache file (`oid`), over backing id `backing`.
    Passthrough { oid: u64, backing: u32 },
    /// Read through the daemon, with the page cache, of the object version whose ETag has
    /// this [`version_tag`]: a successor serving the handle checks it is still that one.
    Cached { version: u64 },
    /// A file being written through the mount.
    Writing,
}

/// One live handle of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    pub fh: u64,
    pub ino: Ino,
    pub mode: HandleMode,
}

/// A 64-bit tag of an object version's ETag (FNV-1a: the same in every build, unlike the
/// standard library's hasher, so a successor from an upgraded binary computes the same).
pub fn version_tag(etag: &str) -> u64 {
    etag.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Marks a ledger file of this layout (header word 1).
const LEDGER_MAGIC: u64 = u64::from_le_bytes(*b"WDLEDG01");

/// Slots in the ledger (one is its header): the most handles open at once that a
/// replacement will know about (32 MiB of file, sparse: only pages of slots ever used take
/// memory or disk, and only those are read).
pub const LEDGER_SLOTS: usize = 1 << 20;
const SLOT_BYTES: usize = 32;

/// The open-handle ledger: slots in a shared mapping of the `handles` file.
pub struct HandleLedger {
    map: *mut u64,
    slots: usize,
    state: Mutex<LedgerState>,
    _file: File,
}

// SAFETY: the mapping is written only under `state`'s lock (each slot by one handle), and
// lives as long as the ledger.
unsafe impl Send for HandleLedger {}
// SAFETY: as above.
unsafe impl Sync for HandleLedger {}

impl std::fmt::Debug for HandleLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleLedger")
            .field("slots", &self.slots)
            .finish()
    }
}

#[derive(Default)]
struct LedgerState {
    /// Slot of each recorded handle.
    by_fh: std::collections::HashMap<u64, usize>,
    /// Free slots below `high` (reused first, so few pages are touched).
    free: Vec<usize>,
    /// Slots at or above this were never used (slot 0 is the header, which keeps it).
    high: usize,
    /// Set once the ledger was full (logged once).
    full: bool,
}

const MODE_PASSTHROUGH: u64 = 1;
const MODE_CACHED: u64 = 2;
const MODE_WRITING: u64 = 3;

impl HandleLedger {
    /// Opens (`fresh`: empties) the ledger at `path`, with `slots` slots.
    pub fn open(path: &Path, slots: usize, fresh: bool) -> io::Result<HandleLedger> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(fresh)
            .mode(0o600)
            .open(path)?;
        let len = (slots * SLOT_BYTES) as u64;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a shared read-write mapping of a file we own, `len` bytes long; it is
        // unmapped in `drop` and accessed only through `slot`/`set_slot` within bounds.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ledger = HandleLedger {
            map: map.cast(),
            slots,
            state: Mutex::new(LedgerState::default()),
            _file: file,
        };
        // Slot 0 is the header: how many slots were ever used, so that only those are
        // read (the rest of the file is a hole), and the layout's mark. Slots left by the
        // previous daemon are kept where they are (their handles are still open in the
        // kernel); the rest are free. A ledger of another layout is not read.
        if !fresh && ledger.word(0, 1) != LEDGER_MAGIC {
            tracing::warn!(path = %path.display(), "the handle ledger is not of this version's layout; the previous daemon's open files are served without it");
            ledger.set_word(0, 0, 0);
        }
        ledger.set_word(0, 1, LEDGER_MAGIC);
        {
            let mut st = ledger.state.lock();
            let high = (ledger.word(0, 0) as usize).clamp(1, slots);
            for i in 1..high {
                let fh = ledger.word(i, 0);
                if fh != 0 {
                    st.by_fh.insert(fh, i);
                }
            }
            st.free = (1..high)
                .rev()
                .filter(|i| ledger.word(*i, 0) == 0)
                .collect();
            st.high = high;
        }
        Ok(ledger)
    }

    fn word(&self, slot: usize, i: usize) -> u64 {
        debug_assert!(slot < self.slots && i < 4);
        // SAFETY: within the mapping (slot < slots, 4 words per slot).
        unsafe { std::ptr::read_volatile(self.map.add(slot * 4 + i)) }
    }

    fn set_word(&self, slot: usize, i: usize, v: u64) {
        debug_assert!(slot < self.slots && i < 4);
        // SAFETY: within the mapping; writers hold the state lock.
        unsafe { std::ptr::write_volatile(self.map.add(slot * 4 + i), v) }
    }

    /// Every live handle the ledger holds.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        let st = self.state.lock();
        let mut out: Vec<LedgerEntry> = st
            .by_fh
            .iter()
            .filter_map(|(&fh, &slot)| {
                let ino = Ino(self.word(slot, 1));
                let kind = self.word(slot, 2);
                let mode = match kind & 0xff {
                    MODE_PASSTHROUGH => HandleMode::Passthrough {
                        oid: self.word(slot, 3),
                        backing: (kind >> 32) as u32,
                    },
                    MODE_CACHED => HandleMode::Cached {
                        version: self.word(slot, 3),
                    },
                    MODE_WRITING => HandleMode::Writing,
                    _ => return None,
                };
                Some(LedgerEntry { fh, ino, mode })
            })
            .collect();
        out.sort_by_key(|e| e.fh);
        out
    }

    /// Records handle `fh` (replacing what it recorded before).
    pub fn record(&self, fh: u64, ino: Ino, mode: HandleMode) {
        let mut st = self.state.lock();
        let slot = match st.by_fh.get(&fh) {
            Some(&s) => s,
            None => {
                let s = match st.free.pop() {
                    Some(s) => s,
                    None if st.high < self.slots => {
                        st.high += 1;
                        self.set_word(0, 0, st.high as u64);
                        st.high - 1
                    }
                    None => {
                        if !std::mem::replace(&mut st.full, true) {
                            tracing::warn!(
                                slots = self.slots,
                                "the handle ledger is full; handles opened from now on are reopened by a replacement daemon, and their passthrough may be refused"
                            );
                        }
                        return;
                    }
                };
                st.by_fh.insert(fh, s);
                s
            }
        };
        let (kind, oid) = match mode {
            HandleMode::Passthrough { oid, backing } => {
                (MODE_PASSTHROUGH | (u64::from(backing) << 32), oid)
            }
            HandleMode::Cached { version } => (MODE_CACHED, version),
            HandleMode::Writing => (MODE_WRITING, 0),
        };
        // The handle number goes last: a slot is live once it is set.
        self.set_word(slot, 1, ino.0);
        self.set_word(slot, 2, kind);
        self.set_word(slot, 3, oid);
        self.set_word(slot, 0, fh);
    }

    /// Forgets handle `fh` (it closed).
    pub fn forget(&self, fh: u64) {
        let mut st = self.state.lock();
        if let Some(slot) = st.by_fh.remove(&fh) {
            self.set_word(slot, 0, 0);
            st.free.push(slot);
        }
    }
}

impl Drop for HandleLedger {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of this length, unmapped once.
        unsafe {
            libc::munmap(self.map.cast(), self.slots * SLOT_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(b: Option<usize>, key: &str) -> NodePath {
        NodePath {
            backend: b.map(BackendId),
            key: key.into(),
        }
    }

    #[test]
    fn the_journal_replays_what_was_recorded_and_ignores_a_torn_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inodes");
        let names = vec!["s3".to_string(), "az".to_string()];
        let j = InodeJournal::create(&path, &names).expect("new journal");
        let recs = vec![
            Record::New {
                ino: Ino(4),
                kind: Kind::File,
                path: p(Some(1), "a/b c\nd"),
            },
            Record::New {
                ino: Ino(5),
                kind: Kind::Dir,
                path: p(Some(0), "x"),
            },
            Record::Rename {
                ino: Ino(4),
                path: p(Some(1), "a/é"),
            },
            Record::Unlink { ino: Ino(5) },
        ];
        for r in &recs {
            j.record(r);
        }
        drop(j);
        let r = replay(&path, &names).expect("replay");
        assert_eq!(r.records, recs);
        // A torn last record is dropped, the rest kept; appending cuts it off first.
        let len = std::fs::metadata(&path).expect("file op").len();
        assert_eq!(r.whole, len);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[NEW, 1, 2]))
            .expect("file op");
        let r = replay(&path, &names).expect("replay");
        assert_eq!(r.records, recs);
        assert_eq!(r.whole, len);
        InodeJournal::append_to(&path, r.whole)
            .expect("file op")
            .record(&Record::Unlink { ino: Ino(9) });
        let r = replay(&path, &names).expect("replay");
        assert_eq!(r.records.len(), 5);
        assert_eq!(r.records[4], Record::Unlink { ino: Ino(9) });
    }

    #[test]
    fn a_journal_of_other_backends_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inodes");
        InodeJournal::create(&path, &["a".into(), "b".into()]).expect("new journal");
        let e = replay(&path, &["b".into(), "a".into()]).expect_err("refused");
        assert!(
            e.to_string().contains("it had a,b, the config now has b,a"),
            "{e}"
        );
        std::fs::write(&path, b"nonsense").expect("file op");
        assert!(matches!(
            replay(&path, &[]),
            Err(ResumeError::NotAJournal { .. })
        ));
    }

    #[test]
    fn the_ledger_keeps_live_handles_for_the_next_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("handles");
        let l = HandleLedger::open(&path, 8, true).expect("ledger");
        let pt = HandleMode::Passthrough {
            oid: 77,
            backing: 3,
        };
        l.record(10, Ino(4), pt);
        l.record(11, Ino(5), HandleMode::Cached { version: 5 });
        l.record(12, Ino(6), HandleMode::Writing);
        l.forget(11);
        l.record(13, Ino(7), HandleMode::Cached { version: 5 });
        drop(l);
        // The next process sees exactly the handles still open.
        let l = HandleLedger::open(&path, 8, false).expect("ledger");
        let e = l.entries();
        assert_eq!(
            e,
            vec![
                LedgerEntry {
                    fh: 10,
                    ino: Ino(4),
                    mode: pt
                },
                LedgerEntry {
                    fh: 12,
                    ino: Ino(6),
                    mode: HandleMode::Writing
                },
                LedgerEntry {
                    fh: 13,
                    ino: Ino(7),
                    mode: HandleMode::Cached { version: 5 }
                },
            ]
        );
        // Its own handles fill free slots and never overwrite live ones; a full ledger
        // records nothing more.
        for fh in 100..110 {
            l.record(fh, Ino(1), HandleMode::Cached { version: 5 });
        }
        assert_eq!(l.entries().len(), 7, "slot 0 is the header");
        assert!(l.entries().iter().any(|e| e.fh == 10 && e.mode == pt));
        l.forget(10);
        l.forget(12);
        assert_eq!(l.entries().len(), 5);
        // A fresh ledger is empty.
        drop(l);
        assert!(
            HandleLedger::open(&path, 8, true)
                .expect("file op")
                .entries()
                .is_empty()
        );
    }
}
