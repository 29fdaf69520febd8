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
    /// The store's error, kept whole so that `readdir` answers its errno (a denied listing
    /// is `EACCES`, not `EIO`).
    Failed(StoreError),
}

#[derive(Debug, Clone)]
struct Progress {
    count: usize,
    status: Status,
}

#[derive(Debug, Default)]
struct Entries {
    list: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Listing {
    started: Instant,
    entries: Mutex<Entries>,
    progress: watch::Sender<Progress>,
}

impl Listing {
    pub fn new() -> Arc<Listing> {
        let (progress, _) = watch::channel(Progress {
            count: 0,
            status: Status::Running,
        });
        Arc::new(Listing {
            started: Instant::now(),
            entries: Mutex::new(Entries::default()),
            progress,
        })
    }

    /// Appends entries; names already present are skipped.
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
        self.progress.send_modify(|p| p.count = count);
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
}
