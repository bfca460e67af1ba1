//! The put and get pipelines: file ⇄ pieces, streaming, in bounded memory.
//!
//! Put: read a segment → zstd (only when a sample shows it helps) → seal with the file
//! key (STREAM: segment index and last flag in the nonce) → encode with the scheme →
//! append chunk i to piece i → finally hash every piece into a block. Get is the mirror
//! image and needs only a sufficient set of pieces; a piece that fails verification is
//! dropped and the segment is retried from the others. Segments are processed in
//! parallel and written in order; at most a small window of segments is in memory.
//!
//! This module knows block writers and readers, not where they live: the offline
//! commands, the tests and (later) the network each supply their own.

use crate::sync::Locked;
use std::io::{Read, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jewel_codec::{CodecError, Encoded, Scheme, SchemeSpec};

use crate::caps::ReadCap;
use crate::crypto::{fill_random, CipherId, CryptoError, FileKey, SegmentCipher, NONCE_PREFIX_LEN, TAG_LEN};
use crate::manifest::{Compression, Manifest, ManifestError, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::parallel::ordered_map;
use crate::pool::Pool;
use crate::store::{BlockReader, BlockStore, BlockWriter, StoreError};

/// Plaintext bytes per segment unless told otherwise.
pub const DEFAULT_SEGMENT_SIZE: u32 = 4 << 20;
/// Bytes of each segment compressed as a trial before compressing the whole segment.
const SAMPLE_LEN: usize = 64 << 10;
/// A sample must shrink below this fraction for the segment to be compressed.
const SAMPLE_RATIO: f64 = 0.9;
const ZSTD_LEVEL: i32 = 3;
const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

/// Why a put or a get failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error("reading the input: {0}")]
    Input(std::io::Error),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    #[error("disk full while writing the output")]
    OutputDiskFull,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Spec(#[from] jewel_codec::SpecError),
    #[error("{actual} piece slots were given, the scheme has {expected}")]
    SlotCount { expected: usize, actual: usize },
    #[error("segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes (got {0})")]
    SegmentSize(u32),
    #[error("segment {segment} decodes to {actual} bytes, {expected} were expected")]
    SegmentLength { segment: usize, expected: usize, actual: usize },
    #[error("the file is too large: at most 2^32 segments")]
    TooLarge,
}

impl PipelineError {
    fn output(e: std::io::Error) -> Self {
        if crate::store::is_disk_full(&e) {
            PipelineError::OutputDiskFull
        } else {
            PipelineError::Output(e)
        }
    }
}

/// How to put a file.
#[derive(Clone, Debug)]
pub struct PutOptions {
    pub scheme: SchemeSpec,
    pub segment_size: u32,
    pub cipher: CipherId,
    /// Try zstd on each segment (it is kept only where a sample shows it helps).
    pub compress: bool,
    /// Worker threads for compress/encrypt/encode.
    pub threads: usize,
}

impl PutOptions {
    pub fn new(scheme: SchemeSpec) -> Self {
        PutOptions {
            scheme,
            segment_size: DEFAULT_SEGMENT_SIZE,
            cipher: CipherId::preferred(),
            compress: true,
            threads: default_threads(),
        }
    }
}

/// The machine's parallelism (1 if unknown).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// What a put produced.
#[derive(Debug)]
pub struct Put {
    pub manifest: Manifest,
    /// The manifest's encoding: store it as a block under `cap.manifest`.
    pub manifest_bytes: Vec<u8>,
    pub cap: ReadCap,
    pub stats: PutStats,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PutStats {
    pub file_bytes: u64,
    pub stored_bytes: u64,
    pub segments: usize,
    pub compressed_segments: usize,
    pub elapsed: Duration,
}

/// Cuts a reader into segments, looking one segment ahead so that the last segment is
/// known to be last (the STREAM construction seals it so).
struct Segmenter<'a> {
    input: &'a mut (dyn Read + Send),
    pool: &'a Pool<Vec<u8>>,
    size: usize,
    ahead: Option<(Vec<u8>, bool)>,
    finished: bool,
}

impl Segmenter<'_> {
    /// One segment, with a byte of headroom for the flag and room for the tag; and
    /// whether the input ended inside it.
    fn read_one(&mut self) -> Result<(Vec<u8>, bool), PipelineError> {
        let mut buf = self.pool.take();
        buf.clear();
        buf.reserve_exact(1 + self.size + TAG_LEN);
        buf.push(FLAG_RAW);
        let mut limited = (&mut *self.input).take(self.size as u64);
        limited.read_to_end(&mut buf).map_err(PipelineError::Input)?;
        let eof = buf.len() < 1 + self.size;
        Ok((buf, eof))
    }

    fn next_segment(&mut self) -> Option<Result<(Vec<u8>, bool), PipelineError>> {
        if self.finished {
            return None;
        }
        let r = self.step();
        if r.is_err() {
            self.finished = true;
        }
        Some(r)
    }

    fn step(&mut self) -> Result<(Vec<u8>, bool), PipelineError> {
        let (cur, cur_eof) = match self.ahead.take() {
            Some(x) => x,
            None => self.read_one()?,
        };
        if cur_eof {
            self.finished = true;
            return Ok((cur, true));
        }
        let (next, next_eof) = self.read_one()?;
        if next_eof && next.len() == 1 {
            self.finished = true;
            return Ok((cur, true));
        }
        self.ahead = Some((next, next_eof));
        Ok((cur, false))
    }
}

/// Whether zstd is worth running on `data`: compress a sample first, since zstd on
/// incompressible data costs time for nothing.
fn worth_compressing(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(SAMPLE_LEN)];
    if sample.len() < 64 {
        return false;
    }
    match zstd::bulk::compress(sample, 1) {
        Ok(c) => (c.len() as f64) < sample.len() as f64 * SAMPLE_RATIO,
        Err(_) => false,
    }
}

