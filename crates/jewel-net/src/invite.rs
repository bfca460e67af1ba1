//! Invites: a node's peer id and the addresses others reach it at, as one line a person
//! can copy, paste and send (like Tahoe's grid invites or Syncthing's device ids).
//!
//! `jewel-invite:` then lowercase base32 (case and spaces do not matter when read back) of:
//! a version byte (1), the peer id (length-prefixed), up to [`MAX_ADDRS`] multiaddrs
//! (length-prefixed, binary), and the first 4 bytes of their BLAKE3 hash, so a damaged
//! invite is told apart from one that cannot be reached.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// What every invite starts with.
pub const PREFIX: &str = "jewel-invite:";
/// Addresses an invite carries at most.
pub const MAX_ADDRS: usize = 8;
const VERSION: u8 = 1;

/// Why a line is not a usable invite.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteError {
    #[error("not a Jewel invite: it should start with `{PREFIX}` (ask for one with `jewel invite`)")]
    Prefix,
    #[error("the invite is damaged ({0}): copy the whole line again")]
    Damaged(&'static str),
    #[error("the invite is from a newer Jewel (version {0}); update this one")]
    Version(u8),
    #[error("the invite names no address to reach its node at")]
    NoAddress,
}

/// A node's id and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

impl Invite {
    /// The invite of `peer` at `addrs` (the first [`MAX_ADDRS`]; a trailing `/p2p/` id is
    /// dropped, it is in the invite once).
    pub fn new(peer: PeerId, addrs: &[Multiaddr]) -> Invite {
        let addrs = addrs
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if matches!(a.iter().last(), Some(Protocol::P2p(p)) if p == peer) {
                    a.pop();
                }
                a
            })
            .take(MAX_ADDRS)
            .collect();
        Invite { peer, addrs }
    }

    /// The one line to send.
    pub fn encode(&self) -> String {
        let mut bytes = vec![VERSION];
        let id = self.peer.to_bytes();
        bytes.push(id.len() as u8);
        bytes.extend_from_slice(&id);
        bytes.push(self.addrs.len().min(MAX_ADDRS) as u8);
        for a in self.addrs.iter().take(MAX_ADDRS) {
            let a = a.to_vec();
            bytes.extend_from_slice(&(a.len().min(u16::MAX as usize) as u16).to_be_bytes());
            bytes.extend_from_slice(&a);
        }
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(&sum.as_bytes()[..4]);
        format!("{PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase())
    }

    /// Reads an invite (spaces, line breaks and case do not matter).
    pub fn decode(text: &str) -> Result<Invite, InviteError> {
        let text = text.trim();
        let body = match text.get(..PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(PREFIX) => &text[PREFIX.len()..],
            _ => return Err(InviteError::Prefix),
        };
        let clean: String = body
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|_| InviteError::Damaged("not base32"))?;
        if bytes.len() < 5 {
            return Err(InviteError::Damaged("too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if &blake3::hash(body).as_bytes()[..4] != sum {
            return Err(InviteError::Damaged("its checksum does not match"));
        }
        let mut r = crate::book::Reader(body);
        let cut = |_| InviteError::Damaged("cut short");
        let version = r.byte().map_err(cut)?;
        if version != VERSION {
            return Err(InviteError::Version(version));
        }
        let n = r.byte().map_err(cut)? as usize;
        let peer =
            PeerId::from_bytes(r.take(n).map_err(cut)?).map_err(|_| InviteError::Damaged("a bad peer id"))?;
        let count = r.byte().map_err(cut)? as usize;
        let mut addrs = Vec::with_capacity(count.min(MAX_ADDRS));
        for _ in 0..count {
            let len = u16::from_be_bytes([r.byte().map_err(cut)?, r.byte().map_err(cut)?]) as usize;
            let a = Multiaddr::try_from(r.take(len).map_err(cut)?.to_vec())
                .map_err(|_| InviteError::Damaged("a bad address"))?;
            addrs.push(a);
        }
        if addrs.is_empty() {
            return Err(InviteError::NoAddress);
        }
        Ok(Invite { peer, addrs })
    }

    /// The addresses to dial, each ending with the node's `/p2p/` id.
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.addrs.iter().map(|a| a.clone().with(Protocol::P2p(self.peer))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Invite {
        let peer = PeerId::random();
        let relayed: Multiaddr =
            format!("/ip4/11.0.0.1/tcp/4001/p2p/{}/p2p-circuit", PeerId::random()).parse().unwrap();
        Invite::new(
            peer,
            &[
                format!("/ip4/11.0.1.3/tcp/4001/p2p/{peer}").parse().unwrap(),
                "/ip4/11.0.1.3/udp/4001/quic-v1".parse().unwrap(),
                relayed,
            ],
        )
    }

    #[test]
    fn an_invite_survives_copy_and_paste() {
        let invite = sample();
        let line = invite.encode();
        assert!(line.starts_with(PREFIX) && !line.contains(char::is_whitespace));
        assert_eq!(Invite::decode(&line).unwrap(), invite);
        // Wrapped by a mail program, shouted, pasted with a trailing newline.
        let (a, b) = line.split_at(40);
        assert_eq!(Invite::decode(&format!("  {a}\n {b}\n")).unwrap(), invite);
        assert_eq!(Invite::decode(&line.to_uppercase()).unwrap(), invite);
        assert!(invite
            .dial_addrs()
            .iter()
            .all(|a| matches!(a.iter().last(), Some(Protocol::P2p(p)) if p == invite.peer)));
        assert_eq!(invite.addrs[0].iter().count(), 2, "the /p2p/ id is carried once");
    }

    #[test]
    fn bad_invites_say_why() {
        let line = sample().encode();
        assert_eq!(Invite::decode("/ip4/1.2.3.4/tcp/1"), Err(InviteError::Prefix));
        assert_eq!(
            Invite::decode(&line[..line.len() - 8]),
            Err(InviteError::Damaged("its checksum does not match"))
        );
        let mut typo = line.clone().into_bytes();
        let i = PREFIX.len() + 20;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        assert!(matches!(Invite::decode(&String::from_utf8(typo).unwrap()), Err(InviteError::Damaged(_))));
        assert_eq!(Invite::decode("jewel-invite:!!"), Err(InviteError::Damaged("not base32")));
        let none = Invite { peer: PeerId::random(), addrs: vec![] }.encode();
        assert_eq!(Invite::decode(&none), Err(InviteError::NoAddress));
    }

    proptest! {
        #[test]
        fn no_line_makes_decoding_panic(s in "\\PC{0,300}") {
            let _ = Invite::decode(&s);
            let _ = Invite::decode(&format!("{PREFIX}{s}"));
        }
    }
}
