//! The retry policy: what a request to a store does when an attempt fails.
//!
//! `object_store` owns the retry loop (it repeats a request that failed transiently, after a
//! jittered exponential backoff from 100 ms up to [`MAX_BACKOFF`], and resumes a body that
//! broke mid-stream at the byte it reached, checked by ETag). Its limits are set far apart
//! here ([`object_store_config`]: any number of retries within `retry.deadline`), and the
//! decisions it cannot make are taken per attempt, in the HTTP layer ([`crate::attempts`]),
//! with this module's state, shared by every request of one backend:
//!
//! * **`Retry-After`**: a throttled answer (429, 503) that says how long to wait
//!   (`Retry-After` in seconds or as a date, `x-ms-retry-after-ms`, `retry-after-ms`) holds
//!   the next attempt of that request until then.
//! * **A shared budget** ([`Budget`]): every retry spends a token of a bucket that refills at
//!   [`BUDGET_REFILL_PER_SEC`] up to [`BUDGET_TOKENS`]; when a storm has spent it, retries
//!   wait their turn instead of multiplying the load on a store that is already shedding it.
//!   First attempts never wait.
//! * **First-byte timeouts** ([`FirstByte`]): an attempt whose answer has not started within
//!   a few times the recent p99 of its kind (GET, HEAD, LIST) is abandoned and retried, so a
//!   stalled request costs its reader seconds, not the stall.
//! * **Unreachable** ([`Silence`]): when the store has answered nothing at all (connections
//!   refused or timing out, no headers) for `retry.unreachable`, failing attempts are no
//!   longer retried: a request fails at once until the store answers again, so a dead
//!   endpoint costs a reader seconds instead of the whole deadline.
//! * **The deadline**: a request still failing `retry.deadline` after its first failed attempt
//!   is given up. A reader then gets `EIO`: never before, never a hang.
//!
//! Retries and give-ups are counted by reason, waits by cause (doc/METRICS.md).
//!
//! **Fail-fast requests**: a caller that has an answer to fall back on (the fs core
//! revalidating metadata it already holds, which it may serve stale while the store is
//! failing) runs its request inside [`fail_fast`]: no retries, and a first-byte timeout of
//! twice the recent p99 (at least [`FAIL_FAST_MIN`]), so a failing store costs it a fraction
//! of a second instead of `retry.unreachable`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use object_store::client::HttpRequest;
use object_store::{BackoffConfig, RetryConfig};
use parking_lot::Mutex;
use warpdrive_config::{MAX_BACKOFF, RetryPolicy};
use warpdrive_metrics::{ErrorKind, Request};

/// Retries a backend may send at once before they wait for the budget to refill.
pub const BUDGET_TOKENS: f64 = 100.0;
/// The budget's refill rate: the sustained retries per second a backend may send in a storm.
pub const BUDGET_REFILL_PER_SEC: f64 = 10.0;
/// First-byte latencies remembered per request kind, for the p99.
const FIRST_BYTE_SAMPLES: usize = 128;
/// Samples needed before the p99 is trusted; until then [`FIRST_BYTE_DEFAULT`] applies.
const FIRST_BYTE_MIN_SAMPLES: usize = 4;
/// The first-byte timeout before there is a p99 to go by.
const FIRST_BYTE_DEFAULT: Duration = Duration::from_secs(10);
/// The timeout is this many times the recent p99 of its request kind...
const FIRST_BYTE_FACTOR: u32 = 5;
/// ...but never shorter than this (a busy store's latency varies more than its p99 says)...
const FIRST_BYTE_MIN: Duration = Duration::from_secs(2);
/// ...nor longer than the whole request may take (`crate::builder::REQUEST_TIMEOUT`).
pub(crate) const FIRST_BYTE_MAX: Duration = Duration::from_secs(30);
/// Failed requests remembered at once (a bound on memory under a storm of distinct keys).
const MAX_REMEMBERED: usize = 4096;
/// The shortest first-byte timeout of a fail-fast request...
pub const FAIL_FAST_MIN: Duration = Duration::from_millis(250);
/// ...the longest (a slow store must still be able to answer)...
const FAIL_FAST_MAX: Duration = Duration::from_secs(10);
/// ...and the one before there is a p99 to go by.
const FAIL_FAST_DEFAULT: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// Set while a [`fail_fast`] request runs (the HTTP layer runs in the caller's task).
    static FAIL_FAST: ();
}

/// Runs `f` with its store requests failing fast: one attempt each, with a short first-byte
/// timeout. For callers that have something to fall back on.
pub async fn fail_fast<F: std::future::Future>(f: F) -> F::Output {
    FAIL_FAST.scope((), f).await
}

/// Whether the current request is fail-fast.
pub(crate) fn failing_fast() -> bool {
    FAIL_FAST.try_with(|_| ()).is_ok()
}

/// `object_store`'s retry settings under `policy`: jittered exponential backoff, no limit on
/// the count, `policy.deadline` in all.
/// How much longer than `retry.deadline` `object_store`'s own retry window is.
const OUR_GIVE_UP_FIRST: Duration = Duration::from_secs(60);

