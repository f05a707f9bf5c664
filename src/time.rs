//! Duration arithmetic that saturates instead of panicking.
//!
//! Durations reach the crate from callers (timeouts, a custom
//! [`RetryBackoff`](crate::retry::RetryBackoff), a call's deadline) and from
//! coordinators (`Retry-After`), so any of them may be `Duration::MAX`.
//! `Instant + Duration` and `Duration + Duration` panic on overflow; these
//! helpers clamp instead, to a deadline so far ahead it never passes. (For
//! `Duration + Duration`, std's `saturating_add` is enough.) And the
//! earlier of two optional times, which deadlines and latencies need.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead an overflowing deadline is put: about 30 years, as tokio's
/// own "never" does; no process waits that long.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `from + d`, or an instant that never comes when that overflows.
pub(crate) fn saturating_add(from: Instant, d: Duration) -> Instant {
    // On no supported platform does `now + 30 years` overflow; if it ever
    // did, `from` is the only instant known to exist.
    from.checked_add(d)
        .unwrap_or_else(|| from.checked_add(FAR).unwrap_or(from))
}

/// `Instant::now() + d`, saturating.
pub(crate) fn after(d: Duration) -> Instant {
    saturating_add(Instant::now(), d)
}

/// A duration in whole milliseconds as a `u64`, saturating (for log fields;
/// `as_millis() as u64` wraps).
/// The earlier of two optional instants (or the shorter of two optional
/// durations); `None` only when both are.
pub(crate) fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_panicking() {
        let now = Instant::now();
        assert!(saturating_add(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            saturating_add(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(after(Duration::MAX) > now);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
    }

    #[test]
    fn earliest_is_the_smaller_of_what_is_there() {
        let (a, b) = (Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(earliest(Some(a), Some(b)), Some(a));
        assert_eq!(earliest(Some(b), Some(a)), Some(a));
        assert_eq!(earliest(None, Some(b)), Some(b));
        assert_eq!(earliest(Some(a), None), Some(a));
        assert_eq!(earliest::<Duration>(None, None), None);
    }
}
