//! Which object keys can be shown as paths.
//!
//! A key is split on `/`; each component becomes a directory or file name. A component that
//! cannot be a name (empty, from `//`; `.` or `..`; longer than 255 bytes; containing NUL or
//! `/`) is left out of listings with one warning per key, and a lookup never builds one, so no
//! path can resolve outside the backend's prefix.

use std::collections::HashSet;

use parking_lot::Mutex;

/// Linux's limit on one path component (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Warnings about skipped keys are kept to this many distinct keys, so a bucket full of
/// hostile keys cannot grow the set without bound; later ones are still skipped, silently.
const MAX_WARNED_KEYS: usize = 10_000;

/// Whether `name` can be one path component.
pub fn valid_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

/// Remembers which skipped keys were already warned about.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce {
    seen: Mutex<HashSet<String>>,
}

impl WarnOnce {
    /// Returns whether `name` (listed under `dir`) may be shown; warns once if not.
    pub(crate) fn accept(&self, backend: &str, dir: &str, name: &str) -> bool {
        if valid_component(name) {
            return true;
        }
        let key = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        self.warn(backend, &key);
        false
    }

    /// Warns about skipping `key`, once per key.
    pub(crate) fn warn(&self, backend: &str, key: &str) {
        let mut seen = self.seen.lock();
        if seen.len() < MAX_WARNED_KEYS && seen.insert(key.to_string()) {
            tracing::warn!(
                backend,
                key = %key.escape_debug(),
                "skipping an object whose key cannot be a path (empty, `.` or `..` segment, control character, or a name over 255 bytes)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        let long = "x".repeat(256);
        let max = "y".repeat(255);
        for (name, ok) in [
            ("a", true),
            ("shard-000.tar", true),
            ("with space", true),
            ("ünïcode", true),
            (max.as_str(), true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a\0b", false),
            (long.as_str(), false),
        ] {
            assert_eq!(valid_component(name), ok, "{name:?}");
        }
    }

    #[test]
    fn warns_once_and_rejects() {
        let w = WarnOnce::default();
        assert!(!w.accept("b", "d", ".."));
        assert!(!w.accept("b", "d", ".."));
        assert_eq!(w.seen.lock().len(), 1);
        assert!(w.accept("b", "d", "ok"));
    }
}
