//! A store that injects exact faults into another, for the filesystem core's tests.
//!
//! Faults come from a script per operation (the next N lists, heads or gets fail in the given
//! ways, in order) and, optionally, at random: each request fails with probability `rate`,
//! with a fault drawn from the given classes, from a seeded generator so that a failing run
//! can be replayed. A request with no fault goes to the inner store unchanged.
//!
//! The faults are what real stores and networks do: an HTTP-like failure status (500, 503,
//! 429), a timeout, a first-byte stall, a connection reset after N bytes of the body, a body
//! that ends early without an error, and a body of the wrong version (a store or proxy that
//! ignored `If-Match`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::checksum::Known;
use crate::store::{Body, PartFuture, Store, Upload};
use crate::{ListPage, ObjectInfo, Result, StoreError};

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The store answers with this HTTP status (500, 503, 429, ...).
    Status(u16),
    /// No answer within the request's timeout.
    Timeout,
    /// The answer comes after this long (then the request goes through).
    Stall(Duration),
    /// The body breaks (connection reset) after this many bytes.
    ResetAfter(u64),
    /// The body ends after this many bytes, with no error.
    ShortBody(u64),
    /// The body is of the object's current version whatever version was asked for, and
    /// says so in its ETag (a store or proxy that ignored `If-Match`).
    WrongVersion,
}

/// Which request a scripted fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Head,
    Get,
    /// Any write request: a PUT, starting an upload, storing a part, completing an upload.
    Write,
}

#[derive(Debug)]
struct Random {
    rate: f64,
    classes: Vec<Fault>,
    /// xorshift64* state.
    state: u64,
}

impl Random {
    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn draw(&mut self) -> Option<Fault> {
        let p = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        if p >= self.rate || self.classes.is_empty() {
            return None;
        }
        let i = (self.next() % self.classes.len() as u64) as usize;
        Some(self.classes[i])
    }
}

/// Wraps a store and fails its requests as scripted or at random.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

/// The faults to inject, shared by the store and its uploads.
#[derive(Debug)]
struct Faults {
    name: String,
    script: Mutex<[VecDeque<Fault>; 4]>,
    random: Mutex<Option<Random>>,
    /// Faults injected so far.
    injected: Mutex<Vec<(Op, Fault)>>,
}

