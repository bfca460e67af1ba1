//! One loss-pattern harness over every scheme: every subset of lost slots either decodes
//! to the exact bytes or fails with `NotEnoughPieces`, and which one it is must match the
//! scheme's own claim (`can_decode`), its M and its tolerance.

use jewel_codec::{build, CodecError, Encoded, Scheme, SchemeSpec, SplitMix64};
use proptest::prelude::*;

const SPECS: &[&str] = &[
    "hosting",
    "replicate:1",
    "replicate:3",
    "shard:1x1",
    "shard:3x1",
    "shard:3x2",
    "shard:4x2",
    "shard:5x3",
    "shard:4x2@8",
    "shard:6x2@4",
    "shard:4x3@6",
    "parity:1",
    "parity:2",
    "parity:4",
    "jewels:1/1",
    "jewels:1/3",
    "jewels:3/3",
    "jewels:2/5",
    "jewels:4/8",
    "jewels:5/12",
    "nested:jewels:2/3+parity:2",
    "nested:replicate:2+jewels:2/3",
    "nested:shard:3x2+replicate:2",
    "nested:parity:2+nested:replicate:1+jewels:1/2",
];

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn encode_all(scheme: &dyn Scheme, segment: &[u8]) -> Vec<Vec<u8>> {
    let mut enc = Encoded::default();
    scheme.encode(segment, &mut enc).unwrap();
    assert_eq!(enc.slots(), scheme.slots());
    (0..scheme.slots())
        .map(|s| {
            let chunk = enc.to_vec(segment, s).unwrap();
            assert_eq!(chunk.len(), scheme.chunk_len(s, segment.len()), "{} slot {s}", scheme.spec());
            chunk
        })
        .collect()
}

/// Decodes with only the slots in `alive`; checks the outcome against the scheme's claim.
fn check_pattern(scheme: &dyn Scheme, segment: &[u8], chunks: &[Vec<u8>], alive: &[bool]) -> bool {
    let mut given: Vec<Option<Vec<u8>>> =
        chunks.iter().zip(alive).map(|(c, a)| a.then(|| c.clone())).collect();
    let mut out = Vec::new();
    let claim = scheme.can_decode(alive);
    match scheme.decode(segment.len(), &mut given, &mut out) {
        Ok(()) => {
            assert!(claim, "{}: decoded with {alive:?} but claims it cannot", scheme.spec());
            assert_eq!(out, segment, "{}: wrong bytes with {alive:?}", scheme.spec());
            true
        }
        Err(CodecError::NotEnoughPieces { needed, available }) => {
            assert!(!claim, "{}: failed with {alive:?} but claims it can", scheme.spec());
            assert_eq!(needed, scheme.min_peers());
            assert!(available <= alive.iter().filter(|a| **a).count());
            false
        }
        Err(e) => panic!("{}: unexpected error {e} with {alive:?}", scheme.spec()),
    }
}

#[test]
fn every_loss_pattern_of_every_scheme() {
    for (i, text) in SPECS.iter().enumerate() {
        let spec = SchemeSpec::parse(text).unwrap();
        let scheme = build(&spec).unwrap();
        let n = scheme.slots();
        assert!(n <= 14, "{text} too wide to enumerate");
        for len in [0usize, 1, 7, 1000, 4099] {
            let segment = random_bytes(len, i as u64 * 1000 + len as u64);
            let chunks = encode_all(scheme.as_ref(), &segment);
            let mut smallest_ok = n;
            let mut fewest_lost_failing = n + 1;
            for mask in 0u32..(1 << n) {
                let alive: Vec<bool> = (0..n).map(|s| mask & (1 << s) != 0).collect();
                let up = mask.count_ones() as usize;
                if check_pattern(scheme.as_ref(), &segment, &chunks, &alive) {
                    smallest_ok = smallest_ok.min(up);
                    // `select` must pick a sufficient subset of the alive slots.
                    let chosen = scheme.select(&alive).expect("select on a decodable set");
                    assert!(chosen.iter().zip(&alive).all(|(c, a)| !c || *a), "{text}");
                    assert!(scheme.can_decode(&chosen), "{text}: select chose too little");
                } else {
                    fewest_lost_failing = fewest_lost_failing.min(n - up);
                    assert!(scheme.select(&alive).is_none(), "{text}");
                }
            }
            assert_eq!(smallest_ok, scheme.min_peers(), "{text}: M");
            assert_eq!(fewest_lost_failing - 1, scheme.tolerates(), "{text}: tolerance");
        }
    }
}

#[test]
fn documented_figures() {
    let fig = |s: &str| {
        let scheme = build(&SchemeSpec::parse(s).unwrap()).unwrap();
        (scheme.slots(), scheme.redundancy(), scheme.min_peers(), scheme.tolerates())
    };
    assert_eq!(fig("hosting"), (1, 1.0, 1, 0));
    assert_eq!(fig("replicate:3"), (3, 3.0, 1, 2));
    assert_eq!(fig("shard:3x2"), (3, 2.0, 2, 1));
    assert_eq!(fig("parity:4"), (5, 1.25, 4, 1));
    assert_eq!(fig("jewels:10/16"), (16, 1.6, 10, 6));
    assert_eq!(fig("nested:jewels:2/3+parity:2"), (9, 1.5 * 1.5, 4, 3));
    // A wide stripe still gets an exact M from the cover search.
    assert_eq!(fig("shard:64x2").2, 32);
    assert_eq!(fig("shard:60x3@64").3, 2);
}

