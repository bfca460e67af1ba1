//! The block protocol, `/jewel/block/1.0.0`: serving a store to peers, and asking peers.
//!
//! Server: an inbound stream carries requests one after another, until the asker closes
//! it or sends nothing for [`REQUEST_TIMEOUT`]. A global and a per-peer limit bound
//! concurrent requests (over the limit: `Busy`), and [`MAX_STREAMS`] bounds open streams.
//! A put is streamed into the store, which checks the hash before it commits; gets and
//! proofs are served as verified fragments. Store work runs on the blocking pool, never on
//! the event loop.
//!
//! Client: `put_block`, `get_range` (verified against the id before it is returned),
//! `has`, and `prove` (a random-fragment storage proof). A get that ends cleanly leaves its
//! stream idle for the next get to the same peer: opening a stream costs a trip through the
//! event loop, a yamux open and a protocol negotiation, per 400 KiB read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::Semaphore;

use crate::announce::Announcer;
use crate::swarm::{NetError, NetHandle};
use crate::wire::{self, Request, Status, WireError};
use jewel::lease::{Lease, LeaseBook};
use jewel::pool::Pool;
use jewel::store::{
    decode_fragment, room, BlockStore, FragmentDecoder, FragmentError, StoreError, Want, CHUNK_GROUP_SIZE,
};
use jewel::BlockId;

/// The block protocol's name and version.
pub const BLOCK_PROTOCOL: StreamProtocol = StreamProtocol::new("/jewel/block/1.0.0");
/// Requests served at once, over all peers.
pub const MAX_CONCURRENT: usize = 64;
/// Requests served at once for one peer.
pub const MAX_PER_PEER: usize = 8;
/// Streams open at once (serving or waiting for their next request), over all peers.
pub const MAX_STREAMS: usize = 4 * MAX_CONCURRENT;
/// Idle get streams kept per peer by an asker.
const IDLE_PER_PEER: usize = CLIENT_PER_PEER;
/// Peers with idle streams kept by an asker.
const IDLE_PEERS: usize = 1024;
/// An idle stream is reused only this soon (well inside the server's [`REQUEST_TIMEOUT`]).
const IDLE_REUSE: Duration = Duration::from_secs(10);
/// A request header must arrive within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per read while receiving a put.
const PUT_CHUNK: usize = 256 << 10;
/// Requests this node has in flight to one peer at once.
pub const CLIENT_PER_PEER: usize = 2;
/// Attempts for a request that failed in transport (never for a refusal or a bad proof).
pub const ATTEMPTS: usize = 3;
/// How long one attempt of a request may take, from opening the stream to the last byte
/// of the answer (a 16 MiB read at a slow 2 MB/s fits).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the second attempt (twice that before the third).
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Whether a failure was in transport (worth a retry) rather than an answer.
pub fn is_transient(e: &NetError) -> bool {
    matches!(e, NetError::OpenStream { .. } | NetError::Wire(WireError::Io(_)))
}

/// A node-wide limit on the bytes served per second: each reply waits for its turn, so
/// replies leave at most at `rate` bytes per second on average, whatever their number.
pub struct RateLimit {
    rate: f64,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimit {
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimit {
            rate: bytes_per_second.max(1) as f64,
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits until `bytes` more may be sent.
    pub async fn wait(&self, bytes: usize) {
        let until = {
            let mut next = self.next.lock().await;
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / self.rate);
            *next
        };
        tokio::time::sleep_until(until).await;
    }
}

/// Serves `store` on the block protocol until the network stops, sending at most
/// `max_upload` bytes per second of replies if given. Spawn it.
pub(crate) async fn serve(
    net: NetHandle,
    store: Arc<dyn BlockStore>,
    leases: Arc<LeaseBook>,
    announcer: Announcer,
    max_upload: Option<u64>,
) -> Result<(), NetError> {
    let limit = max_upload.map(|r| Arc::new(RateLimit::new(r)));
    let mut control = net.control.clone();
    let mut incoming = control
        .accept(BLOCK_PROTOCOL)
        .map_err(|_| NetError::Transport("block protocol already being served".into()))?;
    let fragments = Arc::new(Pool::new(FRAGMENT_BUFFERS));
    let permits = Permits {
        global: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        per_peer: Arc::default(),
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
    };
    while let Some((peer, mut stream)) = incoming.next().await {
        let server = Server {
            store: store.clone(),
            leases: leases.clone(),
            announcer: announcer.clone(),
            peer,
            fragments: fragments.clone(),
        };
        let limit = limit.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            let Ok(_open) = permits.streams.clone().try_acquire_owned() else {
                let _ = wire::write_error(&mut stream, Status::Busy, "too many streams; retry later").await;
                let _ = stream.close().await;
                return;
            };
            session(&mut stream, &server, &permits, limit.as_deref()).await;
            let _ = stream.close().await;
        });
    }
    Ok(())
}

