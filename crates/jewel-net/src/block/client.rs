//! The block client: requests to peers (put, send, get a verified range, has, lease,
//! prove), each with a per-peer permit, connect-then-open, an answer timeout and retries of
//! transport failures.

use jewel_store::sync::Locked;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};

use super::pool::{IdleStreams, PeerPermits};
use super::{
    is_transient, ANSWER_TIMEOUT, ATTEMPTS, BLOCK_PROTOCOL, CONNECT_TIMEOUT, GO_TIMEOUT, MIN_READ_RATE,
    MIN_UPLOAD_RATE, PUT_CHUNK, WRITE_STALL,
};
use crate::error::NetError;
use crate::swarm::NetHandle;
use crate::wire::{self, Request, WireError};
use jewel_store::store::{decode_fragment, room, FragmentDecoder, FragmentError, Want, CHUNK_GROUP_SIZE};
use jewel_store::BlockId;

/// Wait before the second attempt (twice that before the third).
const RETRY_BACKOFF: Duration = Duration::from_millis(20);
/// Attempts of a request a holder answers busy, and the first wait (doubling) between them:
/// about 3 s in all.
const BUSY_ATTEMPTS: usize = 5;
const BUSY_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a holder refused because it was at its limits (a request worth asking again).
fn is_busy(e: &NetError) -> bool {
    matches!(e, NetError::Wire(WireError::Refused { status: crate::wire::Status::Busy, .. }))
}

/// How long to wait before asking again after attempt `attempt` failed with `e`, or `None`
/// to give up: transport failures are retried soon, a busy holder later (its permits are
/// held by uploads that take a while), each a few times.
fn retry_wait(e: &NetError, attempt: usize) -> Option<Duration> {
    if attempt < ATTEMPTS && is_transient(e) {
        // A stream dropped under a burst of others is likely to be dropped again at once.
        Some(RETRY_BACKOFF * attempt as u32)
    } else if attempt < BUSY_ATTEMPTS && is_busy(e) {
        Some(BUSY_BACKOFF * (1u32 << attempt.min(6)))
    } else {
        None
    }
}

/// Asks peers for blocks. Cloneable: clones share the pool of idle streams and the per-peer
/// limits. It reaches peers through a [`NetHandle`] and opens streams with libp2p-stream.
#[derive(Clone)]
pub struct BlockClient {
    net: NetHandle,
    control: libp2p_stream::Control,
    idle: Arc<Mutex<IdleStreams>>,
    permits: Arc<PeerPermits>,
    /// Block-protocol streams this node has opened.
    opened: Arc<AtomicU64>,
    /// Each peer's transfer rate, measured on recent transfers.
    rates: Arc<Rates>,
}

/// Transfers shorter than this measure latency more than bandwidth: not counted.
const RATE_MIN_BYTES: u64 = 64 << 10;
/// Peers whose rate is kept, at most (past it, all are forgotten and measured anew).
const MAX_RATES: usize = 4096;

/// Each peer's transfer rate in bytes per second: a moving average (weight 0.3 for the
/// newest) of the transfers of at least [`RATE_MIN_BYTES`] to and from it, each timed whole.
#[derive(Debug, Default)]
struct Rates(Mutex<HashMap<PeerId, f64>>);

impl Rates {
    fn note(&self, peer: PeerId, bytes: u64, took: std::time::Duration) {
        if bytes < RATE_MIN_BYTES || took.is_zero() {
            return;
        }
        let sample = bytes as f64 / took.as_secs_f64();
        let mut m = self.0.locked();
        if m.len() >= MAX_RATES && !m.contains_key(&peer) {
            m.clear();
        }
        let r = m.entry(peer).or_insert(sample);
        *r = 0.7 * *r + 0.3 * sample;
    }

    fn get(&self, peer: &PeerId) -> Option<f64> {
        self.0.locked().get(peer).copied()
    }
}

/// A put's outcome from the peer's final status and our own writes. A peer that gives up
/// mid-way answers at once and stops reading: its reason is worth more than our broken write.
fn final_status(status: Result<(), WireError>, sent: std::io::Result<()>) -> Result<(), NetError> {
    match (status, sent) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(refused @ WireError::Refused { .. }), _) => Err(refused.into()),
        (_, Err(e)) => Err(WireError::Io(e).into()),
        (Err(e), Ok(())) => Err(e.into()),
    }
}

