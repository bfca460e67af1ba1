//! The DHT's two kinds of record, one way: holders records (`crate::book`: unsigned hints,
//! every byte they lead to verified) and name records (`jewel_store::names`: signed by
//! their user). Each is a [`DhtRecord`]: stored under a key it names itself, decoded only
//! if genuine and for that key, and never replaced by a lower sequence number, whether it
//! comes from a peer's store request, a lookup's answer or this node's own publication.

use std::time::Duration;

use libp2p::{kad, PeerId};
use tokio::sync::oneshot;

use crate::book::{self, HoldersRecord};
use jewel_store::names::{self, NameRecord};

/// A record kept in the DHT under its own key.
pub(crate) trait DhtRecord: Sized {
    /// What it is called in logs and errors.
    const KIND: &'static str;
    /// Valid answers a lookup waits for; the highest sequence number among them wins.
    const ANSWERS: usize;
    /// How long peers keep it, if not Kademlia's record TTL.
    const TTL: Option<Duration>;
    /// Whether only its author can make one: then a newer one kept is genuine, and this
    /// node does not publish an older one over it. (A newer unsigned hint kept may be a
    /// forgery; the author publishes anyway.)
    const SIGNED: bool;
    /// Decodes `value`, stored under `key`: refused unless genuine and for that key.
    fn decode_at(key: &[u8], value: &[u8]) -> Result<Self, String>;
    fn key(&self) -> Vec<u8>;
    fn seq(&self) -> u64;
    fn encode(&self) -> Result<Vec<u8>, String>;
}

impl DhtRecord for HoldersRecord {
    const KIND: &'static str = "holders record";
    // The first good one: a get needs one placement, and every byte it leads to is verified.
    const ANSWERS: usize = 1;
    const TTL: Option<Duration> = None;
    const SIGNED: bool = false;

    fn decode_at(key: &[u8], value: &[u8]) -> Result<Self, String> {
        let group = book::group_of(key).ok_or("a record under a foreign key")?;
        let r = HoldersRecord::decode(value).map_err(|e| e.to_string())?;
        if r.group != group {
            return Err("a holders record stored under another file's key".into());
        }
        Ok(r)
    }

    fn key(&self) -> Vec<u8> {
        book::key(&self.group)
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        HoldersRecord::encode(self).map_err(|e| e.to_string())
    }
}

impl DhtRecord for NameRecord {
    const KIND: &'static str = "name record";
    const ANSWERS: usize = super::NAME_ANSWERS;
    const TTL: Option<Duration> = Some(super::NAME_TTL);
    const SIGNED: bool = true;

    fn decode_at(key: &[u8], value: &[u8]) -> Result<Self, String> {
        NameRecord::decode_at(key, value).map_err(|e| e.to_string())
    }

    fn key(&self) -> Vec<u8> {
        names::key(&self.user, &self.slot)
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        NameRecord::encode(self).map_err(|e| e.to_string())
    }
}

/// The record of kind `R` this node keeps under `key`, if any decodes.
fn kept<R: DhtRecord>(store: &crate::records::RecordBook, key: &kad::RecordKey) -> Option<R> {
    use kad::store::RecordStore;
    store.get(key).and_then(|k| R::decode_at(key.as_ref(), &k.value).ok())
}

/// Checks a record a peer asks this node to keep: genuine, for its key, and not older than
/// the one kept (a replay cannot take a record back).
pub(crate) fn accept<R: DhtRecord>(
    store: &crate::records::RecordBook,
    record: &kad::Record,
) -> Result<R, String> {
    let r = R::decode_at(record.key.as_ref(), &record.value)?;
    match kept::<R>(store, &record.key) {
        Some(k) if k.seq() > r.seq() => {
            Err(format!("a replayed {} (sequence {} is older than the {} kept)", R::KIND, r.seq(), k.seq()))
        }
        _ => Ok(r),
    }
}

/// The Kademlia record to publish for `r`, unless it must not be (it does not encode, or
/// it is signed and a newer one is known).
pub(crate) fn to_publish<R: DhtRecord>(
    store: &crate::records::RecordBook,
    r: &R,
) -> Result<kad::Record, String> {
    let mut record = kad::Record::new(r.key(), r.encode()?);
    if R::SIGNED {
        // Never over a newer record this node keeps (Kademlia would store it here as it is).
        if let Some(k) = kept::<R>(store, &record.key).filter(|k| k.seq() > r.seq()) {
            return Err(format!("a newer {} (sequence {} > {}) is known", R::KIND, k.seq(), r.seq()));
        }
    }
    record.expires = R::TTL.map(|ttl| std::time::Instant::now() + ttl);
    Ok(record)
}

/// A lookup under way: the best valid answer so far (and who gave it), how many valid
/// answers came, and who waits.
pub(crate) struct Lookup<R> {
    key: Vec<u8>,
    best: Option<(R, Option<PeerId>)>,
    answers: usize,
    reply: oneshot::Sender<Option<R>>,
}

impl<R: DhtRecord> Lookup<R> {
    pub(crate) fn new(key: Vec<u8>, reply: oneshot::Sender<Option<R>>) -> Lookup<R> {
        Lookup { key, best: None, answers: 0, reply }
    }

