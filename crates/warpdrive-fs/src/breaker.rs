//! The cache-disk circuit breaker: after a disk failure the read path stops using the cache
//! for a rest period, reading straight from the backends, then tries the cache again.
//!
//! The breaker is closed (cache in use) until a failure trips it; it then stays open until
//! the rest has passed, and the first check after that closes it again. Only the first trip
//! in the breaker's life asks to be logged loudly (later ones are counted and logged at
//! debug level), so a failing disk does not flood the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug)]
pub struct Breaker {
    rest: Duration,
    /// Open until then.
    open_until: Mutex<Option<Instant>>,
    tripped_once: AtomicBool,
}

impl Breaker {
    pub fn new(rest: Duration) -> Breaker {
        Breaker {
            rest,
            open_until: Mutex::new(None),
            tripped_once: AtomicBool::new(false),
        }
    }

    /// Whether the cache may be used at `now`; a rest that has passed closes the breaker.
    pub fn closed_at(&self, now: Instant) -> bool {
        let mut open = self.open_until.lock();
        match *open {
            Some(t) if now < t => false,
            Some(_) => {
                *open = None;
                true
            }
            None => true,
        }
    }

    /// A disk failure at `now`: the cache rests until `now + rest`. Returns whether this is
    /// the first trip (to be logged as an error).
    pub fn trip(&self, now: Instant) -> bool {
        *self.open_until.lock() = Some(now + self.rest);
        !self.tripped_once.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trip_rests_the_cache_then_it_is_tried_again() {
        let b = Breaker::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(b.closed_at(t0), "closed until a failure");
        assert!(b.trip(t0), "the first trip is the one to log");
        assert!(!b.closed_at(t0 + Duration::from_secs(1)));
        assert!(!b.closed_at(t0 + Duration::from_secs(29)));
        assert!(
            b.closed_at(t0 + Duration::from_secs(30)),
            "the rest has passed"
        );
        assert!(b.closed_at(t0 + Duration::from_secs(31)));
        // A later failure rests it again, quietly.
        let t1 = t0 + Duration::from_secs(40);
        assert!(!b.trip(t1));
        assert!(!b.closed_at(t1 + Duration::from_secs(10)));
        // A failure during the rest extends it.
        assert!(!b.trip(t1 + Duration::from_secs(20)));
        assert!(!b.closed_at(t1 + Duration::from_secs(45)));
        assert!(b.closed_at(t1 + Duration::from_secs(50)));
    }
}
