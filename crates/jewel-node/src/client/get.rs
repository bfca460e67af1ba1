//! A network get: each segment from the holders that would send it soonest and can decode
//! it (given what each is already asked for and the rate it sends at, so every holder gets
//! work in proportion to its rate), verified as it arrives, hedged onto idle holders when
//! one is slow.

use jewel::sync::Locked;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jewel::codec::CodecError;
use jewel::crypto::FileKey;
use jewel::manifest::Manifest;
use jewel::pipeline::{self, ByteRange, FetchLog, Fetched, GetStats, PieceFault, PipelineError};
use jewel::policy::{self, rank};
use jewel::pool::Pool;
use jewel::store::{BlockReader, BlockStore};
use jewel::BlockId;
use jewel_net::{wire, BlockClient, NetError, PeerId};

use super::fanout::{fan_out, Flow, Strategy};
use super::ClientError;
use crate::bridge::Bridge;

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
    /// Chunks it sent that did not verify, in this get.
    bad_chunks: u32,
    /// Bytes it was asked for and has not sent yet, in requests still open.
    queued: u64,
    /// Requests open to it.
    open: u32,
    /// Bytes it sent, and the time it was busy (had a request open) before the current
    /// stretch, which began at `busy_since`: its rate is what it sent over its busy time,
    /// however many requests were open at once.
    sent: u64,
    busy: Duration,
    busy_since: Option<Instant>,
}

impl Health {
    /// Bytes per second it sent while busy, once it has sent anything.
    fn rate(&self) -> Option<f64> {
        let busy = self.busy + self.busy_since.map_or(Duration::ZERO, |t| t.elapsed());
        (self.sent > 0 && !busy.is_zero()).then(|| self.sent as f64 / busy.as_secs_f64())
    }
}

/// A request open to a holder, counted in its [`Health`] until dropped (answered, failed
/// or cancelled: a segment that decoded drops the requests still open).
struct Open<'a> {
    fetch: &'a NetFetch,
    slot: usize,
    len: u64,
    sent: bool,
}

impl<'a> Open<'a> {
    fn new(fetch: &'a NetFetch, slot: usize, len: u64) -> Open<'a> {
        let mut health = fetch.health.locked();
        let h = &mut health[slot];
        h.queued = h.queued.saturating_add(len);
        if h.open == 0 {
            h.busy_since = Some(Instant::now());
        }
        h.open = h.open.saturating_add(1);
        Open { fetch, slot, len, sent: false }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let mut health = self.fetch.health.locked();
        let h = &mut health[self.slot];
        h.queued = h.queued.saturating_sub(self.len);
        h.open = h.open.saturating_sub(1);
        if self.sent {
            h.sent = h.sent.saturating_add(self.len);
        }
        if h.open == 0 {
            if let Some(t) = h.busy_since.take() {
                h.busy += t.elapsed();
            }
        }
    }
}

/// A holder that sent this many chunks that do not verify is not asked again in a get.
pub const MAX_BAD_CHUNKS: u32 = 3;

/// Whether a failed read was bad bytes (a chunk that does not match the piece's id, or a
/// holder that says its copy is damaged) rather than a holder out of reach.
fn is_bad_data(e: &NetError) -> bool {
    use jewel_net::wire::{Status, WireError};
    matches!(
        e,
        NetError::Fragment { .. } | NetError::Wire(WireError::Refused { status: Status::Corrupt, .. })
    )
}

/// Segments a network get works on at once: more than the cores, as each mostly waits
/// for holders.
pub const GET_THREADS: usize = 3;

/// Chunks from holders over the network, for [`pipeline::get_with`]. For each segment it
/// asks the set of holders that can decode it at least cost ([`policy::queue_cost`]: the
/// bytes a holder is already asked for plus the chunk, at its rate), all at once; when one fails it is
/// dropped for the rest of the get and another holder is asked; when one is slow (longer
/// than [`policy::HEDGE_FACTOR`] × the typical answer), spare holders are asked too. The first
/// decodable set of verified chunks wins and the other requests are cancelled.
pub struct NetFetch {
    net: BlockClient,
    holders: Vec<Option<PeerId>>,
    /// Slots whose piece this node's own store holds: read from there, before any peer.
    local: Vec<Option<Box<dyn BlockReader>>>,
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

impl NetFetch {
    pub fn new(
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
            net,
            holders,
            local: (0..n).map(|_| None).collect(),
            ids: manifest.pieces.clone(),
            sizes,
            health: Mutex::new(vec![Health::default(); n]),
            log: FetchLog::new(n, Vec::new()),
        })
    }

    /// Reads the pieces that `store` (this node's own) holds from there, first: they count
    /// as answered at once, so they rank before every peer.
    pub fn with_local(mut self, store: &dyn BlockStore) -> NetFetch {
        // Owned: no other thread can hold the lock.
        let health = self.health.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (slot, id) in self.ids.iter().enumerate() {
            let Ok(reader) = store.reader(id) else { continue };
            if reader.len() != self.sizes[slot] {
                continue;
            }
            self.local[slot] = Some(reader);
            if let Some(h) = health.get_mut(slot) {
                *h = Health { answered: 1, ..Health::default() };
            }
        }
        self
    }

