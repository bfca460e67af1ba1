//! Leases: why a holder keeps a block, and garbage collection of blocks nobody needs.
//!
//! A lease is (block, file, owner) → expiry, in Unix seconds. The owner is the peer that
//! asked (authenticated by the transport); the file is the manifest id the block belongs
//! to, so a block two files share (same content) keeps a lease per file and stays until
//! neither needs it. A stored block first gets a short lease under the zero file id, so
//! the pieces of a put that never finished go away by themselves; the owner then leases
//! them for the file and renews them. [`gc`] deletes every block with no live lease.
//!
//! The book is a redb table keyed by block ‖ file ‖ owner, so a block's leases are one
//! range scan; writes are batched into one transaction per request.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use crate::id::BlockId;
use crate::store::BlockStore;

const LEASES: TableDefinition<&[u8], u64> = TableDefinition::new("leases");

/// The file id of the first lease a block gets when it is stored.
pub const UNASSIGNED: BlockId = BlockId([0; 32]);
/// Seconds a freshly stored block is kept before its owner must lease it for a file.
pub const INITIAL_LEASE_SECS: u64 = 3600;
/// The longest lease a holder grants: an owner asking for more gets this (and renews).
pub const MAX_LEASE_SECS: u64 = 90 * 24 * 3600;

/// Why the lease book failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("lease database: {0}")]
    Db(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn db<E: std::fmt::Display>(e: E) -> LeaseError {
    LeaseError::Db(e.to_string())
}

/// One lease change: `expires` 0 removes the lease.
#[derive(Clone, Debug)]
pub struct Lease {
    pub block: BlockId,
    pub file: BlockId,
    pub owner: Vec<u8>,
    pub expires: u64,
}

/// The leases of the blocks in one store.
pub struct LeaseBook {
    db: Arc<Database>,
}

impl std::fmt::Debug for LeaseBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseBook")
    }
}

fn key(block: &BlockId, file: &BlockId, owner: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64 + owner.len());
    k.extend_from_slice(&block.0);
    k.extend_from_slice(&file.0);
    k.extend_from_slice(owner);
    k
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl LeaseBook {
    /// Opens (or creates) the book at `path`.
    pub fn open(path: &Path) -> Result<LeaseBook, LeaseError> {
        LeaseBook::in_database(Arc::new(Database::create(path).map_err(db)?))
    }

    /// The book in a table of `database`, which other tables may share (a node keeps all
    /// its state in one database, so a change and what it depends on commit together).
    pub fn in_database(database: Arc<Database>) -> Result<LeaseBook, LeaseError> {
        let book = LeaseBook { db: database };
        book.init()?;
        Ok(book)
    }

    /// Copies every lease of `other` into this book, in one transaction; returns how many.
    pub fn import(&self, other: &LeaseBook) -> Result<usize, LeaseError> {
        let from = other.db.begin_read().map_err(db)?;
        let source = from.open_table(LEASES).map_err(db)?;
        let tx = self.db.begin_write().map_err(db)?;
        let mut count = 0;
        {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            for entry in source.iter().map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                t.insert(k.value(), v.value()).map_err(db)?;
                count += 1;
            }
        }
        tx.commit().map_err(db)?;
        Ok(count)
    }

    /// A book kept in memory only (for nodes without a home, such as tests).
    pub fn in_memory() -> Result<LeaseBook, LeaseError> {
        let db =
            Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(db)?;
        LeaseBook::in_database(Arc::new(db))
    }

    fn init(&self) -> Result<(), LeaseError> {
        let tx = self.db.begin_write().map_err(db)?;
        tx.open_table(LEASES).map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Applies lease changes in one transaction, durably.
    pub fn apply(&self, leases: &[Lease]) -> Result<(), LeaseError> {
        self.apply_with(leases, redb::Durability::Immediate)
    }

    /// Applies lease changes without waiting for the disk: they become durable with the
    /// next durable write. For the first, short lease of a block, whose owner follows up
    /// with a durable one at once; losing it in a crash only lets an orphan be collected.
    pub fn apply_soon(&self, leases: &[Lease]) -> Result<(), LeaseError> {
        self.apply_with(leases, redb::Durability::None)
    }

    fn apply_with(&self, leases: &[Lease], durability: redb::Durability) -> Result<(), LeaseError> {
        let mut tx = self.db.begin_write().map_err(db)?;
        tx.set_durability(durability);
        {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            for l in leases {
                let k = key(&l.block, &l.file, &l.owner);
                if l.expires == 0 {
                    t.remove(k.as_slice()).map_err(db)?;
                } else {
                    t.insert(k.as_slice(), l.expires).map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)
    }

    /// The latest expiry among `block`'s leases, if it has any.
    pub fn expiry(&self, block: &BlockId) -> Result<Option<u64>, LeaseError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(LEASES).map_err(db)?;
        let mut latest = None;
        for entry in t.range::<&[u8]>(block.0.as_slice()..).map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            if !k.value().starts_with(&block.0) {
                break;
            }
            latest = latest.max(Some(v.value()));
        }
        Ok(latest)
    }

    /// Forgets every lease of `block`.
    pub fn forget(&self, block: &BlockId) -> Result<(), LeaseError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            t.retain_in::<&[u8], _>(block.0.as_slice().., |k, _| !k.starts_with(&block.0)).map_err(db)?;
        }
        tx.commit().map_err(db)
    }
}

