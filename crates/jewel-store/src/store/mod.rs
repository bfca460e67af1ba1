//! The content-addressed block store: blocks named by their BLAKE3 hash, each with a bao
//! outboard so that any byte range can be read and verified on its own.
//!
//! Owns the [`BlockStore`] trait and its two implementations, [`FsStore`] (atomic writes,
//! capacity limit, verified reads) and [`MemStore`] (the same contract in memory, for
//! tests and benchmarks). A store knows blocks only: not files, pieces or manifests. It
//! never returns bytes that do not match their id.

mod fs;
mod mem;
mod verify;

use std::io;
use std::path::PathBuf;

pub use fs::FsStore;
pub use mem::MemStore;
pub use verify::{
    decode_fragment, decode_fragment_into, outboard_len, room, FragmentDecoder, FragmentError, Want,
    CHUNK_GROUP_LOG, CHUNK_GROUP_SIZE,
};

use crate::id::BlockId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("block {0} is not in this store")]
    NotFound(BlockId),
    #[error("block {id} is corrupt at byte {offset}: its data does not match its id")]
    Corrupt { id: BlockId, offset: u64 },
    #[error("block received has id {actual}, but {expected} was expected")]
    HashMismatch { expected: BlockId, actual: BlockId },
    #[error("store is full: {needed} more bytes needed, {free} free of {capacity}")]
    Full { needed: u64, free: u64, capacity: u64 },
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("read of {len} bytes at {offset} is past the end of block {id} ({size} bytes)")]
    OutOfRange { id: BlockId, offset: u64, len: u64, size: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("block {id} is unavailable: {reason}")]
    Unavailable { id: BlockId, reason: String },
}

impl StoreError {
    /// Wraps an I/O error with the path it concerns, telling a full disk apart.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            StoreError::DiskFull { path }
        } else {
            StoreError::Io { path, source }
        }
    }
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || e.raw_os_error() == Some(28)
}

/// Used and free space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes of data and outboards held, plus bytes of writes in progress.
    pub used: u64,
    /// The limit, if any.
    pub capacity: Option<u64>,
}

/// A content-addressed block store.
pub trait BlockStore: Send + Sync {
    /// Starts a streamed write of one block.
    fn writer(&self) -> Result<Box<dyn BlockWriter>, StoreError>;
    /// Whether the block is present (its bytes are verified when read, not here).
    fn has(&self, id: &BlockId) -> Result<bool, StoreError>;
    /// Opens a block for verified positioned reads.
    fn reader(&self, id: &BlockId) -> Result<Box<dyn BlockReader>, StoreError>;
    /// Deletes a block; returns whether it was there.
    fn remove(&self, id: &BlockId) -> Result<bool, StoreError>;
    /// Every block held, with its size.
    fn list(&self) -> Result<Vec<(BlockId, u64)>, StoreError>;
    /// Used and free space.
    fn usage(&self) -> Usage;

    /// Stores `data`; returns its id.
    fn put(&self, data: &[u8]) -> Result<BlockId, StoreError> {
        let mut w = self.writer()?;
        w.write(data)?;
        w.commit(None)
    }

    /// Reads and verifies a whole block.
    fn get(&self, id: &BlockId) -> Result<Vec<u8>, StoreError> {
        let r = self.reader(id)?;
        let mut buf = vec![0u8; usize::try_from(r.len()).unwrap_or(usize::MAX)];
        r.read_at(0, &mut buf)?;
        Ok(buf)
    }
}

/// A block being written. Dropping it without `commit` discards it.
pub trait BlockWriter: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Hashes what was written, checks it against `expected` if given, and makes the block
    /// visible atomically. Returns its id.
    fn commit(self: Box<Self>, expected: Option<BlockId>) -> Result<BlockId, StoreError>;
}

/// A block opened for reading. Every read is verified against the id, so corrupt bytes
/// are reported as [`StoreError::Corrupt`] and never returned.
pub trait BlockReader: Send + Sync {
    fn id(&self) -> BlockId;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset`, verified.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError>;
    /// The verified fragment (bao encoding) covering `len` bytes at `offset`, for sending
    /// to a peer, who checks it with [`decode_fragment`]. Replaces what `out` held (a
    /// reused buffer).
    fn fragment(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<(), StoreError>;
    /// [`BlockReader::fragment`] from memory only, for callers that must not wait on a
    /// disk: `true` if `out` now holds the verified fragment. `false` says nothing about
    /// the block (not in the page cache, out of range, corrupt...); ask `fragment` then,
    /// from a thread that may block.
    fn fragment_cached(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> bool {
        let _ = (offset, len, out);
        false
    }
}

#[cfg(test)]
mod suite_test;
