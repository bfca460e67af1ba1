//! Lease renewal: renews the leases on each of this node's files once half of the lease
//! has run, so holders keep the pieces while the owner is alive. The files come from the
//! renewal queue in the state store ([`crate::state::Work::Renew`], by last renewal); a
//! failed renewal is tried again a quarter of a lease later.

use std::sync::Arc;

use jewel::BlockId;

use super::{count, Outcome, Run, Worker, WorkerError};
use crate::node::Node;
use crate::state::Work;

/// Files renewed in one pass, at most (the rest are due at once after it).
pub const RENEWALS_PER_PASS: usize = 1000;

pub struct RenewWorker {
    node: Arc<Node>,
}

impl RenewWorker {
    pub(crate) fn new(node: Arc<Node>) -> RenewWorker {
        RenewWorker { node }
    }

    fn lease_secs(&self) -> u64 {
        u64::from(self.node.lease_secs)
    }
}

impl Worker for RenewWorker {
    fn name(&self) -> &'static str {
        "renew"
    }

    /// When the earliest file is half way through its lease, and at least every quarter of
    /// a lease.
    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        let next = last.unwrap_or(now) + (self.lease_secs() / 4).max(1);
        match self.node.state.first_due(Work::Renew) {
            Ok(Some(at)) => next.min(at.saturating_add(self.lease_secs() / 2)),
            _ => next,
        }
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let half = self.lease_secs() / 2;
            let state = &self.node.state;
            let fail = |e: crate::state::StateError| WorkerError::Failed(e.to_string());
            let queued = state.due(Work::Renew, now.saturating_sub(half), RENEWALS_PER_PASS).map_err(fail)?;
            let (mut renewed, mut gone, mut failed) = (0, 0, None);
            for due in &queued {
                self.node.yield_to_users().await;
                let Ok(id) = due.file.parse::<BlockId>() else {
                    // Not a file id (never written so): off the queue, or it stays due.
                    let _ = state.unschedule(Work::Renew, &due.file).await;
                    continue;
                };
                let next = match self.node.renew(id, now).await {
                    // Recorded and queued again in one commit.
                    Ok(missing) => {
                        renewed += 1;
                        gone += missing.len();
                        continue;
                    }
                    Err(e) => {
                        failed = Some(format!("file {id}: {e}"));
                        // Due again a quarter of a lease from now.
                        let at = now.saturating_sub(half) + (self.lease_secs() / 4).max(1);
                        state.schedule(Work::Renew, &due.file, at, due.failures + 1)
                    }
                };
                if let Err(e) = next.await {
                    tracing::warn!(file = %id, error = %e, "could not queue the next renewal");
                }
            }
            let queued_all = state.queued(Work::Renew).map_err(fail)?;
            Ok(Outcome::idle(format!(
                "renewed {} of {}; {} no longer held",
                count(renewed, "file", "files"),
                queued_all,
                count(gone, "piece", "pieces")
            ))
            .failed(failed))
        })
    }
}