/// Flag + payload, compressed where that helps. `buf` is `[FLAG_RAW, plaintext…]`.
fn maybe_compress(buf: Vec<u8>, pool: &Pool<Vec<u8>>) -> (Vec<u8>, bool) {
    let plain = &buf[1..];
    if !worth_compressing(plain) {
        return (buf, false);
    }
    let mut out = pool.take();
    out.clear();
    out.resize(buf.len(), 0);
    out[0] = FLAG_ZSTD;
    // Only a strictly smaller result fits the buffer; otherwise keep the raw bytes.
    match zstd::bulk::compress_to_buffer(plain, &mut out[1..plain.len()], ZSTD_LEVEL) {
        Ok(n) => {
            out.truncate(1 + n);
            out.reserve_exact(TAG_LEN);
            pool.give(buf);
            (out, true)
        }
        Err(_) => {
            pool.give(out);
            (buf, false)
        }
    }
}

/// Encrypts, encodes and stores a file as one piece per slot.
///
/// `sinks[i]` receives the piece of slot `i`; all are committed at the end, in parallel.
pub fn put(
    input: &mut (dyn Read + Send),
    opts: &PutOptions,
    sinks: Vec<Box<dyn BlockWriter>>,
) -> Result<Put, PipelineError> {
    let start = Instant::now();
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&opts.segment_size) {
        return Err(PipelineError::SegmentSize(opts.segment_size));
    }
    let scheme = jewel_codec::build(&opts.scheme)?;
    if sinks.len() != scheme.slots() {
        return Err(PipelineError::SlotCount { expected: scheme.slots(), actual: sinks.len() });
    }
    let key = FileKey::random()?;
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    fill_random(&mut nonce_prefix)?;
    let cipher = SegmentCipher::new(opts.cipher, &key, nonce_prefix)?;

    let threads = opts.threads.max(1);
    let window = threads + 2;
    let buffers: Pool<Vec<u8>> = Pool::new(2 * window + 2);
    let encodings: Pool<Encoded> = Pool::new(window + 1);
    let mut segmenter =
        Segmenter { input, pool: &buffers, size: opts.segment_size as usize, ahead: None, finished: false };
    let mut sinks = sinks;
    let mut segments: Vec<u32> = Vec::new();
    let mut file_bytes = 0u64;
    let mut compressed_segments = 0usize;

    ordered_map(
        threads,
        window,
        |_| segmenter.next_segment(),
        |i, (buf, last): (Vec<u8>, bool)| -> Result<_, PipelineError> {
            let plain_len = buf.len() - 1;
            let (mut buf, compressed) =
                if opts.compress { maybe_compress(buf, &buffers) } else { (buf, false) };
            cipher.seal(i as u64, last, &mut buf)?;
            let mut enc = encodings.take();
            scheme.encode(&buf, &mut enc)?;
            Ok((buf, enc, plain_len, compressed))
        },
        |i, (buf, enc, plain_len, compressed)| {
            if i > u32::MAX as usize {
                return Err(PipelineError::TooLarge);
            }
            for (slot, sink) in sinks.iter_mut().enumerate() {
                for part in enc.parts(&buf, slot)? {
                    sink.write(part)?;
                }
            }
            segments.push(buf.len() as u32);
            file_bytes += plain_len as u64;
            compressed_segments += usize::from(compressed);
            buffers.give(buf);
            encodings.give(enc);
            Ok(())
        },
    )?;

    let pieces = commit_all(sinks, threads)?;
    let manifest = Manifest {
        scheme: opts.scheme.clone(),
        segment_size: opts.segment_size,
        file_len: file_bytes,
        cipher: opts.cipher,
        compression: if opts.compress { Compression::Zstd } else { Compression::None },
        nonce_prefix,
        key_check: key.check_value(),
        segments,
        pieces,
    };
    let manifest_bytes = manifest.encode();
    let cap = ReadCap { manifest: crate::id::BlockId::of(&manifest_bytes), key };
    let stats = PutStats {
        file_bytes,
        stored_bytes: manifest.stored_len(scheme.as_ref()),
        segments: manifest.segments.len(),
        compressed_segments,
        elapsed: start.elapsed(),
    };
    Ok(Put { manifest, manifest_bytes, cap, stats })
}

