//! Epoch plans: the order a loader will read its files in, handed to the daemon ahead of time.
//!
//! A plan is an ordered list of entries (a file under the mount, whole or one byte range of
//! it) for one reader: a job, a rank and an epoch. The daemon keeps one plan per job and rank;
//! a plan for a new epoch replaces the one before. This module holds the parts without I/O:
//! validation (a refused plan changes nothing) and a plan's progress.
//!
//! 1. **Reached.** A read of a planned file marks the first of its entries at or after the
//!    reader's position that covers the read as reached, and the reader's position becomes
//!    the furthest entry reached plus one. Loaders with several workers read a few files out
//!    of order: entries the position passes are settled at once (their outcome counted), and
//!    are no longer prefetched.
//! 2. **Outcome.** Each entry moves `idle → fetching → fetched` as the prefetcher works and to
//!    `passed` when the reader's position passes it: it counts as *ahead* if it was fetched
//!    by then, *late* if its fetch was under way or not started, *failed* if its fetch
//!    failed. A fetch that completes after its entry was passed adds nothing to the lead.
//! 3. **Pace and lead.** The bytes of entries passed, over time, give the reader's pace (an
//!    exponentially weighted rate with a half-life of [`PACE_HALF_LIFE`]). The lead is the
//!    bytes fetched and not yet passed; the prefetcher (core/plans.rs) keeps it at
//!    `pace × LEAD_TIME`, at least [`MIN_LEAD`], at most the plan's cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use warpdrive_api::api::{PlanEntry, PlanRequest, PlanStatus};
use warpdrive_store::valid_component;

use crate::inode::BackendId;

/// Entries in one plan at most: ImageNet's 1.28 M training files fit; each entry costs about
/// 100 bytes of memory plus its path.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Plans kept at once (one per job and rank).
pub const MAX_PLANS: usize = 256;
/// How far ahead of its reader a plan is kept, in seconds of the reader's pace.
pub const LEAD_TIME: Duration = Duration::from_secs(10);
/// The lead kept before the pace is known, and at least.
pub const MIN_LEAD: u64 = 64 << 20;
/// How far behind the reader's position a read may still reach its entry: loaders with
/// several workers read a few files out of order (PyTorch: two batches per worker ahead), so
/// a read behind the position is of an entry passed over, not of a later one.
pub const BEHIND: usize = 4096;
/// Half-life of the pace's exponential weighting.
pub const PACE_HALF_LIFE: Duration = Duration::from_secs(5);

const IDLE: u8 = 0;
const FETCHING: u8 = 1;
const FETCHED: u8 = 2;
const PASSED: u8 = 3;
const FAILED: u8 = 4;

/// A refused plan: why, naming the entry when one is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// `bytes` in seconds at `rate` bytes a second (0 before the rate is known).
fn lead_seconds(bytes: u64, rate: f64) -> f64 {
    if rate > 0.0 { bytes as f64 / rate } else { 0.0 }
}

/// Plan entries from text: one per line, `PATH` (the whole file) or `PATH<TAB>OFFSET<TAB>LENGTH`
/// (a byte range); blank lines and lines starting with `#` are skipped. Errors name the line.
pub fn parse_lines(text: &str) -> Result<Vec<PlanEntry>, PlanError> {
    parse_lines_from(text, 1)
}

/// [`parse_lines`] of text whose first line is line `first` of a file (errors name the
/// file's line).
pub fn parse_lines_from(text: &str, first: usize) -> Result<Vec<PlanEntry>, PlanError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = |why: &str| PlanError(format!("line {}: {why}", n + first));
        let (offset, length) = match fields.len() {
            1 => (None, None),
            3 => {
                let num = |s: &str, what: &str| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| bad(&format!("{what} {s:?} is not a number of bytes")))
                };
                (
                    Some(num(fields[1], "offset")?),
                    Some(num(fields[2], "length")?),
                )
            }
            _ => {
                return Err(bad(
                    "expected PATH, or PATH, OFFSET and LENGTH separated by tabs",
                ));
            }
        };
        entries.push(PlanEntry {
            path: fields[0].to_string(),
            offset,
            length,
        });
    }
    Ok(entries)
}

/// One validated entry: the backend, the key and the byte range (`None`: the whole file).
#[derive(Debug)]
pub struct Entry {
    pub backend: BackendId,
    pub key: String,
    pub range: Option<(u64, u64)>,
    /// The bytes the entry reads, once known (the range's length, or the file's size).
    size: AtomicU64,
    state: AtomicU8,
    /// A read reached this entry (it may also have been passed over by a faster worker).
    read: AtomicBool,
}

