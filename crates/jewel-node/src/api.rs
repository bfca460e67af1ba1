//! The node's control API as types: every endpoint with its path, its request and its
//! reply. The node serves these (see `http`) and the CLI calls them; neither builds or reads
//! JSON by key, so a change to one side that the other does not follow fails to compile.
//!
//! Requests refuse unknown fields: a client that sends a field the node does not know gets
//! a 400 that names it, rather than having it silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jewel::pipeline::{GetStats, PutStats};
use jewel::store::Usage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::client::Repaired;

/// One endpoint of the API.
pub trait Endpoint {
    /// The URL path, e.g. `/v1/put`.
    const PATH: &'static str;
    /// Whether the request goes as a POST with a JSON body (else a GET without one).
    const POST: bool;
    type Request: Serialize + DeserializeOwned;
    type Response: Serialize + DeserializeOwned;
}

macro_rules! endpoint {
    ($(#[$doc:meta])* $name:ident, $path:literal, $post:literal, $req:ty => $resp:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl Endpoint for $name {
            const PATH: &'static str = $path;
            const POST: bool = $post;
            type Request = $req;
            type Response = $resp;
        }
    };
}

endpoint!(
    /// The node, its network addresses, its store's usage and its workers.
    Status, "/v1/status", false, NoBody => StatusResponse
);
endpoint!(
    /// The peers this node knows.
    Peers, "/v1/peers", false, NoBody => Vec<Peer>
);
endpoint!(
    /// This node's invite (`jewel invite`).
    Invite, "/v1/invite", false, NoBody => InviteResponse
);
endpoint!(
    /// Connect to the node an invite names, and join its network (`jewel join`).
    Join, "/v1/join", true, JoinRequest => JoinResponse
);
endpoint!(
    /// What this node stores for others, and the files it put.
    Dir, "/v1/dir", false, NoBody => DirResponse
);
endpoint!(
    /// Store a file on the network.
    Put, "/v1/put", true, PutRequest => PutResponse
);
endpoint!(
    /// Store many small files as one pack, each an entry of the user's index (`put -r`).
    PutPack, "/v1/put-pack", true, PutPackRequest => PutPackResponse
);
/// Store the request's body on the network: `POST /v1/put-stream?size=N[&name=…][&scheme=…]
/// [&job=…]` with the raw bytes as the body (`jewel put -` sends its standard input so).
/// The body must be exactly `size` bytes. Answers a [`PutResponse`].
pub const PUT_STREAM_PATH: &str = "/v1/put-stream";

/// A job's progress as one streamed reply: `POST /v1/progress/watch` with a
/// [`ProgressRequest`]; the body is one JSON [`ProgressResponse`] per line, sent each time
/// the job moves (at most [`WATCH_EVERY`] apart), and ends when the job ends (or, for a job
/// that has not started within [`WATCH_WAIT`], at once). A progress bar reads it instead
/// of asking ten times a second.
pub const WATCH_PATH: &str = "/v1/progress/watch";
/// How often a watched job is looked at.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a watch waits for its job to start.
pub const WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A file's plaintext as the reply's body, streamed as it decodes: `POST /v1/read` with a
/// [`ReadRequest`]; the reply is `application/octet-stream` of exactly its
/// `content-length` (the file, or the range), or an error reply before any byte. A get
/// that fails once bytes have gone ends the body short (the client sees it cut). `jewel get
/// CAP -o -` reads so: nothing is written to disk.
pub const READ_PATH: &str = "/v1/read";

/// Runs an HTTP gateway (see the node's `gateway` module) while the request stays open:
/// `POST /v1/serve/gateway` with a [`ServeRequest`]; the reply is a stream of lines, the
/// first a [`ServeLine`], then a blank line every few seconds; closing it stops the gateway.
pub const SERVE_GATEWAY_PATH: &str = "/v1/serve/gateway";
/// restic's REST backend, run as [`SERVE_GATEWAY_PATH`] runs the gateway.
pub const SERVE_RESTIC_PATH: &str = "/v1/serve/restic";

