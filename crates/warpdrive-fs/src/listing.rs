//! Directory listings that stream into `readdir` while they are still being fetched.
//!
//! A [`Listing`] is filled page by page by a task on the runtime; `readdir` at offset *n*
//! waits only until entry *n* exists (or the listing has ended), so `ls` of a prefix with
//! 100,000 objects shows its first names after one round trip, not after a hundred. A listing
//! is a snapshot: entries are only appended, never changed, so offsets handed to the kernel
//! stay valid for every open directory handle that holds it. A new snapshot is started when
//! the directory is opened again after the metadata TTL.
//!
//! A name that appears twice (an object `a` and a prefix `a/`) is shown once: the first seen
//! wins, and a directory in the same page beats a file.
//!
//! Lookups use listings too ([`Listing::wait_for_name`]): a lookup in a directory that has not
//! been listed starts its listing and waits for the name to appear, for the listing to end
//! (then the name does not exist), or for one more page without it (then it asks the store
//! itself), so the siblings of the first name looked up are answered from one listing. A
//! listing a lookup started stops at a cap of entries ([`Listing::with_cap`]), so a huge
//! directory costs bounded memory; it then ends [`Status::Truncated`] and answers only for
//! the names it holds. `opendir` lifts the cap of a listing still running ([`Listing::uncap`])
//! and never serves a truncated one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use warpdrive_store::StoreError;

use crate::inode::{Ino, Kind};

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub ino: Ino,
    pub kind: Kind,
}

/// How far a listing has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running,
    Done,
    /// Stopped at its cap of entries: it holds only the first names of the directory.
    Truncated,
    /// The store's error, kept whole so that `readdir` answers its errno (a denied listing
    /// is `EACCES`, not `EIO`).
    Failed(StoreError),
}

#[derive(Debug, Clone)]
struct Progress {
    count: usize,
    /// Pages appended so far.
    pages: u64,
    status: Status,
}

#[derive(Debug, Default)]
struct Entries {
    list: Vec<Entry>,
    by_name: HashMap<String, usize>,
    /// Entries after which the listing stops (`usize::MAX`: none).
    cap: usize,
    /// It stopped at the cap.
    truncated: bool,
}

/// What a listing says of one name ([`Listing::wait_for_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Found(Entry),
    /// The listing ended complete without it.
    Absent,
    /// Not known: the listing failed, stopped at its cap, or brought a page without it.
    Unknown,
}

#[derive(Debug)]
pub struct Listing {
    started: Instant,
    entries: Mutex<Entries>,
    progress: watch::Sender<Progress>,
}

impl Listing {
    pub fn new() -> Arc<Listing> {
        Listing::with_cap(usize::MAX)
    }

    /// A listing that stops once it holds `cap` entries (see [`Listing::more_wanted`]).
    pub fn with_cap(cap: usize) -> Arc<Listing> {
        let (progress, _) = watch::channel(Progress {
            count: 0,
            pages: 0,
            status: Status::Running,
        });
        Arc::new(Listing {
            started: Instant::now(),
            entries: Mutex::new(Entries {
                cap,
                ..Entries::default()
            }),
            progress,
        })
    }

    /// Whether the filler should fetch another page: false once the cap is reached, and
    /// then the listing is truncated for good (the filler finishes it with
    /// [`Listing::finish_truncated`]).
    pub fn more_wanted(&self) -> bool {
        let mut e = self.entries.lock();
        if e.list.len() >= e.cap {
            e.truncated = true;
        }
        !e.truncated
    }

    /// Lifts the cap, so the listing runs to its end; false if it already stopped at it.
    pub fn uncap(&self) -> bool {
        let mut e = self.entries.lock();
        e.cap = usize::MAX;
        !e.truncated
    }

    /// Ends a listing that stopped at its cap.
    pub fn finish_truncated(&self) {
        self.progress.send_modify(|p| p.status = Status::Truncated);
    }

    /// Appends one page of entries; names already present are skipped.
    pub fn push(&self, new: impl IntoIterator<Item = Entry>) {
        let count = {
            let mut e = self.entries.lock();
            for entry in new {
                if e.by_name.contains_key(&entry.name) {
                    tracing::debug!(name = entry.name, "name listed twice; keeping the first");
                    continue;
                }
                let idx = e.list.len();
                e.by_name.insert(entry.name.clone(), idx);
                e.list.push(entry);
            }
            e.list.len()
        };
        self.progress.send_modify(|p| {
            p.count = count;
            p.pages += 1;
        });
    }

    /// Marks the listing complete, or failed with the store's error.
    pub fn finish(&self, result: Result<(), StoreError>) {
        self.progress.send_modify(|p| {
            p.status = match result {
                Ok(()) => Status::Done,
                Err(m) => Status::Failed(m),
            }
        });
    }

    pub fn status(&self) -> Status {
        self.progress.borrow().status.clone()
    }

