//! Writes to Google Cloud Storage through its JSON API, where `object_store` writes through the
//! XML API: a single upload (`uploadType=media`), a resumable upload for files streamed in
//! parts, a rewrite for a copy, and a delete. The JSON API takes `ifGenerationMatch=0` on
//! each of them, so a create-only write or copy is conditional on the store itself, the
//! resumable upload's included (checked when it is finalized); `object_store`'s XML multipart
//! upload takes no precondition. (fake-gcs-server, the emulator, ignores the precondition;
//! it also refuses `object_store`'s XML PUT, which the JSON API avoids.)
//!
//! A resumable upload is one session whose chunks must arrive in order: each part waits for
//! the one before it, is sent as `bytes START-END/*` (a multiple of 256 KiB, as every part but
//! the last is), and the upload is finalized by the part that is not a multiple (sent with
//! the total) or, at completion, by an empty `bytes */TOTAL`. Requests go through the
//! backend's HTTP stack ([`crate::attempts`]): counted, and retried within the retry policy,
//! transient failures being tried again here until the policy gives up.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::client::{HttpClient, HttpError, HttpRequestBody, HttpResponse};
use object_store::gcp::GcpCredentialProvider;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::store::{PartFuture, Upload};
use crate::{Result, StoreError};

/// Non-final chunks of a resumable upload are multiples of this.
const CHUNK_ALIGN: u64 = 256 << 10;

/// Every byte of a key but the unreserved ones is escaped in a URL's path or query.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The JSON API of one bucket.
pub(crate) struct GcsJson {
    pub name: String,
    /// `https://storage.googleapis.com`, or the emulator's endpoint.
    pub base: String,
    pub bucket: String,
    pub client: HttpClient,
    pub creds: GcpCredentialProvider,
}

impl std::fmt::Debug for GcsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsJson")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .finish()
    }
}

fn enc(key: &str) -> String {
    utf8_percent_encode(key, KEY).to_string()
}

