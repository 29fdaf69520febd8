//! A TCP proxy in front of an emulator: delays responses (for tests that need one slow
//! backend) and counts the requests passing through (for tests that must show what the
//! daemon fetched, seen from outside it).
//!
//! Every time the upstream starts sending after a quiet spell (a new response, roughly), the
//! proxy holds the bytes for `delay` before passing them on; bytes of a response already
//! flowing pass at once. Requests are parsed from the client's stream (request line and
//! headers; the daemon sends no bodies on the read path): every request is counted, and a
//! `GET` with a `Range` header is a data read whose range length is added to
//! [`ProxyStats::range_bytes`]. It runs on its own runtime thread and stops when dropped.
//!
//! Faults: [`DelayProxy::fail_reads`] makes the next ranged `GET`s fail with an HTTP status
//! instead of reaching the emulator (the connection is then closed), to show how the daemon
//! counts and retries them. [`DelayProxy::throttle_for`] answers *every* request with
//! throttling statuses (taking turns among those given, with an optional `Retry-After`) for
//! a while: a store's burst of `SlowDown`/`ServerBusy`. [`DelayProxy::stall_next`] holds the
//! next requests for a while before forwarding them: a first byte that does not come.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upstream silence after which the next bytes count as a new response.
const QUIET: Duration = Duration::from_millis(50);

/// What passed through the proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Every request.
    pub requests: AtomicU64,
    /// `GET` requests with a `Range` header: reads of object data.
    pub ranged_gets: AtomicU64,
    /// Bytes those ranges asked for.
    pub range_bytes: AtomicU64,
    /// Ranged `GET`s still to answer with `fail_status` instead of forwarding.
    pub fail_next: AtomicU64,
    pub fail_status: AtomicU64,
    /// Ranged `GET`s answered with an injected failure.
    pub failed: AtomicU64,
    /// A throttling burst: until when, the statuses to take turns among, `Retry-After`.
    burst: parking_lot::Mutex<Option<Burst>>,
    /// Requests answered by a burst.
    pub throttled: AtomicU64,
    /// Requests still to hold, and for how long (ms).
    pub stall_next: AtomicU64,
    pub stall_ms: AtomicU64,
    /// Requests held by a stall.
    pub stalled: AtomicU64,
    /// Ranged `GET` responses still to damage (one byte of the body flipped).
    pub corrupt_next: AtomicU64,
    /// Responses damaged so far.
    pub corrupted: AtomicU64,
}

#[derive(Debug, Clone)]
struct Burst {
    until: Instant,
    statuses: Vec<u16>,
    retry_after: Option<u64>,
}

/// What the proxy does with one request.
enum Action {
    Forward,
    /// Forward, and flip a byte of the body of its answer.
    ForwardCorrupt,
    Fail(u16, Option<u64>),
    Stall(Duration),
}

impl ProxyStats {
    /// (ranged GETs, bytes they asked for).
    pub fn data_reads(&self) -> (u64, u64) {
        (
            self.ranged_gets.load(Ordering::Relaxed),
            self.range_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy on 127.0.0.1.
#[derive(Debug)]
pub struct DelayProxy {
    pub port: u16,
    pub stats: Arc<ProxyStats>,
    rt: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Proxies a free loopback port to 127.0.0.1:`upstream`, delaying each response by `delay`.
    pub fn start(upstream: u16, delay: Duration) -> Result<DelayProxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("binding proxy")?;
        let port = listener.local_addr()?.port();
        let target: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let stats = Arc::new(ProxyStats::default());
        let st = stats.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = relay(client, server, delay, st).await;
                    }
                });
            }
        });
        Ok(DelayProxy {
            port,
            stats,
            rt: Some(rt),
        })
    }

    /// A proxy that only counts.
    pub fn counting(upstream: u16) -> Result<DelayProxy> {
        DelayProxy::start(upstream, Duration::ZERO)
    }

    /// For `length` from now, answers every request with the `statuses` in turn (and closes
    /// its connection) instead of forwarding it, with `Retry-After: retry_after` if given.
    pub fn throttle_for(&self, length: Duration, statuses: &[u16], retry_after: Option<u64>) {
        *self.stats.burst.lock() = Some(Burst {
            until: Instant::now() + length,
            statuses: statuses.to_vec(),
            retry_after,
        });
    }

    /// Flips one byte in the body of each of the answers to the next `n` ranged `GET`s: data
    /// damaged on its way, which no TCP or HTTP check catches.
    pub fn corrupt_next_bodies(&self, n: u64) {
        self.stats.corrupt_next.store(n, Ordering::Relaxed);
    }

    /// Holds each of the next `n` requests for `length` before forwarding it.
    pub fn stall_next(&self, n: u64, length: Duration) {
        self.stats
            .stall_ms
            .store(length.as_millis() as u64, Ordering::Relaxed);
        self.stats.stall_next.store(n, Ordering::Relaxed);
    }

    /// Answers the next `n` ranged `GET`s with HTTP `status` (and closes their connections)
    /// instead of forwarding them.
    pub fn fail_reads(&self, n: u64, status: u16) {
        self.stats
            .fail_status
            .store(u64::from(status), Ordering::Relaxed);
        self.stats.fail_next.store(n, Ordering::Relaxed);
    }
}

