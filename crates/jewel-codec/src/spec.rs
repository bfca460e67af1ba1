//! Scheme spec strings: the serializable parameters of every scheme.
//!
//! Owns the grammar, its limits and its errors. It must not encode anything; turning a
//! spec into a working scheme is [`crate::build`]'s job.
//!
//! Grammar (lowercase, no spaces):
//!
//! ```text
//! spec   := simple | "nested:" simple "+" spec
//! simple := "hosting"
//!         | "replicate:" N            N whole copies on N peers
//!         | "shard:" K "x" C ["@" P]  K shards, each stored C times, striped over P peers
//!         | "parity:" K               K shards plus one XOR parity shard
//!         | "jewels:" K "/" N         N Reed-Solomon jewels, any K rebuild the file
//! ```
//!
//! `nested:OUTER+INNER` applies INNER to every piece of OUTER, so it needs
//! `slots(OUTER) * slots(INNER)` peers. Nesting is right-associative:
//! `nested:A+nested:B+C` is A of B of C.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most peers one file may be spread over. Reed-Solomon over GF(2^8) allows at most
/// 256 shards, and every other scheme keeps to the same bound.
pub const MAX_SLOTS: usize = 256;
/// The most peers a `shard` spec may stripe over (its exact analysis enumerates covers).
pub const MAX_SHARD_PEERS: usize = 64;
/// The most shards a `shard` spec may cut a segment into.
pub const MAX_SHARDS: usize = 64;
/// The deepest `nested:` chain accepted.
pub const MAX_NESTING: usize = 4;
/// The longest spec string accepted.
pub const MAX_SPEC_LEN: usize = 256;

/// A scheme and its parameters. Parse it from a spec string; print it back with `Display`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SchemeSpec {
    /// The whole file on one peer.
    Hosting,
    /// `copies` whole copies on `copies` peers.
    Replicate { copies: usize },
    /// `k` shards, each stored `copies` times, striped over `peers` peers.
    Shard { k: usize, copies: usize, peers: usize },
    /// `k` shards plus one XOR parity shard.
    Parity { k: usize },
    /// `n` Reed-Solomon jewels, any `k` of which rebuild the file.
    Jewels { k: usize, n: usize },
    /// `inner` applied to every piece of `outer`.
    Nested { outer: Box<SchemeSpec>, inner: Box<SchemeSpec> },
}

/// Why a spec string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("empty scheme spec; try `jewels:4/8`, `replicate:3`, `shard:3x2`, `parity:4` or `hosting`")]
    Empty,
    #[error("scheme spec is {len} bytes long; at most {max} are accepted")]
    TooLong { len: usize, max: usize },
    #[error("unknown scheme `{name}`; known schemes: hosting, replicate, shard, parity, jewels, nested")]
    UnknownScheme { name: String },
    #[error("`{spec}` is malformed; expected `{grammar}`")]
    Malformed { spec: String, grammar: &'static str },
    #[error("`{value}` in `{spec}` is not a whole number")]
    NotANumber { spec: String, value: String },
    #[error("{what} must be at least {min} (got {value} in `{spec}`)")]
    TooSmall { spec: String, what: &'static str, min: usize, value: usize },
    #[error("k must not exceed n (got `{spec}`)")]
    KExceedsN { spec: String },
    #[error("`{spec}` needs {slots} peers; at most {max} are supported (Reed-Solomon over GF(2^8) allows 256 shards)")]
    TooManySlots { spec: String, slots: usize, max: usize },
    #[error("{what} in `{spec}` is {value}; at most {max} are supported")]
    TooLarge { spec: String, what: &'static str, value: usize, max: usize },
    #[error("`{spec}`: {copies} copies cannot go on distinct peers when there are only {peers} peers")]
    CopiesExceedPeers { spec: String, copies: usize, peers: usize },
    #[error("`{spec}`: {pieces} shard copies cannot give each of {peers} peers at least one")]
    IdlePeers { spec: String, pieces: usize, peers: usize },
    #[error(
        "`{spec}`: striping would put two copies of shard {shard} on peer {peer}; choose another peer count"
    )]
    Unstripable { spec: String, shard: usize, peer: usize },
    #[error("`{spec}` nests more than {max} levels deep")]
    TooDeep { spec: String, max: usize },
}

const GRAMMAR_REPLICATE: &str = "replicate:N";
const GRAMMAR_SHARD: &str = "shard:KxC[@P]";
const GRAMMAR_PARITY: &str = "parity:K";
const GRAMMAR_JEWELS: &str = "jewels:K/N";
const GRAMMAR_NESTED: &str = "nested:OUTER+INNER";

