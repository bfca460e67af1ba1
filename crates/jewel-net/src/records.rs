//! The DHT's record store: Kademlia's in-memory store, with limits by kind of record, so
//! that many files' holders records never crowd out the signed name records a user's index
//! lives by, and memory stays bounded whatever peers send:
//! - holders records (`crate::book`): at most [`MAX_HOLDERS_BYTES`] of values in all;
//! - name records (`jewel_store::names`, at most 1 KiB each): at most [`MAX_NAMES`].
//!
//! A holders record over its kind's limit is refused (`MaxRecords`); replacing a record
//! counts only the difference.
//!
//! Name records are self-signed, so anyone can make as many as they like: a flood of them
//! must not crowd out the records users' indexes live by. So a user has at most
//! [`MAX_NAMES_PER_USER`] here, and once [`MAX_NAMES`] are kept, a new record takes the
//! place of the oldest record of the peer that sent the most (a flood evicts its own
//! records first, and a peer that sent a few keeps them).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

/// The holders records' values kept, in bytes, at most (64 MiB: about 60 000 files'
/// records of 1 KiB).
pub const MAX_HOLDERS_BYTES: usize = 64 << 20;
/// Name records kept, at most (1 KiB each: 16 MiB).
pub const MAX_NAMES: usize = 16_384;
/// Name records of one user kept, at most (a head per device and the names they publish).
pub const MAX_NAMES_PER_USER: usize = 256;

/// Who sent a name record and for which user, and when it came (an order, not a time).
struct NameMeta {
    source: PeerId,
    user: [u8; 32],
    order: u64,
}

pub(crate) struct RecordBook {
    inner: MemoryStore,
    local: PeerId,
    holders_bytes: usize,
    names: usize,
    name_meta: HashMap<RecordKey, NameMeta>,
    /// Each source's name records, oldest first.
    by_source: HashMap<PeerId, BTreeMap<u64, RecordKey>>,
    per_user: HashMap<[u8; 32], usize>,
    order: u64,
}

fn is_name(key: &RecordKey) -> bool {
    key.as_ref().starts_with(jewel_store::names::KEY_PREFIX)
}

impl RecordBook {
    pub(crate) fn new(peer: PeerId, max_provided_keys: usize, max_value_bytes: usize) -> RecordBook {
        let config = MemoryStoreConfig {
            max_provided_keys,
            // The limits by kind below bound the count; this is only a backstop.
            max_records: MAX_NAMES + MAX_HOLDERS_BYTES / 64,
            max_value_bytes,
            ..Default::default()
        };
        RecordBook {
            inner: MemoryStore::with_config(peer, config),
            local: peer,
            holders_bytes: 0,
            names: 0,
            name_meta: HashMap::new(),
            by_source: HashMap::new(),
            per_user: HashMap::new(),
            order: 0,
        }
    }

    fn forget(&mut self, key: &RecordKey) {
        if let Some(old) = self.inner.get(key) {
            if is_name(key) {
                self.names = self.names.saturating_sub(1);
            } else {
                self.holders_bytes = self.holders_bytes.saturating_sub(old.value.len());
            }
        }
        self.forget_name_meta(key);
    }

    fn forget_name_meta(&mut self, key: &RecordKey) {
        let Some(meta) = self.name_meta.remove(key) else { return };
        if let Some(keys) = self.by_source.get_mut(&meta.source) {
            keys.remove(&meta.order);
            if keys.is_empty() {
                self.by_source.remove(&meta.source);
            }
        }
        if let Some(n) = self.per_user.get_mut(&meta.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&meta.user);
            }
        }
    }

    /// Keeps a name record `source` sent, for `user` (both checked by the caller), within
    /// the limits of the module's doc: refused if the user has too many, else evicting the
    /// oldest record of the peer that sent the most when the store is full.
    pub(crate) fn put_name(&mut self, r: Record, source: PeerId, user: [u8; 32]) -> Result<()> {
        let replacing = self.inner.get(&r.key).is_some();
        if !replacing {
            if self.per_user.get(&user).copied().unwrap_or(0) >= MAX_NAMES_PER_USER {
                return Err(Error::MaxRecords);
            }
            if self.names >= MAX_NAMES {
                let largest = self.by_source.iter().max_by_key(|(_, keys)| keys.len()).map(|(p, _)| *p);
                let oldest = largest.and_then(|p| self.by_source.get(&p)?.values().next().cloned());
                match oldest {
                    Some(key) => {
                        self.forget(&key);
                        self.inner.remove(&key);
                    }
                    None => return Err(Error::MaxRecords),
                }
            }
        }
        let key = r.key.clone();
        self.inner.put(r)?;
        self.names += usize::from(!replacing);
        self.forget_name_meta(&key);
        self.order += 1;
        let order = self.order;
        self.by_source.entry(source).or_default().insert(order, key.clone());
        *self.per_user.entry(user).or_default() += 1;
        self.name_meta.insert(key, NameMeta { source, user, order });
        Ok(())
    }
}

