//! Files over the network: the put and get pipelines with peers as piece stores.
//!
//! Put: each piece streams to its own peer (chosen by [`place`]) while the pipeline makes
//! it, so memory stays bounded by a few chunks per slot and nothing is staged on disk; the
//! manifest then goes to every holder. Holders verify each block and announce it in the
//! DHT. Get: each slot's holder comes from the placement
//! recorded at upload (the fast path) or a DHT provider lookup, and is read through
//! [`RemotePiece`], a verified `BlockReader`, so the pipeline is the same as offline.
//!
//! The pipelines are synchronous; call these functions from a blocking thread (e.g.
//! `spawn_blocking`), never from inside an async task.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jewel_net::PeerId;
use tokio::runtime::Handle;

use jewel::crypto::FileKey;
use jewel::manifest::{Manifest, SEGMENT_OVERHEAD};
use jewel::pipeline::{
    self, ByteRange, Fetch, FetchLog, Fetched, GetStats, PieceFault, PipelineError, Put, PutOptions,
};
use jewel::pool::Pool;
use jewel::store::{BlockWriter, StoreError};
use jewel::BlockId;
use jewel_codec::CodecError;
use jewel_net::wire;
use jewel_net::{BlockClient, NetError};

/// Why a network put or get failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("the scheme needs {needed} distinct peers, but only {found} were found")]
    NotEnoughPeers { needed: usize, found: usize },
    #[error("uploading piece {slot} to {peer}: {source}")]
    Upload { slot: usize, peer: PeerId, source: Box<NetError> },
    #[error("rebuilt piece {slot} does not match its manifest id; nothing was recorded")]
    RebuildMismatch { slot: usize },
    #[error("manifest {0} was not found on any peer")]
    ManifestNotFound(BlockId),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Net(Box<NetError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<NetError> for ClientError {
    fn from(e: NetError) -> Self {
        ClientError::Net(Box::new(e))
    }
}

/// A candidate peer for placement.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub peer: PeerId,
    pub zone: Option<String>,
}

