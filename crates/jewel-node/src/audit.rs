//! Audits: each holder proves its piece with a random chunk group and its bao proof,
//! verified against the piece id. The owner keeps the last audit of its own files.

use std::sync::Arc;
use std::time::Duration;

use jewel::caps::{Cap, CapError};
use jewel::manifest::Manifest;
use jewel::store::CHUNK_GROUP_SIZE;
use jewel::BlockId;
use jewel_net::wire::{Status, WireError};
use jewel_net::{BlockClient, NetError, PeerId};

use crate::api::{Audit, CheckReport, PieceReport, PieceState};
use crate::client::fanout::{fan_out, Flow, Strategy};
use crate::client::ClientError;
use crate::node::Node;
use crate::state::{StateError, Work};

/// An audit answer slower than this marks its holder late.
pub const AUDIT_LATE: Duration = Duration::from_secs(2);
/// An audit answer slower than this counts as missing.
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a file could not be audited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error(transparent)]
    Locate(#[from] ClientError),
    #[error("the manifest names a scheme this build cannot use: {0}")]
    Scheme(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Asks every holder, in parallel, to prove its piece with a random chunk group and its
/// bao proof, verified against the piece id.
pub async fn audit(blocks: &BlockClient, manifest: &Manifest, located: &[Option<PeerId>], now: u64) -> Audit {
    let Ok(scheme) = manifest.build_scheme() else { return Audit::default() };
    let probes: Vec<(usize, Option<PeerId>, BlockId, u64, u64)> = manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, piece)| {
            let size = manifest.piece_len(scheme.as_ref(), slot);
            let groups = size.div_ceil(CHUNK_GROUP_SIZE as u64).max(1);
            let mut pick = [0u8; 8];
            let _ = jewel::crypto::fill_random(&mut pick);
            (slot, located.get(slot).copied().flatten(), *piece, size, u64::from_le_bytes(pick) % groups)
        })
        .collect();
    let ask = |(_, holder, piece, size, group): (usize, Option<PeerId>, BlockId, u64, u64)| async move {
        let peer = holder?;
        let t = std::time::Instant::now();
        Some((blocks.prove(peer, piece, size, group).await, t.elapsed()))
    };
    let mut results = vec![(PieceState::Missing, 0u64); manifest.pieces.len()];
    fan_out(probes, Strategy::all(PROBES_AT_ONCE, Some(AUDIT_TIMEOUT)), ask, |(slot, ..), answer| {
        results[slot] = match answer.flatten() {
            Some((Ok(moved), took)) if took > AUDIT_LATE => (PieceState::Late, moved as u64),
            Some((Ok(moved), _)) => (PieceState::Alive, moved as u64),
            Some((Err(e), _)) => (piece_state_of(&e), 0),
            // No holder known, or none answered in time.
            None => (PieceState::Missing, 0),
        };
        Flow::Go
    })
    .await;
    Audit {
        at: now,
        bytes: results.iter().map(|r| r.1).sum(),
        states: results.into_iter().map(|r| r.0).collect(),
        bad_segments: Vec::new(),
    }
}

/// Pieces proved at once in an audit.
const PROBES_AT_ONCE: usize = 64;

/// Pieces read for a full verification at once.
const VERIFY_CONCURRENCY: usize = 4;

/// Fetches every byte of every piece from its holder, verified against the piece id as it
/// arrives (like a get, without decoding), 4 pieces at a time: `check --verify`. Each
/// piece is read segment by segment: a chunk that does not verify marks its segment bad
/// and the read goes on (rot in one place leaves the rest of the piece usable); a holder
/// that cannot be read marks the rest of its piece bad.
pub async fn verify_all(
    blocks: &BlockClient,
    manifest: &Manifest,
    located: &[Option<PeerId>],
    now: u64,
) -> Audit {
    use futures::stream::StreamExt;
    let Ok(scheme) = manifest.build_scheme() else { return Audit::default() };
    let scheme = scheme.as_ref();
    let segments = manifest.segments.len() as u32;
    let pieces: Vec<(usize, BlockId, u64, Option<PeerId>)> = manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, id)| (slot, *id, manifest.piece_len(scheme, slot), located.get(slot).copied().flatten()))
        .collect();
    let read = |(slot, id, size, holder): (usize, BlockId, u64, Option<PeerId>)| async move {
        let Some(peer) = holder else { return (slot, PieceState::Missing, 0, (0..segments).collect()) };
        let mut buf = Vec::new();
        let (mut at, mut moved, mut bad) = (0u64, 0u64, Vec::new());
        for (seg, stored) in manifest.segments.iter().enumerate() {
            let len = scheme.chunk_len(slot, *stored as usize) as u64;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(jewel_net::wire::MAX_GET);
                match blocks.get_range_into(peer, id, size, (at + done, n), &mut buf, 0).await {
                    Ok(()) => {
                        done += n;
                        moved += n;
                    }
                    Err(e) if piece_state_of(&e) == PieceState::Corrupt => {
                        tracing::info!(%peer, piece = %id, slot, segment = seg, error = %e, "verify: a segment's chunk is corrupt");
                        bad.push(seg as u32);
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%peer, piece = %id, slot, at, error = %e, "verify: piece not whole");
                        bad.extend(seg as u32..segments);
                        return (slot, PieceState::Missing, moved, bad);
                    }
                }
            }
            at += len;
        }
        let state = if bad.is_empty() { PieceState::Alive } else { PieceState::Corrupt };
        (slot, state, moved, bad)
    };
    let mut results: Vec<(usize, PieceState, u64, Vec<u32>)> =
        futures::stream::iter(pieces).map(read).buffer_unordered(VERIFY_CONCURRENCY).collect().await;
    results.sort_by_key(|r| r.0);
    Audit {
        at: now,
        bytes: results.iter().map(|r| r.2).sum(),
        states: results.iter().map(|r| r.1).collect(),
        bad_segments: results.into_iter().map(|r| r.3).collect(),
    }
}

