//! The node daemon, `jewel node`: a block store and the network, the node's state, its
//! workers, and the control API, started and stopped together.
//!
//! The home holds `identity.key` (the node's ed25519 key, 0600), `store/` (blocks served
//! to peers), `state.redb` (what the node put, its settings, and the leases of what it
//! holds; see [`crate::state`]) and `api.json` (the API's address and token, 0600), which is
//! written only once the node is ready and removed on shutdown. The API is HTTP/JSON on
//! 127.0.0.1 only and needs the token (`Authorization: Bearer TOKEN`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jewel::lease::LeaseBook;
use jewel::store::FsStore;
use jewel_net::{Multiaddr, NetConfig, Network};

use crate::api::ApiInfo;
use crate::http::{router, Served};
use crate::identity::{ensure_home, load_identity, lock_home, new_token, write_secret, IdentityError};
use crate::node::Node;
use crate::state::{StateError, StateStore};
use crate::workers::{
    AuditWorker, GcWorker, ReleaseWorker, RenewWorker, RepairWorker, ScrubWorker, SystemClock, Waker, Worker,
    Workers,
};

/// Leases run this long unless told otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why the node could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the control API must listen on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Net(#[from] jewel_net::NetError),
    #[error(transparent)]
    Store(#[from] jewel::StoreError),
    #[error("the lease book in {}: {reason}", path.display())]
    Leases { path: PathBuf, reason: String },
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
    /// Dial no one at start, not even the peers known from the last run.
    pub alone: bool,
    pub api: SocketAddr,
    /// Most bytes stored for others; a tenth of the free disk if not given.
    pub capacity: Option<u64>,
    /// How much of that one peer, and all new peers together, may fill.
    pub quota: jewel_net::block::Quota,
    pub zone: Option<String>,
    pub mdns: bool,
    /// Relay connections for peers behind NATs.
    pub relay_server: bool,
    /// What the relay carries at most.
    pub relay_limits: jewel_net::swarm::RelayLimits,
    /// Most bytes per second served to peers.
    pub max_upload: Option<u64>,
    /// How often this node audits the files it put (and collects expired blocks).
    pub audit_every: Duration,
    /// Repair a file once fewer than k + margin pieces are alive (default (n-k)/2).
    pub repair_margin: Option<usize>,
    /// How long the leases on this node's files run; renewed once half has run.
    pub lease: Duration,
    /// Bytes per second the scrubber re-verifies, at most.
    pub scrub_rate: u64,
    /// Time between the scrubber's whole passes over the store.
    pub scrub_every: Duration,
}

/// The scrubber's default rate: about a tenth of a slow disk's sequential read.
pub const DEFAULT_SCRUB_RATE: u64 = 16 << 20;
/// The scrubber's default time between passes.
pub const DEFAULT_SCRUB_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Raises this process's soft limit on open files to its hard limit (many systems start
/// processes at 1024, which a node's connections and store can exceed); returns the limit
/// in force.
fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    let raised = Rlimit { current: now.maximum, maximum: now.maximum };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => now.maximum.unwrap_or(u64::MAX),
        Err(e) => {
            tracing::warn!(error = %e, soft, "cannot raise the limit on open files");
            soft
        }
    }
}

/// Connections a node allows at once: a quarter of its descriptors (the rest are for its
/// store and API), at most the network's default.
fn max_connections(descriptors: u64) -> u32 {
    u32::try_from(descriptors / 4).unwrap_or(u32::MAX).min(jewel_net::swarm::MAX_CONNECTIONS)
}

/// A tenth of the space free for this user on the home's file system when `--capacity` is
/// not given: strangers' pieces never fill the disk.
pub const DEFAULT_CAPACITY_SHARE: u64 = 10;

fn default_capacity(home: &Path) -> Result<u64, NodeError> {
    let fs = rustix::fs::statvfs(home).map_err(|e| io_err(home)(e.into()))?;
    Ok(fs.f_bavail.saturating_mul(fs.f_frsize) / DEFAULT_CAPACITY_SHARE)
}