impl RecordStore for RecordBook {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        let old = self.inner.get(&r.key).map(|o| o.value.len());
        if is_name(&r.key) {
            // This node's own publications (peers' go through `put_name`).
            let user =
                jewel_store::names::NameRecord::decode(&r.value).map_err(|_| Error::ValueTooLarge)?.user;
            let local = self.local;
            return self.put_name(r, local, user);
        } else if self.holders_bytes - old.unwrap_or(0) + r.value.len() > MAX_HOLDERS_BYTES {
            return Err(Error::MaxRecords);
        }
        let len = r.value.len();
        self.inner.put(r)?;
        self.holders_bytes = self.holders_bytes - old.unwrap_or(0) + len;
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.forget(k);
        self.inner.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        self.inner.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.inner.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.inner.remove_provider(k, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &[u8], len: usize) -> Record {
        Record::new(key.to_vec(), vec![0; len])
    }

    #[test]
    fn kinds_have_their_own_limits_and_replacing_counts_the_difference() {
        let mut book = RecordBook::new(PeerId::random(), 16, 32 << 10);
        let big = 16 << 10;
        let fit = MAX_HOLDERS_BYTES / big;
        for i in 0..fit {
            book.put(record(format!("/jewel/holders/{i}").as_bytes(), big)).unwrap();
        }
        assert!(matches!(book.put(record(b"/jewel/holders/x", big)), Err(Error::MaxRecords)));
        // A name record still fits; replacing a holders record with a smaller one frees room.
        let name = [jewel_store::names::KEY_PREFIX, b"n1"].concat();
        book.put_name(record(&name, 500), PeerId::random(), [1; 32]).unwrap();
        book.put(record(b"/jewel/holders/0", 10)).unwrap();
        book.put(record(b"/jewel/holders/x", big - 10)).unwrap();
        book.remove(&RecordKey::new(&b"/jewel/holders/1".to_vec()));
        book.put(record(b"/jewel/holders/y", big)).unwrap();
        assert_eq!(book.names, 1);
    }

    fn name(i: usize) -> Record {
        record(&[jewel_store::names::KEY_PREFIX, format!("k{i}").as_bytes()].concat(), 100)
    }

    #[test]
    fn a_flood_of_name_records_evicts_its_own_and_keeps_others() {
        let mut book = RecordBook::new(PeerId::random(), 16, 32 << 10);
        // An honest peer's few records, then a flood from one peer, each record a new user.
        let honest = PeerId::random();
        for i in 0..10 {
            book.put_name(name(i), honest, [i as u8; 32]).unwrap();
        }
        let flood = PeerId::random();
        for i in 10..MAX_NAMES + 5000 {
            let mut user = [0u8; 32];
            user[..8].copy_from_slice(&(i as u64).to_be_bytes());
            book.put_name(name(i), flood, user).unwrap();
        }
        assert_eq!(book.names, MAX_NAMES);
        for i in 0..10 {
            assert!(book.get(&name(i).key).is_some(), "the honest peer's record {i} was evicted");
        }
        // A new honest record still goes in.
        book.put_name(name(999_999), PeerId::random(), [9; 32]).unwrap();
        assert!(book.get(&name(999_999).key).is_some());
        assert_eq!(book.names, MAX_NAMES);
        // One user cannot take more than its share, whoever sends them.
        let mut refused = 0;
        for i in 0..MAX_NAMES_PER_USER + 10 {
            if book.put_name(name(2_000_000 + i), PeerId::random(), [42; 32]).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 10);
        // Removing a record frees its user's count.
        book.remove(&name(2_000_000).key);
        book.put_name(name(3_000_000), PeerId::random(), [42; 32]).unwrap();
    }
}
