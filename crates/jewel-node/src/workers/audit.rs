//! Audits: proves each of this node's files piece by piece once its last audit is older
//! than the audit interval, records the result, and wakes the repair worker when a file
//! lost more than its margin allows.

use std::sync::Arc;

use jewel::BlockId;

use super::{count, Outcome, Run, Waker, Worker, WorkerError};
use crate::api::FileRecord;
use crate::node::Node;

/// Whether a file is due for an audit at `now`, audits being `every` seconds apart.
pub fn audit_due(record: &FileRecord, every: u64, now: u64) -> bool {
    record.audit.as_ref().is_none_or(|a| a.at.saturating_add(every) <= now)
}

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
        last.unwrap_or(now) + self.every
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let files = self.node.state.files().map_err(|e| WorkerError::Failed(e.to_string()))?;
            let due: Vec<BlockId> = files
                .iter()
                .filter(|(_, r)| audit_due(r, self.every, now))
                .filter_map(|(id, _)| id.parse().ok())
                .collect();
            let (mut audited, mut lost, mut to_repair, mut failed) = (0, 0, 0, None);
            for id in &due {
                match self.node.audit_file(*id, false).await {
                    Ok((manifest, _, audit)) => {
                        audited += 1;
                        let gone = crate::audit::lost_slots(&audit).len();
                        lost += gone;
                        if self.node.needs_repair(&manifest, gone) {
                            to_repair += 1;
                        }
                    }
                    Err(e) => failed = Some(format!("file {id}: {e}")),
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
