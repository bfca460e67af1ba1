//! The block book's DHT side, off the request path: a holder announces each block it stores
//! (a Kademlia provider record, which Kademlia itself republishes hourly), and at start-up
//! every block already in its store, since provider records live in memory only.
//!
//! One announcement is a closest-peers query plus a record sent to up to 20 peers, which
//! costs the whole network far more CPU than storing a small block. Done at once, they
//! slowed a 4 KiB put on a 23-peer devnet from about 20 ms to 100 ms. So announcements wait
//! [`ANNOUNCE_DELAY`] after the store (by then the put that stored them has usually
//! returned), and at most [`ANNOUNCE_CONCURRENCY`] run at a time. The queue is bounded: an
//! id that does not fit is dropped with a warning, and announced at the node's next start.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::swarm::NetHandle;
use jewel::store::BlockStore;
use jewel::BlockId;

/// How long an announcement waits after its block was stored.
pub const ANNOUNCE_DELAY: Duration = Duration::from_secs(1);
/// Announcements in flight at once, unless `NetConfig::announce_concurrency` says otherwise.
pub const ANNOUNCE_CONCURRENCY: usize = 4;
/// Ids waiting to be announced, at most (32 bytes and an instant each).
pub const ANNOUNCE_QUEUE: usize = 1 << 16;

/// Where stored blocks are queued for announcement.
#[derive(Clone)]
pub(crate) struct Announcer {
    tx: mpsc::Sender<(BlockId, Instant)>,
    /// Ids dropped because the queue was full (warned about at 1, 2, 4, 8, ...).
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Announcer {
    /// The queue, the task that drains it (spawn it), and the count of blocks announced.
    pub(crate) fn new(
        net: NetHandle,
        concurrency: usize,
    ) -> (Announcer, impl std::future::Future<Output = ()>, watch::Receiver<u64>) {
        let (tx, rx) = mpsc::channel(ANNOUNCE_QUEUE);
        let (count, announced) = watch::channel(0);
        (Announcer { tx, dropped: Default::default() }, drain(net, rx, count, concurrency.max(1)), announced)
    }

    /// Queues `id`; drops it if the queue is full (warning at the 1st, 2nd, 4th, ... drop).
    pub(crate) fn stored(&self, id: BlockId) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send((id, Instant::now())) {
            let dropped = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    block = %id,
                    dropped,
                    "announcement queue full; dropped blocks are announced at the next start"
                );
            }
        }
    }

    /// Queues every block in `store`, waiting for room in the queue as it goes.
    pub(crate) async fn everything(&self, store: std::sync::Arc<dyn BlockStore>) {
        let listed = tokio::task::spawn_blocking(move || store.list()).await;
        let ids = match listed {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list the store to announce it");
                return;
            }
            Err(_) => return,
        };
        tracing::debug!(blocks = ids.len(), "announcing the store");
        for (id, _) in ids {
            if self.tx.send((id, Instant::now())).await.is_err() {
                return;
            }
        }
    }
}

async fn drain(
    net: NetHandle,
    mut rx: mpsc::Receiver<(BlockId, Instant)>,
    count: watch::Sender<u64>,
    concurrency: usize,
) {
    let count = &count;
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
            item = rx.recv(), if inflight.len() < concurrency => {
                let Some((id, at)) = item else { break };
                tokio::time::sleep_until(at + ANNOUNCE_DELAY).await;
                let net = net.clone();
                inflight.push(async move {
                    match net.provide(id).await {
                        Ok(()) => count.send_modify(|n| *n += 1),
                        Err(e) => tracing::debug!(block = %id, error = %e, "announcement failed"),
                    }
                });
            }
        }
    }
    while inflight.next().await.is_some() {}
}