/// Which entries of a file a read can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The reader opened the file (or, without opens, read its start): a whole-file entry.
    Whole,
    /// A read at this offset: the byte-range entry that covers it.
    At(u64),
}

impl Entry {
    /// Whether a read at `offset` of the entry's file falls in the entry.
    fn covers(&self, offset: u64) -> bool {
        self.range
            .is_none_or(|(o, l)| offset >= o && offset < o.saturating_add(l))
    }
}

/// A validated plan and its progress.
#[derive(Debug)]
pub struct Plan {
    pub job: String,
    pub rank: u32,
    pub epoch: u64,
    pub entries: Vec<Entry>,
    /// Positions of each file's entries, ascending.
    /// Per backend (by id), so that a read's key is looked up without a copy of it.
    by_file: Vec<HashMap<String, Vec<u32>>>,
    progress: Mutex<Progress>,
    /// Entries before this one have been claimed by the prefetcher: from the reader's
    /// position up to here is the window fetched ahead, which eviction spares.
    issued: AtomicUsize,
    lead: AtomicU64,
    fetched_bytes: AtomicU64,
    counts: [AtomicU64; 3],
}

/// Where the reader is, and its pace.
#[derive(Debug)]
struct Progress {
    /// Entries before this one are passed.
    reached: usize,
    /// Bytes per second, exponentially weighted.
    rate: f64,
    last: Instant,
    started: Option<Instant>,
}

/// How a plan's entries ended, in [`Plan::status`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ahead = 0,
    Late = 1,
    Failed = 2,
}

impl Plan {
    /// Validates `req` against the backends' names (`backends[i]` is `BackendId(i)`). Entry
    /// paths are `BACKEND/KEY` (the caller strips the mount point or `wd://`).
    pub fn new(req: &PlanRequest, backends: &[&str]) -> Result<Plan, PlanError> {
        let job_ok = !req.job.is_empty()
            && req.job.len() <= 128
            && req
                .job
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !job_ok {
            return Err(PlanError(format!(
                "job {:?}: use 1 to 128 letters, digits, `.`, `_` or `-`",
                req.job
            )));
        }
        if req.entries.is_empty() {
            return Err(PlanError("the plan has no entries".into()));
        }
        if req.entries.len() > MAX_ENTRIES {
            return Err(PlanError(format!(
                "the plan has {} entries; at most {MAX_ENTRIES} (split a larger epoch into plans per rank)",
                req.entries.len()
            )));
        }
        let mut entries = Vec::with_capacity(req.entries.len());
        let mut by_file: Vec<HashMap<String, Vec<u32>>> = vec![HashMap::new(); backends.len()];
        for (i, e) in req.entries.iter().enumerate() {
            let bad = |why: &str| PlanError(format!("entry {} ({:?}): {why}", i + 1, e.path));
            let (backend, key) = e.path.split_once('/').unwrap_or((&e.path, ""));
            let Some(b) = backends.iter().position(|n| *n == backend) else {
                return Err(bad(&format!(
                    "no backend named `{backend}` (configured: {})",
                    backends.join(", ")
                )));
            };
            if key.is_empty() || !key.split('/').all(valid_component) {
                return Err(bad(
                    "not a file path below a backend (empty, `.` or `..` components)",
                ));
            }
            let range = match (e.offset, e.length) {
                (None, None) => None,
                (Some(o), Some(l)) if l > 0 => Some((o, l)),
                (Some(_), Some(_)) => return Err(bad("a range of 0 bytes")),
                _ => return Err(bad("give both offset and length, or neither")),
            };
            let backend = BackendId(b);
            by_file[b]
                .entry(key.to_string())
                .or_default()
                .push(i as u32);
            entries.push(Entry {
                backend,
                key: key.to_string(),
                range,
                size: AtomicU64::new(range.map_or(0, |(_, l)| l)),
                state: AtomicU8::new(IDLE),
                read: AtomicBool::new(false),
            });
        }
        Ok(Plan {
            job: req.job.clone(),
            rank: req.rank,
            epoch: req.epoch,
            entries,
            by_file,
            progress: Mutex::new(Progress {
                reached: 0,
                rate: 0.0,
                last: Instant::now(),
                started: None,
            }),
            issued: AtomicUsize::new(0),
            lead: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            counts: Default::default(),
        })
    }

    /// Whether the plan reads `backend`/`key` at all.
    pub fn has_file(&self, backend: BackendId, key: &str) -> bool {
        self.positions(backend, key).is_some()
    }