    /// Usable slots in the order to ask them for `len` bytes each: by what that would cost
    /// each holder given what it is already asked for and its rate ([`policy::queue_cost`]),
    /// pieces this node holds first (see [`rank`]).
    fn order(&self, preferred: &[bool], len: u64) -> Vec<usize> {
        let health = self.health.locked().clone();
        let rates: Vec<Option<f64>> = health.iter().map(Health::rate).collect();
        let mut known: Vec<f64> = rates.iter().flatten().copied().collect();
        known.sort_by(f64::total_cmp);
        let typical = known.get(known.len() / 2).copied();
        let latency: Vec<Option<f64>> = (0..self.holders.len())
            .map(|s| {
                if self.local[s].is_some() {
                    return Some(0.0);
                }
                let h = health.get(s).copied().unwrap_or_default();
                Some(policy::queue_cost(h.queued, len, rates.get(s).copied().flatten(), typical))
            })
            .collect();
        let usable: Vec<bool> = (0..self.holders.len())
            .map(|s| {
                (self.holders[s].is_some() || self.local[s].is_some())
                    && !health.get(s).is_some_and(|h| h.dead)
            })
            .collect();
        rank(&latency, &usable, preferred)
    }

    fn hedge_delay(&self) -> Duration {
        let health = self.health.locked().clone();
        let timed: Vec<f64> = health.iter().filter(|h| h.answered > 0).map(|h| h.latency).collect();
        policy::hedge_delay(&timed)
    }

    fn record(&self, slot: usize, took: Duration) {
        let mut health = self.health.locked();
        let h = &mut health[slot];
        let t = took.as_secs_f64();
        h.latency = if h.answered == 0 { t } else { 0.7 * h.latency + 0.3 * t };
        h.answered = h.answered.saturating_add(1);
    }

    /// A request outrun by others still tells how slow its holder is: at least `took`.
    fn record_slow(&self, slot: usize, took: Duration) {
        let mut health = self.health.locked();
        let h = &mut health[slot];
        h.latency = h.latency.max(took.as_secs_f64());
        h.answered = h.answered.max(1);
    }

    /// Makes a holder that failed in transport (not with a bad answer) usable again.
    fn revive(&self, slot: usize) -> bool {
        let mut h = self.health.locked();
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
        // Bad bytes condemn that chunk, not the holder: it is asked again for other
        // segments until it has failed MAX_BAD_CHUNKS times. A holder out of reach is
        // dropped at once.
        let corrupt = is_bad_data(e);
        {
            let mut h = self.health.locked();
            let h = &mut h[slot];
            if corrupt {
                h.bad_chunks += 1;
                h.dead = h.bad_chunks >= MAX_BAD_CHUNKS;
            } else {
                h.dead = true;
                // A cut stream, not an unreachable peer (asking that again only waits).
                h.transient = matches!(e, NetError::Wire(jewel_net::wire::WireError::Io(_)));
            }
        }
        self.log.fault(slot, e.to_string(), corrupt);
    }

    /// The fastest usable slots, outside `exclude`, that make `held` decodable; empty if
    /// `held` already decodes or no choice can.
    fn complete(
        &self,
        scheme: &dyn jewel_codec::Scheme,
        held: &[bool],
        exclude: &[bool],
        len: u64,
    ) -> Vec<usize> {
        let mut mask = held.to_vec();
        let mut add = Vec::new();
        let preferred = scheme.select(&vec![true; held.len()]).unwrap_or_default();
        for slot in self.order(&preferred, len) {
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
        if let Some(reader) = &self.local[slot] {
            // Verified by the store as it reads; a read of a few hundred KiB from this
            // node's disk, on the pipeline's blocking thread.
            return match into {
                ReadInto::Place(place) => reader.read_at(offset, place).map(|()| None),
                ReadInto::Pooled => {
                    let mut out = pool.take();
                    out.resize(len, 0);
                    reader.read_at(offset, &mut out).map(|()| Some(out))
                }
            }
            .map_err(NetError::Store);
        }
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

    /// Fetches the chunks `want` of one segment (see [`NetFetch`]); the blocking pipeline
    /// reaches it through [`crate::bridge::Bridge::fetch`].
    pub async fn segment<'p>(
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
            // Counted as queued now, not when the future first runs: segments fetched at
            // once each choose their holders seeing what the others just asked for (else
            // all of them may pick the same holders and leave others idle).
            let open = Open::new(self, slot, len as u64);
            Box::pin(async move {
                // Moved in whole (not only the field set below): it counts until the read ends.
                let mut open = open;
                let t = Instant::now();
                let (r, back) = match place {
                    Some(place) => {
                        let r = self.read(slot, offset, len, pool, ReadInto::Place(&mut *place)).await;
                        let back = r.is_err().then_some(place);
                        (r, back)
                    }
                    None => (self.read(slot, offset, len, pool, ReadInto::Pooled).await, None),
                };
                open.sent = r.is_ok();
                (slot, r, t.elapsed(), back)
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = Answer<'p>> + Send + '_>>
        };
        {
            let started = Instant::now();
            let chunk = want.iter().map(|w| w.1 as u64).max().unwrap_or(0);
            for slot in self.complete(scheme, &asked, &asked, chunk) {
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
                        let available = self.order(&[], chunk).len();
                        return Err(
                            CodecError::NotEnoughPieces { needed: scheme.min_peers(), available }.into()
                        );
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
                            for extra in self.complete(scheme, &coming, &asked, chunk) {
                                pending.push(ask(extra, &mut asked, places));
                            }
                        }
                    },
                    () = &mut hedge, if !hedged => {
                        hedged = true;
                        // As many spares as answers are late, fastest first.
                        let late = (0..n).filter(|&s| asked[s] && !got[s] && !failed[s]).count();
                        // Spares are for speed: the idle fast holders first, whatever
                        // their slot.
                        let spares: Vec<usize> =
                            self.order(&[], chunk).into_iter().filter(|s| !asked[*s]).take(late).collect();
                        for extra in spares {
                            pending.push(ask(extra, &mut asked, places));
                        }
                    }
                }
            }
        }
    }

    /// Verified bytes read per slot so far, and the faults seen.
    pub fn report(&self) -> (Vec<u64>, Vec<PieceFault>) {
        self.log.report()
    }
}