/// Where a get writes a fragment's verified bytes.
enum Sink<'a> {
    /// A reused buffer, written from an offset; it grows if it is shorter.
    Grow(&'a mut Vec<u8>),
    /// A place of exactly the range's length. A chunk group that would run past its end
    /// (only part of it is in the range) is read into `spill`, and what is kept copied.
    Fixed { out: &'a mut [u8], spill: Vec<u8>, spilled: bool },
}

impl Sink<'_> {
    /// Room for a chunk group of `n` bytes whose kept bytes go to `at`.
    fn room(&mut self, at: usize, n: usize) -> &mut [u8] {
        match self {
            Sink::Grow(out) => room(out, at, n),
            Sink::Fixed { out, spill, spilled } => {
                *spilled = at.checked_add(n).is_none_or(|end| end > out.len());
                if *spilled {
                    room(spill, 0, n)
                } else {
                    &mut out[at..at + n]
                }
            }
        }
    }

    /// The group's first `kept` bytes (after `FragmentDecoder::leaf`) belong at `at`.
    fn settle(&mut self, at: usize, kept: usize) -> Result<(), FragmentError> {
        if let Sink::Fixed { out, spill, spilled: true } = self {
            let place = at.checked_add(kept).and_then(|end| out.get_mut(at..end));
            let (Some(place), Some(kept)) = (place, spill.get(..kept)) else {
                return Err(FragmentError::Trailing(kept));
            };
            place.copy_from_slice(kept);
        }
        Ok(())
    }
}

impl BlockClient {
    /// A client over `net`, opening streams through `control`.
    pub(crate) fn new(net: NetHandle, control: libp2p_stream::Control) -> BlockClient {
        BlockClient {
            net,
            control,
            idle: Arc::default(),
            permits: Arc::default(),
            opened: Arc::default(),
            rates: Arc::default(),
        }
    }

    /// The network handle this client reaches peers through.
    /// `peer`'s transfer rate (bytes per second) on recent transfers of 64 KiB or more,
    /// if there were any.
    pub fn rate(&self, peer: &PeerId) -> Option<f64> {
        self.rates.get(peer)
    }

    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    /// A control for opening raw block-protocol streams (tests of malformed frames).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// A stream for a get: one an earlier get to `peer` left idle, else a new one.
    async fn open_for_get(&self, peer: PeerId) -> Result<Stream, NetError> {
        let idle = self.idle.locked().take(peer);
        match idle {
            Some(s) => Ok(s),
            None => self.open(peer).await,
        }
    }

    /// Leaves a stream whose last answer was read to its end idle for the next get.
    fn keep_for_get(&self, peer: PeerId, stream: Stream) {
        self.idle.locked().keep(peer, stream);
    }

    async fn open(&self, peer: PeerId) -> Result<Stream, NetError> {
        // Connect first, through the event loop: libp2p-stream's own dial can wait forever
        // when several streams to an unreachable peer are opened at once.
        match tokio::time::timeout(CONNECT_TIMEOUT, self.net.connect_for_transfer(peer)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(NetError::OpenStream { peer, reason: e.to_string() }),
            Err(_) => {
                return Err(NetError::OpenStream {
                    peer,
                    reason: format!("no connection within {CONNECT_TIMEOUT:?}"),
                })
            }
        }
        let mut control = self.control.clone();
        let stream = control
            .open_stream(peer, BLOCK_PROTOCOL)
            .await
            .map_err(|e| NetError::OpenStream { peer, reason: e.to_string() })?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// How many block-protocol streams this node has opened (gets reuse theirs).
    pub fn streams_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A permit for one request to `peer` (at most [`super::CLIENT_PER_PEER`] at once).
    async fn permit(&self, peer: PeerId) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.acquire(peer).await
    }

