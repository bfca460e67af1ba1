//! The put/get pipeline over in-memory stores: every scheme, odd sizes, several segments,
//! lost, corrupt and foreign pieces, wrong keys.

use jewel::codec::{build, CodecError, SchemeSpec, SplitMix64};
use jewel::manifest::ManifestError;
use jewel::pipeline::{get, put, PipelineError, PutOptions};
use jewel::{BlockReader, BlockStore, BlockWriter, CipherId, FileKey, MemStore};
use proptest::prelude::*;

const SEG: u32 = 4096;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog. ".iter().copied().cycle().take(len).collect()
}

struct Stored {
    stores: Vec<MemStore>,
    put: jewel::pipeline::Put,
}

fn store_file(data: &[u8], spec: &str, cipher: CipherId, compress: bool, threads: usize) -> Stored {
    let scheme = SchemeSpec::parse(spec).unwrap();
    let slots = build(&scheme).unwrap().slots();
    let stores: Vec<MemStore> = (0..slots).map(|_| MemStore::new(None)).collect();
    let sinks: Vec<Box<dyn BlockWriter>> = stores.iter().map(|s| s.writer().unwrap()).collect();
    let mut opts = PutOptions::new(scheme);
    opts.segment_size = SEG;
    opts.cipher = cipher;
    opts.compress = compress;
    opts.threads = threads;
    let put = put(&mut &data[..], &opts, sinks).unwrap();
    Stored { stores, put }
}

fn sources(s: &Stored, alive: &[bool]) -> Vec<Option<Box<dyn BlockReader>>> {
    jewel::pipeline::slot_sources(&s.stores, &s.put.manifest, alive)
}

fn fetch(s: &Stored, alive: &[bool], threads: usize) -> Result<(Vec<u8>, jewel::GetStats), PipelineError> {
    let mut out = Vec::new();
    let stats = get(&s.put.manifest, &s.put.cap.key, sources(s, alive), &mut out, threads)?;
    Ok((out, stats))
}

const SPECS: &[&str] = &[
    "hosting",
    "replicate:3",
    "shard:3x2",
    "shard:4x2@6",
    "parity:3",
    "jewels:3/5",
    "jewels:1/1",
    "nested:jewels:2/3+parity:2",
];

#[test]
fn every_scheme_round_trips_every_size() {
    for spec in SPECS {
        for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 17] {
            for data in [random(len, len as u64), text(len)] {
                let s = store_file(&data, spec, CipherId::preferred(), true, 2);
                assert_eq!(s.put.manifest.file_len, len as u64);
                assert_eq!(s.put.manifest.segments.len(), (len.div_ceil(SEG as usize)).max(1));
                let n = s.put.manifest.pieces.len();
                let (out, stats) = fetch(&s, &vec![true; n], 2).unwrap();
                assert_eq!(out, data, "{spec} len {len}");
                assert!(stats.faults.is_empty());
            }
        }
    }
}

#[test]
fn both_ciphers_with_and_without_compression_and_threads() {
    let data = [text(20_000), random(20_000, 9)].concat();
    for cipher in [CipherId::Aes256Gcm, CipherId::XChaCha20Poly1305] {
        for compress in [true, false] {
            for threads in [1, 3] {
                let s = store_file(&data, "jewels:2/4", cipher, compress, threads);
                assert_eq!(s.put.manifest.cipher, cipher);
                let (out, _) = fetch(&s, &[false, true, false, true], threads).unwrap();
                assert_eq!(out, data);
                if compress {
                    assert!(s.put.stats.compressed_segments > 0, "text segments compress");
                    assert!(s.put.stats.compressed_segments < s.put.stats.segments, "random ones do not");
                } else {
                    assert_eq!(s.put.stats.compressed_segments, 0);
                }
            }
        }
    }
}