    /// Where the plan reads `backend`/`key`, ascending.
    fn positions(&self, backend: BackendId, key: &str) -> Option<&Vec<u32>> {
        self.by_file.get(backend.0)?.get(key)
    }

    /// A reader started reading `backend`/`key` (of `file_size` bytes): `reach` says which
    /// of its entries that can be. The first such entry not read yet, from [`BEHIND`]
    /// entries before the reader's position on, is marked read; if it is ahead of the
    /// position, the position moves past it and the entries passed are settled. Returns the
    /// outcomes settled.
    pub fn read(
        &self,
        backend: BackendId,
        key: &str,
        reach: Reach,
        file_size: u64,
    ) -> Vec<Outcome> {
        let Some(positions) = self.positions(backend, key) else {
            return Vec::new();
        };
        let mut p = self.progress.lock();
        let from = p.reached.saturating_sub(BEHIND);
        let Some(&hit) = positions.iter().find(|&&i| {
            let e = &self.entries[i as usize];
            i as usize >= from
                && !e.read.load(Ordering::Relaxed)
                && match reach {
                    Reach::Whole => e.range.is_none(),
                    Reach::At(o) => e.range.is_some() && e.covers(o),
                }
        }) else {
            return Vec::new();
        };
        self.entries[hit as usize]
            .read
            .store(true, Ordering::Relaxed);
        if (hit as usize) < p.reached {
            // Read out of order, behind another worker: settled already.
            return Vec::new();
        }
        let to = hit as usize + 1;
        let mut outcomes = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[p.reached..to] {
            let was = e.state.swap(PASSED, Ordering::AcqRel);
            let size = e.size.load(Ordering::Relaxed);
            // An entry not fetched yet has no size: the file being read stands for it.
            bytes += if size == 0 && was != FETCHED {
                e.range.map_or(file_size, |(_, l)| l)
            } else {
                size
            };
            let o = match was {
                FETCHED => {
                    self.lead.fetch_sub(size, Ordering::Relaxed);
                    Outcome::Ahead
                }
                FAILED => Outcome::Failed,
                _ => Outcome::Late,
            };
            self.counts[o as usize].fetch_add(1, Ordering::Relaxed);
            outcomes.push(o);
        }
        p.reached = to;
        let now = Instant::now();
        match p.started {
            None => p.started = Some(now),
            Some(_) => {
                let dt = now.duration_since(p.last).as_secs_f64().max(1e-3);
                // Weight of the old rate after dt: half per half-life.
                let keep = 0.5f64.powf(dt / PACE_HALF_LIFE.as_secs_f64());
                p.rate = keep * p.rate + (1.0 - keep) * (bytes as f64 / dt);
            }
        }
        p.last = now;
        outcomes
    }

    /// Entries the reader has passed.
    pub fn reached(&self) -> usize {
        self.progress.lock().reached
    }

    /// The lead to keep, in bytes: the reader's pace × [`LEAD_TIME`], at least [`MIN_LEAD`],
    /// at most `cap`.
    pub fn lead_target(&self, cap: u64) -> u64 {
        let rate = self.progress.lock().rate;
        ((rate * LEAD_TIME.as_secs_f64()) as u64)
            .max(MIN_LEAD)
            .min(cap)
    }

    /// Bytes fetched ahead of the reader.
    pub fn lead(&self) -> u64 {
        self.lead.load(Ordering::Relaxed)
    }

    /// The lead in seconds of the reader's pace (0 before the pace is known).
    pub fn lead_seconds(&self) -> f64 {
        lead_seconds(self.lead(), self.progress.lock().rate)
    }

