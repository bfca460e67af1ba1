//! Encode and worst-case decode of every scheme on one 10 MiB segment (1 MiB shards for
//! jewels:10/16). Run: `cargo bench -p jewel-codec --bench schemes`.

use divan::counter::BytesCount;
use divan::Bencher;
use jewel_codec::{build, Encoded, Scheme, SchemeSpec, SplitMix64};

const SPECS: &[&str] = &[
    "hosting",
    "replicate:3",
    "shard:3x2",
    "parity:4",
    "jewels:4/8",
    "jewels:10/16",
    "nested:jewels:2/3+parity:2",
];
const SEGMENT: usize = 10 << 20;

fn main() {
    divan::main();
}

fn segment() -> Vec<u8> {
    let mut rng = SplitMix64(1);
    (0..SEGMENT / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect()
}

fn scheme(spec: &str) -> Box<dyn Scheme> {
    build(&SchemeSpec::parse(spec).unwrap()).unwrap()
}

#[divan::bench(args = SPECS)]
fn encode(bencher: Bencher, spec: &str) {
    let scheme = scheme(spec);
    let seg = segment();
    let mut enc = Encoded::default();
    bencher
        .counter(BytesCount::new(SEGMENT))
        .bench_local(|| scheme.encode(divan::black_box(&seg), &mut enc).unwrap());
}

/// Decode with the most pieces missing, taken from the front (data shards first), so
/// that the most arithmetic is needed: for jewels:10/16, 6 of the 10 data shards.
#[divan::bench(args = SPECS)]
fn decode_most_missing(bencher: Bencher, spec: &str) {
    let scheme = scheme(spec);
    let seg = segment();
    let mut enc = Encoded::default();
    scheme.encode(&seg, &mut enc).unwrap();
    let n = scheme.slots();
    let mut alive = vec![true; n];
    for s in 0..n {
        alive[s] = false;
        if !scheme.can_decode(&alive) {
            alive[s] = true;
        }
    }
    let chunks: Vec<Option<Vec<u8>>> =
        (0..n).map(|s| alive[s].then(|| enc.to_vec(&seg, s).unwrap())).collect();
    let mut out = Vec::new();
    bencher
        .counter(BytesCount::new(SEGMENT))
        .with_inputs(|| chunks.clone())
        .bench_local_refs(|c| scheme.decode(SEGMENT, c, &mut out).unwrap());
}
