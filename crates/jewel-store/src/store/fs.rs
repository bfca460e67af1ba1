//! The on-disk block store.
//!
//! Layout under the root: `blocks/ab/<64 hex>` holds a block's bytes and
//! `blocks/ab/<64 hex>.obao` its pre-order bao outboard; `tmp/` holds writes in progress.
//! A write goes to a temp file (O_DIRECT where the file system allows) and is hashed as it
//! goes (which also builds the outboard); the id is checked against the expected one, the
//! temp file fsynced, and both files renamed into place, outboard first: a block is visible
//! only once it is whole. Reads are verified chunk group by chunk group.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bao_tree::io::outboard::PreOrderOutboard;

use super::verify::{encode_fragment, outboard_len, read_verified, tree, StreamingOutboard, VerifyError};
use super::{BlockReader, BlockStore, BlockWriter, StoreError, Usage};
use crate::direct::DirectWriter;
use crate::id::BlockId;

/// A block store in a folder on disk.
#[derive(Clone, Debug)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    capacity: Option<u64>,
    /// Bytes of committed data and outboards.
    used: AtomicU64,
    /// Bytes of writes in progress.
    pending: AtomicU64,
}

impl FsStore {
    /// Opens (creating if needed) a store at `root`, with an optional capacity in bytes.
    /// Leftover temp files from an interrupted write are removed.
    pub fn open(root: impl AsRef<Path>, capacity: Option<u64>) -> Result<Self, StoreError> {
        let root = root.as_ref().to_path_buf();
        for dir in [root.join("blocks"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(|e| StoreError::io(&tmp, e))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let store = FsStore {
            inner: Arc::new(Inner { root, capacity, used: AtomicU64::new(0), pending: AtomicU64::new(0) }),
        };
        let used = store.scan()?.into_iter().map(|(_, size)| size + outboard_len(size)).sum::<u64>();
        store.inner.used.store(used, Ordering::SeqCst);
        Ok(store)
    }

    /// Opens an existing store for reading only: nothing is created or cleaned up. Its
    /// usage figure counts nothing; writes fail.
    pub fn open_read_only(root: impl AsRef<Path>) -> Self {
        FsStore {
            inner: Arc::new(Inner {
                root: root.as_ref().to_path_buf(),
                capacity: Some(0),
                used: AtomicU64::new(0),
                pending: AtomicU64::new(0),
            }),
        }
    }

    /// Whether `root` looks like a store (has a `blocks` folder).
    pub fn is_store(root: impl AsRef<Path>) -> bool {
        root.as_ref().join("blocks").is_dir()
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn data_path(&self, id: &BlockId) -> PathBuf {
        let hex = id.to_string();
        self.inner.root.join("blocks").join(&hex[..2]).join(hex)
    }

    fn outboard_path(&self, id: &BlockId) -> PathBuf {
        let mut p = self.data_path(id).into_os_string();
        p.push(".obao");
        PathBuf::from(p)
    }

    fn scan(&self) -> Result<Vec<(BlockId, u64)>, StoreError> {
        let blocks = self.inner.root.join("blocks");
        let mut out = Vec::new();
        for dir in fs::read_dir(&blocks).map_err(|e| StoreError::io(&blocks, e))?.flatten() {
            let Ok(entries) = fs::read_dir(dir.path()) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(|n| n.parse::<BlockId>().ok()) else { continue };
                let size = entry.metadata().map_err(|e| StoreError::io(entry.path(), e))?.len();
                out.push((id, size));
            }
        }
        out.sort();
        Ok(out)
    }

    fn reserve(&self, n: u64) -> Result<(), StoreError> {
        let pending = self.inner.pending.fetch_add(n, Ordering::SeqCst) + n;
        if let Some(capacity) = self.inner.capacity {
            let used = self.inner.used.load(Ordering::SeqCst) + pending;
            if used > capacity {
                self.inner.pending.fetch_sub(n, Ordering::SeqCst);
                return Err(StoreError::Full {
                    needed: n,
                    free: capacity.saturating_sub(used - n),
                    capacity,
                });
            }
        }
        Ok(())
    }
}

fn random_name() -> String {
    let mut b = [0u8; 12];
    // A failed RNG only costs uniqueness, which the create_new open below still enforces.
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

impl BlockStore for FsStore {
    fn writer(&self) -> Result<Box<dyn BlockWriter>, StoreError> {
        let path = self.inner.root.join("tmp").join(format!("{}.part", random_name()));
        // Blocks held for others are readable by this user only, like the rest of a home.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        drop(file);
        let file = DirectWriter::open(&path, 0).map_err(|e| StoreError::io(&path, e))?;
        Ok(Box::new(FsWriter {
            store: self.clone(),
            file: Some(file),
            hash: Some(StreamingOutboard::new()),
            path,
            written: 0,
        }))
    }

    fn has(&self, id: &BlockId) -> Result<bool, StoreError> {
        Ok(self.data_path(id).is_file())
    }

    fn reader(&self, id: &BlockId) -> Result<Box<dyn BlockReader>, StoreError> {
        let path = self.data_path(id);
        let data = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(*id)),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let size = data.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let ob_path = self.outboard_path(id);
        let ob = File::open(&ob_path).map_err(|_| StoreError::Corrupt { id: *id, offset: 0 })?;
        let ob_len = ob.metadata().map_err(|e| StoreError::io(&ob_path, e))?.len();
        if ob_len != outboard_len(size) {
            return Err(StoreError::Corrupt { id: *id, offset: 0 });
        }
        let outboard = PreOrderOutboard { root: (*id).into(), tree: tree(size), data: ob };
        Ok(Box::new(FsReader { id: *id, size, data, outboard, path }))
    }

    fn remove(&self, id: &BlockId) -> Result<bool, StoreError> {
        let path = self.data_path(id);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        let _ = fs::remove_file(self.outboard_path(id));
        self.inner.used.fetch_sub(
            (size + outboard_len(size)).min(self.inner.used.load(Ordering::SeqCst)),
            Ordering::SeqCst,
        );
        Ok(true)
    }

    fn list(&self) -> Result<Vec<(BlockId, u64)>, StoreError> {
        self.scan()
    }

    fn usage(&self) -> Usage {
        Usage {
            used: self.inner.used.load(Ordering::SeqCst) + self.inner.pending.load(Ordering::SeqCst),
            capacity: self.inner.capacity,
        }
    }
}

/// Writes through O_DIRECT where it can ([`DirectWriter`]) and hashes as it goes
/// ([`StreamingOutboard`]): a block is neither copied into fresh page-cache pages nor read
/// back to be hashed.
struct FsWriter {
    store: FsStore,
    file: Option<DirectWriter>,
    hash: Option<StreamingOutboard>,
    path: PathBuf,
    written: u64,
}

impl FsWriter {
    fn finish(&mut self, expected: Option<BlockId>) -> Result<BlockId, StoreError> {
        let path = self.path.clone();
        let io = |e| StoreError::io(&path, e);
        let finished = || io(std::io::Error::other("writer already finished"));
        let file = self.file.take().ok_or_else(finished)?;
        let hash = self.hash.take().ok_or_else(finished)?;
        let file = file.finish().map_err(io)?;
        // The id and the pre-order outboard were hashed as the data was written: a block
        // that is not what it claims is refused before anything is synced.
        let (root, outboard) = hash.finish();
        let id = BlockId::from(root);
        if let Some(expected) = expected {
            if expected != id {
                return Err(StoreError::HashMismatch { expected, actual: id });
            }
        }
        file.sync_all().map_err(io)?;
        let size = self.written;
        let ob_len = outboard_len(size);
        self.store.reserve(ob_len)?;
        self.written += ob_len;
        let ob_path = path.with_extension("obao");
        let remove_ob = |e: StoreError| {
            let _ = fs::remove_file(&ob_path);
            e
        };
        let mut ob_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&ob_path)
            .map_err(|e| StoreError::io(&ob_path, e))?;
        ob_file.write_all(&outboard).map_err(|e| remove_ob(StoreError::io(&ob_path, e)))?;
        ob_file.sync_all().map_err(|e| remove_ob(StoreError::io(&ob_path, e)))?;

        // Outboard first, then data: the data file's presence means the block is whole.
        let data_path = self.store.data_path(&id);
        let dir = data_path.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&dir).map_err(|e| remove_ob(StoreError::io(&dir, e)))?;
        let replaced = fs::metadata(&data_path).map(|m| m.len() + outboard_len(m.len())).unwrap_or(0);
        fs::rename(&ob_path, self.store.outboard_path(&id))
            .map_err(|e| remove_ob(StoreError::io(&dir, e)))?;
        fs::rename(&path, &data_path).map_err(|e| StoreError::io(&dir, e))?;
        sync_dir(&dir)?;
        let inner = &self.store.inner;
        inner.used.fetch_add(size + ob_len, Ordering::SeqCst);
        inner.used.fetch_sub(replaced.min(inner.used.load(Ordering::SeqCst)), Ordering::SeqCst);
        Ok(id)
    }
}