/// Chooses a distinct peer for each of `slots` slots, taking peers from each zone in turn
/// so pieces spread over failure domains (peers without a zone each count as their own);
/// within that, earlier candidates are preferred.
pub fn place(slots: usize, candidates: &[Candidate]) -> Result<Vec<PeerId>, ClientError> {
    // Zones in the order they first appear, so a caller's preference order is kept.
    let mut zones: Vec<(String, std::collections::VecDeque<PeerId>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in candidates {
        if seen.insert(c.peer) {
            let zone = c.zone.clone().unwrap_or_else(|| format!("peer:{}", c.peer));
            match zones.iter_mut().find(|(z, _)| *z == zone) {
                Some((_, q)) => q.push_back(c.peer),
                None => zones.push((zone, std::collections::VecDeque::from([c.peer]))),
            }
        }
    }
    if seen.len() < slots {
        return Err(ClientError::NotEnoughPeers { needed: slots, found: seen.len() });
    }
    let mut out = Vec::with_capacity(slots);
    while out.len() < slots {
        for (_, q) in zones.iter_mut() {
            if out.len() == slots {
                break;
            }
            if let Some(p) = q.pop_front() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// What a network put produced.
#[derive(Debug)]
pub struct Placed {
    pub put: Put,
    /// The peer holding each slot's piece.
    pub holders: Vec<PeerId>,
}

/// The most bytes each slot's piece can have for a file of `file_len` bytes: every
/// segment stored uncompressed, plus its flag and tag.
fn max_piece_lens(scheme: &dyn jewel_codec::Scheme, file_len: u64, segment_size: u32) -> Vec<u64> {
    let segments = jewel::manifest::Manifest::segment_count(file_len, segment_size);
    let full = segment_size as usize + SEGMENT_OVERHEAD;
    let last = (file_len - (segments - 1) * u64::from(segment_size)) as usize + SEGMENT_OVERHEAD;
    (0..scheme.slots())
        .map(|slot| {
            (segments - 1) * scheme.chunk_len(slot, full) as u64 + scheme.chunk_len(slot, last) as u64
        })
        .collect()
}

/// Chunks a slot's piece may have queued for its peer: bounds the memory of a put.
const SEND_QUEUE: usize = 4;

/// A piece on its way to a peer, as the pipeline writes it: each chunk is handed to a
/// task that streams it to the peer (see [`BlockClient::send_block`]). A failed upload does
/// not stop the pipeline; the id is still computed, and the failure is kept in `outcome`.
struct NetWriter {
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<(BlockId, Result<(), NetError>)>>,
    rt: Handle,
    written: u64,
    outcome: Arc<std::sync::Mutex<Option<Result<(), NetError>>>>,
}

impl BlockWriter for NetWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.written += data.len() as u64;
        let sent = self.tx.as_ref().map(|tx| tx.blocking_send(data.to_vec()));
        if let Some(Err(_)) = sent {
            return Err(StoreError::Unavailable { id: BlockId([0; 32]), reason: "upload task ended".into() });
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, _expected: Option<BlockId>) -> Result<BlockId, StoreError> {
        drop(self.tx.take());
        let task = self.task.take();
        let ended = task.map(|t| self.rt.block_on(t));
        let Some(Ok((id, result))) = ended else {
            return Err(StoreError::Unavailable {
                id: BlockId([0; 32]),
                reason: "upload task failed".into(),
            });
        };
        if let Ok(mut o) = self.outcome.lock() {
            *o = Some(result);
        }
        Ok(id)
    }
}

/// Encrypts and encodes `input` (of `size` bytes), streaming slot i's piece straight to
/// `peers[i]` as it is made (nothing is staged on disk), then sends the manifest to every
/// holder. A piece whose peer vanished mid-put is rebuilt from the others and placed on
/// the next of `peers` (those after the first n are spares), as a repair would; if that
/// is impossible the put fails with the slot's error and reports nothing as stored. (Pieces
/// already sent keep only their first, short lease and are collected.)
pub fn put_file(
    rt: &Handle,
    net: &BlockClient,
    input: &mut (dyn Read + Send),
    size: u64,
    opts: &PutOptions,
    peers: &[PeerId],
) -> Result<Placed, ClientError> {
    let scheme = jewel_codec::build(&opts.scheme).map_err(PipelineError::from)?;
    let slots = scheme.slots();
    if peers.len() < slots {
        return Err(ClientError::NotEnoughPeers { needed: slots, found: peers.len() });
    }
    let holders: Vec<PeerId> = peers[..slots].to_vec();
    let max = max_piece_lens(scheme.as_ref(), size, opts.segment_size);
    let (sinks, outcomes) = net_sinks(rt, net, &holders, &max);
    let put = pipeline::put(input, opts, sinks)?;
    let mut holders = holders;
    let failed: Vec<(usize, NetError)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(slot, o)| match o.lock().ok().and_then(|mut o| o.take()) {
            Some(Err(e)) => Some((slot, e)),
            _ => None,
        })
        .collect();
    let good: Vec<usize> = (0..slots).filter(|s| failed.iter().all(|(f, _)| f != s)).collect();
    let good_peers: Vec<PeerId> = good.iter().map(|s| holders[*s]).collect();
    send_manifest(rt, net, &put.manifest_bytes, &good, &good_peers)?;
    let lost: Vec<usize> = failed.iter().map(|(s, _)| *s).collect();
    if let Some((slot, first)) = failed.into_iter().next() {
        tracing::warn!(slots = ?lost, error = %first, "pieces lost mid-put; placing them on spare peers");
        let sources: Vec<Option<PeerId>> =
            (0..slots).map(|s| (!lost.contains(&s)).then_some(holders[s])).collect();
        let mut spares = peers[slots..].iter().copied();
        let mut result = Err(ClientError::Upload { slot, peer: holders[slot], source: Box::new(first) });
        // A spare may be gone too: try the next ones, a few times.
        for _ in 0..3 {
            let targets: Vec<PeerId> = spares.by_ref().take(lost.len()).collect();
            if targets.len() < lost.len() {
                tracing::warn!(spares = targets.len(), needed = lost.len(), "not enough spare peers");
                break;
            }
            result = repair_slots(rt, net, &put.manifest, &sources, &lost, &targets, opts.threads);
            if let Err(e) = &result {
                tracing::warn!(error = %e, "placing a lost piece on a spare failed");
            }
            if let Ok(r) = &result {
                for (s, peer) in r.slots.iter().zip(&targets) {
                    holders[*s] = *peer;
                }
                break;
            }
        }
        result?;
    }
    Ok(Placed { put, holders })
}

type Outcome = Arc<std::sync::Mutex<Option<Result<(), NetError>>>>;

/// One streaming writer per peer (see [`NetWriter`]), each bounded by `max[i]` bytes, and
/// where each upload's outcome will be.
fn net_sinks(
    rt: &Handle,
    net: &BlockClient,
    peers: &[PeerId],
    max: &[u64],
) -> (Vec<Box<dyn BlockWriter>>, Vec<Outcome>) {
    let mut outcomes = Vec::with_capacity(peers.len());
    let mut sinks: Vec<Box<dyn BlockWriter>> = Vec::with_capacity(peers.len());
    for (peer, max) in peers.iter().zip(max) {
        let (tx, rx) = tokio::sync::mpsc::channel(SEND_QUEUE);
        let outcome = Arc::new(std::sync::Mutex::new(None));
        let (net, peer, max) = (net.clone(), *peer, *max);
        let task = rt.spawn(async move { net.send_block(peer, max, rx).await });
        outcomes.push(outcome.clone());
        sinks.push(Box::new(NetWriter {
            tx: Some(tx),
            task: Some(task),
            rt: rt.clone(),
            written: 0,
            outcome,
        }));
    }
    (sinks, outcomes)
}

/// The first failed upload among `outcomes` (for `slots[i]` on `peers[i]`), as an error.
fn uploaded(outcomes: &[Outcome], slots: &[usize], peers: &[PeerId]) -> Result<(), ClientError> {
    for ((outcome, slot), peer) in outcomes.iter().zip(slots).zip(peers) {
        let result = outcome.lock().ok().and_then(|mut o| o.take());
        if let Some(Err(e)) = result {
            return Err(ClientError::Upload { slot: *slot, peer: *peer, source: Box::new(e) });
        }
    }
    Ok(())
}

/// Sends the manifest to every one of `peers` (holders of `slots`), a few at a time.
fn send_manifest(
    rt: &Handle,
    net: &BlockClient,
    manifest_bytes: &[u8],
    slots: &[usize],
    peers: &[PeerId],
) -> Result<(), ClientError> {
    let id = BlockId::of(manifest_bytes);
    let uploads = slots.iter().zip(peers).map(|(slot, peer)| {
        let (net, peer, slot) = (net.clone(), *peer, *slot);
        async move {
            net.put_block(peer, id, manifest_bytes).await.map_err(|e| ClientError::Upload {
                slot,
                peer,
                source: Box::new(e),
            })
        }
    });
    let results: Vec<Result<(), ClientError>> = rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(uploads).buffer_unordered(8).collect().await
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

/// What a repair did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Repaired {
    /// The slots rebuilt, and the peer that now holds each.
    pub slots: Vec<usize>,
    pub holders: Vec<String>,
    /// Verified bytes read from the surviving pieces.
    pub bytes_read: u64,
    /// Bytes of rebuilt pieces written (plus the manifest copies sent to new holders).
    pub bytes_written: u64,
    /// Bytes of the pieces that were lost.
    pub bytes_lost: u64,
}

/// Rebuilds the pieces of `missing` slots from the other holders (`holders[i]` for slot
/// i; missing slots are never read) and streams each to its peer in `targets`, which also
/// gets the manifest. Every rebuilt piece is checked to have its manifest id. Stopping
/// half-way leaves the file as it was: the old placement stays valid until the caller
/// records the new one.
pub fn repair_slots(
    rt: &Handle,
    net: &BlockClient,
    manifest: &Manifest,
    holders: &[Option<PeerId>],
    missing: &[usize],
    targets: &[PeerId],
    threads: usize,
) -> Result<Repaired, ClientError> {
    let scheme = manifest.build_scheme().map_err(PipelineError::from)?;
    if targets.len() < missing.len() {
        return Err(ClientError::NotEnoughPeers { needed: missing.len(), found: targets.len() });
    }
    let targets = &targets[..missing.len()];
    let mut sources = holders.to_vec();
    sources.resize(scheme.slots(), None);
    for slot in missing {
        if let Some(s) = sources.get_mut(*slot) {
            *s = None;
        }
    }
    let fetch = NetFetch::new(rt.clone(), net.clone(), manifest, &sources)?;
    let sizes: Vec<u64> = missing.iter().map(|s| manifest.piece_len(scheme.as_ref(), *s)).collect();
    let (sinks, outcomes) = net_sinks(rt, net, targets, &sizes);
    let ids = pipeline::rebuild(manifest, &fetch, missing, sinks, threads)?;
    uploaded(&outcomes, missing, targets)?;
    for (slot, id) in missing.iter().zip(&ids) {
        if manifest.pieces.get(*slot) != Some(id) {
            return Err(ClientError::RebuildMismatch { slot: *slot });
        }
    }
    let manifest_bytes = manifest.encode();
    send_manifest(rt, net, &manifest_bytes, missing, targets)?;
    let lost: u64 = sizes.iter().sum();
    let (read, _) = fetch.report();
    Ok(Repaired {
        slots: missing.to_vec(),
        holders: targets.iter().map(|p| p.to_string()).collect(),
        bytes_read: read.iter().sum(),
        bytes_written: lost + (manifest_bytes.len() * targets.len()) as u64,
        bytes_lost: lost,
    })
}

/// How one holder has answered during a get.
#[derive(Clone, Copy, Debug, Default)]
struct Health {
    /// Failed: not asked again in this get, unless nothing else is left.
    dead: bool,
    /// The failure was a stream cut mid-way, not an unreachable peer or a bad answer.
    transient: bool,
    /// Smoothed seconds per request (0 until the first answer).
    latency: f64,
    answered: u32,
}

/// Segments a network get works on at once: more than the cores, as each mostly waits
/// for holders.
pub const GET_THREADS: usize = 3;

/// Before any answer has been timed, extra holders are asked after this long.
const FIRST_HEDGE: Duration = Duration::from_millis(300);
/// Bounds of the hedge delay once answers have been timed.
const MIN_HEDGE: Duration = Duration::from_millis(20);
const MAX_HEDGE: Duration = Duration::from_secs(2);
/// A request is hedged once it takes this many times the typical answer.
const HEDGE_FACTOR: f64 = 3.0;

/// Chunks from holders over the network, for [`pipeline::get_with`]. For each segment it
/// asks the fastest set of holders that can decode it, all at once; when one fails it is
/// dropped for the rest of the get and another holder is asked; when one is slow (longer
/// than [`HEDGE_FACTOR`] × the typical answer), spare holders are asked too. The first
/// decodable set of verified chunks wins and the other requests are cancelled.
pub struct NetFetch {
    rt: Handle,
    net: BlockClient,
    holders: Vec<Option<PeerId>>,
    ids: Vec<BlockId>,
    sizes: Vec<u64>,
    health: Mutex<Vec<Health>>,
    log: FetchLog,
}

/// Where one read's bytes go: a pooled buffer, or the chunk's place in the segment.
enum ReadInto<'a> {
    Pooled,
    Place(&'a mut [u8]),
}

/// A finished read: the slot, what came of it, how long it took, and the place it was
/// given (back, on failure, for a retry to use).
type Answer<'a> = (usize, Result<Option<Vec<u8>>, NetError>, Duration, Option<&'a mut [u8]>);

/// A holder whose smoothed latency is at most this many times that of the fastest
/// decodable set still counts as fast, and is asked first if its slot needs no decoding.
const PREFER_FACTOR: f64 = 1.5;

/// Usable slots, fastest first (`latency` None: not timed yet, counts as the average),
/// except that among holders about as fast as the fastest decodable set (within
/// [`PREFER_FACTOR`] of the n-th fastest, n = the preferred count), the slots `preferred`
/// marks (data shards, whole copies: no decoding needed) come first.
fn rank(latency: &[Option<f64>], usable: &[bool], preferred: &[bool]) -> Vec<usize> {
    let timed: Vec<f64> = latency.iter().flatten().copied().collect();
    let typical = if timed.is_empty() { 0.0 } else { timed.iter().sum::<f64>() / timed.len() as f64 };
    let cost = |s: usize| latency.get(s).copied().flatten().unwrap_or(typical);
    let mut slots: Vec<usize> = (0..usable.len()).filter(|&s| usable[s]).collect();
    slots.sort_by(|a, b| cost(*a).total_cmp(&cost(*b)));
    let want = preferred.iter().filter(|p| **p).count().max(1);
    let limit = slots.get(want - 1).map_or(0.0, |s| cost(*s)) * PREFER_FACTOR;
    let later = |s: usize| !(cost(s) <= limit && preferred.get(s).copied().unwrap_or(false));
    slots.sort_by_key(|s| later(*s)); // stable: by latency within each group
    slots
}

impl NetFetch {
    pub fn new(
        rt: Handle,
        net: BlockClient,
        manifest: &Manifest,
        holders: &[Option<PeerId>],
    ) -> Result<NetFetch, ClientError> {
        let scheme = manifest.build_scheme().map_err(PipelineError::from)?;
        let n = scheme.slots();
        let sizes = (0..n).map(|slot| manifest.piece_len(scheme.as_ref(), slot)).collect();
        let mut holders = holders.to_vec();
        holders.resize(n, None);
        Ok(NetFetch {
            rt,
            net,
            holders,
            ids: manifest.pieces.clone(),
            sizes,
            health: Mutex::new(vec![Health::default(); n]),
            log: FetchLog::new(n, Vec::new()),
        })
    }

    /// Usable slots in the order to ask them (see [`rank`]).
    fn order(&self, preferred: &[bool]) -> Vec<usize> {
        let health = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        let latency: Vec<Option<f64>> =
            health.iter().map(|h| (h.answered > 0).then_some(h.latency)).collect();
        let usable: Vec<bool> = (0..self.holders.len())
            .map(|s| self.holders[s].is_some() && !health.get(s).is_some_and(|h| h.dead))
            .collect();
        rank(&latency, &usable, preferred)
    }

    fn hedge_delay(&self) -> Duration {
        let health = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        let mut timed: Vec<f64> = health.iter().filter(|h| h.answered > 0).map(|h| h.latency).collect();
        if timed.is_empty() {
            return FIRST_HEDGE;
        }
        timed.sort_by(f64::total_cmp);
        let median = timed[timed.len() / 2];
        Duration::from_secs_f64(median * HEDGE_FACTOR).clamp(MIN_HEDGE, MAX_HEDGE)
    }

    fn record(&self, slot: usize, took: Duration) {
        if let Ok(mut h) = self.health.lock() {
            let h = &mut h[slot];
            let t = took.as_secs_f64();
            h.latency = if h.answered == 0 { t } else { 0.7 * h.latency + 0.3 * t };
            h.answered = h.answered.saturating_add(1);
        }
    }

    /// A request outrun by others still tells how slow its holder is: at least `took`.
    fn record_slow(&self, slot: usize, took: Duration) {
        if let Ok(mut h) = self.health.lock() {
            let h = &mut h[slot];
            h.latency = h.latency.max(took.as_secs_f64());
            h.answered = h.answered.max(1);
        }
    }

    /// Makes a holder that failed in transport (not with a bad answer) usable again.
    fn revive(&self, slot: usize) -> bool {
        let Ok(mut h) = self.health.lock() else { return false };
        if h[slot].dead && h[slot].transient {
            h[slot].dead = false;
            return true;
        }
        false
    }

    /// A failed request: its holder is not asked again in this get (see [`Self::revive`]).
    /// Every failed request is a fault, so a holder asked once per segment would show as
    /// many.
    fn fail(&self, slot: usize, segment: usize, e: &NetError) {
        tracing::warn!(slot, segment, error = %e, "piece failed; using the others");
        if let Ok(mut h) = self.health.lock() {
            h[slot].dead = true;
            // A cut stream, not an unreachable peer (asking that again only waits).
            h[slot].transient = matches!(e, NetError::Wire(jewel_net::wire::WireError::Io(_)));
        }
        self.log.fault(slot, e.to_string());
    }

    /// The fastest usable slots, outside `exclude`, that make `held` decodable; empty if
    /// `held` already decodes or no choice can.
    fn complete(&self, scheme: &dyn jewel_codec::Scheme, held: &[bool], exclude: &[bool]) -> Vec<usize> {
        let mut mask = held.to_vec();
        let mut add = Vec::new();
        let preferred = scheme.select(&vec![true; held.len()]).unwrap_or_default();
        for slot in self.order(&preferred) {
            if scheme.can_decode(&mask) {
                break;
            }
            if !mask[slot] && !exclude[slot] {
                mask[slot] = true;
                add.push(slot);
            }
        }
        if scheme.can_decode(&mask) {
            add
        } else {
            Vec::new()
        }
    }

    /// Reads `len` bytes at `offset` of slot `slot`'s piece, verified, in requests of at
    /// most [`wire::MAX_GET`] bytes: into `place` (exactly `len` bytes) if given, and
    /// `None` comes back; else into a pooled buffer, which comes back.
    async fn read(
        &self,
        slot: usize,
        offset: u64,
        len: usize,
        pool: &Pool<Vec<u8>>,
        into: ReadInto<'_>,
    ) -> Result<Option<Vec<u8>>, NetError> {
        let peer = self.holders[slot].ok_or(NetError::Closed)?;
        let (id, size) = (self.ids[slot], self.sizes[slot]);
        let mut done = 0;
        match into {
            ReadInto::Place(place) => {
                for part in place.chunks_mut(wire::MAX_GET as usize) {
                    let range = (offset + done as u64, part.len() as u64);
                    self.net.get_range_into_slice(peer, id, size, range, part).await?;
                    done += part.len();
                }
                Ok(None)
            }
            ReadInto::Pooled => {
                // The buffer keeps its old length and bytes: overwritten in place, not
                // zeroed again.
                let mut out = pool.take();
                while done < len {
                    let n = (len - done).min(wire::MAX_GET as usize);
                    let range = (offset + done as u64, n as u64);
                    self.net.get_range_into(peer, id, size, range, &mut out, done).await?;
                    done += n;
                }
                out.truncate(len);
                Ok(Some(out))
            }
        }
    }
}

impl Fetch for NetFetch {
    fn fetch<'p>(
        &self,
        scheme: &dyn jewel_codec::Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &Pool<Vec<u8>>,
        places: &mut [Option<&'p mut [u8]>],
    ) -> Result<Fetched, PipelineError> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let n = want.len();
        let mut have: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut placed = vec![false; n];
        let mut asked = vec![false; n];
        let mut pending: FuturesUnordered<
            std::pin::Pin<Box<dyn std::future::Future<Output = Answer<'p>> + Send + '_>>,
        > = FuturesUnordered::new();
        // A slot with a place is read into it; the place comes back if the read fails.
        let ask = |slot: usize, asked: &mut Vec<bool>, places: &mut [Option<&'p mut [u8]>]| {
            asked[slot] = true;
            let (offset, len) = want[slot];
            let place = places.get_mut(slot).and_then(Option::take);
            Box::pin(async move {
                let t = Instant::now();
                match place {
                    Some(place) => {
                        let r = self.read(slot, offset, len, pool, ReadInto::Place(&mut *place)).await;
                        let back = r.is_err().then_some(place);
                        (slot, r, t.elapsed(), back)
                    }
                    None => {
                        (slot, self.read(slot, offset, len, pool, ReadInto::Pooled).await, t.elapsed(), None)
                    }
                }
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = Answer<'p>> + Send + '_>>
        };
        self.rt.block_on(async {
            let started = Instant::now();
            for slot in self.complete(scheme, &asked, &asked) {
                pending.push(ask(slot, &mut asked, places));
            }
            let asked_at = tokio::time::Instant::now();
            let hedge = tokio::time::sleep(self.hedge_delay());
            tokio::pin!(hedge);
            let mut hedged = false;
            let mut failed = vec![false; n];
            let mut retried = vec![false; n];
            loop {
                let got: Vec<bool> = (0..n).map(|s| have[s].is_some() || placed[s]).collect();
                if scheme.can_decode(&got) {
                    // The rest are cancelled; what they cost so far marks them slow.
                    for slot in 0..n {
                        if asked[slot] && !got[slot] && !failed[slot] {
                            self.record_slow(slot, started.elapsed());
                        }
                    }
                    return Ok(Fetched { chunks: have, placed });
                }
                if pending.is_empty() {
                    // Last resort: holders dropped after a transport error (a stream cut
                    // under load looks the same as a dead peer) get one more chance.
                    let retry: Vec<usize> =
                        (0..n).filter(|&s| failed[s] && !retried[s] && self.revive(s)).collect();
                    for slot in retry {
                        retried[slot] = true;
                        failed[slot] = false;
                        pending.push(ask(slot, &mut asked, places));
                    }
                    if pending.is_empty() {
                        let available = self.order(&[]).len();
                        return Err(CodecError::NotEnoughPieces { needed: scheme.min_peers(), available }.into());
                    }
                    continue;
                }
                tokio::select! {
                    Some((slot, r, took, back)) = pending.next() => match r {
                        Ok(buf) => {
                            self.record(slot, took);
                            self.log.read(slot, want[slot].1);
                            match buf {
                                Some(buf) => have[slot] = Some(buf),
                                None => placed[slot] = true,
                            }
                            // The first answers of a get make the hedge delay known: a
                            // segment asked before them (with FIRST_HEDGE) hedges as soon
                            // as the new delay allows, not 300 ms in.
                            let sooner = asked_at + self.hedge_delay();
                            if !hedged && sooner < hedge.deadline() {
                                hedge.as_mut().reset(sooner);
                            }
                        }
                        Err(e) => {
                            self.fail(slot, segment, &e);
                            failed[slot] = true;
                            if let (Some(back), Some(place)) = (back, places.get_mut(slot)) {
                                *place = Some(back);
                            }
                            // What is held or still coming, if it cannot decode, gets the
                            // fastest holders not asked yet.
                            let coming: Vec<bool> = (0..n).map(|s| asked[s] && !failed[s]).collect();
                            for extra in self.complete(scheme, &coming, &asked) {
                                pending.push(ask(extra, &mut asked, places));
                            }
                        }
                    },
                    () = &mut hedge, if !hedged => {
                        hedged = true;
                        // As many spares as answers are late, fastest first.
                        let late = (0..n).filter(|&s| asked[s] && !got[s] && !failed[s]).count();
                        // Spares are for speed: by latency alone.
                        let spares: Vec<usize> = self.order(&[]).into_iter().filter(|s| !asked[*s]).take(late).collect();
                        for extra in spares {
                            pending.push(ask(extra, &mut asked, places));
                        }
                    }
                }
            }
        })
    }

    fn report(&self) -> (Vec<u64>, Vec<PieceFault>) {
        self.log.report()
    }
}

/// Finds the holder of every slot: the recorded placement first, else a DHT lookup.
pub fn locate(
    rt: &Handle,
    net: &BlockClient,
    manifest: &Manifest,
    placement: Option<&[PeerId]>,
) -> Vec<Option<PeerId>> {
    manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, id)| match placement.and_then(|p| p.get(slot)) {
            Some(peer) => Some(*peer),
            None => rt.block_on(net.net().providers(*id)).ok().and_then(|p| p.into_iter().next()),
        })
        .collect()
}

