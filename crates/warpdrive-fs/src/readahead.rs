//! Per-handle read windows: how sequential reads become few large ranged GETs.
//!
//! The kernel sends reads of at most 1 MiB (usually 128 KiB). One GET per read would pay a
//! round trip per 128 KiB, so each open handle keeps a few *windows*: byte ranges being or
//! already fetched, shared by every read that falls inside them (concurrent readers of the
//! same range join one request). A read that continues where the previous one ended, or lands
//! inside a window, is sequential: the next window is twice as large (from
//! [`MIN_SEQ_WINDOW`] up to [`MAX_WINDOW`]) and, once the reader is past the middle of a
//! window, the following window is fetched in the background, so the network stays busy while
//! the reader consumes. Any other read is random: the window resets and exactly the requested
//! range is fetched.
//!
//! Windows live in memory and are dropped with the handle. This is the read path before the
//! block cache: with the cache, prefetched bytes go to the cache disk and share one global
//! budget instead.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use warpdrive_store::StoreError;

/// First window of a sequential reader: 1 MiB is one large kernel read.
pub const MIN_SEQ_WINDOW: u64 = 1 << 20;
/// Largest window. 8 MiB keeps a single stream near the link's bandwidth at 50 ms RTT
/// (8 MiB per round trip is 160 MB/s) while bounding memory per handle to a few windows.
pub const MAX_WINDOW: u64 = 8 << 20;
/// Windows kept per handle: the one being read, the one prefetched, and one behind for
/// reads that arrive slightly out of order.
const MAX_WINDOWS: usize = 3;

type FetchResult = Result<Bytes, Arc<StoreError>>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// Starts a ranged fetch of the object.
pub type Fetcher =
    Arc<dyn Fn(Range<u64>) -> BoxFuture<'static, Result<Bytes, StoreError>> + Send + Sync>;

#[derive(Clone)]
struct Window {
    range: Range<u64>,
    data: SharedFetch,
}

struct State {
    windows: VecDeque<Window>,
    /// Where a sequential reader's next read starts.
    next_offset: u64,
    /// Size of the next sequential window.
    next_size: u64,
}

/// The read windows of one open handle.
pub struct ReadWindows {
    size: u64,
    fetch: Fetcher,
    state: Mutex<State>,
}

impl std::fmt::Debug for ReadWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadWindows")
            .field("size", &self.size)
            .finish()
    }
}

impl ReadWindows {
    /// Windows over an object of `size` bytes, fetched with `fetch`.
    pub fn new(size: u64, fetch: Fetcher) -> ReadWindows {
        ReadWindows {
            size,
            fetch,
            state: Mutex::new(State {
                windows: VecDeque::new(),
                next_offset: 0,
                next_size: MIN_SEQ_WINDOW,
            }),
        }
    }

    fn start(&self, range: Range<u64>) -> Window {
        let fut = (self.fetch)(range.clone())
            .map(|r| r.map_err(Arc::new))
            .boxed()
            .shared();
        Window { range, data: fut }
    }

    /// Finds or starts the window holding `offset`, and the prefetch to start, if any.
    fn window_for(&self, offset: u64, want_end: u64) -> (Window, Option<Window>) {
        let mut st = self.state.lock();
        let found = st
            .windows
            .iter()
            .find(|w| w.range.contains(&offset))
            .cloned();
        let sequential = found.is_some() || offset == st.next_offset;
        let win = match found {
            Some(w) => w,
            None => {
                let len = if sequential {
                    let l = st.next_size;
                    st.next_size = (l * 2).min(MAX_WINDOW);
                    l.max(want_end - offset)
                } else {
                    st.next_size = MIN_SEQ_WINDOW;
                    want_end - offset
                };
                let w = self.start(offset..(offset + len).min(self.size));
                st.windows.push_back(w.clone());
                w
            }
        };
        st.next_offset = want_end.min(win.range.end);
        let mut prefetch = None;
        let mid = win.range.start + (win.range.end - win.range.start) / 2;
        if sequential && want_end > mid && win.range.end < self.size {
            let have_next = st.windows.iter().any(|w| w.range.start == win.range.end);
            if !have_next {
                let len = st.next_size;
                st.next_size = (len * 2).min(MAX_WINDOW);
                let next = self.start(win.range.end..(win.range.end + len).min(self.size));
                st.windows.push_back(next.clone());
                prefetch = Some(next);
            }
        }
        while st.windows.len() > MAX_WINDOWS {
            st.windows.pop_front();
        }
        (win, prefetch)
    }

