//! Repair of a file: audit every piece, rebuild those not usable onto new distinct peers
//! (not the file's current holders, not this node), lease them, then record the new
//! placement, only once every rebuilt piece is in place and matches its id.

use jewel::sync::Locked;
use std::collections::HashSet;
use std::sync::Arc;

use jewel::caps::{Cap, CapError};
use jewel::policy::{self, PolicyError};
use jewel::BlockId;
use jewel_net::{NetError, PeerId};

use crate::api::{PieceState, RepairResponse, Repaired};
use crate::audit::{check_report, lost_slots, AuditError};
use crate::client::{self, ClientError};
use crate::node::Node;
use crate::state::StateError;

/// Why a repair did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error("file {0} is being repaired already")]
    Busy(BlockId),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("no new peers for the lost pieces: {0}")]
    Placement(#[from] PolicyError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Rebuild(#[from] ClientError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Rounds of new holders a repair tries before it gives up.
const REPAIR_ROUNDS: usize = 3;

/// At most one repair per file at a time.
struct RepairGuard<'a> {
    node: &'a Node,
    id: BlockId,
}

impl<'a> RepairGuard<'a> {
    fn take(node: &'a Node, id: BlockId) -> Option<RepairGuard<'a>> {
        let mut busy = node.repairing.locked();
        busy.insert(id).then_some(RepairGuard { node, id })
    }
}

impl Drop for RepairGuard<'_> {
    fn drop(&mut self) {
        self.node.repairing.locked().remove(&self.id);
    }
}

impl Node {
    /// `jewel repair`.
    pub async fn repair(self: &Arc<Self>, cap: &str) -> Result<RepairResponse, RepairError> {
        self.repair_file(Cap::parse(cap)?.manifest()).await
    }

