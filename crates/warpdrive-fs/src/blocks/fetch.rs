//! The fetch machinery: one task per GET streams its body, hands each block to its readers
//! as soon as the block is whole, and lands it.
//!
//! A task owns a [`Run`]: one reply channel per block, in order, and the run's share of the
//! prefetch budget. Each arriving block is cut from the stream (one allocation per block,
//! or none when a chunk holds it whole) and landed: kept in memory for its reader if it was
//! prefetched (holding its permit), sent to its readers, then written to the cache on a
//! blocking thread, and only then taken out of the in-flight table, so a later reader finds
//! it in flight or in the cache, never neither. At most [`WRITES_BEHIND`] writes of a run
//! go on beside the download; past that the download waits for the oldest.
//!
//! A GET that fails, comes up short or returns more than it asked is abandoned: every block
//! not yet handed out gets the error, leaves the table and gives its permit back, so no
//! reader waits for a block that will not come and no budget leaks.
//!
//! With the fleet tier ([`warpdrive_fleet`]), a run of an object the tier serves is fetched
//! chunk by chunk: each chunk holding blocks of the run is asked of the tier first (a hit is
//! verified before any of it is used), and on a miss fetched whole from the origin, streamed
//! (each block handed out as it completes) and kept, then written to the tier in the
//! background. Either way every block of the chunk is kept: the run's are landed as above,
//! the others written to the local cache unless they are there or in flight already, so a
//! chunk read once is local from then on.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use warpdrive_cache::BlockIndex;
use warpdrive_store::StoreError;

use super::{BlockReader, ChunkFlight, FetchResult, Object, SharedFetch};
use crate::flight::Flight;

/// Cache writes one GET may have going while its download goes on.
const WRITES_BEHIND: usize = 4;

/// The state of one GET's task.
struct Run {
    first: u64,
    /// The next block to arrive.
    next: u64,
    last: u64,
    /// One per block not yet handed out, in order.
    senders: std::vec::IntoIter<tokio::sync::oneshot::Sender<FetchResult>>,
    /// The prefetch budget still held: one permit per block not yet done.
    permit: Option<OwnedSemaphorePermit>,
}

/// A ranged GET of `o` that returned more than the `asked` bytes.
fn too_long(o: &Object, asked: u64) -> Arc<StoreError> {
    Arc::new(StoreError::Other {
        backend: o.backend.name().to_string(),
        message: format!(
            "a ranged GET of {} returned more bytes than asked ({asked})",
            o.id.key
        ),
    })
}

/// A ranged GET of `o` whose body ended after `got` of the `asked` bytes.
fn short(o: &Object, asked: u64, got: u64) -> Arc<StoreError> {
    Arc::new(StoreError::ShortRead {
        backend: o.backend.name().to_string(),
        key: o.id.key.clone(),
        asked,
        got,
    })
}

