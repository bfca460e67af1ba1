//! Replays the committed block-protocol fuzz corpus (`fuzz/corpus/request/*`) through the
//! same check the `request` fuzz target runs.

use std::path::Path;

use jewel_net::fuzzing::check_request;

#[test]
fn request_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request");
    let (mut accepted, mut rejected) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        match check_request(&data) {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    assert!(accepted > 0, "no input of the request corpus parses ({rejected} rejected)");
    assert!(rejected > 0, "every input of the request corpus parses; it has no bad input");
}
