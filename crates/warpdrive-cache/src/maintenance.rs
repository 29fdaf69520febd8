//! The cache's background upkeep, started by whoever owns the cache (the daemon):
//!
//! * **eviction**: every interval, the size and free-space limits are enforced
//!   ([`Cache::enforce_limits`]); writes also evict when they would pass a limit, so this
//!   only catches what changed beside them (the disk filling from elsewhere, new limits);
//! * **lifetime read counters**: every interval, the hits and misses the read path counted
//!   since the last time are added to the index's persisted counters (`warpdrive-ctl stats`
//!   shows them across restarts); [`CounterPersistence::persist_now`] does it at shutdown.
//!
//! Each runs on its own thread holding only a weak reference: it ends once the cache is
//! dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::Cache;

/// Running totals of the read path's hits and misses, as counted since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadTotals {
    pub hit_blocks: u64,
    pub hit_bytes: u64,
    pub miss_blocks: u64,
    pub miss_bytes: u64,
}

impl ReadTotals {
    fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("hit_blocks", self.hit_blocks),
            ("hit_bytes", self.hit_bytes),
            ("miss_blocks", self.miss_blocks),
            ("miss_bytes", self.miss_bytes),
        ]
    }
}

type Totals = Box<dyn Fn() -> ReadTotals + Send + Sync>;

/// Adds what the read path counted to the cache's lifetime counters.
pub struct CounterPersistence {
    cache: Weak<Cache>,
    totals: Totals,
    /// The totals already added.
    last: Mutex<ReadTotals>,
}

impl std::fmt::Debug for CounterPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterPersistence")
            .field("last", &*self.last.lock())
            .finish()
    }
}

impl CounterPersistence {
    /// Adds the increase since the last call (nothing is lost if the index refuses it: the
    /// next call adds it again).
    pub fn persist_now(&self) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        let mut last = self.last.lock();
        let now = (self.totals)();
        let deltas: Vec<(&'static str, u64)> = now
            .named()
            .iter()
            .zip(last.named())
            .map(|((n, a), (_, b))| (*n, a.saturating_sub(b)))
            .collect();
        match cache.add_counters(&deltas) {
            Ok(()) => *last = now,
            Err(e) => tracing::warn!(error = %e, "could not persist the cache counters"),
        }
    }
}

impl Cache {
    /// Starts the eviction loop: every `every`, the limits are enforced.
    pub fn spawn_eviction(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cache-evict".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(c) = weak.upgrade() else { return };
                    if let Err(e) = c.enforce_limits() {
                        tracing::warn!(error = %e, "cache eviction pass failed");
                    }
                }
            })?;
        Ok(())
    }

    /// Starts adding the read path's hits and misses (`totals`: running totals) to the
    /// lifetime counters every `every`.
    pub fn spawn_counter_persistence(
        self: &Arc<Self>,
        every: Duration,
        totals: impl Fn() -> ReadTotals + Send + Sync + 'static,
    ) -> std::io::Result<Arc<CounterPersistence>> {
        let p = Arc::new(CounterPersistence {
            cache: Arc::downgrade(self),
            totals: Box::new(totals),
            last: Mutex::new(ReadTotals::default()),
        });
        let weak = Arc::downgrade(&p);
        let cache = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cache-counters".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let (Some(p), Some(_)) = (weak.upgrade(), cache.upgrade()) else {
                        return;
                    };
                    p.persist_now();
                }
            })?;
        Ok(p)
    }
}
