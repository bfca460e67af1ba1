//! The node's operations on files: put, get, release, and what it knows of its store and
//! peers. Each returns its own domain error; the API turns them into HTTP statuses at its
//! edge (`http`). Work that blocks (pipelines, store scans) runs on the blocking pool.

use jewel::sync::Locked;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jewel::caps::{Cap, CapError, ReadCap};
use jewel::codec::SchemeSpec;
use jewel::manifest::Manifest;
use jewel::pipeline::{ByteRange, PutOptions};
use jewel::policy::{self, Candidate, PolicyError};
use jewel::store::{BlockStore, FsStore};
use jewel::BlockId;
use jewel_net::{BlockClient, NetError, PeerId};

use crate::api::{
    BlockEntry, DirResponse, GetRequest, GetResponse, Peer, PutRequest, PutResponse, RmResponse, Settings,
};
use crate::bridge::Bridge;
use crate::client::{self, ClientError, NetFetch};
use crate::jobs::{Counted, CountedFetch, Jobs};
use crate::state::{StateError, StateStore, StoredFile};
use crate::workers::Clock;

/// The scheme `put` uses when none is given.
pub const DEFAULT_SCHEME: &str = "jewels:3/5";
/// Whether a put that failed with `e` may succeed with other peers: one that lied about a
/// piece, or said it is full (both are remembered, see [`Node::put_input`]).
/// Whether a put that failed so is tried again, on a new placement: its pieces went to
/// peers that could not prove them, or that refused, stalled or failed (full, frozen,
/// overloaded, gone) after its spares ran out. The next placement leaves out liars and
/// peers found silent, and asks full ones last, so it reaches others while any can take
/// the pieces.
fn worth_another_try(e: &ClientError) -> bool {
    matches!(e, ClientError::Unproven { .. } | ClientError::Upload { .. })
}

/// Peers tried at once for one placement.
const MAX_CANDIDATES: usize = 64;
/// Rounds of [`MAX_CANDIDATES`] tried while fewer than [`ENOUGH_REACHED`] answered.
const REACH_ROUNDS: usize = 4;
/// Candidates that make a round enough, at least (a put asks for its pieces and as many
/// spares).
const ENOUGH_REACHED: usize = 16;
/// A candidate that cannot be connected to within this is left out.
const REACH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a put that knows too few peers walks the DHT for more, at most.
const WALK_FOR_PEERS: Duration = Duration::from_secs(5);

/// Everything the node's operations and workers share.
pub(crate) struct Node {
    /// The node's home folder.
    pub home: PathBuf,
    pub store: FsStore,
    pub blocks: BlockClient,
    pub state: Arc<StateStore>,
    pub jobs: Jobs,
    pub clock: Arc<dyn Clock>,
    /// Seconds the leases on this node's files run.
    pub lease_secs: u32,
    /// Repair once fewer than k + margin pieces are alive (default (n-k)/2).
    pub repair_margin: Option<usize>,
    /// Files being repaired now (at most one repair per file).
    pub repairing: Mutex<HashSet<BlockId>>,
    /// Puts, gets, repairs and full verifications running at once, at most
    /// [`MAX_TRANSFERS`]; more wait their turn.
    pub transfers: tokio::sync::Semaphore,
    /// Small puts at once, at most [`MAX_SMALL_PUTS`] (see [`SMALL_PUT`]).
    pub small_puts: tokio::sync::Semaphore,
    /// Packs read into memory at once, at most [`crate::pack::MAX_PACKS`].
    pub packing: tokio::sync::Semaphore,
    /// Files read lately, found: a reader's many short reads (a gateway's ranges) find a
    /// file once per [`LOCATED_FOR`], not each time.
    pub located: Mutex<std::collections::HashMap<BlockId, Located>>,
    /// Puts whose data is still being read (a put's reader holds one [`Reading`]).
    pub reading: Arc<std::sync::atomic::AtomicUsize>,
    /// Peers that refused a piece for want of room, and when: placed last for
    /// [`FULL_FOR`].
    pub full: Mutex<std::collections::HashMap<PeerId, Instant>>,
    /// Peers that took a piece and could not prove it right after, and when: given no
    /// pieces for [`LIAR_FOR`].
    pub liars: Mutex<std::collections::HashMap<PeerId, Instant>>,
    /// When this node first saw each peer (Unix seconds; kept in the state store): a peer
    /// seen for less than [`TRUST_AFTER`] holds at most what a file tolerates losing.
    pub seen: Mutex<std::collections::HashMap<PeerId, u64>>,
    /// The user's index on this device.
    pub index: Arc<crate::index::IndexService>,
    /// The puts and gets users wait for: background work waits for them (see
    /// [`crate::users`]).
    pub users: crate::users::UserWork,
    /// Gets running, by output: a get to an output another is writing stops that one
    /// first (its client was interrupted, and the user runs it again to resume), so two
    /// gets never write one part file.
    pub gets: Mutex<std::collections::HashMap<std::path::PathBuf, RunningGet>>,
}

/// A get running into an output (see [`Node::gets`]).
pub struct RunningGet {
    /// Set to stop it before its next segment.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// True once its pipeline has ended (its part file is free).
    ended: tokio::sync::watch::Receiver<bool>,
}

/// How long a get waits for an earlier get to the same output to stop.
const EARLIER_GET_STOPS: Duration = Duration::from_secs(30);

/// A get's place in [`Node::gets`], held by its pipeline: dropped when the pipeline has
/// really ended (not when its caller stopped waiting), it frees the place and says so
/// ([`RunningGet::ended`]).
struct Ended {
    node: Arc<Node>,
    out: std::path::PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ended: tokio::sync::watch::Sender<bool>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let mut gets = self.node.gets.locked();
        if gets.get(&self.out).is_some_and(|g| Arc::ptr_eq(&g.stop, &self.stop)) {
            gets.remove(&self.out);
        }
        drop(gets);
        let _ = self.ended.send(true);
    }
}

/// A file found for reading: when, its manifest, and its pieces' holders.
pub type Located = (Instant, Manifest, Vec<Option<PeerId>>);