/// An HTTP error response with an empty body.
fn error_response(status: u16, retry_after: Option<u64>) -> String {
    let reason = match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let after = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n{after}Connection: close\r\n\r\n")
}

/// Counts the requests whose headers are complete in `buf`, removing them from it, and says
/// what to do with them: forward, answer with an injected failure, or hold first.
fn count_requests(buf: &mut Vec<u8>, stats: &ProxyStats) -> Action {
    let mut action = Action::Forward;
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end + 4);
        let n = stats.requests.fetch_add(1, Ordering::Relaxed);
        {
            let mut burst = stats.burst.lock();
            match burst.as_ref() {
                Some(b) if Instant::now() < b.until => {
                    stats.throttled.fetch_add(1, Ordering::Relaxed);
                    let status = b.statuses[n as usize % b.statuses.len().max(1)];
                    return Action::Fail(status, b.retry_after);
                }
                Some(_) => *burst = None,
                None => {}
            }
        }
        if stats
            .stall_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            stats.stalled.fetch_add(1, Ordering::Relaxed);
            action = Action::Stall(Duration::from_millis(
                stats.stall_ms.load(Ordering::Relaxed),
            ));
        }
        if !head.starts_with("get ") {
            continue;
        }
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("range:"))
            .and_then(|r| r.trim().strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
            });
        if let Some((a, b)) = range {
            let armed = stats
                .fail_next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if armed {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                return Action::Fail(stats.fail_status.load(Ordering::Relaxed) as u16, None);
            }
            stats.ranged_gets.fetch_add(1, Ordering::Relaxed);
            stats
                .range_bytes
                .fetch_add(b.saturating_sub(a) + 1, Ordering::Relaxed);
            if stats
                .corrupt_next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                action = Action::ForwardCorrupt;
            }
        }
    }
    action
}

/// States of a connection's pending damage: none, waiting for the answer's headers, waiting
/// for the first chunk of its body.
const IDLE: u8 = 0;
const ARMED: u8 = 1;
const IN_BODY: u8 = 2;

async fn relay(
    client: TcpStream,
    server: TcpStream,
    delay: Duration,
    stats: Arc<ProxyStats>,
) -> std::io::Result<()> {
    let (mut cr, cw) = client.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    // Set when a request whose answer is to be damaged was forwarded on this connection; a
    // client sends its next request only after reading the last answer, so the next bytes
    // from upstream start that answer.
    let corrupt = Arc::new(std::sync::atomic::AtomicU8::new(IDLE));
    let corrupt_up = corrupt.clone();
    let stats_down = stats.clone();
    let (mut sr, mut sw) = server.into_split();
    let cw_up = cw.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut pending = Vec::new();
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            pending.extend_from_slice(&buf[..n]);
            match count_requests(&mut pending, &stats) {
                Action::Forward => {}
                Action::ForwardCorrupt => corrupt_up.store(ARMED, Ordering::Relaxed),
                Action::Fail(status, retry_after) => {
                    // Answer in the emulator's place and close both sides.
                    let mut w = cw_up.lock().await;
                    w.write_all(error_response(status, retry_after).as_bytes())
                        .await?;
                    w.shutdown().await?;
                    sw.shutdown().await?;
                    return Ok(());
                }
                Action::Stall(d) => tokio::time::sleep(d).await,
            }
            // A body (never sent on the read path) must not grow the buffer without bound.
            if pending.len() > 1 << 20 {
                pending.clear();
            }
            sw.write_all(&buf[..n]).await?;
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut last = Instant::now() - QUIET * 2;
    loop {
        let n = sr.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if !delay.is_zero() && last.elapsed() >= QUIET {
            tokio::time::sleep(delay).await;
        }
        // The damage goes a few bytes into the body: in this chunk if the headers end in
        // it with body after them, else at the start of the next chunk.
        let at = match corrupt.load(Ordering::Relaxed) {
            ARMED if buf[..n].starts_with(b"HTTP/") => {
                match buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) if end + 4 + 10 < n => Some(end + 4 + 10),
                    Some(_) => {
                        corrupt.store(IN_BODY, Ordering::Relaxed);
                        None
                    }
                    None => None,
                }
            }
            IN_BODY => Some(0),
            _ => None,
        };
        if let Some(at) = at {
            buf[at] ^= 0x20;
            corrupt.store(IDLE, Ordering::Relaxed);
            stats_down.corrupted.fetch_add(1, Ordering::Relaxed);
        }
        cw.lock().await.write_all(&buf[..n]).await?;
        last = Instant::now();
    }
    up.abort();
    Ok(())
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
