//! Repair: rebuilds the files whose last audit found more pieces lost than the scheme
//! tolerates minus the margin (`jewel::policy::needs_repair`). An audit that finds one
//! queues it ([`crate::state::Work::Repair`], in the state store); a failed repair is
//! retried after a backoff that doubles, up to an hour, kept in the queue (a restart
//! forgets none); meanwhile the worker shows as throttled.

use std::sync::Arc;

use jewel::manifest::Manifest;
use jewel::BlockId;

use super::{count, Outcome, Run, Worker, WorkerError};
use crate::api::WorkerState;
use crate::audit::lost_slots;
use crate::node::Node;
use crate::state::StoredFile;
use crate::state::Work;

/// The first wait before a failed repair is tried again, and the longest.
const FIRST_BACKOFF: u64 = 10;
const MAX_BACKOFF: u64 = 3600;
/// Files repaired in one pass, at most (the rest are due at once after it).
pub const REPAIRS_PER_PASS: usize = 100;

/// How long a repair that failed `failures` times in a row waits before the next try.
pub fn backoff(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

pub struct RepairWorker {
    node: Arc<Node>,
    every: u64,
}

impl RepairWorker {
    pub(crate) fn new(node: Arc<Node>, every: u64) -> RepairWorker {
        RepairWorker { node, every: every.max(1) }
    }

    /// Whether `record`'s last audit, with the pieces known corrupt, says it needs repair.
    fn wanted(&self, record: &StoredFile) -> bool {
        let Some(audit) = &record.audit else { return false };
        let Ok(spec) = jewel::codec::SchemeSpec::parse(&record.scheme) else { return false };
        let Ok(scheme) = jewel::codec::build(&spec) else { return false };
        let mut lost: std::collections::BTreeSet<usize> = lost_slots(audit).into_iter().collect();
        lost.extend(record.corrupt.iter().copied());
        jewel::policy::needs_repair(scheme.tolerates(), self.node.repair_margin, lost.len())
    }
}

impl Node {
    /// Background work (an audit, a renewal, a repair) waits here for users' puts and gets
    /// to end, [`crate::users::MAX_YIELD`] at most.
    pub async fn yield_to_users(&self) {
        if self.users.wait_idle(crate::users::MAX_YIELD).await {
            tracing::debug!("background work waited for users' transfers");
        }
    }

    /// Whether `manifest`'s file, with `lost` pieces not usable, must be repaired now.
    pub fn needs_repair(&self, manifest: &Manifest, lost: usize) -> bool {
        manifest
            .build_scheme()
            .is_ok_and(|s| jewel::policy::needs_repair(s.tolerates(), self.repair_margin, lost))
    }
}

impl Worker for RepairWorker {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        let next = last.unwrap_or(now) + self.every;
        match self.node.state.first_due(Work::Repair) {
            Ok(Some(at)) => next.min(at),
            _ => next,
        }
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let state = &self.node.state;
            let fail = |e: crate::state::StateError| WorkerError::Failed(e.to_string());
            let queued = state.due(Work::Repair, now, REPAIRS_PER_PASS).map_err(fail)?;
            let (mut repaired, mut failed) = (0, None);
            for due in queued {
                self.node.yield_to_users().await;
                let id = due.file.parse::<BlockId>().ok();
                let record = state.file(&due.file).map_err(fail)?;
                let (Some(id), Some(record)) = (id, record) else {
                    state.unschedule(Work::Repair, &due.file).await.map_err(fail)?;
                    continue;
                };
                // An audit since may have found the pieces back.
                if !self.wanted(&record) {
                    state.unschedule(Work::Repair, &due.file).await.map_err(fail)?;
                    continue;
                }
                match self.node.repair_file(id).await {
                    Ok(r) => {
                        state.unschedule(Work::Repair, &due.file).await.map_err(fail)?;
                        if !r.repaired.slots.is_empty() {
                            repaired += 1;
                            tracing::info!(file = %id, slots = ?r.repaired.slots, "repaired");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %id, error = %e, "repair failed");
                        let failures = due.failures + 1;
                        let at = now + backoff(failures);
                        state.schedule(Work::Repair, &due.file, at, failures).await.map_err(fail)?;
                        failed = Some(format!("file {id}: {e}"));
                    }
                }
            }
            let held = state.due(Work::Repair, u64::MAX, usize::MAX).map_err(fail)?;
            let held = held.iter().filter(|d| d.at > now).count();
            let found = format!("repaired {}; {} waiting to retry", count(repaired, "file", "files"), held);
            let after = if held > 0 { WorkerState::Throttled } else { WorkerState::Idle };
            Ok(Outcome { found, after, error: failed })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_repair_waits_twice_as_long_each_time_up_to_an_hour() {
        let waits: Vec<u64> = (1..=11).map(backoff).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
