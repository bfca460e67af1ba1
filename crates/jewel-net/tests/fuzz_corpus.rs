//! Replays the committed block-protocol fuzz corpus (`fuzz/corpus/request/*`) through the
//! same check the `request` fuzz target runs.

use std::path::Path;

use jewel_net::fuzzing::check_request;

#[test]
fn request_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(e) = check_request(&data) {
            panic!("{}: {e}", path.display());
        }
        count += 1;
    }
    assert!(count > 0, "the request corpus is empty");
}
