//! Repair: rebuilds the files whose last audit found more pieces lost than the scheme
//! tolerates minus the margin (`jewel::policy::needs_repair`). A failed repair is retried
//! after a backoff that doubles, up to an hour; meanwhile the worker shows as throttled.

use std::collections::HashMap;
use std::sync::Arc;

use jewel::manifest::Manifest;
use jewel::BlockId;

use super::{count, Outcome, Run, Worker, WorkerError};
use crate::api::{FileRecord, WorkerState};
use crate::audit::lost_slots;
use crate::node::Node;

/// The first wait before a failed repair is tried again, and the longest.
const FIRST_BACKOFF: u64 = 10;
const MAX_BACKOFF: u64 = 3600;

pub struct RepairWorker {
    node: Arc<Node>,
    every: u64,
    /// Files whose last repair failed: when to try again, and the wait after that.
    backoff: HashMap<BlockId, (u64, u64)>,
}

impl RepairWorker {
    pub(crate) fn new(node: Arc<Node>, every: u64) -> RepairWorker {
        RepairWorker { node, every: every.max(1), backoff: HashMap::new() }
    }

    /// Files whose last audit says they need repair, and that are not waiting out a
    /// backoff at `now`.
    fn wanted(
        &self,
        files: &std::collections::BTreeMap<String, FileRecord>,
        now: u64,
    ) -> (Vec<BlockId>, usize) {
        let mut want = Vec::new();
        let mut held = 0;
        for (id, record) in files {
            let (Ok(id), Some(audit)) = (id.parse::<BlockId>(), &record.audit) else { continue };
            let Ok(spec) = jewel::codec::SchemeSpec::parse(&record.scheme) else { continue };
            let Ok(scheme) = jewel::codec::build(&spec) else { continue };
            let lost = lost_slots(audit).len();
            if !jewel::policy::needs_repair(scheme.tolerates(), self.node.repair_margin, lost) {
                continue;
            }
            match self.backoff.get(&id) {
                Some((at, _)) if *at > now => held += 1,
                _ => want.push(id),
            }
        }
        (want, held)
    }
}

impl Node {
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
        self.backoff.values().map(|(at, _)| *at).filter(|at| *at > now).fold(next, u64::min)
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let files = self.node.state.files().map_err(|e| WorkerError::Failed(e.to_string()))?;
            self.backoff.retain(|id, _| files.contains_key(&id.to_string()));
            let (want, _) = self.wanted(&files, now);
            let (mut repaired, mut failed) = (0, None);
            for id in want {
                match self.node.repair_file(id).await {
                    Ok(r) => {
                        self.backoff.remove(&id);
                        if !r.repaired.slots.is_empty() {
                            repaired += 1;
                            tracing::info!(file = %id, slots = ?r.repaired.slots, "repaired");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %id, error = %e, "repair failed");
                        let wait =
                            self.backoff.get(&id).map_or(FIRST_BACKOFF, |(_, w)| (w * 2).min(MAX_BACKOFF));
                        self.backoff.insert(id, (now + wait, wait));
                        failed = Some(format!("file {id}: {e}"));
                    }
                }
            }
            let (_, held) = self.wanted(&self.node.state.files().unwrap_or_default(), now);
            let found = format!("repaired {}; {} waiting to retry", count(repaired, "file", "files"), held);
            let after = if held > 0 { WorkerState::Throttled } else { WorkerState::Idle };
            Ok(Outcome { found, after, error: failed })
        })
    }
}