/// Finds the holder of every slot of file `id`: the recorded placement first, else one
/// of the manifest's providers that holds the piece (see [`super::find::ask_holders`]).
pub async fn locate(
    blocks: &BlockClient,
    id: BlockId,
    manifest: &Manifest,
    placement: Option<&[PeerId]>,
) -> Vec<Option<PeerId>> {
    let found: Vec<Option<PeerId>> =
        placement.map(|p| p.iter().copied().map(Some).collect()).unwrap_or_default();
    super::find::ask_holders(blocks, id, manifest, found).await
}

/// Another holder is asked for the manifest when the ones asked have not answered within
/// this: a frozen holder costs this much, not its whole answer timeout.
const MANIFEST_STAGGER: Duration = Duration::from_millis(250);

/// Fetches and verifies the manifest `id` from any of `peers`, or from DHT providers:
/// the first is asked at once, one more each [`MANIFEST_STAGGER`] or as soon as one fails,
/// and the first verified copy wins.
pub async fn fetch_manifest(
    blocks: &BlockClient,
    id: BlockId,
    peers: &[PeerId],
) -> Result<Manifest, ClientError> {
    let mut candidates = peers.to_vec();
    if candidates.is_empty() {
        candidates = blocks.net().providers(id).await.unwrap_or_default();
    }
    let ask = |peer: PeerId| manifest_from(blocks, peer, id);
    let mut found = None;
    let at_once = candidates.len();
    fan_out(candidates, Strategy::first(MANIFEST_STAGGER, at_once), ask, |peer, got| match got {
        Some(Ok(m)) => {
            found = Some(m);
            Flow::Stop
        }
        Some(Err(e)) => {
            tracing::debug!(%peer, manifest = %id, error = %e, "no manifest from this peer");
            Flow::Go
        }
        None => Flow::Go,
    })
    .await;
    found.ok_or(ClientError::ManifestNotFound(id))
}

/// The manifest `id` from one peer, verified: one round trip if it fits in one chunk group
/// (it nearly always does), else a second for the rest.
async fn manifest_from(blocks: &BlockClient, peer: PeerId, id: BlockId) -> Result<Manifest, ClientError> {
    let (size, head) = blocks.block_head(peer, id).await?;
    if size > jewel::manifest::MAX_MANIFEST_LEN as u64 {
        return Err(ClientError::ManifestNotFound(id));
    }
    let bytes =
        if head.len() as u64 == size { head } else { blocks.get_range(peer, id, size, 0, size).await? };
    Ok(Manifest::decode(&bytes).map_err(PipelineError::from)?)
}

/// Rebuilds bytes `range` of a file from its holders (`holders[i]` for slot i, `None` if
/// unknown), asking them in parallel and hedging (see [`NetFetch`]), into `out`, which
/// comes back with the get's statistics.
#[allow(clippy::too_many_arguments)]
pub async fn get_file<W: Write + Send + 'static>(
    blocks: &BlockClient,
    manifest: &Manifest,
    key: &FileKey,
    holders: &[Option<PeerId>],
    range: ByteRange,
    mut out: W,
    threads: usize,
) -> Result<(GetStats, W), ClientError> {
    let fetch = NetFetch::new(blocks.clone(), manifest, holders)?;
    let (manifest, key) = (manifest.clone(), key.clone());
    let stats = Bridge::run(move |bridge| {
        pipeline::get_with(&manifest, &key, &bridge.fetch(&fetch), range, &mut out, threads).map(|s| (s, out))
    })
    .await??;
    Ok(stats)
}
