//! The single-flight table: which blocks are being fetched, so that concurrent readers of a
//! block cause one request.
//!
//! The table maps (inode, block) to the fetch in flight for that block: the object version
//! it fetches, the first block of its GET (its run) and a shared future that resolves to the
//! block's bytes. A reader that wants a block first looks here and joins a fetch of the same
//! version; a block in flight for another version is fetched again (the old fetch still
//! answers its own readers).
//!
//! Starting fetches for a set of missing blocks ([`split`]): blocks already in flight are
//! joined; the others are grouped into runs of consecutive blocks, one GET each, and a run
//! next to a joined block stops there, so no block is fetched twice. The last run may be
//! stretched ahead (a reader without a cache reads across its window) up to, not into, the
//! next block in flight. The runs are started under the table's lock, so two readers
//! that miss the same block at the same time still cause one GET.
//!
//! A block leaves the table when its fetch is done with it (written to the cache, or failed):
//! only the entry of the run that put it there is removed, so a finished old fetch never
//! takes out a newer one. Every removal wakes [`Flights::settled`], which waits for a set of
//! blocks to leave without polling.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use parking_lot::Mutex;
use warpdrive_cache::ObjectId;

use crate::inode::Ino;

/// One block's fetch in flight.
#[derive(Clone)]
pub struct Flight<F> {
    /// The object version fetched (joined only by readers of the same ETag).
    pub version: Arc<ObjectId>,
    /// The first block of the run (the GET) this block belongs to.
    pub first: u64,
    /// Resolves to the block's bytes (or the fetch's error).
    pub fut: F,
}

impl<F> std::fmt::Debug for Flight<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("etag", &self.version.etag)
            .field("first", &self.first)
            .finish()
    }
}

/// What [`split`] decided for a set of missing blocks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Blocks to join: a fetch of the same version is in flight.
    pub joined: Vec<u64>,
    /// Runs of consecutive blocks to fetch, one GET each, in order.
    pub runs: Vec<RangeInclusive<u64>>,
}

/// Splits `blocks` (ascending) into blocks to join (`joinable`) and runs to fetch; the last
/// run is stretched towards `stretch_to` while the next block is not `busy` (in flight for
/// any version).
pub fn split(
    blocks: &[u64],
    stretch_to: Option<u64>,
    joinable: impl Fn(u64) -> bool,
    busy: impl Fn(u64) -> bool,
) -> Split {
    let mut out = Split::default();
    let mut run: Option<(u64, u64)> = None;
    for &b in blocks {
        if joinable(b) {
            out.joined.push(b);
            if let Some((first, last)) = run.take() {
                out.runs.push(first..=last);
            }
            continue;
        }
        run = match run {
            Some((first, last)) if last + 1 == b => Some((first, b)),
            Some((first, last)) => {
                out.runs.push(first..=last);
                Some((b, b))
            }
            None => Some((b, b)),
        };
    }
    if let Some((first, mut last)) = run {
        while stretch_to.is_some_and(|s| last < s) && !busy(last + 1) {
            last += 1;
        }
        out.runs.push(first..=last);
    }
    out
}

/// The table of fetches in flight, for one filesystem.
pub struct Flights<F> {
    map: Mutex<HashMap<(Ino, u64), Flight<F>>>,
    /// Woken whenever a block leaves the table.
    left: tokio::sync::Notify,
}

impl<F> std::fmt::Debug for Flights<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.map.lock().len())
            .finish()
    }
}

impl<F: Clone> Default for Flights<F> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
            left: tokio::sync::Notify::new(),
        }
    }
}

impl<F: Clone> Flights<F> {
    /// The fetch of block `b` of `version` in flight, to join.
    pub fn join(&self, ino: Ino, b: u64, version: &ObjectId) -> Option<Flight<F>> {
        self.map
            .lock()
            .get(&(ino, b))
            .filter(|f| f.version.etag == version.etag)
            .cloned()
    }

