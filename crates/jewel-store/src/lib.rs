//! What a holder keeps, below the engine and the network: block ids, the content-addressed
//! block stores (verified reads through bao outboards), leases and their garbage
//! collection, the signed name records' format, buffer pools and locks that survive a
//! panic. The engine (`jewel`) re-exports it; the network layer (`jewel-net`) depends on
//! this crate only, so "the network never knows manifests, keys or pipelines" is the
//! compiler's rule, not a grep.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[doc(hidden)]
pub mod direct;
#[doc(hidden)]
pub mod id;
pub mod lease;
pub mod names;
pub mod pool;
pub mod store;
pub mod sync;
pub mod writer;

pub use id::{BlockId, IdError};
pub use store::{BlockReader, BlockStore, BlockWriter, FsStore, MemStore, StoreError};
