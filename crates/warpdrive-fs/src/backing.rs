//! How each open of an inode is served, under the kernel's rules for FUSE passthrough: one
//! table, FUSE-free and generic over the kernel's backing handle `B`, so that its decisions
//! are unit-tested without a kernel. The adapter carries out each [`Plan`] and reports back.
//!
//! The kernel's rules (`fs/fuse/iomode.c`, Linux 6.18): while an inode has a passthrough
//! open, every other open of it must be passthrough over the same backing file — any other
//! open, direct I/O included, fails with `EIO`; while it has page-cached opens, a
//! passthrough open fails.
//!
//! The decisions, for an open the core offered passthrough of cache file `oid` (or not):
//!
//! * no open of the inode, or only passthrough ones over the same `oid`: passthrough — a new
//!   backing for the first ([`Plan::OpenBacking`], reported with [`Backings::opened`]), the
//!   live one for the others ([`Plan::Reuse`]);
//! * page-cached opens are live: a page-cached open (the offer is declined; its pin is let
//!   go);
//! * a passthrough open is live and this open cannot share its backing (not offered, or
//!   offered over another cache file): [`Plan::Busy`], `EBUSY`. The core first repairs the
//!   version's cache file in place so that the open can share the backing (see
//!   `Fs::open`), so this is left for a file that cannot be repaired now (the store is
//!   unreachable) or was replaced; the open succeeds once the other handles close.
//!
//! A backing is dropped (closing the kernel's id) when its last open closes.

use std::collections::HashMap;

use crate::inode::Ino;

/// How one open is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan<'a, B> {
    /// Passthrough over this live backing.
    Reuse(&'a B),
    /// Passthrough over a new backing of the offered file: open it, answer, then report it
    /// with [`Backings::opened`] (or [`Backings::backing_failed`]).
    OpenBacking,
    /// Served by the daemon, with the page cache.
    Daemon,
    /// Cannot be served beside the inode's live passthrough opens: answer `EBUSY`.
    Busy,
}

#[derive(Debug)]
struct InodeOpens<B> {
    /// Opens served by the daemon with the page cache.
    cached: u32,
    /// The backing file: (cache file id, the kernel's handle, passthrough opens using it).
    backing: Option<(u64, B, u32)>,
}

impl<B> Default for InodeOpens<B> {
    fn default() -> Self {
        InodeOpens {
            cached: 0,
            backing: None,
        }
    }
}

/// How a handle was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Passthrough,
    Cached,
}

/// Every open inode's opens and backing.
#[derive(Debug)]
pub struct Backings<B> {
    inodes: HashMap<Ino, InodeOpens<B>>,
    handles: HashMap<u64, (Ino, Mode)>,
}

impl<B> Default for Backings<B> {
    fn default() -> Self {
        Backings {
            inodes: HashMap::new(),
            handles: HashMap::new(),
        }
    }
}