#[test]
fn wrong_chunk_lengths_are_refused() {
    let scheme = build(&SchemeSpec::parse("jewels:2/4").unwrap()).unwrap();
    let segment = random_bytes(100, 1);
    let chunks = encode_all(scheme.as_ref(), &segment);
    let mut given: Vec<Option<Vec<u8>>> = chunks.into_iter().map(Some).collect();
    given[1].as_mut().unwrap().pop();
    let err = scheme.decode(100, &mut given, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CodecError::ChunkLength { slot: 1, expected: 50, actual: 49 }));
    let err = scheme.decode(100, &mut given[..3], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CodecError::WrongSlotCount { expected: 4, actual: 3 }));
}

/// `0..n` in a random order.
fn shuffled(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

/// Schemes other than jewels place nothing, and refuse chunks said to be placed.
#[test]
fn only_jewels_place_chunks() {
    for spec in SPECS {
        let scheme = build(&SchemeSpec::parse(spec).unwrap()).unwrap();
        let n = scheme.slots();
        let places = (0..n).any(|s| scheme.placed_range(s, 100).is_some());
        assert_eq!(places, spec.starts_with("jewels"), "{spec}");
        if !places {
            let segment = random_bytes(100, 7);
            let mut given: Vec<Option<Vec<u8>>> =
                encode_all(scheme.as_ref(), &segment).into_iter().map(Some).collect();
            let mut placed = vec![false; n];
            placed[0] = true;
            let err = scheme.decode_placed(100, &mut given, &placed, &mut Vec::new()).unwrap_err();
            assert!(matches!(err, CodecError::NotPlaceable), "{spec}: {err}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any k of n jewels rebuild any segment, whichever k they are.
    #[test]
    fn any_k_of_n_jewels(len in prop_oneof![Just(0usize), Just(1), 2usize..5000], k in 1usize..8, extra in 0usize..6, seed: u64) {
        let n = k + extra;
        let scheme = build(&SchemeSpec::Jewels { k, n }).unwrap();
        let segment = random_bytes(len, seed);
        let chunks = encode_all(scheme.as_ref(), &segment);
        let order = shuffled(n, &mut SplitMix64(seed ^ 0x5eed));
        let mut alive = vec![false; n];
        for s in order.iter().take(k) {
            alive[*s] = true;
        }
        prop_assert!(check_pattern(scheme.as_ref(), &segment, &chunks, &alive));
    }

    /// Data shards a reader wrote straight into the output (`placed_range`) count as
    /// present: any k of n, some of them placed, rebuild the segment, into a reused output
    /// full of stale bytes, and a placed slot's chunk passed in as well is not used.
    #[test]
    fn placed_data_shards_decode_like_passed_ones(len in prop_oneof![Just(0usize), Just(1), 2usize..5000], k in 1usize..8, extra in 0usize..6, seed: u64) {
        let n = k + extra;
        let scheme = build(&SchemeSpec::Jewels { k, n }).unwrap();
        let segment = random_bytes(len, seed);
        let chunks = encode_all(scheme.as_ref(), &segment);
        let mut rng = SplitMix64(seed ^ 0x91ace);
        let order = shuffled(n, &mut rng);
        let mut given: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut placed = vec![false; n];
        let mut out = random_bytes(len + 64, seed ^ 1);
        for &s in order.iter().take(k) {
            match scheme.placed_range(s, len) {
                Some(r) if rng.next_u64().is_multiple_of(2) => {
                    prop_assert!(s < k && r.len() == chunks[s].len());
                    out[r].copy_from_slice(&chunks[s]);
                    placed[s] = true;
                    if rng.next_u64().is_multiple_of(2) {
                        given[s] = Some(vec![0xee; chunks[s].len()]);
                    }
                }
                _ => given[s] = Some(chunks[s].clone()),
            }
        }
        for s in k..n {
            prop_assert!(scheme.placed_range(s, len).is_none(), "parity slot {} is never placed", s);
        }
        scheme.decode_placed(len, &mut given, &placed, &mut out).unwrap();
        prop_assert_eq!(out, segment);
    }

    /// Every scheme round-trips odd sizes over several segments, keeping chunk lengths
    /// a function of the segment length alone.
    #[test]
    fn every_scheme_round_trips(idx in 0usize..SPECS.len(), lens in proptest::collection::vec(0usize..3000, 1..4), seed: u64) {
        let scheme = build(&SchemeSpec::parse(SPECS[idx]).unwrap()).unwrap();
        for (j, len) in lens.iter().enumerate() {
            let segment = random_bytes(*len, seed.wrapping_add(j as u64));
            let chunks = encode_all(scheme.as_ref(), &segment);
            let alive = vec![true; scheme.slots()];
            prop_assert!(check_pattern(scheme.as_ref(), &segment, &chunks, &alive));
        }
    }

    /// One `Encoded` reused for segment after segment (as the pipeline does; parity buffers
    /// are not zeroed between uses) gives the same chunks as a fresh one each time.
    #[test]
    fn a_reused_encoder_gives_the_same_chunks(idx in 0usize..SPECS.len(), lens in proptest::collection::vec(0usize..3000, 2..5), seed: u64) {
        let scheme = build(&SchemeSpec::parse(SPECS[idx]).unwrap()).unwrap();
        let mut reused = Encoded::default();
        for (j, len) in lens.iter().enumerate() {
            let segment = random_bytes(*len, seed.wrapping_add(j as u64));
            scheme.encode(&segment, &mut reused).unwrap();
            let again: Vec<Vec<u8>> = (0..scheme.slots()).map(|s| reused.to_vec(&segment, s).unwrap()).collect();
            prop_assert_eq!(again, encode_all(scheme.as_ref(), &segment));
        }
    }
}