impl BlockReader {
    /// Starts the task fetching blocks `first..=last` of `obj` with one GET; returns one
    /// fetch per block, each resolving as soon as its block has arrived.
    pub(super) fn spawn_fetch(
        self: &Arc<Self>,
        obj: &Object,
        first: u64,
        last: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Vec<Flight<SharedFetch>> {
        let range = first * self.block_size..((last + 1) * self.block_size).min(obj.size);
        if permit.is_some() {
            warpdrive_metrics::shift(
                &self.stats.prefetch_in_flight_bytes,
                (range.end - range.start) as i64,
            );
        }
        let mut senders = Vec::new();
        let mut fetches = Vec::new();
        for _ in first..=last {
            let (tx, rx) = tokio::sync::oneshot::channel::<FetchResult>();
            senders.push(tx);
            let fut = async move {
                rx.await.unwrap_or_else(|_| {
                    Err(Arc::new(StoreError::Cancelled {
                        backend: String::new(),
                        message: "the fetch task stopped".into(),
                    }))
                })
            }
            .boxed()
            .shared();
            fetches.push(Flight {
                version: obj.id.clone(),
                first,
                fut,
            });
        }
        let this = self.clone();
        let o = obj.clone();
        tokio::spawn(async move {
            let mut run = Run {
                first,
                next: first,
                last,
                senders: senders.into_iter(),
                permit,
            };
            let tiered = this.tier.get().and_then(|t| {
                let id = t.identity(o.backend.name(), &o.id.key, &o.id.etag, o.size)?;
                Some((t.clone(), id))
            });
            let r = match tiered {
                Some((tier, id)) => this.tier_run(&tier, &id, &o, &mut run).await,
                None => this.stream_run(&o, range, &mut run).await,
            };
            if let Err(e) = r {
                this.abandon(&o, &mut run, e);
            }
        });
        fetches
    }

    /// Streams one GET, handing out and caching each block as soon as it is complete.
    async fn stream_run(
        self: &Arc<Self>,
        o: &Object,
        range: std::ops::Range<u64>,
        run: &mut Run,
    ) -> Result<(), Arc<StoreError>> {
        let asked = range.end - range.start;
        let mut body = o
            .backend
            .get_range_stream(&o.id.key, range, o.if_match())
            .await
            .map_err(Arc::new)?;
        let mut got = 0u64;
        let mut buf = BytesMut::new();
        // Cache writes of this run still going: the download goes on while a few are
        // written (a direct write waits for the disk), and stops for the oldest beyond that.
        let mut writing = std::collections::VecDeque::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(Arc::new)?;
            got += chunk.len() as u64;
            while !chunk.is_empty() {
                if run.next > run.last {
                    return Err(too_long(o, asked));
                }
                let want = self.block_len(o, run.next) as usize;
                let block = if buf.is_empty() && chunk.len() >= want {
                    chunk.split_to(want)
                } else {
                    // One allocation per block, not a doubling series of them.
                    buf.reserve(want - buf.len());
                    let take = (want - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk.split_to(take));
                    if buf.len() < want {
                        continue;
                    }
                    buf.split().freeze()
                };
                if let Some(w) = self.land(o, run, block) {
                    writing.push_back(w);
                }
                if writing.len() > WRITES_BEHIND
                    && let Some(w) = writing.pop_front()
                {
                    let _ = w.await;
                }
            }
        }
        for w in writing {
            let _ = w.await;
        }
        if run.next <= run.last {
            return Err(short(o, asked, got));
        }
        Ok(())
    }

    /// Fetches the run chunk by chunk through the fleet tier (module docs).
    async fn tier_run(
        self: &Arc<Self>,
        tier: &Arc<warpdrive_fleet::SharedTier>,
        id: &warpdrive_fleet::Identity,
        o: &Object,
        run: &mut Run,
    ) -> Result<(), Arc<StoreError>> {
        let per_chunk = (tier.chunk_size() / self.block_size).max(1);
        let mut writing = std::collections::VecDeque::new();
        // Every chunk of the run is asked for at once; their blocks are used in order, each
        // as soon as its bytes have arrived (and, from the tier, passed their checksum).
        let flights: Vec<(u64, Arc<ChunkFlight>)> = (run.first / per_chunk..=run.last / per_chunk)
            .map(|c| (c, self.chunk(tier, id, o, c)))
            .collect();
        for (c, flight) in flights {
            let range = id.range(c);
            let mut at = 0u64;
            for b in c * per_chunk.. {
                if range.start + at >= range.end {
                    break;
                }
                let len = self.block_len(o, b);
                let block = flight.read(at as usize..(at + len) as usize).await?;
                self.place(o, run, b, block, &mut writing).await;
                at += len;
            }
        }
        for w in writing {
            let _ = w.await;
        }
        Ok(())
    }

    /// The fetch of chunk `c` of `o`: from the tier, else from the origin (then written to
    /// the tier in the background). One fetch per chunk at a time: runs that need a chunk
    /// being fetched share it, so prefetch and reads overlapping one chunk fetch it once.
    /// The fetch is a task of its own, started here, finished for the others if the run
    /// that started it stops.
    fn chunk(
        self: &Arc<Self>,
        tier: &Arc<warpdrive_fleet::SharedTier>,
        id: &warpdrive_fleet::Identity,
        o: &Object,
        c: u64,
    ) -> Arc<ChunkFlight> {
        let key = ((*o.id).clone(), c);
        let mut chunks = self.chunks.lock();
        if let Some(f) = chunks.get(&key) {
            return f.clone();
        }
        let flight = Arc::new(ChunkFlight::new());
        chunks.insert(key.clone(), flight.clone());
        let (this, tier, id, o, f) = (
            self.clone(),
            tier.clone(),
            id.clone(),
            o.clone(),
            flight.clone(),
        );
        tokio::spawn(async move {
            let r = this.chunk_fill(&tier, &id, &o, c, &f).await;
            this.chunks.lock().remove(&key);
            f.finish(r);
        });
        flight
    }

