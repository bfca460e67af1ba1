//! The pipeline's building blocks on 4 MiB of random data: BLAKE3, bao outboards, both
//! AEADs, zstd (and its sample test), and a memory copy for scale.
//! Run: `cargo bench -p jewel --bench primitives`.

use divan::counter::BytesCount;
use divan::Bencher;
use jewel::crypto::{CipherId, FileKey, SegmentCipher, NONCE_PREFIX_LEN};

const LEN: usize = 4 << 20;

fn main() {
    divan::main();
}

fn data() -> Vec<u8> {
    let mut rng = jewel::codec::SplitMix64(3);
    (0..LEN / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect()
}

#[divan::bench]
fn memcpy(bencher: Bencher) {
    let src = data();
    let mut dst = vec![0u8; LEN];
    bencher.counter(BytesCount::new(LEN)).bench_local(|| dst.copy_from_slice(divan::black_box(&src)));
}

#[divan::bench]
fn blake3_hash(bencher: Bencher) {
    let d = data();
    bencher.counter(BytesCount::new(LEN)).bench_local(|| blake3::hash(divan::black_box(&d)));
}

#[divan::bench]
fn bao_outboard(bencher: Bencher) {
    let d = data();
    let store = jewel::MemStore::new(None);
    bencher.counter(BytesCount::new(LEN)).bench_local(|| {
        use jewel::BlockStore;
        store.put(divan::black_box(&d)).unwrap()
    });
}

#[divan::bench(args = ["aes-256-gcm", "xchacha20-poly1305"])]
fn aead_seal(bencher: Bencher, cipher: &str) {
    let cipher = CipherId::parse(cipher).unwrap();
    let c = SegmentCipher::new(cipher, &FileKey([7; 32]), [1; NONCE_PREFIX_LEN]).unwrap();
    let d = data();
    let mut buf = Vec::with_capacity(LEN + 16);
    bencher.counter(BytesCount::new(LEN)).bench_local(|| {
        buf.clear();
        buf.extend_from_slice(&d);
        c.seal(0, false, &mut buf).unwrap();
    });
}

#[divan::bench(args = [1, 3])]
fn zstd_random(bencher: Bencher, level: i32) {
    let d = data();
    let mut out = vec![0u8; zstd::zstd_safe::compress_bound(LEN)];
    bencher
        .counter(BytesCount::new(LEN))
        .bench_local(|| zstd::bulk::compress_to_buffer(divan::black_box(&d), &mut out, level).unwrap());
}

#[divan::bench]
fn zstd_sample_test(bencher: Bencher) {
    // What the pipeline spends per 4 MiB segment to decide that random data is not worth
    // compressing: one 64 KiB sample at level 1.
    let d = data();
    bencher
        .counter(BytesCount::new(LEN))
        .bench_local(|| zstd::bulk::compress(divan::black_box(&d[..64 << 10]), 1).unwrap());
}

/// Two devices that made 5 000 edits each apart (1 000 to the same paths) meet: one takes
/// the other's ops (issue 14's merge target: within 200 ms).
#[divan::bench]
fn index_merge_5000_each(bencher: Bencher) {
    let (a, b) = jewel::index::apart(5000, 1000);
    let theirs: Vec<jewel::index::Op> = b.ops().cloned().collect();
    bencher.with_inputs(|| a.clone()).bench_local_values(|mut mine| {
        mine.merge(&theirs).unwrap();
        mine.files().len()
    });
}
