//! The node daemon: a block store and the network, with a local control API.
//!
//! `DIR/identity.key` (ed25519, kept across restarts), `DIR/store` (blocks served to
//! peers), `DIR/files.json` (placement of the
//! files this node put: the block book's fast path), and `DIR/api.json`, written only once
//! the node is ready and removed on shutdown. The API is HTTP/JSON on 127.0.0.1 only and
//! needs the token from `api.json` (`Authorization: Bearer TOKEN`). Work that blocks
//! (pipelines, store scans) runs on the blocking pool.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jewel_codec::SchemeSpec;
use jewel_net::{Keypair, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::client::{self, Candidate};
use jewel::caps::{Cap, ReadCap};
use jewel::pipeline::{self, ByteRange, PutOptions};
use jewel::store::{BlockStore, FsStore, CHUNK_GROUP_SIZE};
use jewel::BlockId;
use jewel_net::{BlockClient, NetConfig, Network};

/// The scheme `put` uses when none is given.
pub const DEFAULT_SCHEME: &str = "jewels:3/5";

/// Why the node could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("identity file {0} is damaged; move it away to make a new identity")]
    Identity(PathBuf),
    #[error("the control API must listen on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Net(#[from] jewel_net::NetError),
    #[error(transparent)]
    Store(#[from] jewel::store::StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { path: path.to_path_buf(), source }
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub home: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub api: SocketAddr,
    pub capacity: Option<u64>,
    pub zone: Option<String>,
    pub mdns: bool,
    /// Relay connections for peers behind NATs.
    pub relay_server: bool,
    /// Most bytes per second served to peers.
    pub max_upload: Option<u64>,
    /// How often this node audits the files it put (and repairs them if needed).
    pub audit_every: std::time::Duration,
    /// Repair a file once fewer than k + margin pieces are alive (default (n-k)/2).
    pub repair_margin: Option<usize>,
    /// How long the leases on this node's files run; they are renewed at every audit.
    pub lease: std::time::Duration,
}

/// Leases run this long unless told otherwise.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// What `api.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiInfo {
    pub api: String,
    pub token: String,
    pub peer_id: String,
    pub listen: Vec<String>,
}

/// A file this node put: where its pieces went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// The read cap, so the owner can get the file back by name (files.json is 0600).
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
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn load_identity(home: &Path) -> Result<Keypair, NodeError> {
    let path = home.join("identity.key");
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|_| NodeError::Identity(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|_| NodeError::Identity(path.clone()))?;
            write_atomic(&path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(NodeError::Io { path, source: e }),
    }
}

struct NodeState {
    home: PathBuf,
    store: FsStore,
    net: BlockClient,
    token: String,
    files: Mutex<BTreeMap<String, FileEntry>>,
    jobs: Jobs,
    repairing: Mutex<std::collections::HashSet<BlockId>>,
    leases: Arc<jewel::lease::LeaseBook>,
    lease_secs: u32,
}

/// Jobs whose progress a client may follow, by the id the client chose.
const MAX_JOBS: usize = 64;

/// How far one put or get is: bytes of the file done, of `total`.
#[derive(Default)]
pub struct Progress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Jobs(Mutex<BTreeMap<String, Arc<Progress>>>);

impl Jobs {
    /// Starts following job `id` (if the client named one and there is room).
    fn start(&self, id: Option<&str>, total: u64) -> Option<JobGuard<'_>> {
        let id = id?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        let mut jobs = self.0.lock().ok()?;
        if jobs.len() >= MAX_JOBS {
            return None;
        }
        let p = Arc::new(Progress::default());
        p.total.store(total, std::sync::atomic::Ordering::Relaxed);
        jobs.insert(id.to_string(), p.clone());
        Some(JobGuard { jobs: self, id: id.to_string(), progress: p })
    }

    fn get(&self, id: &str) -> Option<(u64, u64)> {
        let jobs = self.0.lock().ok()?;
        let p = jobs.get(id)?;
        Some((
            p.done.load(std::sync::atomic::Ordering::Relaxed),
            p.total.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }
}

/// Removes its job when the put or get ends, however it ends.
struct JobGuard<'a> {
    jobs: &'a Jobs,
    id: String,
    progress: Arc<Progress>,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.0.lock() {
            jobs.remove(&self.id);
        }
    }
}

