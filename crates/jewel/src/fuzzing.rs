//! Invariant checks for the decoders of untrusted input, shared by the fuzz targets
//! (`fuzz/`) and the corpus replay test that CI runs on stable.
//!
//! Each function parses arbitrary bytes; it must never panic, and whatever parses must
//! print back and parse to the same value. A broken invariant is returned as `Err`, so
//! the caller decides to panic (the fuzzer and the test do); `Ok` says whether the input
//! parsed, so a replay can tell that it exercised the accepting path too.

use jewel_codec::SchemeSpec;

use crate::caps::Cap;
use crate::manifest::Manifest;

/// Caps: anything that parses round-trips through its printed form.
pub fn check_cap(data: &[u8]) -> Result<bool, String> {
    let text = String::from_utf8_lossy(data);
    let Ok(cap) = Cap::parse(&text) else { return Ok(false) };
    let printed = cap.to_string();
    match Cap::parse(&printed) {
        Ok(again) if again == cap => Ok(true),
        other => Err(format!("cap {printed} did not round-trip: {other:?}")),
    }
}

/// Manifests: anything that decodes encodes back to the very same bytes.
pub fn check_manifest(data: &[u8]) -> Result<bool, String> {
    let Ok(m) = Manifest::decode(data) else { return Ok(false) };
    if m.encode() != data {
        return Err("manifest decoded but does not re-encode to the same bytes".into());
    }
    Ok(true)
}

/// Scheme specs: anything that parses round-trips and builds.
pub fn check_spec(data: &[u8]) -> Result<bool, String> {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = SchemeSpec::parse(&text) else { return Ok(false) };
    let printed = spec.to_string();
    match SchemeSpec::parse(&printed) {
        Ok(again) if again == spec => {}
        other => return Err(format!("spec {printed} did not round-trip: {other:?}")),
    }
    if let Err(e) = jewel_codec::build(&spec) {
        return Err(format!("spec {printed} parsed but does not build: {e}"));
    }
    Ok(true)
}