    /// Audits a file and rebuilds every piece that is not usable onto new distinct peers,
    /// then records the new placement.
    pub async fn repair_file(&self, id: BlockId) -> Result<RepairResponse, RepairError> {
        let _guard = RepairGuard::take(self, id).ok_or(RepairError::Busy(id))?;
        // Reads find the file's holders again, not the ones before the repair.
        self.located.locked().remove(&id);
        let _turn =
            self.transfers.acquire().await.map_err(|_| RepairError::Rebuild(ClientError::Interrupted))?;
        let (manifest, located, before) = self.audit_file(id, false).await?;
        let lost = lost_slots(&before);
        let lease_missing = || -> Result<Vec<usize>, StateError> {
            Ok(self.state.file(&id.to_string())?.map(|r| r.lease_missing).unwrap_or_default())
        };
        if lost.is_empty() {
            let check = check_report(&manifest, &located, &before, lease_missing()?)?;
            return Ok(RepairResponse { repaired: Repaired::default(), check });
        }
        let mut taken: HashSet<PeerId> = located.iter().flatten().copied().collect();
        taken.insert(self.blocks.net().peer_id());
        let mut candidates = self.candidates(&taken, 0, 0).await?;
        // Damaged pieces still give their good chunks (each verified); only pieces out of
        // reach are not read.
        let sources: Vec<Option<PeerId>> = located
            .iter()
            .enumerate()
            .map(|(slot, h)| {
                let out_of_reach =
                    lost.contains(&slot) && before.states.get(slot) != Some(&PieceState::Corrupt);
                if out_of_reach {
                    None
                } else {
                    *h
                }
            })
            .collect();
        // A new holder that fails (gone, frozen, full) is passed over and the repair tried
        // again with the next candidates, a few times.
        let mut round = 0;
        let (repaired, targets) = loop {
            round += 1;
            let targets = match policy::place(lost.len(), &candidates) {
                Ok(t) => t,
                // Not enough fresh peers: a piece goes back to its own holder if that holder
                // answers (it checks the rebuilt bytes against the block id and replaces
                // its rotten copy, or stores the one it lost).
                Err(e) => {
                    let answering = self.answering().await;
                    back_to_holders(&lost, &before.states, &located, &answering, &candidates).ok_or(e)?
                }
            };
            match client::rebuild_slots(
                &self.blocks,
                &manifest,
                &sources,
                &lost,
                &targets,
                client::GET_THREADS,
            )
            .await
            {
                Ok(r) => break (r, targets),
                Err(ClientError::Upload { peer, source, .. }) if round < REPAIR_ROUNDS => {
                    tracing::warn!(file = %id, %peer, error = %source, "a new holder failed; trying another");
                    candidates.retain(|c| c.peer != peer);
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut now = located.clone();
        for (slot, peer) in lost.iter().zip(&targets) {
            now[*slot] = Some(*peer);
        }
        let fresh: Vec<Option<PeerId>> =
            (0..now.len()).map(|slot| if lost.contains(&slot) { now[slot] } else { None }).collect();
        crate::renew::lease_file(&self.blocks, id, &manifest.pieces, &fresh, self.lease_secs).await;
        // Any peer finds the new pieces by the time the repair returns.
        client::publish_holders(&self.blocks, id, &manifest, &now).await?;
        let holders: Vec<String> = now.iter().map(|p| p.map(|p| p.to_string()).unwrap_or_default()).collect();
        let replaced = lost.clone();
        self.state
            .update_file(&id.to_string(), move |r| {
                r.holders = holders.clone();
                r.corrupt.retain(|s| !replaced.contains(s));
            })
            .await?;
        let (manifest, located, after) = self.audit_file(id, false).await?;
        let check = check_report(&manifest, &located, &after, lease_missing()?)?;
        Ok(RepairResponse { repaired, check })
    }
}

impl Node {
    /// The peers connected now that answer (not silent).
    async fn answering(&self) -> HashSet<PeerId> {
        let peers = self.blocks.net().peers().await.unwrap_or_default();
        peers.iter().filter(|p| p.connected && !p.silent).filter_map(|p| p.peer.parse().ok()).collect()
    }
}

/// Where each of `lost`'s pieces goes when fresh peers are too few for all of them: back
/// to its own holder if that holder answered with rotten bytes (`Corrupt`), or lost it
/// (`Missing`: a scrub dropped it, a disk was replaced) but is `answering`; the others to
/// fresh `candidates`. `None` if even those are too few, or no piece can go back.
fn back_to_holders(
    lost: &[usize],
    states: &[PieceState],
    located: &[Option<PeerId>],
    answering: &HashSet<PeerId>,
    candidates: &[policy::Candidate<PeerId>],
) -> Option<Vec<PeerId>> {
    let own = |slot: usize| {
        let holder = located.get(slot).copied().flatten()?;
        match states.get(slot) {
            Some(PieceState::Corrupt) => Some(holder),
            Some(PieceState::Missing) if answering.contains(&holder) => Some(holder),
            _ => None,
        }
    };
    let fresh_needed = lost.iter().filter(|s| own(**s).is_none()).count();
    if fresh_needed == lost.len() {
        return None;
    }
    let mut fresh = policy::place(fresh_needed, candidates).ok()?.into_iter();
    lost.iter().map(|s| own(*s).or_else(|| fresh.next())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(peer: PeerId) -> policy::Candidate<PeerId> {
        policy::Candidate { peer, zone: None, site: None, new: false }
    }

    /// With no fresh peer, rotten pieces go back to their holders, and so does a missing
    /// one whose holder answers; a missing piece whose holder does not answer needs a fresh
    /// peer, and without one nothing is placed.
    #[test]
    fn pieces_go_back_to_their_holders_when_fresh_peers_are_too_few() {
        let holders: Vec<Option<PeerId>> = (0..5).map(|_| Some(PeerId::random())).collect();
        let none = HashSet::new();
        let mut states = vec![PieceState::Alive; 5];
        states[1] = PieceState::Corrupt;
        states[3] = PieceState::Corrupt;
        let got = back_to_holders(&[1, 3], &states, &holders, &none, &[]).unwrap();
        assert_eq!(got, vec![holders[1].unwrap(), holders[3].unwrap()]);
        states[4] = PieceState::Missing;
        assert_eq!(
            back_to_holders(&[1, 3, 4], &states, &holders, &none, &[]),
            None,
            "a missing piece whose holder is gone needs a fresh peer"
        );
        let spare = PeerId::random();
        let got = back_to_holders(&[1, 3, 4], &states, &holders, &none, &[candidate(spare)]).unwrap();
        assert_eq!(got, vec![holders[1].unwrap(), holders[3].unwrap(), spare]);
        let answering: HashSet<PeerId> = [holders[4].unwrap()].into();
        let got = back_to_holders(&[1, 3, 4], &states, &holders, &answering, &[]).unwrap();
        assert_eq!(got[2], holders[4].unwrap(), "its holder answers: it takes the piece again");
        states[0] = PieceState::Missing;
        assert_eq!(back_to_holders(&[0], &states, &holders, &none, &[]), None, "nothing can go back");
    }
}
