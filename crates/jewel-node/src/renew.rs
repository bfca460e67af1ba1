//! Leases on this node's files: taken at put, renewed before they run out, dropped at rm.

use jewel::BlockId;
use jewel_net::{BlockClient, PeerId};

use crate::api::PendingRelease;
use crate::client::fanout::{fan_out, Flow, Strategy};
use crate::client::ClientError;

/// Holders asked at once for one file's leases (a file has at most this many pieces in
/// practice; more wait their turn).
const MAX_ASKS: usize = 64;
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
    let asks: Vec<(usize, PeerId, BlockId)> = pieces
        .iter()
        .zip(holders)
        .enumerate()
        .filter_map(|(slot, (piece, holder))| Some((slot, (*holder)?, *piece)))
        .collect();
    let mut missing = Vec::new();
    let ask = |(_, peer, piece): (usize, PeerId, BlockId)| async move {
        blocks.lease(peer, file, seconds, &[piece, file]).await
    };
    fan_out(asks, Strategy::all(MAX_ASKS, None), ask, |(slot, _, _), answer| {
        match answer {
            Some(Ok(held)) if held.first() == Some(&false) => {
                tracing::warn!(%file, slot, "a holder no longer has its piece (lease renewal)");
                missing.push(slot);
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => tracing::debug!(%file, slot, error = %e, "lease request failed"),
        }
        Flow::Go
    })
    .await;
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
    let asks: Vec<(PeerId, BlockId)> =
        pieces.iter().zip(holders).filter_map(|(piece, holder)| Some(((*holder)?, *piece))).collect();
    let mut owed: Vec<PendingRelease> = Vec::new();
    let ask =
        |(peer, piece): (PeerId, BlockId)| async move { blocks.lease(peer, file, 0, &[piece, file]).await };
    fan_out(asks, Strategy::all(MAX_ASKS, None), ask, |(peer, piece), answer| {
        if let Some(Err(e)) = answer {
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
        Flow::Go
    })
    .await;
    owed
}

impl Node {
    /// Renews the leases of one of this node's files and records when, and what holders
    /// reported, with the next renewal queued, in one commit. Returns the slots whose
    /// holder no longer has its piece.
    pub async fn renew(&self, id: BlockId, now: u64) -> Result<Vec<usize>, RenewError> {
        let (manifest, located) = self.locate(id).await?;
        let missing = lease_file(&self.blocks, id, &manifest.pieces, &located, self.lease_secs).await;
        self.state.record_renewal(&id.to_string(), now, missing.clone()).await?;
        Ok(missing)
    }
}
