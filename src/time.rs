//! Duration arithmetic that never panics: every sum saturates.

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: far enough to mean "never", near enough that adding
/// it to any `Instant` of a running process cannot overflow.
pub(crate) const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `from + d`, or a far-future instant when that would overflow.
pub(crate) fn saturating_add(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .unwrap_or_else(|| from.checked_add(FAR).unwrap_or(from))
}

/// `Instant::now() + d`, saturating.
pub(crate) fn after(d: Duration) -> Instant {
    saturating_add(Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate() {
        let now = Instant::now();
        assert!(saturating_add(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(saturating_add(now, Duration::ZERO), now);
        assert!(after(Duration::MAX) > now);
    }
}
