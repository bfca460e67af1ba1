//! What a network is started with ([`NetConfig`]), and what it reports: reachability
//! and events.

use super::*;

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
    pub(super) fn config(&self) -> relay::Config {
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
