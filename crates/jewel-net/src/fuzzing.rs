//! Invariant checks for the block protocol's decoders, shared by the `request` fuzz target
//! and the corpus replay test. A broken invariant is returned as `Err`; the caller panics.
//! `Ok` says whether the input parsed.

/// Block-protocol requests: anything that parses re-encodes to a prefix of the input
/// (a PUT's data follows its header).
pub fn check_request(data: &[u8]) -> Result<bool, String> {
    let Ok(req) = crate::wire::Request::decode(data) else { return Ok(false) };
    let encoded = req.encode();
    if !data.starts_with(&encoded) {
        return Err(format!("request {req:?} does not re-encode to its input"));
    }
    Ok(true)
}
