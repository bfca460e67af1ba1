//! The network's error type, shared by the swarm and the block protocol.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("the network task has stopped")]
    Closed,
    #[error("transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot reach {target}: {reason}")]
    Dial { target: String, reason: String },
    #[error("no known peers to bootstrap from")]
    NoPeers,
    #[error("DHT: {0}")]
    Dht(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("cannot open a block stream to {peer}: {reason}")]
    OpenStream { peer: PeerId, reason: String },
    #[error("peer {peer} did not answer within {waited:?} (frozen or overloaded?)")]
    Unresponsive { peer: PeerId, waited: Duration },
    #[error("peer {peer} is not answering (frozen or overloaded?)")]
    Silent { peer: PeerId },
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    #[error("peer {peer} sent a bad fragment: {source}")]
    Fragment { peer: PeerId, source: jewel_store::store::FragmentError },
    #[error(transparent)]
    Store(#[from] jewel_store::store::StoreError),
}