impl BlockWriter for FsWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.store.reserve(data.len() as u64)?;
        self.written += data.len() as u64;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::io(&self.path, std::io::Error::other("writer finished")))?;
        file.write_all(data).map_err(|e| StoreError::io(&self.path, e))?;
        if let Some(hash) = self.hash.as_mut() {
            hash.update(data);
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, expected: Option<BlockId>) -> Result<BlockId, StoreError> {
        self.finish(expected)
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Whether committed or not, the reservation ends here; `finish` moved committed
        // bytes into `used`. An uncommitted temp file is removed.
        self.file = None;
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(self.path.with_extension("obao"));
        self.store.inner.pending.fetch_sub(self.written, Ordering::SeqCst);
    }
}

struct FsReader {
    id: BlockId,
    size: u64,
    data: File,
    outboard: PreOrderOutboard<File>,
    path: PathBuf,
}

impl FsReader {
    fn error(&self, e: VerifyError, at: u64) -> StoreError {
        match e {
            // A short read means the file shrank under us: corrupt, not an I/O fault.
            VerifyError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                StoreError::Corrupt { id: self.id, offset: at }
            }
            VerifyError::Io(e) => StoreError::io(&self.path, e),
            VerifyError::Mismatch { offset } => StoreError::Corrupt { id: self.id, offset },
        }
    }
}