/// Counts each segment fetched (its plaintext length) into a job's progress.
struct CountedFetch<'a> {
    inner: &'a dyn pipeline::Fetch,
    progress: Option<Arc<Progress>>,
    manifest: &'a jewel::manifest::Manifest,
}

impl pipeline::Fetch for CountedFetch<'_> {
    fn fetch(
        &self,
        scheme: &dyn jewel_codec::Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &jewel::pool::Pool<Vec<u8>>,
        places: &mut [Option<&mut [u8]>],
    ) -> Result<pipeline::Fetched, pipeline::PipelineError> {
        let chunks = self.inner.fetch(scheme, segment, want, pool, places)?;
        if let Some(p) = &self.progress {
            p.done.fetch_add(self.manifest.plain_len(segment) as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(chunks)
    }

    fn report(&self) -> (Vec<u64>, Vec<pipeline::PieceFault>) {
        self.inner.report()
    }
}

/// Counts the bytes that pass through a reader into a job's progress.
struct Counted<T> {
    inner: T,
    progress: Option<Arc<Progress>>,
}

impl<T> Counted<T> {
    fn add(&self, n: usize) {
        if let Some(p) = &self.progress {
            p.done.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.add(n);
        Ok(n)
    }
}

/// The owner's settings, in `DIR/settings.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// The scheme `put` uses when none is given.
    pub default_scheme: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { default_scheme: DEFAULT_SCHEME.to_string() }
    }
}

