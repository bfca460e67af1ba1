//! Leases on this node's files: taken at put, renewed before they run out, dropped at rm.

use jewel::BlockId;
use jewel_net::{BlockClient, PeerId};

use crate::api::PendingRelease;
use crate::client::ClientError;
use crate::node::Node;
use crate::state::StateError;

/// Why a file's leases could not be renewed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    #[error(transparent)]
    Locate(#[from] ClientError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Leases (or, with 0 seconds, releases) each holder's piece and the manifest for `file`.
/// Returns the slots whose holder answered that it does not have its piece: a renewal for
/// a block that is gone is reported, not ignored. Holders that cannot be reached are left
/// to the audit.
pub async fn lease_file(
    blocks: &BlockClient,
    file: BlockId,
    pieces: &[BlockId],
    holders: &[Option<PeerId>],
    seconds: u32,
) -> Vec<usize> {
    let asks = pieces.iter().zip(holders).enumerate().filter_map(|(slot, (piece, holder))| {
        let peer = (*holder)?;
        Some(async move { (slot, blocks.lease(peer, file, seconds, &[*piece, file]).await) })
    });
    let mut missing = Vec::new();
    for (slot, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(held) if held.first() == Some(&false) => {
                tracing::warn!(%file, slot, "a holder no longer has its piece (lease renewal)");
                missing.push(slot);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%file, slot, error = %e, "lease request failed"),
        }
    }
    missing
}

/// Releases a file on each of its holders (a lease of 0 seconds for its piece and the
/// manifest): they delete what no other lease keeps. Returns, for each holder that did not
/// answer, the release it still owes.
pub async fn release_file(
    blocks: &BlockClient,
    file: BlockId,
    pieces: &[BlockId],
    holders: &[Option<PeerId>],
    until: u64,
) -> Vec<PendingRelease> {
    let asks = pieces.iter().zip(holders).filter_map(|(piece, holder)| {
        let peer = (*holder)?;
        Some(async move { (peer, *piece, blocks.lease(peer, file, 0, &[*piece, file]).await) })
    });
    let mut owed: Vec<PendingRelease> = Vec::new();
    for (peer, piece, answer) in futures::future::join_all(asks).await {
        if let Err(e) = answer {
            tracing::info!(%file, %peer, error = %e, "a holder did not take the release; it will be asked again");
            let holder = peer.to_string();
            match owed.iter_mut().find(|p| p.holder == holder) {
                Some(p) => p.blocks.push(piece.to_string()),
                None => owed.push(PendingRelease {
                    file: file.to_string(),
                    holder,
                    blocks: vec![piece.to_string(), file.to_string()],
                    until,
                }),
            }
        }
    }
    owed
}

impl Node {
    /// Renews the leases of one of this node's files and records when, and what holders
    /// reported. Returns the slots whose holder no longer has its piece.
    pub async fn renew(&self, id: BlockId, now: u64) -> Result<Vec<usize>, RenewError> {
        let (manifest, located) = self.locate(id).await?;
        let missing = lease_file(&self.blocks, id, &manifest.pieces, &located, self.lease_secs).await;
        let recorded = missing.clone();
        self.state
            .update_file(&id.to_string(), move |r| {
                r.lease_missing = recorded.clone();
                r.leased_at = now;
            })
            .await?;
        Ok(missing)
    }
}
