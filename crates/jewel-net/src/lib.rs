//! The peer-to-peer layer on rust-libp2p: the swarm and its event loop ([`swarm`]), the
//! block protocol ([`block`], format in [`wire`]).
//!
//! Owns how peers find each other and how blocks move between them. It knows blocks and
//! peers, never schemes, manifests, keys or pipelines: it uses only the engine's ids,
//! stores, leases and buffer pools.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod announce;
pub mod block;
pub mod book;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod invite;
pub mod iplimit;
pub mod liveness;
pub mod mux;
pub mod reach;
mod records;
pub mod swarm;
pub mod wire;

use std::sync::Arc;

pub use block::{BlockClient, BLOCK_PROTOCOL};
pub use book::{Holder, HoldersRecord};
pub use error::NetError;
/// Multiaddr protocol components, e.g. `Protocol::P2p(peer)`.
pub use libp2p::multiaddr::Protocol as MultiaddrProtocol;
pub use libp2p::{identity::Keypair, Multiaddr, PeerId};
pub use swarm::{NetConfig, NetEvent, NetHandle, PeerInfo, KAD_PROTOCOL};

use jewel_store::store::BlockStore;

/// A running network node: the event loop and the block server, stopped together.
pub struct Network {
    handle: NetHandle,
    blocks: BlockClient,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    announced: tokio::sync::watch::Receiver<u64>,
}

/// How long [`Network::start`] waits for a first bootstrap peer to answer.
pub const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

impl Network {
    /// Starts listening, serves `store` to peers, dials the bootstrap peers and fills the
    /// routing table from them. Must run inside a Tokio runtime.
    pub async fn start(
        keypair: Keypair,
        config: NetConfig,
        store: Arc<dyn BlockStore>,
    ) -> Result<Network, NetError> {
        let (handle, control, event_loop) = swarm::EventLoop::start(keypair, &config).await?;
        let ips = event_loop.peer_ips();
        let blocks = BlockClient::new(handle.clone(), control.clone());
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        let mut tasks = vec![tokio::spawn(event_loop.run(watch.clone()))];

        let mut stop = watch;
        let limits = block::server::ServeLimits {
            max_upload: config.max_upload,
            data_stall: config.data_stall,
            quota: config.quota,
        };
        let leases = match &config.leases {
            Some(l) => l.clone(),
            None => Arc::new(
                jewel_store::lease::LeaseBook::in_memory().map_err(|e| NetError::Transport(e.to_string()))?,
            ),
        };
        let mut announced = tokio::sync::watch::channel(0).1;
        if config.serve_blocks {
            // A peer waiting on this node's blocks probes it (see `liveness`): answered by a
            // task of its own, so a block server at its limits still answers.
            let mut stop_answering = stop.clone();
            let answering = liveness::answer_probes(control.clone());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    () = answering => {}
                    _ = stop_answering.changed() => {}
                }
            }));
            let filter = announce::Filter { store: store.clone(), only: config.announce_only };
            let (announcer, drain, count) =
                announce::Announcer::new(handle.clone(), config.announce_concurrency, filter);
            announced = count;
            let all = announcer.clone();
            let listed = store.clone();
            let state = config.announce_state.clone();
            let mut stop_announcing = stop.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = async { tokio::join!(drain, all.refresh(listed, state)) } => {}
                    _ = stop_announcing.changed() => {}
                }
            }));
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    r = block::server::serve(control, store, leases, announcer, limits, ips) => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "block server stopped");
                        }
                    }
                    _ = stop.changed() => {}
                }
            }));
        }
        let net = Network { handle, blocks, shutdown, tasks, announced };
        // The bootstrap peers the user named and the peers this node remembers are dialed
        // at once; start returns at the first that answers, or after READY_WAIT: a node is
        // ready for commands within that, whatever the network does. One unreachable
        // bootstrap peer among several is not fatal; none of them reachable is. Dials
        // still under way go on, and the routing table fills, in the background.
        let named = config.bootstrap.len();
        let mut dials: futures::stream::FuturesUnordered<_> = config
            .bootstrap
            .iter()
            .map(|a| (true, a.clone()))
            .chain(config.remembered.iter().map(|a| (false, a.clone())))
            .map(|(named, addr)| {
                let h = net.handle.clone();
                async move {
                    let r = h.dial(addr.clone()).await;
                    (named, addr, r)
                }
            })
            .collect();
        let (mut reached, mut named_failed, mut first_error) = (0, 0, None);
        let wait = tokio::time::sleep(READY_WAIT);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                next = futures::StreamExt::next(&mut dials) => match next {
                    None => break,
                    Some((_, _, Ok(_))) => {
                        reached += 1;
                        break;
                    }
                    Some((named, addr, Err(e))) => {
                        tracing::warn!(%addr, error = %e, "bootstrap peer unreachable");
                        if named {
                            named_failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                },
                _ = &mut wait => break,
            }
        }
        if let (0, true, Some(e)) = (reached, named > 0 && named_failed == named, first_error) {
            net.shutdown().await;
            return Err(e);
        }
        // A first walk fills the routing table: waited for while READY_WAIT lasts (on a
        // good network it takes milliseconds), else it goes on in the background.
        let handle = net.handle.clone();
        let mut walked = false;
        if reached > 0 {
            walked = true;
            let h = handle.clone();
            let mut walk = tokio::spawn(async move { h.bootstrap().await });
            let _ = tokio::time::timeout_at(wait.deadline(), &mut walk).await;
        }
        let mut stopped = net.shutdown.subscribe();
        tokio::spawn(async move {
            let rest = async {
                while let Some((_, addr, r)) = futures::StreamExt::next(&mut dials).await {
                    match r {
                        Ok(_) if !walked => {
                            walked = true;
                            let h = handle.clone();
                            tokio::spawn(async move { h.bootstrap().await });
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(%addr, error = %e, "a bootstrap peer is unreachable"),
                    }
                }
            };
            tokio::select! {
                _ = rest => {}
                _ = stopped.changed() => {}
            }
        });
        Ok(net)
    }

    pub fn handle(&self) -> &NetHandle {
        &self.handle
    }

    /// The block-protocol client of this node.
    pub fn blocks(&self) -> &BlockClient {
        &self.blocks
    }

    /// How many stored blocks this node has announced in the DHT so far (see
    /// [`announce`]); changes as announcements complete.
    pub fn announced(&self) -> tokio::sync::watch::Receiver<u64> {
        self.announced.clone()
    }

    /// Stops the event loop and the block server, and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
