//! The block book's record: which peers hold the blocks of a group, under the group's id,
//! as one Kademlia record, so that a peer that knows only the group's id finds every holder
//! (and how to dial it) in a single DHT query.
//!
//! The node publishes one for each file it puts (the group is the manifest, the blocks its
//! pieces), before the put returns; holders' provider records stay the fallback (after
//! churn, for a holder the record does not name).
//!
//! Format (version 1), every length bounded:
//! `"JBK1" ‖ group (32) ‖ seq (u64 BE) ‖ count (u16 BE) ‖ count × holder`, a holder being
//! `block (32) ‖ peer len (u8) ‖ peer id ‖ addr count (u8) ‖ addr count × (len (u16 BE) ‖ addr)`.
//! A record is at most [`MAX_RECORD`] bytes; addresses are left out when they do not fit.
//! A record is only a hint: every byte fetched from a holder it names is still verified
//! against its block id, so a forged record costs time, never a wrong byte.

use jewel_store::BlockId;
use libp2p::{Multiaddr, PeerId};

/// The largest record, in bytes.
pub const MAX_RECORD: usize = 32 << 10;
/// Holders in one record, at most (a file uses at most 256 peers).
pub const MAX_HOLDERS: usize = 256;
/// Addresses kept per holder, at most.
pub const MAX_ADDRS: usize = 4;
/// The longest address kept, in bytes.
const MAX_ADDR_LEN: usize = 256;
const MAGIC: &[u8; 4] = b"JBK1";
/// The DHT key's prefix: records live apart from provider records and from other uses.
const KEY_PREFIX: &[u8] = b"/jewel/holders/";

/// Why a record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    #[error("holders record: {0}")]
    Malformed(&'static str),
    #[error("holders record of {size} bytes; the limit is {MAX_RECORD}")]
    TooLarge { size: usize },
}

/// One holder: a peer that holds `block`, and where to dial it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub block: BlockId,
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// Who holds the blocks of `group`; a higher `seq` replaces a lower one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldersRecord {
    pub group: BlockId,
    pub seq: u64,
    pub holders: Vec<Holder>,
}

/// The DHT key of `group`'s record.
pub fn key(group: &BlockId) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(&group.0);
    k
}

/// The group a DHT key names, if it is a holders record's key.
pub fn group_of(key: &[u8]) -> Option<BlockId> {
    let id = key.strip_prefix(KEY_PREFIX)?;
    Some(BlockId(id.try_into().ok()?))
}

impl HoldersRecord {
    /// The widest scope of any address in the record (`None`: it has none).
    pub fn widest(&self) -> Option<crate::reach::Scope> {
        self.holders.iter().flat_map(|h| &h.addrs).filter_map(crate::reach::scope).max()
    }

    /// Keeps only the addresses that reach at least as far as `over` (see
    /// [`crate::reach::usable`]).
    pub fn keep_reaching(&mut self, over: crate::reach::Scope) {
        for h in &mut self.holders {
            h.addrs.retain(|a| crate::reach::usable(a, over));
        }
    }

    /// Address hygiene for a record anyone may read: where it has addresses that reach the
    /// internet, its private and loopback ones go (they name machines in a reader's own
    /// network, or none, and tell strangers how a home is laid out). A record among
    /// machines of one network (a devnet on loopback, a LAN) keeps its addresses.
    pub fn scoped(mut self) -> Self {
        if let Some(widest) = self.widest() {
            self.keep_reaching(widest);
        }
        self
    }

    /// The record's bytes, at most [`MAX_RECORD`]: addresses are dropped (last holders'
    /// first) until it fits. Fails only if the holders alone do not fit.
    pub fn encode(&self) -> Result<Vec<u8>, BookError> {
        if self.holders.len() > MAX_HOLDERS {
            return Err(BookError::Malformed("more holders than a file can have"));
        }
        let mut addrs: Vec<Vec<&Multiaddr>> = self
            .holders
            .iter()
            .map(|h| h.addrs.iter().filter(|a| a.to_vec().len() <= MAX_ADDR_LEN).take(MAX_ADDRS).collect())
            .collect();
        loop {
            let out = self.encode_with(&addrs);
            if out.len() <= MAX_RECORD {
                return Ok(out);
            }
            match addrs.iter_mut().rev().find(|a| !a.is_empty()) {
                Some(a) => {
                    a.pop();
                }
                None => return Err(BookError::TooLarge { size: out.len() }),
            }
        }
    }