/// The server's limits: requests at once (over all peers and per peer) and open streams.
#[derive(Clone)]
struct Permits {
    global: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<PeerId, Arc<Semaphore>>>>,
    streams: Arc<Semaphore>,
}

impl Permits {
    /// Permits for one request from `peer`, if it is within both limits.
    fn request(
        &self,
        peer: PeerId,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit)> {
        let peer_sem = match self.per_peer.lock() {
            Ok(mut m) => {
                // Forget idle peers so the map stays bounded by the active ones.
                if m.len() > 4 * MAX_CONCURRENT {
                    m.retain(|_, s| s.available_permits() < MAX_PER_PEER);
                }
                m.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_PEER))).clone()
            }
            Err(_) => Arc::new(Semaphore::new(MAX_PER_PEER)),
        };
        self.global.clone().try_acquire_owned().ok().zip(peer_sem.try_acquire_owned().ok())
    }
}

/// Serves the requests on one stream, one after another, until the asker closes it, sends
/// nothing for [`REQUEST_TIMEOUT`], or a request fails. Permits are held per request, so
/// an idle stream holds none.
async fn session(stream: &mut Stream, server: &Server, permits: &Permits, limit: Option<&RateLimit>) {
    loop {
        let req = match tokio::time::timeout(REQUEST_TIMEOUT, Request::read(stream)).await {
            // Quiet for too long, or closed (the normal end between requests).
            Err(_) | Ok(Err(WireError::Io(_))) => return,
            Ok(Err(WireError::UnsupportedVersion(v))) => {
                let reason = format!("version {v} is not supported; this peer speaks {}", wire::VERSION);
                let _ = wire::write_error(stream, Status::UnsupportedVersion, &reason).await;
                return;
            }
            Ok(Err(e)) => {
                let _ = wire::write_error(stream, Status::BadRequest, &e.to_string()).await;
                return;
            }
            Ok(Ok(r)) => r,
        };
        let Some(_permits) = permits.request(server.peer) else {
            let _ = wire::write_error(stream, Status::Busy, "too many requests; retry later").await;
            return;
        };
        if let Err(e) = handle(req, stream, server, limit).await {
            tracing::debug!(peer = %server.peer, error = %e, "block request failed");
            return;
        }
    }
}

/// What one request is served with: the store, its leases, who asks, and the fragment
/// buffers shared by all requests.
struct Server {
    store: Arc<dyn BlockStore>,
    leases: Arc<LeaseBook>,
    announcer: Announcer,
    peer: PeerId,
    fragments: Arc<Pool<Vec<u8>>>,
}

/// Fragment buffers kept for reuse: fresh memory costs a page fault per 4 KiB, and zeroing
/// cold memory is several times slower than warm.
const FRAGMENT_BUFFERS: usize = 8;
/// A fragment buffer larger than this is not kept.
const FRAGMENT_BUFFER_MAX: usize = 2 << 20;

/// Receives a put and, once the block is stored, announces it in the DHT: holders announce
/// what they hold (the block book's DHT side).
async fn stored(server: &Server, stream: &mut Stream, incoming: Incoming) -> Result<(), WireError> {
    if let Some(id) = receive(stream, server, incoming).await? {
        server.announcer.stored(id);
    }
    Ok(())
}

