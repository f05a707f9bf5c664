//! Request ids: one per call, the same on every attempt of it, so a
//! coordinator can recognise a retried check.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderValue;
use tower::util::rng::{HasherRng, Rng};

/// The default request-id header.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static PREFIX: OnceLock<u64> = OnceLock::new();

/// A new id, unique in this process and, through a random per-process
/// prefix, across processes: `qg-{prefix:016x}-{counter:x}`.
pub(crate) fn next() -> HeaderValue {
    let prefix = *PREFIX.get_or_init(|| HasherRng::new().next_u64());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(36);
    // Writing to a String cannot fail.
    let _ = write!(id, "qg-{prefix:016x}-{n:x}");
    // Only ASCII hex digits and dashes: always a valid header value.
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("qg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| next()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(next().to_str().unwrap().starts_with("qg-"));
    }
}