impl SchemeSpec {
    /// Parses and validates a spec string.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SpecError::Empty);
        }
        if text.len() > MAX_SPEC_LEN {
            return Err(SpecError::TooLong { len: text.len(), max: MAX_SPEC_LEN });
        }
        let spec = parse_nested(text, 0)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Number of peer slots (pieces) this scheme places: N.
    pub fn slots(&self) -> usize {
        match self {
            SchemeSpec::Hosting => 1,
            SchemeSpec::Replicate { copies } => *copies,
            SchemeSpec::Shard { peers, .. } => *peers,
            SchemeSpec::Parity { k } => k + 1,
            SchemeSpec::Jewels { n, .. } => *n,
            SchemeSpec::Nested { outer, inner } => outer.slots().saturating_mul(inner.slots()),
        }
    }

    /// Short family name: `hosting`, `replicate`, `shard`, `parity`, `jewels` or `nested`.
    pub fn family(&self) -> &'static str {
        match self {
            SchemeSpec::Hosting => "hosting",
            SchemeSpec::Replicate { .. } => "replicate",
            SchemeSpec::Shard { .. } => "shard",
            SchemeSpec::Parity { .. } => "parity",
            SchemeSpec::Jewels { .. } => "jewels",
            SchemeSpec::Nested { .. } => "nested",
        }
    }

    /// Checks every limit; values built by hand (not parsed) should pass through here.
    pub fn validate(&self) -> Result<(), SpecError> {
        let spec = || self.to_string();
        match self {
            SchemeSpec::Hosting => {}
            SchemeSpec::Replicate { copies } => at_least(spec, "the number of copies", *copies, 1)?,
            SchemeSpec::Parity { k } => at_least(spec, "k", *k, 1)?,
            SchemeSpec::Jewels { k, n } => {
                at_least(spec, "k", *k, 1)?;
                if k > n {
                    return Err(SpecError::KExceedsN { spec: spec() });
                }
            }
            SchemeSpec::Shard { k, copies, peers } => {
                at_least(spec, "k", *k, 1)?;
                at_least(spec, "the number of copies", *copies, 1)?;
                at_most(spec, "the number of shards", *k, MAX_SHARDS)?;
                at_most(spec, "the number of peers", *peers, MAX_SHARD_PEERS)?;
                if copies > peers {
                    return Err(SpecError::CopiesExceedPeers {
                        spec: spec(),
                        copies: *copies,
                        peers: *peers,
                    });
                }
                if k * copies < *peers {
                    return Err(SpecError::IdlePeers { spec: spec(), pieces: k * copies, peers: *peers });
                }
                if let Some((shard, peer)) = stripe_conflict(*k, *copies, *peers) {
                    return Err(SpecError::Unstripable { spec: spec(), shard, peer });
                }
            }
            SchemeSpec::Nested { outer, inner } => {
                outer.validate()?;
                inner.validate()?;
                if self.depth() > MAX_NESTING {
                    return Err(SpecError::TooDeep { spec: spec(), max: MAX_NESTING });
                }
            }
        }
        let slots = self.slots();
        if slots > MAX_SLOTS {
            return Err(SpecError::TooManySlots { spec: spec(), slots, max: MAX_SLOTS });
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        match self {
            SchemeSpec::Nested { outer, inner } => 1 + outer.depth().max(inner.depth()),
            _ => 0,
        }
    }
}

/// The shard striping: which shards peer slot `p` holds, for `shard:KxC@P`.
///
/// Copies are laid out layer by layer; layer `c` is the shard sequence rotated by `c`.
/// Each copy goes to the least-loaded peer that does not hold that shard yet, searching
/// round-robin from the peer after the last one used. With P = K this gives the cyclic
/// stripe `shard:3x2` = [1,2],[2,3],[3,1], and it never puts two copies on one peer
/// while C ≤ P.
pub fn stripe(k: usize, copies: usize, peers: usize) -> Vec<Vec<usize>> {
    let peers = peers.max(1);
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); peers];
    let mut next = 0usize;
    for c in 0..copies {
        for s in 0..k {
            let shard = (s + c) % k;
            let pick = (0..peers)
                .map(|d| (next + d) % peers)
                .filter(|p| !slots[*p].contains(&shard))
                .min_by_key(|p| (slots[*p].len(), (*p + peers - next) % peers));
            if let Some(p) = pick {
                slots[p].push(shard);
                next = (p + 1) % peers;
            }
        }
    }
    for slot in &mut slots {
        slot.sort_unstable();
    }
    slots
}