/// Fetches and verifies the manifest `id` from any of `peers`, or from DHT providers.
pub fn fetch_manifest(
    rt: &Handle,
    net: &BlockClient,
    id: BlockId,
    peers: &[PeerId],
) -> Result<Manifest, ClientError> {
    let mut candidates = peers.to_vec();
    if candidates.is_empty() {
        candidates = rt.block_on(net.net().providers(id)).unwrap_or_default();
    }
    for peer in candidates {
        // The manifest's size is unknown; ask for a verified range of its true size.
        let size = rt.block_on(net.block_size(peer, id));
        let Ok(size) = size else { continue };
        if size > jewel::manifest::MAX_MANIFEST_LEN as u64 {
            continue;
        }
        if let Ok(bytes) = rt.block_on(net.get_range(peer, id, size, 0, size)) {
            return Ok(Manifest::decode(&bytes).map_err(PipelineError::from)?);
        }
    }
    Err(ClientError::ManifestNotFound(id))
}

/// Rebuilds bytes `range` of a file from its holders (`holders[i]` for slot i, `None` if
/// unknown), asking them in parallel and hedging (see [`NetFetch`]).
#[allow(clippy::too_many_arguments)]
pub fn get_file(
    rt: &Handle,
    net: &BlockClient,
    manifest: &Manifest,
    key: &FileKey,
    holders: &[Option<PeerId>],
    range: ByteRange,
    out: &mut dyn Write,
    threads: usize,
) -> Result<GetStats, ClientError> {
    let fetch = NetFetch::new(rt.clone(), net.clone(), manifest, holders)?;
    Ok(pipeline::get_with(manifest, key, &fetch, range, out, threads)?)
}

