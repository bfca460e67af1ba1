//! The libp2p swarm and the event-loop actor that owns it.
//!
//! Split along its jobs: `config` (what a network is started with, and what it reports),
//! `build` (transports and behaviours), `handle` (the cloneable [`NetHandle`] and its
//! commands), this module (the [`EventLoop`] itself: start, run, dials, relays),
//! `commands` (each command, and publication), `events` (swarm events: connections,
//! identify, reachability), `inbound` (what peers send: gossip and DHT records, checked
//! before they are kept) and `queries` (Kademlia queries as they complete).
//!
//! Transports: TCP and QUIC, yamux, plus a relay client. TCP offers libp2p-tls first (two
//! Jewel peers agree on AES-GCM, see vendor/libp2p-tls) and noise second; a peer that
//! speaks only one of them still connects. Behaviours: Kademlia (`/jewel/kad/1.0.0`,
//! server mode), identify, ping, AutoNAT, DCUtR, optional mDNS, and `libp2p-stream` for
//! the block protocol. The [`EventLoop`] owns the `Swarm`; a cloneable
//! [`NetHandle`] sends it bounded commands with oneshot replies. If the loop is gone,
//! every call returns `NetError::Closed`; nothing panics.

use jewel_store::sync::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{autonat, dcutr, gossipsub, identify, identity, kad, mdns, noise, ping, relay, tcp, tls};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};
use tokio::sync::{mpsc, oneshot};

mod build;
mod commands;
mod config;
mod dht_record;
mod events;
mod handle;
mod inbound;
mod queries;

pub use build::zone_of;
pub(crate) use build::*;
pub use config::*;
pub use handle::*;

use crate::book::{self, HoldersRecord};
use crate::error::NetError;

use jewel_store::names::{self, NameRecord};
use jewel_store::BlockId;

/// The Kademlia protocol name: only Jewel peers share this DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/jewel/kad/1.0.0");
/// The identify protocol name.
pub const IDENTIFY_PROTOCOL: &str = "/jewel/id/1.0.0";
/// Commands queued for the event loop at most.
const COMMAND_QUEUE: usize = 64;
/// Provider records per node at most (bounded memory).
const MAX_PROVIDED: usize = 1 << 20;
/// Connections being set up from outside at once, at most (half-open connections beyond
/// this are closed at once).
pub const MAX_PENDING_INCOMING: u32 = 128;
/// Inbound connections being set up from one IP address at once, at most: half of
/// [`MAX_PENDING_INCOMING`], so one address cannot keep new peers from connecting.
pub const MAX_PENDING_PER_IP: u32 = MAX_PENDING_INCOMING / 2;
/// Connections to one peer at once, at most.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections in all by default, at most (a quarter of them kept for outgoing ones).
pub const MAX_CONNECTIONS: u32 = 4096;

/// How long publishing a holders record may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Peers a holders record is sent to directly (Kademlia's replication factor).
const PUBLISH_TO: usize = 20;
/// How long peers keep a name record; its publisher republishes well before.
pub const NAME_TTL: Duration = Duration::from_secs(24 * 3600);
/// The largest gossip message, in bytes.
pub const GOSSIP_MAX: usize = 1 << 20;
/// How long one Kademlia request may go unanswered (libp2p's default is 10 s): a frozen
/// peer on a lookup's path costs this.
const KAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// How many more walks a publication tries after its first publication and walk failed.
/// A mass departure of close peers (Sybils that all leave) can leave more dead peers at
/// the top of the table than one walk dials.
const WALKS_AFTER_FAILURE: u8 = 3;

enum Pending {
    Bootstrap(oneshot::Sender<Result<(), NetError>>),
    Provide(oneshot::Sender<Result<(), NetError>>),
    Providers(oneshot::Sender<Vec<PeerId>>, HashSet<PeerId>),
    /// A publication to the closest peers this node knows, and the walk started with it:
    /// if every known close peer fails (vanished Sybils), the caller waits for the walk.
    /// If that fails too, up to [`WALKS_AFTER_FAILURE`] more walks are tried with `retry`
    /// (each walk's failed dials take up to 20 dead peers out of the routing table, so the
    /// next starts from peers further down the list).
    Publish {
        reply: oneshot::Sender<Result<(), NetError>>,
        walk: Option<kad::QueryId>,
        retry: Option<(kad::Record, u8)>,
    },
    /// Kademlia's own walk for the publication waiting under this id.
    WalkFor(kad::QueryId),
    FindHolders(dht_record::Lookup<HoldersRecord>),
    FindName(dht_record::Lookup<NameRecord>),
}

/// A name lookup ends after this many valid answers (the highest sequence number wins).
const NAME_ANSWERS: usize = 2;

