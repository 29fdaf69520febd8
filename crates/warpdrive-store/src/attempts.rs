//! Every HTTP attempt a cloud client makes passes here: it is counted, timed, and held to the
//! retry policy ([`crate::retry`]).
//!
//! `object_store` repeats a request that failed transiently inside its client and reports
//! only the final outcome, so this layer sits in its HTTP connector and sees each attempt.
//! For one attempt, in order:
//!
//! 1. If the same request (method, URL, range) failed transiently before, this attempt is a
//!    retry: it is counted by the previous failure's kind, waits out that failure's
//!    `Retry-After`, then takes a token of the backend's retry budget (waiting for one if a
//!    storm has spent them). A retry that would have to wait past the deadline gives up.
//! 2. The attempt is sent with a first-byte timeout (a few times the recent p99 of its kind):
//!    the answer's headers must arrive in time, or the attempt fails as a timeout and is
//!    retried.
//! 3. Its outcome is classified (`warpdrive_backend_errors_total{kind}`). A transient failure
//!    is remembered for the next attempt, unless the request is past `retry.deadline`, or the
//!    store has answered nothing at all for `retry.unreachable`: then the attempt's error is
//!    made final (`object_store` does not retry an error of kind `Unknown`) and the give-up
//!    is counted. Any answer, even a 503, shows the store is reachable.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use warpdrive_metrics::{BackendMetrics, ErrorKind, GiveUp, Request};

use crate::StoreError;
use crate::checksum::{Dialect, Seen};
use crate::retry::{Failure, RetryState, request_kind, retry_after};

/// The class of an HTTP status that is a failure.
pub(crate) fn status_kind(status: u16) -> Option<ErrorKind> {
    match status {
        // Stores answer 503 to ask for less (S3 SlowDown, Azure ServerBusy) as well as 429.
        429 | 503 => Some(ErrorKind::Throttled),
        500..=599 => Some(ErrorKind::Server),
        408 => Some(ErrorKind::Timeout),
        400..=499 => Some(ErrorKind::Client),
        _ => None,
    }
}

/// The class of a failure of the transport itself.
pub(crate) fn transport_kind(e: &HttpError) -> ErrorKind {
    match e.kind() {
        HttpErrorKind::Timeout => ErrorKind::Timeout,
        HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted => {
            ErrorKind::Connection
        }
        _ => ErrorKind::Other,
    }
}

/// Why an attempt's error was made final.
#[derive(Debug, thiserror::Error)]
pub enum Final {
    #[error(
        "the store has not answered for {0:?} (retry.unreachable); failing at once until it answers again: {1}"
    )]
    Unreachable(Duration, String),
    /// The retry deadline passed; the last failure was of class `.2`.
    #[error("still failing {0:?} after the first failed attempt (retry.deadline): {1}")]
    Deadline(Duration, String, ErrorKind),
    /// A fail-fast request's attempt failed ([`crate::retry::fail_fast`]): not retried.
    #[error("{0} (a fail-fast request: not retried)")]
    FailedFast(String, ErrorKind),
}

impl Final {
    /// The error a request that ended this way is.
    pub(crate) fn error(&self, backend: String, message: String) -> StoreError {
        match self {
            Final::Unreachable(..) => StoreError::Transport { backend, message },
            Final::Deadline(d, _, kind) => by_kind(*kind, backend, message, *d),
            Final::FailedFast(_, kind) => by_kind(*kind, backend, message, Duration::ZERO),
        }
    }
}

/// A failing answer that is final: a 401 or 403, or a 429/5xx once the retry policy gave up.
/// Handed to `object_store` as an error of its own so that the request's error says the
/// status by type (some clients would report it only in their message).
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
pub struct Answered {
    pub status: u16,
    /// The start of the answer's body (the store's error code and message).
    pub detail: String,
}

/// The error of a final failing answer with `status`.
pub(crate) fn by_status(status: u16, backend: String, message: String) -> StoreError {
    match status {
        401 | 403 => StoreError::Denied { backend, message },
        429 | 503 => StoreError::Throttled { backend, message },
        500..=599 => StoreError::Server {
            backend,
            status: Some(status),
            message,
        },
        _ => StoreError::Other { backend, message },
    }
}

/// The error of a request whose last failure was of class `kind` (`after`: how long it
/// kept failing, for timeouts).
pub(crate) fn by_kind(
    kind: ErrorKind,
    backend: String,
    message: String,
    after: Duration,
) -> StoreError {
    match kind {
        ErrorKind::Throttled => StoreError::Throttled { backend, message },
        ErrorKind::Server => StoreError::Server {
            backend,
            status: None,
            message,
        },
        ErrorKind::Timeout => StoreError::Timeout { backend, after },
        ErrorKind::Connection => StoreError::Transport { backend, message },
        _ => StoreError::Other { backend, message },
    }
}

