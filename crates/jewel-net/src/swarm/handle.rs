//! The cloneable handle to the network, the commands it sends the event loop, and what
//! the loop shares with the block server (each peer's address).

use super::*;

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

/// The IP address each connected peer last connected from (a relayed peer: its relay's),
/// for the block server's limits per address. An entry goes with the peer's last
/// connection, so the map is bounded by the connection limit.
#[derive(Debug, Default)]
pub(crate) struct PeerIps(std::sync::Mutex<HashMap<PeerId, std::net::IpAddr>>);

impl PeerIps {
    pub(crate) fn get(&self, peer: &PeerId) -> Option<std::net::IpAddr> {
        self.0.locked().get(peer).copied()
    }

    pub(super) fn connected(&self, peer: PeerId, addr: &Multiaddr) {
        if let Some(ip) = crate::iplimit::ip_of(addr) {
            self.0.locked().insert(peer, ip);
        }
    }

    pub(super) fn gone(&self, peer: &PeerId) {
        self.0.locked().remove(peer);
    }
}

/// A cloneable handle to the network: the event loop's command queue, and nothing of any
/// protocol's client state (see [`crate::BlockClient`]).
#[derive(Clone)]
pub struct NetHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) peer_id: PeerId,
    pub(super) events: tokio::sync::broadcast::Sender<NetEvent>,
    pub(super) liveness: Arc<crate::liveness::Liveness>,
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

pub(super) fn kad_key(id: &BlockId) -> kad::RecordKey {
    kad::RecordKey::new(&id.0)
}