    /// Reads `len` bytes at `offset` (fewer at end of object).
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, Arc<StoreError>> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let mut out: Option<BytesMut> = None;
        let mut first: Option<Bytes> = None;
        let mut pos = offset;
        while pos < end {
            let (win, prefetch) = self.window_for(pos, end);
            if let Some(p) = prefetch {
                // Drive the prefetch on the runtime; its result waits in the shared future.
                tokio::spawn(p.data.map(|_| ()));
            }
            let data = match win.data.clone().await {
                Ok(d) => d,
                Err(e) => {
                    // Forget the failed window so the next read of this range tries again.
                    self.state.lock().windows.retain(|w| w.range != win.range);
                    return Err(e);
                }
            };
            let from = (pos - win.range.start) as usize;
            let to = ((end.min(win.range.end)) - win.range.start) as usize;
            if to > data.len() {
                return Err(Arc::new(StoreError::Io {
                    backend: String::new(),
                    message: format!("window {:?} returned {} bytes", win.range, data.len()),
                }));
            }
            let piece = data.slice(from..to);
            pos += piece.len() as u64;
            match (&mut out, &first) {
                (None, None) => first = Some(piece),
                (None, Some(f)) => {
                    let mut b = BytesMut::with_capacity((end - offset) as usize);
                    b.extend_from_slice(f);
                    b.extend_from_slice(&piece);
                    out = Some(b);
                }
                (Some(b), _) => b.extend_from_slice(&piece),
            }
        }
        Ok(match out {
            Some(b) => b.freeze(),
            None => first.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn windows(data: Arc<Vec<u8>>, calls: Arc<AtomicUsize>) -> ReadWindows {
        let size = data.len() as u64;
        ReadWindows::new(
            size,
            Arc::new(move |r: Range<u64>| {
                calls.fetch_add(1, Ordering::Relaxed);
                let b = Bytes::copy_from_slice(&data[r.start as usize..r.end as usize]);
                async move { Ok(b) }.boxed()
            }),
        )
    }

    #[tokio::test]
    async fn sequential_reads_use_few_fetches_and_match() {
        let data: Arc<Vec<u8>> = Arc::new((0..20_000_000u32).map(|i| (i % 251) as u8).collect());
        let calls = Arc::new(AtomicUsize::new(0));
        let w = windows(data.clone(), calls.clone());
        let mut off = 0u64;
        while off < data.len() as u64 {
            let got = w.read(off, 131_072).await.expect("read");
            let end = (off as usize + 131_072).min(data.len());
            assert_eq!(&got[..], &data[off as usize..end]);
            off += got.len() as u64;
        }
        let n = calls.load(Ordering::Relaxed);
        assert!(n < 10, "20 MB in 128 KiB reads took {n} fetches");
    }

    #[tokio::test]
    async fn random_reads_match() {
        use rand::{Rng, SeedableRng};
        let data: Arc<Vec<u8>> = Arc::new((0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect());
        let w = windows(data.clone(), Arc::new(AtomicUsize::new(0)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let off = rng.random_range(0..data.len() as u64 + 10);
            let len = rng.random_range(1..300_000u64);
            let got = w.read(off, len).await.expect("read");
            let s = (off as usize).min(data.len());
            let e = (off as usize + len as usize).min(data.len());
            assert_eq!(&got[..], &data[s..e], "off {off} len {len}");
        }
    }
}
