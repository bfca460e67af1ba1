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

/// A fetch that fails from segment `fail_at` on: an interrupted download.
struct Interrupted<F> {
    inner: F,
    fail_at: usize,
}

impl<F: jewel::pipeline::Fetch> jewel::pipeline::Fetch for Interrupted<F> {
    fn fetch(
        &self,
        scheme: &dyn jewel::codec::Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &jewel::pool::Pool<Vec<u8>>,
        places: &mut [Option<&mut [u8]>],
    ) -> Result<jewel::pipeline::Fetched, PipelineError> {
        if segment >= self.fail_at {
            return Err(CodecError::NotEnoughPieces { needed: 3, available: 0 }.into());
        }
        self.inner.fetch(scheme, segment, want, pool, places)
    }

    fn report(&self) -> (Vec<u64>, Vec<jewel::pipeline::PieceFault>) {
        self.inner.report()
    }
}

#[test]
fn an_interrupted_get_resumes_from_its_last_whole_segment() {
    let data = random(10 * SEG as usize + 123, 31);
    let s = store_file(&data, "jewels:3/5", CipherId::Aes256Gcm, false, 2);
    let m = &s.put.manifest;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.bin");
    let all = vec![true; 5];
    let broken =
        Interrupted { inner: jewel::pipeline::local_fetch(m, sources(&s, &all)).unwrap(), fail_at: 6 };
    let err = jewel::offline::get_resumable(&target, m, &s.put.cap.key, &broken, 2).unwrap_err();
    assert!(err.to_string().contains("pieces"), "{err}");
    assert!(!target.exists(), "nothing at the target until the file is whole");
    let part = jewel::offline::resumable_path(&target, &jewel::BlockId::of(&m.encode()).to_string()[..16]);
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 6 * u64::from(SEG));
    // Cut the part mid-segment, as a killed process might leave it.
    let f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    f.set_len(5 * u64::from(SEG) + 100).unwrap();
    assert_eq!(jewel::offline::resume_offset(&target, m), 5 * u64::from(SEG));

    let whole = jewel::pipeline::local_fetch(m, sources(&s, &all)).unwrap();
    let (stats, from) = jewel::offline::get_resumable(&target, m, &s.put.cap.key, &whole, 2).unwrap();
    assert_eq!(from, 5 * u64::from(SEG));
    assert_eq!(stats.file_bytes, data.len() as u64 - from, "only the rest is fetched");
    assert!(std::fs::read(&target).unwrap() == data, "the resumed file is exact");
    assert!(!part.exists());
}

/// A part file damaged while the get was interrupted (4 KiB zeroed inside its third
/// segment) is not trusted: the get resumes before the damage, and the file is exact.
#[test]
fn a_resumed_get_fetches_again_what_no_longer_verifies() {
    use std::io::{Seek, SeekFrom, Write};
    let data = random(10 * SEG as usize + 123, 33);
    let s = store_file(&data, "jewels:3/5", CipherId::Aes256Gcm, false, 2);
    let m = &s.put.manifest;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.bin");
    let all = vec![true; 5];
    let broken =
        Interrupted { inner: jewel::pipeline::local_fetch(m, sources(&s, &all)).unwrap(), fail_at: 7 };
    jewel::offline::get_resumable(&target, m, &s.put.cap.key, &broken, 2).unwrap_err();
    let part = jewel::offline::resumable_path(&target, &jewel::BlockId::of(&m.encode()).to_string()[..16]);
    let mut f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    f.seek(SeekFrom::Start(2 * u64::from(SEG) + 1000)).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let whole = jewel::pipeline::local_fetch(m, sources(&s, &all)).unwrap();
    let (_, from) = jewel::offline::get_resumable(&target, m, &s.put.cap.key, &whole, 2).unwrap();
    assert_eq!(from, 2 * u64::from(SEG), "resumed from the first segment that no longer verifies");
    assert!(std::fs::read(&target).unwrap() == data, "the resumed file is exact");
    // Neither the part nor its sums are left behind.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["out.bin".to_string()]);
}

