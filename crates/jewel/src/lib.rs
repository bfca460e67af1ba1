//! Jewel's storage engine: everything below the network, synchronous. It must not depend
//! on tokio, libp2p or axum, so a simulator or any other synchronous user can reuse it.
//!
//! - [`store`]: the content-addressed block store ([`FsStore`], [`MemStore`]), verified
//!   reads through bao outboards.
//! - [`crypto`]: file keys and the segment AEAD (STREAM construction).
//! - [`manifest`]: the public, versioned description of a stored file.
//! - [`caps`]: read and verify capabilities.
//! - [`pipeline`]: put and get, streaming and parallel, over any block writers/readers.
//! - [`offline`]: encode to and decode from local peer folders.
//! - [`policy`]: placement, holder ranking, hedging and the repair threshold, pure.
//! - [`lease`]: why a holder keeps a block, and garbage collection.
//!
//! [`store`], [`lease`], [`pool`], [`sync`] and [`BlockId`] live in the `jewel-store` crate,
//! re-exported here.
//!
//! The schemes themselves live in the `jewel-codec` crate, re-exported as [`codec`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod caps;
pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod manifest;
pub mod names;
pub mod offline;
mod parallel;
pub mod pipeline;
pub mod policy;
pub mod user;

// Below the engine, in their own crate (which the network layer uses without the engine):
// ids, block stores, leases, buffer pools, locks.
use jewel_store::{direct, id};
pub use jewel_store::{lease, pool, store, sync, writer};

pub use caps::{Cap, CapError, ReadCap, VerifyCap};
pub use crypto::{CipherId, FileKey};
pub use id::{BlockId, IdError};
pub use jewel_codec as codec;
pub use manifest::{Manifest, ManifestError};
pub use pipeline::{get, put, GetStats, PipelineError, PutOptions, PutStats};
pub use store::{BlockReader, BlockStore, BlockWriter, FsStore, MemStore, StoreError};
