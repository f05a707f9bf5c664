//! Any bytes a coordinator sends as a verdict: an answer or an
//! invalid-response error, never a panic.
//!
//! `cargo +nightly fuzz run from_json` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_quality_gate::QualityResponse;

fuzz_target!(|body: &[u8]| {
    if let Err(err) = QualityResponse::from_json(body) {
        assert!(err.is_invalid_response());
        let _ = format!("{err} {err:?}");
    }
});
