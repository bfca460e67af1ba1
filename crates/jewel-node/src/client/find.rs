//! Finding a file from any peer: its manifest and the holder of every piece, from the
//! holders record the owner published when it put the file (one DHT query), else from the
//! holders' provider records; looked for again with backoff, for [`LOOKUP_FOR`] at most.

use std::time::{Duration, Instant};

use jewel::manifest::Manifest;
use jewel::store::BlockStore;
use jewel::BlockId;
use jewel_net::{BlockClient, Holder, HoldersRecord, Multiaddr, NetError, PeerId};

use super::fanout::{fan_out, Flow, Strategy};
use super::{fetch_manifest, ClientError};

/// How long a get looks for a file it cannot find before it gives up: a put returns only
/// once the file can be found, so this covers a DHT that is slow to answer, not a wait for
/// the put's announcements.
pub const LOOKUP_FOR: Duration = Duration::from_secs(10);
/// One DHT query may take this long before it counts as finding nothing.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The first pause between lookups; it doubles each time.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// What the lookups saw, for the error that ends them.
#[derive(Debug, Default, Clone, Copy)]
struct Looked {
    records: usize,
    providers: usize,
}

async fn within<T>(f: impl std::future::Future<Output = Result<T, NetError>>) -> Option<T> {
    tokio::time::timeout(QUERY_TIMEOUT, f).await.ok().and_then(Result::ok)
}

/// The file `id`'s manifest and the holder of each of its pieces (`None` where no holder
/// was found), looked up in the DHT. A manifest in `local` (this node's own store) is read
/// from there.
pub async fn find_file(
    blocks: &BlockClient,
    id: BlockId,
    local: Option<&dyn BlockStore>,
) -> Result<(Manifest, Vec<Option<PeerId>>), ClientError> {
    let start = Instant::now();
    let mine = local.and_then(|store| store.get(&id).ok()).and_then(|bytes| Manifest::decode(&bytes).ok());
    let mut pause = FIRST_PAUSE;
    let mut looked = Looked::default();
    loop {
        let record = within(blocks.net().find_holders(id)).await.flatten();
        tracing::debug!(file = %id, took = ?start.elapsed(), found = record.is_some(), "holders record lookup");
        let mut peers: Vec<PeerId> = Vec::new();
        if let Some(r) = &record {
            looked.records += 1;
            for h in &r.holders {
                if !peers.contains(&h.peer) {
                    peers.push(h.peer);
                }
            }
        }
        // A record is used only once a peer it names served the manifest: a forged one
        // (naming peers that do not exist, or that hold nothing) costs this one try.
        let from_record = match peers.is_empty() {
            true => None,
            false => fetch_manifest(blocks, id, &peers)
                .await
                .inspect_err(
                    |e| tracing::debug!(file = %id, error = %e, "no manifest from the holders record"),
                )
                .ok(),
        };
        let trusted = if from_record.is_some() { record.as_ref() } else { None };
        let mut manifest = mine.clone().or(from_record);
        if manifest.is_none() || trusted.is_none() {
            let providers = within(blocks.net().providers(id)).await.unwrap_or_default();
            looked.providers = looked.providers.max(providers.len());
            if manifest.is_none() && !providers.is_empty() {
                manifest = fetch_manifest(blocks, id, &providers)
                    .await
                    .inspect_err(
                        |e| tracing::debug!(file = %id, error = %e, "no manifest from the providers"),
                    )
                    .ok();
            }
        }
        if let Some(manifest) = manifest {
            let holders = holders_of(blocks, id, &manifest, trusted).await;
            tracing::debug!(file = %id, took = ?start.elapsed(), record = trusted.is_some(), "found the file");
            return Ok((manifest, holders));
        }
        if start.elapsed() + pause > LOOKUP_FOR {
            return Err(ClientError::NotFound {
                id,
                looked: start.elapsed(),
                records: looked.records,
                providers: looked.providers,
            });
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// Each slot's holder: the record's, where it names one for that piece, else one that
/// says it holds the piece (see [`ask_holders`]).
async fn holders_of(
    blocks: &BlockClient,
    id: BlockId,
    manifest: &Manifest,
    record: Option<&HoldersRecord>,
) -> Vec<Option<PeerId>> {
    let mut unused: Vec<&Holder> = record.map(|r| r.holders.iter().collect()).unwrap_or_default();
    let named: Vec<Option<PeerId>> = manifest
        .pieces
        .iter()
        .map(|piece| unused.iter().position(|h| h.block == *piece).map(|i| unused.remove(i).peer))
        .collect();
    ask_holders(blocks, id, manifest, named).await
}

/// Peers asked at once which pieces of a file they hold, at most.
const ASK_AT_ONCE: usize = 20;

/// Fills the slots of `found` that name no holder: the holders `found` names and the
/// manifest's providers in the DHT (every holder keeps the manifest and announces it;
/// pieces are not announced, see `jewel_net::announce`) are asked which of the file's pieces they hold
/// (HAS, each within [`QUERY_TIMEOUT`]), and a slot takes the first that says yes. Asks
/// nothing when every slot has a holder.
pub async fn ask_holders(
    blocks: &BlockClient,
    id: BlockId,
    manifest: &Manifest,
    mut found: Vec<Option<PeerId>>,
) -> Vec<Option<PeerId>> {
    found.resize(manifest.pieces.len(), None);
    if found.iter().all(Option::is_some) {
        return found;
    }
    let mut peers: Vec<PeerId> = Vec::new();
    for p in
        found.iter().flatten().copied().chain(within(blocks.net().providers(id)).await.unwrap_or_default())
    {
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
    peers.truncate(ASK_AT_ONCE);
    let ask = |peer: PeerId| blocks.has(peer, &manifest.pieces);
    let strategy = Strategy::all(ASK_AT_ONCE, Some(QUERY_TIMEOUT));
    fan_out(peers, strategy, ask, |peer, held| {
        for (slot, has) in held.and_then(Result::ok).unwrap_or_default().into_iter().enumerate() {
            if has && found.get(slot).is_some_and(Option::is_none) {
                found[slot] = Some(peer);
            }
        }
        if found.iter().all(Option::is_some) {
            Flow::Stop
        } else {
            Flow::Go
        }
    })
    .await;
    found
}

/// Publishes who holds each piece of `manifest` (`holders[i]` for slot i) and the manifest,
/// with the addresses this node knows for them, so that any peer finds the file in one DHT
/// query. A later publication (a repair's) replaces an earlier one.
pub async fn publish_holders(
    blocks: &BlockClient,
    file: BlockId,
    manifest: &Manifest,
    holders: &[Option<PeerId>],
) -> Result<(), ClientError> {
    let known = blocks.net().peers().await?;
    let addrs = |peer: &PeerId| -> Vec<Multiaddr> {
        let id = peer.to_string();
        known
            .iter()
            .find(|p| p.peer == id)
            .map(|p| p.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    };
    let holders = manifest
        .pieces
        .iter()
        .zip(holders)
        .filter_map(|(block, peer)| Some(Holder { block: *block, peer: (*peer)?, addrs: addrs(&(*peer)?) }))
        .collect();
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let record = HoldersRecord { group: file, seq, holders };
    // A query that met only dead peers (strangers that came and went, say) is tried again:
    // the peers that failed to answer are out of the routing table by then.
    let mut attempt = 0u32;
    loop {
        match blocks.net().publish_holders(record.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < PUBLISH_ATTEMPTS => {
                tracing::info!(%file, error = %e, "publishing a holders record failed; trying again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200) * attempt).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Attempts after the first at publishing a holders record.
const PUBLISH_ATTEMPTS: u32 = 3;