    pub fn is_complete(&self) -> bool {
        self.status() == Status::Done
    }

    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until entry `idx` exists or the listing has ended; returns the status then.
    pub async fn wait_for(&self, idx: usize) -> Status {
        let mut rx = self.progress.subscribe();
        let r = rx
            .wait_for(|p| p.count > idx || p.status != Status::Running)
            .await
            .map(|p| p.status.clone());
        // The sender lives as long as `self`, so the channel cannot close while we wait.
        r.unwrap_or(Status::Done)
    }

    /// Up to `max` entries starting at `idx`.
    pub fn entries_from(&self, idx: usize, max: usize) -> Vec<Entry> {
        let e = self.entries.lock();
        e.list.iter().skip(idx).take(max).cloned().collect()
    }

    pub fn find(&self, name: &str) -> Option<Entry> {
        let e = self.entries.lock();
        e.by_name.get(name).map(|i| e.list[*i].clone())
    }

    /// Waits until `name` is listed, or the listing ends, or `pages` more pages arrived
    /// without it, and says what is known of it then.
    pub async fn wait_for_name(&self, name: &str, pages: u64) -> Seen {
        let mut rx = self.progress.subscribe();
        let until = rx.borrow().pages.saturating_add(pages);
        loop {
            // Entries are appended before progress is announced, so what progress says has
            // arrived is findable.
            let (status, got) = {
                let p = rx.borrow_and_update();
                (p.status.clone(), p.pages)
            };
            if let Some(e) = self.find(name) {
                return Seen::Found(e);
            }
            match status {
                Status::Done => return Seen::Absent,
                Status::Truncated | Status::Failed(_) => return Seen::Unknown,
                Status::Running if got >= until => return Seen::Unknown,
                Status::Running => {}
            }
            if rx.changed().await.is_err() {
                return Seen::Unknown;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ino: u64) -> Entry {
        Entry {
            name: name.into(),
            ino: Ino(ino),
            kind: Kind::File,
        }
    }

    #[tokio::test]
    async fn readers_wait_for_entries_then_end() {
        let l = Listing::new();
        let reader = {
            let l = l.clone();
            tokio::spawn(async move {
                let s = l.wait_for(1).await;
                (s, l.entries_from(1, 10))
            })
        };
        l.push([entry("a", 10)]);
        tokio::task::yield_now().await;
        l.push([entry("b", 11), entry("a", 12)]);
        let (status, got) = reader.await.expect("reader");
        assert_eq!(status, Status::Running);
        assert_eq!(got, vec![entry("b", 11)]);
        assert_eq!(l.len(), 2, "duplicate name skipped");
        l.finish(Ok(()));
        assert_eq!(l.wait_for(5).await, Status::Done);
        assert_eq!(l.find("a"), Some(entry("a", 10)));
    }

    #[tokio::test]
    async fn a_name_is_found_absent_or_unknown_after_one_page() {
        let l = Listing::new();
        let waiter = |name: &'static str| {
            let l = l.clone();
            tokio::spawn(async move { l.wait_for_name(name, 1).await })
        };
        let (b, z, a) = (waiter("b"), waiter("z"), waiter("a"));
        tokio::task::yield_now().await;
        assert!(!b.is_finished(), "nothing listed yet");
        l.push([entry("a", 10), entry("b", 11)]);
        assert_eq!(b.await.expect("b"), Seen::Found(entry("b", 11)));
        assert_eq!(a.await.expect("a"), Seen::Found(entry("a", 10)));
        // One page came without it and the listing goes on: ask the store.
        assert_eq!(z.await.expect("z"), Seen::Unknown);
        // Found at once when already listed; absent once the listing ends complete.
        assert_eq!(l.wait_for_name("a", 1).await, Seen::Found(entry("a", 10)));
        let y = waiter("y");
        tokio::task::yield_now().await;
        l.finish(Ok(()));
        assert_eq!(y.await.expect("y"), Seen::Absent);
        assert_eq!(l.wait_for_name("q", 0).await, Seen::Absent);
    }

    #[tokio::test]
    async fn a_capped_listing_stops_and_answers_only_for_what_it_holds() {
        let l = Listing::with_cap(2);
        assert!(l.more_wanted());
        l.push([entry("a", 1), entry("b", 2)]);
        assert!(!l.more_wanted(), "cap reached");
        l.finish_truncated();
        assert_eq!(l.status(), Status::Truncated);
        assert_eq!(l.wait_for_name("a", 1).await, Seen::Found(entry("a", 1)));
        assert_eq!(l.wait_for_name("c", 1).await, Seen::Unknown);
        assert!(!l.uncap(), "too late to lift the cap");
        // A listing whose cap is lifted in time runs on.
        let l = Listing::with_cap(1);
        assert!(l.uncap());
        l.push([entry("a", 1), entry("b", 2)]);
        assert!(l.more_wanted());
        let failed = Listing::new();
        failed.finish(Err(StoreError::Other {
            backend: "b".into(),
            message: "x".into(),
        }));
        assert_eq!(failed.wait_for_name("a", 1).await, Seen::Unknown);
    }
}