/// Where a front-end listens.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeRequest {
    /// `HOST:PORT` (port 0: any free one); 127.0.0.1:0 if absent.
    #[serde(default)]
    pub listen: Option<String>,
    /// Allow an address other than loopback.
    #[serde(default)]
    pub public: bool,
    /// The scheme of what the front-end stores (the node's default if absent).
    #[serde(default)]
    pub scheme: Option<String>,
}

/// A front-end's first line: where it listens, and the token its protected routes need.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServeLine {
    /// `http://jewel:TOKEN@HOST:PORT/`.
    pub url: String,
    pub token: String,
}

/// The request of [`READ_PATH`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    pub cap: String,
    /// Plaintext bytes `start..end` only (end exclusive); the whole file if absent.
    #[serde(default)]
    pub range: Option<(u64, u64)>,
}

/// The query of [`PUT_STREAM_PATH`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutStreamQuery {
    /// The body's length in bytes.
    pub size: u64,
    /// The name the file is recorded under (empty if absent).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub job: Option<String>,
    /// Put it in the index at `name` (refused if a file is there, with `no_clobber`).
    #[serde(default)]
    pub no_clobber: bool,
}

endpoint!(
    /// List a path of the user's index, or a cap (a file's, or a shared folder's).
    Ls, "/v1/ls", true, LsRequest => LsResponse
);
endpoint!(
    /// Remove a path (a file, or with `recursive` a folder) from the index.
    RmPath, "/v1/index/rm", true, RmPathRequest => PathsResponse
);
endpoint!(
    /// Every change made at a path of the index, oldest first.
    Log, "/v1/index/log", true, LogRequest => LogResponse
);
endpoint!(
    /// Put a removed file back (its newest version), while its versions are kept.
    Undelete, "/v1/index/undelete", true, UndeleteRequest => PathsResponse
);
endpoint!(
    /// Move a file or a folder in the index.
    Mv, "/v1/index/mv", true, MvRequest => PathsResponse
);
endpoint!(
    /// Make the index's changes so far durable on the network (a published head that was
    /// found again), once per command: `put`, `put -r`, `rm` and `mv` return after it, so
    /// losing the device right after loses nothing they reported done. At once when the
    /// head already holds every change, or the node holds no user identity.
    IndexPublish, "/v1/index/publish", true, NoBody => IndexStatus
);
endpoint!(
    /// A path's read cap: a file's, or for a folder one that reads the whole subtree.
    Share, "/v1/share", true, ShareRequest => ShareResponse
);
endpoint!(
    /// Publish a cap under the user's key and a label (a name anyone given it can resolve).
    NamePublish, "/v1/name/publish", true, NamePublishRequest => NameResponse
);
endpoint!(
    /// The cap a published name names now.
    NameResolve, "/v1/name/resolve", true, NameResolveRequest => NameResponse
);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LsRequest {
    /// A path of the index (the root if empty), or a cap.
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub recursive: bool,
    /// Every version of a file, newest first.
    #[serde(default)]
    pub versions: bool,
    /// The index as it was at this time (Unix seconds), not as it is now.
    #[serde(default)]
    pub at: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    pub path: String,
}

/// One change of a path, as `jewel log` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// When it was made (Unix seconds; 0: by an older node, time unknown).
    pub at: u64,
    /// The device that made it.
    pub device: u64,
    /// The file it put there; none for a remove.
    pub cap: Option<String>,
    pub size: u64,
    /// A remove that freed the versions at once.
    #[serde(default)]
    pub purge: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogResponse {
    pub changes: Vec<Change>,
}

/// One line of `jewel ls`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsEntry {
    pub path: String,
    pub folder: bool,
    /// A file's size; a folder's files' total.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: u64,
    pub scheme: String,
    /// A file's read cap; more than one when devices changed it at once (a conflict).
    pub caps: Vec<String>,
    /// For a folder: the files under it.
    pub files: usize,
    /// With `versions`: the version's number (1 is the newest).
    #[serde(default)]
    pub version: Option<usize>,
    /// With `versions`: whether this version is shown now.
    #[serde(default)]
    pub live: bool,
    /// A file's content hash (BLAKE3, hex), if its put gave one.
    #[serde(default)]
    pub hash: String,
    /// A file's permission bits, if known (0: not known): a get restores them.
    #[serde(default)]
    pub mode: u32,
}