pub(crate) fn object_store_config(policy: &RetryPolicy) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: MAX_BACKOFF,
            base: 2.0,
        },
        // Bounded by the deadline, not the count; a count is still given, as the most
        // attempts the deadline could hold at the shortest backoff (it shows in the client's
        // retry log lines).
        // Past our deadline by a margin, so that the give-up is always this layer's, and the
        // request's error says its class by type ([`crate::attempts::Final`]).
        max_retries: ((policy.deadline + OUR_GIVE_UP_FIRST).as_millis() / 100).max(1) as usize,
        retry_timeout: policy.deadline + OUR_GIVE_UP_FIRST,
    }
}

/// The kind of a request, from its method and query.
pub(crate) fn request_kind(req: &HttpRequest) -> Request {
    if req.method() == "HEAD" {
        Request::Head
    } else if crate::listfilter::is_list(req) {
        Request::List
    } else {
        Request::Get
    }
}

/// How long a throttled answer asks the client to wait, if it says.
pub(crate) fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = text("retry-after")?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A token bucket of retries, shared by every request of one backend.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub(crate) fn new() -> Budget {
        Budget {
            tokens: BUDGET_TOKENS,
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one; otherwise says how long until there is.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * BUDGET_REFILL_PER_SEC;
        self.tokens = (self.tokens + refill).min(BUDGET_TOKENS);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / BUDGET_REFILL_PER_SEC,
            ))
        }
    }
}

/// Recent first-byte latencies of one request kind, and the timeout they give.
#[derive(Debug, Default)]
pub(crate) struct FirstByte {
    samples: Vec<Duration>,
    next: usize,
    /// The p99 of the samples, recomputed every few samples.
    p99: Option<Duration>,
}

impl FirstByte {
    pub(crate) fn record(&mut self, d: Duration) {
        if self.samples.len() < FIRST_BYTE_SAMPLES {
            self.samples.push(d);
        } else {
            self.samples[self.next] = d;
        }
        self.next = (self.next + 1) % FIRST_BYTE_SAMPLES;
        // Recomputed at every sample while there are few (a mount that answers lookups from
        // listings sends few requests), then every eighth.
        let n = self.samples.len();
        if n >= FIRST_BYTE_MIN_SAMPLES && (n < 32 || self.next.is_multiple_of(8)) {
            let mut sorted = self.samples.clone();
            sorted.sort_unstable();
            self.p99 = Some(sorted[(sorted.len() * 99).div_ceil(100) - 1]);
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.p99_timeout().unwrap_or(FIRST_BYTE_DEFAULT)
    }

    /// The timeout from the p99, once there are enough samples.
    fn p99_timeout(&self) -> Option<Duration> {
        self.p99
            .map(|p| (p * FIRST_BYTE_FACTOR).clamp(FIRST_BYTE_MIN, FIRST_BYTE_MAX))
    }

    /// The first-byte timeout of a fail-fast request: twice the recent p99, within
    /// [`FAIL_FAST_MIN`] and [`FAIL_FAST_MAX`].
    pub(crate) fn fail_fast_timeout(&self) -> Duration {
        self.p99.map_or(FAIL_FAST_DEFAULT, |p| {
            (p * 2).clamp(FAIL_FAST_MIN, FAIL_FAST_MAX)
        })
    }
}

/// Since when the store has answered nothing (cleared by any answer).
#[derive(Debug, Default)]
pub(crate) struct Silence {
    since: Option<Instant>,
}

impl Silence {
    pub(crate) fn answered(&mut self) {
        self.since = None;
    }

    /// An attempt sent at `sent` got no answer by `now`; returns how long the store has been
    /// silent (since the first unanswered attempt was sent).
    pub(crate) fn no_answer(&mut self, sent: Instant, now: Instant) -> Duration {
        now.saturating_duration_since(*self.since.get_or_insert(sent))
    }

    /// How long the store has been silent, if it is.
    pub(crate) fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.since.map(|s| now.saturating_duration_since(s))
    }
}

/// A request whose last attempt failed transiently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    /// When its first attempt failed: the deadline counts from here.
    pub first: Instant,
    pub kind: ErrorKind,
    /// Not to be tried again before this (`Retry-After`).
    pub not_before: Option<Instant>,
}

/// Everything the policy keeps for one backend.
#[derive(Debug)]
pub(crate) struct RetryState {
    pub policy: RetryPolicy,
    pub budget: Mutex<Budget>,
    pub first_byte: [Mutex<FirstByte>; 3],
    /// Every kind together: a fail-fast request goes by the store's round trip, whatever
    /// the kind (a mount's first HEADs are few).
    pub any_first_byte: Mutex<FirstByte>,
    pub silence: Mutex<Silence>,
    /// Requests (method, URL, range) whose last attempt failed transiently.
    failed: Mutex<HashMap<String, Failure>>,
}

