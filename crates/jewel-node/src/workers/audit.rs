//! Audits: proves each of this node's files piece by piece once its last audit is older
//! than the audit interval, records the result, and wakes the repair worker when a file
//! lost more than its margin allows. The files come from the audit queue in the state store
//! ([`crate::state::Work::Audit`], by last audit): a pass reads only those that are due, and
//! the worker wakes when the earliest is.

use std::sync::Arc;

use jewel::BlockId;

use super::{count, Outcome, Run, Waker, Worker, WorkerError};
use crate::node::Node;
use crate::state::Work;

/// Files audited in one pass, at most (the rest are due at once after it).
pub const AUDITS_PER_PASS: usize = 1000;

pub struct AuditWorker {
    node: Arc<Node>,
    every: u64,
    repair: Waker,
}

impl AuditWorker {
    pub(crate) fn new(node: Arc<Node>, every: u64, repair: Waker) -> AuditWorker {
        AuditWorker { node, every: every.max(1), repair }
    }
}

impl Worker for AuditWorker {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        let next = last.unwrap_or(now) + self.every;
        match self.node.state.first_due(Work::Audit) {
            Ok(Some(at)) => next.min(at.saturating_add(self.every)),
            _ => next,
        }
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let until = now.saturating_sub(self.every);
            let queued = self
                .node
                .state
                .due(Work::Audit, until, AUDITS_PER_PASS)
                .map_err(|e| WorkerError::Failed(e.to_string()))?;
            let (mut audited, mut lost, mut to_repair, mut failed) = (0, 0, 0, None);
            for due in &queued {
                self.node.yield_to_users().await;
                let Ok(id) = due.file.parse::<BlockId>() else {
                    // Not a file id (never written so): off the queue, or it stays due.
                    let _ = self.node.state.unschedule(Work::Audit, &due.file).await;
                    continue;
                };
                match self.node.audit_file(id, false).await {
                    Ok((manifest, _, audit)) => {
                        audited += 1;
                        let gone = crate::audit::lost_slots(&audit).len();
                        lost += gone;
                        if self.node.needs_repair(&manifest, gone) {
                            to_repair += 1;
                        }
                    }
                    Err(e) => {
                        // Tried again in one interval; the failures in a row are kept.
                        let kept =
                            self.node.state.schedule(Work::Audit, &due.file, now, due.failures + 1).await;
                        if let Err(e) = kept {
                            tracing::warn!(file = %id, error = %e, "could not queue the next audit");
                        }
                        failed = Some(format!("file {id}: {e}"));
                    }
                }
            }
            if to_repair > 0 {
                self.repair.wake();
            }
            Ok(Outcome::idle(format!(
                "audited {}; {} not alive; {} to repair",
                count(audited, "file", "files"),
                count(lost, "piece", "pieces"),
                count(to_repair, "file", "files")
            ))
            .failed(failed))
        })
    }
}