/// The server's TLS certificate was refused: retrying cannot help, so the error is final, and
/// says why in words that say how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("the server's TLS certificate was refused: {0}")]
pub struct CertificateRefused(pub String);

/// Why a certificate was refused, from the TLS error's text (`rustls` names the reason), if
/// the transport failure was one.
pub(crate) fn certificate_refused(e: &HttpError) -> Option<CertificateRefused> {
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        text.push('\n');
        source = s.source();
    }
    if !text.contains("invalid peer certificate") {
        return None;
    }
    let why = if text.contains("CaUsedAsEndEntity") {
        "it is a CA certificate (basicConstraints CA:TRUE) used as the server's own, which \
         `openssl req -x509` makes by default and curl accepts, but this TLS stack (rustls) \
         refuses. Give the server a certificate without it, e.g. `openssl req -x509 -newkey \
         rsa:2048 -nodes -days 365 -keyout key.pem -out cert.pem -subj /CN=localhost -addext \
         subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE` \
         (then ca_file: cert.pem), or sign one with a CA and give the CA's certificate in ca_file"
    } else if text.contains("UnknownIssuer") {
        "it is not signed by a certificate in the backend's ca_file or the system's roots; \
         give the signing CA's certificate (PEM) in ca_file"
    } else if text.contains("NotValidForName") {
        "it does not name the endpoint's host in its subjectAltName; make it for the host the \
         endpoint names (DNS name or IP address)"
    } else if text.contains("Expired") || text.contains("NotValidYet") {
        "it is outside its validity period (expired or not yet valid; check the clock)"
    } else {
        "see the reason below"
    };
    let reason = text
        .lines()
        .find(|l| l.contains("invalid peer certificate"))
        .unwrap_or("")
        .trim();
    Some(CertificateRefused(format!("{why} ({reason})")))
}

/// An attempt that got no answer headers within its first-byte timeout.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?} (first-byte timeout, from the recent p99 of such requests)")]
pub struct FirstByteTimeout(pub Duration);