#[test]
fn a_range_reads_only_the_segments_that_cover_it() {
    let data = random(20 * SEG as usize + 7, 32);
    let s = store_file(&data, "jewels:3/5", CipherId::Aes256Gcm, false, 2);
    let m = &s.put.manifest;
    let chunk = (SEG as usize + jewel::manifest::SEGMENT_OVERHEAD).div_ceil(3) as u64;
    for (start, end) in
        [(0u64, 1u64), (SEG as u64 - 1, SEG as u64 + 1), (5000, 17000), (data.len() as u64 - 3, u64::MAX)]
    {
        let fetch = jewel::pipeline::local_fetch(m, sources(&s, &[true; 5])).unwrap();
        let mut out = Vec::new();
        let range = jewel::pipeline::ByteRange { start, end };
        let stats = jewel::pipeline::get_with(m, &s.put.cap.key, &fetch, range, &mut out, 2).unwrap();
        let end = end.min(data.len() as u64);
        assert!(out == data[start as usize..end as usize], "{start}-{end}");
        let segments = end.div_ceil(u64::from(SEG)) - start / u64::from(SEG);
        assert!(stats.bytes_read <= segments * 3 * chunk, "{start}-{end}: read {} bytes", stats.bytes_read);
        assert!(
            stats.bytes_read >= (segments - 1) * 3 * chunk,
            "{start}-{end}: read {} bytes",
            stats.bytes_read
        );
    }
}

/// Repair's core: with as many pieces lost as each scheme tolerates (the first ones),
/// rebuilding from the rest writes exactly the lost pieces, byte-identical (same ids).
#[test]
fn rebuilt_pieces_are_byte_identical_for_every_scheme() {
    for (i, spec) in SPECS.iter().enumerate() {
        let data = random(5 * SEG as usize + 77 + i, 40 + i as u64);
        let s = store_file(&data, spec, CipherId::Aes256Gcm, false, 2);
        let scheme = build(&s.put.manifest.scheme).unwrap();
        let n = scheme.slots();
        let lost: Vec<usize> = (0..scheme.tolerates()).collect();
        if lost.is_empty() {
            continue;
        }
        let alive: Vec<bool> = (0..n).map(|slot| !lost.contains(&slot)).collect();
        let fetch = jewel::pipeline::local_fetch(&s.put.manifest, sources(&s, &alive)).unwrap();
        let fresh: Vec<MemStore> = lost.iter().map(|_| MemStore::new(None)).collect();
        let sinks: Vec<Box<dyn BlockWriter>> = fresh.iter().map(|m| m.writer().unwrap()).collect();
        let ids = jewel::pipeline::rebuild(&s.put.manifest, &fetch, &lost, sinks, 2).unwrap();
        for (j, slot) in lost.iter().enumerate() {
            assert_eq!(ids[j], s.put.manifest.pieces[*slot], "{spec}: slot {slot}");
            let mut rebuilt = vec![0u8; s.put.manifest.piece_len(scheme.as_ref(), *slot) as usize];
            fresh[j].reader(&ids[j]).unwrap().read_at(0, &mut rebuilt).unwrap();
            let mut original = vec![0u8; rebuilt.len()];
            s.stores[*slot].reader(&ids[j]).unwrap().read_at(0, &mut original).unwrap();
            assert!(rebuilt == original, "{spec}: slot {slot} differs");
        }
        let (read, _) = jewel::pipeline::Fetch::report(&fetch);
        assert!(lost.iter().all(|s| read[*s] == 0), "{spec}: nothing is read from lost slots");
    }
}

/// The part and sums files of a resumable get have names anyone holding a piece can
/// predict: a link planted at either (to a file outside the folder), or a second name of
/// another file, makes the get fail with a line that says so, and the other file keeps
/// every byte (issue 19: a planted link made a get overwrite, or cut to 0 bytes, its target).
#[test]
fn a_link_planted_at_a_part_or_sums_name_is_never_written_through() {
    let data = random(3 * SEG as usize, 35);
    let s = store_file(&data, "jewels:3/5", CipherId::Aes256Gcm, false, 2);
    let m = &s.put.manifest;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    let target = dir.path().join("got");
    let tag = jewel::BlockId::of(&m.encode()).to_string()[..16].to_string();
    let part = jewel::offline::resumable_path(&target, &tag);
    let sums = dir.path().join(format!(".got.{tag}.jewel-sums"));
    let all = vec![true; 5];
    let planted: [(&std::path::Path, bool); 3] = [(&part, true), (&sums, true), (&part, false)];
    for (at, symlink) in planted {
        std::fs::write(&victim, b"precious").unwrap();
        if symlink {
            std::os::unix::fs::symlink(&victim, at).unwrap();
        } else {
            std::fs::hard_link(&victim, at).unwrap();
        }
        let whole = jewel::pipeline::local_fetch(m, sources(&s, &all)).unwrap();
        let err = jewel::offline::get_resumable(&target, m, &s.put.cap.key, &whole, 2).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("link") || text.contains("one name"), "{text}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!target.exists());
        std::fs::remove_file(at).unwrap();
        let _ = std::fs::remove_file(&part);
    }
    // With the names clear, the get works.
    let whole = jewel::pipeline::local_fetch(m, sources(&s, &all)).unwrap();
    jewel::offline::get_resumable(&target, m, &s.put.cap.key, &whole, 2).unwrap();
    assert!(std::fs::read(&target).unwrap() == data);
}