impl NodeState {
    fn settings(&self) -> Settings {
        std::fs::read(self.home.join("settings.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_files(&self) -> Result<(), NodeError> {
        let files = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        let json = serde_json::to_vec_pretty(&files).unwrap_or_default();
        write_atomic(&self.home.join("files.json"), &json)
    }
}

impl From<jewel::offline::OfflineError> for ApiError {
    fn from(e: jewel::offline::OfflineError) -> Self {
        bad(e)
    }
}

/// An API error: an HTTP status and one line of text.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Runs a node until SIGINT or SIGTERM. `ready` is called once `api.json` is written.
pub async fn run(config: NodeConfig, ready: impl FnOnce(&ApiInfo)) -> Result<(), NodeError> {
    if !config.api.ip().is_loopback() {
        return Err(NodeError::NotLoopback(config.api));
    }
    std::fs::create_dir_all(&config.home).map_err(io_err(&config.home))?;
    let keypair = load_identity(&config.home)?;
    let store = FsStore::open(config.home.join("store"), config.capacity)?;
    let leases = Arc::new(jewel::lease::LeaseBook::open(&config.home.join("leases.redb")).map_err(|e| {
        NodeError::Io { path: config.home.join("leases.redb"), source: std::io::Error::other(e.to_string()) }
    })?);
    let net_config = NetConfig {
        listen: config.listen.clone(),
        bootstrap: config.bootstrap.clone(),
        mdns: config.mdns,
        zone: config.zone.clone(),
        serve_blocks: true,
        max_upload: config.max_upload,
        leases: Some(leases.clone()),
        relay_server: config.relay_server,
        autonat_local: false,
    };
    let network = Network::start(keypair, net_config, Arc::new(store.clone())).await?;
    let listener = tokio::net::TcpListener::bind(config.api).await.map_err(io_err(&config.home))?;
    let api_addr = listener.local_addr().map_err(io_err(&config.home))?;
    let mut token = [0u8; 16];
    jewel::crypto::fill_random(&mut token).map_err(|e| NodeError::Io {
        path: config.home.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let files_path = config.home.join("files.json");
    let files =
        std::fs::read(&files_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let state = Arc::new(NodeState {
        home: config.home.clone(),
        store,
        net: network.blocks().clone(),
        token: token.clone(),
        files: Mutex::new(files),
        jobs: Jobs::default(),
        repairing: Mutex::default(),
        leases,
        lease_secs: u32::try_from(config.lease.as_secs()).unwrap_or(u32::MAX).max(1),
    });
    let maintenance = tokio::spawn(maintain(state.clone(), config.audit_every, config.repair_margin));
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/dir", get(dir))
        .route("/v1/put", post(put))
        .route("/v1/get", post(get_file))
        .route("/v1/check", post(check))
        .route("/v1/repair", post(repair))
        .route("/v1/rm", post(rm))
        .route("/v1/progress/{job}", get(progress))
        .route("/v1/settings", get(settings).post(set_settings))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    let listen = network.handle().listeners().await?.iter().map(|a| a.to_string()).collect();
    let info =
        ApiInfo { api: api_addr.to_string(), token, peer_id: network.handle().peer_id().to_string(), listen };
    let api_json = config.home.join("api.json");
    write_atomic(&api_json, &serde_json::to_vec_pretty(&info).unwrap_or_default())?;
    ready(&info);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    let _ = std::fs::remove_file(&api_json);
    maintenance.abort();
    network.shutdown().await;
    served.map_err(io_err(&config.home))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn auth(State(state): State<Arc<NodeState>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == state.token);
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong or missing API token; it is in HOME/api.json".into(),
        )
        .into_response();
    }
    next.run(req).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| failed("internal error"))?
}

async fn status(State(s): State<Arc<NodeState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let listen: Vec<String> =
        s.net.net().listeners().await.map_err(failed)?.iter().map(|a| a.to_string()).collect();
    Ok(Json(serde_json::json!({
        "peer_id": s.net.net().peer_id().to_string(),
        "listen": listen,
        "usage": s.store.usage(),
    })))
}

async fn peers(State(s): State<Arc<NodeState>>) -> Result<Json<Vec<jewel_net::PeerInfo>>, ApiError> {
    Ok(Json(s.net.net().peers().await.map_err(failed)?))
}

async fn dir(State(s): State<Arc<NodeState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = s.store.clone();
    let blocks = blocking(move || store.list().map_err(failed)).await?;
    let usage = s.store.usage();
    let files = s.files.lock().map(|f| f.clone()).unwrap_or_default();
    let blocks: Vec<serde_json::Value> =
        blocks.iter().map(|(id, size)| serde_json::json!({ "id": id.to_string(), "size": size })).collect();
    Ok(Json(serde_json::json!({
        "blocks": blocks,
        "used": usage.used,
        "capacity": usage.capacity,
        "free": usage.capacity.map(|c| c.saturating_sub(usage.used)),
        "files": files,
    })))
}

#[derive(Deserialize)]
struct PutBody {
    path: PathBuf,
    scheme: Option<String>,
    /// An id the client picks to follow progress at `/v1/progress/{job}`.
    job: Option<String>,
}

async fn settings(State(s): State<Arc<NodeState>>) -> Json<Settings> {
    Json(s.settings())
}

async fn set_settings(
    State(s): State<Arc<NodeState>>,
    Json(body): Json<Settings>,
) -> Result<Json<Settings>, ApiError> {
    let spec = SchemeSpec::parse(&body.default_scheme).map_err(|e| bad(format!("bad scheme: {e}")))?;
    let settings = Settings { default_scheme: spec.to_string() };
    let json = serde_json::to_vec_pretty(&settings).map_err(failed)?;
    write_atomic(&s.home.join("settings.json"), &json).map_err(failed)?;
    Ok(Json(settings))
}

async fn progress(
    State(s): State<Arc<NodeState>>,
    axum::extract::Path(job): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match s.jobs.get(&job) {
        Some((done, total)) => Ok(Json(serde_json::json!({ "done": done, "total": total }))),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {job} is running"))),
    }
}

async fn put(
    State(s): State<Arc<NodeState>>,
    Json(body): Json<PutBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let default = s.settings().default_scheme;
    let spec = SchemeSpec::parse(body.scheme.as_deref().unwrap_or(&default)).map_err(bad)?;
    let me = s.net.net().peer_id();
    let started = std::time::Instant::now();
    let candidates = candidates(&s, &std::collections::HashSet::from([me])).await?;
    let reached = started.elapsed();
    let slots = jewel_codec::build(&spec).map_err(bad)?.slots();
    // All candidates, in placement order: the first n hold the pieces, the rest are spares
    // for a peer that vanishes mid-put.
    let holders = client::place(slots, &candidates).map_err(bad)?;
    let spares = client::place(candidates.len(), &candidates).unwrap_or_default();
    let holders: Vec<PeerId> =
        holders.iter().copied().chain(spares.into_iter().filter(|p| !holders.contains(p))).collect();
    let rt = tokio::runtime::Handle::current();
    let state = s.clone();
    let path = body.path.clone();
    let placed = blocking(move || {
        let cannot = |e: std::io::Error| bad(format!("cannot read {}: {e}", path.display()));
        let file = std::fs::File::open(&path).map_err(cannot)?;
        let size = file.metadata().map_err(cannot)?.len();
        let job = state.jobs.start(body.job.as_deref(), size);
        let mut input = Counted { inner: file, progress: job.as_ref().map(|j| j.progress.clone()) };
        let opts = PutOptions::new(spec);
        client::put_file(&rt, &state.net, &mut input, size, &opts, &holders).map_err(failed)
    })
    .await?;
    let stored = started.elapsed();
    let name = body.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let entry = FileEntry {
        name,
        cap: Some(placed.put.cap.to_string()),
        scheme: placed.put.manifest.scheme.to_string(),
        size: placed.put.manifest.file_len,
        holders: placed.holders.iter().map(|p| p.to_string()).collect(),
        audit: None,
        lease_missing: Vec::new(),
    };
    let file = placed.put.cap.manifest;
    let holders: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
    let missing = lease_file(&s.net, file, &placed.put.manifest.pieces, &holders, s.lease_secs).await;
    if !missing.is_empty() {
        return Err(failed(format!("holders of pieces {missing:?} lost them before they could be leased")));
    }
    if let Ok(mut f) = s.files.lock() {
        f.insert(placed.put.cap.manifest.to_string(), entry);
    }
    let leased = started.elapsed();
    s.save_files().map_err(failed)?;
    tracing::debug!(?reached, ?stored, ?leased, done = ?started.elapsed(), "put");
    Ok(Json(serde_json::json!({
        "cap": placed.put.cap.to_string(),
        "verify_cap": placed.put.cap.verify_cap().to_string(),
        "holders": placed.holders.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "stats": placed.put.stats,
    })))
}

/// Peers tried for one placement, at most.
const MAX_CANDIDATES: usize = 64;
/// A candidate that cannot be connected to within this is left out.
const REACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Peers to place pieces on, except `exclude`: only those that can be reached now (a
/// known peer may well be gone), connected ones first.
async fn candidates(
    s: &NodeState,
    exclude: &std::collections::HashSet<PeerId>,
) -> Result<Vec<Candidate>, ApiError> {
    let mut known = s.net.net().peers().await.map_err(failed)?;
    known.sort_by_key(|p| !p.connected);
    let known: Vec<Candidate> = known
        .into_iter()
        .filter_map(|p| Some(Candidate { peer: p.peer.parse::<PeerId>().ok()?, zone: p.zone }))
        .filter(|c| !exclude.contains(&c.peer))
        .take(MAX_CANDIDATES)
        .collect();
    let reach = known.iter().map(|c| tokio::time::timeout(REACH_TIMEOUT, s.net.net().connect(c.peer)));
    let reached = futures::future::join_all(reach).await;
    Ok(known.into_iter().zip(reached).filter(|(_, r)| matches!(r, Ok(Ok(_)))).map(|(c, _)| c).collect())
}

/// The recorded holders of a file, if this node put it.
fn recorded_holders(s: &NodeState, manifest: &BlockId) -> Option<Vec<PeerId>> {
    let files = s.files.lock().ok()?;
    let entry = files.get(&manifest.to_string())?;
    entry.holders.iter().map(|h| h.parse().ok()).collect()
}

#[derive(Deserialize)]
struct GetBody {
    cap: String,
    out: PathBuf,
    /// Plaintext bytes `start..end` only (end exclusive); the whole file if absent.
    range: Option<(u64, u64)>,
    /// An id the client picks to follow progress at `/v1/progress/{job}`.
    job: Option<String>,
}

/// Gets a file into `out`. A whole-file get is resumable: an interrupted one leaves a
/// hidden part file beside `out`, and the next get of the same cap continues from it.
async fn get_file(
    State(s): State<Arc<NodeState>>,
    Json(body): Json<GetBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cap: ReadCap = body.cap.parse().map_err(bad)?;
    if let Some((start, end)) = body.range {
        if start > end {
            return Err(bad(format!("range {start}-{end} ends before it starts")));
        }
    }
    let rt = tokio::runtime::Handle::current();
    let (stats, resumed_from) = blocking(move || {
        let (manifest, located) = locate_file(&s, &rt, cap.manifest)?;
        manifest.check_key(&cap.key).map_err(bad)?;
        // Progress counts whole segments fetched, of the segments the get covers.
        let seg = u64::from(manifest.segment_size);
        let (start, end) = body.range.unwrap_or((0, manifest.file_len));
        let end = end.min(manifest.file_len);
        let covered = (end.div_ceil(seg) * seg).min(manifest.file_len).saturating_sub(start / seg * seg);
        let job = s.jobs.start(body.job.as_deref(), covered);
        if let (Some(j), None) = (&job, body.range) {
            let already = jewel::offline::resume_offset(&body.out, &manifest);
            j.progress.done.store(already, std::sync::atomic::Ordering::Relaxed);
        }
        let fetch = client::NetFetch::new(rt.clone(), s.net.clone(), &manifest, &located).map_err(failed)?;
        let fetch = CountedFetch {
            inner: &fetch,
            progress: job.as_ref().map(|j| j.progress.clone()),
            manifest: &manifest,
        };
        match body.range {
            Some((start, end)) => {
                let stats = jewel::offline::write_atomically(&body.out, |w| {
                    let range = ByteRange { start, end };
                    pipeline::get_with(&manifest, &cap.key, &fetch, range, w, client::GET_THREADS)
                        .map_err(failed)
                })?;
                Ok((stats, 0))
            }
            None => {
                jewel::offline::get_resumable(&body.out, &manifest, &cap.key, &fetch, client::GET_THREADS)
                    .map_err(failed)
            }
        }
    })
    .await?;
    let mut v = serde_json::to_value(stats).unwrap_or_default();
    v["resumed_from"] = serde_json::json!(resumed_from);
    Ok(Json(v))
}

#[derive(Deserialize)]
struct CapBody {
    cap: String,
}

/// What an audit found of one piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PieceState {
    /// Proved it holds the piece, in time.
    Alive,
    /// Proved it, but only after [`AUDIT_LATE`].
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
}

/// An audit answer slower than this marks its holder late.
pub const AUDIT_LATE: std::time::Duration = std::time::Duration::from_secs(2);
/// An audit answer slower than this counts as missing.
pub const AUDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The last audit of a file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Audit {
    /// Unix seconds.
    pub at: u64,
    pub states: Vec<PieceState>,
    /// Bytes the proofs moved.
    pub bytes: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Asks every holder, in parallel, to prove its piece with a random chunk group and its
/// bao proof, verified against the piece id.
async fn audit(net: &BlockClient, manifest: &jewel::manifest::Manifest, located: &[Option<PeerId>]) -> Audit {
    let Ok(scheme) = manifest.build_scheme() else { return Audit::default() };
    let probes = manifest.pieces.iter().enumerate().map(|(slot, piece)| {
        let holder = located.get(slot).copied().flatten();
        let size = manifest.piece_len(scheme.as_ref(), slot);
        let groups = size.div_ceil(CHUNK_GROUP_SIZE as u64).max(1);
        let mut pick = [0u8; 8];
        let _ = jewel::crypto::fill_random(&mut pick);
        let group = u64::from_le_bytes(pick) % groups;
        async move {
            let Some(peer) = holder else { return (PieceState::Missing, 0) };
            let t = std::time::Instant::now();
            match tokio::time::timeout(AUDIT_TIMEOUT, net.prove(peer, *piece, size, group)).await {
                Ok(Ok(moved)) if t.elapsed() > AUDIT_LATE => (PieceState::Late, moved as u64),
                Ok(Ok(moved)) => (PieceState::Alive, moved as u64),
                Ok(Err(jewel_net::NetError::Wire(jewel_net::wire::WireError::Refused {
                    status: jewel_net::wire::Status::Corrupt,
                    ..
                })))
                | Ok(Err(jewel_net::NetError::Fragment { .. })) => (PieceState::Corrupt, 0),
                _ => (PieceState::Missing, 0),
            }
        }
    });
    let results = futures::future::join_all(probes).await;
    Audit {
        at: unix_now(),
        bytes: results.iter().map(|r| r.1).sum(),
        states: results.into_iter().map(|r| r.0).collect(),
    }
}

/// A file's manifest and where its pieces are: the recorded placement, else the DHT.
fn locate_file(
    s: &NodeState,
    rt: &tokio::runtime::Handle,
    id: BlockId,
) -> Result<(jewel::manifest::Manifest, Vec<Option<PeerId>>), ApiError> {
    let holders = recorded_holders(s, &id);
    let manifest =
        client::fetch_manifest(rt, &s.net, id, holders.as_deref().unwrap_or_default()).map_err(failed)?;
    let located = client::locate(rt, &s.net, &manifest, holders.as_deref());
    Ok((manifest, located))
}

/// Audits a file (any cap; for this node's own files the result is kept for `check`).
async fn audit_file(
    s: &Arc<NodeState>,
    id: BlockId,
) -> Result<(jewel::manifest::Manifest, Vec<Option<PeerId>>, Audit), ApiError> {
    let rt = tokio::runtime::Handle::current();
    let state = s.clone();
    let (manifest, located) = blocking(move || locate_file(&state, &rt, id)).await?;
    let result = audit(&s.net, &manifest, &located).await;
    if let Ok(mut files) = s.files.lock() {
        if let Some(entry) = files.get_mut(&id.to_string()) {
            entry.audit = Some(result.clone());
        }
    }
    let _ = s.save_files();
    Ok((manifest, located, result))
}

fn check_report(
    manifest: &jewel::manifest::Manifest,
    located: &[Option<PeerId>],
    audit: &Audit,
) -> Result<serde_json::Value, ApiError> {
    let scheme = manifest.build_scheme().map_err(failed)?;
    let pieces: Vec<serde_json::Value> = manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, piece)| {
            serde_json::json!({
                "slot": slot,
                "piece": piece.to_string(),
                "holder": located.get(slot).copied().flatten().map(|p| p.to_string()),
                "state": audit.states.get(slot).copied().unwrap_or(PieceState::Missing),
            })
        })
        .collect();
    let usable: Vec<bool> = audit.states.iter().map(|s| s.usable()).collect();
    Ok(serde_json::json!({
        "pieces": pieces,
        "scheme": manifest.scheme.to_string(),
        "n": scheme.slots(),
        "d": scheme.redundancy(),
        "m": scheme.min_peers(),
        "alive": usable.iter().filter(|a| **a).count(),
        "recoverable": scheme.can_decode(&usable),
        "audit_bytes": audit.bytes,
        "audited_at": audit.at,
    }))
}

async fn check(
    State(s): State<Arc<NodeState>>,
    Json(body): Json<CapBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cap = Cap::parse(&body.cap).map_err(bad)?;
    let (manifest, located, audit) = audit_file(&s, cap.manifest()).await?;
    let mut report = check_report(&manifest, &located, &audit)?;
    let missing =
        s.files.lock().ok().and_then(|f| f.get(&cap.manifest().to_string()).map(|e| e.lease_missing.clone()));
    report["lease_missing"] = serde_json::json!(missing.unwrap_or_default());
    Ok(Json(report))
}

/// Slots whose pieces are not usable in `audit`.
fn lost_slots(audit: &Audit) -> Vec<usize> {
    audit.states.iter().enumerate().filter(|(_, st)| !st.usable()).map(|(slot, _)| slot).collect()
}

/// Audits a file and rebuilds every piece that is not usable onto new distinct peers (not
/// the file's current holders, not this node), then records the new placement.
async fn repair_file(s: &Arc<NodeState>, id: BlockId) -> Result<serde_json::Value, ApiError> {
    let _guard = match RepairGuard::take(s, id) {
        Some(g) => g,
        None => return Err(ApiError(StatusCode::CONFLICT, format!("file {id} is being repaired already"))),
    };
    let (manifest, located, before) = audit_file(s, id).await?;
    let lost = lost_slots(&before);
    if lost.is_empty() {
        return Ok(
            serde_json::json!({ "repaired": client::Repaired::default(), "check": check_report(&manifest, &located, &before)? }),
        );
    }
    let mut taken: std::collections::HashSet<PeerId> = located.iter().flatten().copied().collect();
    taken.insert(s.net.net().peer_id());
    let candidates = candidates(s, &taken).await?;
    let targets = client::place(lost.len(), &candidates).map_err(bad)?;
    let rt = tokio::runtime::Handle::current();
    let (state, sources) = (s.clone(), located.clone());
    let (m, lost2, targets2) = (manifest.clone(), lost.clone(), targets.clone());
    let repaired = blocking(move || {
        client::repair_slots(&rt, &state.net, &m, &sources, &lost2, &targets2, client::GET_THREADS)
            .map_err(failed)
    })
    .await?;
    let mut now = located.clone();
    for (slot, peer) in lost.iter().zip(&targets) {
        now[*slot] = Some(*peer);
    }
    let fresh: Vec<Option<PeerId>> =
        (0..now.len()).map(|slot| if lost.contains(&slot) { now[slot] } else { None }).collect();
    lease_file(&s.net, id, &manifest.pieces, &fresh, s.lease_secs).await;
    if let Ok(mut files) = s.files.lock() {
        if let Some(entry) = files.get_mut(&id.to_string()) {
            entry.holders = now.iter().map(|p| p.map(|p| p.to_string()).unwrap_or_default()).collect();
        }
    }
    s.save_files().map_err(failed)?;
    let (manifest, located, after) = audit_file(s, id).await?;
    Ok(serde_json::json!({ "repaired": repaired, "check": check_report(&manifest, &located, &after)? }))
}

/// At most one repair per file at a time.
struct RepairGuard {
    state: Arc<NodeState>,
    id: BlockId,
}

impl RepairGuard {
    fn take(s: &Arc<NodeState>, id: BlockId) -> Option<RepairGuard> {
        let mut busy = s.repairing.lock().ok()?;
        busy.insert(id).then(|| RepairGuard { state: s.clone(), id })
    }
}

impl Drop for RepairGuard {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.state.repairing.lock() {
            busy.remove(&self.id);
        }
    }
}