fn status_of(e: &StoreError) -> Status {
    match e {
        StoreError::NotFound(_) => Status::NotFound,
        StoreError::Full { .. } | StoreError::DiskFull { .. } => Status::Full,
        StoreError::HashMismatch { .. } => Status::HashMismatch,
        StoreError::Corrupt { .. } => Status::Corrupt,
        StoreError::OutOfRange { .. } => Status::BadRequest,
        _ => Status::Internal,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, (Status, String)> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((status_of(&e), e.to_string())),
        Err(_) => Err((Status::Internal, "internal error".into())),
    }
}

async fn handle(
    req: Request,
    stream: &mut Stream,
    server: &Server,
    limit: Option<&RateLimit>,
) -> Result<(), WireError> {
    let store = server.store.clone();
    match req {
        Request::Put { id, size } => stored(server, stream, Incoming::Sized { id, size }).await,
        Request::Send { max_size } => stored(server, stream, Incoming::Framed { max_size }).await,
        Request::Lease { file, seconds, ids } => {
            let (leases, owner) = (server.leases.clone(), server.peer.to_bytes());
            let r = blocking(move || lease(store.as_ref(), &leases, &owner, file, seconds, &ids)).await;
            match r {
                Ok(held) => Ok(wire::write_has(stream, &held).await?),
                Err((status, reason)) => Ok(wire::write_error(stream, status, &reason).await?),
            }
        }
        Request::Get { id, offset, len } => {
            let mut buf = server.fragments.take();
            // Page-cached blocks are served on this thread: a hand-off to a blocking thread
            // and back costs two thread wake-ups, about 15% of a get's CPU here. Only a
            // read that would wait on the disk goes to a blocking thread.
            let r = match store.reader(&id) {
                Ok(reader) if reader.fragment_cached(offset, len, &mut buf) => Ok((reader.len(), buf)),
                Ok(reader) => {
                    blocking(move || {
                        reader.fragment(offset, len, &mut buf)?;
                        Ok((reader.len(), buf))
                    })
                    .await
                }
                Err(e) => Err((status_of(&e), e.to_string())),
            };
            reply_fragment(stream, r, limit, &server.fragments).await
        }
        Request::Prove { id, group } => {
            let mut buf = server.fragments.take();
            let r = blocking(move || {
                let reader = store.reader(&id)?;
                let size = reader.len();
                let offset = group.saturating_mul(CHUNK_GROUP_SIZE as u64);
                let len = (CHUNK_GROUP_SIZE as u64).min(size.saturating_sub(offset));
                reader.fragment(offset, len, &mut buf)?;
                Ok((size, buf))
            })
            .await;
            reply_fragment(stream, r, limit, &server.fragments).await
        }
        Request::Has { ids } => {
            let r =
                blocking(move || ids.iter().map(|id| store.has(id)).collect::<Result<Vec<bool>, _>>()).await;
            match r {
                Ok(present) => Ok(wire::write_has(stream, &present).await?),
                Err((status, reason)) => Ok(wire::write_error(stream, status, &reason).await?),
            }
        }
    }
}

/// Leases `ids` (those held) to `owner` for `file` for `seconds` from now; 0 releases
/// them, and a released block that no other lease keeps is deleted at once. Returns which
/// ids are held, so a renewal for a block that is gone is reported to the owner.
fn lease(
    store: &dyn BlockStore,
    leases: &LeaseBook,
    owner: &[u8],
    file: BlockId,
    seconds: u32,
    ids: &[BlockId],
) -> Result<Vec<bool>, StoreError> {
    let held = ids.iter().map(|id| store.has(id)).collect::<Result<Vec<bool>, _>>()?;
    let now = jewel::lease::now();
    let expires = if seconds == 0 { 0 } else { now + u64::from(seconds) };
    let mut changes: Vec<Lease> = ids
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(id, _)| Lease { block: *id, file, owner: owner.to_vec(), expires })
        .collect();
    // A lease for a file replaces the owner's first, unassigned one.
    let firsts: Vec<Lease> = changes
        .iter()
        .map(|l| Lease { block: l.block, file: jewel::lease::UNASSIGNED, owner: owner.to_vec(), expires: 0 })
        .collect();
    changes.extend(firsts);
    let unavailable =
        |e: jewel::lease::LeaseError| StoreError::Unavailable { id: file, reason: e.to_string() };
    leases.apply(&changes).map_err(unavailable)?;
    if seconds == 0 {
        for l in &changes {
            if leases.expiry(&l.block).map_err(unavailable)?.is_none_or(|e| e <= now) {
                store.remove(&l.block)?;
                leases.forget(&l.block).map_err(unavailable)?;
            }
        }
    }
    Ok(held)
}