    /// Whether block `b` is in flight (for any version).
    pub fn busy(&self, ino: Ino, b: u64) -> bool {
        self.map.lock().contains_key(&(ino, b))
    }

    /// Joins or starts fetches for `blocks` (ascending) of `version` as [`split`] decides,
    /// under the table's lock: `spawn(run)` starts one GET and returns one flight per block
    /// of the run, in order. Returns the flight of every block (and of stretched ones).
    pub fn start(
        &self,
        ino: Ino,
        version: &ObjectId,
        blocks: &[u64],
        stretch_to: Option<u64>,
        mut spawn: impl FnMut(RangeInclusive<u64>) -> Vec<Flight<F>>,
    ) -> HashMap<u64, Flight<F>> {
        let mut map = self.map.lock();
        let joinable = |b: u64| {
            map.get(&(ino, b))
                .is_some_and(|f| f.version.etag == version.etag)
        };
        let plan = split(blocks, stretch_to, joinable, |b| {
            map.contains_key(&(ino, b))
        });
        let mut out = HashMap::new();
        for b in plan.joined {
            if let Some(f) = map.get(&(ino, b)) {
                out.insert(b, f.clone());
            }
        }
        for run in plan.runs {
            let flights = spawn(run.clone());
            debug_assert_eq!(flights.len() as u64, run.end() - run.start() + 1);
            for (b, f) in run.zip(flights) {
                map.insert((ino, b), f.clone());
                out.insert(b, f);
            }
        }
        out
    }

    /// Block `b` of the run starting at `first` is done: its entry leaves the table (only
    /// that run's entry), and waiters of [`Flights::settled`] wake.
    pub fn done(&self, ino: Ino, version: &ObjectId, first: u64, b: u64) {
        let mut map = self.map.lock();
        if map
            .get(&(ino, b))
            .is_some_and(|f| f.first == first && f.version.etag == version.etag)
        {
            map.remove(&(ino, b));
        }
        drop(map);
        self.left.notify_waiters();
    }

    /// Returns once none of `blocks` of `ino` is in flight.
    pub async fn settled(&self, ino: Ino, blocks: &[u64]) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            // Registered before the check, so a block that leaves in between still wakes us.
            left.as_mut().enable();
            let pending = {
                let map = self.map.lock();
                blocks.iter().any(|b| map.contains_key(&(ino, *b)))
            };
            if !pending {
                return;
            }
            left.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(blocks: &[u64], stretch: Option<u64>, inflight: &[u64]) -> Split {
        split(
            blocks,
            stretch,
            |b| inflight.contains(&b),
            |b| inflight.contains(&b),
        )
    }

