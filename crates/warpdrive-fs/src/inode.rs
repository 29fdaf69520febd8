//! Inodes: one number per path, stable while mounted.
//!
//! The root is inode 1, each backend's directory is created at start, and every other inode is
//! created the first time its path is seen (in a listing or a lookup) and kept until unmount,
//! so the same path always answers with the same number. A path that changes kind (an object
//! replaced by a prefix of the same name) gets a new inode, because a file and a directory
//! must never share one.
//!
//! Each node carries its metadata and the time it was fetched; the core decides from that
//! time and the metadata TTL whether to ask the store again.
//!
//! With a journal attached ([`InodeTable::attach_journal`]) every numbering, rename and
//! unlink is also written down as it happens, and a daemon that replaces this one on the
//! live mount replays it ([`InodeTable::restore`]), so numbers the kernel holds keep their
//! paths (see [`crate::resume`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use warpdrive_store::ObjectInfo;

use crate::listing::Listing;
use crate::resume::{InodeJournal, Record};

/// An inode number, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    pub const ROOT: Ino = Ino(1);
}

/// Index of a backend in the mount table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// What a node is fetched from: `None` backend is the mount root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodePath {
    pub backend: Option<BackendId>,
    /// Key relative to the backend's prefix, without a trailing `/`; `""` is the backend root.
    pub key: String,
}

/// Mutable per-node state. A `parking_lot` mutex, not a tokio one: nothing awaits while it
/// is held.
#[derive(Debug, Default)]
pub struct NodeState {
    /// Files: the object's metadata and when it was fetched.
    pub info: Option<(ObjectInfo, Instant)>,
    /// Directories: the latest listing (complete or still streaming).
    pub listing: Option<Arc<Listing>>,
    /// Directories: when the store last said this prefix exists (a lookup's one-key list, or
    /// a listing of its parent that showed it), so lookups within the TTL need no request.
    pub seen: Option<Instant>,
    /// Files: the ETag of the version last opened, whose pages the kernel may still cache.
    pub opened_etag: Option<String>,
    /// Files: the object changed and the kernel may still hold the old version's size and
    /// pages; the next open invalidates them before it answers.
    pub kernel_stale: bool,
    /// Files: handles open on this inode. A version change while any is open retires the
    /// inode instead of invalidating it (see `Fs::record_info`).
    pub handles: u32,
    /// Files: this inode belongs to an older version, still read by handles opened before the
    /// object changed; its path now has a new inode. It keeps its version's attributes, and
    /// a new `open` of it answers `ESTALE`, so the kernel looks the path up again.
    pub retired: bool,
}

#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    pub path: NodePath,
    pub kind: Kind,
    pub state: Mutex<NodeState>,
}

impl Node {
    /// The node's name: its last key component (or the backend name for a backend root).
    pub fn key(&self) -> &str {
        &self.path.key
    }
}

/// A restored node's state: nothing known, and for a file, the version of the kernel's
/// pages unknown (an empty ETag, which no version has).
fn restored_state(kind: Kind) -> NodeState {
    NodeState {
        opened_etag: (kind == Kind::File).then(String::new),
        ..NodeState::default()
    }
}

/// All inodes of the mount.
#[derive(Debug)]
pub struct InodeTable {
    next: AtomicU64,
    by_ino: RwLock<HashMap<Ino, Arc<Node>>>,
    by_path: RwLock<HashMap<NodePath, Ino>>,
    /// Where changes are written down for a replacement daemon, once attached.
    journal: std::sync::OnceLock<InodeJournal>,
}