/// Sends a fragment (or the reason there is none), then keeps its buffer for the next.
async fn reply_fragment(
    stream: &mut Stream,
    r: Result<(u64, Vec<u8>), (Status, String)>,
    limit: Option<&RateLimit>,
    buffers: &Pool<Vec<u8>>,
) -> Result<(), WireError> {
    match r {
        Ok((size, frag)) => {
            if let Some(limit) = limit {
                limit.wait(frag.len()).await;
            }
            let sent = wire::write_fragment(stream, size, &frag).await;
            if frag.capacity() <= FRAGMENT_BUFFER_MAX {
                buffers.give(frag);
            }
            Ok(sent?)
        }
        Err((status, reason)) => Ok(wire::write_error(stream, status, &reason).await?),
    }
}

/// How a put's data arrives: a known id and size, then raw bytes (PUT), or frames whose
/// id comes at the end (SEND).
#[derive(Clone, Copy)]
enum Incoming {
    Sized { id: BlockId, size: u64 },
    Framed { max_size: u64 },
}

/// Streams a put's data from the peer into the store, which checks the hash against the
/// id before it commits. Over capacity, the put is refused before any data is read.
/// Returns the id of the block stored, if one was.
async fn receive(
    stream: &mut Stream,
    server: &Server,
    incoming: Incoming,
) -> Result<Option<BlockId>, WireError> {
    let store = server.store.clone();
    let (leases, owner) = (server.leases.clone(), server.peer.to_bytes());
    let most = match incoming {
        Incoming::Sized { size, .. } => size,
        Incoming::Framed { max_size } => max_size,
    };
    let usage = store.usage();
    if let Some(capacity) = usage.capacity {
        if usage.used.saturating_add(most) > capacity {
            let reason =
                format!("store is full: {most} bytes offered, {} free", capacity.saturating_sub(usage.used));
            wire::write_error(stream, Status::Full, &reason).await?;
            return Ok(None);
        }
    }
    // Go ahead: the sender waits for this before sending data.
    wire::write_ok(stream).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    // Written chunks come back for the next frames to be read into.
    let (back_tx, mut back_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (id_tx, id_rx) = tokio::sync::oneshot::channel::<BlockId>();
    let writer = tokio::task::spawn_blocking(move || -> Result<BlockId, StoreError> {
        let mut w = store.writer()?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write(&chunk)?;
            let _ = back_tx.try_send(chunk);
        }
        // No id means the stream broke before its end: nothing is committed.
        let id = id_rx.blocking_recv().map_err(|_| StoreError::Unavailable {
            id: BlockId([0; 32]),
            reason: "the sender stopped before the end".into(),
        })?;
        if w.written() > most || matches!(incoming, Incoming::Sized { size, .. } if w.written() != size) {
            return Err(StoreError::OutOfRange { id, offset: w.written(), len: 0, size: most });
        }
        // Lease before commit, so a collection running meanwhile never sees it unleased.
        let first = Lease {
            block: id,
            file: jewel::lease::UNASSIGNED,
            owner,
            expires: jewel::lease::now() + jewel::lease::INITIAL_LEASE_SECS,
        };
        leases.apply_soon(&[first]).map_err(|e| StoreError::Unavailable { id, reason: e.to_string() })?;
        w.commit(Some(id))
    });
    let received = match incoming {
        Incoming::Sized { id, size } => receive_raw(stream, &tx, size).await.map(|()| id),
        Incoming::Framed { max_size } => receive_frames(stream, &tx, &mut back_rx, max_size).await,
    };
    drop(tx);
    let id = match received {
        Ok(id) => id,
        Err(e) => {
            drop(id_tx);
            let _ = writer.await;
            return match e {
                WireError::Io(e) => Err(WireError::Io(e)),
                e => {
                    Ok(wire::write_error(stream, Status::BadRequest, &e.to_string()).await.map(|()| None)?)
                }
            };
        }
    };
    let _ = id_tx.send(id);
    match writer.await {
        Ok(Ok(id)) => {
            wire::write_ok(stream).await?;
            return Ok(Some(id));
        }
        Ok(Err(StoreError::OutOfRange { offset, .. })) => {
            let reason = format!("{offset} bytes arrived; {most} were announced");
            wire::write_error(stream, Status::BadRequest, &reason).await?
        }
        Ok(Err(e)) => wire::write_error(stream, status_of(&e), &e.to_string()).await?,
        Err(_) => wire::write_error(stream, Status::Internal, "internal error").await?,
    }
    Ok(None)
}

