//! Names known not to exist: a lookup the store answered "no such object and no such prefix"
//! is answered `ENOENT` again without a request for `negative_ttl`.
//!
//! Entries are (parent inode, name) with the time the store said so. The table is bounded:
//! when it is full, expired entries are dropped, and if that frees nothing the table starts
//! over (forgetting a negative answer costs one request, never a wrong answer). A name the
//! mount learns to exist (a listing that shows it, a lookup that finds it) is forgotten at
//! once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::inode::Ino;

/// Most negative answers remembered at once (about 100 bytes each).
pub const NEGATIVE_MAX: usize = 65_536;

/// The table of names known absent.
#[derive(Debug)]
pub struct Negatives {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<(Ino, String), Instant>>,
}

impl Negatives {
    /// Remembers absent names for `ttl` (zero: never), at most `max` at once.
    pub fn new(ttl: Duration, max: usize) -> Negatives {
        Negatives {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The store said `name` in `parent` does not exist, at `now`.
    pub fn remember(&self, parent: Ino, name: &str, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.lock();
        if map.len() >= self.max {
            map.retain(|_, at| now.saturating_duration_since(*at) < self.ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert((parent, name.to_string()), now);
    }

    /// Whether `name` in `parent` is known absent at `now`.
    pub fn absent(&self, parent: Ino, name: &str, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let mut map = self.map.lock();
        let key = (parent, name.to_string());
        match map.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < self.ttl => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }

    /// `name` in `parent` exists after all.
    pub fn forget(&self, parent: Ino, name: &str) {
        if self.ttl.is_zero() {
            return;
        }
        self.map.lock().remove(&(parent, name.to_string()));
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_for_the_ttl_then_asked_again() {
        let n = Negatives::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let p = Ino(5);
        assert!(!n.absent(p, "x", t0));
        n.remember(p, "x", t0);
        assert!(n.absent(p, "x", t0 + Duration::from_secs(9)));
        assert!(!n.absent(Ino(6), "x", t0), "per parent");
        assert!(!n.absent(p, "y", t0));
        assert!(!n.absent(p, "x", t0 + Duration::from_secs(10)), "expired");
        assert!(n.is_empty(), "an expired entry is dropped when seen");
        n.remember(p, "x", t0);
        n.forget(p, "x");
        assert!(!n.absent(p, "x", t0), "forgotten once it exists");
    }

    #[test]
    fn zero_ttl_remembers_nothing() {
        let n = Negatives::new(Duration::ZERO, 100);
        let t0 = Instant::now();
        n.remember(Ino(1), "x", t0);
        assert!(!n.absent(Ino(1), "x", t0));
        assert!(n.is_empty());
    }

    #[test]
    fn the_table_stays_bounded() {
        let n = Negatives::new(Duration::from_secs(10), 4);
        let t0 = Instant::now();
        for i in 0..4 {
            n.remember(Ino(1), &format!("old{i}"), t0);
        }
        // Full of live entries: it starts over rather than grow.
        n.remember(Ino(1), "new", t0 + Duration::from_secs(1));
        assert_eq!(n.len(), 1);
        assert!(n.absent(Ino(1), "new", t0 + Duration::from_secs(1)));
        // Full with some expired: only those go.
        for i in 0..3 {
            n.remember(Ino(1), &format!("b{i}"), t0 + Duration::from_secs(5));
        }
        n.remember(Ino(1), "c", t0 + Duration::from_secs(12));
        assert!(!n.absent(Ino(1), "new", t0 + Duration::from_secs(12)));
        assert!(n.absent(Ino(1), "b0", t0 + Duration::from_secs(12)));
        assert!(n.absent(Ino(1), "c", t0 + Duration::from_secs(12)));
        for i in 0..1000 {
            n.remember(Ino(2), &format!("n{i}"), t0 + Duration::from_secs(13));
            assert!(n.len() <= 4);
        }
    }
}