/// Whether the HTTP stack gave up on a request (its error is final), as opposed to failing
/// one attempt of it.
fn is_final(e: &HttpError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<crate::attempts::Final>().is_some()
            || s.downcast_ref::<crate::attempts::Answered>().is_some()
            || s.downcast_ref::<crate::attempts::CertificateRefused>()
                .is_some()
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl GcsJson {
    fn failed(&self, key: &str, e: HttpError) -> StoreError {
        StoreError::from_object_store(
            &self.name,
            key,
            object_store::Error::Generic {
                store: "GCS",
                source: Box::new(e),
            },
        )
    }

    fn answered(&self, key: &str, status: u16, body: &[u8]) -> StoreError {
        let detail =
            crate::secret::redact(String::from_utf8_lossy(&body[..body.len().min(300)]).trim());
        match status {
            412 => StoreError::AlreadyExists {
                backend: self.name.clone(),
                key: key.to_string(),
            },
            404 => StoreError::NotFound {
                backend: self.name.clone(),
                key: key.to_string(),
            },
            s => crate::attempts::by_status(s, self.name.clone(), format!("HTTP {s}: {detail}")),
        }
    }

    /// Sends a request (built anew for each attempt) until it is answered with a status that
    /// is not a transient failure, or the retry policy gives up. Statuses are the caller's.
    async fn send(
        &self,
        key: &str,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<HttpResponse> {
        let bearer = self
            .creds
            .get_credential()
            .await
            .map_err(|e| StoreError::from_object_store(&self.name, key, e))?
            .bearer
            .clone();
        loop {
            let mut b = http::Request::builder().method(method).uri(url);
            if !bearer.is_empty() {
                b = b.header("authorization", format!("Bearer {bearer}"));
            }
            for (k, v) in headers {
                b = b.header(*k, v.as_str());
            }
            let req = b
                .header("content-length", body.len().to_string())
                .body(HttpRequestBody::from(body.clone()))
                .map_err(|e| StoreError::Other {
                    backend: self.name.clone(),
                    message: format!("building a request for {key}: {e}"),
                })?;
            match self.client.execute(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let transient = matches!(
                        crate::attempts::status_kind(status),
                        Some(
                            warpdrive_metrics::ErrorKind::Throttled
                                | warpdrive_metrics::ErrorKind::Server
                                | warpdrive_metrics::ErrorKind::Timeout
                        )
                    );
                    // A transient answer the policy did not give up on is tried again.
                    if !transient {
                        return Ok(resp);
                    }
                }
                Err(e) if is_final(&e) => return Err(self.failed(key, e)),
                Err(_) => {}
            }
        }
    }

    async fn body(&self, key: &str, resp: HttpResponse) -> Result<(u16, Bytes)> {
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .bytes()
            .await
            .map_err(|e| self.failed(key, e))?;
        Ok((status, body))
    }

    fn precondition(create_only: bool) -> &'static str {
        if create_only {
            "&ifGenerationMatch=0"
        } else {
            ""
        }
    }

    /// One request: the whole object.
    pub async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}{}",
            self.base,
            enc(&self.bucket),
            enc(key),
            Self::precondition(create_only)
        );
        let headers = [("content-type", "application/octet-stream".to_string())];
        let resp = self.send(key, "POST", &url, &headers, data).await?;
        match self.body(key, resp).await? {
            (200..=299, _) => Ok(()),
            (s, b) => Err(self.answered(key, s, &b)),
        }
    }

    /// Opens a resumable upload session for `key`.
    pub async fn upload(self: &Arc<Self>, key: &str, create_only: bool) -> Result<GcsUpload> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=resumable&name={}{}",
            self.base,
            enc(&self.bucket),
            enc(key),
            Self::precondition(create_only)
        );
        let resp = self.send(key, "POST", &url, &[], Bytes::new()).await?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (status, body) = self.body(key, resp).await?;
        let session = match (status, location) {
            (200..=299, Some(l)) => l,
            (200..=299, None) => {
                return Err(StoreError::Other {
                    backend: self.name.clone(),
                    message: format!("the resumable upload of {key} was given no session"),
                });
            }
            (s, _) => return Err(self.answered(key, s, &body)),
        };
        Ok(GcsUpload {
            json: self.clone(),
            key: key.to_string(),
            session: Arc::new(session),
            next: 0,
            last: None,
            finalized: false,
        })
    }

    /// A copy inside the bucket (a rewrite, repeated until it is done).
    pub async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()> {
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{b}/o/{}/rewriteTo/b/{b}/o/{}?{}",
                self.base,
                enc(from),
                enc(to),
                if create_only {
                    "ifGenerationMatch=0"
                } else {
                    ""
                },
                b = enc(&self.bucket),
            );
            if let Some(t) = &token {
                url.push_str(&format!("&rewriteToken={}", enc(t)));
            }
            let resp = self.send(to, "POST", &url, &[], Bytes::new()).await?;
            let (status, body) = self.body(to, resp).await?;
            if !(200..=299).contains(&status) {
                return Err(self.answered(to, status, &body));
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if v["done"].as_bool() != Some(false) {
                return Ok(());
            }
            token = v["rewriteToken"].as_str().map(str::to_string);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            enc(&self.bucket),
            enc(key)
        );
        let resp = self.send(key, "DELETE", &url, &[], Bytes::new()).await?;
        match self.body(key, resp).await? {
            (200..=299, _) => Ok(()),
            (s, b) => Err(self.answered(key, s, &b)),
        }
    }

    /// Sends bytes `start..start + data.len()` of a session (`total`: the object's size, when
    /// this request finalizes it).
    async fn chunk(
        &self,
        key: &str,
        session: &str,
        start: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> Result<()> {
        let range = match (data.is_empty(), total) {
            (true, Some(t)) => format!("bytes */{t}"),
            (false, t) => format!(
                "bytes {start}-{}/{}",
                start + data.len() as u64 - 1,
                t.map_or("*".to_string(), |t| t.to_string())
            ),
            (true, None) => return Ok(()),
        };
        let resp = self
            .send(key, "PUT", session, &[("content-range", range)], data)
            .await?;
        match self.body(key, resp).await? {
            // 308: more is expected.
            (200..=299 | 308, _) => Ok(()),
            (s, b) => Err(self.answered(key, s, &b)),
        }
    }
}

type Sent = Shared<BoxFuture<'static, std::result::Result<(), StoreError>>>;

/// A resumable upload in progress.
pub(crate) struct GcsUpload {
    json: Arc<GcsJson>,
    key: String,
    session: Arc<String>,
    /// Where the next part starts.
    next: u64,
    /// The last part sent (each part waits for it).
    last: Option<Sent>,
    /// A part finalized the upload (it was not a multiple of 256 KiB: the last).
    finalized: bool,
}

impl std::fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsUpload").field("key", &self.key).finish()
    }
}

#[async_trait::async_trait]
impl Upload for GcsUpload {
    fn part(&mut self, data: Bytes) -> PartFuture {
        let start = self.next;
        let len = data.len() as u64;
        self.next += len;
        let last = !len.is_multiple_of(CHUNK_ALIGN);
        self.finalized |= last;
        let total = last.then_some(start + len);
        let (json, key, session, prev) = (
            self.json.clone(),
            self.key.clone(),
            self.session.clone(),
            self.last.take(),
        );
        let sent: Sent = async move {
            if let Some(p) = prev {
                p.await?;
            }
            json.chunk(&key, &session, start, data, total).await
        }
        .boxed()
        .shared();
        self.last = Some(sent.clone());
        Box::pin(sent)
    }

    async fn complete(&mut self) -> Result<()> {
        if let Some(p) = self.last.take() {
            p.await?;
        }
        if self.finalized {
            return Ok(());
        }
        self.finalized = true;
        self.json
            .chunk(
                &self.key,
                &self.session,
                self.next,
                Bytes::new(),
                Some(self.next),
            )
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        let _ = self
            .json
            .send(&self.key, "DELETE", &self.session, &[], Bytes::new())
            .await;
        Ok(())
    }
}
