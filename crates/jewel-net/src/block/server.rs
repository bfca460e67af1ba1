//! The block server: serves a store to peers, request after request on each stream, within
//! global, per-peer, per-address and open-stream limits; store work on the blocking pool.

use jewel_store::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use libp2p::{PeerId, Stream};
use tokio::sync::Semaphore;

use super::{
    Quota, BLOCK_PROTOCOL, MAX_CONCURRENT, MAX_PER_IP, MAX_PER_PEER, MAX_STREAMS, PUT_CHUNK, REQUEST_TIMEOUT,
};
use crate::announce::Announcer;
use crate::error::NetError;
use crate::swarm::PeerIps;
use crate::wire::{self, Request, Status, WireError};
use jewel_store::lease::{Lease, LeaseBook};
use jewel_store::pool::Pool;
use jewel_store::store::{BlockStore, StoreError, CHUNK_GROUP_SIZE};
use jewel_store::BlockId;

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
    mut control: libp2p_stream::Control,
    store: Arc<dyn BlockStore>,
    leases: Arc<LeaseBook>,
    announcer: Announcer,
    limits: ServeLimits,
    ips: Arc<PeerIps>,
) -> Result<(), NetError> {
    let ServeLimits { max_upload, data_stall, quota } = limits;
    let limit = max_upload.map(|r| Arc::new(RateLimit::new(r)));
    let quotas = Arc::new(Quotas { quota, in_flight: Mutex::default() });
    let mut incoming = control
        .accept(BLOCK_PROTOCOL)
        .map_err(|_| NetError::Transport("block protocol already being served".into()))?;
    let fragments = Arc::new(Pool::new(FRAGMENT_BUFFERS));
    let permits = Permits {
        global: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        per_peer: Arc::default(),
        per_ip: Arc::default(),
        ips,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
    };
    while let Some((peer, mut stream)) = incoming.next().await {
        let server = Server {
            store: store.clone(),
            leases: leases.clone(),
            announcer: announcer.clone(),
            peer,
            fragments: fragments.clone(),
            data_stall,
            quotas: quotas.clone(),
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

/// The server's limits: requests at once (over all peers, per peer and per IP address) and
/// open streams.
#[derive(Clone)]
struct Permits {
    global: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<PeerId, Arc<Semaphore>>>>,
    per_ip: Arc<Mutex<HashMap<std::net::IpAddr, Arc<Semaphore>>>>,
    /// Where each connected peer is (from the swarm).
    ips: Arc<PeerIps>,
    streams: Arc<Semaphore>,
}

/// The permits one request holds.
type Held = Vec<tokio::sync::OwnedSemaphorePermit>;

/// The semaphore of `key` in `map`, with `max` permits. Idle keys are forgotten once the
/// map grows, so it stays bounded by the active ones.
fn keyed<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Arc<Semaphore>>>,
    key: K,
    max: usize,
) -> Arc<Semaphore> {
    // (A poisoned map is still the map: a fresh semaphore per request would lift the limit.)
    let mut m = map.locked();
    if m.len() > 4 * MAX_CONCURRENT {
        m.retain(|_, s| s.available_permits() < max);
    }
    m.entry(key).or_insert_with(|| Arc::new(Semaphore::new(max))).clone()
}

impl Permits {
    /// Permits for one request from `peer`, if it is within every limit.
    fn request(&self, peer: PeerId) -> Option<Held> {
        let mut held = vec![
            self.global.clone().try_acquire_owned().ok()?,
            keyed(&self.per_peer, peer, MAX_PER_PEER).try_acquire_owned().ok()?,
        ];
        if let Some(ip) = self.ips.get(&peer) {
            held.push(keyed(&self.per_ip, ip, MAX_PER_IP).try_acquire_owned().ok()?);
        }
        Some(held)
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

/// What a server allows beyond its permits: bytes per second served, an upload's pace, and
/// how much of the store peers may fill.
pub(crate) struct ServeLimits {
    pub max_upload: Option<u64>,
    pub data_stall: std::time::Duration,
    pub quota: Quota,
}

/// The quota, and the bytes of uploads under way (not charged yet, but promised).
struct Quotas {
    quota: Quota,
    in_flight: Mutex<InFlight>,
}

#[derive(Default)]
struct InFlight {
    per_peer: HashMap<PeerId, u64>,
    newcomers: u64,
}

/// An upload's place in its peer's quota; given back when dropped.
struct Reservation {
    quotas: Arc<Quotas>,
    peer: PeerId,
    bytes: u64,
    newcomer: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut f = self.quotas.in_flight.locked();
        if let Some(b) = f.per_peer.get_mut(&self.peer) {
            *b = b.saturating_sub(self.bytes);
            if *b == 0 {
                f.per_peer.remove(&self.peer);
            }
        }
        if self.newcomer {
            f.newcomers = f.newcomers.saturating_sub(self.bytes);
        }
    }
}

impl Quotas {
    /// Reserves `bytes` of `peer`'s quota for an upload, or says why not.
    fn reserve(
        self: &Arc<Self>,
        leases: &LeaseBook,
        peer: PeerId,
        bytes: u64,
        capacity: Option<u64>,
    ) -> Result<Reservation, String> {
        let (per_peer, newcomers) = self.quota.limits(capacity);
        if per_peer.is_none() && newcomers.is_none() {
            return Ok(Reservation { quotas: self.clone(), peer, bytes: 0, newcomer: false });
        }
        let unknown = |e: jewel_store::lease::LeaseError| {
            tracing::warn!(error = %e, "cannot read the peers' charges");
            "the holder cannot read its quotas; its log says why".to_string()
        };
        let now = jewel_store::lease::now();
        let charge = leases.charge_of(&peer.to_bytes()).map_err(unknown)?;
        let newcomer = charge.is_none_or(|c| c.since.saturating_add(super::NEWCOMER_SECS) > now);
        let newcomers_charged = match (newcomer, newcomers) {
            (true, Some(_)) => {
                leases.newcomers_charged(now.saturating_sub(super::NEWCOMER_SECS)).map_err(unknown)?
            }
            _ => 0,
        };
        let mut f = self.in_flight.locked();
        let mine = charge.map_or(0, |c| c.bytes).saturating_add(f.per_peer.get(&peer).copied().unwrap_or(0));
        if let Some(max) = per_peer {
            if mine.saturating_add(bytes) > max {
                return Err(format!(
                    "this peer's share of the holder is full: {bytes} bytes offered, {} of {max} left",
                    max.saturating_sub(mine)
                ));
            }
        }
        if let (true, Some(max)) = (newcomer, newcomers) {
            let all = newcomers_charged.saturating_add(f.newcomers);
            if all.saturating_add(bytes) > max {
                return Err(format!(
                    "the holder takes no more from new peers for now: {bytes} bytes offered, {} of {max} left",
                    max.saturating_sub(all)
                ));
            }
        }
        *f.per_peer.entry(peer).or_default() += bytes;
        if newcomer {
            f.newcomers = f.newcomers.saturating_add(bytes);
        }
        Ok(Reservation { quotas: self.clone(), peer, bytes, newcomer })
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
    /// How long an upload may send nothing (see [`Pace`]).
    data_stall: std::time::Duration,
    quotas: Arc<Quotas>,
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

/// What a peer is told of a store error: the status, and a reason that names nothing of
/// this machine (no local path); the whole error goes to this node's log.
fn refusal(e: &StoreError) -> (Status, String) {
    let status = status_of(e);
    let reason = match (status, e) {
        (_, StoreError::DiskFull { .. }) => {
            tracing::warn!(error = %e, "the disk is full");
            "the holder's disk is full".to_string()
        }
        (Status::Internal, _) => {
            tracing::warn!(error = %e, "the store failed a peer's request");
            "the holder's store failed; its log says why".to_string()
        }
        _ => e.to_string(),
    };
    (status, reason)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, (Status, String)> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refusal(&e)),
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
                Err(e) => Err(refusal(&e)),
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
    let now = jewel_store::lease::now();
    // A lease is capped: a stranger cannot make this node keep a block for 136 years.
    let expires =
        if seconds == 0 { 0 } else { now + u64::from(seconds).min(jewel_store::lease::MAX_LEASE_SECS) };
    let mut changes: Vec<Lease> = ids
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(id, _)| Lease { block: *id, file, owner: owner.to_vec(), expires })
        .collect();
    // A lease for a file replaces the owner's first, unassigned one.
    let firsts: Vec<Lease> = changes
        .iter()
        .map(|l| Lease {
            block: l.block,
            file: jewel_store::lease::UNASSIGNED,
            owner: owner.to_vec(),
            expires: 0,
        })
        .collect();
    changes.extend(firsts);
    let unavailable =
        |e: jewel_store::lease::LeaseError| StoreError::Unavailable { id: file, reason: e.to_string() };
    leases.apply(&changes).map_err(unavailable)?;
    if seconds == 0 {
        for l in &changes {
            // The peer that stored the block releases it once none of its own leases keep
            // it, whatever leases others hold: anyone who learns a piece's id can lease it,
            // and must not pin it past the owner's `rm`.
            let by_sender = leases.charged_to(&l.block).map_err(unavailable)?.is_some_and(|o| o == owner);
            let keeps = if by_sender { leases.expiry_by(&l.block, owner) } else { leases.expiry(&l.block) };
            if keeps.map_err(unavailable)?.is_none_or(|e| e <= now) {
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
            tracing::info!(peer = %server.peer, %reason, "refused an upload for want of room");
            wire::write_error(stream, Status::Full, &reason).await?;
            return Ok(None);
        }
    }
    let _reservation = match server.quotas.reserve(&server.leases, server.peer, most, usage.capacity) {
        Ok(r) => r,
        Err(reason) => {
            tracing::info!(peer = %server.peer, %reason, "refused an upload for want of room");
            wire::write_error(stream, Status::Full, &reason).await?;
            return Ok(None);
        }
    };
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
            file: jewel_store::lease::UNASSIGNED,
            owner: owner.clone(),
            expires: jewel_store::lease::now() + jewel_store::lease::INITIAL_LEASE_SECS,
        };
        let unavailable =
            |e: jewel_store::lease::LeaseError| StoreError::Unavailable { id, reason: e.to_string() };
        leases.apply_soon(&[first]).map_err(unavailable)?;
        let size = w.written();
        let id = w.commit(Some(id))?;
        // Charged once stored (before, a failed upload would stay charged).
        leases.charge(&id, &owner, size, jewel_store::lease::now()).map_err(unavailable)?;
        Ok(id)
    });
    let received = match incoming {
        Incoming::Sized { id, size } => receive_raw(stream, &tx, size, server.data_stall).await.map(|()| id),
        Incoming::Framed { max_size } => {
            receive_frames(stream, &tx, &mut back_rx, max_size, server.data_stall).await
        }
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
        Ok(Err(e)) => {
            let (status, reason) = refusal(&e);
            wire::write_error(stream, status, &reason).await?
        }
        Err(_) => wire::write_error(stream, Status::Internal, "internal error").await?,
    }
    Ok(None)
}

/// Reads exactly `size` raw bytes into `tx` (a PUT). A stream that ends early is an error.
async fn receive_raw(
    stream: &mut Stream,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    size: u64,
    stall: std::time::Duration,
) -> Result<(), WireError> {
    let mut remaining = size;
    let mut pace = Pace::new(stall);
    while remaining > 0 {
        let mut buf = vec![0u8; (remaining as usize).min(PUT_CHUNK)];
        let n = pace.within(stream.read(&mut buf)).await??;
        pace.got(n)?;
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

/// How long an upload may send nothing, by default: longer than an honest sender can stall
/// (it waits up to [`super::WRITE_STALL`] on another holder of the same put).
pub const DATA_STALL: std::time::Duration = std::time::Duration::from_secs(15);
/// The slowest an upload may go on average, once its stall allowance has passed: an upload
/// holds a request permit, so a peer that trickles cannot keep one.
pub const MIN_DATA_RATE: u64 = 64 << 10;

/// The pace of an upload's data phase: every read within `stall`, and on average at least
/// [`MIN_DATA_RATE`] after the first `stall`.
struct Pace {
    started: tokio::time::Instant,
    bytes: u64,
    stall: std::time::Duration,
}

impl Pace {
    fn new(stall: std::time::Duration) -> Pace {
        Pace { started: tokio::time::Instant::now(), bytes: 0, stall }
    }

    async fn within<T>(&self, read: impl std::future::Future<Output = T>) -> Result<T, WireError> {
        tokio::time::timeout(self.stall, read).await.map_err(|_| stalled("sent nothing for too long"))
    }

    fn got(&mut self, n: usize) -> Result<(), WireError> {
        self.bytes += n as u64;
        let late = self.started.elapsed().saturating_sub(self.stall).as_secs_f64();
        if (self.bytes as f64) < late * MIN_DATA_RATE as f64 {
            return Err(stalled("sends slower than 64 KiB/s"));
        }
        Ok(())
    }
}

fn stalled(why: &str) -> WireError {
    WireError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the upload {why}; dropped")))
}

/// Reads SEND frames into `tx` until the end frame; returns the id it names.
async fn receive_frames(
    stream: &mut Stream,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    used: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    max_size: u64,
    stall: std::time::Duration,
) -> Result<BlockId, WireError> {
    let mut got = 0u64;
    let mut pace = Pace::new(stall);
    loop {
        let buf = used.try_recv().unwrap_or_default();
        match pace.within(wire::read_frame_into(stream, buf)).await?? {
            wire::Frame::End(id) => return Ok(id),
            wire::Frame::Data(data) => {
                pace.got(data.len())?;
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