/// How long what [`Node::locate`] found serves further reads of the file.
const LOCATED_FOR: Duration = Duration::from_secs(10);
/// Files whose whereabouts are kept for reads, at most.
const LOCATED_KEPT: usize = 256;
/// How long a peer that refused a piece for want of room is placed after the others.
pub const FULL_FOR: Duration = Duration::from_secs(600);
/// Peers remembered as full, at most.
const FULL_REMEMBERED: usize = 1024;
/// How long a peer must have been known to this node before it may hold more of a file's
/// pieces than the file tolerates losing.
pub const TRUST_AFTER: u64 = 24 * 3600;
/// Peers whose first sighting is remembered, at most.
const MAX_SEEN: usize = 100_000;

/// Attempts of a put of a file whose pieces some peers took and could not prove.
const LIE_ATTEMPTS: u32 = 3;
/// How long a peer that could not prove a piece it just took gets no pieces.
pub const LIAR_FOR: Duration = Duration::from_secs(3600);

/// The peers noted in `map` within `within` (older notes are dropped).
fn recent(map: &Mutex<std::collections::HashMap<PeerId, Instant>>, within: Duration) -> HashSet<PeerId> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, at| at.elapsed() < within);
    map.keys().copied().collect()
}

/// Notes `peers` in `map` now (at most [`FULL_REMEMBERED`] are kept).
fn note(map: &Mutex<std::collections::HashMap<PeerId, Instant>>, peers: &[PeerId]) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    for p in peers {
        if map.len() < FULL_REMEMBERED || map.contains_key(p) {
            map.insert(*p, Instant::now());
        }
    }
}

/// Counts one put in `Node::reading` while it lives.
struct Reading(Arc<std::sync::atomic::AtomicUsize>);

impl Reading {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Reading {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reading(count.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Set when the request a put or a get serves goes away (the API drops the request's
/// future when its client disconnects): the put's reader then fails, and the get's fetch
/// stops before its next segment, which stops the pipeline.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Transfers (puts, gets, repairs, verifications) run at once, at most. A get holds about
/// 26 MiB (segments in flight and chunk buffers), so gets hold about 100 MiB at most.
pub const MAX_TRANSFERS: usize = 4;
/// A put of at most this many bytes is small: it waits for one of [`MAX_SMALL_PUTS`] turns
/// instead (it holds little memory, and its time is round trips, not bytes).
pub const SMALL_PUT: u64 = 1 << 20;
/// Small puts run at once, at most.
pub const MAX_SMALL_PUTS: usize = 16;

/// Why a put failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    #[error("bad scheme: {0}")]
    Scheme(String),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{} is {kind}, not a regular file; jewel puts regular files", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(transparent)]
    Placement(#[from] PolicyError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Transfer(#[from] ClientError),
    #[error("holders of pieces {0:?} lost them before they could be leased")]
    LeaseLost(Vec<usize>),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Index(String),
    #[error("{0}")]
    Pack(String),
    #[error("{0}")]
    Options(String),
}

impl From<jewel::index::IndexError> for PutError {
    fn from(e: jewel::index::IndexError) -> Self {
        PutError::Index(e.to_string())
    }
}

/// Where a put goes in the user's index.
#[derive(Clone)]
pub(crate) struct IndexAt {
    pub path: String,
    pub no_clobber: bool,
    pub mtime: u64,
    pub hash: String,
    /// Permission bits (0: not known).
    pub mode: u32,
}

/// How a put is stored: its scheme (the node's default if `None`), segment size (the
/// pipeline's default if `None`), and the job id its progress is followed by.
#[derive(Clone, Copy, Default)]
pub(crate) struct How<'a> {
    pub scheme: Option<&'a str>,
    pub segment_size: Option<u32>,
    pub job: Option<&'a str>,
}

/// Where a put's path in the index ended up, and whether it replaced an entry there.
pub(crate) type Kept = (Option<String>, bool);

/// How a put's record is kept once its pieces are stored, leased and findable: given the
/// file's manifest id and record, it writes them (with whatever else belongs in the same
/// transaction). The file service knows nothing of the index: a put to a path is kept by
/// [`Node::keep_at`], a put of the node's own by [`Node::keep_alone`].
pub(crate) type Keep =
    Box<dyn FnOnce(String, StoredFile) -> futures::future::BoxFuture<'static, Result<Kept, PutError>> + Send>;

/// Why a get will not write where it was asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    #[error("{} is a folder; give the file's name, e.g. {}/NAME", .0.display(), .0.display())]
    Folder(PathBuf),
    #[error("{} is a symbolic link; jewel get writes a file of its own, never through a link", .0.display())]
    Link(PathBuf),
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
}

/// Refuses, before anything is fetched, an output that is a folder or a link, or an
/// existing file unless `force`.
pub fn check_output(out: &std::path::Path, force: bool) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => Err(OutputError::Link(out.to_path_buf())),
        Ok(m) if m.is_dir() => Err(OutputError::Folder(out.to_path_buf())),
        Ok(_) if !force => Err(OutputError::Exists(out.to_path_buf())),
        _ => Ok(()),
    }
}

/// Opens a regular file for a put, with its size; anything else is refused with what it is.
/// What a put reads, its size and its metadata: a regular file (see [`open_regular`]), or
/// with `link` a symbolic link's target, as bytes (the link is not followed).
type Input = (Box<dyn std::io::Read + Send>, u64, Option<std::fs::Metadata>);

/// A file's modification time (Unix seconds, 0 if not known) and permission bits (0 if not
/// known; [`crate::api::LINK_MODE`] for a link), as its index entry keeps them.
pub(crate) fn time_and_mode(meta: Option<&std::fs::Metadata>, link: bool) -> (u64, u32) {
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let mode = match (link, meta) {
        (true, _) => crate::api::LINK_MODE,
        (false, m) => m.map_or(0, |m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777),
    };
    (mtime, mode)
}

pub(crate) fn open_input(path: &std::path::Path, link: bool) -> Result<Input, PutError> {
    use std::os::unix::ffi::OsStrExt;
    if !link {
        let (file, size) = open_regular(path)?;
        let meta = file.metadata().ok();
        return Ok((Box::new(file), size, meta));
    }
    let cannot = |source| PutError::Unreadable { path: path.to_path_buf(), source };
    let meta = std::fs::symlink_metadata(path).map_err(cannot)?;
    if !meta.file_type().is_symlink() {
        return Err(PutError::NotRegular { path: path.to_path_buf(), kind: "not a symbolic link" });
    }
    let target = std::fs::read_link(path).map_err(cannot)?.as_os_str().as_bytes().to_vec();
    let size = target.len() as u64;
    Ok((Box::new(std::io::Cursor::new(target)), size, Some(meta)))
}

