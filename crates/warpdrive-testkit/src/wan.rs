//! The WAN simulator: a TCP proxy in front of a local emulator that makes it cost what a
//! store in another region costs: every byte is held for a one-way delay in each direction,
//! and what flows back is capped by a token bucket shared by every connection through the
//! proxy (one link per "region").
//!
//! Each direction of each connection is a reader that timestamps the chunks it receives and a
//! writer that releases each chunk once its delay has passed and, towards the client, once the
//! bucket holds enough tokens. Chunks are at most [`CHUNK`] bytes, so the cap is smooth.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest piece of data moved at once.
const CHUNK: usize = 16 << 10;

/// A simulated link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Added to every byte in each direction (a round trip costs twice this).
    pub one_way_delay: Duration,
    /// Bytes per second from the store to the client, shared by all connections; `None` is
    /// unlimited.
    pub bandwidth: Option<u64>,
}

/// A token bucket: `rate` bytes a second, holding at most a tenth of a second of burst.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate as f64;
        Bucket {
            rate,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Waits until `n` bytes may pass.
    async fn take(&self, n: usize) {
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let burst = self.rate / 10.0;
                st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * self.rate)
                    .min(burst.max(n as f64));
                st.1 = now;
                if st.0 >= n as f64 {
                    st.0 -= n as f64;
                    return;
                }
                Duration::from_secs_f64((n as f64 - st.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A running WAN proxy on 127.0.0.1.
#[derive(Debug)]
pub struct WanProxy {
    pub port: u16,
    pub link: Link,
    rt: Option<tokio::runtime::Runtime>,
}

impl WanProxy {
    /// Proxies a free loopback port to 127.0.0.1:`upstream` over `link`.
    pub fn start(upstream: u16, link: Link) -> Result<WanProxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("WAN proxy runtime")?;
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("binding the WAN proxy")?;
        let port = listener.local_addr()?.port();
        let target: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let bucket = link.bandwidth.map(|b| Arc::new(Bucket::new(b.max(1))));
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let bucket = bucket.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let up = tokio::spawn(pipe(cr, sw, link.one_way_delay, None));
                        pipe(sr, cw, link.one_way_delay, bucket).await;
                        up.abort();
                    }
                });
            }
        });
        Ok(WanProxy {
            port,
            link,
            rt: Some(rt),
        })
    }
}

/// Moves bytes from `from` to `to`, each held for `delay` and, with a bucket, paid for.
async fn pipe(
    mut from: impl AsyncReadExt + Unpin + Send + 'static,
    mut to: impl AsyncWriteExt + Unpin,
    delay: Duration,
    bucket: Option<Arc<Bucket>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due.into()).await;
        if let Some(b) = &bucket {
            b.take(chunk.len()).await;
        }
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

impl Drop for WanProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