/// A final failing answer as an error carrying its status and the start of its body.
async fn answered(resp: HttpResponse) -> HttpError {
    let status = resp.status().as_u16();
    let body = match tokio::time::timeout(Duration::from_secs(5), resp.into_body().bytes()).await {
        Ok(Ok(b)) => b,
        _ => bytes::Bytes::new(),
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let detail = crate::secret::redact(text.trim());
    HttpError::new(HttpErrorKind::Unknown, Answered { status, detail })
}

/// An [`HttpService`] that counts attempts around another and applies the retry policy.
#[derive(Debug)]
pub(crate) struct Attempts {
    pub inner: HttpClient,
    pub metrics: BackendMetrics,
    pub state: Arc<RetryState>,
    /// Whole-object checksums read from successful answers ([`crate::checksum`]).
    pub seen: Arc<Seen>,
    pub dialect: Dialect,
}

/// What identifies a request across its retries.
fn request_key(req: &HttpRequest) -> String {
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    format!("{} {} {range}", req.method(), req.uri())
}

impl Attempts {
    /// Notes the object checksum a successful GET or HEAD answer carries, by its ETag.
    fn remember_checksum(&self, path: &str, ranged: bool, resp: &HttpResponse) {
        let Some(etag) = resp.headers().get("etag").and_then(|v| v.to_str().ok()) else {
            return;
        };
        if let Some(known) = crate::checksum::from_headers(self.dialect, ranged, resp.headers()) {
            self.seen.record(path, etag, known);
        }
    }

    /// Before a retry: the store's `Retry-After`, then a token of the budget. `Err` when the
    /// wait would end past the deadline.
    async fn before_retry(&self, prev: &Failure) -> Result<(), HttpError> {
        self.metrics.retry(prev.kind);
        let deadline = prev.first + self.state.policy.deadline;
        if let Some(at) = prev.not_before {
            let now = Instant::now();
            if at > now {
                let until = at.min(deadline);
                tokio::time::sleep_until(until.into()).await;
                self.metrics.retry_wait("retry_after", until - now);
            }
        }
        let start = Instant::now();
        loop {
            let now = Instant::now();
            let wait = match self.state.budget.lock().take(now) {
                Ok(()) => break,
                Err(wait) => wait,
            };
            if now + wait > deadline {
                self.metrics.give_up(GiveUp::Deadline);
                return Err(HttpError::new(
                    HttpErrorKind::Unknown,
                    Final::Deadline(
                        self.state.policy.deadline,
                        "waiting for the retry budget".into(),
                        prev.kind,
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
        }
        let waited = start.elapsed();
        if !waited.is_zero() {
            self.metrics.retry_wait("budget", waited);
        }
        Ok(())
    }

    /// A transient failure of kind `kind` (with `message`): remembered for the retry, or made
    /// final when the request is past its deadline or the store unreachable. Returns the
    /// give-up, if any.
    fn after_failure(
        &self,
        key: String,
        prev: Option<Failure>,
        kind: ErrorKind,
        not_before: Option<Instant>,
        silent_for: Option<Duration>,
        message: impl FnOnce() -> String,
    ) -> Option<Final> {
        let now = Instant::now();
        let first = prev.map_or(now, |p| p.first);
        let policy = self.state.policy;
        let give_up = if now.saturating_duration_since(first) >= policy.deadline {
            self.metrics.give_up(GiveUp::Deadline);
            Some(Final::Deadline(policy.deadline, message(), kind))
        } else if let Some(silent) = silent_for.filter(|s| *s >= policy.unreachable) {
            self.metrics.give_up(GiveUp::Unreachable);
            Some(Final::Unreachable(silent, message()))
        } else {
            None
        };
        if give_up.is_some() {
            self.state.done(&key);
        } else {
            self.state.failed(
                key,
                Failure {
                    first,
                    kind,
                    not_before,
                },
            );
        }
        give_up
    }
}

#[async_trait]
impl HttpService for Attempts {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let key = request_key(&req);
        let kind = request_kind(&req);
        let req_path = req.uri().path().to_string();
        let ranged = req.headers().contains_key("range");
        let prev = self.state.previous(&key);
        if let Some(p) = &prev {
            self.before_retry(p).await?;
        }
        let fast = crate::retry::failing_fast();
        let sent = Instant::now();
        // A write's answer comes after its body has gone up (a 16 MiB part on a slow link
        // takes seconds): the read path's adaptive first-byte timeout does not apply to it,
        // and its latency is not a sample of it.
        let write = !matches!(req.method().as_str(), "GET" | "HEAD");
        let timeout = if write {
            crate::retry::FIRST_BYTE_MAX
        } else {
            self.state.first_byte_timeout(kind, fast, sent)
        };
        let r = match tokio::time::timeout(timeout, self.inner.execute(req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::new(
                HttpErrorKind::Timeout,
                FirstByteTimeout(timeout),
            )),
        };
        match r {
            Ok(resp) => {
                self.state.silence.lock().answered();
                let status = resp.status().as_u16();
                let failure = status_kind(status);
                if let Some(k) = failure {
                    self.metrics.error(k);
                }
                match failure {
                    Some(k) if k != ErrorKind::Client && fast => {
                        return Err(HttpError::new(
                            HttpErrorKind::Unknown,
                            Final::FailedFast(format!("HTTP {status}"), k),
                        ));
                    }
                    Some(k) if k != ErrorKind::Client => {
                        let not_before = retry_after(resp.headers(), SystemTime::now())
                            .map(|d| Instant::now() + d);
                        let give_up = self.after_failure(key, prev, k, not_before, None, || {
                            format!("HTTP {status}")
                        });
                        if give_up.is_some() {
                            // Final: the answer becomes the request's error, by type.
                            return Err(answered(resp).await);
                        }
                    }
                    Some(_) if status == 401 || status == 403 => {
                        if prev.is_some() {
                            self.state.done(&key);
                        }
                        return Err(answered(resp).await);
                    }
                    _ => {
                        if resp.status().is_success() && kind != Request::List {
                            self.remember_checksum(&req_path, ranged, &resp);
                        }
                        let took = sent.elapsed();
                        if !write {
                            self.state.first_byte[kind as usize].lock().record(took);
                            self.state.any_first_byte.lock().record(took);
                        }
                        if prev.is_some() {
                            self.state.done(&key);
                        }
                    }
                }
                Ok(resp)
            }
            Err(e) => {
                let k = transport_kind(&e);
                self.metrics.error(k);
                if let Some(refused) = certificate_refused(&e) {
                    self.state.done(&key);
                    return Err(HttpError::new(HttpErrorKind::Unknown, refused));
                }
                if fast {
                    return Err(HttpError::new(
                        HttpErrorKind::Unknown,
                        Final::FailedFast(e.to_string(), k),
                    ));
                }
                // Nothing came back: the store may be unreachable.
                let unanswered = matches!(
                    e.kind(),
                    HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Request
                );
                let silent_for =
                    unanswered.then(|| self.state.silence.lock().no_answer(sent, Instant::now()));
                match self.after_failure(key, prev, k, None, silent_for, || e.to_string()) {
                    Some(f) => Err(HttpError::new(HttpErrorKind::Unknown, f)),
                    None => Err(e),
                }
            }
        }
    }
}
