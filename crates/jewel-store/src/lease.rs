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
//! range scan; writes are batched into one change per request, and go through the
//! database's one writer ([`crate::writer`]), so a holder's charges and leases share
//! commits with each other and with the rest of the node's state.
//!
//! The book also keeps what each peer's uploads take: a stored block is charged to the peer
//! that first sent it (its size, once, whoever else sends it again), until it is collected;
//! a peer's charge remembers when it began, so a holder can tell peers it has known for a
//! while from new ones (see [`LeaseBook::charge_of`], [`LeaseBook::newcomers_charged`]).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use crate::id::BlockId;
use crate::store::BlockStore;
use crate::writer::{Durability, Writer, WriterError};

const LEASES: TableDefinition<&[u8], u64> = TableDefinition::new("leases");
/// owner → (bytes charged, Unix seconds of its first charge).
const CHARGES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("charges");
/// block → size (8 bytes, big-endian) ‖ the owner it is charged to.
const CHARGED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("charged");

/// What one peer's uploads take on this holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    /// Bytes of the blocks charged to it.
    pub bytes: u64,
    /// When its first block was charged (Unix seconds); kept while it has any.
    pub since: u64,
}

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

impl From<WriterError> for LeaseError {
    fn from(e: WriterError) -> Self {
        db(e)
    }
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
    writer: Writer,
    /// The charges table's running sums, in memory: what a quota check reads, with no
    /// transaction and no scan (a check is a cost any stranger can trigger).
    sums: std::sync::Mutex<Sums>,
}

/// The charges, mirrored: each owner's, and the owners whose first charge came after
/// `horizon` (ordered by it) with their bytes' total. Updated after each commit that
/// changes a charge; loaded once when the book opens. One book per database holds it.
#[derive(Default)]
struct Sums {
    owners: std::collections::HashMap<Vec<u8>, Charge>,
    recent: std::collections::BTreeSet<(u64, Vec<u8>)>,
    horizon: u64,
    recent_bytes: u64,
}

impl Sums {
    fn add(&mut self, owner: &[u8], size: u64, now: u64) {
        let c = self.owners.entry(owner.to_vec()).or_insert(Charge { bytes: 0, since: now });
        c.bytes = c.bytes.saturating_add(size);
        if c.since > self.horizon {
            self.recent.insert((c.since, owner.to_vec()));
            self.recent_bytes = self.recent_bytes.saturating_add(size);
        }
    }

    fn take(&mut self, owner: &[u8], size: u64) {
        let Some(c) = self.owners.get_mut(owner) else { return };
        let size = size.min(c.bytes);
        c.bytes -= size;
        let since = c.since;
        if since > self.horizon {
            self.recent_bytes = self.recent_bytes.saturating_sub(size);
        }
        if c.bytes == 0 {
            self.owners.remove(owner);
            self.recent.remove(&(since, owner.to_vec()));
        }
    }

    /// Bytes of the owners first charged after `since`: amortized O(1) while `since` only
    /// grows (each owner leaves the recent set once); a `since` before the horizon (a clock
    /// set back) rebuilds the set.
    fn recent_after(&mut self, since: u64) -> u64 {
        if since < self.horizon {
            self.horizon = since;
            self.recent = self
                .owners
                .iter()
                .filter(|(_, c)| c.since > since)
                .map(|(o, c)| (c.since, o.clone()))
                .collect();
            self.recent_bytes = self.owners.values().filter(|c| c.since > since).map(|c| c.bytes).sum();
            return self.recent_bytes;
        }
        self.horizon = since;
        while let Some((first, owner)) = self.recent.first().cloned() {
            if first > since {
                break;
            }
            self.recent.pop_first();
            let bytes = self.owners.get(&owner).map_or(0, |c| c.bytes);
            self.recent_bytes = self.recent_bytes.saturating_sub(bytes);
        }
        self.recent_bytes
    }
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
    /// Opens (or creates) the book at `path`, with a writer of its own.
    pub fn open(path: &Path) -> Result<LeaseBook, LeaseError> {
        let database = Arc::new(Database::create(path).map_err(db)?);
        let writer = Writer::start(database.clone(), path.to_path_buf())?;
        LeaseBook::in_database(database, writer)
    }

    /// The book in tables of `database`, which other tables may share (a node keeps all
    /// its state in one database, so a change and what it depends on commit together),
    /// written through that database's one `writer`.
    pub fn in_database(database: Arc<Database>, writer: Writer) -> Result<LeaseBook, LeaseError> {
        let book = LeaseBook { db: database, writer, sums: std::sync::Mutex::default() };
        book.init()?;
        book.load_sums()?;
        Ok(book)
    }

