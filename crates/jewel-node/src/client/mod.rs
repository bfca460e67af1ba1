//! Files over the network: the put, get and repair pipelines with peers as piece stores.
//!
//! Put ([`put_file`]): each piece streams to its own peer while the pipeline makes it, so
//! memory stays bounded by a few chunks per slot and nothing is staged on disk; the
//! manifest then goes to every holder. Holders verify each block and announce it in the
//! DHT. Get ([`NetFetch`], [`get_file`]): each slot's holder comes from the placement
//! recorded at upload (the fast path) or a DHT provider lookup ([`locate`]); segments are
//! read from several holders at once, verified and hedged. Repair ([`repair_slots`]):
//! lost pieces are rebuilt from the others, byte for byte, onto new peers.
//!
//! These functions are async; the pipelines themselves run on the blocking pool through
//! [`crate::bridge`], the only place where the two meet.

pub mod fanout;
mod find;
mod get;
mod put;
mod repair;

pub use find::{find_file, publish_holders, LOOKUP_FOR};
pub use get::{fetch_manifest, get_file, locate, NetFetch, GET_THREADS};
pub use put::{is_full, put_file, put_file_noting, Noted, Placed};
pub use repair::{rebuild_slots, repair_slots, Repaired};

use jewel::pipeline::PipelineError;
use jewel::policy::PolicyError;
use jewel::store::StoreError;
use jewel::BlockId;
use jewel_net::{NetError, PeerId};

/// Why a network put, get or repair failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("uploading piece {slot} to {peer}: {source}")]
    Upload { slot: usize, peer: PeerId, source: Box<NetError> },
    #[error(
        "peer {peer} took piece {slot} but cannot prove it holds it ({source}): peers that do that get no pieces for an hour; try the put again"
    )]
    Unproven { slot: usize, peer: PeerId, source: Box<NetError> },
    #[error("rebuilt piece {slot} does not match its manifest id; nothing was recorded")]
    RebuildMismatch { slot: usize },
    #[error("manifest {0} was not found on any peer")]
    ManifestNotFound(BlockId),
    #[error(
        "file {id} was not found: looked for {:.1} s (the longest a get looks is {} s) and found {records} holders records and {providers} providers",
        looked.as_secs_f64(),
        LOOKUP_FOR.as_secs()
    )]
    NotFound { id: BlockId, looked: std::time::Duration, records: usize, providers: usize },
    #[error("the transfer was interrupted (the node is stopping)")]
    Interrupted,
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
