//! The libp2p swarm and the event-loop actor that owns it.
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

/// How to start the network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    /// Peers the user named to join through: start fails if none of them answers.
    pub bootstrap: Vec<Multiaddr>,
    /// Peers this node knew when it last ran: dialed too, none of them needed.
    pub remembered: Vec<Multiaddr>,
    pub mdns: bool,
    /// A failure domain this peer announces (through identify), if any.
    pub zone: Option<String>,
    /// Serve the block store to peers (off only for tests that play a peer by hand).
    pub serve_blocks: bool,
    /// Most bytes per second this node serves to peers (reads and proofs), if limited.
    pub max_upload: Option<u64>,
    /// The leases of the served store; in memory if not given.
    pub leases: Option<Arc<jewel_store::lease::LeaseBook>>,
    /// Relay connections for peers behind NATs (circuit relay v2), within `relay_limits`.
    pub relay_server: bool,
    /// What a relay server carries at most.
    pub relay_limits: RelayLimits,
    /// Behind a NAT, keep reservations on [`crate::reach::RELAYS_WANTED`] relay-capable
    /// peers (auto-relay), so that others can reach this node through them.
    pub auto_relay: bool,
    /// Ask the router for port mappings (UPnP IGD): only where the node listens beyond
    /// loopback (it multicasts on the local network to find the router).
    pub upnp: bool,
    /// AutoNAT also checks private and loopback addresses, and starts probing after 1 s
    /// rather than 15 s: for local networks and tests. Off: only global addresses count.
    pub autonat_local: bool,
    /// Provider announcements in flight at once (see [`crate::announce`]).
    pub announce_concurrency: usize,
    /// Which stored blocks are announced as provider records: those whose first bytes
    /// (up to [`crate::announce::HEAD`]) pass this test; every block if `None`. A node
    /// announces only manifests: its files are found through their holders records, and a
    /// manifest's providers (every holder has it) are asked which pieces they hold.
    pub announce_only: Option<fn(&[u8]) -> bool>,
    /// Where the announcer keeps when it last announced the whole store (see
    /// [`crate::announce`]): a restart within the provider records' life announces nothing
    /// again. `None`: the whole store is announced at every start.
    pub announce_state: Option<std::path::PathBuf>,
    /// Connections at once, at most (a quarter kept for outgoing ones): keep it well under
    /// the process's descriptor limit.
    pub max_connections: u32,
    /// How long an upload to this node may send nothing before it is dropped (and, after
    /// that long, how slow on average); see `block::server::DATA_STALL`.
    pub data_stall: Duration,
    /// How much of the served store peers may fill (see [`crate::block::Quota`]).
    pub quota: crate::block::Quota,
}

/// What a relay server carries at most: circuits at once (and per peer), and bytes, time
/// and rate (bytes per second, both ways together) per circuit. Reservations and new circuits are also limited per peer and per IP
/// address over time (libp2p's rate limiters). Block transfers go through a relay only
/// where no direct path exists, so the defaults carry a few files, not a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    pub circuits: usize,
    pub circuits_per_peer: usize,
    pub circuit_bytes: u64,
    pub circuit_duration: Duration,
    pub circuit_rate: u64,
    pub reservations: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            circuits: 256,
            circuits_per_peer: 16,
            circuit_bytes: 64 << 20,
            circuit_duration: Duration::from_secs(10 * 60),
            circuit_rate: 1 << 20,
            reservations: 256,
        }
    }
}

impl RelayLimits {
    fn config(&self) -> relay::Config {
        relay::Config {
            max_reservations: self.reservations,
            max_circuits: self.circuits,
            max_circuits_per_peer: self.circuits_per_peer,
            max_circuit_bytes: self.circuit_bytes,
            max_circuit_duration: self.circuit_duration,
            max_circuit_rate: self.circuit_rate,
            ..relay::Config::default()
        }
    }
}

/// What this node knows of how it is reached (see [`NetHandle::reachability`]).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Reachability {
    /// The address AutoNAT confirmed others reach this node at, if any.
    pub public: Option<String>,
    /// The address a port mapping on the router gave it (UPnP), if any.
    pub mapped: Option<String>,
    /// The relays that hold a reservation for it.
    pub relays: Vec<String>,
    /// Its addresses others may use: confirmed external ones and relayed ones.
    pub addrs: Vec<String>,
    /// Peers connected directly through both NATs (DCUtR).
    pub hole_punched: usize,
    /// The router that offers UPnP is itself behind another NAT, so a mapping on it would
    /// not reach the internet.
    #[serde(default)]
    pub double_nat: bool,
}

/// What the event loop reports about reachability, as it happens (see
/// [`crate::Network::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// AutoNAT's verdict changed: `public` with the confirmed address, or private/unknown.
    Reachability { public: Option<Multiaddr> },
    /// A relay accepted this node's reservation: it can be reached through the relay.
    RelayReserved { relay: PeerId },
    /// DCUtR replaced a relayed connection to `peer` with a direct one.
    DirectUpgrade { peer: PeerId },
    /// DCUtR tried and failed; the relayed connection stays.
    DirectUpgradeFailed { peer: PeerId, reason: String },
    /// The first connection with `peer` (ours or its own) is up.
    Connected { peer: PeerId },
    /// A peer joined a gossip topic this node knows of: messages published on it now reach
    /// that peer.
    Subscribed { topic: String, peer: PeerId },
    /// A message on a gossip topic this node subscribed to (see [`NetHandle::subscribe`]).
    Gossip { topic: String, data: Arc<Vec<u8>>, from: PeerId },
}