fn open_regular(path: &std::path::Path) -> Result<(std::fs::File, u64), PutError> {
    use std::os::unix::fs::FileTypeExt;
    let cannot = |source| PutError::Unreadable { path: path.to_path_buf(), source };
    let kind = |t: std::fs::FileType| match () {
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO (named pipe)",
        _ if t.is_char_device() => "a character device",
        _ if t.is_block_device() => "a block device",
        _ if t.is_socket() => "a socket",
        _ => "not a plain file",
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(PutError::NotRegular { path: path.to_path_buf(), kind: kind(meta.file_type()) });
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(PutError::NotRegular { path: path.to_path_buf(), kind: kind(meta.file_type()) });
    }
    Ok((file, meta.len()))
}

/// Reads exactly the `left` bytes a file said it has: a file that turns out longer (it grew,
/// or is a `/proc` file whose size says 0) or shorter is an error, not a different file
/// stored under the same name.
struct Exactly<R> {
    inner: R,
    left: u64,
    /// What is read, for errors: a path, or "standard input".
    what: String,
    /// The put was cancelled: stop reading.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    _reading: Reading,
}

impl<R: std::io::Read> std::io::Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other(format!(
                "the put of {} was cancelled: its client went away",
                self.what
            )));
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "{} has more bytes than its size said (it grew while being stored, or it is a /proc file)",
                    self.what
                ))),
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "{} ended before its size while being stored",
                self.what
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Why a get failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error("range {start}-{end} ends before it starts")]
    Range { start: u64, end: u64 },
    #[error("the range starts at byte {start}, but the file has {len} bytes")]
    PastEnd { start: u64, len: u64 },
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Key(jewel::ManifestError),
    #[error(transparent)]
    Locate(ClientError),
    #[error(transparent)]
    Transfer(#[from] jewel::offline::OfflineError),
    #[error(transparent)]
    Pipeline(#[from] jewel::PipelineError),
    #[error("the get was interrupted (the node is stopping)")]
    Interrupted,
    #[error("an earlier get to {0} is still stopping; try again in a moment")]
    Busy(String),
    #[error("the pack holds {len} bytes, but its packed file's cap reaches byte {end}")]
    PackTooShort { end: u64, len: u64 },
    #[error("the packed file read from its pack does not match its hash: nothing was written")]
    PackedMismatch,
    #[error(
        "not enough pieces: {needed} needed, {available} available; found {found} of {pieces} pieces' holders, and looked for {:.1} s",
        looked.as_secs_f64()
    )]
    NotEnoughPieces { needed: usize, available: usize, found: usize, pieces: usize, looked: Duration },
}

impl GetError {
    /// Why too few pieces could be read, if that is why the get failed.
    fn too_few(&self) -> Option<(usize, usize)> {
        use jewel::codec::CodecError::NotEnoughPieces;
        use jewel::offline::OfflineError;
        use jewel::PipelineError::Codec;
        match self {
            GetError::Pipeline(Codec(NotEnoughPieces { needed, available }))
            | GetError::Transfer(OfflineError::Pipeline(Codec(NotEnoughPieces { needed, available }))) => {
                Some((*needed, *available))
            }
            _ => None,
        }
    }
}