impl BlockReader for FsReader {
    fn id(&self) -> BlockId {
        self.id
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(StoreError::OutOfRange { id: self.id, offset, len, size: self.size });
        }
        read_verified(&self.data, &self.outboard, offset, buf).map_err(|e| self.error(e, offset))
    }

    fn fragment(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let size = self.size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::OutOfRange { id: self.id, offset, len, size });
        }
        encode_fragment(&self.data, &self.outboard, offset, len, out).map_err(|e| self.error(e, offset))
    }

    fn fragment_cached(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> bool {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return false;
        }
        let outboard = PreOrderOutboard {
            root: self.outboard.root,
            tree: self.outboard.tree,
            data: CachedOnly(&self.outboard.data),
        };
        encode_fragment(&CachedOnly(&self.data), &outboard, offset, len, out).is_ok()
    }
}

/// Reads of a file that fail rather than wait on the disk: `preadv2` with `RWF_NOWAIT`
/// returns only what the page cache holds (Linux). Elsewhere every read fails.
struct CachedOnly<'a>(&'a File);

impl bao_tree::io::sync::ReadAt for CachedOnly<'_> {
    #[cfg(target_os = "linux")]
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use rustix::io::{preadv2, ReadWriteFlags};
        let want = buf.len();
        let n = preadv2(self.0, &mut [std::io::IoSliceMut::new(buf)], pos, ReadWriteFlags::NOWAIT)?;
        // Short: the rest is not cached (or past the end). Either way, not from memory.
        if n < want {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn read_at(&self, _: u64, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}