/// Runs a node until SIGINT or SIGTERM. `ready` is called once `api.json` is written.
pub async fn run(config: NodeConfig, ready: impl FnOnce(&ApiInfo)) -> Result<(), NodeError> {
    if !config.api.ip().is_loopback() {
        return Err(NodeError::NotLoopback(config.api));
    }
    ensure_home(&config.home)?;
    // First, before anything in the home is read or cleaned up: one node per home.
    let _lock = lock_home(&config.home)?;
    let descriptors = raise_descriptor_limit();
    let keypair = load_identity(&config.home)?;
    let capacity = match config.capacity {
        Some(c) => c,
        None => default_capacity(&config.home)?,
    };
    tracing::info!(capacity, "the store holds at most this many bytes for others");
    let store = FsStore::open(config.home.join("store"), Some(capacity))?;
    let state = Arc::new(StateStore::open(&config.home)?);
    let leases = Arc::new(
        LeaseBook::in_database(state.database(), state.writer())
            .map_err(|e| NodeError::Leases { path: state.path().to_path_buf(), reason: e.to_string() })?,
    );
    let defaults = config.listen.is_empty();
    let listen = if defaults { default_listen(&state, false)? } else { config.listen.clone() };
    // UPnP multicasts on the local network to find the router: only for a node that
    // listens beyond this machine (never on a loopback devnet).
    let upnp = listen.iter().any(|a| jewel_net::reach::scope(a) != Some(jewel_net::reach::Scope::Loopback));
    let remembered = if config.alone { Vec::new() } else { remembered_peers(&state)? };
    if !remembered.is_empty() {
        tracing::info!(peers = remembered.len(), "dialing the peers known from the last run");
    }
    let net_config = |listen| NetConfig {
        listen,
        bootstrap: config.bootstrap.clone(),
        remembered: remembered.clone(),
        mdns: config.mdns,
        zone: config.zone.clone(),
        serve_blocks: true,
        max_upload: config.max_upload,
        leases: Some(leases.clone()),
        relay_server: config.relay_server,
        relay_limits: config.relay_limits,
        auto_relay: true,
        upnp,
        autonat_local: false,
        announce_concurrency: jewel_net::announce::ANNOUNCE_CONCURRENCY,
        announce_only: Some(jewel::manifest::Manifest::looks_like),
        announce_state: Some(config.home.join("announced")),
        max_connections: max_connections(descriptors),
        data_stall: jewel_net::block::DATA_STALL,
        quota: config.quota,
    };
    let network = match Network::start(keypair.clone(), net_config(listen), Arc::new(store.clone())).await {
        // Another node on this machine took the port between the check and the listen.
        Err(jewel_net::NetError::Listen { addr, reason }) if defaults => {
            tracing::warn!(%addr, %reason, "could not listen on the node's port: trying a free one");
            Network::start(keypair, net_config(default_listen(&state, true)?), Arc::new(store.clone()))
                .await?
        }
        started => started?,
    };
    let listener = tokio::net::TcpListener::bind(config.api).await.map_err(io_err(&config.home))?;
    let api_addr = listener.local_addr().map_err(io_err(&config.home))?;
    let token = new_token()?;
    let every = config.audit_every.as_secs().max(1);
    let repair_waker = Waker::default();
    let user = crate::user::load(&config.home).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the user identity could not be read; the index is not shared until it is");
        None
    });
    let loaded = crate::index::Loaded::open(&state)?;
    let seen = state
        .peers_seen()?
        .into_iter()
        .filter_map(|(k, at)| Some((jewel_net::PeerId::from_bytes(&k).ok()?, at)))
        .collect();
    let index_net = Arc::new(crate::index::NodeNet(network.handle().clone()));
    let node = Arc::new_cyclic(|me| Node {
        home: config.home.clone(),
        store: store.clone(),
        blocks: network.blocks().clone(),
        state: state.clone(),
        jobs: Default::default(),
        clock: Arc::new(SystemClock),
        lease_secs: u32::try_from(config.lease.as_secs()).unwrap_or(u32::MAX).max(1),
        repair_margin: config.repair_margin,
        repairing: Default::default(),
        transfers: tokio::sync::Semaphore::new(crate::node::MAX_TRANSFERS),
        small_puts: tokio::sync::Semaphore::new(crate::node::MAX_SMALL_PUTS),
        packing: tokio::sync::Semaphore::new(crate::pack::MAX_PACKS),
        located: Default::default(),
        reading: Arc::default(),
        full: Default::default(),
        liars: Default::default(),
        seen: std::sync::Mutex::new(seen),
        index: Arc::new(crate::index::IndexService::new(
            loaded,
            state.clone(),
            user,
            Arc::new(crate::index::NodeFiles(me.clone())),
            index_net,
            Arc::new(SystemClock),
        )),
        users: Default::default(),
        gets: Default::default(),
    });
    let scrub = ScrubWorker::new(
        Arc::new(store.clone()),
        leases.clone(),
        state,
        config.scrub_rate,
        config.scrub_every.as_secs(),
    );
    let workers: Vec<(Box<dyn Worker>, Waker)> = vec![
        (Box::new(GcWorker::new(Arc::new(store), leases, every)), Waker::default()),
        (Box::new(RenewWorker::new(node.clone())), Waker::default()),
        (Box::new(AuditWorker::new(node.clone(), every, repair_waker.clone())), Waker::default()),
        (Box::new(RepairWorker::new(node.clone(), every)), repair_waker),
        (Box::new(scrub), Waker::default()),
        (Box::new(ReleaseWorker::new(node.clone(), every)), Waker::default()),
    ];
    let workers = Workers::spawn(workers, node.clock.clone());
    let (index_stop, index_stopped) = tokio::sync::watch::channel(false);
    crate::index::spawn(node.index.clone(), network.handle().clone(), index_stopped.clone());
    let remembering = tokio::spawn(remember_peers(node.clone(), index_stopped));
    let requests = Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_REQUESTS));
    let served = Arc::new(Served { node, workers, token: token.clone(), requests });
    let app = router(served.clone());
    let listen = network.handle().listeners().await?.iter().map(|a| a.to_string()).collect();
    let info =
        ApiInfo { api: api_addr.to_string(), token, peer_id: network.handle().peer_id().to_string(), listen };
    let api_json = config.home.join("api.json");
    let json = serde_json::to_vec_pretty(&info).map_err(|e| io_err(&api_json)(std::io::Error::other(e)))?;
    write_secret(&api_json, &json)?;
    // The handlers are in place before the node says it is ready: a SIGTERM right after
    // that stops it cleanly (api.json removed) instead of killing it.
    let stop = shutdown_signal(&config.home)?;
    ready(&info);
    // A signal lets requests in flight finish, for SHUTDOWN_GRACE at most: a node stops
    // within a few seconds whatever it is doing.
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signalled = async move {
        stop.await;
        let _ = stopping.send(true);
    };
    let grace = async move {
        let _ = stopped.changed().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served_result = tokio::select! {
        r = crate::serve::serve(listener, app, signalled) => r,
        () = grace => {
            tracing::warn!("stopping with requests still in flight");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&api_json);
    served.workers.stop();
    let _ = index_stop.send(true);
    // The peers known now are kept for the next start.
    let _ = remembering.await;
    network.shutdown().await;
    served_result.map_err(io_err(&config.home))
}

/// The port a node listens on (TCP and QUIC, all interfaces) when no `--listen` is given,
/// as kubo's: a second node on the machine gets a free port instead. Either is kept in
/// the node's state, so peers find it at the same address after a restart.
pub const DEFAULT_PORT: u16 = 4001;

/// Whether TCP and UDP `port` are both free on all interfaces.
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

/// A free TCP port whose UDP twin is free too (a few tries).
fn free_port(state: &StateStore) -> Result<u16, NodeError> {
    let mut last = 0;
    for _ in 0..16 {
        let l = std::net::TcpListener::bind(("0.0.0.0", 0)).map_err(io_err(state.path()))?;
        last = l.local_addr().map_err(io_err(state.path()))?.port();
        drop(l);
        if port_free(last) {
            break;
        }
    }
    Ok(last)
}

/// The listen addresses of a node not told any: all interfaces, on its kept port (at first
/// [`DEFAULT_PORT`]). If that port is taken by another program (or `fresh` asks, after
/// another node took it between the check and the listen), a free one instead, kept from
/// then on: a node that cannot start is worse than one at a new address.
fn default_listen(state: &StateStore, fresh: bool) -> Result<Vec<Multiaddr>, NodeError> {
    let kept = state.listen_port()?;
    let port = match kept {
        Some(p) if !fresh && port_free(p) => p,
        None if !fresh && port_free(DEFAULT_PORT) => DEFAULT_PORT,
        _ => {
            let p = free_port(state)?;
            if let Some(k) = kept {
                tracing::warn!(kept = k, now = p, "the node's port is taken: listening on another");
            }
            p
        }
    };
    if kept != Some(port) {
        state.set_listen_port(port).wait()?;
    }
    let parse = |s: String| {
        s.parse::<Multiaddr>().map_err(|e| NodeError::Net(jewel_net::NetError::Transport(e.to_string())))
    };
    Ok(vec![parse(format!("/ip4/0.0.0.0/tcp/{port}"))?, parse(format!("/ip4/0.0.0.0/udp/{port}/quic-v1"))?])
}

/// Remembered peers dialed at start, at most.
const REMEMBERED_DIALED: usize = 16;

/// The addresses of the peers this node knew when it last ran, the last seen first, each
/// ending with its `/p2p/` id.
fn remembered_peers(state: &StateStore) -> Result<Vec<Multiaddr>, NodeError> {
    let mut known = state.known_peers()?;
    known.sort_by_key(|k| std::cmp::Reverse(k.1.seen));
    let mut addrs = Vec::new();
    for (id, peer) in known.into_iter().take(REMEMBERED_DIALED) {
        let Ok(id) = jewel_net::PeerId::from_bytes(&id) else { continue };
        for a in peer.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()).take(4) {
            let ends_with_id =
                matches!(a.iter().last(), Some(jewel_net::MultiaddrProtocol::P2p(p)) if p == id);
            addrs.push(if ends_with_id { a } else { a.with(jewel_net::MultiaddrProtocol::P2p(id)) });
        }
    }
    Ok(addrs)
}

/// How often the peers connected now are written down for the next start.
const REMEMBER_EVERY: Duration = Duration::from_secs(30);

/// Writes down the peers connected now: a few seconds after start, then every
/// [`REMEMBER_EVERY`], and once more when the node stops.
async fn remember_peers(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(5);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stop.changed() => true,
        };
        if let Err(e) = node.remember_peers().await {
            tracing::debug!(error = %e, "the peers known now could not be written down");
        }
        if stopping {
            return;
        }
        wait = REMEMBER_EVERY;
    }
}

/// How long requests in flight may run on after SIGTERM or SIGINT.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Resolves on SIGINT or SIGTERM; the handlers are installed when this is called.
fn shutdown_signal(home: &Path) -> Result<impl std::future::Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(io_err(home))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err(home))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