/// Reads exactly `size` raw bytes into `tx` (a PUT). A stream that ends early is an error.
async fn receive_raw(
    stream: &mut Stream,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    size: u64,
) -> Result<(), WireError> {
    let mut remaining = size;
    while remaining > 0 {
        let mut buf = vec![0u8; (remaining as usize).min(PUT_CHUNK)];
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(WireError::Truncated { got: size - remaining, want: size });
        }
        buf.truncate(n);
        remaining -= n as u64;
        if tx.send(buf).await.is_err() {
            break; // the writer failed; its error is reported by the caller
        }
    }
    Ok(())
}

/// Reads SEND frames into `tx` until the end frame; returns the id it names.
async fn receive_frames(
    stream: &mut Stream,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    used: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    max_size: u64,
) -> Result<BlockId, WireError> {
    let mut got = 0u64;
    loop {
        let buf = used.try_recv().unwrap_or_default();
        match wire::read_frame_into(stream, buf).await? {
            wire::Frame::End(id) => return Ok(id),
            wire::Frame::Data(data) => {
                got += data.len() as u64;
                if got > max_size {
                    return Err(WireError::TooLarge { what: "sent block", size: got, max: max_size });
                }
                // A failed writer stops taking data; keep reading to the end so its
                // reason, not a broken stream, reaches the sender.
                let _ = tx.send(data).await;
            }
        }
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

/// Get streams a finished get left open, per peer, with when each went idle.
#[derive(Default)]
pub(crate) struct IdleStreams(HashMap<PeerId, Vec<(Stream, std::time::Instant)>>);

impl IdleStreams {
    fn take(&mut self, peer: PeerId) -> Option<Stream> {
        let list = self.0.get_mut(&peer)?;
        let fresh = list.pop().filter(|(_, at)| at.elapsed() < IDLE_REUSE).map(|(s, _)| s);
        if list.is_empty() || fresh.is_none() {
            self.0.remove(&peer);
        }
        fresh
    }

    fn keep(&mut self, peer: PeerId, stream: Stream) {
        if self.0.len() >= IDLE_PEERS && !self.0.contains_key(&peer) {
            self.0.retain(|_, list| list.iter().any(|(_, at)| at.elapsed() < IDLE_REUSE));
            if self.0.len() >= IDLE_PEERS {
                return;
            }
        }
        let list = self.0.entry(peer).or_default();
        list.retain(|(_, at)| at.elapsed() < IDLE_REUSE);
        if list.len() < IDLE_PER_PEER {
            list.push((stream, std::time::Instant::now()));
        }
    }
}

impl NetHandle {
    /// A stream for a get: one an earlier get to `peer` left idle, else a new one.
    async fn open_for_get(&self, peer: PeerId) -> Result<Stream, NetError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.take(peer));
        match idle {
            Some(s) => Ok(s),
            None => self.open(peer).await,
        }
    }

    /// Leaves a stream whose last answer was read to its end idle for the next get.
    fn keep_for_get(&self, peer: PeerId, stream: Stream) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.keep(peer, stream);
        }
    }

    async fn open(&self, peer: PeerId) -> Result<Stream, NetError> {
        // Connect first, through the event loop: libp2p-stream's own dial can wait forever
        // when several streams to an unreachable peer are opened at once.
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(peer)).await {
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
        self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(stream)
    }

    /// How many block-protocol streams this node has opened (gets reuse theirs).
    pub fn streams_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A permit for one request to `peer` (at most [`CLIENT_PER_PEER`] at once).
    async fn permit(&self, peer: PeerId) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut map = self.per_peer.lock().ok()?;
            if map.len() > 1024 {
                map.retain(|_, s| s.available_permits() < CLIENT_PER_PEER);
            }
            map.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(CLIENT_PER_PEER))).clone()
        };
        sem.acquire_owned().await.ok()
    }

    /// Runs a request with a per-peer permit, retrying transport failures a few times.
    async fn request<T, F, Fut>(&self, peer: PeerId, mut f: F) -> Result<T, NetError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        let _permit = self.permit(peer).await;
        let mut attempt = 1;
        loop {
            // A peer that accepted the stream but never answers must not hold us forever.
            let answer = match tokio::time::timeout(ANSWER_TIMEOUT, f()).await {
                Ok(r) => r,
                Err(_) => Err(NetError::Wire(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {ANSWER_TIMEOUT:?}"),
                )))),
            };
            match answer {
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    tracing::debug!(%peer, attempt, error = %e, "retrying block request");
                    // A stream dropped under a burst of others is likely to be dropped
                    // again at once: back off a little.
                    tokio::time::sleep(RETRY_BACKOFF * attempt as u32).await;
                    attempt += 1;
                }
                r => return r,
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
        self.request(peer, || async {
            let mut sink = shared.lock().await;
            self.fragment_once(peer, id, size, range, &mut sink, at).await
        })
        .await
    }

    /// The size of block `id` on `peer`, verified: the peer proves its first chunk group
    /// against the id for the size it claims.
    pub async fn block_size(&self, peer: PeerId, id: BlockId) -> Result<u64, NetError> {
        self.request(peer, || self.block_size_once(peer, id)).await
    }

    /// Asks `peer` to prove it holds block `id` (of `size` bytes) by sending chunk group
    /// `group` with its proof; verifies the answer. Returns the bytes the proof moved.
    pub async fn prove(&self, peer: PeerId, id: BlockId, size: u64, group: u64) -> Result<usize, NetError> {
        self.request(peer, || self.prove_once(peer, id, size, group)).await
    }

    async fn put_stream<F, Fut>(
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
        let mut attempt = 1;
        loop {
            match self.put_stream_once(peer, id, size, &mut chunk).await {
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => attempt += 1,
                r => return r,
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
        reader: Arc<dyn jewel::store::BlockReader>,
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
    /// checking the data against that id. `chunks` yields the data; it is hashed on the way
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
        let result = {
            let _permit = self.permit(peer).await;
            self.send_block_once(peer, max_size, &mut chunks, &mut hasher).await
        };
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
        wire::read_status(&mut s).await?;
        let mut sent = Ok(());
        while let Some(chunk) = chunks.recv().await {
            hasher.update(&chunk);
            for frame in chunk.chunks(wire::MAX_FRAME as usize) {
                // A peer that stops reading must not hold the put forever.
                sent = match tokio::time::timeout(REQUEST_TIMEOUT, wire::write_frame(&mut s, frame)).await {
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
        if sent.is_ok() {
            // The data is all here only once the writer closed the channel.
            let id = BlockId::from(hasher.clone().finalize());
            sent = wire::write_end(&mut s, &id).await;
        }
        let status = match tokio::time::timeout(REQUEST_TIMEOUT, wire::read_status(&mut s)).await {
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

    async fn block_size_once(&self, peer: PeerId, id: BlockId) -> Result<u64, NetError> {
        let mut s = self.open(peer).await?;
        s.write_all(&Request::Prove { id, group: 0 }.encode()).await.map_err(WireError::Io)?;
        s.flush().await.map_err(WireError::Io)?;
        let (size, frag) = wire::read_fragment(&mut s).await?;
        let _ = s.close().await;
        let len = (CHUNK_GROUP_SIZE as u64).min(size);
        decode_fragment(id.into(), size, 0, len, &frag)
            .map_err(|source| NetError::Fragment { peer, source })?;
        Ok(size)
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