/// The first (shard, peer) pair that striping would place twice, if any.
fn stripe_conflict(k: usize, copies: usize, peers: usize) -> Option<(usize, usize)> {
    for (peer, shards) in stripe(k, copies, peers).iter().enumerate() {
        if let Some(w) = shards.windows(2).find(|w| w[0] == w[1]) {
            return Some((w[0], peer));
        }
    }
    None
}

fn at_least(
    spec: impl Fn() -> String,
    what: &'static str,
    value: usize,
    min: usize,
) -> Result<(), SpecError> {
    if value < min {
        return Err(SpecError::TooSmall { spec: spec(), what, min, value });
    }
    Ok(())
}

fn at_most(spec: impl Fn() -> String, what: &'static str, value: usize, max: usize) -> Result<(), SpecError> {
    if value > max {
        return Err(SpecError::TooLarge { spec: spec(), what, value, max });
    }
    Ok(())
}

fn parse_nested(text: &str, depth: usize) -> Result<SchemeSpec, SpecError> {
    let Some(rest) = text.strip_prefix("nested:") else {
        return parse_simple(text);
    };
    if depth >= MAX_NESTING {
        return Err(SpecError::TooDeep { spec: text.to_string(), max: MAX_NESTING });
    }
    let Some((outer, inner)) = rest.split_once('+') else {
        return Err(SpecError::Malformed { spec: text.to_string(), grammar: GRAMMAR_NESTED });
    };
    let outer = parse_simple(outer)?;
    let inner = parse_nested(inner, depth + 1)?;
    Ok(SchemeSpec::Nested { outer: Box::new(outer), inner: Box::new(inner) })
}

fn parse_simple(text: &str) -> Result<SchemeSpec, SpecError> {
    let (name, args) = match text.split_once(':') {
        Some((name, args)) => (name, Some(args)),
        None => (text, None),
    };
    let malformed = |grammar| SpecError::Malformed { spec: text.to_string(), grammar };
    let num = |value: &str| number(text, value);
    match (name, args) {
        ("hosting", None) => Ok(SchemeSpec::Hosting),
        ("hosting", Some(_)) => Err(malformed("hosting")),
        ("replicate", Some(n)) => Ok(SchemeSpec::Replicate { copies: num(n)? }),
        ("replicate", None) => Err(malformed(GRAMMAR_REPLICATE)),
        ("parity", Some(k)) => Ok(SchemeSpec::Parity { k: num(k)? }),
        ("parity", None) => Err(malformed(GRAMMAR_PARITY)),
        ("jewels", Some(args)) => {
            let (k, n) = args.split_once('/').ok_or_else(|| malformed(GRAMMAR_JEWELS))?;
            Ok(SchemeSpec::Jewels { k: num(k)?, n: num(n)? })
        }
        ("jewels", None) => Err(malformed(GRAMMAR_JEWELS)),
        ("shard", Some(args)) => {
            let (shape, peers) = match args.split_once('@') {
                Some((shape, peers)) => (shape, Some(peers)),
                None => (args, None),
            };
            let (k, copies) = shape.split_once('x').ok_or_else(|| malformed(GRAMMAR_SHARD))?;
            let k = num(k)?;
            let copies = num(copies)?;
            let peers = match peers {
                Some(p) => num(p)?,
                None => k,
            };
            Ok(SchemeSpec::Shard { k, copies, peers })
        }
        ("shard", None) => Err(malformed(GRAMMAR_SHARD)),
        ("nested", _) => Err(SpecError::Malformed {
            spec: text.to_string(),
            grammar: "nested:OUTER+INNER, where OUTER is not itself nested",
        }),
        (name, _) => Err(SpecError::UnknownScheme { name: name.chars().take(32).collect() }),
    }
}

fn number(spec: &str, value: &str) -> Result<usize, SpecError> {
    let bad = || SpecError::NotANumber { spec: spec.to_string(), value: value.chars().take(32).collect() };
    if value.is_empty() || value.len() > 6 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

impl fmt::Display for SchemeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemeSpec::Hosting => write!(f, "hosting"),
            SchemeSpec::Replicate { copies } => write!(f, "replicate:{copies}"),
            SchemeSpec::Shard { k, copies, peers } if peers == k => write!(f, "shard:{k}x{copies}"),
            SchemeSpec::Shard { k, copies, peers } => write!(f, "shard:{k}x{copies}@{peers}"),
            SchemeSpec::Parity { k } => write!(f, "parity:{k}"),
            SchemeSpec::Jewels { k, n } => write!(f, "jewels:{k}/{n}"),
            SchemeSpec::Nested { outer, inner } => write!(f, "nested:{outer}+{inner}"),
        }
    }
}

