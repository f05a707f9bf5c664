//! Request ids: one per call, the same on every attempt of it, so a
//! coordinator can recognise a retried check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderValue;
use tower::util::rng::{HasherRng, Rng};

/// The default request-id header.
pub(crate) const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// `qg-`, the process's random prefix in 16 hex digits, and `-`: written
/// once, copied into every id.
static PREFIX: OnceLock<[u8; 20]> = OnceLock::new();

const HEX: &[u8; 16] = b"0123456789abcdef";

fn prefix() -> [u8; 20] {
    let random = HasherRng::new().next_u64();
    let mut prefix = [0u8; 20];
    prefix[..3].copy_from_slice(b"qg-");
    for i in 0..16 {
        prefix[3 + i] = HEX[(random >> (60 - 4 * i)) as usize & 0xf];
    }
    prefix[19] = b'-';
    prefix
}

/// A new id, unique in this process and, through a random per-process
/// prefix, across processes: `qg-{prefix:016x}-{counter:x}`.
pub(crate) fn next() -> HeaderValue {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Hex digits written by hand into a stack buffer: no `fmt`, no String.
    let mut id = [0u8; 3 + 16 + 1 + 16];
    id[..20].copy_from_slice(PREFIX.get_or_init(prefix));
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        id[20 + i] = HEX[(n >> (4 * (digits - 1 - i))) as usize & 0xf];
    }
    // One allocation that clones share by reference count (a `Bytes` copied
    // from a slice would allocate again on its first clone, for the header
    // of each attempt). Only ASCII hex digits and dashes: always valid.
    let bytes = bytes::Bytes::from_owner(Id {
        buf: id,
        len: 20 + digits,
    });
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("qg"))
}

/// An id's bytes, owned by the `Bytes` that shows them.
struct Id {
    buf: [u8; 36],
    len: usize,
}

impl AsRef<[u8]> for Id {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
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

    #[test]
    fn ids_keep_their_format() {
        let id = next();
        let parts: Vec<&str> = id.to_str().unwrap().split('-').collect();
        assert_eq!(parts[0], "qg");
        assert_eq!(parts[1].len(), 16);
        let n = u64::from_str_radix(parts[2], 16).unwrap();
        assert_eq!(format!("{n:x}"), parts[2]);
    }
}
