//! The index service's ties to the node: its file service and network as the index sees
//! them ([`IndexFiles`], [`IndexNet`]), and the gossip of the user's topic.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use jewel::index;
use jewel::names::NameRecord;
use jewel_net::{NetError, NetEvent, NetHandle};

use super::{IndexFiles, IndexNet, IndexOpError, IndexService};
use crate::node::{GetError, How, Node};

/// The node's file service, as the index uses it. Holds the node weakly (the node holds
/// the index): once the node is gone, every call fails as interrupted.
pub(crate) struct NodeFiles(pub Weak<Node>);

impl NodeFiles {
    fn node(&self) -> Result<Arc<Node>, IndexOpError> {
        self.0.upgrade().ok_or(IndexOpError::Interrupted)
    }
}

#[async_trait::async_trait]
impl IndexFiles for NodeFiles {
    /// With the default scheme when there are peers enough, else copies on the peers
    /// there are.
    async fn store(&self, bytes: Vec<u8>, name: &str) -> Result<String, IndexOpError> {
        let node = self.node()?;
        let default = node.settings()?.default_scheme;
        let me = node.blocks.net().peer_id();
        let peers = node.candidates(&HashSet::from([me]), 0, 0).await?.len();
        let needs = jewel::codec::SchemeSpec::parse(&default)
            .ok()
            .and_then(|s| jewel::codec::build(&s).ok())
            .map_or(usize::MAX, |s| s.slots());
        let scheme = if peers >= needs { default } else { format!("replicate:{}", peers.clamp(1, 3)) };
        let size = bytes.len() as u64;
        let input = Box::new(std::io::Cursor::new(bytes));
        let keep = node.keep_alone();
        let put = node
            .put_input(
                input,
                size,
                name.to_string(),
                name.to_string(),
                How { scheme: Some(&scheme), ..How::default() },
                keep,
            )
            .await?;
        Ok(put.cap)
    }

    /// Streamed into memory as it decodes (nothing is written to disk).
    async fn read(&self, cap: &str, range: Option<u64>, limit: u64) -> Result<Vec<u8>, IndexOpError> {
        let node = self.node()?;
        let (len, mut rx) = node.read(cap, range.map(|r| (0, r))).await?;
        let mut out = Vec::with_capacity(usize::try_from(len.min(limit)).unwrap_or(0));
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| IndexOpError::Io(cap.to_string(), e))?;
            let room = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() as u64 >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn describe(&self, cap: &str) -> Result<(u64, String), IndexOpError> {
        let node = self.node()?;
        let id = jewel::caps::Cap::parse(cap).map_err(GetError::Cap)?.manifest();
        let manifest = node.locate(id).await.map_err(GetError::Locate)?.0;
        Ok((manifest.file_len, manifest.scheme.to_string()))
    }

    async fn release(&self, cap: &str) -> Result<(), IndexOpError> {
        self.node()?.rm(cap).await?;
        Ok(())
    }
}

/// The node's network, as the index uses it.
pub(crate) struct NodeNet(pub NetHandle);

#[async_trait::async_trait]
impl IndexNet for NodeNet {
    async fn gossip(&self, topic: String, msg: Vec<u8>) -> Result<(), NetError> {
        self.0.gossip(topic, msg).await
    }

    async fn publish_name(&self, record: NameRecord) -> Result<(), NetError> {
        self.0.publish_name(record).await
    }

    async fn find_name(&self, key: Vec<u8>) -> Result<Option<NameRecord>, NetError> {
        self.0.find_name(key).await
    }

    async fn whereabouts(&self) -> Result<(String, Vec<String>), NetError> {
        let addrs = self.0.listeners().await?.into_iter().take(3).map(|a| a.to_string()).collect();
        Ok((self.0.peer_id().to_string(), addrs))
    }

    async fn meet(&self, peer: &str, addrs: &[String]) {
        let Ok(peer) = peer.parse::<jewel_net::PeerId>() else { return };
        if self.0.connect(peer).await.is_ok() {
            return;
        }
        for a in addrs {
            if let Ok(addr) = a.parse::<jewel_net::Multiaddr>() {
                if self.0.dial(addr).await.is_ok() {
                    return;
                }
            }
        }
    }
}

/// Runs the index's background work until `shutdown`: its own ([`IndexService::run`]),
/// and receiving the gossip of the user's topic (joined once the node holds a user) and
/// catching up when woken.
pub(crate) fn spawn(
    service: Arc<IndexService>,
    net: NetHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    service.run(shutdown.clone());
    let mut events = net.events();
    let receiver = service;
    let mut stop = shutdown;
    tokio::spawn(async move {
        let mut subscribed: Option<String> = None;
        loop {
            if let Some(user) = receiver.user() {
                let t = index::topic(&user);
                if subscribed.as_ref() != Some(&t) {
                    let signer = user.clone();
                    let check: jewel_net::swarm::GossipCheck =
                        Arc::new(move |data: &[u8]| index::signed_by(&signer, data));
                    match net.subscribe(t.clone(), check).await {
                        Ok(()) => {
                            subscribed = Some(t);
                            let n = receiver.clone();
                            tokio::spawn(async move {
                                if let Err(e) = n.tell_all(true).await {
                                    tracing::debug!(error = %e, "no other device of the user is online");
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "could not join the user's gossip topic"),
                    }
                }
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(NetEvent::Gossip { topic: t, data, .. }) if subscribed.as_ref() == Some(&t) => {
                        match receiver.receive_gossip(&data).await {
                            Ok(n) if n > 0 => tracing::info!(merged = n, "merged index changes from another device"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "refused an index message on the user's topic"),
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => receiver.catch_up.notify_one(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = receiver.joined.notified() => {}
                _ = receiver.catch_up.notified() => {
                    // The user may be new: join its topic first (the loop's top), then catch up.
                    let n = receiver.clone();
                    tokio::spawn(async move {
                        match n.catch_up().await {
                            Ok(m) if m > 0 => tracing::info!(merged = m, "caught up with the user's other devices"),
                            Ok(_) => {}
                            Err(e) => tracing::info!(error = %e, "could not catch up with the user's other devices"),
                        }
                    });
                }
                _ = stop.changed() => break,
            }
        }
    });
}
