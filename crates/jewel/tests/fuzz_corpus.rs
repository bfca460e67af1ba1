//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same checks
//! the fuzz targets run, so CI exercises every input the fuzzer kept, on stable Rust.

use std::path::Path;

use jewel::fuzzing::{check_cap, check_manifest, check_spec};

fn replay(target: &str, check: fn(&[u8]) -> Result<(), String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(e) = check(&data) {
            panic!("{}: {e}", path.display());
        }
        count += 1;
    }
    assert!(count > 0, "the {target} corpus is empty");
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
