//! Leases: how the nodes that miss one chunk at once agree that one of them fetches it from
//! the origin while the others wait for it in the tier.
//!
//! A lease is a small object beside the chunk (`<chunk key>.lease`), written create-only, so
//! of the nodes that try at once exactly one creates it. Its text names the node that holds
//! it and when it expires (wall-clock milliseconds since the epoch: nodes' clocks are assumed
//! within a few seconds of each other, as NTP keeps them). The holder fetches the chunk from
//! the origin, writes it to the tier and deletes the lease. A node that finds a lease it does
//! not hold waits for the chunk to appear, polling with a growing interval, until the lease
//! expires; then (its holder presumed dead) it fetches from the origin itself, and removes
//! the stale lease so no one else waits on it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First wait between two looks for a chunk another node is filling...
pub const POLL_FIRST: Duration = Duration::from_millis(20);
/// ...growing by half each time, up to this.
pub const POLL_MAX: Duration = Duration::from_millis(250);

const HEADER: &str = "warpdrive-lease 1";

/// The lease object's key for the chunk at `chunk_key`.
pub fn key(chunk_key: &str) -> String {
    format!("{chunk_key}.lease")
}

/// Whether a key in the tier is a lease's.
pub fn is_lease(key: &str) -> bool {
    key.ends_with(".lease")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A lease's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    /// Wall-clock milliseconds since the epoch.
    pub expires_ms: u64,
}

impl Lease {
    /// A lease for `node` lasting `ttl` from now.
    pub fn new(node: &str, ttl: Duration) -> Lease {
        Lease {
            node: node.to_string(),
            expires_ms: now_ms() + ttl.as_millis() as u64,
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{HEADER}\nnode={}\nexpires_ms={}\n",
            self.node, self.expires_ms
        )
    }

    /// Reads a lease; `None` for anything else (treated as stale: it holds no one back).
    pub fn parse(text: &str) -> Option<Lease> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let (mut node, mut expires) = (None, None);
        for l in lines {
            match l.split_once('=') {
                Some(("node", v)) => node = Some(v.to_string()),
                Some(("expires_ms", v)) => expires = v.parse().ok(),
                _ => {}
            }
        }
        Some(Lease {
            node: node?,
            expires_ms: expires?,
        })
    }

    /// How long until it expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(now_ms()))
    }
}

/// This node's name in the leases it takes: host, process and a random part (two daemons
/// on one host are two nodes).
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nonce:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reads_back_and_anything_else_is_no_lease() {
        let l = Lease::new("node-a", Duration::from_secs(30));
        assert_eq!(Lease::parse(&l.encode()), Some(l.clone()));
        assert!(l.remaining() > Duration::from_secs(29));
        assert_eq!(Lease::parse(""), None);
        assert_eq!(Lease::parse("warpdrive-lease 1\nnode=a\n"), None);
        assert_eq!(Lease::parse("something else\nnode=a\nexpires_ms=1\n"), None);
        let old = Lease {
            node: "b".into(),
            expires_ms: 1,
        };
        assert_eq!(old.remaining(), Duration::ZERO);
        assert!(is_lease(&key("wd1/x/ab/abc-0")));
        assert!(!is_lease("wd1/x/ab/abc-0"));
    }
}