    /// Runs `work` for `peer` unless the peer is silent, or turns silent meanwhile (see
    /// [`crate::liveness`]): then it fails at once. A request that times out marks its peer
    /// silent until it answers again, so the next ones do not wait too.
    async fn watched<T>(
        &self,
        peer: PeerId,
        work: impl std::future::Future<Output = Result<T, NetError>>,
    ) -> Result<T, NetError> {
        let live = self.net.liveness();
        if live.is_silent(&peer) {
            return Err(NetError::Silent { peer });
        }
        // While the request waits, its peer is probed (see `crate::liveness`): a frozen
        // peer is found within seconds whether or not it was pinged lately.
        let probing = async {
            loop {
                tokio::time::sleep(crate::liveness::PROBE_AFTER).await;
                if live.probe_due(peer) {
                    live.probe(self.control.clone(), peer).await;
                }
            }
        };
        let r = tokio::select! {
            r = work => r,
            _ = live.until_silent(peer) => Err(NetError::Silent { peer }),
            () = probing => Err(NetError::Silent { peer }),
        };
        if matches!(r, Err(NetError::Unresponsive { .. })) {
            live.mark_silent(peer);
        }
        r
    }

    /// Runs a request with a per-peer permit, retrying transport failures a few times; a
    /// silent peer fails it at once.
    async fn request<T, F, Fut>(&self, peer: PeerId, f: F) -> Result<T, NetError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        self.watched(peer, self.request_unwatched(peer, ANSWER_TIMEOUT, f)).await
    }

    /// [`Self::request`] with `limit` for each attempt instead of [`ANSWER_TIMEOUT`].
    async fn request_within<T, F, Fut>(&self, peer: PeerId, limit: Duration, f: F) -> Result<T, NetError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        self.watched(peer, self.request_unwatched(peer, limit, f)).await
    }

    async fn request_unwatched<T, F, Fut>(
        &self,
        peer: PeerId,
        limit: Duration,
        mut f: F,
    ) -> Result<T, NetError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        let _permit = self.permit(peer).await;
        let mut attempt = 1;
        loop {
            // A peer that accepted the stream but never answers must not hold us forever.
            let answer = match tokio::time::timeout(limit, f()).await {
                Ok(r) => r,
                Err(_) => Err(NetError::Unresponsive { peer, waited: limit }),
            };
            match answer {
                Err(e) => match retry_wait(&e, attempt) {
                    Some(wait) => {
                        tracing::debug!(%peer, attempt, error = %e, "asking again");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// Reads `len` bytes at `offset` of block `id` (of `size` bytes) from `peer`, verified
    /// against the id: a lying peer gets an error, never into the output.
    pub async fn get_range(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, NetError> {
        let mut out = Vec::new();
        self.get_range_into(peer, id, size, (offset, len), &mut out, 0).await?;
        out.truncate(
            usize::try_from(len)
                .map_err(|_| NetError::Fragment { peer, source: FragmentError::Truncated })?,
        );
        Ok(out)
    }

    /// Like [`NetHandle::get_range`], writing the verified bytes to `out[at..at + len]`.
    /// `out` is a reused buffer: it grows if it is shorter, and bytes past `at + len` may
    /// hold anything (the caller truncates). On error `out[at..]` holds nothing verified.
    /// A verification failure is not retried.
    pub async fn get_range_into(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        range: (u64, u64),
        out: &mut Vec<u8>,
        at: usize,
    ) -> Result<(), NetError> {
        self.get_range_to(peer, id, size, range, Sink::Grow(out), at).await
    }

    /// Like [`NetHandle::get_range`], writing the verified bytes to `out`, which must be
    /// exactly the range's length (a caller's place in a larger buffer, say). Nothing
    /// outside `out` is touched. On error `out` holds nothing verified.
    pub async fn get_range_into_slice(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        range: (u64, u64),
        out: &mut [u8],
    ) -> Result<(), NetError> {
        if out.len() as u64 != range.1 {
            return Err(NetError::Fragment { peer, source: FragmentError::Truncated });
        }
        let sink = Sink::Fixed { out, spill: Vec::new(), spilled: false };
        self.get_range_to(peer, id, size, range, sink, 0).await
    }

    async fn get_range_to(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        range: (u64, u64),
        sink: Sink<'_>,
        at: usize,
    ) -> Result<(), NetError> {
        // Each attempt borrows the sink anew (through an uncontended lock, since `request`
        // makes a fresh future per attempt) and writes from `at` again.
        let shared = tokio::sync::Mutex::new(sink);
        let started = std::time::Instant::now();
        // A holder on a slow uplink has time to send the range: its length at MIN_READ_RATE.
        let limit = ANSWER_TIMEOUT + Duration::from_secs_f64(range.1 as f64 / MIN_READ_RATE as f64);
        let got = self
            .request_within(peer, limit, || async {
                let mut sink = shared.lock().await;
                self.fragment_once(peer, id, size, range, &mut sink, at).await
            })
            .await;
        if got.is_ok() {
            self.rates.note(peer, range.1, started.elapsed());
        }
        got
    }

    /// The size of block `id` on `peer`, verified: the peer proves its first chunk group
    /// against the id for the size it claims.
    pub async fn block_size(&self, peer: PeerId, id: BlockId) -> Result<u64, NetError> {
        Ok(self.block_head(peer, id).await?.0)
    }

    /// The size of block `id` on `peer` and its first chunk group (16 KiB, or the whole
    /// block if it is smaller), verified against the id: one round trip.
    pub async fn block_head(&self, peer: PeerId, id: BlockId) -> Result<(u64, Vec<u8>), NetError> {
        self.request(peer, || self.block_head_once(peer, id)).await
    }

    /// Asks `peer` to prove it holds block `id` (of `size` bytes) by sending chunk group
    /// `group` with its proof; verifies the answer. Returns the bytes the proof moved.
    pub async fn prove(&self, peer: PeerId, id: BlockId, size: u64, group: u64) -> Result<usize, NetError> {
        self.request(peer, || self.prove_once(peer, id, size, group)).await
    }

    async fn put_stream<F, Fut>(&self, peer: PeerId, id: BlockId, size: u64, chunk: F) -> Result<(), NetError>
    where
        F: FnMut(u64, usize) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, NetError>>,
    {
        let started = std::time::Instant::now();
        let sent = self.watched(peer, self.put_stream_unwatched(peer, id, size, chunk)).await;
        if sent.is_ok() {
            self.rates.note(peer, size, started.elapsed());
        }
        sent
    }

    async fn put_stream_unwatched<F, Fut>(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        mut chunk: F,
    ) -> Result<(), NetError>
    where
        F: FnMut(u64, usize) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, NetError>>,
    {
        let _permit = self.permit(peer).await;
        let deadline = ANSWER_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_RATE);
        let mut attempt = 1;
        loop {
            let sent = match tokio::time::timeout(deadline, self.put_stream_once(peer, id, size, &mut chunk))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(NetError::Unresponsive { peer, waited: deadline }),
            };
            match sent {
                Err(e) => match retry_wait(&e, attempt) {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// Sends a whole block to `peer`, which verifies it against `id` before storing it.
    pub async fn put_block(&self, peer: PeerId, id: BlockId, data: &[u8]) -> Result<(), NetError> {
        self.put_stream(peer, id, data.len() as u64, |off, n| {
            let chunk = data.get(off as usize..off as usize + n).map(<[u8]>::to_vec);
            std::future::ready(chunk.ok_or(NetError::Closed))
        })
        .await
    }

    /// Sends a stored block to `peer`, reading it chunk by chunk (verified) from `reader`.
    pub async fn put_block_from(
        &self,
        peer: PeerId,
        reader: Arc<dyn jewel_store::store::BlockReader>,
    ) -> Result<(), NetError> {
        let (id, size) = (reader.id(), reader.len());
        self.put_stream(peer, id, size, |off, n| {
            let reader = reader.clone();
            async move {
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    reader.read_at(off, &mut buf).map(|()| buf)
                });
                match read.await {
                    Ok(r) => Ok(r?),
                    Err(_) => Err(NetError::Closed),
                }
            }
        })
        .await
    }

    /// Streams a block whose id is known only at its end to `peer`, which stores it after
    /// checking the data against that id. `chunks` yields the data, then one empty chunk
    /// that says it is complete: a channel that closes without it (the writer failed, or
    /// was dropped) ends the upload with nothing committed, never a truncated block that
    /// hashes to its own id. The data is hashed on the way
    /// and, after a failure, still drained and hashed, so the id is always returned, with
    /// whether the peer stored the block. `max_size` bounds the block (the peer refuses at
    /// once if it cannot take that much).
    pub async fn send_block(
        &self,
        peer: PeerId,
        max_size: u64,
        mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> (BlockId, Result<(), NetError>) {
        let mut hasher = blake3::Hasher::new();
        let sending = async {
            let _permit = self.permit(peer).await;
            let mut attempt = 1;
            loop {
                let sent = self.send_block_once(peer, max_size, &mut chunks, &mut hasher).await;
                // A busy holder refuses before any data is taken: the same data can go to it
                // a little later.
                match &sent {
                    Err(e) if is_busy(e) && attempt < BUSY_ATTEMPTS => {
                        tokio::time::sleep(BUSY_BACKOFF * (1u32 << attempt)).await;
                        attempt += 1;
                    }
                    _ => break sent,
                }
            }
        };
        let started = std::time::Instant::now();
        let result = self.watched(peer, sending).await;
        if result.is_ok() {
            self.rates.note(peer, hasher.count(), started.elapsed());
        }
        while let Some(chunk) = chunks.recv().await {
            hasher.update(&chunk);
        }
        (BlockId::from(hasher.finalize()), result)
    }

    async fn send_block_once(
        &self,
        peer: PeerId,
        max_size: u64,
        chunks: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
        hasher: &mut blake3::Hasher,
    ) -> Result<(), NetError> {
        let mut s = self.open(peer).await?;
        s.write_all(&Request::Send { max_size }.encode()).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        // A frozen holder never says go: the piece goes elsewhere after one bounded wait.
        match tokio::time::timeout(GO_TIMEOUT, wire::read_status(&mut s)).await {
            Ok(r) => r?,
            Err(_) => return Err(NetError::Unresponsive { peer, waited: GO_TIMEOUT }),
        }
        let (mut sent, mut complete) = (Ok(()), false);
        while let Some(chunk) = chunks.recv().await {
            if chunk.is_empty() {
                complete = true;
                break;
            }
            hasher.update(&chunk);
            for frame in chunk.chunks(wire::MAX_FRAME as usize) {
                // A peer that stops reading must not hold the put forever.
                sent = match tokio::time::timeout(WRITE_STALL, wire::write_frame(&mut s, frame)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading")),
                };
                if sent.is_err() {
                    break;
                }
            }
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() && !complete {
            // The writer went away before its data was whole: the holder drops what it got
            // when the stream closes without an end.
            return Err(NetError::Closed);
        }
        if sent.is_ok() {
            let id = BlockId::from(hasher.clone().finalize());
            sent = wire::write_end(&mut s, &id).await;
        }
        let status = match tokio::time::timeout(WRITE_STALL, wire::read_status(&mut s)).await {
            Ok(r) => r,
            Err(_) => {
                Err(WireError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no final status")))
            }
        };
        final_status(status, sent)?;
        let _ = s.close().await;
        Ok(())
    }

    async fn put_stream_once<F, Fut>(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        chunk: &mut F,
    ) -> Result<(), NetError>
    where
        F: FnMut(u64, usize) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, NetError>>,
    {
        let mut s = self.open(peer).await?;
        let req = Request::Put { id, size }.encode();
        s.write_all(&req).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        // The peer says go (or why not, e.g. full) before any data is sent.
        wire::read_status(&mut s).await?;
        let mut sent = Ok(());
        let mut off = 0u64;
        while off < size && sent.is_ok() {
            let n = ((size - off) as usize).min(PUT_CHUNK);
            let data = chunk(off, n).await?;
            sent = s.write_all(&data).await;
            off += n as u64;
        }
        if sent.is_ok() {
            sent = s.flush().await;
        }
        final_status(wire::read_status(&mut s).await, sent)?;
        let _ = s.close().await;
        Ok(())
    }

    /// Asks for `len` bytes at `offset` and checks the fragment as it arrives: parents
    /// against the id, each chunk group read from the stream straight into `out` where
    /// its bytes belong, hashed there, and trimmed to the range, so the verified bytes end
    /// at `out[at..at + len]` (see [`NetHandle::get_range_into`]). No buffer holds the
    /// whole encoding.
    async fn fragment_once(
        &self,
        peer: PeerId,
        id: BlockId,
        size: u64,
        (offset, len): (u64, u64),
        out: &mut Sink<'_>,
        at: usize,
    ) -> Result<(), NetError> {
        let fail = |source| NetError::Fragment { peer, source };
        let mut s = self.open_for_get(peer).await?;
        s.write_all(&Request::Get { id, offset, len }.encode()).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        let (their_size, frag_len) = wire::read_fragment_head(&mut s).await?;
        if their_size != size {
            return Err(fail(FragmentError::Truncated));
        }
        let mut dec = FragmentDecoder::new(id.into(), size, offset, len).map_err(fail)?;
        dec.check_len(u64::from(frag_len)).map_err(fail)?;
        let mut end = at;
        loop {
            match dec.want() {
                Want::Pair => {
                    let mut pair = [0u8; 64];
                    s.read_exact(&mut pair).await.map_err(WireError::Io)?;
                    dec.pair(&pair).map_err(fail)?;
                }
                Want::Leaf(n) => {
                    let group = out.room(end, n);
                    s.read_exact(group).await.map_err(WireError::Io)?;
                    let kept = dec.leaf(group).map_err(fail)?;
                    out.settle(end, kept).map_err(fail)?;
                    end += kept;
                }
                Want::Done => break,
            }
        }
        if (end - at) as u64 != len {
            return Err(fail(FragmentError::Truncated));
        }
        self.keep_for_get(peer, s);
        Ok(())
    }

    /// Leases `ids` on `peer` for `file` for `seconds` (0 releases them); returns which of
    /// them the peer holds.
    pub async fn lease(
        &self,
        peer: PeerId,
        file: BlockId,
        seconds: u32,
        ids: &[BlockId],
    ) -> Result<Vec<bool>, NetError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(wire::MAX_HAS) {
            let req = Request::Lease { file, seconds, ids: batch.to_vec() };
            out.extend(self.request(peer, || self.ask_ids(peer, &req, batch.len())).await?);
        }
        Ok(out)
    }

    /// Which of `ids` the peer holds.
    pub async fn has(&self, peer: PeerId, ids: &[BlockId]) -> Result<Vec<bool>, NetError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(wire::MAX_HAS) {
            let req = Request::Has { ids: batch.to_vec() };
            out.extend(self.request(peer, || self.ask_ids(peer, &req, batch.len())).await?);
        }
        Ok(out)
    }

    /// Sends a request about `count` ids (HAS or LEASE) and reads the held-bitmap reply.
    async fn ask_ids(&self, peer: PeerId, req: &Request, count: usize) -> Result<Vec<bool>, NetError> {
        let mut s = self.open(peer).await?;
        s.write_all(&req.encode()).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        let present = wire::read_has(&mut s, count).await?;
        let _ = s.close().await;
        Ok(present)
    }

    async fn block_head_once(&self, peer: PeerId, id: BlockId) -> Result<(u64, Vec<u8>), NetError> {
        let mut s = self.open(peer).await?;
        s.write_all(&Request::Prove { id, group: 0 }.encode()).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        let (size, frag) = wire::read_fragment(&mut s).await?;
        let _ = s.close().await;
        let len = (CHUNK_GROUP_SIZE as u64).min(size);
        let head = decode_fragment(id.into(), size, 0, len, &frag)
            .map_err(|source| NetError::Fragment { peer, source })?;
        Ok((size, head))
    }

    async fn prove_once(&self, peer: PeerId, id: BlockId, size: u64, group: u64) -> Result<usize, NetError> {
        let mut s = self.open(peer).await?;
        s.write_all(&Request::Prove { id, group }.encode()).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        let (their_size, frag) = wire::read_fragment(&mut s).await?;
        let _ = s.close().await;
        let offset = group.saturating_mul(CHUNK_GROUP_SIZE as u64);
        let len = (CHUNK_GROUP_SIZE as u64).min(size.saturating_sub(offset));
        if their_size != size {
            return Err(NetError::Fragment { peer, source: FragmentError::Truncated });
        }
        decode_fragment(id.into(), size, offset, len, &frag)
            .map_err(|source| NetError::Fragment { peer, source })?;
        Ok(frag.len())
    }
}