impl FromStr for SchemeSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchemeSpec::parse(s)
    }
}

impl TryFrom<String> for SchemeSpec {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SchemeSpec::parse(&s)
    }
}

impl From<SchemeSpec> for String {
    fn from(s: SchemeSpec) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in [
            "hosting",
            "replicate:3",
            "shard:3x2",
            "shard:4x2@8",
            "parity:4",
            "jewels:10/16",
            "jewels:1/1",
            "nested:jewels:2/3+parity:2",
            "nested:replicate:2+nested:parity:2+jewels:2/3",
        ] {
            let spec = SchemeSpec::parse(text).unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(SchemeSpec::parse("shard:3x2@3").unwrap().to_string(), "shard:3x2");
    }

    #[test]
    fn clear_errors() {
        let err = SchemeSpec::parse("jewels:9/4").unwrap_err();
        assert!(err.to_string().contains("k must not exceed n"), "{err}");
        assert!(matches!(SchemeSpec::parse(""), Err(SpecError::Empty)));
        assert!(matches!(SchemeSpec::parse("raid5"), Err(SpecError::UnknownScheme { .. })));
        assert!(matches!(SchemeSpec::parse("jewels:4"), Err(SpecError::Malformed { .. })));
        assert!(matches!(SchemeSpec::parse("jewels:a/4"), Err(SpecError::NotANumber { .. })));
        assert!(matches!(SchemeSpec::parse("jewels:-1/4"), Err(SpecError::NotANumber { .. })));
        assert!(matches!(SchemeSpec::parse("jewels:0/4"), Err(SpecError::TooSmall { .. })));
        let err = SchemeSpec::parse("jewels:10/300").unwrap_err();
        assert!(matches!(err, SpecError::TooManySlots { slots: 300, .. }));
        assert!(err.to_string().contains("256"), "{err}");
        assert!(matches!(SchemeSpec::parse("shard:3x4"), Err(SpecError::CopiesExceedPeers { .. })));
        assert!(matches!(SchemeSpec::parse("shard:2x1@3"), Err(SpecError::IdlePeers { .. })));
        assert!(matches!(SchemeSpec::parse("replicate:0"), Err(SpecError::TooSmall { .. })));
        assert!(matches!(SchemeSpec::parse("hosting:2"), Err(SpecError::Malformed { .. })));
        assert!(matches!(SchemeSpec::parse("nested:jewels:2/3"), Err(SpecError::Malformed { .. })));
        assert_eq!(SchemeSpec::parse("nested:jewels:16/16+jewels:16/16").unwrap().slots(), 256);
        assert!(matches!(
            SchemeSpec::parse("nested:jewels:16/17+jewels:16/16"),
            Err(SpecError::TooManySlots { slots: 272, .. })
        ));
        let deep = "nested:hosting+".repeat(5) + "hosting";
        assert!(matches!(SchemeSpec::parse(&deep), Err(SpecError::TooDeep { .. })));
        assert!(matches!(SchemeSpec::parse(&"x".repeat(300)), Err(SpecError::TooLong { .. })));
    }

    #[test]
    fn stripe_matches_the_documented_example() {
        // shard:3x2 gives [1,2],[2,3],[3,1] (1-based in the docs).
        assert_eq!(stripe(3, 2, 3), vec![vec![0, 1], vec![1, 2], vec![0, 2]]);
    }

    #[test]
    fn every_valid_stripe_keeps_copies_apart() {
        for k in 1..=12 {
            for copies in 1..=4 {
                for peers in copies..=(k * copies).min(16) {
                    let text = format!("shard:{k}x{copies}@{peers}");
                    if let Ok(SchemeSpec::Shard { .. }) = SchemeSpec::parse(&text) {
                        let layout = stripe(k, copies, peers);
                        for shard in 0..k {
                            let holders = layout.iter().filter(|s| s.contains(&shard)).count();
                            assert_eq!(holders, copies, "{text}");
                        }
                        assert!(layout.iter().all(|s| !s.is_empty()), "{text}");
                    }
                }
            }
        }
    }
}