impl RetryState {
    pub(crate) fn new(policy: RetryPolicy) -> RetryState {
        RetryState {
            policy,
            budget: Mutex::new(Budget::new()),
            first_byte: Default::default(),
            any_first_byte: Mutex::new(FirstByte::default()),
            silence: Mutex::new(Silence::default()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The first-byte timeout of an attempt of `kind`: from the p99 of its kind, else of
    /// every kind, else the default. A fail-fast request, and any request to a store that
    /// has been silent for `retry.unreachable` (a probe of whether it is back), gets the short
    /// fail-fast timeout.
    pub(crate) fn first_byte_timeout(&self, kind: Request, fast: bool, now: Instant) -> Duration {
        let silent = self
            .silence
            .lock()
            .silent_for(now)
            .is_some_and(|s| s >= self.policy.unreachable);
        if fast || silent {
            return self.any_first_byte.lock().fail_fast_timeout();
        }
        if let Some(t) = self.first_byte[kind as usize].lock().p99_timeout() {
            return t;
        }
        self.any_first_byte.lock().timeout()
    }

    /// The failure of this request's previous attempt, if it was a retry.
    pub(crate) fn previous(&self, key: &str) -> Option<Failure> {
        let failed = self.failed.lock();
        failed
            .get(key)
            .copied()
            .filter(|f| f.first.elapsed() < self.policy.deadline + FIRST_BYTE_MAX)
    }

    pub(crate) fn failed(&self, key: String, f: Failure) {
        let mut failed = self.failed.lock();
        if failed.len() >= MAX_REMEMBERED {
            let horizon = self.policy.deadline + FIRST_BYTE_MAX;
            failed.retain(|_, f| f.first.elapsed() < horizon);
            if failed.len() >= MAX_REMEMBERED {
                failed.clear();
            }
        }
        failed.insert(key, f);
    }

    pub(crate) fn done(&self, key: &str) {
        self.failed.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_spends_its_tokens_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new();
        for _ in 0..BUDGET_TOKENS as usize {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).expect_err("spent");
        assert!(
            wait <= Duration::from_secs_f64(1.0 / BUDGET_REFILL_PER_SEC) && !wait.is_zero(),
            "{wait:?}"
        );
        assert!(b.take(t0 + wait).is_ok(), "one token after the wait");
        assert!(b.take(t0 + wait).is_err());
        // A long quiet spell refills it, never above the cap.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..BUDGET_TOKENS as usize {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn the_first_byte_timeout_follows_the_p99_within_its_bounds() {
        let mut f = FirstByte::default();
        assert_eq!(f.timeout(), FIRST_BYTE_DEFAULT, "no samples yet");
        for _ in 0..FIRST_BYTE_SAMPLES {
            f.record(Duration::from_millis(5));
        }
        assert_eq!(f.timeout(), FIRST_BYTE_MIN, "fast store: the floor");
        assert_eq!(f.fail_fast_timeout(), FAIL_FAST_MIN);
        for _ in 0..FIRST_BYTE_SAMPLES {
            f.record(Duration::from_millis(800));
        }
        assert_eq!(f.timeout(), Duration::from_secs(4), "5 × p99");
        assert_eq!(
            f.fail_fast_timeout(),
            Duration::from_millis(1600),
            "2 × p99"
        );
        assert_eq!(FirstByte::default().fail_fast_timeout(), FAIL_FAST_DEFAULT);
        for _ in 0..FIRST_BYTE_SAMPLES {
            f.record(Duration::from_secs(20));
        }
        assert_eq!(f.timeout(), FIRST_BYTE_MAX, "capped");
        // One slow answer in a hundred sets the p99; fewer do not.
        let mut g = FirstByte::default();
        for i in 0..FIRST_BYTE_SAMPLES {
            g.record(Duration::from_millis(if i % 64 == 0 { 1000 } else { 10 }));
        }
        assert_eq!(g.timeout(), Duration::from_secs(5));
    }

    #[test]
    fn silence_counts_from_the_first_unanswered_attempt_until_an_answer() {
        let t0 = Instant::now();
        let s7 = t0 + Duration::from_secs(7);
        let mut s = Silence::default();
        assert_eq!(s.silent_for(t0), None);
        // An attempt sent at t0 that timed out 2 s later: silent since it was sent.
        assert_eq!(
            s.no_answer(t0, t0 + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(s.no_answer(s7, s7), Duration::from_secs(7));
        assert_eq!(s.silent_for(s7), Some(Duration::from_secs(7)));
        s.answered();
        assert_eq!(s.silent_for(s7), None);
        assert_eq!(s.no_answer(s7, s7), Duration::ZERO);
    }

    #[test]
    fn retry_after_in_seconds_milliseconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().expect("header"));
            }
            m
        };
        assert_eq!(
            retry_after(&h(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(
                &h(&[("x-ms-retry-after-ms", "250"), ("retry-after", "1")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(
            retry_after(&h(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(12))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(
            retry_after(&h(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&h(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&h(&[]), now), None);
    }
}
