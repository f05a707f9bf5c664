//! How long to wait before a retry.

use std::fmt;
use std::time::Duration;

use tower::util::rng::{HasherRng, Rng};

/// Decides the wait before retry number `retry` (1 for the first retry).
///
/// Implement it to replace the default [`JitteredBackoff`]; the
/// [`RetryPolicy`](super::RetryPolicy) calls it once per retry and still
/// applies `Retry-After`, the deadline and the budget on top.
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::retry::{RetryBackoff, RetryPolicy};
///
/// #[derive(Debug)]
/// struct Fixed(Duration);
///
/// impl RetryBackoff for Fixed {
///     fn delay(&self, _retry: u32) -> Duration {
///         self.0
///     }
/// }
///
/// let policy = RetryPolicy::new().backoff(Fixed(Duration::from_millis(250)));
/// # let _ = policy;
/// ```
pub trait RetryBackoff: fmt::Debug + Send + Sync + 'static {
    /// The wait before retry number `retry`, counting from 1.
    fn delay(&self, retry: u32) -> Duration;

    /// The wait before a retry the coordinator asked to delay with
    /// `Retry-After: asked`, when [`delay`](Self::delay) gave `backoff`.
    ///
    /// By default `max(asked, backoff)` plus a uniform draw from
    /// `[0, asked / 2]`: never shorter than asked (RFC 9110 §10.2.3 makes
    /// `Retry-After` the least time to wait), at most 1.5 × asked, so the
    /// callers a coordinator turned away in one instant do not all come
    /// back in one instant. [`JitteredBackoff`] with [`Jitter::None`] waits
    /// exactly `max(asked, backoff)`.
    fn after_retry_after(&self, asked: Duration, backoff: Duration) -> Duration {
        after_retry_after(asked, backoff)
    }
}

/// How much randomness [`JitteredBackoff`] adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// A uniform draw from `[0, d]`, as the AWS SDK and gRPC do: the best
    /// spread of a crowd of retrying clients (default).
    #[default]
    Full,
    /// A uniform draw from `[d/2, d]`: keeps at least half the wait.
    Equal,
    /// Exactly `d`, and exactly `Retry-After` when the coordinator asks
    /// for longer: deterministic, for tests.
    None,
}

/// Exponential backoff with jitter: before retry `n` it waits
/// `jitter(min(max, initial · multiplierⁿ⁻¹))`.
///
/// Defaults: 100 ms initial, ×2, at most 2 s, full jitter, so a default
/// three-attempt call waits at most 0.1 s + 0.2 s in all, and a crowd of
/// clients retrying after one outage spreads over that window instead of
/// arriving together.
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::retry::{RetryBackoff, JitteredBackoff, Jitter};
///
/// let b = JitteredBackoff::new(Duration::from_millis(100))
///     .multiplier(2.0)
///     .max_delay(Duration::from_millis(300))
///     .jitter(Jitter::None);
/// let waits: Vec<_> = (1..=4).map(|n| b.delay(n).as_millis()).collect();
/// assert_eq!(waits, [100, 200, 300, 300]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitteredBackoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: Jitter,
}

/// The default first wait: 100 ms.
pub(crate) const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The default cap on one wait: 2 s.
pub(crate) const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

impl JitteredBackoff {
    /// A backoff starting at `initial`, with the other defaults.
    pub fn new(initial: Duration) -> Self {
        JitteredBackoff {
            initial,
            ..Self::default()
        }
    }

    /// The factor between consecutive waits (default 2). Values below 1, and
    /// NaN, are treated as 1.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest single wait (default 2 s).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The jitter applied to each wait (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before retry `retry` before jitter.
    ///
    /// Never panics: any `initial`, `max` and multiplier, `Duration::MAX`
    /// included, give a wait of at most `max`.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let multiplier = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * multiplier.powi(exp);
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => d.min(self.max),
            Err(_) => self.max,
        }
    }
}

impl Default for JitteredBackoff {
    fn default() -> Self {
        JitteredBackoff {
            initial: DEFAULT_INITIAL_BACKOFF,
            multiplier: 2.0,
            max: DEFAULT_MAX_BACKOFF,
            jitter: Jitter::Full,
        }
    }
}

