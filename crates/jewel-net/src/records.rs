//! The DHT's record store: Kademlia's in-memory store, with limits by kind of record, so
//! that many files' holders records never crowd out the signed name records a user's index
//! lives by, and memory stays bounded whatever peers send:
//! - holders records (`crate::book`): at most [`MAX_HOLDERS_BYTES`] of values in all;
//! - name records (`jewel::names`, at most 1 KiB each): at most [`MAX_NAMES`].
//!
//! A record over its kind's limit is refused (`MaxRecords`); replacing a record counts only
//! the difference.

use std::borrow::Cow;

use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

/// The holders records' values kept, in bytes, at most (64 MiB: about 60 000 files'
/// records of 1 KiB).
pub const MAX_HOLDERS_BYTES: usize = 64 << 20;
/// Name records kept, at most (1 KiB each: 16 MiB).
pub const MAX_NAMES: usize = 16_384;

pub(crate) struct RecordBook {
    inner: MemoryStore,
    holders_bytes: usize,
    names: usize,
}

fn is_name(key: &RecordKey) -> bool {
    key.as_ref().starts_with(jewel::names::KEY_PREFIX)
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
        RecordBook { inner: MemoryStore::with_config(peer, config), holders_bytes: 0, names: 0 }
    }

    fn forget(&mut self, key: &RecordKey) {
        if let Some(old) = self.inner.get(key) {
            if is_name(key) {
                self.names = self.names.saturating_sub(1);
            } else {
                self.holders_bytes = self.holders_bytes.saturating_sub(old.value.len());
            }
        }
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
            if old.is_none() && self.names >= MAX_NAMES {
                return Err(Error::MaxRecords);
            }
        } else if self.holders_bytes - old.unwrap_or(0) + r.value.len() > MAX_HOLDERS_BYTES {
            return Err(Error::MaxRecords);
        }
        let key = r.key.clone();
        let len = r.value.len();
        self.inner.put(r)?;
        if is_name(&key) {
            self.names += usize::from(old.is_none());
        } else {
            self.holders_bytes = self.holders_bytes - old.unwrap_or(0) + len;
        }
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
        let name = [jewel::names::KEY_PREFIX, b"n1"].concat();
        book.put(record(&name, 500)).unwrap();
        book.put(record(b"/jewel/holders/0", 10)).unwrap();
        book.put(record(b"/jewel/holders/x", big - 10)).unwrap();
        book.remove(&RecordKey::new(&b"/jewel/holders/1".to_vec()));
        book.put(record(b"/jewel/holders/y", big)).unwrap();
        assert_eq!(book.names, 1);
    }
}
