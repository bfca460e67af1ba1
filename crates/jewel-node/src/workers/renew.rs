//! Lease renewal: renews the leases on each of this node's files once half of the lease
//! has run, so holders keep the pieces while the owner is alive.

use std::sync::Arc;

use jewel::BlockId;

use super::{count, Outcome, Run, Worker, WorkerError};
use crate::api::FileRecord;
use crate::node::Node;

/// Whether a file's leases (each `lease_secs` long, last renewed at `record.leased_at`)
/// should be renewed at `now`: once half of the lease has run.
pub fn renewal_due(record: &FileRecord, lease_secs: u64, now: u64) -> bool {
    record.leased_at.saturating_add(lease_secs / 2) <= now
}

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

    /// Often enough that no lease runs past three quarters before it is renewed.
    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        last.unwrap_or(now) + (self.lease_secs() / 4).max(1)
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        Box::pin(async move {
            let files = self.node.state.files().map_err(|e| WorkerError::Failed(e.to_string()))?;
            let due: Vec<BlockId> = files
                .iter()
                .filter(|(_, r)| renewal_due(r, self.lease_secs(), now))
                .filter_map(|(id, _)| id.parse().ok())
                .collect();
            let (mut renewed, mut gone, mut failed) = (0, 0, None);
            for id in &due {
                match self.node.renew(*id, now).await {
                    Ok(missing) => {
                        renewed += 1;
                        gone += missing.len();
                    }
                    Err(e) => failed = Some(format!("file {id}: {e}")),
                }
            }
            Ok(Outcome::idle(format!(
                "renewed {} of {}; {} no longer held",
                count(renewed, "file", "files"),
                files.len(),
                count(gone, "piece", "pieces")
            ))
            .failed(failed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_once_half_of_it_has_run() {
        let mut r = FileRecord {
            name: "f".into(),
            cap: None,
            scheme: "hosting".into(),
            size: 1,
            holders: vec![],
            audit: None,
            lease_missing: vec![],
            leased_at: 1_000,
            corrupt: vec![],
            indexed: false,
        };
        assert!(!renewal_due(&r, 100, 1_049));
        assert!(renewal_due(&r, 100, 1_050));
        r.leased_at = 1_050;
        assert!(!renewal_due(&r, 100, 1_099));
    }
}
