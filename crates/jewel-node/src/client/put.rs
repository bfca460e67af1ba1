//! A network put: pieces stream to their peers as the pipeline makes them.

use jewel::sync::Locked;
use std::io::Read;

use jewel::manifest::SEGMENT_OVERHEAD;
use jewel::pipeline::{self, PipelineError, Put, PutOptions};
use jewel::policy::PolicyError;
use jewel::BlockId;
use jewel_net::{BlockClient, NetError, PeerId};

use super::fanout::{fan_out, Flow, Strategy};
use super::{repair_slots, ClientError};
use crate::bridge::{Bridge, Outcome};

/// What a network put produced.
#[derive(Debug)]
pub struct Placed {
    pub put: Put,
    /// The peer holding each slot's piece.
    pub holders: Vec<PeerId>,
}

/// What a put learned of its peers, whether it succeeded or not.
#[derive(Debug, Default)]
pub struct Noted {
    /// Peers that took a piece and could not prove it (a put that failed for them is
    /// worth trying again without them).
    pub liars: Vec<PeerId>,
    /// Peers that refused a piece for want of room.
    pub full: Vec<PeerId>,
}

/// Whether a failed proof of a piece just uploaded shows its holder lying (it said it
/// stored the piece, and has not), rather than being slow or gone.
fn is_lie(e: &NetError) -> bool {
    use jewel_net::wire::{Status, WireError};
    matches!(
        e,
        NetError::Fragment { .. }
            | NetError::Wire(WireError::Refused { status: Status::NotFound | Status::Corrupt, .. })
    )
}

/// Whether `e` is a holder saying it has no room (its store, or this peer's share of it).
pub fn is_full(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Wire(jewel_net::wire::WireError::Refused { status: jewel_net::wire::Status::Full, .. })
    )
}

/// Whether a failed placement was a holder saying it has no room.
fn refused_full(e: &ClientError) -> bool {
    match e {
        ClientError::Upload { source, .. } | ClientError::Net(source) => is_full(source),
        _ => false,
    }
}

/// The most bytes each slot's piece can have for a file of `file_len` bytes: every
/// segment stored uncompressed, plus its flag and tag.
fn max_piece_lens(scheme: &dyn jewel::codec::Scheme, file_len: u64, segment_size: u32) -> Vec<u64> {
    let segments = jewel::manifest::Manifest::segment_count(file_len, segment_size);
    let full = segment_size as usize + SEGMENT_OVERHEAD;
    let last = (file_len - (segments - 1) * u64::from(segment_size)) as usize + SEGMENT_OVERHEAD;
    (0..scheme.slots())
        .map(|slot| {
            (segments - 1) * scheme.chunk_len(slot, full) as u64 + scheme.chunk_len(slot, last) as u64
        })
        .collect()
}

/// Encrypts and encodes `input` (of `size` bytes), streaming slot i's piece straight to
/// `peers[i]` as it is made (nothing is staged on disk), then has every holder prove its
/// piece (a random chunk group with its proof, checked against the piece id) and sends
/// the manifest to every holder. A piece whose peer vanished, refused or stalled mid-put,
/// or that its holder cannot prove (a peer that took the bytes and dropped them), is
/// rebuilt from the others and placed on the next of `peers` (those after the first n
/// are spares, in the order that keeps the spread), and proved there too; if that is
/// impossible the put fails with the slot's error and reports nothing as stored. (Pieces
/// already sent keep only their first, short lease and are collected.)
pub async fn put_file(
    blocks: &BlockClient,
    input: Box<dyn Read + Send>,
    size: u64,
    opts: &PutOptions,
    peers: &[PeerId],
) -> Result<Placed, ClientError> {
    put_file_noting(blocks, input, size, opts, peers, &mut Noted::default()).await
}