    /// Claims entry `i` for fetching; false if the reader passed it or it is claimed.
    pub fn claim(&self, i: usize) -> bool {
        self.issued.fetch_max(i + 1, Ordering::Relaxed);
        self.entries[i]
            .state
            .compare_exchange(IDLE, FETCHING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// When the plan reads `backend`/`key` next, for eviction: `(entries from the reader's
    /// position, inside the window fetched ahead)`; `None` if the plan does not read it again.
    /// An entry a slower worker has yet to read behind the position is due now (0, kept).
    pub fn next_use(&self, backend: BackendId, key: &str) -> Option<(u64, bool)> {
        let positions = self.positions(backend, key)?;
        let reached = self.reached();
        let issued = self.issued.load(Ordering::Relaxed);
        let from = reached.saturating_sub(BEHIND);
        let p = *positions.iter().find(|&&p| {
            p as usize >= reached
                || (p as usize >= from && !self.entries[p as usize].read.load(Ordering::Relaxed))
        })? as usize;
        if p < reached {
            return Some((0, true));
        }
        Some(((p - reached) as u64, p < issued))
    }

    /// Entry `i`'s fetch ended: `Ok((size, fetched))`: the entry reads `size` bytes, of
    /// which `fetched` came from the backend now; `Err`: it failed.
    pub fn fetched(&self, i: usize, r: Result<(u64, u64), ()>) {
        let e = &self.entries[i];
        let (to, size) = match r {
            Ok((size, fetched)) => {
                self.fetched_bytes.fetch_add(fetched, Ordering::Relaxed);
                (FETCHED, size)
            }
            Err(()) => (FAILED, 0),
        };
        e.size.store(size, Ordering::Relaxed);
        // Only an entry the reader has not passed adds to the lead.
        if e.state
            .compare_exchange(FETCHING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && to == FETCHED
        {
            self.lead.fetch_add(size, Ordering::Relaxed);
        }
    }

    /// How many entries ended `o`.
    pub fn count(&self, o: Outcome) -> u64 {
        self.counts[o as usize].load(Ordering::Relaxed)
    }

    /// The plan as `GET /plans` shows it; `state` is the prefetcher's.
    pub fn status(&self, state: &str) -> PlanStatus {
        let (reached, rate) = {
            let p = self.progress.lock();
            (p.reached, p.rate)
        };
        let lead_bytes = self.lead();
        PlanStatus {
            job: self.job.clone(),
            rank: self.rank,
            epoch: self.epoch,
            entries: self.entries.len() as u64,
            reached: reached as u64,
            ahead: self.count(Outcome::Ahead),
            late: self.count(Outcome::Late),
            failed: self.count(Outcome::Failed),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
            lead_bytes,
            rate_bytes_per_second: rate,
            lead_seconds: lead_seconds(lead_bytes, rate),
            state: state.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_text_has_a_path_per_line_and_optional_ranges() {
        let e =
            parse_lines("# epoch 3\nimgs/a.jpg\n\ns3/shard.tar\t512\t1024\r\n").expect("parses");
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].path.as_str(), e[0].offset), ("imgs/a.jpg", None));
        assert_eq!((e[1].offset, e[1].length), (Some(512), Some(1024)));
        let err = parse_lines("a\nb\tx\t3\n").expect_err("refused");
        assert!(err.0.starts_with("line 2: offset \"x\""), "{err}");
        assert!(
            parse_lines("a\t1\n")
                .expect_err("refused")
                .0
                .contains("line 1")
        );
    }

    fn req(paths: &[&str]) -> PlanRequest {
        PlanRequest {
            job: "resnet".into(),
            rank: 0,
            epoch: 1,
            entries: paths
                .iter()
                .map(|p| PlanEntry {
                    path: p.to_string(),
                    offset: None,
                    length: None,
                })
                .collect(),
        }
    }

    #[test]
    fn bad_plans_are_refused_naming_the_entry() {
        let b = ["imgs", "s3"];
        let cases: &[(PlanRequest, &str)] = &[
            (req(&[]), "no entries"),
            (
                req(&["imgs/a", "nope/b"]),
                "entry 2 (\"nope/b\"): no backend named `nope`",
            ),
            (req(&["imgs/a/../b"]), "entry 1"),
            (req(&["imgs"]), "not a file path"),
            (req(&["imgs//a"]), "not a file path"),
            (
                PlanRequest {
                    job: "bad job".into(),
                    ..req(&["imgs/a"])
                },
                "job \"bad job\"",
            ),
            (
                PlanRequest {
                    entries: vec![PlanEntry {
                        path: "imgs/a".into(),
                        offset: Some(3),
                        length: None,
                    }],
                    ..req(&[])
                },
                "both offset and length",
            ),
            (
                PlanRequest {
                    entries: vec![PlanEntry {
                        path: "imgs/a".into(),
                        offset: Some(3),
                        length: Some(0),
                    }],
                    ..req(&[])
                },
                "0 bytes",
            ),
        ];
        for (r, want) in cases {
            let e = Plan::new(r, &b).expect_err(want);
            assert!(e.0.contains(want), "{e} lacks {want}");
        }
        let huge = PlanRequest {
            entries: vec![
                PlanEntry {
                    path: "imgs/a".into(),
                    offset: None,
                    length: None
                };
                MAX_ENTRIES + 1
            ],
            ..req(&[])
        };
        assert!(
            Plan::new(&huge, &b)
                .expect_err("huge")
                .0
                .contains("at most")
        );
    }

    /// Fetched entries count ahead, unfetched and in-flight ones late; a fetch that ends
    /// after its entry was passed adds nothing to the lead.
    #[test]
    fn outcomes_and_lead_follow_the_reader() {
        let p =
            Plan::new(&req(&["imgs/a", "imgs/b", "imgs/c", "imgs/d"]), &["imgs"]).expect("valid");
        let b = BackendId(0);
        assert!(p.claim(0) && p.claim(1) && p.claim(2));
        assert!(!p.claim(0), "claimed once");
        p.fetched(0, Ok((100, 100)));
        p.fetched(1, Ok((50, 0)));
        assert_eq!(p.lead(), 150);
        // Two workers: `b` is read before `a`.
        assert_eq!(
            p.read(b, "b", Reach::Whole, 50),
            vec![Outcome::Ahead, Outcome::Ahead]
        );
        assert_eq!(
            p.read(b, "a", Reach::Whole, 100),
            vec![],
            "a is behind the reader"
        );
        assert_eq!(p.lead(), 0);
        // `c` is in flight and `d` never started when the reader reaches `d`.
        assert_eq!(
            p.read(b, "d", Reach::Whole, 10),
            vec![Outcome::Late, Outcome::Late]
        );
        assert!(!p.claim(3), "a passed entry is not fetched");
        p.fetched(2, Ok((70, 70)));
        assert_eq!(p.lead(), 0, "a late fetch adds no lead");
        let s = p.status("running");
        assert_eq!(
            (s.reached, s.ahead, s.late, s.fetched_bytes),
            (4, 2, 2, 170)
        );
    }

    /// Eviction's view: the distance to each file's next entry, and whether it is inside the
    /// window the prefetcher has claimed.
    #[test]
    fn next_uses_count_from_the_reader() {
        let p =
            Plan::new(&req(&["imgs/a", "imgs/b", "imgs/c", "imgs/a"]), &["imgs"]).expect("valid");
        let b = BackendId(0);
        assert!(p.claim(0) && p.claim(1));
        assert_eq!(p.next_use(b, "a"), Some((0, true)));
        assert_eq!(p.next_use(b, "c"), Some((2, false)));
        assert_eq!(p.next_use(b, "z"), None);
        p.read(b, "b", Reach::Whole, 1);
        assert_eq!(
            p.next_use(b, "a"),
            Some((0, true)),
            "a slower worker reads it now"
        );
        p.read(b, "a", Reach::Whole, 1);
        assert_eq!(
            p.next_use(b, "a"),
            Some((1, false)),
            "its second entry, not fetched"
        );
        assert_eq!(p.next_use(b, "b"), None, "not read again");
    }

    /// Two epochs in one plan: each open reaches the file's first entry not read yet, so the
    /// second epoch's entries are reached in the second epoch, not by a repeated read.
    #[test]
    fn a_file_read_again_reaches_its_next_epochs_entry_only_once_read() {
        let p =
            Plan::new(&req(&["imgs/a", "imgs/b", "imgs/a", "imgs/b"]), &["imgs"]).expect("valid");
        let b = BackendId(0);
        assert_eq!(p.read(b, "a", Reach::Whole, 1).len(), 1);
        assert_eq!(
            p.read(b, "a", Reach::At(0), 1),
            vec![],
            "reads of an opened file"
        );
        assert_eq!(p.reached(), 1);
        assert_eq!(p.read(b, "b", Reach::Whole, 1).len(), 1);
        assert_eq!(p.read(b, "a", Reach::Whole, 1).len(), 1, "the next epoch");
        assert_eq!(p.reached(), 3);
    }

    /// A shard read as tar members: each read reaches the entry whose range covers it.
    #[test]
    fn ranges_of_one_file_are_reached_in_order() {
        let mut r = req(&[]);
        for (o, l) in [(0, 10), (10, 10), (20, 10)] {
            r.entries.push(PlanEntry {
                path: "s3/shard-0.tar".into(),
                offset: Some(o),
                length: Some(l),
            });
        }
        let p = Plan::new(&r, &["s3"]).expect("valid");
        let b = BackendId(0);
        assert_eq!(p.read(b, "shard-0.tar", Reach::At(12), 30).len(), 2);
        assert_eq!(p.reached(), 2);
        assert_eq!(p.read(b, "shard-0.tar", Reach::At(5), 30), vec![], "behind");
        assert_eq!(p.read(b, "shard-0.tar", Reach::At(25), 30).len(), 1);
        assert_eq!(p.reached(), 3);
        assert_eq!(
            p.read(b, "shard-0.tar", Reach::Whole, 30),
            vec![],
            "an open reaches no range"
        );
    }
}