/// What a garbage collection did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Collected {
    pub blocks: usize,
    pub bytes: u64,
}

/// Deletes every block of `store` whose leases have all expired by `now` (or that has
/// none), and forgets their leases.
pub fn gc(store: &dyn BlockStore, book: &LeaseBook, now: u64) -> Result<Collected, LeaseError> {
    let mut done = Collected::default();
    for (id, size) in store.list()? {
        if book.expiry(&id)?.is_some_and(|e| e > now) {
            continue;
        }
        store.remove(&id)?;
        book.forget(&id)?;
        done.blocks += 1;
        done.bytes += size;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlockStore, MemStore};

    #[test]
    fn a_shared_block_stays_until_no_file_needs_it() {
        let store = MemStore::new(None);
        let id = store.put(b"shared piece").unwrap();
        let other = store.put(b"unleased").unwrap();
        let book = LeaseBook::in_memory().unwrap();
        let (f1, f2) = (BlockId::of(b"file one"), BlockId::of(b"file two"));
        let owner = b"owner".to_vec();
        let lease = |file, expires| Lease { block: id, file, owner: owner.clone(), expires };
        book.apply(&[lease(f1, 2000), lease(f2, 3000)]).unwrap();
        assert_eq!(book.expiry(&id).unwrap(), Some(3000));

        // The unleased block goes; the shared one stays while either file holds it.
        let c = gc(&store, &book, 1000).unwrap();
        assert_eq!((c.blocks, store.has(&id).unwrap(), store.has(&other).unwrap()), (1, true, false));
        book.apply(&[lease(f1, 0)]).unwrap();
        assert_eq!(gc(&store, &book, 1000).unwrap().blocks, 0);
        assert!(store.has(&id).unwrap());
        // File two's lease runs out: now it goes, leases and all.
        assert_eq!(gc(&store, &book, 3000).unwrap().blocks, 1);
        assert!(!store.has(&id).unwrap());
        assert_eq!(book.expiry(&id).unwrap(), None);
    }

    #[test]
    fn leases_of_neighbouring_blocks_do_not_mix() {
        let book = LeaseBook::in_memory().unwrap();
        let mut a = BlockId([7; 32]);
        let b = BlockId([7; 32]);
        a.0[31] = 6;
        book.apply(&[Lease { block: a, file: UNASSIGNED, owner: vec![1], expires: 50 }]).unwrap();
        assert_eq!(book.expiry(&b).unwrap(), None);
        book.forget(&b).unwrap();
        assert_eq!(book.expiry(&a).unwrap(), Some(50));
    }
}