    /// Reads the charges table into the running sums (once, when the book opens).
    fn load_sums(&self) -> Result<(), LeaseError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(CHARGES).map_err(db)?;
        let mut sums = Sums::default();
        for entry in t.iter().map_err(db)? {
            let (owner, v) = entry.map_err(db)?;
            let (bytes, since) = v.value();
            sums.add(owner.value(), bytes, since);
        }
        *self.sums() = sums;
        Ok(())
    }

    fn sums(&self) -> std::sync::MutexGuard<'_, Sums> {
        // The sums are updated in whole steps under the lock: a panic elsewhere leaves
        // them consistent.
        self.sums.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies every lease of `other` into this book, in one transaction; returns how many.
    pub fn import(&self, other: &LeaseBook) -> Result<usize, LeaseError> {
        let from = other.db.clone();
        self.write(Durability::Durable, move |tx| {
            let read = from.begin_read().map_err(db)?;
            let source = read.open_table(LEASES).map_err(db)?;
            let mut t = tx.open_table(LEASES).map_err(db)?;
            let mut count = 0;
            for entry in source.iter().map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                t.insert(k.value(), v.value()).map_err(db)?;
                count += 1;
            }
            Ok(count)
        })
    }

    /// A book kept in memory only (for nodes without a home, such as tests).
    pub fn in_memory() -> Result<LeaseBook, LeaseError> {
        let database = Arc::new(
            Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(db)?,
        );
        let writer = Writer::start(database.clone(), "leases (in memory)".into())?;
        LeaseBook::in_database(database, writer)
    }

    /// Runs `change` on the database's writer and waits for its commit (not on an async
    /// thread: the book's callers run on blocking ones).
    fn write<R, F>(&self, durability: Durability, change: F) -> Result<R, LeaseError>
    where
        R: Send + 'static,
        F: FnMut(&redb::WriteTransaction) -> Result<R, LeaseError> + Send + 'static,
    {
        self.writer.submit(durability, change).wait()
    }

    fn init(&self) -> Result<(), LeaseError> {
        self.write(Durability::Durable, |tx| {
            tx.open_table(LEASES).map_err(db)?;
            tx.open_table(CHARGES).map_err(db)?;
            tx.open_table(CHARGED).map_err(db)?;
            Ok(())
        })
    }

    /// Charges `block` (`size` bytes, just stored) to `owner`, unless it is charged to a
    /// peer already. Does not wait for the disk: a charge lost in a crash only lets that
    /// peer store a little more.
    pub fn charge(&self, block: &BlockId, owner: &[u8], size: u64, now: u64) -> Result<(), LeaseError> {
        let (block, who) = (*block, owner.to_vec());
        let since = self.write(Durability::None, move |tx| {
            let mut charged = tx.open_table(CHARGED).map_err(db)?;
            if charged.get(block.0.as_slice()).map_err(db)?.is_some() {
                return Ok(None);
            }
            let mut entry = size.to_be_bytes().to_vec();
            entry.extend_from_slice(&who);
            charged.insert(block.0.as_slice(), entry.as_slice()).map_err(db)?;
            let mut charges = tx.open_table(CHARGES).map_err(db)?;
            let (bytes, since) = charges.get(who.as_slice()).map_err(db)?.map_or((0, now), |v| v.value());
            charges.insert(who.as_slice(), (bytes.saturating_add(size), since)).map_err(db)?;
            Ok(Some(since))
        })?;
        if let Some(since) = since {
            self.sums().add(owner, size, since);
        }
        Ok(())
    }

    /// The peer `block` is charged to: the one that first sent it, if it is still here.
    pub fn charged_to(&self, block: &BlockId) -> Result<Option<Vec<u8>>, LeaseError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(CHARGED).map_err(db)?;
        let entry = t.get(block.0.as_slice()).map_err(db)?;
        Ok(entry.and_then(|v| v.value().get(8..).map(<[u8]>::to_vec)))
    }

    /// What `owner`'s uploads take here, if anything (from the running sums: no
    /// transaction).
    pub fn charge_of(&self, owner: &[u8]) -> Result<Option<Charge>, LeaseError> {
        Ok(self.sums().owners.get(owner).copied())
    }

    /// Bytes charged to the peers whose first charge came after `since`, together (from
    /// the running sums: amortized O(1) while `since` moves forward, as it does when the
    /// caller passes now minus a fixed age).
    pub fn newcomers_charged(&self, since: u64) -> Result<u64, LeaseError> {
        Ok(self.sums().recent_after(since))
    }

    /// Applies lease changes in one transaction, durably.
    pub fn apply(&self, leases: &[Lease]) -> Result<(), LeaseError> {
        self.apply_with(leases, Durability::Durable)
    }

    /// Applies lease changes without waiting for the disk: they become durable with the
    /// next durable write. For the first, short lease of a block, whose owner follows up
    /// with a durable one at once; losing it in a crash only lets an orphan be collected.
    pub fn apply_soon(&self, leases: &[Lease]) -> Result<(), LeaseError> {
        self.apply_with(leases, Durability::None)
    }

    fn apply_with(&self, leases: &[Lease], durability: Durability) -> Result<(), LeaseError> {
        let leases = leases.to_vec();
        self.write(durability, move |tx| {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            for l in &leases {
                let k = key(&l.block, &l.file, &l.owner);
                if l.expires == 0 {
                    t.remove(k.as_slice()).map_err(db)?;
                } else {
                    t.insert(k.as_slice(), l.expires).map_err(db)?;
                }
            }
            Ok(())
        })
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

    /// The latest expiry among `block`'s leases held by `owner`, if it holds any.
    pub fn expiry_by(&self, block: &BlockId, owner: &[u8]) -> Result<Option<u64>, LeaseError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(LEASES).map_err(db)?;
        let mut latest = None;
        for entry in t.range::<&[u8]>(block.0.as_slice()..).map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            let k = k.value();
            if !k.starts_with(&block.0) {
                break;
            }
            if k.get(64..) == Some(owner) {
                latest = latest.max(Some(v.value()));
            }
        }
        Ok(latest)
    }

    /// Forgets every lease of `block`, and its charge (the block is gone).
    pub fn forget(&self, block: &BlockId) -> Result<(), LeaseError> {
        let block = *block;
        let freed = self.write(Durability::Durable, move |tx| {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            t.retain_in::<&[u8], _>(block.0.as_slice().., |k, _| !k.starts_with(&block.0)).map_err(db)?;
            let mut charged = tx.open_table(CHARGED).map_err(db)?;
            let entry = charged.remove(block.0.as_slice()).map_err(db)?.map(|v| v.value().to_vec());
            let Some(entry) = entry.filter(|e| e.len() >= 8) else { return Ok(None) };
            let (size, owner) = entry.split_at(8);
            let size = u64::from_be_bytes(size.try_into().unwrap_or([0; 8]));
            let mut charges = tx.open_table(CHARGES).map_err(db)?;
            let left = charges.get(owner).map_err(db)?.map(|v| v.value());
            match left {
                Some((bytes, _)) if bytes <= size => {
                    charges.remove(owner).map_err(db)?;
                }
                Some((bytes, since)) => {
                    charges.insert(owner, (bytes - size, since)).map_err(db)?;
                }
                None => {}
            }
            Ok(Some((owner.to_vec(), size)))
        })?;
        if let Some((owner, size)) = freed {
            self.sums().take(&owner, size);
        }
        Ok(())
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
    fn a_block_is_charged_once_to_its_first_sender_until_it_is_collected() {
        let book = LeaseBook::in_memory().unwrap();
        let (a, b) = (BlockId([1; 32]), BlockId([2; 32]));
        book.charge(&a, b"alice", 100, 10).unwrap();
        book.charge(&a, b"bob", 100, 20).unwrap(); // the same block again: alice keeps it
        book.charge(&b, b"alice", 50, 30).unwrap();
        assert_eq!(book.charge_of(b"alice").unwrap(), Some(Charge { bytes: 150, since: 10 }));
        assert_eq!(book.charge_of(b"bob").unwrap(), None);
        book.charge(&BlockId([3; 32]), b"bob", 7, 40).unwrap();
        assert_eq!(book.newcomers_charged(9).unwrap(), 157);
        assert_eq!(book.newcomers_charged(10).unwrap(), 7, "alice's first charge is not after 10");
        book.forget(&a).unwrap();
        assert_eq!(book.charge_of(b"alice").unwrap(), Some(Charge { bytes: 50, since: 10 }));
        book.forget(&b).unwrap();
        assert_eq!(book.charge_of(b"alice").unwrap(), None, "nothing left: alice is new again");
        book.forget(&b).unwrap(); // twice: nothing happens
    }

    /// The running sums agree with the table they mirror, after any charges and frees, at
    /// any horizon, and after a reopen (which reads them from the table).
    #[test]
    fn the_running_sums_agree_with_the_charges_table() {
        use proptest::prelude::*;
        let ops = proptest::collection::vec((0u8..6, 0u8..4, 1u64..1000, 0u64..100, any::<bool>()), 1..60);
        proptest!(ProptestConfig::with_cases(64), |(ops in ops, ages in proptest::collection::vec(0u64..120, 1..6))| {
            let file = tempfile::NamedTempFile::new().unwrap();
            let book = LeaseBook::open(file.path()).unwrap();
            for (block, owner, size, at, free) in &ops {
                let id = BlockId([*block; 32]);
                if *free {
                    book.forget(&id).unwrap();
                } else {
                    book.charge(&id, &[*owner], *size, *at).unwrap();
                }
            }
            let scan = |book: &LeaseBook, since: u64| {
                let tx = book.db.begin_read().unwrap();
                let t = tx.open_table(CHARGES).unwrap();
                t.iter().unwrap().map(|e| e.unwrap().1.value()).filter(|(_, f)| *f > since).map(|(b, _)| b).sum::<u64>()
            };
            for since in &ages {
                prop_assert_eq!(book.newcomers_charged(*since).unwrap(), scan(&book, *since));
            }
            for owner in 0u8..4 {
                let tx = book.db.begin_read().unwrap();
                let t = tx.open_table(CHARGES).unwrap();
                let row = t.get([owner].as_slice()).unwrap().map(|v| { let (bytes, since) = v.value(); Charge { bytes, since } });
                prop_assert_eq!(book.charge_of(&[owner]).unwrap(), row);
            }
            drop(book);
            let again = LeaseBook::open(file.path()).unwrap();
            for since in &ages {
                prop_assert_eq!(again.newcomers_charged(*since).unwrap(), scan(&again, *since));
            }
        });
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