#[cfg(test)]
mod tests {
    use super::rank;

    /// Slots 0..3 need no decoding (data shards of a 3-of-5 scheme).
    const DATA: [bool; 5] = [true, true, true, false, false];

    #[test]
    fn equally_fast_holders_are_asked_for_data_shards_first() {
        let latency = [Some(0.011), Some(0.010), Some(0.012), Some(0.009), Some(0.008)];
        assert_eq!(rank(&latency, &[true; 5], &DATA), vec![1, 0, 2, 4, 3]);
        // Not timed yet: the same.
        assert_eq!(rank(&[None; 5], &[true; 5], &DATA), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_slow_data_holder_goes_after_fast_parity_holders() {
        let latency = [Some(0.010), Some(0.100), Some(0.010), Some(0.011), Some(0.012)];
        assert_eq!(rank(&latency, &[true; 5], &DATA), vec![0, 2, 3, 4, 1]);
    }

    #[test]
    fn without_preference_it_is_latency_order_and_unusable_slots_are_left_out() {
        let latency = [Some(0.030), Some(0.010), None, Some(0.020), Some(0.040)];
        // The untimed slot counts as the average (0.025).
        assert_eq!(rank(&latency, &[true; 5], &[]), vec![1, 3, 2, 0, 4]);
        // Slots 1 and 4 are unusable; data slots 2 and 0 are fast enough to go first.
        assert_eq!(rank(&latency, &[true, false, true, true, false], &DATA), vec![2, 0, 3]);
    }
}
