//! The block protocol, `/jewel/block/1.0.0`: serving a store to peers ([`server`]), and
//! asking peers ([`BlockClient`], with its stream and permit [`pool`]).
//!
//! Server: an inbound stream carries requests one after another, until the asker closes
//! it or sends nothing for [`REQUEST_TIMEOUT`]. A global, a per-peer and a per-address limit
//! bound concurrent requests (over the limit: `Busy`), and [`MAX_STREAMS`] bounds open
//! streams.
//! A put is streamed into the store, which checks the hash before it commits; gets and
//! proofs are served as verified fragments. Store work runs on the blocking pool, never on
//! the event loop.
//!
//! Client: `put_block`, `get_range` (verified against the id before it is returned),
//! `has`, and `prove` (a random-fragment storage proof). A get that ends cleanly leaves its
//! stream idle for the next get to the same peer: opening a stream costs a trip through the
//! event loop, a yamux open and a protocol negotiation, per 400 KiB read.
//!
//! The client wraps a [`crate::NetHandle`] (for connections) and keeps its own state; the
//! swarm knows nothing of this module.

use std::time::Duration;

use libp2p::StreamProtocol;

use crate::error::NetError;
use crate::wire::WireError;

mod client;
mod pool;
pub(crate) mod server;

pub use client::BlockClient;
pub use server::{RateLimit, DATA_STALL, MIN_DATA_RATE};

/// How much of a holder's store its peers may fill, over what its capacity allows: any one
/// peer at most `per_peer` bytes, and all new peers together at most `newcomers` (a peer is
/// new until its first block here is [`NEWCOMER_SECS`] old: identities are free, so
/// strangers share one allowance). A store without a capacity has no quota unless given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// A quarter of the capacity if not given.
    pub per_peer: Option<u64>,
    /// Half of the capacity if not given.
    pub newcomers: Option<u64>,
}

/// How long a peer counts as new to a holder: from its first block stored there.
pub const NEWCOMER_SECS: u64 = 7 * 24 * 3600;

impl Quota {
    /// The per-peer and newcomers' limits for a store of `capacity` bytes.
    pub fn limits(&self, capacity: Option<u64>) -> (Option<u64>, Option<u64>) {
        (self.per_peer.or(capacity.map(|c| c / 4)), self.newcomers.or(capacity.map(|c| c / 2)))
    }
}

/// The block protocol's name and version.
pub const BLOCK_PROTOCOL: StreamProtocol = StreamProtocol::new("/jewel/block/1.0.0");
/// Requests served at once, over all peers.
pub const MAX_CONCURRENT: usize = 64;
/// Requests served at once for one peer.
pub const MAX_PER_PEER: usize = 8;
/// Requests served at once for the peers at one IP address: identities are free, so
/// strangers at one address cannot take more than half of [`MAX_CONCURRENT`].
pub const MAX_PER_IP: usize = MAX_CONCURRENT / 2;
/// Streams open at once (serving or waiting for their next request), over all peers.
pub const MAX_STREAMS: usize = 4 * MAX_CONCURRENT;
/// A request header must arrive within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per read or write of a put's raw data.
const PUT_CHUNK: usize = 256 << 10;
/// Requests this node has in flight to one peer at once.
pub const CLIENT_PER_PEER: usize = 2;
/// Attempts for a request that failed in transport (never for a refusal or a bad proof).
pub const ATTEMPTS: usize = 3;
/// How long one attempt of a request may take, from opening the stream to the last byte
/// of the answer; a range read gets its length at [`MIN_READ_RATE`] more.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest a holder may send a range, for the read's deadline: half a megabit per
/// second, the uplink of a poor home line (a frozen holder is found by its pings within
/// seconds whatever this allows; a slow one is hedged around by the get).
pub const MIN_READ_RATE: u64 = 64 << 10;
/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a holder may take to say go (or why not) to an upload.
pub const GO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one frame of an upload may wait for the holder to take it.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// The slowest an upload may go, for its deadline: [`ANSWER_TIMEOUT`] plus its size at
/// this rate.
pub const MIN_UPLOAD_RATE: u64 = 1 << 20;

/// Whether a failure was in transport (worth a retry) rather than an answer. A peer that
/// did not answer in time is not asked again: a frozen peer would cost the wait each time.
pub fn is_transient(e: &NetError) -> bool {
    matches!(e, NetError::OpenStream { .. } | NetError::Wire(WireError::Io(_)))
}