impl FaultyStore {
    /// `name` is the backend name its errors carry.
    pub fn new(name: &str, inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: Arc::new(Faults {
                name: name.to_string(),
                script: Mutex::new(Default::default()),
                random: Mutex::new(None),
                injected: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The next requests of kind `op` fail with `faults`, in order.
    pub fn script(&self, op: Op, faults: impl IntoIterator<Item = Fault>) {
        self.faults.script.lock()[op as usize].extend(faults);
    }

    /// From now on every request fails with probability `rate`, with a fault drawn from
    /// `classes` by a generator seeded with `seed` (0 is taken as 1).
    pub fn random(&self, seed: u64, rate: f64, classes: &[Fault]) {
        *self.faults.random.lock() = Some(Random {
            rate,
            classes: classes.to_vec(),
            state: seed.max(1),
        });
    }

    /// No more random faults (scripted ones still apply).
    pub fn calm(&self) {
        *self.faults.random.lock() = None;
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<(Op, Fault)> {
        self.faults.injected.lock().clone()
    }

    async fn before(&self, op: Op) -> Result<Option<Fault>> {
        self.faults.before(op).await
    }

    fn error(&self, f: Fault) -> StoreError {
        self.faults.error(f)
    }
}

impl Faults {
    fn next_fault(&self, op: Op) -> Option<Fault> {
        let f = self.script.lock()[op as usize]
            .pop_front()
            .or_else(|| self.random.lock().as_mut().and_then(Random::draw));
        if let Some(f) = f {
            self.injected.lock().push((op, f));
        }
        f
    }

    /// The error a fault that stops the request before any body becomes.
    fn error(&self, f: Fault) -> StoreError {
        match f {
            Fault::Timeout => StoreError::Timeout {
                backend: self.name.clone(),
                after: Duration::from_secs(30),
            },
            Fault::Status(s) => {
                crate::attempts::by_status(s, self.name.clone(), format!("injected HTTP {s}"))
            }
            _ => StoreError::Transport {
                backend: self.name.clone(),
                message: format!("injected {f:?}"),
            },
        }
    }

    /// Applies a fault that precedes the answer; `Ok(Some(f))` for one that shapes the body.
    async fn before(&self, op: Op) -> Result<Option<Fault>> {
        match self.next_fault(op) {
            None => Ok(None),
            Some(Fault::Stall(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(f @ (Fault::Status(_) | Fault::Timeout)) => Err(self.error(f)),
            Some(f) if op != Op::Get => Err(self.error(f)),
            Some(f) => Ok(Some(f)),
        }
    }
}

/// An upload whose requests fail as the store's write faults say.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn Upload>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Upload for FaultyUpload {
    fn part(&mut self, data: Bytes) -> PartFuture {
        let faults = self.faults.clone();
        // A part that fails is never stored (a real store keeps no part whose request failed).
        let fault = faults.next_fault(Op::Write);
        let part = match fault {
            None | Some(Fault::Stall(_)) => Some(self.inner.part(data)),
            Some(_) => None,
        };
        Box::pin(async move {
            match (fault, part) {
                (Some(Fault::Stall(d)), Some(p)) => {
                    tokio::time::sleep(d).await;
                    p.await
                }
                (_, Some(p)) => p.await,
                (Some(f), None) => Err(faults.error(f)),
                (None, None) => unreachable!("a part without a fault is stored"),
            }
        })
    }

    async fn complete(&mut self) -> Result<()> {
        self.faults.before(Op::Write).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

/// Cuts a body after `n` bytes, then ends it (`reset`: with that error).
fn cut(
    stream: crate::store::ByteStream,
    n: u64,
    reset: Option<StoreError>,
) -> crate::store::ByteStream {
    futures::stream::unfold(
        (stream, n, reset, false),
        |(mut s, left, reset, done)| async move {
            if done {
                return None;
            }
            if left == 0 {
                return reset.map(|e| (Err(e), (s, 0, None, true)));
            }
            match s.next().await {
                None => None,
                Some(Err(e)) => Some((Err(e), (s, left, reset, true))),
                Some(Ok(b)) => {
                    let take = (b.len() as u64).min(left);
                    Some((Ok(b.slice(..take as usize)), (s, left - take, reset, false)))
                }
            }
        },
    )
    .boxed()
}

#[async_trait]
impl Store for FaultyStore {
    async fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        self.before(Op::List).await?;
        self.inner.list_page(dir, token, max_keys).await
    }

    async fn any_below(&self, dir: &str) -> Result<bool> {
        self.before(Op::List).await?;
        self.inner.any_below(dir).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.before(Op::Head).await?;
        self.inner.head(key).await
    }

    async fn get(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body> {
        match self.before(Op::Get).await? {
            None => self.inner.get(key, range, etag).await,
            Some(Fault::WrongVersion) => self.inner.get(key, range, None).await,
            Some(Fault::ShortBody(n)) => {
                let b = self.inner.get(key, range, etag).await?;
                Ok(Body {
                    etag: b.etag,
                    stream: cut(b.stream, n, None),
                })
            }
            Some(Fault::ResetAfter(n)) => {
                let b = self.inner.get(key, range, etag).await?;
                let reset = StoreError::Transport {
                    backend: self.faults.name.clone(),
                    message: format!("injected connection reset after {n} bytes"),
                };
                Ok(Body {
                    etag: b.etag,
                    stream: cut(b.stream, n, Some(reset)),
                })
            }
            Some(f) => Err(self.error(f)),
        }
    }

    fn checksum(&self, key: &str, etag: &str) -> Option<Known> {
        self.inner.checksum(key, etag)
    }

    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        self.before(Op::Write).await?;
        self.inner.put(key, data, create_only).await
    }

    async fn upload(&self, key: &str, create_only: bool) -> Result<Box<dyn Upload>> {
        self.before(Op::Write).await?;
        Ok(Box::new(FaultyUpload {
            inner: self.inner.upload(key, create_only).await?,
            faults: self.faults.clone(),
        }))
    }

    async fn copy(&self, from: &str, to: &str, create_only: bool) -> Result<()> {
        self.before(Op::Write).await?;
        self.inner.copy(from, to, create_only).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    async fn read(s: &dyn Store, key: &str, r: Range<u64>, etag: Option<&str>) -> Result<Vec<u8>> {
        let b = s.get(key, r, etag).await?;
        let chunks: Vec<Result<Bytes>> = b.stream.collect().await;
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn scripted_faults_apply_in_order_then_requests_pass() {
        let mem = Arc::new(MemoryStore::new("m"));
        let v1 = mem.put("k", (0..100u8).collect::<Vec<_>>());
        let f = FaultyStore::new("m", mem.clone());
        f.script(
            Op::Get,
            [
                Fault::Status(503),
                Fault::ShortBody(10),
                Fault::ResetAfter(20),
                Fault::WrongVersion,
            ],
        );
        assert!(matches!(
            read(&f, "k", 0..50, Some(&v1)).await,
            Err(StoreError::Throttled { .. })
        ));
        assert_eq!(
            read(&f, "k", 0..50, Some(&v1)).await.expect("short").len(),
            10
        );
        assert!(matches!(
            read(&f, "k", 0..50, Some(&v1)).await,
            Err(StoreError::Transport { .. })
        ));
        let v2 = mem.put("k", vec![7u8; 100]);
        let b = f.get("k", 0..50, Some(&v1)).await.expect("served anyway");
        assert_eq!(
            b.etag.as_deref(),
            Some(v2.as_str()),
            "and says which version"
        );
        assert!(matches!(
            read(&f, "k", 0..50, Some(&v1)).await,
            Err(StoreError::PreconditionFailed { .. })
        ));
        assert_eq!(
            read(&f, "k", 0..50, None).await.expect("clean"),
            vec![7u8; 50]
        );
        assert_eq!(f.injected().len(), 4);
    }

    #[tokio::test]
    async fn random_faults_replay_from_their_seed() {
        let run = |seed| async move {
            let mem = Arc::new(MemoryStore::new("m"));
            mem.put("k", vec![1u8; 10]);
            let f = FaultyStore::new("m", mem);
            f.random(seed, 0.5, &[Fault::Status(500), Fault::Timeout]);
            let mut outcomes = Vec::new();
            for _ in 0..40 {
                outcomes.push(f.head("k").await.is_ok());
            }
            outcomes
        };
        let a = run(7).await;
        assert_eq!(a, run(7).await);
        let failed = a.iter().filter(|ok| !**ok).count();
        assert!(
            (8..=32).contains(&failed),
            "{failed} of 40 failed at rate 0.5"
        );
    }
}
