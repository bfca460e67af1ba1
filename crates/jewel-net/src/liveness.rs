//! Which connected peers answer. A frozen process keeps its connections open and never
//! answers; such a peer is *silent* until it answers again. Requests to a silent peer fail
//! at once, requests already waiting on it are ended, and placement skips it: a frozen
//! holder costs one short bounded wait, not one per request.
//!
//! Two ways to find one, so that an idle node stays idle:
//! - a peer this node is waiting on is *probed*: a request unanswered for [`PROBE_AFTER`]
//!   sends a tiny echo on [`ALIVE_PROTOCOL`] (at most one a second per peer, whatever the
//!   number of requests), and a probe unanswered within [`PROBE_WITHIN`] makes the peer
//!   silent. A node that serves blocks answers probes on a task of its own, not in its
//!   block server, so a peer at its serving limits still answers;
//! - every connection is pinged every [`PING_EVERY`] (libp2p's ping, which also keeps home
//!   routers' NAT mappings open and measures round trips), and a peer whose last answer is
//!   older than [`SILENT_AFTER`] is silent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};

/// How often each connection is pinged, in use or not.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// A peer with no answer to pings for this long is silent (three pings missed).
pub const SILENT_AFTER: Duration = Duration::from_secs(46);
/// A request unanswered this long probes its peer (again each time this passes).
pub const PROBE_AFTER: Duration = Duration::from_secs(1);
/// A probe unanswered this long makes its peer silent.
pub const PROBE_WITHIN: Duration = Duration::from_secs(3);
/// The probe's protocol: the asker sends [`PROBE_LEN`] bytes, the peer sends them back.
pub const ALIVE_PROTOCOL: StreamProtocol = StreamProtocol::new("/jewel/alive/1.0.0");
const PROBE_LEN: usize = 8;
/// Probes answered at once; more are closed unanswered (which is an answer: not frozen).
const MAX_PROBES_SERVED: usize = 64;
/// Peers tracked at most (connected ones; a peer's entry goes with its last connection).
const MAX_TRACKED: usize = 8192;

#[derive(Debug, Default)]
struct Peers {
    /// When each peer last answered a ping (or connected).
    heard: HashMap<PeerId, Instant>,
    /// Peers found silent, and since when.
    silent: HashMap<PeerId, Instant>,
    /// When each peer was last probed.
    probed: HashMap<PeerId, Instant>,
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
            p.probed.remove(peer);
        });
    }

    /// Whether a request waiting on `peer` should probe it now: not if another probe of it
    /// started within [`PROBE_AFTER`] (its outcome is everyone's). Records the probe.
    pub fn probe_due(&self, peer: PeerId) -> bool {
        let now = Instant::now();
        self.with(|p| {
            if p.probed.get(&peer).is_some_and(|at| now.duration_since(*at) < PROBE_AFTER) {
                return false;
            }
            if p.probed.len() >= MAX_TRACKED {
                p.probed.retain(|_, at| now.duration_since(*at) < PROBE_AFTER);
                if p.probed.len() >= MAX_TRACKED {
                    return false;
                }
            }
            p.probed.insert(peer, now);
            true
        })
    }

    /// Probes `peer` through `control` and records the outcome: an echo is an answer; no
    /// answer within [`PROBE_WITHIN`] makes it silent; a refusal or a closed stream says
    /// nothing of freezing (a peer that closes is not frozen) and changes nothing.
    pub async fn probe(&self, control: libp2p_stream::Control, peer: PeerId) {
        match tokio::time::timeout(PROBE_WITHIN, echo(control, peer)).await {
            Ok(Ok(())) => self.heard(peer),
            Ok(Err(reason)) => tracing::debug!(%peer, %reason, "a probe was not answered"),
            Err(_) => {
                tracing::debug!(%peer, "a probe timed out");
                self.mark_silent(peer);
            }
        }
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

/// One probe: [`PROBE_LEN`] bytes unlike any probe's before out, the same back.
async fn echo(mut control: libp2p_stream::Control, peer: PeerId) -> Result<(), String> {
    let mut stream = control.open_stream(peer, ALIVE_PROTOCOL).await.map_err(|e| e.to_string())?;
    // Not a secret: distinct from the probes before it, so an old echo never passes.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let sent: [u8; PROBE_LEN] = (n ^ clock.as_nanos() as u64).to_le_bytes();
    stream.write_all(&sent).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut back = [0u8; PROBE_LEN];
    stream.read_exact(&mut back).await.map_err(|e| e.to_string())?;
    let _ = stream.close().await;
    if back == sent {
        Ok(())
    } else {
        Err("the echo differs".into())
    }
}

/// Answers other peers' probes until the network stops: at most [`MAX_PROBES_SERVED`] at
/// once, each given [`PROBE_WITHIN`] to send its bytes. Spawn it.
pub(crate) async fn answer_probes(mut control: libp2p_stream::Control) {
    let Ok(mut incoming) = control.accept(ALIVE_PROTOCOL) else {
        tracing::warn!("probes already answered elsewhere");
        return;
    };
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PROBES_SERVED));
    while let Some((_, mut stream)) = incoming.next().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let answer = async {
                let mut got = [0u8; PROBE_LEN];
                stream.read_exact(&mut got).await?;
                stream.write_all(&got).await?;
                stream.close().await
            };
            let _ = tokio::time::timeout(PROBE_WITHIN, answer).await;
        });
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
    fn a_peer_is_probed_at_most_once_a_second_whatever_waits_on_it() {
        let l = Liveness::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        assert!(l.probe_due(p), "the first request that waits probes");
        assert!(!l.probe_due(p), "the next ones rely on that probe");
        assert!(l.probe_due(q), "another peer has its own");
        l.with(|x| x.probed.insert(p, Instant::now() - PROBE_AFTER));
        assert!(l.probe_due(p), "a second later, a peer still waited on is probed again");
        l.gone(&p);
        assert!(l.with(|x| !x.probed.contains_key(&p)));
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
