//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same checks
//! the fuzz targets run, so CI exercises every input the fuzzer kept, on stable Rust.

use std::path::Path;

use jewel::fuzzing::{check_cap, check_manifest, check_spec};

/// Runs every input of a corpus through `check`; the corpus must hold inputs that parse (so
/// the round-trip invariants were checked) as well as inputs that do not.
fn replay(target: &str, check: fn(&[u8]) -> Result<bool, String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let (mut accepted, mut rejected) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        match check(&data) {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    assert!(accepted > 0, "no input of the {target} corpus parses ({rejected} rejected)");
    assert!(rejected > 0, "every input of the {target} corpus parses ({accepted}); it has no bad input");
}

#[test]
fn cap_corpus() {
    replay("cap", check_cap);
}

#[test]
fn manifest_corpus() {
    replay("manifest", check_manifest);
}

#[test]
fn spec_corpus() {
    replay("spec", check_spec);
}