impl LsEntry {
    pub fn file(path: &str, entries: &[&jewel::index::Entry]) -> LsEntry {
        let newest = entries.last();
        LsEntry {
            path: path.to_string(),
            folder: false,
            size: newest.map_or(0, |e| e.size),
            mtime: newest.map_or(0, |e| e.mtime),
            scheme: newest.map(|e| e.scheme.clone()).unwrap_or_default(),
            caps: entries.iter().map(|e| e.cap.clone()).collect(),
            files: 0,
            version: None,
            live: true,
            hash: newest.map(|e| e.hash.clone()).unwrap_or_default(),
            mode: newest.map_or(0, |e| e.mode),
        }
    }

    /// A file known only by its cap (a shared folder's child, or a cap listed).
    pub fn shared(path: &str, size: u64, mtime: u64, cap: &str) -> LsEntry {
        LsEntry { folder: false, mtime, caps: vec![cap.to_string()], ..LsEntry::folder(path, 0, size) }
    }

    pub fn folder(path: &str, files: usize, size: u64) -> LsEntry {
        LsEntry {
            path: path.to_string(),
            folder: true,
            size,
            mtime: 0,
            scheme: String::new(),
            caps: Vec::new(),
            files,
            version: None,
            live: true,
            hash: String::new(),
            mode: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LsResponse {
    pub entries: Vec<LsEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmPathRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    /// Free the removed versions at once (else they are kept 30 days, for `undelete`).
    #[serde(default)]
    pub purge: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndeleteRequest {
    pub path: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MvRequest {
    pub from: String,
    pub to: String,
}

/// The paths a change touched: removed ones (`rm`), or (from, to) pairs (`mv`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathsResponse {
    pub paths: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    pub path: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareResponse {
    pub cap: String,
    pub folder: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamePublishRequest {
    pub cap: String,
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameResolveRequest {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NameResponse {
    pub name: String,
    pub cap: String,
    pub seq: u64,
}

endpoint!(
    /// The user identity this node holds, if any.
    IdShow, "/v1/id", false, NoBody => IdResponse
);
endpoint!(
    /// Make a user identity from a new recovery phrase (on a node that holds none).
    IdInit, "/v1/id/init", true, NoBody => IdInitResponse
);
endpoint!(
    /// Take on the user identity a recovery phrase names.
    IdRecover, "/v1/id/recover", true, IdRecoverRequest => IdResponse
);

/// A user's public id (`jewel:u1:…`), if the node holds one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdResponse {
    pub user: Option<String>,
    /// After `recover`: the files the user's index holds once caught up with the user's
    /// other devices (`None` if that did not finish in time; it goes on in the background).
    #[serde(default)]
    pub index_files: Option<usize>,
}

/// A new identity: its 24 words, shown once, and its public id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdInitResponse {
    pub phrase: String,
    pub user: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRecoverRequest {
    pub phrase: String,
}

endpoint!(
    /// Get a file (or a range of it) into a local path.
    Get, "/v1/get", true, GetRequest => GetResponse
);
endpoint!(
    /// Audit each piece of a file (a sampled proof each, or every byte with `verify`).
    Check, "/v1/check", true, CheckRequest => CheckReport
);
endpoint!(
    /// Rebuild the pieces of a file that are not alive onto new peers.
    Repair, "/v1/repair", true, CapRequest => RepairResponse
);
endpoint!(
    /// Release a file this node put.
    Rm, "/v1/rm", true, CapRequest => RmResponse
);
endpoint!(
    /// How far a put or get is, by the job id its client chose.
    Progress, "/v1/progress", true, ProgressRequest => ProgressResponse
);
endpoint!(
    /// The owner's settings.
    GetSettings, "/v1/settings", false, NoBody => Settings
);
endpoint!(
    /// Change the owner's settings.
    SetSettings, "/v1/settings", true, Settings => Settings
);

/// The request of an endpoint that takes none.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct NoBody {}

/// What `HOME/api.json` holds: where the API listens and its token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiInfo {
    pub api: String,
    pub token: String,
    pub peer_id: String,
    pub listen: Vec<String>,
}

/// Every error reply's body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// An absolute path the node can read.
    pub path: PathBuf,
    /// A scheme spec; the node's default if absent.
    #[serde(default)]
    pub scheme: Option<String>,
    /// An id the client picks to follow progress with [`Progress`].
    #[serde(default)]
    pub job: Option<String>,
    /// The file's path in the user's index; its name at the root if absent.
    #[serde(default, rename = "as")]
    pub at: Option<String>,
    /// Refuse, before storing anything, if a file is at that path.
    #[serde(default)]
    pub no_clobber: bool,
    /// The content's BLAKE3 hash (hex), kept in the index entry (`put -r` skips files
    /// whose size, mtime and hash did not change).
    #[serde(default)]
    pub hash: Option<String>,
    /// `path` is a symbolic link: its target (as bytes) is stored as the file's content,
    /// with the link's time and [`LINK_MODE`], and `get -r` makes a link of it again.
    #[serde(default)]
    pub link: bool,
    /// Plaintext bytes per segment (4 MiB if absent): a segment is what any read of the
    /// file fetches at least, so smaller ones make random reads (a player's seeks) cheaper
    /// and larger ones whole reads.
    #[serde(default)]
    pub segment_size: Option<u32>,
}

/// Files under this size are packed by `put -r` (a pack refuses larger ones).
pub const PACK_FILE_MAX: u64 = 1 << 20;
/// The most files one pack request holds.
pub const PACK_MAX_FILES: usize = 4096;
/// The most bytes one pack holds.
pub const PACK_MAX_BYTES: u64 = 32 << 20;

/// Small files to store together as one pack: one stored file (erasure-coded, leased,
/// audited and repaired as any other), each file an entry of the user's index naming its
/// place in the pack and its content hash. Contents the index already holds (same hash and
/// scheme) are not stored again. One index change for all of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPackRequest {
    pub files: Vec<PackFile>,
    /// A scheme spec; the node's default if absent.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Refuse a file whose path holds a file already.
    #[serde(default)]
    pub no_clobber: bool,
}

/// One file of a pack request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    /// An absolute path the node can read: under [`PACK_FILE_MAX`] bytes.
    pub path: PathBuf,
    /// Its path in the user's index.
    #[serde(rename = "as")]
    pub at: String,
    /// `path` is a symbolic link (its target is stored, as [`PutRequest::link`]).
    #[serde(default)]
    pub link: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutPackResponse {
    /// The pack's read cap, if one was stored (none when every content was known).
    pub pack: Option<String>,
    /// Each file stored, by its index path, with its cap.
    pub stored: Vec<PackedFile>,
    /// Of those, the files whose content the index held already (stored once).
    pub known: usize,
    /// Files that were not stored, and why (the others are).
    pub failed: Vec<PackFailure>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackedFile {
    pub path: String,
    pub cap: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackFailure {
    pub file: PathBuf,
    pub error: String,
}

/// The mode an index entry of a symbolic link carries: the link type bits (`S_IFLNK`)
/// with 0777. Its content is the link's target.
pub const LINK_MODE: u32 = 0o120_777;

/// Whether an entry's mode says it is a symbolic link.
pub fn is_link(mode: u32) -> bool {
    mode & 0o170_000 == 0o120_000
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutResponse {
    pub cap: String,
    pub verify_cap: String,
    /// The peer holding each slot's piece.
    pub holders: Vec<String>,
    pub stats: PutStats,
    /// Where the index keeps it, if it does.
    #[serde(default)]
    pub path: Option<String>,
    /// Whether it replaced an entry at that path (kept as a previous version).
    #[serde(default)]
    pub replaced: bool,
    /// Pieces that share a network (an address's /24 or /48) with another piece of the
    /// file, because too few networks could take them (see `jewel::policy::crowded`).
    #[serde(default)]
    pub crowded: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    pub cap: String,
    /// An absolute path the node writes.
    pub out: PathBuf,
    /// Plaintext bytes `start..end` only (end exclusive); the whole file if absent.
    #[serde(default)]
    pub range: Option<(u64, u64)>,
    #[serde(default)]
    pub job: Option<String>,
    /// Replace `out` if it is an existing file (never a folder or a link).
    #[serde(default)]
    pub force: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetResponse {
    pub stats: GetStats,
    /// Bytes already there from an interrupted get of the same file (0: a fresh get).
    pub resumed_from: u64,
}

/// A request about one file: a read cap or a verify cap.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapRequest {
    pub cap: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub cap: String,
    /// Fetch and verify every byte of every piece, not one sampled chunk group each.
    #[serde(default)]
    pub verify: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub job: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ProgressResponse {
    pub done: u64,
    pub total: u64,
}

/// What an audit found of one piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PieceState {
    /// Proved it holds the piece, in time.
    Alive,
    /// Proved it, but only after [`crate::audit::AUDIT_LATE`].
    Late,
    /// Answered with bytes that do not verify, or said its copy is damaged.
    Corrupt,
    /// Did not answer, does not have it, or no holder is known.
    Missing,
}

impl PieceState {
    /// Whether the piece can be counted on to rebuild the file.
    pub fn usable(self) -> bool {
        matches!(self, PieceState::Alive | PieceState::Late)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PieceState::Alive => "alive",
            PieceState::Late => "late",
            PieceState::Corrupt => "corrupt",
            PieceState::Missing => "missing",
        }
    }
}

/// The last audit of a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// Unix seconds.
    pub at: u64,
    pub states: Vec<PieceState>,
    /// Bytes the proofs moved.
    pub bytes: u64,
    /// For a full verification: each slot's segments whose chunk did not verify (all of them
    /// for a holder that could not be read), so recoverability is judged segment by segment
    /// (pieces damaged in different segments still rebuild the file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_segments: Vec<Vec<u32>>,
}

/// One piece in a [`CheckReport`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PieceReport {
    pub slot: usize,
    pub piece: String,
    pub holder: Option<String>,
    pub state: PieceState,
}

/// A file's audit: each piece with its holder and state, and the scheme's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckReport {
    pub pieces: Vec<PieceReport>,
    pub scheme: String,
    pub n: usize,
    pub d: f64,
    pub m: usize,
    pub alive: usize,
    pub recoverable: bool,
    pub audit_bytes: u64,
    pub audited_at: u64,
    /// Whether every byte of every piece was fetched and verified (`check --verify`).
    pub verified: bool,
    /// Slots whose holder said, at the last lease renewal, that it no longer has the piece.
    pub lease_missing: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairResponse {
    pub repaired: Repaired,
    pub check: CheckReport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RmResponse {
    /// The manifest id of the file released.
    pub released: String,
    /// Holders that did not answer: they still owe the release, which the node retries
    /// until they do or their leases run out.
    pub owed: Vec<String>,
    /// The paths of the index that showed the file, removed with it.
    #[serde(default)]
    pub unindexed: Vec<String>,
}

/// A release a holder has not confirmed yet, kept in the node's state and retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRelease {
    /// The file's manifest id.
    pub file: String,
    pub holder: String,
    /// The blocks the holder keeps for the file (hex ids).
    pub blocks: Vec<String>,
    /// When the holder's leases run out anyway (Unix seconds): retried until then.
    pub until: u64,
}

/// A file this node put: where its pieces went. Kept in the node's state store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    /// The read cap, so the owner can get the file back by name (the state store is 0600).
    #[serde(default)]
    pub cap: Option<String>,
    pub scheme: String,
    pub size: u64,
    pub holders: Vec<String>,
    /// The last audit, if any.
    #[serde(default)]
    pub audit: Option<Audit>,
    /// Slots whose holder said, at the last lease renewal, that it no longer has the piece.
    #[serde(default)]
    pub lease_missing: Vec<usize>,
    /// When the leases on the pieces were last renewed (Unix seconds; 0: at the put).
    #[serde(default)]
    pub leased_at: u64,
    /// Slots whose piece a full verification (`check --verify`) found corrupt, until a
    /// repair replaces them.
    #[serde(default)]
    pub corrupt: Vec<usize>,
    /// The user's index names it: released once no kept entry or version does.
    #[serde(default)]
    pub indexed: bool,
}

/// A block this node holds for a peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockEntry {
    pub id: String,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirResponse {
    pub blocks: Vec<BlockEntry>,
    pub used: u64,
    pub capacity: Option<u64>,
    pub free: Option<u64>,
    /// The files this node put, by manifest id.
    pub files: BTreeMap<String, FileRecord>,
}

/// A peer this node knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub peer: String,
    pub addrs: Vec<String>,
    pub connected: bool,
    pub zone: Option<String>,
    /// Whether it serves the block protocol (can hold pieces); `None`: not known yet.
    pub blocks: Option<bool>,
    /// The address it is connected from, if it is connected.
    #[serde(default)]
    pub ip: Option<String>,
    /// Whether it stopped answering (frozen, say): asked last, and given no pieces, until
    /// it answers again.
    #[serde(default)]
    pub silent: bool,
    /// Its gossip score: below -80 (it sent messages that were refused) nothing it
    /// gossips is read.
    #[serde(default)]
    pub gossip_score: Option<f64>,
    /// How it is connected now: direct, hole-punched (through both NATs) or relayed.
    #[serde(default)]
    pub path: Option<jewel_net::reach::Path>,
    /// Its last round-trip time, in milliseconds, if connected.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Its transfer rate in bytes per second, measured on recent transfers (of 64 KiB or
    /// more) to and from it, if there were any.
    #[serde(default)]
    pub rate_bps: Option<f64>,
    /// Whether it took a piece from this node and then could not prove it held it (a
    /// black hole, or a disk that failed): it is given no pieces for an hour.
    #[serde(default)]
    pub unproven: bool,
}

/// How this node is reached from outside (see `jewel status`).
pub type Reachability = jewel_net::swarm::Reachability;

/// This node's invite: one line another node joins the network through.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InviteResponse {
    pub invite: String,
    /// The addresses it carries.
    pub addrs: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub invite: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The peer the invite named, now connected.
    pub peer: String,
}

/// The owner's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The scheme `put` uses when none is given.
    pub default_scheme: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { default_scheme: crate::DEFAULT_SCHEME.to_string() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub usage: Usage,
    pub workers: Vec<WorkerStatus>,
    /// Blocks the scrubber dropped because they no longer matched their id.
    pub dropped: Vec<DroppedBlock>,
    /// Puts whose file is being read now (one whose client went away stops at once).
    #[serde(default)]
    pub puts_running: usize,
    /// Gets writing to a file now (one whose client went away stops before its next
    /// segment, and leaves its part file to resume from).
    #[serde(default)]
    pub gets_running: usize,
    /// The users' transfers running now: puts, gets, and reads streamed to a client (a
    /// gateway's, say); one whose client went away ends.
    #[serde(default)]
    pub transfers_running: usize,
    /// The user's index on this node.
    #[serde(default)]
    pub index: Option<IndexStatus>,
    /// How the node is reached from outside.
    #[serde(default)]
    pub reach: Option<Reachability>,
    /// Write transactions of the node's state committed since it started (changes made
    /// together share one: group commit).
    #[serde(default)]
    pub state_commits: u64,
}

/// The user's index on a node: what it shows, and how much of it the node's last
/// published head holds (all of it: another device recovers everything from the DHT).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexStatus {
    pub files: usize,
    /// Ops (changes) this node knows, its own and its other devices'.
    pub changes: u64,
    /// Ops the last head this node published holds (0 without a user identity).
    pub published_changes: u64,
    /// Whether the node holds a user identity (without one, the index stays here).
    pub shared: bool,
    /// The bytes of the last head published, and whether it was a delta (the changes
    /// since the one before) rather than a checkpoint (every change).
    #[serde(default)]
    pub last_head_bytes: u64,
    #[serde(default)]
    pub last_head_delta: bool,
}

/// A block the scrubber dropped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DroppedBlock {
    pub id: String,
    /// Unix seconds.
    pub at: u64,
}

/// What a background worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Running now.
    Busy,
    /// Waiting for its next run.
    Idle,
    /// Has work but holds back (a rate or a backoff).
    Throttled,
}

/// One background worker's state and its last run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Runs so far.
    pub runs: u64,
    /// When the last run ended (Unix seconds).
    pub last_run: Option<u64>,
    /// What the last run found, in a few words.
    pub last_found: Option<String>,
    /// The last run's error, if it failed; kept until a run succeeds.
    pub last_error: Option<String>,
    /// When it runs next (Unix seconds), if scheduled.
    pub next_run: Option<u64>,
}