async fn repair(
    State(s): State<Arc<NodeState>>,
    Json(body): Json<CapBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cap = Cap::parse(&body.cap).map_err(bad)?;
    Ok(Json(repair_file(&s, cap.manifest()).await?))
}

/// Leases (or, with 0 seconds, releases) each holder's piece and the manifest for `file`.
/// Returns the slots whose holder answered that it does not have its piece: a renewal for
/// a block that is gone is reported, not ignored. Holders that cannot be reached are left
/// to the audit.
async fn lease_file(
    net: &BlockClient,
    file: BlockId,
    pieces: &[BlockId],
    holders: &[Option<PeerId>],
    seconds: u32,
) -> Vec<usize> {
    let asks = pieces.iter().zip(holders).enumerate().filter_map(|(slot, (piece, holder))| {
        let peer = (*holder)?;
        Some(async move { (slot, net.lease(peer, file, seconds, &[*piece, file]).await) })
    });
    let mut missing = Vec::new();
    for (slot, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(held) if held.first() == Some(&false) => {
                tracing::warn!(%file, slot, "a holder no longer has its piece (lease renewal)");
                missing.push(slot);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%file, slot, error = %e, "lease request failed"),
        }
    }
    missing
}

/// Renews the leases of one of this node's files and records what holders reported.
async fn renew(s: &Arc<NodeState>, id: BlockId) {
    let rt = tokio::runtime::Handle::current();
    let state = s.clone();
    let Ok((manifest, located)) = blocking(move || locate_file(&state, &rt, id)).await else { return };
    let missing = lease_file(&s.net, id, &manifest.pieces, &located, s.lease_secs).await;
    if let Ok(mut files) = s.files.lock() {
        if let Some(entry) = files.get_mut(&id.to_string()) {
            entry.lease_missing = missing;
        }
    }
}