    /// Fills `flight` with chunk `c`: the tier's checked pieces as they come, and from the
    /// origin what the tier does not have (all of it on a miss, the rest after a refused or
    /// failed piece).
    async fn chunk_fill(
        &self,
        tier: &Arc<warpdrive_fleet::SharedTier>,
        id: &warpdrive_fleet::Identity,
        o: &Object,
        c: u64,
        flight: &ChunkFlight,
    ) -> Result<(), Arc<StoreError>> {
        use warpdrive_fleet::{Fetched, Refusal};
        let range = id.range(c);
        let claim = match tier.fetch(o.backend.name(), id, c).await {
            Fetched::Whole(data) => {
                flight.push(data);
                return Ok(());
            }
            Fetched::Pieces(mut pieces) => loop {
                match pieces.next().await {
                    Some(Ok(piece)) => flight.push(piece),
                    None => return Ok(()),
                    Some(Err(why)) => {
                        // The pieces handed out are right; the rest comes from the origin.
                        let have = flight.len() as u64;
                        drop(pieces);
                        self.origin_into(o, range.start + have..range.end, flight)
                            .await?;
                        if why == Refusal::Invalid {
                            tier.replace(id.clone(), c, flight.whole());
                        }
                        return Ok(());
                    }
                }
            },
            Fetched::Miss(claim) => claim,
        };
        match self.origin_into(o, range, flight).await {
            Ok(()) => {
                tier.fill(id.clone(), c, flight.whole(), claim);
                Ok(())
            }
            Err(e) => {
                if let Some(claim) = claim {
                    tier.release(claim);
                }
                Err(e)
            }
        }
    }