    /// Takes one step of the query's result; true once the lookup is done (enough valid
    /// answers, the query's last step, or its failure). Invalid answers are refused.
    pub(crate) fn answered(
        &mut self,
        result: &Result<kad::GetRecordOk, kad::GetRecordError>,
        last: bool,
    ) -> bool {
        if let Ok(kad::GetRecordOk::FoundRecord(found)) = result {
            match R::decode_at(&self.key, &found.record.value) {
                Ok(r) => {
                    self.answers += 1;
                    if self.best.as_ref().is_none_or(|(b, _)| b.seq() < r.seq()) {
                        self.best = Some((r, found.peer));
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = ?found.peer, error = %e, kind = R::KIND, "refused a record a peer answered with")
                }
            }
        }
        last || result.is_err() || self.answers >= R::ANSWERS
    }

    /// Answers the waiter with the best answer, made ready by `ready` (given the peer that
    /// gave it; `None`: this node's own store).
    pub(crate) fn finish(self, ready: impl FnOnce(R, Option<PeerId>) -> R) {
        let _ = self.reply.send(self.best.map(|(r, from)| ready(r, from)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Holder;
    use crate::records::RecordBook;
    use jewel_store::BlockId;
    use kad::store::RecordStore;

    fn name(seq: u64, signer: &ed25519_dalek::SigningKey) -> NameRecord {
        NameRecord::signed(signer, [1; 32], seq, vec![seq as u8; 40]).unwrap()
    }

    fn holders(seq: u64) -> HoldersRecord {
        let holder = Holder { block: BlockId([2; 32]), peer: PeerId::random(), addrs: vec![] };
        HoldersRecord { group: BlockId([3; 32]), seq, holders: vec![holder] }
    }

    fn as_kad<R: DhtRecord>(r: &R) -> kad::Record {
        kad::Record::new(r.key(), r.encode().unwrap())
    }

    /// Both kinds are checked one way: a replay (a lower sequence number than the one
    /// kept) is refused, as is a record under another key or a forged signature.
    #[test]
    fn both_kinds_refuse_replays_foreign_keys_and_forgeries() {
        let mut book = RecordBook::new(PeerId::random(), 16, 64 << 10);
        let signer = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        book.put(as_kad(&name(5, &signer))).unwrap();
        book.put(as_kad(&holders(5))).unwrap();
        assert!(accept::<NameRecord>(&book, &as_kad(&name(6, &signer))).is_ok());
        let replay = accept::<NameRecord>(&book, &as_kad(&name(4, &signer))).unwrap_err();
        assert!(replay.contains("replayed name record"), "{replay}");
        let replay = accept::<HoldersRecord>(&book, &as_kad(&holders(4))).unwrap_err();
        assert!(replay.contains("replayed holders record"), "{replay}");
        let mut elsewhere = as_kad(&holders(9));
        elsewhere.key = kad::RecordKey::new(&book::key(&BlockId([4; 32])));
        assert!(accept::<HoldersRecord>(&book, &elsewhere).is_err(), "another file's key");
        let mut forged = name(9, &signer);
        forged.sealed[0] ^= 1;
        assert!(accept::<NameRecord>(&book, &as_kad(&forged)).is_err(), "a forged signature");
    }

    /// A node does not publish a signed record older than one it keeps (that one is
    /// genuine); an unsigned holders record is published over a newer one kept, which may
    /// be a forger's.
    #[test]
    fn only_signed_records_are_not_published_over_newer_ones() {
        let mut book = RecordBook::new(PeerId::random(), 16, 64 << 10);
        let signer = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        book.put(as_kad(&name(5, &signer))).unwrap();
        book.put(as_kad(&holders(u64::MAX))).unwrap();
        let refused = to_publish(&book, &name(4, &signer)).unwrap_err();
        assert!(refused.contains("newer name record"), "{refused}");
        let named = to_publish(&book, &name(6, &signer)).unwrap();
        assert!(named.expires.is_some(), "name records carry their TTL");
        assert!(to_publish(&book, &holders(7)).is_ok());
    }

    /// A lookup keeps the highest sequence number among the valid answers it waits for
    /// and refuses the rest.
    #[test]
    fn a_lookup_keeps_the_newest_valid_answer() {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let key = name(1, &signer).key();
        let (tx, mut rx) = oneshot::channel();
        let mut lookup = Lookup::<NameRecord>::new(key.clone(), tx);
        let found = |r: kad::Record| {
            Ok(kad::GetRecordOk::FoundRecord(kad::PeerRecord { peer: Some(PeerId::random()), record: r }))
        };
        let mut bad = as_kad(&name(99, &signer));
        bad.value[10] ^= 1;
        assert!(!lookup.answered(&found(bad), false), "an invalid answer does not count");
        assert!(!lookup.answered(&found(as_kad(&name(7, &signer))), false));
        assert!(lookup.answered(&found(as_kad(&name(3, &signer))), false), "two valid answers end it");
        lookup.finish(|r, from| {
            assert!(from.is_some());
            r
        });
        assert_eq!(rx.try_recv().unwrap().map(|r| r.seq), Some(7));
    }
}
