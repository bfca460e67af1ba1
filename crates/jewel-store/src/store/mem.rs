//! The in-memory block store: the same contract as [`super::FsStore`], for tests and
//! benchmarks. A std `Mutex` guards the map; it is never held across I/O or `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::BlockSize;

use super::verify::{encode_fragment, outboard_len, read_verified, VerifyError, CHUNK_GROUP_LOG};
use super::{BlockReader, BlockStore, BlockWriter, StoreError, Usage};
use crate::id::BlockId;

/// A block store in memory.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
    capacity: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    blocks: HashMap<BlockId, Arc<MemBlock>>,
    used: u64,
    pending: u64,
}

#[derive(Debug)]
struct MemBlock {
    data: Vec<u8>,
    outboard: PreOrderMemOutboard,
}

impl MemStore {
    pub fn new(capacity: Option<u64>) -> Self {
        MemStore { inner: Arc::default(), capacity }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the map half-updated: every update is one insert
        // or remove, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes a stored block's bytes in place, keeping its id and outboard: for
    /// fault-injection tests (a peer whose disk rots).
    pub fn tamper(&self, id: &BlockId, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut inner = self.lock();
        let Some(block) = inner.blocks.get(id) else { return false };
        let mut data = block.data.clone();
        f(&mut data);
        let outboard = block.outboard.clone();
        inner.blocks.insert(*id, Arc::new(MemBlock { data, outboard }));
        true
    }

    fn reserve(&self, n: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(capacity) = self.capacity {
            let used = inner.used + inner.pending;
            if used + n > capacity {
                return Err(StoreError::Full { needed: n, free: capacity.saturating_sub(used), capacity });
            }
        }
        inner.pending += n;
        Ok(())
    }
}

impl BlockStore for MemStore {
    fn writer(&self) -> Result<Box<dyn BlockWriter>, StoreError> {
        Ok(Box::new(MemWriter { store: self.clone(), buf: Vec::new() }))
    }

    fn has(&self, id: &BlockId) -> Result<bool, StoreError> {
        Ok(self.lock().blocks.contains_key(id))
    }

    fn reader(&self, id: &BlockId) -> Result<Box<dyn BlockReader>, StoreError> {
        let block = self.lock().blocks.get(id).cloned().ok_or(StoreError::NotFound(*id))?;
        Ok(Box::new(MemReader { id: *id, block }))
    }

    fn remove(&self, id: &BlockId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.blocks.remove(id) {
            Some(b) => {
                let size = b.data.len() as u64;
                inner.used = inner.used.saturating_sub(size + outboard_len(size));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn list(&self) -> Result<Vec<(BlockId, u64)>, StoreError> {
        let mut v: Vec<_> = self.lock().blocks.iter().map(|(id, b)| (*id, b.data.len() as u64)).collect();
        v.sort();
        Ok(v)
    }

    fn usage(&self) -> Usage {
        let inner = self.lock();
        Usage { used: inner.used + inner.pending, capacity: self.capacity }
    }
}

struct MemWriter {
    store: MemStore,
    buf: Vec<u8>,
}

impl BlockWriter for MemWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.store.reserve(data.len() as u64)?;
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.buf.len() as u64
    }

    fn commit(mut self: Box<Self>, expected: Option<BlockId>) -> Result<BlockId, StoreError> {
        let size = self.buf.len() as u64;
        self.store.reserve(outboard_len(size))?;
        let data = std::mem::take(&mut self.buf);
        let outboard = PreOrderMemOutboard::create(&data, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
        let id = BlockId::from(outboard.root);
        let mut inner = self.store.lock();
        inner.pending = inner.pending.saturating_sub(size + outboard_len(size));
        if let Some(expected) = expected {
            if expected != id {
                return Err(StoreError::HashMismatch { expected, actual: id });
            }
        }
        if let Some(old) = inner.blocks.insert(id, Arc::new(MemBlock { data, outboard })) {
            let old = old.data.len() as u64;
            inner.used = inner.used.saturating_sub(old + outboard_len(old));
        }
        inner.used += size + outboard_len(size);
        Ok(id)
    }
}

impl Drop for MemWriter {
    fn drop(&mut self) {
        // Uncommitted bytes release their reservation (commit empties the buffer first).
        let n = self.buf.len() as u64;
        if n > 0 {
            let mut inner = self.store.lock();
            inner.pending = inner.pending.saturating_sub(n);
        }
    }
}

struct MemReader {
    id: BlockId,
    block: Arc<MemBlock>,
}

impl MemReader {
    /// In memory every failure is a mismatch: there is no I/O to fail.
    fn error(&self, e: VerifyError, at: u64) -> StoreError {
        let offset = match e {
            VerifyError::Io(_) => at,
            VerifyError::Mismatch { offset } => offset,
        };
        StoreError::Corrupt { id: self.id, offset }
    }
}

impl BlockReader for MemReader {
    fn id(&self) -> BlockId {
        self.id
    }

    fn len(&self) -> u64 {
        self.block.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let len = buf.len() as u64;
        let size = self.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::OutOfRange { id: self.id, offset, len, size });
        }
        read_verified(&self.block.data, &self.block.outboard, offset, buf).map_err(|e| self.error(e, offset))
    }

    fn fragment(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let size = self.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::OutOfRange { id: self.id, offset, len, size });
        }
        encode_fragment(&self.block.data, &self.block.outboard, offset, len, out)
            .map_err(|e| self.error(e, offset))
    }

    fn fragment_cached(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> bool {
        self.fragment(offset, len, out).is_ok()
    }
}