    /// Streams `range` of `o` from the origin into `flight`.
    async fn origin_into(
        &self,
        o: &Object,
        range: std::ops::Range<u64>,
        flight: &ChunkFlight,
    ) -> Result<(), Arc<StoreError>> {
        let asked = range.end - range.start;
        let mut body = o
            .backend
            .get_range_stream(&o.id.key, range, o.if_match())
            .await
            .map_err(Arc::new)?;
        let mut got = 0u64;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(Arc::new)?;
            got += piece.len() as u64;
            if got > asked {
                return Err(too_long(o, asked));
            }
            flight.push(piece);
        }
        if got < asked {
            return Err(short(o, asked, got));
        }
        Ok(())
    }

    /// Block `b` of a chunk has arrived: landed if it is the run's, else written to the
    /// local cache unless it is cached or being fetched already.
    async fn place(
        self: &Arc<Self>,
        o: &Object,
        run: &mut Run,
        b: u64,
        block: Bytes,
        writing: &mut std::collections::VecDeque<tokio::task::JoinHandle<()>>,
    ) {
        if (run.first..=run.last).contains(&b) {
            debug_assert_eq!(b, run.next, "a run's blocks arrive in order");
            if let Some(w) = self.land(o, run, block) {
                writing.push_back(w);
            }
        } else if let Some(cache) = self.cache_for(o).cloned()
            && !cache.has_block(&o.id, BlockIndex(b))
            && !self.flights.busy(o.ino, b)
        {
            let (this, o) = (self.clone(), o.clone());
            writing.push_back(tokio::task::spawn_blocking(move || {
                if let Err(e) = cache.write_block(&o.id, o.size, BlockIndex(b), &block) {
                    this.cache_error(&e);
                } else if cache.is_complete(&o.id) {
                    this.integrity.completed(&cache, &o);
                }
            }));
        }
        if writing.len() > WRITES_BEHIND
            && let Some(w) = writing.pop_front()
        {
            let _ = w.await;
        }
    }

    /// Block `run.next` has arrived: keeps it in memory if it was prefetched, wakes its
    /// readers, and starts writing it to the cache; the write takes it out of the in-flight
    /// table once done (returned, to wait for).
    fn land(
        self: &Arc<Self>,
        o: &Object,
        run: &mut Run,
        block: Bytes,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let b = run.next;
        run.next += 1;
        // A prefetched block waits in memory for its reader, holding its share of the
        // budget, while fewer than `landed_max` do (past that, its reader reads it from the
        // cache). It goes in before the reader can have it (so the reader's later reads find
        // it, or let it go once past it) and before it leaves the in-flight table.
        if run.permit.is_some()
            && let Some(permit) = self.take_permit(o, run, b)
        {
            self.landed
                .hold(o.ino, b, o.id.clone(), block.clone(), permit);
        }
        if let Some(tx) = run.senders.next() {
            let _ = tx.send(Ok(block.clone()));
        }
        debug_assert_eq!(block.len() as u64, self.block_len(o, b));
        let Some(cache) = self.cache_for(o).cloned() else {
            self.flights.done(o.ino, &o.id, run.first, b);
            return None;
        };
        // The block leaves the in-flight table once it is written (or failed to be).
        let (this, o, first) = (self.clone(), o.clone(), run.first);
        Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = cache.write_block(&o.id, o.size, BlockIndex(b), &block) {
                this.cache_error(&e);
            }
            this.flights.done(o.ino, &o.id, first, b);
            if cache.is_complete(&o.id) {
                this.integrity.completed(&cache, &o);
            }
        }))
    }

    /// The GET failed: every block not yet handed out gets the error and leaves the table.
    fn abandon(&self, o: &Object, run: &mut Run, e: Arc<StoreError>) {
        for tx in run.senders.by_ref() {
            let _ = tx.send(Err(e.clone()));
        }
        while run.next <= run.last {
            let b = run.next;
            run.next += 1;
            self.flights.done(o.ino, &o.id, run.first, b);
            // Its permit of the prefetch budget goes back.
            drop(self.take_permit(o, run, b));
        }
    }

    /// A prefetched block is no longer in flight: its permit of the budget, if any.
    fn take_permit(&self, o: &Object, run: &mut Run, b: u64) -> Option<OwnedSemaphorePermit> {
        let p = run.permit.as_mut()?;
        warpdrive_metrics::shift(
            &self.stats.prefetch_in_flight_bytes,
            -(self.block_len(o, b) as i64),
        );
        if p.num_permits() > 1 {
            p.split(1)
        } else {
            run.permit.take()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use warpdrive_cache::{Cache, CacheConfig, ObjectId};
    use warpdrive_metrics::{BackendMetrics, ReadMetrics};
    use warpdrive_store::faulty::{Fault, FaultyStore, Op};
    use warpdrive_store::memory::MemoryStore;
    use warpdrive_store::{Backend, Store};

    use super::*;
    use crate::inode::Ino;

    const BS: u64 = 64 << 10;

    struct Setup {
        mem: Arc<MemoryStore>,
        faulty: Arc<FaultyStore>,
        reader: Arc<BlockReader>,
        obj: Object,
        _dir: tempfile::TempDir,
    }

    /// A reader with a cache of 64 KiB blocks and a prefetch budget of 16 blocks, over
    /// `faulty(mem)` holding one object of `len` bytes.
    fn setup(len: usize) -> Setup {
        let mem = Arc::new(MemoryStore::new("mem"));
        let faulty = Arc::new(FaultyStore::new("mem", mem.clone() as Arc<dyn Store>));
        let config = warpdrive_testkit::local_backend("mem", std::path::Path::new("/nonexistent"));
        let backend = Arc::new(Backend::with_store(
            &config,
            faulty.clone(),
            BackendMetrics::detached("mem"),
        ));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let etag = mem.put("obj", data);
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(CacheConfig {
            dir: dir.path().join("cache"),
            block_size: BS,
        })
        .expect("cache");
        let reader = Arc::new(BlockReader::new(
            Some(Arc::new(cache)),
            BS,
            16 * BS,
            ReadMetrics::default(),
        ));
        let obj = Object {
            ino: Ino(2),
            backend,
            id: Arc::new(ObjectId {
                backend: "mem".into(),
                key: "obj".into(),
                etag,
            }),
            size: len as u64,
        };
        Setup {
            mem,
            faulty,
            reader,
            obj,
            _dir: dir,
        }
    }

    fn expected(b: u64, len: u64) -> Vec<u8> {
        (b * BS..((b + 1) * BS).min(len))
            .map(|i| (i % 251) as u8)
            .collect()
    }

    /// Starts one prefetch run of blocks `0..n` holding `n` permits of the budget.
    fn prefetch_run(s: &Setup, n: u64) -> HashMap<u64, Flight<SharedFetch>> {
        let budget = s.reader.budget.clone().expect("budget");
        let permit = budget
            .try_acquire_many_owned(n as u32)
            .expect("budget free");
        let blocks: Vec<u64> = (0..n).collect();
        let mut started = Vec::new();
        s.reader
            .start_runs(&s.obj, &blocks, None, Some((permit, &mut started)))
    }

    #[tokio::test]
    async fn a_run_hands_out_every_block_lands_it_and_leaves_the_table() {
        let len = 4 * BS + 100;
        let s = setup(len as usize);
        let flights = prefetch_run(&s, 5);
        for b in 0..5 {
            let got = flights[&b].fut.clone().await.expect("block");
            assert_eq!(&got[..], &expected(b, len)[..], "block {b}");
        }
        let cache = s.reader.cache().expect("cache").clone();
        s.reader.flights.settled(s.obj.ino, &[0, 1, 2, 3, 4]).await;
        for b in 0..5 {
            assert!(
                cache.has_block(&s.obj.id, BlockIndex(b)),
                "block {b} cached"
            );
        }
        // One GET for the run; the prefetched blocks wait in memory for their reader, holding
        // their budget, until the reader passes them.
        assert_eq!(s.mem.counts.get().2, 1);
        assert_eq!(s.reader.prefetch_held_bytes(), 5 * BS);
        s.reader.landed.drop_range(s.obj.ino, 0..u64::MAX);
        assert_eq!(s.reader.prefetch_held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_broken_body_fails_the_blocks_not_yet_handed_out_and_returns_their_budget() {
        for fault in [
            Fault::ResetAfter(2 * BS + 10),
            Fault::ShortBody(2 * BS + 10),
        ] {
            let len = 6 * BS;
            let s = setup(len as usize);
            // Every attempt of the GET breaks the same way (retries included).
            s.faulty.script(Op::Get, [fault; 16]);
            let flights = prefetch_run(&s, 6);
            let mut ok = Vec::new();
            for b in 0..6 {
                match flights[&b].fut.clone().await {
                    Ok(got) => {
                        assert_eq!(&got[..], &expected(b, len)[..], "{fault:?} block {b}");
                        ok.push(b);
                    }
                    Err(e) => assert!(
                        matches!(
                            *e,
                            StoreError::ShortRead { .. } | StoreError::Transport { .. }
                        ),
                        "{fault:?} block {b}: {e:?}"
                    ),
                }
            }
            assert_eq!(
                ok,
                vec![0, 1],
                "{fault:?}: the whole blocks before the break"
            );
            s.reader
                .flights
                .settled(s.obj.ino, &[0, 1, 2, 3, 4, 5])
                .await;
            // The failed blocks' permits are back; the two that arrived wait for their reader.
            assert_eq!(s.reader.prefetch_held_bytes(), 2 * BS, "{fault:?}");
            s.reader.landed.drop_range(s.obj.ino, 0..u64::MAX);
            assert_eq!(s.reader.prefetch_held_bytes(), 0, "{fault:?}");
            assert_eq!(
                s.reader.stats.prefetch_in_flight_bytes.get(),
                0,
                "{fault:?}"
            );
            let cache = s.reader.cache().expect("cache").clone();
            assert!(cache.has_block(&s.obj.id, BlockIndex(1)));
            assert!(!cache.has_block(&s.obj.id, BlockIndex(2)));
        }
    }

    /// A chunk's bytes read back across the pieces they arrived in: a range inside one piece
    /// is that piece's slice, one across pieces is joined; a range not yet there waits.
    #[tokio::test]
    async fn ranges_read_back_across_pieces() {
        let f = Arc::new(ChunkFlight::new());
        let all: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        f.push(Bytes::copy_from_slice(&all[..1000]));
        f.push(Bytes::copy_from_slice(&all[1000..1500]));
        assert_eq!(f.read(10..900).await.expect("within")[..], all[10..900]);
        assert_eq!(f.read(900..1200).await.expect("across")[..], all[900..1200]);
        let later = tokio::spawn({
            let f = f.clone();
            async move { f.read(1400..2600).await }
        });
        f.push(Bytes::copy_from_slice(&all[1500..3000]));
        assert_eq!(
            later.await.expect("join").expect("waited")[..],
            all[1400..2600]
        );
        assert_eq!(f.whole()[..], all[..]);
        f.finish(Ok(()));
        assert!(
            f.read(2900..3100).await.is_err(),
            "past the end of a finished chunk"
        );
    }
}