/// Whether the file can be rebuilt from what `audit` found: piece by piece for a sampled
/// audit, segment by segment for a full verification (each segment needs enough good
/// chunks, whichever pieces they are in).
fn recoverable(scheme: &dyn jewel::codec::Scheme, audit: &Audit, segments: usize) -> bool {
    let usable: Vec<bool> = audit.states.iter().map(|s| s.usable()).collect();
    if audit.bad_segments.is_empty() {
        return scheme.can_decode(&usable);
    }
    (0..segments as u32).all(|seg| {
        let good: Vec<bool> = audit.bad_segments.iter().map(|bad| !bad.contains(&seg)).collect();
        scheme.can_decode(&good)
    })
}

/// What a failed read says about a piece: bytes that do not verify, or a holder that says
/// its copy is damaged, mean corrupt; anything else, missing.
fn piece_state_of(e: &NetError) -> PieceState {
    match e {
        NetError::Wire(WireError::Refused { status: Status::Corrupt, .. }) | NetError::Fragment { .. } => {
            PieceState::Corrupt
        }
        _ => PieceState::Missing,
    }
}

/// A file's audit as the API reports it.
pub fn check_report(
    manifest: &Manifest,
    located: &[Option<PeerId>],
    audit: &Audit,
    lease_missing: Vec<usize>,
) -> Result<CheckReport, AuditError> {
    let scheme = manifest.build_scheme().map_err(|e| AuditError::Scheme(e.to_string()))?;
    let pieces = manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, piece)| PieceReport {
            slot,
            piece: piece.to_string(),
            holder: located.get(slot).copied().flatten().map(|p| p.to_string()),
            state: audit.states.get(slot).copied().unwrap_or(PieceState::Missing),
        })
        .collect();
    let usable: Vec<bool> = audit.states.iter().map(|s| s.usable()).collect();
    Ok(CheckReport {
        pieces,
        scheme: manifest.scheme.to_string(),
        n: scheme.slots(),
        d: scheme.redundancy(),
        m: scheme.min_peers(),
        alive: usable.iter().filter(|a| **a).count(),
        recoverable: recoverable(scheme.as_ref(), audit, manifest.segments.len()),
        audit_bytes: audit.bytes,
        audited_at: audit.at,
        verified: false,
        lease_missing,
    })
}

/// Slots whose pieces are not usable in `audit`.
pub fn lost_slots(audit: &Audit) -> Vec<usize> {
    audit.states.iter().enumerate().filter(|(_, st)| !st.usable()).map(|(slot, _)| slot).collect()
}

impl Node {
    /// Audits a file (any cap): a sampled proof of each piece, or with `full` every byte.
    /// For this node's own files the result is recorded; pieces a full verification found
    /// corrupt stay recorded as such until a repair replaces them, and are reported corrupt
    /// whatever a later sample says.
    pub async fn audit_file(
        &self,
        id: BlockId,
        full: bool,
    ) -> Result<(Manifest, Vec<Option<PeerId>>, Audit), AuditError> {
        let (manifest, located) = self.locate(id).await?;
        let now = self.clock.now();
        let mut result = match full {
            true => verify_all(&self.blocks, &manifest, &located, now).await,
            false => audit(&self.blocks, &manifest, &located, now).await,
        };
        let recorded = result.clone();
        let known_corrupt = self
            .state
            .update_file(&id.to_string(), move |r| {
                if full {
                    r.corrupt = (0..recorded.states.len())
                        .filter(|s| recorded.states[*s] == PieceState::Corrupt)
                        .collect();
                }
                r.audit = Some(recorded.clone());
                r.corrupt.clone()
            })
            .await?;
        let own = known_corrupt.is_some();
        for slot in known_corrupt.unwrap_or_default() {
            if let Some(state) = result.states.get_mut(slot) {
                *state = PieceState::Corrupt;
            }
        }
        // This node's own file: its next audit counts from now, and a file that lost more
        // than its margin allows is queued for repair (keeping its place if it waits out a
        // backoff).
        if own {
            let file = id.to_string();
            self.state.schedule(Work::Audit, &file, now, 0).await?;
            if self.needs_repair(&manifest, lost_slots(&result).len()) {
                self.state.schedule_absent(Work::Repair, &file, now).await?;
            }
        }
        Ok((manifest, located, result))
    }

    /// `jewel check [--verify]`: audits a file now and reports each piece.
    pub async fn check(self: &Arc<Self>, cap: &str, verify: bool) -> Result<CheckReport, AuditError> {
        let id = Cap::parse(cap)?.manifest();
        // A full verification moves every byte: it takes a transfer's turn.
        let _turn = match verify {
            true => Some(
                self.transfers.acquire().await.map_err(|_| AuditError::Locate(ClientError::Interrupted))?,
            ),
            false => None,
        };
        let (manifest, located, audit) = self.audit_file(id, verify).await?;
        let missing = self.state.file(&id.to_string())?.map(|r| r.lease_missing).unwrap_or_default();
        let mut report = check_report(&manifest, &located, &audit, missing)?;
        report.verified = verify;
        Ok(report)
    }
}
