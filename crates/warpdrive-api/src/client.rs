//! The client `warpdrive-ctl` talks to the control API with: over the daemon's Unix socket
//! by default, or over TCP with a bearer token. Blocking (it runs its own small runtime), as
//! `warpdrive-ctl` is a short-lived command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use warpdrive_config::Config;

use crate::api::ApiError;

/// How long one request may take before the command gives up (verify of a large cache may
/// take minutes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: String },
}

/// A connection target for the control API.
#[derive(Debug)]
pub struct Client {
    ep: Endpoint,
    rt: tokio::runtime::Runtime,
}

/// Builds a query string from pairs, skipping absent values.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

impl Client {
    fn new(ep: Endpoint) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        Ok(Client { ep, rt })
    }

    /// A client of the daemon configured in `config`, if its socket answers.
    pub fn daemon(config: &Config) -> Option<Client> {
        let path = &config.control.socket;
        std::os::unix::net::UnixStream::connect(path).ok()?;
        Client::new(Endpoint::Unix(path.clone())).ok()
    }

    /// A client of the API on TCP at `addr` (`HOST:PORT`), with `token`.
    pub fn tcp(addr: &str, token: &str) -> Result<Client> {
        Client::new(Endpoint::Tcp {
            addr: addr.to_string(),
            token: token.to_string(),
        })
    }

    /// Where requests go, for messages.
    pub fn describe(&self) -> String {
        match &self.ep {
            Endpoint::Unix(p) => format!("the daemon's socket {}", p.display()),
            Endpoint::Tcp { addr, .. } => format!("http://{addr}"),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::PUT, path, Some(serde_json::to_vec(body)?))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None)
    }

    fn call<T: DeserializeOwned>(&self, m: Method, path: &str, body: Option<Vec<u8>>) -> Result<T> {
        let (status, bytes) = self.raw(m.clone(), path, body)?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{m} {path}: {status}: {msg}");
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{m} {path}: the answer is not the JSON expected"))
    }

    /// One request; the status and body as they came.
    pub fn raw(&self, m: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes)> {
        let ep = self.ep.clone();
        let path = path.to_string();
        self.rt.block_on(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, send(&ep, m, &path, body))
                .await
                .map_err(|_| anyhow!("no answer from the control API within {REQUEST_TIMEOUT:?}"))?
        })
    }
}

async fn send(
    ep: &Endpoint,
    m: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes)> {
    let mut req = Request::builder()
        .method(m)
        .uri(path)
        .header(header::HOST, "warpdrive")
        .header(header::CONTENT_TYPE, "application/json");
    let resp = match ep {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .with_context(|| format!("connecting to {}", p.display()))?;
            let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            exchange(TokioIo::new(s), req).await?
        }
        Endpoint::Tcp { addr, token } => {
            let s = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
            let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            exchange(TokioIo::new(s), req).await?
        }
    };
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

async fn exchange<I, B>(io: I, req: Request<B>) -> Result<hyper::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the control API")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .context("request to the control API")
}

/// Forwards one request to the daemon's socket at `socket` and hands back its answer (for
/// `warpdrive-ctl serve` beside a running daemon).
pub async fn forward(socket: &Path, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut out = Request::from_parts(parts, body);
    out.headers_mut().remove(header::AUTHORIZATION);
    let r = async {
        let s = tokio::net::UnixStream::connect(socket).await?;
        anyhow::Ok(exchange(TokioIo::new(s), out).await?)
    }
    .await;
    match r {
        Ok(resp) => resp.map(Body::new).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(ApiError {
                error: format!("the daemon's control socket does not answer: {e:#}"),
            }),
        )
            .into_response(),
    }
}
