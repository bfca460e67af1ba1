//! Which connected peers answer: every connection is pinged every [`PING_EVERY`], and a
//! peer whose last answer is older than [`SILENT_AFTER`] (a frozen process keeps its
//! connections open and never answers) is *silent* until it answers again. Requests to a
//! silent peer fail at once, requests already waiting on it are ended, and placement skips
//! it: a frozen holder costs one short bounded wait, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How often each connection is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// A peer with no answer for this long is silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(4);
/// Peers tracked at most (connected ones; a peer's entry goes with its last connection).
const MAX_TRACKED: usize = 8192;

#[derive(Debug, Default)]
struct Peers {
    /// When each peer last answered a ping (or connected).
    heard: HashMap<PeerId, Instant>,
    /// Peers found silent, and since when.
    silent: HashMap<PeerId, Instant>,
}

/// Shared between the event loop (which hears pings) and the block client (which asks).
#[derive(Debug)]
pub struct Liveness {
    peers: Mutex<Peers>,
    /// Bumped whenever a peer becomes silent, so waiting requests look again.
    went_silent: tokio::sync::watch::Sender<u64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { peers: Mutex::default(), went_silent: tokio::sync::watch::channel(0).0 }
    }
}

impl Liveness {
    fn with<T>(&self, f: impl FnOnce(&mut Peers) -> T) -> T {
        let mut g = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// `peer` answered (a ping, a new connection): it is not silent.
    pub(crate) fn heard(&self, peer: PeerId) {
        self.with(|p| {
            if p.heard.len() >= MAX_TRACKED && !p.heard.contains_key(&peer) {
                return;
            }
            p.heard.insert(peer, Instant::now());
            p.silent.remove(&peer);
        });
    }

    /// `peer`'s last connection closed: nothing is known of it any more.
    pub(crate) fn gone(&self, peer: &PeerId) {
        self.with(|p| {
            p.heard.remove(peer);
            p.silent.remove(peer);
        });
    }

    /// Marks `peer` silent now (it let a request time out), until it answers again.
    pub fn mark_silent(&self, peer: PeerId) {
        let new = self.with(|p| {
            if p.silent.len() >= MAX_TRACKED {
                return false;
            }
            p.silent.insert(peer, Instant::now()).is_none()
        });
        if new {
            tracing::info!(%peer, "a peer is not answering (frozen or overloaded?): asked last until it does");
            self.went_silent.send_modify(|n| *n += 1);
        }
    }

    /// Finds the peers whose last answer is older than [`SILENT_AFTER`]; the event loop
    /// calls this a few times a second.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let newly: Vec<PeerId> = self.with(|p| {
            let newly: Vec<PeerId> = p
                .heard
                .iter()
                .filter(|(peer, at)| now.duration_since(**at) > SILENT_AFTER && !p.silent.contains_key(*peer))
                .map(|(peer, _)| *peer)
                .collect();
            for peer in &newly {
                p.silent.insert(*peer, now);
            }
            newly
        });
        for peer in &newly {
            tracing::info!(%peer, "a peer stopped answering pings (frozen?): asked last until it answers");
        }
        if !newly.is_empty() {
            self.went_silent.send_modify(|n| *n += newly.len() as u64);
        }
    }

    /// Whether `peer` is silent now.
    pub fn is_silent(&self, peer: &PeerId) -> bool {
        self.with(|p| p.silent.contains_key(peer))
    }

    /// The silent peers.
    pub fn silent(&self) -> Vec<PeerId> {
        self.with(|p| p.silent.keys().copied().collect())
    }

    /// Resolves once `peer` is silent (at once if it is).
    pub async fn until_silent(&self, peer: PeerId) {
        let mut rx = self.went_silent.subscribe();
        loop {
            if self.is_silent(&peer) {
                return;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`: never here, but never spin.
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_answering_turns_silent_and_back() {
        let l = Liveness::default();
        let p = PeerId::random();
        l.heard(p);
        l.sweep();
        assert!(!l.is_silent(&p));
        l.with(|x| x.heard.insert(p, Instant::now() - SILENT_AFTER - Duration::from_millis(1)));
        let waiting = tokio::spawn({
            let l = std::sync::Arc::new(l);
            let l2 = l.clone();
            async move {
                let w = tokio::spawn(async move { l2.until_silent(p).await });
                tokio::task::yield_now().await;
                l.sweep();
                w.await.unwrap();
                assert!(l.is_silent(&p));
                l.heard(p);
                assert!(!l.is_silent(&p));
            }
        });
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }

    #[test]
    fn a_request_that_timed_out_marks_its_peer_until_it_answers() {
        let l = Liveness::default();
        let p = PeerId::random();
        l.mark_silent(p);
        assert_eq!(l.silent(), vec![p]);
        l.heard(p);
        assert!(l.silent().is_empty());
        l.mark_silent(p);
        l.gone(&p);
        assert!(!l.is_silent(&p));
    }
}