    #[test]
    fn split_table() {
        // (missing blocks, stretch_to, in flight) → (joined, runs)
        type Row<'a> = (
            &'a [u64],
            Option<u64>,
            &'a [u64],
            &'a [u64],
            Vec<RangeInclusive<u64>>,
        );
        let table: Vec<Row> = vec![
            (&[], None, &[], &[], vec![]),
            (&[3], None, &[], &[], vec![3..=3]),
            // consecutive blocks: one GET
            (&[0, 1, 2, 3], None, &[], &[], vec![0..=3]),
            // gaps split runs
            (&[0, 1, 4, 5, 9], None, &[], &[], vec![0..=1, 4..=5, 9..=9]),
            // a block in flight is joined and splits the run around it
            (&[0, 1, 2, 3], None, &[2], &[2], vec![0..=1, 3..=3]),
            (&[0, 1], None, &[0, 1], &[0, 1], vec![]),
            // stretching the last run ahead
            (&[4], Some(7), &[], &[], vec![4..=7]),
            // ... stops at the next block in flight
            (&[4], Some(9), &[7], &[], vec![4..=6]),
            // ... never shrinks a run
            (&[4, 5], Some(4), &[], &[], vec![4..=5]),
            // ... and only the last run stretches
            (&[0, 3], Some(5), &[], &[], vec![0..=0, 3..=5]),
        ];
        for (blocks, stretch, inflight, joined, want) in table {
            let got = runs(blocks, stretch, inflight);
            assert_eq!(
                got,
                Split {
                    joined: joined.to_vec(),
                    runs: want
                },
                "blocks {blocks:?}, stretch {stretch:?}, in flight {inflight:?}"
            );
        }
    }

    #[test]
    fn a_block_in_flight_for_another_version_is_fetched_again() {
        // joinable (same version) is false, busy (any version) true: fetched, not joined.
        let got = split(&[1, 2], Some(4), |_| false, |b| b == 3);
        assert_eq!(got.joined, Vec::<u64>::new());
        assert_eq!(got.runs, vec![1..=2]);
    }

    fn version(etag: &str) -> Arc<ObjectId> {
        Arc::new(ObjectId {
            backend: "b".into(),
            key: "k".into(),
            etag: etag.into(),
        })
    }

    fn flights(v: &Arc<ObjectId>, run: RangeInclusive<u64>, tag: u32) -> Vec<Flight<u32>> {
        run.clone()
            .map(|_| Flight {
                version: v.clone(),
                first: *run.start(),
                fut: tag,
            })
            .collect()
    }

    #[test]
    fn concurrent_misses_of_one_block_start_one_fetch() {
        let t: Flights<u32> = Flights::default();
        let (ino, v1) = (Ino(7), version("\"v1\""));
        let mut spawned = Vec::new();
        let a = t.start(ino, &v1, &[0, 1, 2], None, |r| {
            spawned.push(r.clone());
            flights(&v1, r, 1)
        });
        assert_eq!(a.len(), 3);
        // A second reader wanting blocks 1..=4 joins 1 and 2 and fetches only 3..=4.
        let b = t.start(ino, &v1, &[1, 2, 3, 4], None, |r| {
            spawned.push(r.clone());
            flights(&v1, r, 2)
        });
        assert_eq!(spawned, vec![0..=2, 3..=4]);
        assert_eq!((b[&1].fut, b[&2].fut, b[&3].fut), (1, 1, 2));
        assert!(t.join(ino, 1, &v1).is_some());
        assert!(t.join(ino, 1, &version("\"v2\"")).is_none());
        assert!(t.join(Ino(8), 1, &v1).is_none());
    }

    #[test]
    fn a_finished_old_run_does_not_remove_a_newer_one() {
        let t: Flights<u32> = Flights::default();
        let (ino, v1, v2) = (Ino(1), version("\"v1\""), version("\"v2\""));
        t.start(ino, &v1, &[0, 1], None, |r| flights(&v1, r, 1));
        // Version 2's fetch of block 1 replaces the entry (a different version is not joined).
        t.start(ino, &v2, &[1], None, |r| flights(&v2, r, 2));
        t.done(ino, &v1, 0, 1);
        assert_eq!(t.join(ino, 1, &v2).map(|f| f.fut), Some(2));
        // Nor does a run of the same version that started at another block.
        t.done(ino, &v2, 0, 1);
        assert!(t.busy(ino, 1));
        t.done(ino, &v2, 1, 1);
        assert!(!t.busy(ino, 1));
        assert!(t.busy(ino, 0));
    }

    #[tokio::test]
    async fn settled_wakes_when_the_last_block_leaves() {
        let t: Arc<Flights<u32>> = Arc::new(Flights::default());
        let (ino, v) = (Ino(3), version("\"e\""));
        t.start(ino, &v, &[0, 1, 2], None, |r| flights(&v, r, 1));
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.settled(ino, &[0, 2]).await })
        };
        t.done(ino, &v, 0, 0);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "block 2 is still in flight");
        t.done(ino, &v, 0, 2);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("settled woke")
            .expect("task");
        // Block 1 was not waited for.
        assert!(t.busy(ino, 1));
        // Nothing in flight: at once.
        t.settled(Ino(99), &[0]).await;
    }
}
