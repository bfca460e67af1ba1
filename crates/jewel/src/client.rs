//! Files over the network: the put and get pipelines with peers as piece stores.
//!
//! Put: pieces are staged in a local store while the pipeline runs (so memory stays
//! bounded and a failed upload can be retried from disk), then each piece is uploaded to
//! its own peer, chosen by [`place`]; the manifest goes to every holder. Holders verify
//! each block and announce it in the DHT. Get: each slot's holder comes from the placement
//! recorded at upload (the fast path) or a DHT provider lookup, and is read through
//! [`RemotePiece`], a verified `BlockReader`, so the pipeline is the same as offline.
//!
//! The pipelines are synchronous; call these functions from a blocking thread (e.g.
//! `spawn_blocking`), never from inside an async task.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use libp2p::PeerId;
use tokio::runtime::Handle;

use crate::crypto::FileKey;
use crate::id::BlockId;
use crate::manifest::Manifest;
use crate::net::{NetError, NetHandle};
use crate::pipeline::{self, GetStats, PipelineError, Put, PutOptions};
use crate::store::{BlockReader, BlockStore, BlockWriter, StoreError};

/// Why a network put or get failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("the scheme needs {needed} distinct peers, but only {found} were found")]
    NotEnoughPeers { needed: usize, found: usize },
    #[error("uploading piece {slot} to {peer}: {source}")]
    Upload { slot: usize, peer: PeerId, source: Box<NetError> },
    #[error("manifest {0} was not found on any peer")]
    ManifestNotFound(BlockId),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Net(Box<NetError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<NetError> for ClientError {
    fn from(e: NetError) -> Self {
        ClientError::Net(Box::new(e))
    }
}

/// A candidate peer for placement.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub peer: PeerId,
    pub zone: Option<String>,
}

/// Chooses a distinct peer for each of `slots` slots, taking peers from each zone in turn
/// so pieces spread over failure domains (peers without a zone each count as their own).
pub fn place(slots: usize, candidates: &[Candidate]) -> Result<Vec<PeerId>, ClientError> {
    let mut zones: BTreeMap<String, Vec<PeerId>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for c in candidates {
        if seen.insert(c.peer) {
            let zone = c.zone.clone().unwrap_or_else(|| format!("peer:{}", c.peer));
            zones.entry(zone).or_default().push(c.peer);
        }
    }
    if seen.len() < slots {
        return Err(ClientError::NotEnoughPeers { needed: slots, found: seen.len() });
    }
    let mut queues: Vec<std::collections::VecDeque<PeerId>> = zones.into_values().map(Into::into).collect();
    let mut out = Vec::with_capacity(slots);
    while out.len() < slots {
        for q in queues.iter_mut() {
            if out.len() == slots {
                break;
            }
            if let Some(p) = q.pop_front() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// What a network put produced.
#[derive(Debug)]
pub struct Placed {
    pub put: Put,
    /// The peer holding each slot's piece.
    pub holders: Vec<PeerId>,
}

/// Encrypts and encodes `input`, uploads slot i's piece to `peers[i]`, and the manifest
/// to every one of them. Staged pieces are removed from `staging` afterwards.
pub fn put_file(
    rt: &Handle,
    net: &NetHandle,
    input: &mut (dyn Read + Send),
    opts: &PutOptions,
    peers: &[PeerId],
    staging: &dyn BlockStore,
) -> Result<Placed, ClientError> {
    let slots = jewel_codec::build(&opts.scheme).map_err(PipelineError::from)?.slots();
    if peers.len() < slots {
        return Err(ClientError::NotEnoughPeers { needed: slots, found: peers.len() });
    }
    let sinks = (0..slots).map(|_| staging.writer()).collect::<Result<Vec<Box<dyn BlockWriter>>, _>>()?;
    let put = pipeline::put(input, opts, sinks)?;
    let manifest_id = put.cap.manifest;
    staging.put(&put.manifest_bytes)?;
    let holders: Vec<PeerId> = peers[..slots].to_vec();
    let uploads = holders.iter().enumerate().map(|(slot, peer)| {
        let reader = staging.reader(&put.manifest.pieces[slot]).map(Arc::from);
        let manifest = staging.reader(&manifest_id).map(Arc::from);
        let net = net.clone();
        let peer = *peer;
        async move {
            let wrap = |source| ClientError::Upload { slot, peer, source: Box::new(source) };
            let reader: Arc<dyn BlockReader> = reader?;
            net.put_block_from(peer, reader).await.map_err(wrap)?;
            let manifest: Arc<dyn BlockReader> = manifest?;
            net.put_block_from(peer, manifest).await.map_err(wrap)?;
            Ok::<(), ClientError>(())
        }
    });
    // At most 8 uploads at once; each peer gets one stream at a time.
    let results: Vec<Result<(), ClientError>> = rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(uploads).buffer_unordered(8).collect().await
    });
    for id in put.manifest.pieces.iter().chain(std::iter::once(&manifest_id)) {
        let _ = staging.remove(id);
    }
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(Placed { put, holders })
}

/// A piece held by a peer, read through the block protocol and verified against its id.
pub struct RemotePiece {
    rt: Handle,
    net: NetHandle,
    peer: PeerId,
    id: BlockId,
    size: u64,
}

impl RemotePiece {
    pub fn new(rt: Handle, net: NetHandle, peer: PeerId, id: BlockId, size: u64) -> Self {
        RemotePiece { rt, net, peer, id, size }
    }
}

impl BlockReader for RemotePiece {
    fn id(&self) -> BlockId {
        self.id
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(crate::net::wire::MAX_GET as usize);
            let at = offset + done as u64;
            let got = self
                .rt
                .block_on(self.net.get_range(self.peer, self.id, self.size, at, n as u64))
                .map_err(|e| StoreError::Unavailable { id: self.id, reason: e.to_string() })?;
            buf[done..done + n].copy_from_slice(&got);
            done += n;
        }
        Ok(())
    }

    fn fragment(&self, _offset: u64, _len: u64) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Unavailable { id: self.id, reason: "a remote piece is not served onwards".into() })
    }
}

