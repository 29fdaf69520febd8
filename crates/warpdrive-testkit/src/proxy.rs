//! A TCP proxy that delays responses, for tests that need one slow backend.
//!
//! Every time the upstream starts sending after a quiet spell (a new response, roughly), the
//! proxy holds the bytes for `delay` before passing them on; bytes of a response already
//! flowing pass at once. It runs on its own runtime thread and stops when dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upstream silence after which the next bytes count as a new response.
const QUIET: Duration = Duration::from_millis(50);

/// A running delaying proxy on 127.0.0.1.
#[derive(Debug)]
pub struct DelayProxy {
    pub port: u16,
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
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = relay(client, server, delay).await;
                    }
                });
            }
        });
        Ok(DelayProxy { port, rt: Some(rt) })
    }
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) -> std::io::Result<()> {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
    let mut buf = vec![0u8; 64 << 10];
    let mut last = Instant::now() - QUIET * 2;
    loop {
        let n = sr.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if last.elapsed() >= QUIET {
            tokio::time::sleep(delay).await;
        }
        cw.write_all(&buf[..n]).await?;
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