impl Default for InodeTable {
    fn default() -> Self {
        InodeTable::new()
    }
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let t = InodeTable {
            next: AtomicU64::new(Ino::ROOT.0 + 1),
            by_ino: RwLock::new(HashMap::new()),
            by_path: RwLock::new(HashMap::new()),
            journal: std::sync::OnceLock::new(),
        };
        let root = Arc::new(Node {
            ino: Ino::ROOT,
            path: NodePath {
                backend: None,
                key: String::new(),
            },
            kind: Kind::Dir,
            state: Mutex::new(NodeState::default()),
        });
        t.by_path.write().insert(root.path.clone(), Ino::ROOT);
        t.by_ino.write().insert(Ino::ROOT, root);
        t
    }

    pub fn get(&self, ino: Ino) -> Option<Arc<Node>> {
        self.by_ino.read().get(&ino).cloned()
    }

    /// The node known for `path`, if any.
    pub fn find(&self, path: &NodePath) -> Option<Arc<Node>> {
        let ino = self.by_path.read().get(path).copied()?;
        self.get(ino)
    }

    /// A new node for `path`, replacing the one the path had (which stays valid by number).
    pub fn replace(&self, path: NodePath, kind: Kind) -> Arc<Node> {
        let mut by_path = self.by_path.write();
        self.insert_new(&mut by_path, path, kind)
    }

    /// Numbers a new node for `path` and makes it the path's node (under the path map's lock).
    fn insert_new(
        &self,
        by_path: &mut HashMap<NodePath, Ino>,
        path: NodePath,
        kind: Kind,
    ) -> Arc<Node> {
        let ino = Ino(self.next.fetch_add(1, Ordering::Relaxed));
        let node = Arc::new(Node {
            ino,
            path: path.clone(),
            kind,
            state: Mutex::new(NodeState::default()),
        });
        self.by_ino.write().insert(ino, node.clone());
        self.record(|| Record::New {
            ino,
            kind,
            path: path.clone(),
        });
        by_path.insert(path, ino);
        node
    }

    /// Writes a change to the journal, if one is attached (under the path map's lock, so
    /// records keep the table's order).
    fn record(&self, r: impl FnOnce() -> Record) {
        if let Some(j) = self.journal.get() {
            j.record(&r());
        }
    }

    /// Numbers new inodes from `first` on (if that is above the next number).
    pub fn number_from(&self, first: u64) {
        self.next.fetch_max(first, Ordering::Relaxed);
    }

    /// Writes every later change to `journal`. Once only; a second journal is ignored.
    pub fn attach_journal(&self, journal: InodeJournal) {
        let _ = self.journal.set(journal);
    }

    /// Applies the records a previous daemon's journal holds (before any other change):
    /// each number means the path it meant then. Nodes start without metadata, so the
    /// store is asked again when they are used. A file's first open is answered without
    /// `FOPEN_KEEP_CACHE` (its last opened version is "unknown"), so the kernel drops the
    /// pages it holds for it then, in the opener's own call: the object may have changed,
    /// and what version they were is not known here. (Not an invalidation the daemon sends:
    /// a daemon killed while one waits on a page lock cannot finish dying until a read is
    /// answered, and its successor would not start until it had.)
    pub fn restore(&self, records: Vec<Record>) {
        let mut by_path = self.by_path.write();
        let mut by_ino = self.by_ino.write();
        let mut next = self.next.load(Ordering::Relaxed);
        for r in records {
            match r {
                Record::New { ino, kind, path } => {
                    next = next.max(ino.0 + 1);
                    by_ino.insert(
                        ino,
                        Arc::new(Node {
                            ino,
                            path: path.clone(),
                            kind,
                            state: Mutex::new(restored_state(kind)),
                        }),
                    );
                    by_path.insert(path, ino);
                }
                Record::Rename { ino, path } => {
                    let Some(old) = by_ino.get(&ino).cloned() else {
                        continue;
                    };
                    if by_path.get(&old.path) == Some(&ino) {
                        by_path.remove(&old.path);
                    }
                    by_ino.insert(
                        ino,
                        Arc::new(Node {
                            ino,
                            path: path.clone(),
                            kind: old.kind,
                            state: Mutex::new(restored_state(old.kind)),
                        }),
                    );
                    by_path.insert(path, ino);
                }
                Record::Unlink { ino } => {
                    if let Some(n) = by_ino.get(&ino)
                        && by_path.get(&n.path) == Some(&ino)
                    {
                        by_path.remove(&n.path);
                    }
                }
            }
        }
        self.next.store(next, Ordering::Relaxed);
    }

    /// Gives inode `ino` the path `to` (a rename: the kernel keeps the inode's number for the
    /// new name). The node is made anew with the new path and the old one's state; a node the
    /// new path had stays valid by number but is no longer found by path.
    pub fn rename(&self, ino: Ino, to: NodePath) -> Option<Arc<Node>> {
        let mut by_path = self.by_path.write();
        let old = self.get(ino)?;
        if by_path.get(&old.path) == Some(&ino) {
            by_path.remove(&old.path);
        }
        let state = std::mem::take(&mut *old.state.lock());
        let node = Arc::new(Node {
            ino,
            path: to.clone(),
            kind: old.kind,
            state: Mutex::new(state),
        });
        self.by_ino.write().insert(ino, node.clone());
        self.record(|| Record::Rename {
            ino,
            path: to.clone(),
        });
        by_path.insert(to, ino);
        Some(node)
    }

    /// Forgets the path of inode `ino` (an unlink): the inode stays valid by number.
    pub fn unlink(&self, ino: Ino) {
        let mut by_path = self.by_path.write();
        if let Some(n) = self.get(ino)
            && by_path.get(&n.path) == Some(&ino)
        {
            by_path.remove(&n.path);
            self.record(|| Record::Unlink { ino });
        }
    }

    pub fn len(&self) -> usize {
        self.by_ino.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node for `path` of `kind`, created if new. If the path is known with the other
    /// kind, a new node replaces it in the path map (the old inode stays valid for open
    /// handles but is no longer found by path).
    pub fn get_or_create(&self, path: NodePath, kind: Kind) -> Arc<Node> {
        if let Some(ino) = self.by_path.read().get(&path).copied()
            && let Some(n) = self.get(ino)
            && n.kind == kind
        {
            return n;
        }
        let mut by_path = self.by_path.write();
        // Re-check under the write lock: another thread may have created it meanwhile.
        if let Some(ino) = by_path.get(&path).copied()
            && let Some(n) = self.get(ino)
            && n.kind == kind
        {
            return n;
        }
        self.insert_new(&mut by_path, path, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str) -> NodePath {
        NodePath {
            backend: Some(BackendId(0)),
            key: key.into(),
        }
    }

    #[test]
    fn stable_numbers_per_path() {
        let t = InodeTable::new();
        let a = t.get_or_create(p("a"), Kind::File);
        let b = t.get_or_create(p("b"), Kind::File);
        assert_ne!(a.ino, b.ino);
        assert_eq!(t.get_or_create(p("a"), Kind::File).ino, a.ino);
        assert_ne!(a.ino, Ino::ROOT);
    }

    #[test]
    fn a_replayed_journal_gives_every_number_its_path_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inodes");
        let names = vec!["b".to_string()];
        let t = InodeTable::new();
        t.attach_journal(InodeJournal::create(&path, &names).expect("new journal"));
        let a = t.get_or_create(p("a"), Kind::File);
        let d = t.get_or_create(p("d"), Kind::Dir);
        let b = t.get_or_create(p("b"), Kind::File);
        t.rename(b.ino, p("d/b"));
        let gone = t.get_or_create(p("gone"), Kind::File);
        t.unlink(gone.ino);
        let x = t.replace(p("a"), Kind::File);

        let r = InodeTable::new();
        r.restore(
            crate::resume::replay(&path, &names)
                .expect("replay")
                .records,
        );
        for n in [&d, &x, &gone] {
            let got = r.get(n.ino).expect("restored");
            assert_eq!((&got.path, got.kind), (&n.path, n.kind));
        }
        assert_eq!(r.get(b.ino).expect("restored").path, p("d/b"));
        // The replaced inode stays valid by number; the path finds its new one.
        assert_eq!(r.get(a.ino).expect("restored").path, p("a"));
        assert_eq!(r.find(&p("a")).expect("file op").ino, x.ino);
        assert!(r.find(&p("gone")).is_none());
        assert!(r.find(&p("b")).is_none());
        // New numbers continue after every replayed one.
        assert!(r.get_or_create(p("new"), Kind::File).ino.0 > x.ino.0);
    }

    #[test]
    fn kind_change_gets_a_new_inode() {
        let t = InodeTable::new();
        let f = t.get_or_create(p("x"), Kind::File);
        let d = t.get_or_create(p("x"), Kind::Dir);
        assert_ne!(f.ino, d.ino);
        assert_eq!(t.get(f.ino).map(|n| n.kind), Some(Kind::File));
        assert_eq!(t.get_or_create(p("x"), Kind::Dir).ino, d.ino);
    }
}
