//! Prefetched blocks held in memory for their readers.
//!
//! A block a prefetch fetched is written to the cache and also held here, with its share of
//! the prefetch budget (the permit `P`), so that its reader gets it without reading it back
//! from the cache disk and checking it again. At most `max` blocks are held in all (the
//! read path sets it from `LANDED_MAX` bytes, a bound on the daemon's memory whatever the
//! budget); past that a block is not held, its permit goes back, and its reader reads it
//! from the cache. A held block leaves when its reader has read it to its end, has passed
//! it, reads out of order, or closes the file; a block of another version is never served.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use warpdrive_cache::ObjectId;

use crate::inode::Ino;

struct Held<P> {
    version: Arc<ObjectId>,
    block: Bytes,
    _permit: P,
}

/// The held blocks, by (inode, block number).
pub struct Landed<P> {
    blocks: Mutex<BTreeMap<(Ino, u64), Held<P>>>,
    max: usize,
}

impl<P> std::fmt::Debug for Landed<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landed")
            .field("held", &self.blocks.lock().len())
            .field("max", &self.max)
            .finish()
    }
}

impl<P> Landed<P> {
    /// Holds at most `max` blocks (at least one).
    pub fn new(max: usize) -> Landed<P> {
        Landed {
            blocks: Mutex::new(BTreeMap::new()),
            max: max.max(1),
        }
    }

    /// Holds block `b` of `version` (inode `ino`) with its permit; `false` when full (the
    /// permit is dropped: its share of the budget goes back).
    pub fn hold(&self, ino: Ino, b: u64, version: Arc<ObjectId>, block: Bytes, permit: P) -> bool {
        let mut blocks = self.blocks.lock();
        if blocks.len() >= self.max {
            return false;
        }
        blocks.insert(
            (ino, b),
            Held {
                version,
                block,
                _permit: permit,
            },
        );
        true
    }

    /// Bytes `from..to` of block `b` of inode `ino`, if held for the version with `etag`; the
    /// block stays for the next read unless this one reaches its end.
    pub fn take(&self, ino: Ino, b: u64, etag: &str, from: u64, to: u64) -> Option<Bytes> {
        let mut blocks = self.blocks.lock();
        let h = blocks.get(&(ino, b))?;
        if h.version.etag != etag || to as usize > h.block.len() || from > to {
            return None;
        }
        let bytes = h.block.slice(from as usize..to as usize);
        if to as usize == h.block.len() {
            blocks.remove(&(ino, b));
        }
        Some(bytes)
    }

    /// Lets go of the held blocks `range` of `ino`.
    pub fn drop_range(&self, ino: Ino, range: Range<u64>) {
        let mut blocks = self.blocks.lock();
        if blocks.is_empty() || range.is_empty() {
            return;
        }
        let gone: Vec<(Ino, u64)> = blocks
            .range((ino, range.start)..(ino, range.end))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            blocks.remove(&k);
        }
    }

    /// Whether block `b` of `ino` is held.
    pub fn contains(&self, ino: Ino, b: u64) -> bool {
        self.blocks.lock().contains_key(&(ino, b))
    }

    /// Blocks held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.blocks.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A permit that counts how many are alive (held).
    struct Permit(Arc<AtomicUsize>);
    impl Permit {
        fn new(alive: &Arc<AtomicUsize>) -> Permit {
            alive.fetch_add(1, Ordering::Relaxed);
            Permit(alive.clone())
        }
    }
    impl Drop for Permit {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn v(etag: &str) -> Arc<ObjectId> {
        Arc::new(ObjectId {
            backend: "b".into(),
            key: "k".into(),
            etag: etag.into(),
        })
    }

    const I: Ino = Ino(5);

    #[test]
    fn holds_up_to_its_cap_and_gives_the_permits_of_the_rest_back() {
        let alive = Arc::new(AtomicUsize::new(0));
        let l = Landed::new(2);
        assert!(l.hold(
            I,
            0,
            v("e"),
            Bytes::from_static(b"abcd"),
            Permit::new(&alive)
        ));
        assert!(l.hold(
            I,
            1,
            v("e"),
            Bytes::from_static(b"efgh"),
            Permit::new(&alive)
        ));
        assert!(!l.hold(
            I,
            2,
            v("e"),
            Bytes::from_static(b"ijkl"),
            Permit::new(&alive)
        ));
        assert_eq!((l.len(), alive.load(Ordering::Relaxed)), (2, 2));
    }

    #[test]
    fn a_block_leaves_once_read_to_its_end_and_never_serves_another_version() {
        let alive = Arc::new(AtomicUsize::new(0));
        let l = Landed::new(4);
        l.hold(
            I,
            0,
            v("e1"),
            Bytes::from_static(b"abcdef"),
            Permit::new(&alive),
        );
        assert_eq!(l.take(I, 0, "e2", 0, 2), None, "another version");
        assert_eq!(l.take(I, 0, "e1", 0, 2).as_deref(), Some(&b"ab"[..]));
        assert!(l.contains(I, 0), "stays for the rest of the block");
        assert_eq!(l.take(I, 0, "e1", 2, 9), None, "past the block's end");
        assert_eq!(l.take(I, 0, "e1", 2, 6).as_deref(), Some(&b"cdef"[..]));
        assert!(!l.contains(I, 0));
        assert_eq!(alive.load(Ordering::Relaxed), 0, "its permit went back");
    }

    #[test]
    fn blocks_passed_or_of_a_closed_file_are_let_go() {
        let alive = Arc::new(AtomicUsize::new(0));
        let l = Landed::new(8);
        for b in 0..4 {
            l.hold(I, b, v("e"), Bytes::from_static(b"x"), Permit::new(&alive));
        }
        l.hold(
            Ino(6),
            0,
            v("e"),
            Bytes::from_static(b"y"),
            Permit::new(&alive),
        );
        l.drop_range(I, 0..2);
        assert!(!l.contains(I, 1) && l.contains(I, 2));
        l.drop_range(I, 0..u64::MAX);
        assert_eq!(l.len(), 1, "another file's block stays");
        assert_eq!(alive.load(Ordering::Relaxed), 1);
    }
}