/// Finds the holder of every slot: the recorded placement first, else a DHT lookup.
pub fn locate(
    rt: &Handle,
    net: &NetHandle,
    manifest: &Manifest,
    placement: Option<&[PeerId]>,
) -> Vec<Option<PeerId>> {
    manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, id)| match placement.and_then(|p| p.get(slot)) {
            Some(peer) => Some(*peer),
            None => rt.block_on(net.providers(*id)).ok().and_then(|p| p.into_iter().next()),
        })
        .collect()
}

/// Fetches and verifies the manifest `id` from any of `peers`, or from DHT providers.
pub fn fetch_manifest(
    rt: &Handle,
    net: &NetHandle,
    id: BlockId,
    peers: &[PeerId],
) -> Result<Manifest, ClientError> {
    let mut candidates = peers.to_vec();
    if candidates.is_empty() {
        candidates = rt.block_on(net.providers(id)).unwrap_or_default();
    }
    for peer in candidates {
        // The manifest's size is unknown; ask for a verified range of its true size.
        let size = rt.block_on(net.block_size(peer, id));
        let Ok(size) = size else { continue };
        if size > crate::manifest::MAX_MANIFEST_LEN as u64 {
            continue;
        }
        if let Ok(bytes) = rt.block_on(net.get_range(peer, id, size, 0, size)) {
            return Ok(Manifest::decode(&bytes).map_err(PipelineError::from)?);
        }
    }
    Err(ClientError::ManifestNotFound(id))
}

/// Rebuilds a file from its holders (`holders[i]` for slot i, `None` if unknown).
pub fn get_file(
    rt: &Handle,
    net: &NetHandle,
    manifest: &Manifest,
    key: &FileKey,
    holders: &[Option<PeerId>],
    out: &mut dyn Write,
    threads: usize,
) -> Result<GetStats, ClientError> {
    let scheme = manifest.build_scheme().map_err(PipelineError::from)?;
    let sources: Vec<Option<Box<dyn BlockReader>>> = manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, id)| {
            let peer = holders.get(slot).copied().flatten()?;
            let size = manifest.piece_len(scheme.as_ref(), slot);
            Some(Box::new(RemotePiece::new(rt.clone(), net.clone(), peer, *id, size)) as Box<dyn BlockReader>)
        })
        .collect();
    Ok(pipeline::get(manifest, key, sources, out, threads)?)
}