/// Why a release failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RmError {
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error("this cap names a file packed with others, which its pack holds for them too; `jewel rm PATH` removes it from your index")]
    Packed,
    #[error("this node has no file with manifest {0}")]
    Unknown(BlockId),
    #[error(transparent)]
    Locate(ClientError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Node {
    /// The recorded holders of a file, if this node put it.
    pub fn recorded_holders(&self, manifest: &BlockId) -> Option<Vec<PeerId>> {
        let record = self.state.file(&manifest.to_string()).ok()??;
        // A file adopted from the user's index (put by another device) has none recorded.
        if record.holders.is_empty() {
            return None;
        }
        record.holders.iter().map(|h| h.parse().ok()).collect()
    }

    /// A file's manifest and where its pieces are: the placement this node recorded if it
    /// put the file, else the DHT (see [`client::find_file`]).
    pub async fn locate(&self, id: BlockId) -> Result<(Manifest, Vec<Option<PeerId>>), ClientError> {
        let Some(holders) = self.recorded_holders(&id) else {
            return client::find_file(&self.blocks, id, Some(&self.store)).await;
        };
        let manifest = client::fetch_manifest(&self.blocks, id, &holders).await?;
        let located = client::locate(&self.blocks, id, &manifest, Some(&holders)).await;
        Ok((manifest, located))
    }

    /// Peers to place pieces on, except `exclude`: only those that can be reached now (a
    /// known peer may well be gone), connected ones first.
    /// Rounds of connects go on while fewer than `want` (at least [`ENOUGH_REACHED`]) answered.
    /// If fewer than `need` peers are known at all (a node that joined before the others,
    /// say), a DHT walk looks for more first, for [`WALK_FOR_PEERS`] at most.
    pub async fn candidates(
        &self,
        exclude: &HashSet<PeerId>,
        want: usize,
        need: usize,
    ) -> Result<Vec<Candidate<PeerId>>, NetError> {
        let net = self.blocks.net();
        let mut known = net.peers().await?;
        let count = |k: &[jewel_net::swarm::PeerInfo]| {
            k.iter()
                .filter(|p| p.blocks != Some(false) && !p.silent)
                .filter(|p| p.peer.parse::<PeerId>().is_ok_and(|id| !exclude.contains(&id)))
                .count()
        };
        if count(&known) < need {
            let _ = tokio::time::timeout(WALK_FOR_PEERS, net.bootstrap()).await;
            known = net.peers().await?;
        }
        // Peers with room first (as far as this node saw), then those reached directly
        // (one reached only through a relay costs the relay's bandwidth and limits), then
        // connected ones; a peer that stopped answering (frozen, say) is left out until it
        // answers again. A relayed peer counts at its relay's address (its site), so
        // identities hiding behind one relay cannot pass for many networks.
        let full = self.recently_full();
        let liars = recent(&self.liars, LIAR_FOR);
        // Within each of those classes, a new random order for each put: pieces spread over
        // every peer that can take them, not over the same few the peer list names first.
        let mut seed = [0u8; 32];
        let _ = jewel::crypto::fill_random(&mut seed);
        let shuffled = |peer: &PeerId| {
            let h = blake3::keyed_hash(&seed, &peer.to_bytes());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
        };
        let usable = |known: Vec<jewel_net::swarm::PeerInfo>| -> Vec<Candidate<PeerId>> {
            let mut known: Vec<_> = known
                .into_iter()
                .filter(|p| p.blocks != Some(false) && !p.silent)
                .filter_map(|p| {
                    let peer = p.peer.parse::<PeerId>().ok()?;
                    let site = p.ip.as_deref().and_then(|ip| ip.parse().ok()).map(policy::site_of);
                    let relayed = p.path == Some(jewel_net::reach::Path::Relayed);
                    Some((
                        (full.contains(&peer), relayed, !p.connected),
                        Candidate { peer, zone: p.zone, site, new: false },
                    ))
                })
                .filter(|(_, c)| !exclude.contains(&c.peer) && !liars.contains(&c.peer))
                .collect();
            known.sort_by_cached_key(|(order, c)| (*order, shuffled(&c.peer)));
            known.into_iter().map(|(_, c)| c).collect()
        };
        // Spread before the cut: thousands of identities at one address must not fill the
        // candidates and leave the peers elsewhere out.
        let known = usable(known);
        let spread =
            policy::place(known.len().min(MAX_CANDIDATES * REACH_ROUNDS), &known).unwrap_or_default();
        let known: Vec<Candidate<PeerId>> =
            spread.into_iter().filter_map(|p| known.iter().find(|c| c.peer == p).cloned()).collect();
        // In rounds of MAX_CANDIDATES, in spread order, until enough answer: after many
        // identities vanish at once (Sybils leaving), the first round may reach few.
        let mut reached: HashSet<PeerId> = HashSet::new();
        let mut tried = 0;
        for round in known.chunks(MAX_CANDIDATES) {
            let reach = round.iter().map(|c| tokio::time::timeout(REACH_TIMEOUT, net.connect(c.peer)));
            let answers = futures::future::join_all(reach).await;
            reached.extend(
                answers.into_iter().zip(round).filter(|(r, _)| matches!(r, Ok(Ok(_)))).map(|(_, c)| c.peer),
            );
            tried += round.len();
            if reached.len() >= want.max(ENOUGH_REACHED) {
                break;
            }
        }
        let known = &known[..tried];
        // Their addresses are known now that they are connected: read them again.
        let now = usable(net.peers().await?);
        let mut out: Vec<Candidate<PeerId>> = known
            .iter()
            .filter(|c| reached.contains(&c.peer))
            .map(|c| now.iter().find(|n| n.peer == c.peer).cloned().unwrap_or_else(|| c.clone()))
            .collect();
        self.mark_new(&mut out);
        Ok(out)
    }

    /// Marks the candidates this node first saw less than [`TRUST_AFTER`] ago, and records
    /// the first sighting of those it had never seen.
    fn mark_new(&self, candidates: &mut [Candidate<PeerId>]) {
        let now = self.clock.now();
        let mut first = Vec::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for c in candidates.iter_mut() {
                let at = match seen.get(&c.peer) {
                    Some(at) => *at,
                    None if seen.len() < MAX_SEEN => {
                        seen.insert(c.peer, now);
                        first.push((c.peer.to_bytes(), now));
                        now
                    }
                    None => now,
                };
                c.new = now.saturating_sub(at) < TRUST_AFTER;
            }
        }
        if !first.is_empty() {
            // Not waited for: a sighting lost in a crash only makes a peer count as new a
            // little longer. A failure is logged.
            let kept = self.state.add_peers_seen(first);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = kept.await {
                        tracing::warn!(error = %e, "could not record the peers first seen");
                    }
                });
            }
        }
    }

    /// The peers that refused a piece for want of room within [`FULL_FOR`].
    fn recently_full(&self) -> HashSet<PeerId> {
        recent(&self.full, FULL_FOR)
    }

    /// Remembers `peers` as full (see [`Node::candidates`]).
    fn note_full(&self, peers: &[PeerId]) {
        note(&self.full, peers);
    }

    pub fn settings(&self) -> Result<Settings, StateError> {
        self.state.settings()
    }

    /// Stores a file on the network and records it; the record is durable before this
    /// returns.
    pub async fn put(self: &Arc<Self>, body: PutRequest) -> Result<PutResponse, PutError> {
        // A user's put (the index's own snapshots and folder nodes go through `put_input`
        // alone: they are background work).
        let _user = self.users.begin();
        // Regular files only, checked before opening (opening a FIFO waits for a writer);
        // the file system calls run off the runtime's threads.
        let path = body.path.clone();
        let name = body.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let at = self.index.precheck(body.at.as_deref(), &name, body.no_clobber)?;
        if let Some(seg) = body
            .segment_size
            .filter(|s| !(jewel::manifest::MIN_SEGMENT_SIZE..=jewel::manifest::MAX_SEGMENT_SIZE).contains(s))
        {
            return Err(PutError::Options(format!(
                "a segment of {seg} bytes: segments are {} bytes to {} MiB",
                jewel::manifest::MIN_SEGMENT_SIZE,
                jewel::manifest::MAX_SEGMENT_SIZE >> 20
            )));
        }
        let link = body.link;
        let opened = tokio::task::spawn_blocking(move || open_input(&path, link))
            .await
            .map_err(|_| PutError::Transfer(ClientError::Interrupted))?;
        let (file, size, meta) = opened?;
        let (mtime, mode) = time_and_mode(meta.as_ref(), link);
        let hash = body.hash.unwrap_or_default();
        let at = IndexAt { path: at, no_clobber: body.no_clobber, mtime, hash, mode };
        let what = body.path.display().to_string();
        let first = std::sync::Mutex::new(Some(file));
        self.put_retrying(|| async {
            // The file as opened above first; opened again for another try.
            let opened = first.locked().take();
            let file = match opened {
                Some(f) => f,
                None => {
                    let path = body.path.clone();
                    tokio::task::spawn_blocking(move || open_input(&path, link))
                        .await
                        .map_err(|_| PutError::Transfer(ClientError::Interrupted))??
                        .0
                }
            };
            let how = How {
                scheme: body.scheme.as_deref(),
                segment_size: body.segment_size,
                job: body.job.as_deref(),
            };
            self.put_input(file, size, what.clone(), name.clone(), how, self.keep_at(at.clone())).await
        })
        .await
    }

    /// Runs a put (`attempt`) again, up to [`LIE_ATTEMPTS`] times in all, when it failed
    /// for peers that lied about their pieces or refused as full: those are left out (liars)
    /// or asked last (full) from then on, so the next try reaches others. (A file or bytes in
    /// memory can be read again; a stream cannot.)
    pub(crate) async fn put_retrying<F, Fut>(&self, mut attempt: F) -> Result<PutResponse, PutError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<PutResponse, PutError>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(PutError::Transfer(e)) if tries < LIE_ATTEMPTS && worth_another_try(&e) => {
                    tries += 1;
                    tracing::info!(attempt = tries, error = %e, "trying the put again without the peers that failed it");
                }
                other => return other,
            }
        }
    }

    /// Stores `input`, which must be exactly `size` bytes (a request's body, say), under
    /// `name`; as [`Node::put`]. Reads it on the blocking pool.
    pub async fn put_stream(
        self: &Arc<Self>,
        query: &crate::api::PutStreamQuery,
        input: Box<dyn std::io::Read + Send>,
    ) -> Result<PutResponse, PutError> {
        let _user = self.users.begin();
        let name = query.name.clone().unwrap_or_default();
        let what = if name.is_empty() { "the streamed file".to_string() } else { name.clone() };
        let keep = match &query.name {
            Some(n) => self.keep_at(IndexAt {
                path: self.index.precheck(Some(n), "stdin", query.no_clobber)?,
                no_clobber: query.no_clobber,
                mtime: self.clock.now(),
                hash: String::new(),
                mode: 0,
            }),
            None => self.keep_alone(),
        };
        let how = How { scheme: query.scheme.as_deref(), segment_size: None, job: query.job.as_deref() };
        self.put_input(input, query.size, what, name, how, keep).await
    }

    /// Keeps a put's record and its index entry at `at`, in one transaction.
    pub(crate) fn keep_at(self: &Arc<Self>, at: IndexAt) -> Keep {
        let index = self.index.clone();
        Box::new(move |file, record| {
            Box::pin(async move {
                let entry = jewel::index::Entry {
                    cap: record.cap.clone().unwrap_or_default(),
                    size: record.size,
                    mtime: at.mtime,
                    scheme: record.scheme.clone(),
                    hash: at.hash,
                    mode: at.mode,
                };
                let replaced = index
                    .put(&at.path, entry, at.no_clobber, (file, record))
                    .await
                    .map_err(|e| PutError::Index(e.to_string()))?;
                Ok((Some(at.path), replaced))
            })
        })
    }

    /// Keeps a put's record alone (the node's own files, and puts to no path).
    pub(crate) fn keep_alone(&self) -> Keep {
        let state = self.state.clone();
        Box::new(move |file, record| {
            Box::pin(async move {
                state.insert_file(&file, &record).await?;
                Ok((None, false))
            })
        })
    }

    pub(crate) async fn put_input(
        self: &Arc<Self>,
        input: Box<dyn std::io::Read + Send>,
        size: u64,
        what: String,
        name: String,
        how: How<'_>,
        keep: Keep,
    ) -> Result<PutResponse, PutError> {
        let How { scheme, segment_size, job } = how;
        let cancel = CancelOnDrop(Arc::default());
        let turns = if size <= SMALL_PUT { &self.small_puts } else { &self.transfers };
        let _turn = turns.acquire().await.map_err(|_| PutError::Transfer(ClientError::Interrupted))?;
        let default = self.settings()?.default_scheme;
        let text = scheme.unwrap_or(&default);
        let spec = SchemeSpec::parse(text).map_err(|e| PutError::Scheme(e.to_string()))?;
        let slots = jewel::codec::build(&spec).map_err(|e| PutError::Scheme(e.to_string()))?.slots();
        let started = Instant::now();
        let me = self.blocks.net().peer_id();
        let candidates = self.candidates(&HashSet::from([me]), slots + ENOUGH_REACHED, slots).await?;
        let reached = started.elapsed();
        // All candidates, in placement order: the first n hold the pieces, the rest are spares
        // for a peer that vanishes mid-put.
        // New peers hold at most what the file tolerates losing, while others can hold it.
        let max_new = jewel::codec::build(&spec).map_err(|e| PutError::Scheme(e.to_string()))?.tolerates();
        let holders = policy::place_within(slots, &candidates, max_new)?;
        let spares = policy::place_within(candidates.len(), &candidates, max_new).unwrap_or_default();
        let peers: Vec<PeerId> =
            holders.iter().copied().chain(spares.into_iter().filter(|p| !holders.contains(p))).collect();
        let job = self.jobs.start(job, size);
        let exact = Exactly {
            inner: input,
            left: size,
            what,
            cancelled: cancel.0.clone(),
            _reading: Reading::new(&self.reading),
        };
        let input = Counted { inner: exact, progress: job.as_ref().map(|j| j.progress.clone()) };
        let mut noted = client::Noted::default();
        let mut options = PutOptions::new(spec);
        if let Some(seg) = segment_size {
            options.segment_size = seg;
        }
        let put =
            client::put_file_noting(&self.blocks, Box::new(input), size, &options, &peers, &mut noted).await;
        if !noted.liars.is_empty() {
            tracing::warn!(peers = ?noted.liars, "peers took pieces they could not prove: they get none for an hour");
            note(&self.liars, &noted.liars);
        }
        // Peers that refused for want of room are asked last from now on.
        self.note_full(&noted.full);
        let placed = match put {
            Ok(placed) => placed,
            Err(e) => {
                if let ClientError::Upload { peer, source, .. } = &e {
                    if client::is_full(source) {
                        self.note_full(&[*peer]);
                    }
                }
                return Err(e.into());
            }
        };
        let crowded = policy::crowded(&placed.holders, &candidates);
        if crowded > 0 {
            tracing::warn!(crowded, "too few networks for this file's pieces: some share one");
        }
        let newcomers = policy::newcomers_over(&placed.holders, &candidates, max_new);
        if newcomers > 0 {
            tracing::info!(newcomers, max_new, "too few peers known for a day: more new peers hold this file's pieces than it tolerates losing");
        }
        let stored = started.elapsed();
        let file = placed.put.cap.manifest;
        let located: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
        // Every step after the upload either completes the put or undoes it: a put that
        // fails leaves nothing stored (its pieces are released, its record removed).
        let finished: Result<(StoredFile, Option<String>, bool), PutError> = async {
            let missing = crate::renew::lease_file(
                &self.blocks,
                file,
                &placed.put.manifest.pieces,
                &located,
                self.lease_secs,
            )
            .await;
            if !missing.is_empty() {
                return Err(PutError::LeaseLost(missing));
            }
            // Findable from any peer before the put says it is done.
            client::publish_holders(&self.blocks, file, &placed.put.manifest, &located).await?;
            let record = StoredFile {
                name,
                cap: Some(placed.put.cap.to_string()),
                scheme: placed.put.manifest.scheme.to_string(),
                size: placed.put.manifest.file_len,
                holders: placed.holders.iter().map(|p| p.to_string()).collect(),
                audit: None,
                lease_missing: Vec::new(),
                leased_at: self.clock.now(),
                corrupt: Vec::new(),
                indexed: false,
            };
            tracing::debug!(?reached, ?stored, done = ?started.elapsed(), "put");
            let (path, replaced) = keep(file.to_string(), record.clone()).await?;
            Ok((record, path, replaced))
        }
        .await;
        let (record, path, replaced) = match finished {
            Ok(done) => done,
            Err(e) => {
                tracing::info!(%file, error = %e, "the put failed after its upload: releasing its pieces");
                if let Err(e) = self.state.remove_file(&file.to_string()).await {
                    tracing::warn!(%file, error = %e, "could not forget a failed put's record");
                }
                let pieces = &placed.put.manifest.pieces;
                crate::renew::release_file(&self.blocks, file, pieces, &located, 0).await;
                return Err(e);
            }
        };
        let cap = placed.put.cap.to_string();
        Ok(PutResponse {
            cap,
            verify_cap: placed.put.cap.verify_cap().to_string(),
            holders: record.holders,
            stats: placed.put.stats,
            path,
            replaced,
            crowded,
        })
    }

    /// Gets a file into `out`. A whole-file get is resumable: an interrupted one leaves a
    /// hidden part file beside `out`, and the next get of the same cap continues from it.
    pub async fn get(self: &Arc<Self>, body: GetRequest) -> Result<GetResponse, GetError> {
        check_output(&body.out, body.force)?;
        let (place, ended) = self.take_output(&body.out).await?;
        let _user = self.users.begin();
        let _turn = self.transfers.acquire().await.map_err(|_| GetError::Interrupted)?;
        let started = Instant::now();
        let Ready { cap, manifest, located, fetch, range, hash } =
            self.ready_to_get(&body.cap, body.range, false).await?;
        let (found, pieces) = (located.iter().flatten().count(), located.len());
        let (node, stop) = (self.clone(), place.0.clone());
        let (stats, resumed_from) = Bridge::run(move |bridge| -> Result<_, GetError> {
            // Progress counts whole segments fetched, of the segments the get covers.
            let seg = u64::from(manifest.segment_size);
            let (start, end) = range.unwrap_or((0, manifest.file_len));
            let covered = (end.div_ceil(seg) * seg).min(manifest.file_len).saturating_sub(start / seg * seg);
            let job = node.jobs.start(body.job.as_deref(), covered);
            if let (Some(j), None) = (&job, range) {
                j.progress.set_done(jewel::offline::resume_offset(&body.out, &manifest));
            }
            let _ended = ended;
            let fetch = CountedFetch {
                inner: bridge.fetch(&fetch),
                progress: job.as_ref().map(|j| j.progress.clone()),
                manifest: &manifest,
                stop: Some(stop),
            };
            let threads = client::GET_THREADS;
            match range {
                Some((start, end)) => {
                    let stats = jewel::offline::write_atomically(&body.out, |w| {
                        let range = ByteRange { start, end };
                        let mut out = Checked::new(w, hash);
                        let stats =
                            jewel::pipeline::get_with(&manifest, &cap.key, &fetch, range, &mut out, threads)?;
                        // A packed file is written only if it is the file its cap names.
                        match out.matches() {
                            true => Ok(stats),
                            false => Err(GetError::PackedMismatch),
                        }
                    })?;
                    Ok((stats, 0))
                }
                None => Ok(jewel::offline::get_resumable(&body.out, &manifest, &cap.key, &fetch, threads)?),
            }
        })
        .await
        .map_err(|_| GetError::Interrupted)?
        .map_err(|e| match e.too_few() {
            Some((needed, available)) => {
                GetError::NotEnoughPieces { needed, available, found, pieces, looked: started.elapsed() }
            }
            None => e,
        })?;
        self.record_corrupt(cap.manifest, &stats.faults).await;
        Ok(GetResponse { stats, resumed_from })
    }

    /// Makes `out` this get's: an earlier get to it is stopped, and waited for (at most
    /// [`EARLIER_GET_STOPS`]). Returns what the get's future holds (dropped, it stops the
    /// get) and what its pipeline holds until it ends.
    async fn take_output(self: &Arc<Self>, out: &std::path::Path) -> Result<(CancelOnDrop, Ended), GetError> {
        let earlier = self.gets.locked().get(out).map(|e| {
            e.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            e.ended.clone()
        });
        if let Some(mut earlier) = earlier {
            tracing::info!(out = %out.display(), "a new get to this output stops the earlier one");
            let stopped = matches!(
                tokio::time::timeout(EARLIER_GET_STOPS, earlier.wait_for(|done| *done)).await,
                Ok(Ok(_))
            );
            if !stopped && !*earlier.borrow() {
                return Err(GetError::Busy(out.display().to_string()));
            }
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        self.gets.locked().insert(out.to_path_buf(), RunningGet { stop: stop.clone(), ended });
        let place = Ended { node: self.clone(), out: out.to_path_buf(), stop: stop.clone(), ended: ended_tx };
        Ok((CancelOnDrop(stop), place))
    }

    /// What a get or a read found rotten reaches check and repair (for this node's own
    /// files: the record of another's file is not there, and nothing is written).
    async fn record_corrupt(&self, file: BlockId, faults: &[jewel::pipeline::PieceFault]) {
        let bad: Vec<usize> = faults.iter().filter(|f| f.corrupt).map(|f| f.slot).collect();
        if bad.is_empty() {
            return;
        }
        let recorded = self
            .state
            .update_file(&file.to_string(), move |r| {
                for slot in &bad {
                    if !r.corrupt.contains(slot) {
                        r.corrupt.push(*slot);
                    }
                }
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "could not record the pieces a get found corrupt");
        }
    }

    /// What a get of `cap` (or `range` of it) starts from, once everything a user can get
    /// wrong is checked (the cap, the range, the key) and the file is found (`recent`: or
    /// was found within [`LOCATED_FOR`]: a stream's reads; a get looks again each time).
    async fn ready_to_get(
        &self,
        cap: &str,
        range: Option<(u64, u64)>,
        recent: bool,
    ) -> Result<Ready, GetError> {
        if let Some((start, end)) = range {
            if start > end {
                return Err(GetError::Range { start, end });
            }
        }
        let Opened { cap, slice, manifest, located } = self.open_cap(cap, recent).await?;
        let (len, first) = slice.as_ref().map_or((manifest.file_len, 0), |s| (s.len, s.offset));
        if let Some((start, _)) = range {
            if start >= len && start > 0 {
                return Err(GetError::PastEnd { start, len });
            }
        }
        let (range, hash) = match (&slice, range) {
            (Some(s), None) => (Some(s.range()), Some(s.hash)),
            (Some(_), Some((start, end))) => (Some((first + start, first + end.min(len))), None),
            (None, r) => (r.map(|(start, end)| (start, end.min(len))), None),
        };
        let fetch = NetFetch::new(self.blocks.clone(), &manifest, &located)
            .map_err(GetError::Locate)?
            .with_local(&self.store);
        Ok(Ready { cap, manifest, located, fetch, range, hash })
    }

    /// [`Node::locate`], or what it found within [`LOCATED_FOR`] (at most [`LOCATED_KEPT`]
    /// files are kept).
    async fn locate_for_reading(&self, id: BlockId) -> Result<(Manifest, Vec<Option<PeerId>>), GetError> {
        let now = Instant::now();
        let kept =
            self.located.locked().get(&id).filter(|(at, ..)| now.duration_since(*at) < LOCATED_FOR).cloned();
        if let Some((_, manifest, located)) = kept {
            return Ok((manifest, located));
        }
        let (manifest, located) = self.locate(id).await.map_err(GetError::Locate)?;
        let mut cache = self.located.locked();
        cache.retain(|_, (at, ..)| now.duration_since(*at) < LOCATED_FOR);
        if cache.len() < LOCATED_KEPT {
            cache.insert(id, (now, manifest.clone(), located.clone()));
        }
        Ok((manifest, located))
    }

    /// The file a cap reads, found (`recent`: or found lately, see
    /// [`Node::locate_for_reading`]), its key checked, and (for a packed file) its place
    /// checked against its pack's length.
    async fn open_cap(&self, cap: &str, recent: bool) -> Result<Opened, GetError> {
        let (cap, slice) = match Cap::parse(cap)? {
            Cap::Read(r) => (r, None),
            Cap::Slice(s) => (s.pack.clone(), Some(s)),
            Cap::Verify(_) => return Err(CapError::NotReadCap.into()),
        };
        let (manifest, located) = match recent {
            true => self.locate_for_reading(cap.manifest).await?,
            false => self.locate(cap.manifest).await.map_err(GetError::Locate)?,
        };
        if let Some(s) = slice.as_ref().filter(|s| s.offset + s.len > manifest.file_len) {
            return Err(GetError::PackTooShort { end: s.offset + s.len, len: manifest.file_len });
        }
        manifest.check_key(&cap.key).map_err(GetError::Key)?;
        Ok(Opened { cap, slice, manifest, located })
    }

    /// What a reader needs before it reads the file a cap names (the gateway): its length,
    /// a tag naming its content (the manifest id; for a packed file, with its place), and
    /// its segment size.
    pub async fn describe_read(&self, cap: &str) -> Result<(u64, String, u32), GetError> {
        let Opened { cap, slice, manifest, .. } = self.open_cap(cap, true).await?;
        Ok(match slice {
            Some(s) => (s.len, format!("{}-{}", cap.manifest, s.offset), manifest.segment_size),
            None => (manifest.file_len, cap.manifest.to_string(), manifest.segment_size),
        })
    }

    /// Streams a file (or `range` of it) as it decodes: returns its length and a bounded
    /// channel of its bytes, in order, once the file is found and the key checked (errors
    /// before that are returned; one after is the channel's last item). Runs as a transfer
    /// (it waits its turn); a reader that drops the channel stops the get. Nothing is
    /// written to disk.
    pub async fn read(
        self: &Arc<Self>,
        cap: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(u64, tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>), GetError> {
        let Ready { cap, manifest, fetch, range, hash, .. } = self.ready_to_get(cap, range, true).await?;
        let (start, end) = range.unwrap_or((0, manifest.file_len));
        let (tx, rx) = tokio::sync::mpsc::channel(READ_QUEUE);
        let (node, file) = (self.clone(), cap.manifest);
        tokio::spawn(async move {
            let _user = node.users.begin();
            let Ok(_turn) = node.transfers.acquire().await else { return };
            let sink = tx.clone();
            let done = Bridge::run(move |bridge| {
                let mut out = Checked::new(ChannelWriter(sink), hash);
                let range = ByteRange { start, end };
                let stats = jewel::pipeline::get_with(
                    &manifest,
                    &cap.key,
                    &bridge.fetch(&fetch),
                    range,
                    &mut out,
                    client::GET_THREADS,
                );
                stats.map(|s| (s, out.matches()))
            })
            .await;
            let failed = match done {
                Ok(Ok((stats, true))) => {
                    node.record_corrupt(file, &stats.faults).await;
                    None
                }
                // Sent already, but the reader's last item says it was not the file.
                Ok(Ok((_, false))) => Some(GetError::PackedMismatch.to_string()),
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failed {
                tracing::info!(error = %why, "a streamed read failed");
                let _ = tx.send(Err(std::io::Error::other(why))).await;
            }
        });
        Ok((end - start, rx))
    }

    /// Releases a file this node put: holders delete what no other lease keeps, and the
    /// node forgets it.
    pub async fn rm(&self, cap: &str) -> Result<RmResponse, RmError> {
        let cap = Cap::parse(cap)?;
        if matches!(cap, Cap::Slice(_)) {
            return Err(RmError::Packed);
        }
        let id = cap.manifest();
        let Some(record) = self.state.file(&id.to_string())? else { return Err(RmError::Unknown(id)) };
        let (manifest, located) = self.locate(id).await.map_err(RmError::Locate)?;
        // Holders keep pieces until their leases run out; a release they do not take now
        // is asked again until then (the release worker), never forgotten.
        let until = record.leased_at.saturating_add(u64::from(self.lease_secs));
        let owed = crate::renew::release_file(&self.blocks, id, &manifest.pieces, &located, until).await;
        self.state.remove_file_owing(&id.to_string(), owed.clone()).await?;
        Ok(RmResponse {
            released: id.to_string(),
            owed: owed.into_iter().map(|p| p.holder).collect(),
            unindexed: Vec::new(),
        })
    }

    /// The blocks held for peers, the space, and the files this node put.
    pub async fn dir(&self) -> Result<DirResponse, DirError> {
        let store = self.store.clone();
        let blocks =
            tokio::task::spawn_blocking(move || store.list()).await.map_err(|_| DirError::Interrupted)??;
        let usage = self.store.usage();
        Ok(DirResponse {
            blocks: blocks.iter().map(|(id, size)| BlockEntry { id: id.to_string(), size: *size }).collect(),
            used: usage.used,
            capacity: usage.capacity,
            free: usage.capacity.map(|c| c.saturating_sub(usage.used)),
            files: self.state.files()?.into_iter().map(|(id, f)| (id, f.into())).collect(),
        })
    }

    /// The peers this node knows.
    pub async fn peers(&self) -> Result<Vec<Peer>, NetError> {
        let liars = recent(&self.liars, LIAR_FOR);
        Ok(self
            .blocks
            .net()
            .peers()
            .await?
            .into_iter()
            .map(|p| {
                let id = p.peer.parse::<PeerId>().ok();
                Peer {
                    rate_bps: id.and_then(|id| self.blocks.rate(&id)),
                    unproven: id.is_some_and(|id| liars.contains(&id)),
                    peer: p.peer,
                    addrs: p.addrs,
                    connected: p.connected,
                    zone: p.zone,
                    blocks: p.blocks,
                    ip: p.ip,
                    silent: p.silent,
                    gossip_score: p.gossip_score,
                    path: p.path,
                    rtt_ms: p.rtt_ms,
                }
            })
            .collect())
    }

    /// This node's invite: its addresses others can use, the best first: confirmed
    /// external and port-mapped ones, relayed ones, then its local network's; loopback
    /// ones only if it has nothing else (a devnet).
    pub async fn invite(&self) -> Result<crate::api::InviteResponse, NetError> {
        use jewel_net::reach::{is_relayed, scope, Scope};
        let net = self.blocks.net();
        let reach = net.reachability().await?;
        let mut addrs: Vec<jewel_net::Multiaddr> =
            reach.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let listen = net.listeners().await?;
        for a in &listen {
            if !is_relayed(a) && scope(a).is_some_and(|s| s > Scope::Loopback) && !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        if addrs.is_empty() {
            addrs = listen;
        }
        // Public direct, then relayed, then private (a stable sort keeps their order).
        addrs.sort_by_key(|a| match (scope(a), is_relayed(a)) {
            (Some(Scope::Public), false) => 0,
            (_, true) => 1,
            (Some(Scope::Private), _) => 2,
            _ => 3,
        });
        let invite = jewel_net::invite::Invite::new(net.peer_id(), &addrs);
        Ok(crate::api::InviteResponse {
            invite: invite.encode(),
            addrs: invite.addrs.iter().map(|a| a.to_string()).collect(),
        })
    }

    /// Connects to the node `invite` names (at the first of its addresses that answers)
    /// and fills the routing table through it.
    pub async fn join(&self, invite: &jewel_net::invite::Invite) -> Result<PeerId, NetError> {
        let net = self.blocks.net();
        if invite.peer == net.peer_id() {
            return Err(NetError::Dial {
                target: invite.peer.to_string(),
                reason: "the invite is this node's own".into(),
            });
        }
        let mut first_error = None;
        for addr in invite.dial_addrs() {
            match net.dial(addr).await {
                Ok(peer) => {
                    let walk = net.clone();
                    tokio::spawn(async move { walk.bootstrap().await });
                    return Ok(peer);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(NetError::NoPeers))
    }

    /// Writes down the peers connected now, with the addresses they were reached at (see
    /// `daemon::remembered_peers`).
    pub async fn remember_peers(&self) -> Result<(), RememberError> {
        let now = jewel::lease::now();
        let known: Vec<_> = self
            .blocks
            .net()
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.connected && !p.addrs.is_empty())
            .filter_map(|p| {
                let id = p.peer.parse::<jewel_net::PeerId>().ok()?;
                Some((id.to_bytes(), crate::state::KnownPeer { addrs: p.addrs, seen: now }))
            })
            .collect();
        if known.is_empty() {
            return Ok(());
        }
        self.state.remember_peers(known).await?;
        Ok(())
    }
}

/// Why the peers known now could not be written down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RememberError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why the node could not list what it holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirError {
    #[error(transparent)]
    Store(#[from] jewel::StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("interrupted (the node is stopping)")]
    Interrupted,
}

/// A writer that, when its bytes must have a hash (a packed file read whole), hashes what
/// goes through it; others pass untouched.
struct Checked<W> {
    inner: W,
    want: Option<[u8; 32]>,
    hasher: blake3::Hasher,
}

impl<W> Checked<W> {
    fn new(inner: W, want: Option<[u8; 32]>) -> Checked<W> {
        Checked { inner, want, hasher: blake3::Hasher::new() }
    }

    /// Whether what went through has the hash it must have (if any).
    fn matches(&self) -> bool {
        self.want.is_none_or(|h| *self.hasher.finalize().as_bytes() == h)
    }
}

impl<W: std::io::Write> std::io::Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.want.is_some() {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The file a cap reads, found (see `Node::open_cap`); for a packed file, its slice.
struct Opened {
    cap: ReadCap,
    slice: Option<jewel::caps::SliceCap>,
    manifest: Manifest,
    located: Vec<Option<PeerId>>,
}

/// A get ready to run (see `Node::ready_to_get`): the cap, the file's manifest, where its
/// pieces are, and a fetch over them (this node's own pieces first).
struct Ready {
    cap: ReadCap,
    manifest: Manifest,
    located: Vec<Option<PeerId>>,
    fetch: NetFetch,
    /// The bytes of the stored file to read (end exclusive; clamped to its length); `None`:
    /// the whole file.
    range: Option<(u64, u64)>,
    /// A packed file read whole: the hash its bytes must have.
    hash: Option<[u8; 32]>,
}

/// Chunks a streamed read may have decoded ahead of its reader (each at most a segment's
/// plaintext): bounds its memory.
const READ_QUEUE: usize = 4;

/// A pipeline's output into a streamed read's channel, from the blocking thread the
/// pipeline runs on; a reader that went away ends the get (a broken pipe).
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
