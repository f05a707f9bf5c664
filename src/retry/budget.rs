//! A retry budget shared by every clone of a policy.

use std::fmt;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use crate::error::Error;

/// Caps retries at a share of recent calls, so a coordinator outage cannot
/// multiply the load it receives by the attempt count.
///
/// This is tower's [`TpsBudget`] (Finagle's design), validated: every call
/// deposits, every retry withdraws; retries beyond `percent` of the calls of
/// the last `ttl`, plus a floor of `min_per_sec`, are refused and the call
/// fails with its last error. Clone the policy, not the budget: clones share
/// it through an `Arc`.
///
/// The default, 20% of calls plus 10 retries a second over 10 s (Finagle's
/// and Linkerd's numbers), bounds a full outage at about 1.2× the call rate
/// plus the floor.
///
/// Only percentages whose inverse is a whole number are exact (0.1, 0.2,
/// 0.25, 0.5, 1.0): tower truncates `1 / percent`, so 0.3 behaves as 0.33.
/// [`RetryBudget::new`] refuses other values below 1.0 rather than silently
/// rounding them.
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::retry::RetryBudget;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 10, 0.2).unwrap();
/// assert!(RetryBudget::new(Duration::from_secs(10), 10, 0.3).is_err());
/// assert!(RetryBudget::new(Duration::from_millis(10), 10, 0.2).is_err());
/// # let _ = budget;
/// ```
pub struct RetryBudget {
    inner: TpsBudget,
    ttl: Duration,
    min_per_sec: u32,
    percent: f32,
}

impl RetryBudget {
    /// A budget allowing `percent` of the calls seen in the last `ttl` to be
    /// retried, plus `min_per_sec` retries a second.
    ///
    /// `ttl` must be 1 to 60 s; `percent` from 0 to 1000, and below 1 only
    /// a value whose inverse is a whole number (see above). Anything else is
    /// a configuration error, where tower's constructor would panic.
    pub fn new(ttl: Duration, min_per_sec: u32, percent: f32) -> Result<Self, Error> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(Error::config(format!(
                "retry budget ttl {ttl:?} is outside 1 s to 60 s"
            )));
        }
        if !(0.0..=1000.0).contains(&percent) {
            return Err(Error::config(format!(
                "retry budget percent {percent} is outside 0 to 1000"
            )));
        }
        if percent > 0.0 && percent < 1.0 {
            let inverse = 1.0 / percent;
            if (inverse - inverse.round()).abs() > 1e-3 {
                return Err(Error::config(format!(
                    "retry budget percent {percent} would be rounded to {}: use one whose inverse is a whole number",
                    1.0 / inverse.trunc()
                )));
            }
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(Error::config("retry budget min_per_sec is too large"));
        }
        Ok(RetryBudget {
            inner: TpsBudget::new(ttl, min_per_sec, percent),
            ttl,
            min_per_sec,
            percent,
        })
    }

    /// Records one call; each makes `percent` of a retry available.
    pub(crate) fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            inner: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            percent: 0.2,
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.ttl)
            .field("min_per_sec", &self.min_per_sec)
            .field("percent", &self.percent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries_allowed(budget: &RetryBudget, calls: u32) -> u32 {
        for _ in 0..calls {
            budget.deposit();
        }
        let mut n = 0;
        while budget.withdraw() {
            n += 1;
            assert!(n < 1_000_000);
        }
        n
    }

    #[test]
    fn exact_percentages_allow_their_share() {
        for (percent, calls, want) in [
            (0.1, 100, 10),
            (0.2, 100, 20),
            (0.25, 100, 25),
            (0.5, 100, 50),
            (1.0, 40, 40),
        ] {
            let b = RetryBudget::new(Duration::from_secs(10), 0, percent).unwrap();
            assert_eq!(retries_allowed(&b, calls), want, "{percent}");
        }
    }

    #[test]
    fn floor_allows_retries_without_calls() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.2).unwrap();
        // 1 retry a second over a 10 s window.
        assert_eq!(retries_allowed(&b, 0), 10);
        let zero = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
        assert_eq!(retries_allowed(&zero, 100), 0);
    }

    #[test]
    fn default_is_twenty_percent_plus_floor() {
        let b = RetryBudget::default();
        assert_eq!(retries_allowed(&b, 1000), 200 + 100);
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (ttl, pct) in [
            (0, 0.2),
            (61, 0.2),
            (10, -0.1),
            (10, 1000.5),
            (10, 0.3),
            (10, f32::NAN),
        ] {
            let err = RetryBudget::new(Duration::from_secs(ttl), 1, pct).unwrap_err();
            assert!(err.is_config(), "{ttl} {pct}");
        }
    }
}