/// [`put_file`], adding to `noted` the peers that took a piece and could not prove it,
/// and those that refused one as full, whether the put succeeds or not.
pub async fn put_file_noting(
    blocks: &BlockClient,
    mut input: Box<dyn Read + Send>,
    size: u64,
    opts: &PutOptions,
    peers: &[PeerId],
    noted: &mut Noted,
) -> Result<Placed, ClientError> {
    let scheme = jewel::codec::build(&opts.scheme).map_err(PipelineError::from)?;
    let slots = scheme.slots();
    if peers.len() < slots {
        return Err(PolicyError::NotEnoughPeers { needed: slots, found: peers.len() }.into());
    }
    let mut holders: Vec<PeerId> = peers[..slots].to_vec();
    let max = max_piece_lens(scheme.as_ref(), size, opts.segment_size);
    let (client, targets, options) = (blocks.clone(), holders.clone(), opts.clone());
    // A holder frozen a moment ago (not yet found silent) is given up on after a short
    // wait, if a spare can take its piece.
    let give_up = peers.len() > slots;
    let (put, outcomes) = Bridge::run(move |bridge| {
        let (sinks, outcomes) = bridge.sinks(&client, &targets, &max, give_up);
        (pipeline::put(&mut *input, &options, sinks), outcomes)
    })
    .await?;
    let put = put?;
    let mut failed: Vec<(usize, NetError)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(slot, o)| match o.locked().take() {
            Some(Err(e)) => Some((slot, e)),
            _ => None,
        })
        .collect();
    let uploaded: Vec<usize> = (0..slots).filter(|s| failed.iter().all(|(f, _)| f != s)).collect();
    let unproven = unproved(blocks, &put.manifest, &uploaded, &holders).await;
    noted.liars.extend(unproven.iter().filter(|(_, e)| is_lie(e)).map(|(s, _)| holders[*s]));
    failed.extend(unproven);
    failed.sort_by_key(|(s, _)| *s);
    let good: Vec<usize> = (0..slots).filter(|s| failed.iter().all(|(f, _)| f != s)).collect();
    let good_peers: Vec<PeerId> = good.iter().map(|s| holders[*s]).collect();
    send_manifest(blocks, &put.manifest_bytes, &good, &good_peers).await?;
    noted.full.extend(failed.iter().filter(|(_, e)| is_full(e)).map(|(s, _)| holders[*s]));
    let mut lost: Vec<usize> = failed.iter().map(|(s, _)| *s).collect();
    let Some((slot, first)) = failed.into_iter().next() else {
        return Ok(Placed { put, holders });
    };
    tracing::warn!(slots = ?lost, error = %first, "pieces lost mid-put; placing them on spare peers");
    let refused = if is_lie(&first) {
        ClientError::Unproven { slot, peer: holders[slot], source: Box::new(first) }
    } else {
        ClientError::Upload { slot, peer: holders[slot], source: Box::new(first) }
    };
    let mut spares = peers[slots..].iter().copied();
    // Each lost piece goes to the next spare on its own: a spare that refuses (full, gone)
    // or lies costs that piece one more try, not the others'. If the spares run out, the
    // first upload's error says why (not the spares').
    while let Some(&slot) = lost.first() {
        let Some(target) = spares.next() else {
            tracing::warn!(needed = lost.len(), "not enough spare peers");
            break;
        };
        let sources: Vec<Option<PeerId>> =
            (0..slots).map(|s| (!lost.contains(&s)).then_some(holders[s])).collect();
        match repair_slots(blocks, &put.manifest, &sources, &[slot], &[target], opts.threads).await {
            Err(e) => {
                tracing::warn!(slot, peer = %target, error = %e, "placing a lost piece on a spare failed");
                if refused_full(&e) {
                    noted.full.push(target);
                }
            }
            Ok(_) => {
                // Until another spare takes it, the slot names this one: a put that fails
                // releases what it may hold.
                holders[slot] = target;
                match unproved(blocks, &put.manifest, &[slot], &holders).await.pop() {
                    None => {
                        lost.remove(0);
                    }
                    Some((_, e)) => {
                        tracing::warn!(slot, peer = %target, error = %e, "a spare could not prove its piece");
                        if is_lie(&e) {
                            noted.liars.push(target);
                        }
                    }
                }
            }
        }
    }
    if lost.is_empty() {
        return Ok(Placed { put, holders });
    }
    // Nothing is reported stored: what was stored is released now, not left to take the
    // holders' room (and this owner's share of it) until its first lease runs out.
    let placed: Vec<Option<PeerId>> = holders.iter().copied().map(Some).collect();
    crate::renew::release_file(blocks, put.cap.manifest, &put.manifest.pieces, &placed, 0).await;
    Err(refused)
}