/// Every `every`: collects expired blocks held for others, then renews the leases of every
/// file this node put and audits it; repairs a file when more pieces are
/// lost than its scheme tolerates minus the margin (`margin`, else half the tolerance:
/// (n-k)/2 for jewels).
async fn maintain(s: Arc<NodeState>, every: std::time::Duration, margin: Option<usize>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ids: Vec<String> = s.files.lock().map(|f| f.keys().cloned().collect()).unwrap_or_default();
        // Blocks held for others whose leases all ran out go first.
        let (store, book) = (s.store.clone(), s.leases.clone());
        match tokio::task::spawn_blocking(move || jewel::lease::gc(&store, &book, jewel::lease::now())).await
        {
            Ok(Ok(c)) if c.blocks > 0 => tracing::info!(blocks = c.blocks, bytes = c.bytes, "collected"),
            Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection failed"),
            _ => {}
        }
        for id in ids.iter().filter_map(|i| i.parse::<BlockId>().ok()) {
            renew(&s, id).await;
            let Ok((manifest, _, audit)) = audit_file(&s, id).await else { continue };
            let Ok(scheme) = manifest.build_scheme() else { continue };
            let tolerates = scheme.tolerates();
            let margin = margin.unwrap_or(tolerates / 2).min(tolerates);
            let lost = lost_slots(&audit).len();
            if lost > tolerates - margin {
                match repair_file(&s, id).await {
                    Ok(v) => tracing::info!(file = %id, report = %v["repaired"], "repaired"),
                    Err(e) => tracing::warn!(file = %id, error = %e.1, "repair failed"),
                }
            }
        }
    }
}

async fn rm(
    State(s): State<Arc<NodeState>>,
    Json(body): Json<CapBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cap = Cap::parse(&body.cap).map_err(bad)?;
    let id = cap.manifest();
    if !s.files.lock().map(|f| f.contains_key(&id.to_string())).unwrap_or(false) {
        return Err(bad(format!("this node has no file with manifest {id}")));
    }
    // Release every piece now: holders delete what no other lease keeps.
    let rt = tokio::runtime::Handle::current();
    let state = s.clone();
    let (manifest, located) = blocking(move || locate_file(&state, &rt, id)).await?;
    lease_file(&s.net, id, &manifest.pieces, &located, 0).await;
    if let Ok(mut f) = s.files.lock() {
        f.remove(&id.to_string());
    }
    s.save_files().map_err(failed)?;
    Ok(Json(serde_json::json!({ "released": id.to_string() })))
}