    fn encode_with(&self, addrs: &[Vec<&Multiaddr>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(46 + self.holders.len() * 80);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.group.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(self.holders.len() as u16).to_be_bytes());
        for (h, addrs) in self.holders.iter().zip(addrs) {
            out.extend_from_slice(&h.block.0);
            let peer = h.peer.to_bytes();
            out.push(peer.len() as u8);
            out.extend_from_slice(&peer);
            out.push(addrs.len() as u8);
            for a in addrs {
                let bytes = a.to_vec();
                out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    /// Decodes a record, checking every length against its bound.
    pub fn decode(bytes: &[u8]) -> Result<HoldersRecord, BookError> {
        if bytes.len() > MAX_RECORD {
            return Err(BookError::TooLarge { size: bytes.len() });
        }
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(BookError::Malformed("not a version 1 holders record"));
        }
        let group = BlockId(r.array()?);
        let seq = u64::from_be_bytes(r.array()?);
        let count = u16::from_be_bytes(r.array()?) as usize;
        if count > MAX_HOLDERS {
            return Err(BookError::Malformed("too many holders"));
        }
        let mut holders = Vec::with_capacity(count);
        for _ in 0..count {
            let block = BlockId(r.array()?);
            let len = r.byte()? as usize;
            let peer = PeerId::from_bytes(r.take(len)?).map_err(|_| BookError::Malformed("bad peer id"))?;
            let n = r.byte()? as usize;
            if n > MAX_ADDRS {
                return Err(BookError::Malformed("too many addresses"));
            }
            let mut addrs = Vec::with_capacity(n);
            for _ in 0..n {
                let len = u16::from_be_bytes(r.array()?) as usize;
                if len > MAX_ADDR_LEN {
                    return Err(BookError::Malformed("address too long"));
                }
                let a = Multiaddr::try_from(r.take(len)?.to_vec())
                    .map_err(|_| BookError::Malformed("bad address"))?;
                addrs.push(a);
            }
            holders.push(Holder { block, peer, addrs });
        }
        if !r.0.is_empty() {
            return Err(BookError::Malformed("bytes past the end"));
        }
        Ok(HoldersRecord { group, seq, holders })
    }
}

/// A cursor over a bounded binary format (holders records, invites).
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], BookError> {
        if self.0.len() < n {
            return Err(BookError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, BookError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BookError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_record_with_internet_addresses_carries_no_private_or_loopback_ones() {
        let peer = PeerId::random();
        let holder = |addrs: &[&str]| Holder {
            block: BlockId([1; 32]),
            peer,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let mixed = HoldersRecord {
            group: BlockId([2; 32]),
            seq: 1,
            holders: vec![
                holder(&["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.2/tcp/4001", "/ip4/11.1.3.1/tcp/4001"]),
                holder(&["/ip4/10.0.0.7/tcp/4001"]),
            ],
        }
        .scoped();
        let kept: Vec<String> = mixed.holders.iter().flat_map(|h| &h.addrs).map(|a| a.to_string()).collect();
        assert_eq!(kept, ["/ip4/11.1.3.1/tcp/4001"]);
        let devnet = HoldersRecord {
            group: BlockId([2; 32]),
            seq: 1,
            holders: vec![holder(&["/ip4/127.0.0.1/tcp/4001"]), holder(&["/ip4/127.0.0.1/tcp/4002"])],
        };
        assert_eq!(devnet.clone().scoped(), devnet, "a loopback devnet keeps its addresses");
    }

    fn record(n: usize, addrs: usize) -> HoldersRecord {
        HoldersRecord {
            group: BlockId([7; 32]),
            seq: 42,
            holders: (0..n)
                .map(|i| Holder {
                    block: BlockId([i as u8; 32]),
                    peer: PeerId::random(),
                    addrs: (0..addrs)
                        .map(|p| format!("/ip6/2001:db8::1:{i:x}/tcp/{}", 4000 + p).parse().unwrap())
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_and_their_keys_name_their_group() {
        let r = record(16, 2);
        assert_eq!(HoldersRecord::decode(&r.encode().unwrap()).unwrap(), r);
        assert_eq!(group_of(&key(&r.group)), Some(r.group));
        assert_eq!(group_of(b"/other/key"), None);
    }

    #[test]
    fn a_big_record_drops_addresses_to_fit_and_keeps_every_holder() {
        let r = record(MAX_HOLDERS, MAX_ADDRS);
        let whole: Vec<Vec<&Multiaddr>> = r.holders.iter().map(|h| h.addrs.iter().collect()).collect();
        assert!(r.encode_with(&whole).len() > MAX_RECORD, "the test record must not fit whole");
        let bytes = r.encode().unwrap();
        assert!(bytes.len() <= MAX_RECORD);
        let back = HoldersRecord::decode(&bytes).unwrap();
        assert_eq!(back.holders.len(), MAX_HOLDERS);
        assert!(back.holders.iter().zip(&r.holders).all(|(a, b)| a.peer == b.peer && a.block == b.block));
        assert!(back.holders[0].addrs.len() > back.holders[MAX_HOLDERS - 1].addrs.len());
    }

    #[test]
    fn bad_records_get_their_own_errors() {
        let good = record(2, 1).encode().unwrap();
        assert_eq!(
            HoldersRecord::decode(b"JBK2xxxx"),
            Err(BookError::Malformed("not a version 1 holders record"))
        );
        assert_eq!(HoldersRecord::decode(&good[..good.len() - 1]), Err(BookError::Malformed("truncated")));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(HoldersRecord::decode(&long), Err(BookError::Malformed("bytes past the end")));
        let mut many = good.clone();
        many[44..46].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(HoldersRecord::decode(&many), Err(BookError::Malformed("too many holders")));
        assert!(matches!(HoldersRecord::decode(&vec![0; MAX_RECORD + 1]), Err(BookError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = HoldersRecord::decode(&bytes);
            let mut framed = b"JBK1".to_vec();
            framed.extend_from_slice(&bytes);
            if let Ok(r) = HoldersRecord::decode(&framed) {
                prop_assert_eq!(HoldersRecord::decode(&r.encode().unwrap()).unwrap(), r);
            }
        }
    }
}