/// How long a new holder has to prove its piece: as long as an audit gives (a frozen
/// holder fails at once, see `jewel_net::liveness`; a slow uplink takes seconds).
const PROOF_TIMEOUT: std::time::Duration = crate::audit::AUDIT_TIMEOUT;
/// Proofs asked at once after a put (one per piece).
const PROBES_AT_ONCE: usize = 64;
/// Holders sent the manifest at once.
const MANIFESTS_AT_ONCE: usize = 8;

/// Asks the holders of `slots` (in `holders`) to prove their pieces, in parallel, each
/// with a random chunk group; the slots whose holder could not, with why.
async fn unproved(
    blocks: &BlockClient,
    manifest: &jewel::manifest::Manifest,
    slots: &[usize],
    holders: &[PeerId],
) -> Vec<(usize, NetError)> {
    let Ok(scheme) = manifest.build_scheme() else { return Vec::new() };
    let probes: Vec<(usize, PeerId, BlockId, u64, u64)> = slots
        .iter()
        .filter_map(|&slot| {
            let (peer, piece) = (*holders.get(slot)?, *manifest.pieces.get(slot)?);
            let size = manifest.piece_len(scheme.as_ref(), slot);
            let groups = size.div_ceil(jewel::store::CHUNK_GROUP_SIZE as u64).max(1);
            let mut pick = [0u8; 8];
            let _ = jewel::crypto::fill_random(&mut pick);
            Some((slot, peer, piece, size, u64::from_le_bytes(pick) % groups))
        })
        .collect();
    let ask = |(_, peer, piece, size, group): (usize, PeerId, BlockId, u64, u64)| {
        blocks.prove(peer, piece, size, group)
    };
    let mut failed = Vec::new();
    fan_out(probes, Strategy::all(PROBES_AT_ONCE, Some(PROOF_TIMEOUT)), ask, |(slot, peer, ..), proved| {
        match proved {
            Some(Ok(_)) => {}
            Some(Err(e)) => failed.push((slot, e)),
            None => failed.push((slot, NetError::Unresponsive { peer, waited: PROOF_TIMEOUT })),
        }
        Flow::Go
    })
    .await;
    failed
}

/// The first failed upload among `outcomes` (for `slots[i]` on `peers[i]`), as an error.
pub(super) fn uploaded(outcomes: &[Outcome], slots: &[usize], peers: &[PeerId]) -> Result<(), ClientError> {
    for ((outcome, slot), peer) in outcomes.iter().zip(slots).zip(peers) {
        let result = outcome.locked().take();
        if let Some(Err(e)) = result {
            return Err(ClientError::Upload { slot: *slot, peer: *peer, source: Box::new(e) });
        }
    }
    Ok(())
}

/// Sends the manifest to every one of `peers` (holders of `slots`), a few at a time.
pub(super) async fn send_manifest(
    blocks: &BlockClient,
    manifest_bytes: &[u8],
    slots: &[usize],
    peers: &[PeerId],
) -> Result<(), ClientError> {
    let id = BlockId::of(manifest_bytes);
    let pairs: Vec<(usize, PeerId)> = slots.iter().copied().zip(peers.iter().copied()).collect();
    let upload = |(_, peer): (usize, PeerId)| blocks.put_block(peer, id, manifest_bytes);
    // Every holder must take it: the first refusal ends the put's wait for the others.
    let mut failed = None;
    fan_out(pairs, Strategy::all(MANIFESTS_AT_ONCE, None), upload, |(slot, peer), sent| match sent {
        Some(Err(e)) => {
            failed = Some(ClientError::Upload { slot, peer, source: Box::new(e) });
            Flow::Stop
        }
        _ => Flow::Go,
    })
    .await;
    failed.map_or(Ok(()), Err)
}