/// Commits every writer (hashing each piece), `threads` at a time; ids in slot order.
fn commit_all(
    sinks: Vec<Box<dyn BlockWriter>>,
    threads: usize,
) -> Result<Vec<crate::id::BlockId>, PipelineError> {
    let n = sinks.len();
    let queue = Mutex::new(sinks.into_iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new(vec![None; n]);
    let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(n).max(1) {
            scope.spawn(|| loop {
                let next = queue.locked().pop();
                let Some((slot, sink)) = next else { break };
                match sink.commit(None) {
                    Ok(id) => {
                        let mut r = results.locked();
                        r[slot] = Some(id);
                    }
                    Err(e) => {
                        let mut f = first_error.locked();
                        f.get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e.into());
    }
    let results = results.into_inner().unwrap_or_default();
    results.into_iter().map(|r| r.ok_or(PipelineError::SlotCount { expected: n, actual: 0 })).collect()
}

/// A piece that could not be used, and why.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PieceFault {
    pub slot: usize,
    pub reason: String,
    /// The piece's bytes did not match its id (rot or a lie), rather than being out of
    /// reach: worth a repair.
    #[serde(default)]
    pub corrupt: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GetStats {
    pub file_bytes: u64,
    /// Bytes read from pieces (verified).
    pub bytes_read: u64,
    /// Of those, from each slot's piece.
    pub read_by_slot: Vec<u64>,
    /// Pieces that were missing, foreign, the wrong size or corrupt.
    pub faults: Vec<PieceFault>,
    pub elapsed: Duration,
}

/// The chunks a [`Fetch`] found for one segment, indexed by slot: those read into
/// buffers of their own, and the slots it wrote straight into their place instead.
#[derive(Debug, Default)]
pub struct Fetched {
    pub chunks: Vec<Option<Vec<u8>>>,
    pub placed: Vec<bool>,
}

/// Where a get finds the chunks of each segment. The local implementation reads the
/// given pieces in turn; the network one asks holders in parallel and hedges.
pub trait Fetch: Sync {
    /// Returns chunks that together decode segment `segment`. Slot `slot`'s chunk is
    /// `want[slot].1` bytes at offset `want[slot].0` of its piece. Buffers come from, and
    /// may be given back to, `pool`. Where `places[slot]` is given (the chunk's place in the
    /// segment being rebuilt, see `Scheme::placed_range`), the chunk may be written there
    /// instead and marked placed; a place that was written to but is not marked placed
    /// holds nothing of value. A piece that fails is recorded as a fault and routed
    /// around; only when no decodable set is left does this fail.
    fn fetch(
        &self,
        scheme: &dyn Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &Pool<Vec<u8>>,
        places: &mut [Option<&mut [u8]>],
    ) -> Result<Fetched, PipelineError>;

    /// Verified bytes read so far from each slot, and the faults seen.
    fn report(&self) -> (Vec<u64>, Vec<PieceFault>);
}

/// What a [`Fetch`] keeps for its report: verified bytes read from each slot, counted as
/// reads complete, and every fault seen.
pub struct FetchLog {
    read: Vec<AtomicU64>,
    faults: Mutex<Vec<PieceFault>>,
}

impl FetchLog {
    pub fn new(slots: usize, faults: Vec<PieceFault>) -> Self {
        FetchLog { read: (0..slots).map(|_| AtomicU64::new(0)).collect(), faults: Mutex::new(faults) }
    }

    pub fn read(&self, slot: usize, bytes: usize) {
        if let Some(c) = self.read.get(slot) {
            c.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn fault(&self, slot: usize, reason: String, corrupt: bool) {
        self.faults.locked().push(PieceFault { slot, reason, corrupt });
    }

    pub fn report(&self) -> (Vec<u64>, Vec<PieceFault>) {
        let read = self.read.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        (read, self.faults.locked().clone())
    }
}

/// Reads the given pieces one after another (local stores).
struct LocalFetch {
    sources: Vec<Option<Box<dyn BlockReader>>>,
    alive: Mutex<Vec<bool>>,
    log: FetchLog,
}

impl Fetch for LocalFetch {
    fn fetch(
        &self,
        scheme: &dyn Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &Pool<Vec<u8>>,
        places: &mut [Option<&mut [u8]>],
    ) -> Result<Fetched, PipelineError> {
        let n = want.len();
        // Chunks read into their place stay there across the retries below.
        let mut placed = vec![false; n];
        loop {
            let alive_now = self.alive.locked().clone();
            let Some(chosen) = scheme.select(&alive_now) else {
                return Err(CodecError::NotEnoughPieces {
                    needed: scheme.min_peers(),
                    available: alive_now.iter().filter(|a| **a).count(),
                }
                .into());
            };
            let mut chunks: Vec<Option<Vec<u8>>> = vec![None; n];
            let mut lost = None;
            for (slot, use_it) in chosen.iter().enumerate() {
                let (true, false, Some(src)) = (*use_it, placed[slot], self.sources[slot].as_ref()) else {
                    continue;
                };
                if let Some(place) = places.get_mut(slot).and_then(Option::as_deref_mut) {
                    match src.read_at(want[slot].0, place) {
                        Ok(()) => {
                            self.log.read(slot, place.len());
                            placed[slot] = true;
                            continue;
                        }
                        Err(e) => {
                            lost = Some((slot, e));
                            break;
                        }
                    }
                }
                // Overwritten whole by the read: a reused buffer is not zeroed again.
                let mut buf = pool.take();
                buf.resize(want[slot].1, 0);
                match src.read_at(want[slot].0, &mut buf) {
                    Ok(()) => {
                        self.log.read(slot, buf.len());
                        chunks[slot] = Some(buf);
                    }
                    Err(e) => {
                        pool.give(buf);
                        lost = Some((slot, e));
                        break;
                    }
                }
            }
            let Some((slot, e)) = lost else { return Ok(Fetched { chunks, placed }) };
            tracing::warn!(slot, segment, error = %e, "piece failed; rebuilding from the others");
            self.alive.locked()[slot] = false;
            let corrupt = matches!(e, StoreError::Corrupt { .. });
            self.log.fault(slot, e.to_string(), corrupt);
            chunks.into_iter().flatten().for_each(|c| pool.give(c));
        }
    }

    fn report(&self) -> (Vec<u64>, Vec<PieceFault>) {
        self.log.report()
    }
}

/// Rebuilds a file from whichever pieces are given (`sources[i]` for slot `i`, `None`
/// if absent) and writes it to `out`. Corrupt or foreign pieces are skipped while
/// enough good ones remain; the output is never wrong, only absent.
pub fn get(
    manifest: &Manifest,
    key: &FileKey,
    sources: Vec<Option<Box<dyn BlockReader>>>,
    out: &mut dyn Write,
    threads: usize,
) -> Result<GetStats, PipelineError> {
    let fetch = local_fetch(manifest, sources)?;
    get_with(manifest, key, &fetch, ByteRange::ALL, out, threads)
}

/// A [`Fetch`] over the given pieces (`sources[i]` for slot `i`, `None` if absent), read
/// in turn. Pieces that are foreign or the wrong size are faults from the start.
pub fn local_fetch(
    manifest: &Manifest,
    sources: Vec<Option<Box<dyn BlockReader>>>,
) -> Result<impl Fetch, PipelineError> {
    let scheme = manifest.build_scheme()?;
    let n = scheme.slots();
    if sources.len() != n {
        return Err(PipelineError::SlotCount { expected: n, actual: sources.len() });
    }
    let mut faults = Vec::new();
    let sources: Vec<Option<Box<dyn BlockReader>>> = sources
        .into_iter()
        .enumerate()
        .map(|(slot, src)| {
            let src = src?;
            let want = manifest.pieces.get(slot).copied();
            let expected = manifest.piece_len(scheme.as_ref(), slot);
            let reason = if Some(src.id()) != want {
                Some("holds a block that is not this file's piece".to_string())
            } else if src.len() != expected {
                Some(format!("is {} bytes, {expected} expected", src.len()))
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    faults.push(PieceFault { slot, reason, corrupt: false });
                    None
                }
                None => Some(src),
            }
        })
        .collect();
    Ok(LocalFetch {
        alive: Mutex::new(sources.iter().map(Option::is_some).collect()),
        sources,
        log: FetchLog::new(n, faults),
    })
}

/// Fetches a decodable set of segment `i`'s chunks and decodes them into `out` (the
/// stored segment: flag, payload and tag, still sealed).
fn fetch_segment(
    manifest: &Manifest,
    scheme: &dyn Scheme,
    offsets: &[Vec<u64>],
    fetch: &dyn Fetch,
    i: usize,
    buffers: &Pool<Vec<u8>>,
    out: &mut Vec<u8>,
) -> Result<(), PipelineError> {
    let seg_len = manifest.segments[i] as usize;
    let n = scheme.slots();
    let want: Vec<(u64, usize)> =
        (0..n).map(|slot| (offsets[i][slot], scheme.chunk_len(slot, seg_len))).collect();
    // Chunks that lie whole in the decoded segment (data shards) are read straight into
    // their place: one copy fewer. `out` only grows; stale bytes are overwritten.
    let ranges: Vec<Option<Range<usize>>> =
        (0..n).map(|slot| scheme.placed_range(slot, seg_len).filter(|r| r.len() == want[slot].1)).collect();
    let room = ranges.iter().flatten().map(|r| r.end).max().unwrap_or(0);
    if out.len() < room {
        out.resize(room, 0);
    }
    let mut places = split_places(out, &ranges);
    let Fetched { mut chunks, placed } = fetch.fetch(scheme, i, &want, buffers, &mut places)?;
    drop(places);
    let r = scheme.decode_placed(seg_len, &mut chunks, &placed, out);
    chunks.into_iter().flatten().for_each(|c| buffers.give(c));
    Ok(r?)
}

/// Cuts `buf` into the given places, one per slot (`None` where a slot has none, or
/// where its range overlaps an earlier one or runs past `buf`).
fn split_places<'a>(buf: &'a mut [u8], ranges: &[Option<Range<usize>>]) -> Vec<Option<&'a mut [u8]>> {
    let mut order: Vec<(usize, Range<usize>)> =
        ranges.iter().enumerate().filter_map(|(s, r)| Some((s, r.clone()?))).collect();
    order.sort_by_key(|(_, r)| r.start);
    let mut places: Vec<Option<&'a mut [u8]>> = ranges.iter().map(|_| None).collect();
    let (mut rest, mut at) = (buf, 0usize);
    for (slot, r) in order {
        if r.start < at || r.end - at > rest.len() {
            continue;
        }
        let (_, from) = std::mem::take(&mut rest).split_at_mut(r.start - at);
        let (place, after) = from.split_at_mut(r.len());
        places[slot] = Some(place);
        (rest, at) = (after, r.end);
    }
    places
}

/// Rebuilds the pieces of `slots` from whatever `fetch` can read: each segment is decoded
/// from a decodable set of the other pieces and encoded again, and the chunks of `slots`
/// go to `sinks` (one per entry of `slots`, in order). Encoding is deterministic, so a
/// rebuilt piece is byte-identical to the lost one and keeps its id; the ids are returned
/// for the caller to check against the manifest. No key is needed: only ciphertext moves.
pub fn rebuild(
    manifest: &Manifest,
    fetch: &dyn Fetch,
    slots: &[usize],
    sinks: Vec<Box<dyn BlockWriter>>,
    threads: usize,
) -> Result<Vec<crate::id::BlockId>, PipelineError> {
    let scheme = manifest.build_scheme()?;
    let n = scheme.slots();
    if sinks.len() != slots.len() || slots.iter().any(|s| *s >= n) {
        return Err(PipelineError::SlotCount { expected: slots.len(), actual: sinks.len() });
    }
    let offsets = chunk_offsets(manifest, scheme.as_ref());
    let count = manifest.segments.len();
    let threads = threads.max(1);
    let window = threads + 2;
    let buffers: Pool<Vec<u8>> = Pool::new((n + 2) * window);
    let segments: Pool<Vec<u8>> = Pool::new(window + 1);
    let encodings: Pool<Encoded> = Pool::new(window + 1);
    let mut sinks = sinks;
    ordered_map(
        threads,
        window,
        |i| (i < count).then_some(Ok(i)),
        |_, i| -> Result<(Vec<u8>, Encoded), PipelineError> {
            let mut buf = segments.take();
            fetch_segment(manifest, scheme.as_ref(), &offsets, fetch, i, &buffers, &mut buf)?;
            let mut enc = encodings.take();
            scheme.encode(&buf, &mut enc)?;
            Ok((buf, enc))
        },
        |_, (buf, enc)| {
            for (sink, slot) in sinks.iter_mut().zip(slots) {
                for part in enc.parts(&buf, *slot)? {
                    sink.write(part)?;
                }
            }
            segments.give(buf);
            encodings.give(enc);
            Ok(())
        },
    )?;
    commit_all(sinks, threads)
}

/// A range of a file's plaintext bytes: `start..end`, `end` exclusive and clamped to the
/// file's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub const ALL: ByteRange = ByteRange { start: 0, end: u64::MAX };
}

/// Where segment `i`'s chunk starts in each piece, for every segment.
pub fn chunk_offsets(manifest: &Manifest, scheme: &dyn Scheme) -> Vec<Vec<u64>> {
    let mut offsets = Vec::with_capacity(manifest.segments.len());
    let mut running = vec![0u64; scheme.slots()];
    for seg in &manifest.segments {
        offsets.push(running.clone());
        for (slot, off) in running.iter_mut().enumerate() {
            *off += scheme.chunk_len(slot, *seg as usize) as u64;
        }
    }
    offsets
}

/// Rebuilds bytes `range` of a file, reading only the segments that cover it, with
/// chunks from `fetch`, and writes them to `out`.
pub fn get_with(
    manifest: &Manifest,
    key: &FileKey,
    fetch: &dyn Fetch,
    range: ByteRange,
    out: &mut dyn Write,
    threads: usize,
) -> Result<GetStats, PipelineError> {
    let start = Instant::now();
    manifest.check_key(key)?;
    let scheme = manifest.build_scheme()?;
    let n = scheme.slots();
    if manifest.segments.len() != Manifest::segment_count(manifest.file_len, manifest.segment_size) as usize {
        return Err(ManifestError::Invalid("segment count does not match the file length").into());
    }
    let offsets = chunk_offsets(manifest, scheme.as_ref());
    let count = manifest.segments.len();
    let end = range.end.min(manifest.file_len);
    let seg_size = u64::from(manifest.segment_size);
    // Segments overlapping start..end; an empty range still reads nothing.
    let first = (range.start / seg_size) as usize;
    let last = if range.start >= end { first } else { end.div_ceil(seg_size) as usize };
    let (first, last) = if manifest.file_len == 0 && range.start == 0 { (0, count) } else { (first, last) };

    let cipher = SegmentCipher::new(manifest.cipher, key, manifest.nonce_prefix)?;
    let mut file_bytes = 0u64;
    let threads = threads.max(1);
    let window = threads + 2;
    // Chunk-sized and segment-sized buffers apart, so a pooled chunk buffer never holds a
    // whole segment's worth of resident memory.
    let buffers: Pool<Vec<u8>> = Pool::new((n + 2) * window);
    let segments: Pool<Vec<u8>> = Pool::new(window + 1);

    ordered_map(
        threads,
        window,
        |i| (first + i < last).then_some(Ok(first + i)),
        |_, i| -> Result<(Vec<u8>, usize, usize), PipelineError> {
            let mut buf = segments.take();
            fetch_segment(manifest, scheme.as_ref(), &offsets, fetch, i, &buffers, &mut buf)?;
            cipher.open(i as u64, i + 1 == count, &mut buf)?;
            let expected = manifest.plain_len(i);
            let (plain, from) = match buf.first() {
                Some(&FLAG_ZSTD) => {
                    let plain = zstd::bulk::decompress(&buf[1..], expected)
                        .map_err(|_| PipelineError::SegmentLength { segment: i, expected, actual: 0 })?;
                    if plain.len() != expected {
                        return Err(PipelineError::SegmentLength {
                            segment: i,
                            expected,
                            actual: plain.len(),
                        });
                    }
                    segments.give(buf);
                    (plain, 0)
                }
                Some(&FLAG_RAW) if buf.len() - 1 == expected => (buf, 1),
                _ => {
                    return Err(PipelineError::SegmentLength {
                        segment: i,
                        expected,
                        actual: buf.len().saturating_sub(1),
                    })
                }
            };
            // Trim to the range: segment i holds plaintext bytes i*seg_size.. .
            let seg_start = i as u64 * seg_size;
            let lo = range.start.saturating_sub(seg_start).min(expected as u64) as usize;
            let hi = end.saturating_sub(seg_start).min(expected as u64) as usize;
            Ok((plain, from + lo, from + hi.max(lo)))
        },
        |_, (buf, from, to)| {
            out.write_all(&buf[from..to]).map_err(PipelineError::output)?;
            file_bytes += (to - from) as u64;
            segments.give(buf);
            Ok(())
        },
    )?;
    out.flush().map_err(PipelineError::output)?;
    let (read_by_slot, faults) = fetch.report();
    Ok(GetStats {
        file_bytes,
        bytes_read: read_by_slot.iter().sum(),
        read_by_slot,
        faults,
        elapsed: start.elapsed(),
    })
}

/// Readers for a file's pieces when slot `i` lives in `stores[i]` and only the slots
/// marked alive may be used (missing blocks count as absent).
pub fn slot_sources<S: BlockStore>(
    stores: &[S],
    manifest: &Manifest,
    alive: &[bool],
) -> Vec<Option<Box<dyn BlockReader>>> {
    manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, id)| {
            let up = alive.get(slot).copied().unwrap_or(false);
            if up {
                stores.get(slot).and_then(|s| s.reader(id).ok())
            } else {
                None
            }
        })
        .collect()
}