/// Every loss pattern of a few schemes: get works exactly when the scheme says it can,
/// and otherwise fails with NotEnoughPieces.
#[test]
fn any_sufficient_subset_and_only_those() {
    let data = random(3 * 4096 + 100, 5);
    for spec in ["shard:3x2", "parity:2", "jewels:2/4", "nested:replicate:2+jewels:1/2"] {
        let s = store_file(&data, spec, CipherId::preferred(), true, 2);
        let scheme = build(&SchemeSpec::parse(spec).unwrap()).unwrap();
        let n = scheme.slots();
        for mask in 0u32..(1 << n) {
            let alive: Vec<bool> = (0..n).map(|i| mask & (1 << i) != 0).collect();
            match fetch(&s, &alive, 2) {
                Ok((out, _)) => {
                    assert!(scheme.can_decode(&alive), "{spec} {alive:?}");
                    assert_eq!(out, data);
                }
                Err(PipelineError::Codec(CodecError::NotEnoughPieces { needed, .. })) => {
                    assert!(!scheme.can_decode(&alive), "{spec} {alive:?}");
                    assert_eq!(needed, scheme.min_peers());
                }
                Err(e) => panic!("{spec} {alive:?}: {e}"),
            }
        }
    }
}

#[test]
fn a_corrupt_piece_is_skipped_while_enough_remain() {
    let data = random(5 * 4096, 6);
    let s = store_file(&data, "jewels:2/4", CipherId::preferred(), false, 2);
    // Rot a byte in the middle of piece 0 (a data shard, read first).
    let id0 = s.put.manifest.pieces[0];
    assert!(s.stores[0].tamper(&id0, |d| {
        let mid = d.len() / 2;
        d[mid] ^= 1;
    }));
    let (out, stats) = fetch(&s, &[true; 4], 2).unwrap();
    assert_eq!(out, data);
    assert!(stats.faults.iter().any(|f| f.slot == 0 && f.reason.contains("corrupt")), "{:?}", stats.faults);
    // Rot two more: only one good piece is left, and the get fails cleanly.
    for slot in [1, 2] {
        let id = s.put.manifest.pieces[slot];
        s.stores[slot].tamper(&id, |d| d[0] ^= 1);
    }
    let err = fetch(&s, &[true; 4], 2).unwrap_err();
    assert!(matches!(err, PipelineError::Codec(CodecError::NotEnoughPieces { needed: 2, .. })), "{err}");
}

#[test]
fn a_foreign_piece_is_ignored() {
    let data = random(10_000, 7);
    let s = store_file(&data, "jewels:2/3", CipherId::preferred(), true, 1);
    let other = store_file(&random(10_000, 8), "jewels:2/3", CipherId::preferred(), true, 1);
    let mut src = sources(&s, &[true; 3]);
    src[0] = Some(other.stores[0].reader(&other.put.manifest.pieces[0]).unwrap());
    let mut out = Vec::new();
    let stats = get(&s.put.manifest, &s.put.cap.key, src, &mut out, 2).unwrap();
    assert_eq!(out, data);
    assert_eq!(stats.faults.len(), 1);
    assert!(stats.faults[0].reason.contains("not this file's piece"));
}

#[test]
fn a_wrong_key_is_refused_before_any_output() {
    let s = store_file(&random(9000, 1), "replicate:2", CipherId::preferred(), true, 1);
    let mut out = Vec::new();
    let err = get(&s.put.manifest, &FileKey([0u8; 32]), sources(&s, &[true; 2]), &mut out, 1).unwrap_err();
    assert!(matches!(err, PipelineError::Manifest(ManifestError::WrongKey)));
    assert!(out.is_empty());
}

#[test]
fn pieces_are_the_transposed_shards() {
    // Jewel i is shard i of every segment: piece lengths add up per segment.
    let data = random(3 * 4096, 2);
    let s = store_file(&data, "jewels:4/6", CipherId::preferred(), false, 1);
    let m = &s.put.manifest;
    for (slot, id) in m.pieces.iter().enumerate() {
        let len = s.stores[slot].reader(id).unwrap().len();
        let expected: u64 = m.segments.iter().map(|seg| (*seg as u64).div_ceil(4)).sum();
        assert_eq!(len, expected);
    }
    assert_eq!(
        s.put.stats.stored_bytes,
        6 * m.segments.iter().map(|seg| (*seg as u64).div_ceil(4)).sum::<u64>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn round_trip_any_size(len in 0usize..20_000, spec_idx in 0usize..SPECS.len(), seed: u64) {
        let data = random(len, seed);
        let s = store_file(&data, SPECS[spec_idx], CipherId::preferred(), seed % 2 == 0, 2);
        let n = s.put.manifest.pieces.len();
        let (out, _) = fetch(&s, &vec![true; n], 2).unwrap();
        prop_assert_eq!(out, data);
    }
}