impl<B> Backings<B> {
    /// Decides how handle `fh` of `ino` is served; `offer` is the cache file the core offers
    /// for passthrough, if any. A [`Plan::Daemon`] is recorded at once; a [`Plan::Busy`]
    /// open is not recorded (it fails).
    pub fn plan(&mut self, ino: Ino, fh: u64, offer: Option<u64>) -> Plan<'_, B> {
        let opens = self.inodes.entry(ino).or_default();
        let passthrough_live = opens.backing.is_some();
        if let Some(oid) = offer
            && opens.cached == 0
        {
            match &mut opens.backing {
                Some((id, _, users)) if *id == oid => {
                    *users += 1;
                    self.handles.insert(fh, (ino, Mode::Passthrough));
                    let Some((_, b, _)) = &self.inodes[&ino].backing else {
                        unreachable!("checked above")
                    };
                    return Plan::Reuse(b);
                }
                Some(_) => {}
                None => return Plan::OpenBacking,
            }
        }
        if passthrough_live {
            return Plan::Busy;
        }
        opens.cached += 1;
        self.handles.insert(fh, (ino, Mode::Cached));
        Plan::Daemon
    }

    /// The backing of the offered file `oid` was opened for handle `fh` (after
    /// [`Plan::OpenBacking`]).
    pub fn opened(&mut self, ino: Ino, fh: u64, oid: u64, backing: B) {
        let opens = self.inodes.entry(ino).or_default();
        opens.backing = Some((oid, backing, 1));
        self.handles.insert(fh, (ino, Mode::Passthrough));
    }

    /// The kernel refused to open the backing for `fh`: it is served by the daemon with the
    /// page cache (there is no live backing, or the plan would have reused it).
    pub fn backing_failed(&mut self, ino: Ino, fh: u64) {
        self.inodes.entry(ino).or_default().cached += 1;
        self.handles.insert(fh, (ino, Mode::Cached));
    }

    /// A passthrough handle `fh` a previous daemon opened over cache file `oid` (a daemon
    /// taking over a live mount): the inode's backing is `adopt()`ed with its first handle.
    pub fn restore_passthrough(&mut self, ino: Ino, fh: u64, oid: u64, adopt: impl FnOnce() -> B) {
        let opens = self.inodes.entry(ino).or_default();
        match &mut opens.backing {
            Some((_, _, users)) => *users += 1,
            None => opens.backing = Some((oid, adopt(), 1)),
        }
        self.handles.insert(fh, (ino, Mode::Passthrough));
    }

    /// A page-cached handle `fh` a previous daemon opened.
    pub fn restore_cached(&mut self, ino: Ino, fh: u64) {
        self.inodes.entry(ino).or_default().cached += 1;
        self.handles.insert(fh, (ino, Mode::Cached));
    }

    /// Handle `fh` closed. Returns the backing its inode no longer needs, to drop.
    pub fn release(&mut self, fh: u64) -> Option<B> {
        let (ino, mode) = self.handles.remove(&fh)?;
        let opens = self.inodes.get_mut(&ino)?;
        let mut freed = None;
        match mode {
            Mode::Cached => opens.cached = opens.cached.saturating_sub(1),
            Mode::Passthrough => {
                if let Some((_, _, users)) = &mut opens.backing {
                    *users -= 1;
                    if *users == 0 {
                        freed = opens.backing.take().map(|(_, b, _)| b);
                    }
                }
            }
        }
        if opens.cached == 0 && opens.backing.is_none() {
            self.inodes.remove(&ino);
        }
        freed
    }

    /// Inodes with an open.
    #[cfg(test)]
    fn open_inodes(&self) -> usize {
        self.inodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the kernel's backing handle, naming the file it was opened for.
    #[derive(Debug, PartialEq, Eq)]
    struct Backing(u64);

    const I: Ino = Ino(7);

    #[test]
    fn one_backing_per_inode_reused_for_the_same_cached_version() {
        let mut t = Backings::default();
        assert_eq!(t.plan(I, 1, Some(100)), Plan::OpenBacking);
        t.opened(I, 1, 100, Backing(100));
        assert_eq!(t.plan(I, 2, Some(100)), Plan::Reuse(&Backing(100)));
        assert_eq!(t.plan(I, 3, Some(100)), Plan::Reuse(&Backing(100)));
        // Another inode gets its own.
        assert_eq!(t.plan(Ino(8), 4, Some(200)), Plan::OpenBacking);
    }

    #[test]
    fn the_backing_is_released_with_its_last_open() {
        let mut t = Backings::default();
        assert_eq!(t.plan(I, 1, Some(100)), Plan::OpenBacking);
        t.opened(I, 1, 100, Backing(100));
        assert_eq!(t.plan(I, 2, Some(100)), Plan::Reuse(&Backing(100)));
        assert_eq!(t.release(1), None, "still used by handle 2");
        assert_eq!(t.release(2), Some(Backing(100)));
        assert_eq!(t.open_inodes(), 0);
        assert_eq!(t.release(2), None, "a handle closes once");
        // The next open opens a new backing.
        assert_eq!(t.plan(I, 3, Some(100)), Plan::OpenBacking);
    }

    #[test]
    fn an_open_that_cannot_share_a_live_backing_is_busy() {
        let mut t = Backings::default();
        assert_eq!(t.plan(I, 1, Some(100)), Plan::OpenBacking);
        t.opened(I, 1, 100, Backing(100));
        // Not offered passthrough (damage the core could not repair now): busy.
        assert_eq!(t.plan(I, 2, None), Plan::Busy);
        // Offered over another cache file (the version's file was replaced): busy.
        assert_eq!(t.plan(I, 3, Some(101)), Plan::Busy);
        // Busy opens were not recorded; the live handle keeps its backing until it closes,
        // then the inode is free again.
        assert_eq!(t.release(2), None);
        assert_eq!(t.release(3), None);
        assert_eq!(t.release(1), Some(Backing(100)));
        assert_eq!(t.open_inodes(), 0);
        assert_eq!(t.plan(I, 4, Some(101)), Plan::OpenBacking);
    }

    #[test]
    fn normal_opens_keep_later_ones_normal_until_they_close() {
        let mut t: Backings<Backing> = Backings::default();
        assert_eq!(t.plan(I, 1, None), Plan::Daemon);
        // Offered passthrough, but a page-cached open is live: declined.
        assert_eq!(t.plan(I, 2, Some(100)), Plan::Daemon);
        t.release(1);
        t.release(2);
        assert_eq!(t.plan(I, 3, Some(100)), Plan::OpenBacking);
    }

    #[test]
    fn restored_opens_keep_the_kernel_rules() {
        let mut t = Backings::default();
        // A previous daemon's two passthrough handles share one adopted backing.
        t.restore_passthrough(I, 1, 100, || Backing(100));
        t.restore_passthrough(I, 2, 100, || unreachable!("adopted once"));
        assert_eq!(t.plan(I, 3, Some(100)), Plan::Reuse(&Backing(100)));
        assert_eq!(t.plan(I, 4, None), Plan::Busy);
        // Its page-cached handle keeps new opens of that inode page-cached.
        t.restore_cached(Ino(8), 5);
        assert_eq!(t.plan(Ino(8), 6, Some(200)), Plan::Daemon);
        assert_eq!(t.release(1), None);
        assert_eq!(t.release(2), None);
        assert_eq!(t.release(3), Some(Backing(100)));
        t.release(5);
        t.release(6);
        assert_eq!(t.open_inodes(), 0);
    }

    #[test]
    fn a_refused_backing_is_served_with_the_page_cache() {
        let mut t: Backings<Backing> = Backings::default();
        assert_eq!(t.plan(I, 1, Some(100)), Plan::OpenBacking);
        t.backing_failed(I, 1);
        assert_eq!(t.plan(I, 2, Some(100)), Plan::Daemon);
        t.release(1);
        t.release(2);
        assert_eq!(t.open_inodes(), 0);
    }
}