/// Events buffered per subscriber; a slower subscriber misses the oldest.
pub(crate) const EVENT_QUEUE: usize = 64;

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap_or_else(|_| Multiaddr::empty())],
            bootstrap: Vec::new(),
            remembered: Vec::new(),
            mdns: false,
            zone: None,
            serve_blocks: true,
            max_upload: None,
            leases: None,
            relay_server: false,
            relay_limits: RelayLimits::default(),
            auto_relay: true,
            upnp: false,
            autonat_local: false,
            announce_concurrency: crate::announce::ANNOUNCE_CONCURRENCY,
            announce_only: None,
            announce_state: None,
            max_connections: MAX_CONNECTIONS,
            data_stall: crate::block::DATA_STALL,
            quota: crate::block::Quota::default(),
        }
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    ip_limits: crate::iplimit::Behaviour,
    kad: kad::Behaviour<crate::records::RecordBook>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    autonat: autonat::Behaviour,
    relay: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    upnp: Toggle<libp2p::upnp::tokio::Behaviour>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    gossip: gossipsub::Behaviour,
    pub(crate) stream: libp2p_stream::Behaviour,
}

fn agent_version(zone: &Option<String>) -> String {
    match zone {
        Some(z) => format!("jewel/{} zone={z}", env!("CARGO_PKG_VERSION")),
        None => format!("jewel/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// A dial error's first line (libp2p lists every address tried, one per line).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text);
    line.chars().take(300).collect()
}

/// The zone a peer announced in its identify agent string, if any.
pub fn zone_of(agent: &str) -> Option<String> {
    agent.split_whitespace().find_map(|w| w.strip_prefix("zone=")).map(str::to_string)
}

pub(crate) fn build_swarm(
    keypair: identity::Keypair,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let transport = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let mdns_on = config.mdns;
    let relay_on = config.relay_server.then(|| config.relay_limits.config());
    let upnp_on = config.upnp;
    let autonat_cfg = if config.autonat_local {
        autonat::Config {
            only_global_ips: false,
            boot_delay: Duration::from_secs(1),
            retry_interval: Duration::from_secs(5),
            throttle_server_period: Duration::ZERO,
            ..Default::default()
        }
    } else {
        autonat::Config::default()
    };
    let agent = agent_version(&config.zone);
    // Connections cost descriptors: strangers cannot open more than the node can carry.
    let total = config.max_connections.max(64);
    let limits = libp2p::connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_established_incoming(Some(total.saturating_sub(total / 4)))
        .with_max_established(Some(total));
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        // TLS first: its AES-GCM costs a third of noise's ChaCha20-Poly1305 here.
        .with_tcp(
            tcp::Config::default().nodelay(true),
            (tls::Config::new, noise::Config::new),
            crate::mux::Yamux::new,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, crate::mux::Yamux::new)
        .map_err(|e| transport(&e))?
        .with_behaviour(|key, relay| {
            let peer_id = key.public().to_peer_id();
            let mut kcfg = kad::Config::new(KAD_PROTOCOL);
            kcfg.set_query_timeout(Duration::from_secs(30));
            kcfg.set_substreams_timeout(KAD_REQUEST_TIMEOUT);
            // Provider records live PROVIDER_TTL on the peers that keep them; this node's own
            // announcer refreshes them (`crate::announce`), not Kademlia's hourly job.
            kcfg.set_provider_publication_interval(None);
            kcfg.set_provider_record_ttl(Some(crate::announce::PROVIDER_TTL));
            // Inbound records are checked before they are stored (see `EventLoop::inbound`).
            kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
            // Peers enter the routing table only when this node says so: once identify
            // shows they serve the DHT and blocks (see `routable`), never because they
            // connected. Kademlia-only identities (Sybils) cannot crowd out storage peers.
            kcfg.set_kbucket_inserts(kad::BucketInserts::Manual);
            let store = crate::records::RecordBook::new(peer_id, MAX_PROVIDED, crate::book::MAX_RECORD);
            let mut kad = kad::Behaviour::with_config(peer_id, store, kcfg);
            kad.set_mode(Some(kad::Mode::Server));
            // Gossip carries a user's index changes between their devices (one topic per
            // user); messages are signed by the sending peer, and their bodies sealed and
            // signed by the user (the node checks that), bounded in size.
            let gcfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .max_transmit_size(GOSSIP_MAX)
                .validation_mode(gossipsub::ValidationMode::Strict)
                // Each message is checked by the topic's owner (see `Command::Subscribe`)
                // before it is forwarded or kept: a stranger's messages go nowhere.
                .validate_messages()
                .build()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut gossip =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gcfg)
                    .map_err(std::io::Error::other)?;
            // A peer whose messages a topic's check refuses is scored down, and past the
            // graylist threshold nothing it sends is read (see `gossip_scores`).
            let (params, thresholds) = gossip_scores();
            gossip.with_peer_score(params, thresholds).map_err(std::io::Error::other)?;
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
            } else {
                None
            };
            Ok(Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(limits),
                // One address holds at most a quarter of the connections the node carries
                // (128 at least: on a loopback devnet every peer is one address).
                ip_limits: crate::iplimit::Behaviour::new(MAX_PENDING_PER_IP, (total / 4).max(128)),
                kad,
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                        .with_agent_version(agent),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(crate::liveness::PING_EVERY)
                        .with_timeout(Duration::from_secs(30)),
                ),
                autonat: autonat::Behaviour::new(peer_id, autonat_cfg),
                relay,
                relay_server: Toggle::from(relay_on.map(|c| relay::Behaviour::new(peer_id, c))),
                dcutr: dcutr::Behaviour::new(peer_id),
                upnp: Toggle::from(upnp_on.then(libp2p::upnp::tokio::Behaviour::default)),
                mdns: Toggle::from(mdns),
                gossip,
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Whether a peer that listed `protocols` (through identify) enters the routing table: it
/// must serve both the DHT and the block protocol. A node that serves no blocks can still
/// ask the DHT; it is just not asked.
fn routable(protocols: &[StreamProtocol]) -> bool {
    protocols.contains(&KAD_PROTOCOL) && protocols.contains(&crate::block::BLOCK_PROTOCOL)
}

/// What is known about one peer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerInfo {
    pub peer: String,
    pub addrs: Vec<String>,
    pub connected: bool,
    pub zone: Option<String>,
    /// Whether the peer said (through identify) that it serves the block protocol;
    /// `None` until it has said anything.
    pub blocks: Option<bool>,
    /// The IP address of the peer's connection, if it is connected (a relayed peer: its
    /// relay's): placement spreads a file's pieces over addresses.
    #[serde(default)]
    pub ip: Option<String>,
    /// Whether the peer stopped answering (see [`crate::liveness`]).
    #[serde(default)]
    pub silent: bool,
    /// Its gossip score here: below -80 (refused messages) nothing it gossips is read.
    #[serde(default)]
    pub gossip_score: Option<f64>,
    /// How this node is connected to it now, if it is.
    #[serde(default)]
    pub path: Option<crate::reach::Path>,
    /// Its last round-trip time (ping), in milliseconds, if connected.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
}

pub(crate) enum Command {
    Listeners {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    /// `direct`: for a transfer, so a peer reached only through a relay is given
    /// [`crate::reach::DIRECT_WAIT`] to be connected directly (DCUtR) first.
    Connect {
        peer: PeerId,
        direct: bool,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    Bootstrap {
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Provide {
        id: BlockId,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Providers {
        id: BlockId,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Reachability {
        reply: oneshot::Sender<Reachability>,
    },
    RoutingTable {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    PublishHolders {
        record: HoldersRecord,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    FindHolders {
        group: BlockId,
        reply: oneshot::Sender<Option<HoldersRecord>>,
    },
    PublishName {
        record: NameRecord,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    FindName {
        key: Vec<u8>,
        reply: oneshot::Sender<Option<NameRecord>>,
    },
    Subscribe {
        topic: String,
        check: GossipCheck,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Gossip {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
}

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
    Find(BlockId, oneshot::Sender<Option<HoldersRecord>>),
    /// A name record's key, the best valid record so far, how many valid ones were found.
    FindName(Vec<u8>, Option<NameRecord>, usize, oneshot::Sender<Option<NameRecord>>),
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

/// Gossip peer scoring: only refused messages count against a peer (each topic's
/// [`topic_score`]); the rest of gossipsub's scoring is off or mild, because Jewel's topics
/// are quiet (a user's index changes) and a loopback devnet puts every peer on one address.
/// Past the graylist threshold (-80) a peer's messages are dropped unread.
fn gossip_scores() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let params = gossipsub::PeerScoreParams {
        topics: HashMap::new(),
        // Per-address limits are the connection layer's (`iplimit`).
        ip_colocation_factor_weight: 0.0,
        // Broken IHAVE promises and slow peers: noted, never enough alone to graylist.
        behaviour_penalty_weight: -1.0,
        slow_peer_weight: -0.1,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// A topic's scoring: each refused message counts (squared, weight -10: three refused
/// messages graylist a peer), forgotten slowly (×0.99 a second: a peer graylisted by
/// ten refused messages is heard again after about two minutes); quiet mesh peers are not
/// penalised.
fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    }
}

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

/// The IP address each connected peer last connected from (a relayed peer: its relay's),
/// for the block server's limits per address. An entry goes with the peer's last
/// connection, so the map is bounded by the connection limit.
#[derive(Debug, Default)]
pub(crate) struct PeerIps(std::sync::Mutex<HashMap<PeerId, std::net::IpAddr>>);

impl PeerIps {
    pub(crate) fn get(&self, peer: &PeerId) -> Option<std::net::IpAddr> {
        self.0.locked().get(peer).copied()
    }

    fn connected(&self, peer: PeerId, addr: &Multiaddr) {
        if let Some(ip) = crate::iplimit::ip_of(addr) {
            self.0.locked().insert(peer, ip);
        }
    }

    fn gone(&self, peer: &PeerId) {
        self.0.locked().remove(peer);
    }
}

/// A cloneable handle to the network: the event loop's command queue, and nothing of any
/// protocol's client state (see [`crate::BlockClient`]).
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    events: tokio::sync::broadcast::Sender<NetEvent>,
    liveness: Arc<crate::liveness::Liveness>,
}

impl NetHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Which peers answer (see [`crate::liveness`]).
    pub fn liveness(&self) -> &Arc<crate::liveness::Liveness> {
        &self.liveness
    }

    /// Reachability events from now on (NAT status, relay reservations, DCUtR upgrades).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// The addresses this node listens on.
    pub async fn listeners(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(|reply| Command::Listeners { reply }).await
    }

    /// Connects to a peer by address; returns its id.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Walks the DHT to fill the routing table.
    /// Makes sure there is a connection to `peer`, dialing its known addresses if there
    /// is none; fails if the dial fails.
    pub async fn connect(&self, peer: PeerId) -> Result<PeerId, NetError> {
        self.ask(|reply| Command::Connect { peer, direct: false, reply }).await?
    }

    /// [`NetHandle::connect`] before a transfer: a peer reached only through a relay is
    /// given [`crate::reach::DIRECT_WAIT`] for DCUtR to connect it directly (bulk data
    /// goes direct whenever a direct path exists), then the relay is used.
    pub async fn connect_for_transfer(&self, peer: PeerId) -> Result<PeerId, NetError> {
        self.ask(|reply| Command::Connect { peer, direct: true, reply }).await?
    }

    pub async fn bootstrap(&self) -> Result<(), NetError> {
        self.ask(|reply| Command::Bootstrap { reply }).await?
    }

    /// Announces in the DHT that this node holds `id`.
    pub async fn provide(&self, id: BlockId) -> Result<(), NetError> {
        self.ask(|reply| Command::Provide { id, reply }).await?
    }

    /// Peers that announced they hold `id`.
    pub async fn providers(&self, id: BlockId) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::Providers { id, reply }).await
    }

    /// Every peer known: routing table and connections.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// How this node is reached: public, port-mapped, or through relays.
    pub async fn reachability(&self) -> Result<Reachability, NetError> {
        self.ask(|reply| Command::Reachability { reply }).await
    }

    /// Peers in the Kademlia routing table.
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::RoutingTable { reply }).await
    }

    /// Publishes who holds the blocks of `record.group` as one DHT record (see
    /// [`crate::book`]), stored here and on at least one of the peers closest to its key
    /// before this returns; Kademlia republishes it while this node runs.
    pub async fn publish_holders(&self, record: HoldersRecord) -> Result<(), NetError> {
        // Address hygiene (see `HoldersRecord::scoped`), here rather than in the event loop.
        let record = record.scoped();
        let asked = self.ask(|reply| Command::PublishHolders { record, reply });
        match tokio::time::timeout(PUBLISH_TIMEOUT, asked).await {
            Ok(r) => r?,
            Err(_) => Err(NetError::Timeout(PUBLISH_TIMEOUT, "a peer to store the holders record")),
        }
    }

    /// Publishes a signed name record (see [`jewel_store::names`]), as [`NetHandle::publish_holders`].
    pub async fn publish_name(&self, record: NameRecord) -> Result<(), NetError> {
        let asked = self.ask(|reply| Command::PublishName { record, reply });
        match tokio::time::timeout(PUBLISH_TIMEOUT, asked).await {
            Ok(r) => r?,
            Err(_) => Err(NetError::Timeout(PUBLISH_TIMEOUT, "a peer to store the name record")),
        }
    }

    /// The name record under `key` with the highest sequence number of the first few valid
    /// ones found (each verified: format, key and signature), if any.
    pub async fn find_name(&self, key: Vec<u8>) -> Result<Option<NameRecord>, NetError> {
        self.ask(|reply| Command::FindName { key, reply }).await
    }

    /// Joins a gossip topic: its messages that `check` finds genuine arrive as
    /// [`NetEvent::Gossip`] and are passed on to the topic's other peers; the others are
    /// dropped (and not forwarded).
    pub async fn subscribe(&self, topic: String, check: GossipCheck) -> Result<(), NetError> {
        self.ask(|reply| Command::Subscribe { topic, check, reply }).await?
    }

    /// Sends `data` (at most [`GOSSIP_MAX`] bytes) to the topic's other subscribers.
    pub async fn gossip(&self, topic: String, data: Vec<u8>) -> Result<(), NetError> {
        self.ask(|reply| Command::Gossip { topic, data, reply }).await?
    }

    /// The holders record of `group`, if the DHT has one (the first valid one found). The
    /// addresses it names are remembered, so its holders can be dialed.
    pub async fn find_holders(&self, group: BlockId) -> Result<Option<HoldersRecord>, NetError> {
        self.ask(|reply| Command::FindHolders { group, reply }).await
    }
}

fn kad_key(id: &BlockId) -> kad::RecordKey {
    kad::RecordKey::new(&id.0)
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

    /// Stores `record` here and on the closest peers this node knows; `reply` hears when
    /// the first of them has it.
    fn publish(&mut self, record: kad::Record, reply: oneshot::Sender<Result<(), NetError>>) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        // Kademlia's own publication: stored here (and republished while this node
        // runs) and sent to the closest peers a walk finds. The walk waits for every
        // close peer's answer, a frozen one's too, so the caller does not wait for it.
        // A full store here (see `records`) only loses the local copy and its republishing.
        let walk = match kad.put_record(record.clone(), kad::Quorum::One) {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::debug!(error = %e, "a record is not kept here; it goes to the closest peers only");
                None
            }
        };
        // The caller waits for the closest peers this node knows: the first that
        // stores the record makes it findable.
        let target = kad::KBucketKey::new(record.key.clone());
        // Peers that failed a dial just now or stopped answering are passed over.
        let (unreachable, liveness) = (&self.unreachable, &self.liveness);
        let closest: Vec<PeerId> = kad
            .get_closest_local_peers(&target)
            .map(|k| *k.preimage())
            .filter(|p| {
                !liveness.is_silent(p)
                    && unreachable.get(p).is_none_or(|(at, _)| at.elapsed() >= UNREACHABLE_FOR)
            })
            .take(PUBLISH_TO)
            .collect();
        if closest.is_empty() {
            let _ = reply.send(Err(NetError::NoPeers));
            return;
        }
        let q = kad.put_record_to(record.clone(), closest.into_iter(), kad::Quorum::One);
        self.pending.insert(q, Pending::Publish { reply, walk, retry: Some((record, WALKS_AFTER_FAILURE)) });
        if let Some(w) = walk {
            self.pending.insert(w, Pending::WalkFor(q));
        }
    }

    /// A publication ended with `r`. On failure, the caller waits for the walk started with
    /// it, if it still runs, or else for one more walk.
    fn published(
        &mut self,
        r: kad::PutRecordResult,
        reply: oneshot::Sender<Result<(), NetError>>,
        walk: Option<kad::QueryId>,
        retry: Option<(kad::Record, u8)>,
    ) {
        if r.is_err() {
            if let Some(w) = walk.filter(|w| self.pending.contains_key(w)) {
                self.pending.insert(w, Pending::Publish { reply, walk: None, retry });
                return;
            }
            if let Some((record, walks)) = retry.filter(|(_, walks)| *walks > 0) {
                match self.swarm.behaviour_mut().kad.put_record(record.clone(), kad::Quorum::One) {
                    Ok(q) => {
                        let retry = Some((record, walks - 1));
                        self.pending.insert(q, Pending::Publish { reply, walk: None, retry });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dht(e.to_string())));
                    }
                }
                return;
            }
        }
        if let Some(w) = walk {
            self.pending.remove(&w);
        }
        let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(e.to_string())));
    }

    fn command(&mut self, cmd: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match cmd {
            Command::Listeners { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial { addr, reply } => {
                let target = addr.to_string();
                self.dial(DialOpts::unknown_peer_id().address(addr).build(), target, reply);
            }
            Command::Connect { peer, direct, reply } => {
                if self.swarm.is_connected(&peer) {
                    if direct {
                        self.connected_reply(peer, reply);
                    } else {
                        let _ = reply.send(Ok(peer));
                    }
                    return;
                }
                if let Some((at, reason)) = self.unreachable.get(&peer) {
                    if at.elapsed() < UNREACHABLE_FOR {
                        let reason = format!("{reason} ({:.1} s ago)", at.elapsed().as_secs_f64());
                        let _ = reply.send(Err(NetError::Dial { target: peer.to_string(), reason }));
                        return;
                    }
                }
                if let Some((_, waiting)) = self.connecting.get_mut(&peer) {
                    waiting.push((reply, direct));
                    return;
                }
                // A dial already on its way (mDNS, Kademlia) does not make this one fail:
                // libp2p's default condition would refuse to dial a peer being dialed.
                let opts = DialOpts::peer_id(peer).condition(PeerCondition::Disconnected).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.connecting.insert(peer, (id, vec![(reply, direct)]));
                    }
                    Err(e) => {
                        let _ = reply
                            .send(Err(NetError::Dial { target: peer.to_string(), reason: e.to_string() }));
                    }
                }
            }
            Command::Bootstrap { reply } => match kad.bootstrap() {
                Ok(q) => {
                    self.pending.insert(q, Pending::Bootstrap(reply));
                }
                Err(_) => {
                    let _ = reply.send(Err(NetError::NoPeers));
                }
            },
            Command::Provide { id, reply } => match kad.start_providing(kad_key(&id)) {
                Ok(q) => {
                    self.pending.insert(q, Pending::Provide(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Dht(e.to_string())));
                }
            },
            Command::Providers { id, reply } => {
                let q = kad.get_providers(kad_key(&id));
                self.pending.insert(q, Pending::Providers(reply, HashSet::new()));
            }
            Command::PublishHolders { record, reply } => match record.encode() {
                Ok(bytes) => self.publish(kad::Record::new(book::key(&record.group), bytes), reply),
                Err(e) => {
                    let _ = reply.send(Err(NetError::Dht(e.to_string())));
                }
            },
            Command::PublishName { record, reply } => match record.encode() {
                Ok(bytes) => {
                    let mut r = kad::Record::new(names::key(&record.user, &record.slot), bytes);
                    // Never over a newer record this node keeps (Kademlia would store it here
                    // as it is).
                    use kad::store::RecordStore;
                    let kept = kad.store_mut().get(&r.key).and_then(|k| NameRecord::decode(&k.value).ok());
                    if let Some(k) = kept.filter(|k| k.seq > record.seq) {
                        let why =
                            format!("a newer name record (sequence {} > {}) is known", k.seq, record.seq);
                        let _ = reply.send(Err(NetError::Dht(why)));
                        return;
                    }
                    r.expires = Some(std::time::Instant::now() + NAME_TTL);
                    self.publish(r, reply)
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Dht(e.to_string())));
                }
            },
            Command::FindName { key, reply } => {
                let q = kad.get_record(kad::RecordKey::new(&key));
                self.pending.insert(q, Pending::FindName(key, None, 0, reply));
            }
            Command::Subscribe { topic, check, reply } => {
                let t = gossipsub::IdentTopic::new(topic);
                self.gossip_checks.insert(t.hash(), check);
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                if let Err(e) = gossip.set_topic_params(t.clone(), topic_score()) {
                    tracing::warn!(error = e, "gossip scoring is off for a topic");
                }
                let r = gossip.subscribe(&t);
                let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(e.to_string())));
            }
            Command::Gossip { topic, data, reply } => {
                let t = gossipsub::IdentTopic::new(topic);
                let r = self.swarm.behaviour_mut().gossip.publish(t, data);
                let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(format!("gossip: {e}"))));
            }
            Command::FindHolders { group, reply } => {
                let q = kad.get_record(kad::RecordKey::new(&book::key(&group)));
                self.pending.insert(q, Pending::Find(group, reply));
            }
            Command::RoutingTable { reply } => {
                let peers =
                    kad.kbuckets().flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>());
                let _ = reply.send(peers.collect());
            }
            Command::Peers { reply } => {
                let mut known: Vec<PeerId> = kad
                    .kbuckets()
                    .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                    .collect();
                for p in self.swarm.connected_peers() {
                    if !known.contains(p) {
                        known.push(*p);
                    }
                }
                let infos = known
                    .into_iter()
                    .map(|p| PeerInfo {
                        peer: p.to_string(),
                        addrs: self
                            .addrs
                            .get(&p)
                            .map(|a| a.iter().map(|m| m.to_string()).collect())
                            .unwrap_or_default(),
                        connected: self.swarm.is_connected(&p),
                        zone: self.zones.get(&p).cloned(),
                        blocks: self.serves_blocks.get(&p).copied(),
                        ip: self.ips.get(&p).map(|ip| ip.to_string()),
                        silent: self.liveness.is_silent(&p),
                        gossip_score: self.swarm.behaviour().gossip.peer_score(&p),
                        path: self.reach.path(&p),
                        rtt_ms: self.reach.rtt(&p).map(|d| d.as_secs_f64() * 1e3),
                    })
                    .collect();
                let _ = reply.send(infos);
            }
            Command::Reachability { reply } => {
                let mut addrs: Vec<String> = self
                    .swarm
                    .external_addresses()
                    .chain(self.swarm.listeners().filter(|a| crate::reach::is_relayed(a)))
                    .map(|a| a.to_string())
                    .collect();
                addrs.dedup();
                let _ = reply.send(Reachability {
                    public: self.reach.public.as_ref().map(|a| a.to_string()),
                    mapped: self.reach.mapped.as_ref().map(|a| a.to_string()),
                    relays: self.reach.relays().iter().map(|p| p.to_string()).collect(),
                    addrs,
                    hole_punched: self.reach.punched_count(),
                    double_nat: self.reach.double_nat,
                });
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                if num_established.get() == 1 {
                    let _ = self.events.send(NetEvent::Connected { peer: peer_id });
                }
                if let Some(reply) = self.dials.remove(&connection_id) {
                    // Dialed by address on the user's word (a bootstrap peer): routable now,
                    // so a bootstrap walk can start before identify has answered.
                    let addr = endpoint.get_remote_address().clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    let _ = reply.send(Ok(peer_id));
                }
                // A relayed connection's remote address is just the peer's id on the side
                // that accepted it: the circuit is in its local address.
                let relayed = endpoint.is_relayed();
                self.reach.connected(peer_id, connection_id, relayed);
                // Any connection to the peer, ours or its own, answers every waiting connect
                // (one through a relay, once DCUtR had its chance).
                if let Some((_, waiting)) = self.connecting.remove(&peer_id) {
                    for (reply, direct) in waiting {
                        if direct {
                            self.connected_reply(peer_id, reply);
                        } else {
                            let _ = reply.send(Ok(peer_id));
                        }
                    }
                }
                if !relayed {
                    self.direct_wait_over(false);
                    // Streams take the direct connection now; the relayed one would hold a
                    // circuit (a slot in the relay's limits) until it idled out.
                    for id in self.reach.redundant_relayed(&peer_id) {
                        self.swarm.close_connection(id);
                    }
                }
                self.unreachable.remove(&peer_id);
                // A relayed peer counts at its relay's address (the circuit's address).
                let via = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } if relayed => local_addr,
                    _ => endpoint.get_remote_address(),
                };
                self.ips.connected(peer_id, via);
                self.liveness.heard(peer_id);
                if endpoint.is_dialer() {
                    // Into the routing table once identify shows the peer routable.
                    track(&mut self.dialed, peer_id, endpoint.get_remote_address().clone());
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                self.reach.closed(peer_id, connection_id);
                if num_established == 0 {
                    self.ips.gone(&peer_id);
                    self.liveness.gone(&peer_id);
                    self.direct_wait_over(false);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                self.liveness.heard(peer);
                self.reach.pinged(peer, rtt);
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                // A circuit listener closes when the relay refuses or drops the reservation.
                let was_relay = self.reach.listener_closed(listener_id);
                if was_relay {
                    tracing::info!("a relay reservation ended");
                    self.reserve();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => match e {
                libp2p::upnp::Event::NewExternalAddr { external_addr: addr, .. } => {
                    tracing::info!(%addr, "the router mapped a port (UPnP): reachable from outside");
                    self.reach.mapped = Some(addr);
                    self.drop_reservations();
                    self.push_addresses();
                }
                libp2p::upnp::Event::ExpiredExternalAddr { external_addr: addr, .. } => {
                    tracing::info!(%addr, "a port mapping expired");
                    if self.reach.mapped.as_ref() == Some(&addr) {
                        self.reach.mapped = None;
                        self.reserve();
                    }
                }
                libp2p::upnp::Event::GatewayNotFound => tracing::debug!("no UPnP router found"),
                libp2p::upnp::Event::NonRoutableGateway => {
                    tracing::info!("the UPnP router is itself behind a NAT (double NAT): no mapping");
                    self.reach.double_nat = true;
                }
            },
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ =
                        reply.send(Err(NetError::Dial { target: "peer".into(), reason: error.to_string() }));
                }
                let Some(peer) = peer_id else { return };
                self.dial_failed(peer, &error);
                if self.connecting.get(&peer).is_some_and(|(id, _)| *id == connection_id) {
                    let reason = first_line(&error.to_string());
                    if let Some((_, waiting)) = self.connecting.remove(&peer) {
                        for (reply, _) in waiting {
                            let _ = reply.send(Err(NetError::Dial {
                                target: peer.to_string(),
                                reason: reason.clone(),
                            }));
                        }
                    }
                    if self.unreachable.len() >= MAX_TRACKED {
                        self.unreachable.retain(|_, (at, _)| at.elapsed() < UNREACHABLE_FOR);
                    }
                    if self.unreachable.len() < MAX_TRACKED {
                        self.unreachable.insert(peer, (std::time::Instant::now(), reason));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Bounded: past MAX_TRACKED peers, forget those not connected now.
                if self.addrs.len() >= MAX_TRACKED && !self.addrs.contains_key(&peer_id) {
                    let swarm = &self.swarm;
                    self.addrs.retain(|p, _| swarm.is_connected(p));
                    self.zones.retain(|p, _| swarm.is_connected(p));
                    self.serves_blocks.retain(|p, _| swarm.is_connected(p));
                }
                if let Some(zone) = zone_of(&info.agent_version) {
                    self.zones.insert(peer_id, zone);
                }
                let serves_blocks = info.protocols.contains(&crate::block::BLOCK_PROTOCOL);
                self.serves_blocks.insert(peer_id, serves_blocks);
                let dialed = self.dialed.remove(&peer_id);
                // Address hygiene: only addresses that reach as far as the connection they
                // came over (a peer across the internet is not dialed at its private or
                // loopback addresses).
                // (A peer whose connection has no address of its own, a relayed one: public.)
                let over =
                    self.ips.get(&peer_id).map_or(crate::reach::Scope::Public, crate::reach::scope_of_ip);
                let mut info = info;
                info.listen_addrs.retain(|a| crate::reach::usable(a, over));
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                    let direct =
                        dialed.iter().chain(&info.listen_addrs).find(|a| !crate::reach::is_relayed(a));
                    if let Some(addr) = direct {
                        self.reach.add_candidate(peer_id, addr.clone());
                        self.reserve();
                    }
                }
                if routable(&info.protocols) {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in info.listen_addrs.iter().chain(dialed.as_ref()) {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                let mut addrs = info.listen_addrs;
                addrs.truncate(16);
                self.addrs.insert(peer_id, addrs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                let public = match new {
                    autonat::NatStatus::Public(addr) => Some(addr),
                    _ => None,
                };
                match &public {
                    Some(addr) => tracing::info!(%addr, "AutoNAT: reachable from outside"),
                    None => tracing::info!("AutoNAT: not reachable from outside (or not known yet)"),
                }
                self.reach.public = public.clone().filter(|a| !crate::reach::is_relayed(a));
                if self.reach.reachable() {
                    self.drop_reservations();
                } else {
                    self.reserve();
                }
                let _ = self.events.send(NetEvent::Reachability { public });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            })) => {
                tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                self.reach.accepted(relay_peer_id);
                self.push_addresses();
                let _ = self.events.send(NetEvent::RelayReserved { relay: relay_peer_id });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                let event = match result {
                    Ok(_) => {
                        tracing::info!(peer = %remote_peer_id, "DCUtR: direct connection replaces the relayed one");
                        self.reach.hole_punched(remote_peer_id);
                        self.direct_wait_over(false);
                        NetEvent::DirectUpgrade { peer: remote_peer_id }
                    }
                    Err(e) => {
                        tracing::info!(peer = %remote_peer_id, error = %e, "DCUtR: no direct connection");
                        // The transfer goes through the relay without waiting any longer,
                        // and later ones do not wait for this peer.
                        self.reach.punch_failed(remote_peer_id);
                        if let Some((_, replies)) = self.direct_waiters.remove(&remote_peer_id) {
                            for reply in replies {
                                let _ = reply.send(Ok(remote_peer_id));
                            }
                        }
                        NetEvent::DirectUpgradeFailed { peer: remote_peer_id, reason: e.to_string() }
                    }
                };
                let _ = self.events.send(event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    tracing::info!(%peer, %addr, "found a peer on the local network (mDNS)");
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed {
                peer_id,
                topic,
            })) => {
                let _ = self.events.send(NetEvent::Subscribed { topic: topic.into_string(), peer: peer_id });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let verdict = self.check_gossip(&propagation_source, &message);
                let accepted = verdict == gossipsub::MessageAcceptance::Accept;
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                gossip.report_message_validation_result(&message_id, &propagation_source, verdict);
                if accepted {
                    let from = message.source.unwrap_or(propagation_source);
                    let topic = message.topic.into_string();
                    let _ = self.events.send(NetEvent::Gossip { topic, data: Arc::new(message.data), from });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest { request })) => {
                self.inbound(request);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => {
                self.query(id, result, step.last);
            }
            _ => {}
        }
    }

    /// A dial to `peer` failed while it is not connected: it leaves the routing table (a
    /// Sybil that left, a peer gone for good), so walks and publications stop asking it.
    /// Kademlia alone keeps such a peer until a newcomer needs its slot, and seeds every
    /// walk with it. A live peer that only lost a dial race (two peers dialing each other
    /// at once) is connected, so it stays; one that connects later is routable again as
    /// soon as identify says so. Failures of this node's own making (limits, a dial already
    /// under way) do not count.
    fn dial_failed(&mut self, peer: PeerId, error: &libp2p::swarm::DialError) {
        use libp2p::swarm::DialError;
        if self.swarm.is_connected(&peer)
            || matches!(
                error,
                DialError::Denied { .. } | DialError::DialPeerConditionFalse(_) | DialError::Aborted
            )
        {
            return;
        }
        if self.swarm.behaviour_mut().kad.remove_peer(&peer).is_some() {
            tracing::debug!(%peer, "a peer that cannot be reached left the routing table");
        }
    }

    /// Whether a gossip message from `source` is passed on (to this node and to the topic's
    /// other peers): within the peer's rate, on a topic this node checks, and genuine.
    fn check_gossip(
        &mut self,
        source: &PeerId,
        message: &gossipsub::Message,
    ) -> gossipsub::MessageAcceptance {
        let now = std::time::Instant::now();
        if self.gossip_rate.len() >= MAX_TRACKED {
            self.gossip_rate.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(1));
        }
        let (start, count) = self.gossip_rate.entry(*source).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        if *count > GOSSIP_PER_PEER_PER_SEC {
            return gossipsub::MessageAcceptance::Ignore;
        }
        // An author this node has graylisted is not heard through others either: an honest
        // peer that forwards its genuine-looking messages is not penalised for it.
        let graylist = gossipsub::PeerScoreThresholds::default().graylist_threshold;
        let author_score = message.source.and_then(|a| self.swarm.behaviour().gossip.peer_score(&a));
        if author_score.is_some_and(|s| s < graylist) {
            return gossipsub::MessageAcceptance::Ignore;
        }
        match self.gossip_checks.get(&message.topic) {
            Some(check) if check(&message.data) => gossipsub::MessageAcceptance::Accept,
            Some(_) => {
                tracing::debug!(peer = %source, "refused a gossip message (not genuine)");
                gossipsub::MessageAcceptance::Reject
            }
            None => gossipsub::MessageAcceptance::Ignore,
        }
    }

    /// Records and provider records other peers ask this node to store (they are filtered,
    /// see `build_swarm`): provider records as they come; holders records only if they
    /// decode, are for the key they are stored under, and are not older than the one kept.
    /// Anything else is dropped: this node keeps no records it cannot read.
    fn inbound(&mut self, request: kad::InboundRequest) {
        use kad::store::RecordStore;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        match request {
            kad::InboundRequest::AddProvider { record: Some(record) } => {
                if let Err(e) = store.add_provider(record) {
                    tracing::debug!(error = %e, "provider record not stored");
                }
            }
            kad::InboundRequest::PutRecord { source, record: Some(record), .. }
                if record.key.as_ref().starts_with(names::KEY_PREFIX) =>
            {
                let decoded = names::NameRecord::decode_at(record.key.as_ref(), &record.value);
                let kept = store.get(&record.key).and_then(|r| names::NameRecord::decode(&r.value).ok());
                match decoded {
                    Ok(r) if kept.as_ref().is_none_or(|k| k.seq <= r.seq) => {
                        let mut record = record;
                        record.expires = Some(std::time::Instant::now() + NAME_TTL);
                        if let Err(e) = store.put_name(record, source, r.user) {
                            tracing::debug!(error = %e, "name record not stored");
                        }
                    }
                    Ok(r) => tracing::warn!(
                        peer = %source,
                        seq = r.seq,
                        kept = kept.map_or(0, |k| k.seq),
                        "refused a replayed name record (a lower sequence number than the one kept)"
                    ),
                    Err(e) => tracing::warn!(peer = %source, error = %e, "refused a name record"),
                }
            }
            kad::InboundRequest::PutRecord { source, record: Some(record), .. } => {
                let group = book::group_of(record.key.as_ref());
                let decoded = HoldersRecord::decode(&record.value);
                let kept = store.get(&record.key).and_then(|r| HoldersRecord::decode(&r.value).ok());
                match (group, decoded) {
                    (Some(g), Ok(r)) if r.group == g && kept.is_none_or(|k| k.seq <= r.seq) => {
                        if let Err(e) = store.put(record) {
                            tracing::debug!(error = %e, "holders record not stored");
                        }
                    }
                    (Some(_), Ok(_)) => {
                        tracing::info!(peer = %source, "refused a holders record older than the one kept or for another key");
                    }
                    (_, Err(e)) => {
                        tracing::info!(peer = %source, error = %e, "refused a malformed DHT record")
                    }
                    (None, Ok(_)) => {
                        tracing::info!(peer = %source, "refused a DHT record under a foreign key")
                    }
                }
            }
            _ => {}
        }
    }

    fn query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        match result {
            kad::QueryResult::PutRecord(r) => {
                match self.pending.remove(&id) {
                    Some(Pending::Publish { reply, walk, retry }) => self.published(r, reply, walk, retry),
                    // The walk ended first: if it stored the record, the caller is answered.
                    Some(Pending::WalkFor(fast)) if r.is_ok() => {
                        if let Some(Pending::Publish { reply, .. }) = self.pending.remove(&fast) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    _ => {}
                }
            }
            kad::QueryResult::GetRecord(result)
                if matches!(self.pending.get(&id), Some(Pending::FindName(..))) =>
            {
                let mut done = last || result.is_err();
                if let (
                    Ok(kad::GetRecordOk::FoundRecord(found)),
                    Some(Pending::FindName(key, best, count, _)),
                ) = (result, self.pending.get_mut(&id))
                {
                    match names::NameRecord::decode_at(key, &found.record.value) {
                        Ok(r) => {
                            *count += 1;
                            if best.as_ref().is_none_or(|b| b.seq < r.seq) {
                                *best = Some(r);
                            }
                            done |= *count >= NAME_ANSWERS;
                        }
                        Err(e) => {
                            tracing::warn!(peer = ?found.peer, error = %e, "refused a name record a peer answered with")
                        }
                    }
                }
                if done {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                    if let Some(Pending::FindName(_, best, _, reply)) = self.pending.remove(&id) {
                        let _ = reply.send(best);
                    }
                }
            }
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                let Some(Pending::Find(group, _)) = self.pending.get(&id) else { return };
                let record = HoldersRecord::decode(&found.record.value).ok().filter(|r| r.group == *group);
                let Some(mut record) = record else {
                    tracing::debug!(peer = ?found.peer, "a peer answered with a bad holders record");
                    return;
                };
                // Address hygiene: a record from across the internet (anyone can write one)
                // does not make this node dial its own network's or machine's addresses.
                // (One from this node's own store: as it would be published.)
                let over = match found.peer {
                    Some(p) => {
                        self.ips.get(&p).map_or(crate::reach::Scope::Public, crate::reach::scope_of_ip)
                    }
                    None => record.widest().unwrap_or(crate::reach::Scope::Public),
                };
                record.keep_reaching(over);
                // The first good record is enough: a get needs one placement, and every byte
                // it leads to is verified.
                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    q.finish();
                }
                for h in &record.holders {
                    if !self.swarm.is_connected(&h.peer) {
                        for a in &h.addrs {
                            self.swarm.add_peer_address(h.peer, a.clone());
                        }
                    }
                }
                if let Some(Pending::Find(_, reply)) = self.pending.remove(&id) {
                    let _ = reply.send(Some(record));
                }
            }
            kad::QueryResult::GetRecord(_) if last => {
                if let Some(Pending::Find(_, reply)) = self.pending.remove(&id) {
                    let _ = reply.send(None);
                }
            }
            kad::QueryResult::GetRecord(Err(_)) => {
                if let Some(Pending::Find(_, reply)) = self.pending.remove(&id) {
                    let _ = reply.send(None);
                }
            }
            kad::QueryResult::Bootstrap(r) if last => {
                if let Some(Pending::Bootstrap(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(e.to_string())));
                }
            }
            kad::QueryResult::StartProviding(r) => {
                if let Some(Pending::Provide(reply)) = self.pending.remove(&id) {
                    // A node with no peers yet still records itself; that is not a failure.
                    let _ = reply.send(r.map(|_| ()).or_else(|e| match e {
                        kad::AddProviderError::Timeout { .. } => Ok(()),
                    }));
                }
            }
            kad::QueryResult::GetProviders(r) => {
                let done = match r {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        if let Some(Pending::Providers(_, found)) = self.pending.get_mut(&id) {
                            found.extend(providers);
                        }
                        false
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
                };
                if done || last {
                    if let Some(Pending::Providers(reply, found)) = self.pending.remove(&id) {
                        let _ = reply.send(found.into_iter().collect());
                    }
                }
            }
            _ => {}
        }
    }
}