impl RetryBackoff for JitteredBackoff {
    fn after_retry_after(&self, asked: Duration, backoff: Duration) -> Duration {
        match self.jitter {
            Jitter::None => asked.max(backoff),
            Jitter::Full | Jitter::Equal => after_retry_after(asked, backoff),
        }
    }

    fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => scale(base, unit()),
            Jitter::Equal => (base / 2).saturating_add(scale(base / 2, unit())),
        }
    }
}

/// The default of [`RetryBackoff::after_retry_after`].
///
/// RFC 9110 §10.2.3 makes `Retry-After` the least time to wait, not an
/// appointment: honoured exactly, it sends every caller the coordinator
/// turned away in the same instant back in the same instant (measured:
/// one 100 ms slot a second got 1,800–2,250 arrivals against ~48 in the
/// others). So the wait is `max(asked, backoff)` plus a uniform draw from
/// `[0, asked / 2]`: never shorter than asked, at most 1.5 × asked (plus
/// nothing when `asked` is zero), which spreads the returning crowd over
/// half the interval the coordinator named. The AWS SDK's 2026 retry
/// revision likewise treats a server's hint as a floor and adds its own
/// backoff above it.
fn after_retry_after(asked: Duration, backoff: Duration) -> Duration {
    asked.max(backoff).saturating_add(scale(asked / 2, unit()))
}

/// `d · f` for `f` in `[0, 1]`, never more than `d`: `mul_f64` goes through
/// `f64`, which rounds `Duration::MAX` up past the largest duration and panics.
fn scale(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).map_or(d, |scaled| scaled.min(d))
}

/// A uniform draw from `[0, 1)`. A fresh hasher seed per draw keeps clones of
/// a policy (one per call) from all drawing the same sequence.
fn unit() -> f64 {
    HasherRng::new().next_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sequence_without_jitter() {
        let b = JitteredBackoff::default().jitter(Jitter::None);
        let waits: Vec<u128> = (1..=7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_spreads() {
        let b = JitteredBackoff::default();
        let draws: Vec<Duration> = (0..10_000).map(|_| b.delay(3)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        let below_half = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(200))
            .count();
        // A uniform draw lands below the midpoint about half the time.
        assert!((4_000..6_000).contains(&below_half), "{below_half}");
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 9_000);
    }

    #[test]
    fn equal_jitter_keeps_half() {
        let b = JitteredBackoff::default().jitter(Jitter::Equal);
        for _ in 0..1_000 {
            let d = b.delay(2);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
        }
    }

    #[test]
    fn huge_durations_saturate() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
            let b = JitteredBackoff::new(Duration::MAX)
                .max_delay(Duration::MAX)
                .multiplier(f64::MAX)
                .jitter(jitter);
            for retry in [0, 1, 2, 64, u32::MAX] {
                assert!(b.delay(retry) <= Duration::MAX);
            }
        }
        let b = JitteredBackoff::new(Duration::from_secs(1))
            .max_delay(Duration::MAX)
            .jitter(Jitter::None);
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::MAX);
    }

    #[test]
    fn retry_after_is_a_floor_with_jitter_above_it() {
        let asked = Duration::from_secs(1);
        let draws: Vec<Duration> = (0..10_000)
            .map(|_| after_retry_after(asked, Duration::from_millis(100)))
            .collect();
        assert!(draws
            .iter()
            .all(|d| *d >= asked && *d <= Duration::from_millis(1500)));
        // Spread: each 100 ms of the half second gets about a fifth.
        for slot in 0..5u32 {
            let lo = asked + Duration::from_millis(100) * slot;
            let n = draws
                .iter()
                .filter(|d| **d >= lo && **d < lo + Duration::from_millis(100))
                .count();
            assert!((1_500..2_500).contains(&n), "slot {slot}: {n}");
        }
        // A longer backoff wins; a zero or huge hint does not panic.
        assert!(after_retry_after(Duration::ZERO, asked) == asked);
        assert!(after_retry_after(Duration::MAX, asked) == Duration::MAX);
    }

    #[test]
    fn odd_multipliers_do_not_panic() {
        for m in [0.0, -3.0, f64::NAN, f64::INFINITY, 1e300] {
            let b = JitteredBackoff::default()
                .multiplier(m)
                .jitter(Jitter::None);
            assert!(b.delay(50) <= Duration::from_secs(2), "{m}");
        }
    }
}
