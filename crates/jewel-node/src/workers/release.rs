//! Releases: asks again the holders that did not take a file's release when it was
//! removed (they were offline, say), until they do or their leases run out. The releases
//! owed are in the node's state, so a crash forgets none.

use std::sync::Arc;

use jewel::BlockId;
use jewel_net::PeerId;

use super::{count, Outcome, Run, Worker, WorkerError};
use crate::api::{PendingRelease, WorkerState};
use crate::node::Node;

pub struct ReleaseWorker {
    node: Arc<Node>,
    every: u64,
}

impl ReleaseWorker {
    pub(crate) fn new(node: Arc<Node>, every: u64) -> ReleaseWorker {
        ReleaseWorker { node, every: every.max(1) }
    }

    /// Asks one holder to release; true once it did.
    async fn ask(&self, p: &PendingRelease) -> bool {
        let (Ok(file), Ok(peer)) = (p.file.parse::<BlockId>(), p.holder.parse::<PeerId>()) else {
            return true;
        };
        let blocks: Vec<BlockId> = p.blocks.iter().filter_map(|b| b.parse().ok()).collect();
        self.node.blocks.lease(peer, file, 0, &blocks).await.is_ok()
    }
}

impl Worker for ReleaseWorker {
    fn name(&self) -> &'static str {
        "release"
    }

    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        last.unwrap_or(now) + self.every
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let owed = self.node.state.pending_releases().map_err(|e| WorkerError::Failed(e.to_string()))?;
            let (mut done, mut expired, mut error) = (0, 0, None);
            for p in &owed {
                let settled = if p.until <= now {
                    expired += 1;
                    true
                } else if self.ask(p).await {
                    tracing::info!(file = %p.file, holder = %p.holder, "a holder took a release it owed");
                    done += 1;
                    true
                } else {
                    false
                };
                if settled {
                    if let Err(e) = self.node.state.settle_release(p).await {
                        error = Some(e.to_string());
                    }
                }
            }
            let left = owed.len() - done - expired;
            let found = format!(
                "{} released, {} ran out of lease, {} still owed",
                count(done, "holder", "holders"),
                expired,
                left
            );
            let after = if left > 0 { WorkerState::Throttled } else { WorkerState::Idle };
            Ok(Outcome { found, after, error })
        })
    }
}
