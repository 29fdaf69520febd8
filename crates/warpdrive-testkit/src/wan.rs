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

/// The demo's and the benchmarks' default links: the seed's two regions as seen from a
/// training VM in Canada Central.
///
/// Why these numbers: Azure's published round-trip times put Canada Central ↔ West US 3 at
/// about 60 ms and a storage account in the VM's own region at 1–2 ms. For bandwidth, a
/// storage account's limits (tens of Gbit/s) are far above what one VM's reader gets; what
/// bounds a cold epoch is what the seed measured: 1.58 GB fetched in 33.4 s, about 47 MB/s
/// over both regions together. The caps reproduce that total, with the cross-region link at
/// half the in-region one (long-RTT TCP flows fill less of a path).
pub const CANADA_CENTRAL: Link = Link {
    one_way_delay: Duration::from_millis(1),
    bandwidth: Some(32_000_000),
};

/// See [`CANADA_CENTRAL`].
pub const WEST_US_3: Link = Link {
    one_way_delay: Duration::from_millis(30),
    bandwidth: Some(16_000_000),
};

impl Link {
    /// Parses `DELAY,RATE`: a one-way delay (`30ms`) and a bandwidth in bytes per second with
    /// an optional unit (`16MB/s`, `1GiB/s`, `unlimited`).
    pub fn parse(s: &str) -> Result<Link, String> {
        let (d, r) = s
            .split_once(',')
            .ok_or_else(|| format!("`{s}` is not DELAY,RATE (for example 30ms,16MB/s)"))?;
        let one_way_delay = warpdrive_config::parse_duration(d)?;
        let r = r.trim();
        let bandwidth = if r == "unlimited" {
            None
        } else {
            Some(warpdrive_config::parse_size(r.trim_end_matches("/s"))?)
        };
        Ok(Link {
            one_way_delay,
            bandwidth,
        })
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms each way, ", self.one_way_delay.as_millis())?;
        match self.bandwidth {
            Some(b) => write!(f, "{:.1} MB/s", b as f64 / 1e6),
            None => write!(f, "unlimited"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse() {
        assert_eq!(
            Link::parse("30ms,16MB/s"),
            Ok(Link {
                one_way_delay: Duration::from_millis(30),
                bandwidth: Some(16_000_000)
            })
        );
        assert_eq!(
            Link::parse("1ms, 1.5GiB/s").map(|l| l.bandwidth),
            Ok(Some(1_610_612_736))
        );
        assert_eq!(Link::parse("0s,unlimited").map(|l| l.bandwidth), Ok(None));
        assert!(Link::parse("30ms").is_err());
        assert!(Link::parse("30ms,16XB/s").is_err());
        assert_eq!(WEST_US_3.to_string(), "30 ms each way, 16.0 MB/s");
    }
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
