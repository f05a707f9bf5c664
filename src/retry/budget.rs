//! A retry budget shared by every clone of a policy.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// Caps retries at a share of recent calls, so a coordinator outage cannot
/// multiply the load it receives by the attempt count.
///
/// Finagle's and Linkerd's design: every call deposits, every retry
/// withdraws; retries beyond `percent` of the calls of the last `ttl`, plus
/// a floor of `min_per_sec` a second, are refused and the call fails with
/// its last error. Clone the policy, not the budget: clones share it
/// through an `Arc`.
///
/// **The promise**: whenever it allows a retry, the retries of the last
/// `ttl` are at most `percent` of the calls of the last `ttl` plus
/// `min_per_sec × ttl`, on a real clock as on tokio's paused one (a
/// property test tries arbitrary settings and patterns); any `percent` is
/// exact. At a steady call rate that bounds every span of `ttl`. The default, 20% of calls plus 10 retries a
/// second over 10 s (Finagle's and Linkerd's numbers), bounds a full outage
/// at 1.2 × calls + 100 attempts per 10 s.
///
/// It keeps the last `ttl` as 20 slots of `ttl / 20`, each with its calls
/// and retries. A retry is allowed when the retries of the slots that
/// overlap the last `ttl` (one more slot than the span, counted whole) stay
/// within the share of the calls of the slots wholly inside it plus the
/// floor: both sides round against the retry. tower's `TpsBudget`, which this
/// replaces, measured 299 retries in a 10 s span of 500 failing calls on
/// a real clock, 99 above its promise of 200: it granted its `min_per_sec`
/// reserve again within the span (`tests/fleet.rs`,
/// `tower_tps_budget_on_a_real_clock`; this budget: 199,
/// `budget_promise_on_a_real_clock`).
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::retry::RetryBudget;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 10, 0.2).unwrap();
/// assert!(RetryBudget::new(Duration::from_secs(10), 10, 0.3).is_ok());
/// assert!(RetryBudget::new(Duration::from_millis(10), 10, 0.2).is_err());
/// # let _ = budget;
/// ```
pub struct RetryBudget {
    ttl: Duration,
    min_per_sec: u32,
    percent: f32,
    slots: Mutex<Slots>,
}

/// Slots the span is cut into.
const SLOTS: usize = 20;

/// The calls and retries of each slot, in a ring.
#[derive(Debug)]
struct Slots {
    /// When slot number 0 began.
    origin: Instant,
    /// The number of the newest slot in the ring.
    newest: u64,
    /// `SLOTS + 1` entries: the span, plus the slot the span starts in.
    ring: [(u64, u64); SLOTS + 1],
}

