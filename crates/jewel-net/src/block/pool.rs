//! The block client's pool: idle get streams kept for the next get to the same peer, and
//! the per-peer limit on requests in flight. Both are bounded in peers and per peer.

use jewel_store::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{PeerId, Stream};
use tokio::sync::Semaphore;

use super::CLIENT_PER_PEER;

/// Idle get streams kept per peer by an asker.
const IDLE_PER_PEER: usize = CLIENT_PER_PEER;
/// Peers with idle streams kept by an asker.
const IDLE_PEERS: usize = 1024;
/// An idle stream is reused only this soon (well inside the server's
/// [`super::REQUEST_TIMEOUT`]).
const IDLE_REUSE: Duration = Duration::from_secs(10);
/// Peers with a request semaphore kept before idle ones are forgotten.
const PERMIT_PEERS: usize = 1024;

/// Get streams a finished get left open, per peer, with when each went idle.
#[derive(Default)]
pub(super) struct IdleStreams(HashMap<PeerId, Vec<(Stream, std::time::Instant)>>);

impl IdleStreams {
    pub(super) fn take(&mut self, peer: PeerId) -> Option<Stream> {
        let list = self.0.get_mut(&peer)?;
        let fresh = list.pop().filter(|(_, at)| at.elapsed() < IDLE_REUSE).map(|(s, _)| s);
        if list.is_empty() || fresh.is_none() {
            self.0.remove(&peer);
        }
        fresh
    }

    pub(super) fn keep(&mut self, peer: PeerId, stream: Stream) {
        if self.0.len() >= IDLE_PEERS && !self.0.contains_key(&peer) {
            self.0.retain(|_, list| list.iter().any(|(_, at)| at.elapsed() < IDLE_REUSE));
            if self.0.len() >= IDLE_PEERS {
                return;
            }
        }
        let list = self.0.entry(peer).or_default();
        list.retain(|(_, at)| at.elapsed() < IDLE_REUSE);
        if list.len() < IDLE_PER_PEER {
            list.push((stream, std::time::Instant::now()));
        }
    }
}

/// Requests in flight per remote peer, at most [`CLIENT_PER_PEER`] each (libp2p-stream
/// drops inbound streams when a peer's accept queue is full).
#[derive(Default)]
pub(super) struct PeerPermits(Mutex<HashMap<PeerId, Arc<Semaphore>>>);

impl PeerPermits {
    /// A permit for one request to `peer`; waits for one to be free.
    pub(super) async fn acquire(&self, peer: PeerId) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut map = self.0.locked();
            if map.len() > PERMIT_PEERS {
                map.retain(|_, s| s.available_permits() < CLIENT_PER_PEER);
            }
            map.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(CLIENT_PER_PEER))).clone()
        };
        sem.acquire_owned().await.ok()
    }
}
