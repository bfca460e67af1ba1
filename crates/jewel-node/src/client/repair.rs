//! Rebuilding lost pieces onto new peers.

use std::sync::Arc;

use jewel::manifest::Manifest;
use jewel::pipeline::{self, PipelineError};
use jewel::policy::PolicyError;
use jewel_net::{BlockClient, PeerId};

use super::put::{send_manifest, uploaded};
use super::{ClientError, NetFetch};
use crate::bridge::Bridge;

/// What a repair did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Repaired {
    /// The slots rebuilt, and the peer that now holds each.
    pub slots: Vec<usize>,
    pub holders: Vec<String>,
    /// Verified bytes read from the surviving pieces.
    pub bytes_read: u64,
    /// Bytes of rebuilt pieces written (plus the manifest copies sent to new holders).
    pub bytes_written: u64,
    /// Bytes of the pieces that were lost.
    pub bytes_lost: u64,
}

/// Rebuilds the pieces of `missing` slots from the other holders (`holders[i]` for slot
/// i; missing slots are never read) and streams each to its peer in `targets`, which also
/// gets the manifest. Every rebuilt piece is checked to have its manifest id. Stopping
/// half-way leaves the file as it was: the old placement stays valid until the caller
/// records the new one.
pub async fn repair_slots(
    blocks: &BlockClient,
    manifest: &Manifest,
    holders: &[Option<PeerId>],
    missing: &[usize],
    targets: &[PeerId],
    threads: usize,
) -> Result<Repaired, ClientError> {
    let mut sources = holders.to_vec();
    for slot in missing {
        if let Some(s) = sources.get_mut(*slot) {
            *s = None;
        }
    }
    rebuild_slots(blocks, manifest, &sources, missing, targets, threads).await
}

/// Like [`repair_slots`], reading from every holder in `sources`, those of the slots being
/// rebuilt included: a piece that is damaged in places (a chunk that rotted) still gives
/// its good chunks, each verified against its id, so pieces damaged in different segments
/// can all be rebuilt from each other.
pub async fn rebuild_slots(
    blocks: &BlockClient,
    manifest: &Manifest,
    sources: &[Option<PeerId>],
    missing: &[usize],
    targets: &[PeerId],
    threads: usize,
) -> Result<Repaired, ClientError> {
    let scheme = manifest.build_scheme().map_err(PipelineError::from)?;
    if targets.len() < missing.len() {
        return Err(PolicyError::NotEnoughPeers { needed: missing.len(), found: targets.len() }.into());
    }
    let targets = targets[..missing.len()].to_vec();
    let mut sources = sources.to_vec();
    sources.resize(scheme.slots(), None);
    let fetch = Arc::new(NetFetch::new(blocks.clone(), manifest, &sources)?);
    let sizes: Vec<u64> = missing.iter().map(|s| manifest.piece_len(scheme.as_ref(), *s)).collect();
    let (client, m, lost, to, f, max) =
        (blocks.clone(), manifest.clone(), missing.to_vec(), targets.clone(), fetch.clone(), sizes.clone());
    let (ids, outcomes) = Bridge::run(move |bridge| {
        let (sinks, outcomes) = bridge.sinks(&client, &to, &max, false);
        (pipeline::rebuild(&m, &bridge.fetch(&f), &lost, sinks, threads), outcomes)
    })
    .await?;
    let ids = ids?;
    uploaded(&outcomes, missing, &targets)?;
    for (slot, id) in missing.iter().zip(&ids) {
        if manifest.pieces.get(*slot) != Some(id) {
            return Err(ClientError::RebuildMismatch { slot: *slot });
        }
    }
    let manifest_bytes = manifest.encode();
    send_manifest(blocks, &manifest_bytes, missing, &targets).await?;
    let lost: u64 = sizes.iter().sum();
    let (read, _) = fetch.report();
    Ok(Repaired {
        slots: missing.to_vec(),
        holders: targets.iter().map(|p| p.to_string()).collect(),
        bytes_read: read.iter().sum(),
        bytes_written: lost + (manifest_bytes.len() * targets.len()) as u64,
        bytes_lost: lost,
    })
}