impl RetryBudget {
    /// A budget allowing `percent` of the calls seen in the last `ttl` to be
    /// retried, plus `min_per_sec` retries a second.
    ///
    /// `ttl` must be 1 to 60 s; `percent` from 0 to 1000. Anything else is
    /// a configuration error.
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
        if min_per_sec >= i32::MAX as u32 {
            return Err(Error::config("retry budget min_per_sec is too large"));
        }
        Ok(RetryBudget::unchecked(ttl, min_per_sec, percent))
    }

    fn unchecked(ttl: Duration, min_per_sec: u32, percent: f32) -> Self {
        RetryBudget {
            ttl,
            min_per_sec,
            percent,
            slots: Mutex::new(Slots {
                origin: Instant::now(),
                newest: 0,
                ring: [(0, 0); SLOTS + 1],
            }),
        }
    }

    /// The window as of `now`: the slots that passed are emptied.
    fn slots(&self, now: Instant) -> std::sync::MutexGuard<'_, Slots> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // In u64 nanoseconds (585 years), not `as_nanos`' u128: a u128
        // division is a library call, on every call's deposit.
        let width = (self.ttl.as_nanos() as u64 / SLOTS as u64).max(1);
        let now = now.saturating_duration_since(slots.origin);
        let now = now
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(now.subsec_nanos()));
        let current = now / width;
        // Slots that passed since the last look are emptied (all of them
        // after a long pause).
        let passed = current.saturating_sub(slots.newest);
        for n in 1..=passed.min(SLOTS as u64 + 1) {
            let i = ((slots.newest + n) % (SLOTS as u64 + 1)) as usize;
            slots.ring[i] = (0, 0);
        }
        slots.newest = slots.newest.max(current);
        slots
    }

    /// Records one call; each makes `percent` of a retry available.
    #[cfg(test)]
    pub(crate) fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Records one call, at `now` (the caller's clock read).
    pub(crate) fn deposit_at(&self, now: Instant) {
        let mut slots = self.slots(now);
        let i = (slots.newest % (SLOTS as u64 + 1)) as usize;
        slots.ring[i].0 += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    #[cfg(test)]
    pub(crate) fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    /// Takes one retry from the budget at `now` (the caller's clock read);
    /// false when it is spent.
    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let mut slots = self.slots(now);
        let oldest = ((slots.newest + 1) % (SLOTS as u64 + 1)) as usize;
        let (mut calls, mut retries) = (0u64, 0u64);
        for (i, (c, r)) in slots.ring.iter().enumerate() {
            retries += r;
            // The oldest slot reaches back past the span: its calls may
            // be older than `ttl`, its retries are counted anyway.
            if i != oldest {
                calls += c;
            }
        }
        let allowed = f64::from(self.percent) * calls as f64
            + f64::from(self.min_per_sec) * self.ttl.as_secs_f64();
        if (retries + 1) as f64 > allowed + 1e-9 {
            return false;
        }
        let i = (slots.newest % (SLOTS as u64 + 1)) as usize;
        slots.ring[i].1 += 1;
        true
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::unchecked(Duration::from_secs(10), 10, 0.2)
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
            (0.3, 100, 30),
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

    /// On tokio's paused clock, calls at 50 a second that all fail and
    /// retry whenever the budget allows: every span of 10 s holds at most
    /// 20% of its calls plus 100 retries (within one slot).
    #[tokio::test(start_paused = true)]
    async fn the_promise_holds_over_every_span() {
        let b = RetryBudget::default();
        let tick = Duration::from_millis(20);
        let mut events = Vec::new(); // (tick, calls, retries)
        for n in 0..3000u64 {
            b.deposit();
            let mut retries = 0;
            while b.withdraw() {
                retries += 1;
            }
            events.push((n, 1u64, retries));
            tokio::time::advance(tick).await;
        }
        // 10 s = 500 ticks; one slot = 25 ticks.
        let (mut most, mut total) = (0f64, 0);
        for start in 0..events.len() - 500 {
            let span = &events[start..start + 500];
            let calls: u64 = span.iter().map(|e| e.1).sum();
            let retries: u64 = span.iter().map(|e| e.2).sum();
            total += retries;
            most = most.max(retries as f64 - (0.2 * calls as f64 + 100.0));
        }
        assert!(total > 0);
        // One slot's worth of calls (25) may sit at the edge.
        assert!(most <= 0.2 * 25.0, "{most} retries over the promise");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the settings and the pattern of calls and retries, at
        /// every retry allowed the trailing `ttl` holds at most `percent`
        /// of the calls of the trailing `ttl`, plus the floor.
        #[test]
        fn every_retry_keeps_the_trailing_window_within_the_promise(
            ttl_secs in 1u64..=60,
            min_per_sec in 0u32..20,
            percent in 0.0f32..2.0,
            steps in proptest::collection::vec((0u64..3000, 0u32..20, 0u32..40), 1..100),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let ttl = Duration::from_secs(ttl_secs);
                let b = RetryBudget::new(ttl, min_per_sec, percent).unwrap();
                let start = Instant::now();
                let (mut calls, mut retries) = (Vec::new(), Vec::new());
                for (advance_ms, deposits, tries) in steps {
                    tokio::time::advance(Duration::from_millis(advance_ms)).await;
                    let now = Instant::now() - start;
                    for _ in 0..deposits {
                        b.deposit();
                        calls.push(now);
                    }
                    for _ in 0..tries {
                        if !b.withdraw() {
                            continue;
                        }
                        retries.push(now);
                        let within = |t: &&Duration| **t + ttl > now;
                        let r = retries.iter().filter(within).count();
                        let c = calls.iter().filter(within).count();
                        let promise = f64::from(percent) * c as f64
                            + f64::from(min_per_sec) * ttl.as_secs_f64();
                        proptest::prop_assert!(r as f64 <= promise + 1e-6, "{r} > {promise}");
                    }
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (ttl, pct) in [
            (0, 0.2),
            (61, 0.2),
            (10, -0.1),
            (10, 1000.5),
            (10, f32::NAN),
        ] {
            let err = RetryBudget::new(Duration::from_secs(ttl), 1, pct).unwrap_err();
            assert!(err.is_config(), "{ttl} {pct}");
        }
    }
}