/// Peers whose identify answers (addresses, zone) are kept at most, before those not
/// connected are forgotten.
const MAX_TRACKED: usize = 4096;
/// After a dial to a peer fails, connects to it fail at once for this long (unless it
/// connects to us meanwhile): a get that asks a dead holder for several segments pays for
/// one failed dial, not one per request.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

/// Decides whether a gossip message on a topic is genuine (for an index topic: signed by
/// the user). Called on the event loop for every message, so it must be quick.
pub type GossipCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Gossip messages taken from one peer per second, at most; more are dropped unread.
pub const GOSSIP_PER_PEER_PER_SEC: u32 = 50;

/// Where a connect's outcome goes.
type ConnectReply = oneshot::Sender<Result<PeerId, NetError>>;

/// Owns the swarm; runs until every [`NetHandle`] is dropped or shutdown is signalled.
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    pending: HashMap<kad::QueryId, Pending>,
    dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, NetError>>>,
    /// Connects waiting on one dial per peer: concurrent requests to a peer that cannot be
    /// reached cost one failed dial, not one each.
    connecting: HashMap<PeerId, (ConnectionId, Vec<(ConnectReply, bool)>)>,
    /// Peers whose last dial failed, and when: a connect within [`UNREACHABLE_FOR`] of that
    /// fails at once, unless the peer has connected to us since.
    unreachable: HashMap<PeerId, (std::time::Instant, String)>,
    zones: HashMap<PeerId, String>,
    /// What identify said of each peer's block protocol: served or not.
    serves_blocks: HashMap<PeerId, bool>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    events: tokio::sync::broadcast::Sender<NetEvent>,
    ips: Arc<PeerIps>,
    liveness: Arc<crate::liveness::Liveness>,
    /// The check of each subscribed topic's messages.
    gossip_checks: HashMap<gossipsub::TopicHash, GossipCheck>,
    /// Gossip messages taken from each peer in the current second (bounded by the
    /// connection limit: a peer's entry goes with the second it counts).
    gossip_rate: HashMap<PeerId, (std::time::Instant, u32)>,
    /// The address each peer was reached at when this node dialed it, until identify says
    /// whether it is routable (bounded by [`MAX_TRACKED`]).
    dialed: HashMap<PeerId, Multiaddr>,
    /// Relays, reservations, and how each peer is reached.
    reach: crate::reach::Reach,
    /// Connects to peers reached only through a relay, waiting (until the deadline) for
    /// DCUtR to connect them directly (bounded by the connection limit: one entry per
    /// connected peer).
    direct_waiters: HashMap<PeerId, (std::time::Instant, Vec<ConnectReply>)>,
    auto_relay: bool,
    /// The listeners the node was started with (closed at shutdown: port mappings go).
    listener_ids: Vec<libp2p::core::transport::ListenerId>,
}

/// Bounded insertion into a per-peer map: past [`MAX_TRACKED`] entries, it is cleared
/// first (what it tracks is a hint, relearned from the next event).
fn track<V>(map: &mut HashMap<PeerId, V>, peer: PeerId, value: V) {
    if map.len() >= MAX_TRACKED && !map.contains_key(&peer) {
        map.clear();
    }
    map.insert(peer, value);
}

