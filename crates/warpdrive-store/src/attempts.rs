//! Counts every HTTP attempt a cloud client makes: failures by kind, and retries.
//!
//! `object_store` retries transient failures (5xx, throttling, timeouts, broken connections)
//! inside its client and reports only the final outcome, so this layer sits in its HTTP
//! connector and sees each attempt. An attempt that fails is classified
//! (`warpdrive_backend_errors_total{kind}`); if it was transient, its request (method, URL and
//! range) is remembered, and the next attempt of the same request within the retry window is
//! a retry (`warpdrive_backend_retries_total`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use parking_lot::Mutex;
use warpdrive_metrics::{BackendMetrics, ErrorKind};

/// How long a failed request is remembered as waiting for its retry (object_store's retry
/// window is 60 s).
const RETRY_WINDOW: Duration = Duration::from_secs(90);
/// Most failed requests remembered at once.
const MAX_REMEMBERED: usize = 4096;

/// The class of an HTTP status that is a failure.
pub(crate) fn status_kind(status: u16) -> Option<ErrorKind> {
    match status {
        // Stores answer 503 to ask for less (S3 SlowDown, Azure ServerBusy) as well as 429.
        429 | 503 => Some(ErrorKind::Throttled),
        500..=599 => Some(ErrorKind::Server),
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

/// An [`HttpService`] that counts attempts around another.
#[derive(Debug)]
pub(crate) struct Attempts {
    pub inner: HttpClient,
    pub metrics: BackendMetrics,
    /// Requests whose last attempt failed transiently, and when.
    failed: Mutex<HashMap<String, Instant>>,
}

impl Attempts {
    pub(crate) fn new(inner: HttpClient, metrics: BackendMetrics) -> Attempts {
        Attempts {
            inner,
            metrics,
            failed: Mutex::new(HashMap::new()),
        }
    }
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

#[async_trait]
impl HttpService for Attempts {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let key = request_key(&req);
        {
            let mut failed = self.failed.lock();
            if failed
                .remove(&key)
                .is_some_and(|t| t.elapsed() < RETRY_WINDOW)
            {
                warpdrive_metrics::add(&self.metrics.retries, 1);
            }
        }
        let r = self.inner.execute(req).await;
        let (kind, transient) = match &r {
            Ok(resp) => match status_kind(resp.status().as_u16()) {
                Some(k) => (Some(k), k != ErrorKind::Client),
                None => (None, false),
            },
            Err(e) => (Some(transport_kind(e)), true),
        };
        if let Some(k) = kind {
            self.metrics.error(k);
        }
        if transient {
            let mut failed = self.failed.lock();
            if failed.len() >= MAX_REMEMBERED {
                failed.retain(|_, t| t.elapsed() < RETRY_WINDOW);
                if failed.len() >= MAX_REMEMBERED {
                    failed.clear();
                }
            }
            failed.insert(key, Instant::now());
        }
        r
    }
}