impl EventLoop {
    /// Builds the swarm, starts listening, and waits until every listener has an address.
    pub(crate) async fn start(
        keypair: identity::Keypair,
        config: &NetConfig,
    ) -> Result<(NetHandle, libp2p_stream::Control, EventLoop), NetError> {
        let mut swarm = build_swarm(keypair, config)?;
        let peer_id = *swarm.local_peer_id();
        let mut waiting = HashSet::new();
        let mut listener_ids = Vec::new();
        for addr in &config.listen {
            let id = swarm.listen_on(addr.clone()).map_err(|e| NetError::Listen {
                addr: addr.clone(),
                // libp2p's "other" transport errors print nothing themselves.
                reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
            })?;
            waiting.insert(id);
            listener_ids.push(id);
        }
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        // A relay server is run where it can be reached: its listen
                        // addresses are its external ones (relays refuse reservations
                        // without one).
                        let loopback_only = config
                            .listen
                            .iter()
                            .all(|a| crate::reach::scope(a) == Some(crate::reach::Scope::Loopback));
                        let fit = crate::reach::scope(&address)
                            .is_some_and(|s| s != crate::reach::Scope::Loopback || loopback_only);
                        if config.relay_server && fit {
                            swarm.add_external_address(address);
                        }
                        waiting.remove(&listener_id);
                    }
                    SwarmEvent::ListenerError { error, .. } => return Err(NetError::Transport(error.to_string())),
                    SwarmEvent::ListenerClosed { reason: Err(e), .. } => return Err(NetError::Transport(e.to_string())),
                    _ => {}
                },
                _ = &mut deadline => return Err(NetError::Timeout(Duration::from_secs(10), "listen addresses")),
            }
        }
        let control = swarm.behaviour().stream.new_control();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = tokio::sync::broadcast::channel(EVENT_QUEUE);
        let liveness = Arc::new(crate::liveness::Liveness::default());
        let handle = NetHandle { commands: tx, peer_id, events: events.clone(), liveness: liveness.clone() };
        let ev = EventLoop {
            swarm,
            commands: rx,
            pending: HashMap::new(),
            dials: HashMap::new(),
            connecting: HashMap::new(),
            unreachable: HashMap::new(),
            zones: HashMap::new(),
            serves_blocks: HashMap::new(),
            addrs: HashMap::new(),
            events,
            ips: Arc::default(),
            liveness,
            gossip_checks: HashMap::new(),
            gossip_rate: HashMap::new(),
            dialed: HashMap::new(),
            reach: crate::reach::Reach::with_explicit(&config.listen),
            direct_waiters: HashMap::new(),
            auto_relay: config.auto_relay && !config.relay_server,
            listener_ids,
        };
        Ok((handle, control, ev))
    }

    /// Where connected peers are, kept up to date while the loop runs.
    pub(crate) fn peer_ips(&self) -> Arc<PeerIps> {
        self.ips.clone()
    }

    /// Runs until `shutdown` fires or every handle is dropped.
    pub(crate) async fn run(mut self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut shutdown = shutdown;
        let mut sweep = tokio::time::interval(Duration::from_millis(500));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    self.liveness.sweep();
                    self.direct_wait_over(false);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.event(event),
                _ = shutdown.changed() => break,
            }
        }
        // Listeners closed: port mappings on the router are removed (UPnP), for a second
        // at most.
        if self.swarm.behaviour().upnp.is_enabled() {
            for id in self.listener_ids.drain(..) {
                self.swarm.remove_listener(id);
            }
            let until = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = &mut until => break,
                    _ = self.swarm.select_next_some() => {}
                }
            }
        }
        tracing::debug!("network event loop stopped");
    }

    /// Answers the connects waiting for a direct connection: those of peers that have one
    /// now, or (all) whose wait is over, or every one if `all`.
    fn direct_wait_over(&mut self, all: bool) {
        let now = std::time::Instant::now();
        let reach = &self.reach;
        let done: Vec<PeerId> = self
            .direct_waiters
            .iter()
            .filter(|(p, (deadline, _))| all || now >= *deadline || !reach.only_relayed(p))
            .map(|(p, _)| *p)
            .collect();
        for p in done {
            if let Some((_, replies)) = self.direct_waiters.remove(&p) {
                if self.reach.only_relayed(&p) {
                    self.reach.punch_failed(p);
                }
                let connected = self.swarm.is_connected(&p);
                for reply in replies {
                    let _ = reply.send(if connected {
                        Ok(p)
                    } else {
                        Err(NetError::Dial { target: p.to_string(), reason: "the connection closed".into() })
                    });
                }
            }
        }
    }

    /// A connect to `peer`, which is connected: at once if directly, else once DCUtR has
    /// connected it directly, or failed, or [`crate::reach::DIRECT_WAIT`] has run.
    fn connected_reply(&mut self, peer: PeerId, reply: ConnectReply) {
        if !self.reach.only_relayed(&peer) || !self.reach.worth_waiting(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let deadline = std::time::Instant::now() + crate::reach::DIRECT_WAIT;
        self.direct_waiters.entry(peer).or_insert_with(|| (deadline, Vec::new())).1.push(reply);
    }

    /// Asks relays for reservations while this node is not reachable directly.
    fn reserve(&mut self) {
        if !self.auto_relay {
            return;
        }
        for (relay, circuit) in self.reach.wanted() {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, "asking a relay for a reservation");
                    self.reach.reservations.insert(id, relay);
                }
                Err(e) => tracing::debug!(%circuit, error = %e, "cannot listen through a relay"),
            }
        }
    }

    /// Tells every connected peer this node's addresses now (identify push): a relayed or
    /// mapped address is how peers across the internet reach it, and they learn it at once.
    fn push_addresses(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        self.swarm.behaviour_mut().identify.push(peers);
    }

    /// This node is reachable directly now: its relay reservations are given up.
    fn drop_reservations(&mut self) {
        let ids: Vec<_> = self.reach.reservations.keys().copied().collect();
        for id in ids {
            self.swarm.remove_listener(id);
        }
    }

    /// Starts a dial; `reply` hears when it connects or fails.
    fn dial(&mut self, opts: DialOpts, target: String, reply: oneshot::Sender<Result<PeerId, NetError>>) {
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial { target, reason: e.to_string() }));
            }
        }
    }
}
