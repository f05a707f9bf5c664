//! The limit algorithm: AIMD on the latency of a window against the lowest
//! latency of the last one to two periods, and on overload answers. Pure
//! logic, driven by the service with explicit instants; the module docs of
//! `limit` say why (Chiu & Jain's fairness of AIMD among a fleet of
//! independent clients).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// Settings of an [`AdaptiveLimit`](super::AdaptiveLimit).
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::limit::AdaptiveLimitConfig;
///
/// let config = AdaptiveLimitConfig::default()
///     .min_limit(2)
///     .max_limit(500)
///     .tolerance(1.5);
/// assert_eq!(config.initial_limit, 20);
/// assert_eq!(config.max_limit, 500);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveLimitConfig {
    /// The limit after the first probe (default 20).
    pub initial_limit: usize,
    /// The floor (default 1).
    pub min_limit: usize,
    /// The ceiling (default 200).
    pub max_limit: usize,
    /// How much slower than the no-load latency the mean latency of a window
    /// may be before the limit shrinks (default 1.1).
    pub tolerance: f64,
    /// The factor applied to the limit on an overload answer, and below
    /// the concurrency the coordinator serves on a slow window (default 0.9).
    pub backoff: f64,
    /// The concurrency of the first calls, which measure the no-load
    /// latency (default 3).
    pub probe_concurrency: usize,
    /// How many first calls run at the probe concurrency (default 20).
    pub probe_samples: u32,
    /// How long the lowest latency seen is remembered: one to two periods
    /// of this length, each jittered by ±15% (default 60 s).
    pub probe_interval: Duration,
}

/// A window closes after this many samples at least, or `limit` if more.
const MIN_WINDOW: u32 = 10;
/// The largest decrease of one window: half the limit.
const MIN_GRADIENT: f64 = 0.5;

impl AdaptiveLimitConfig {
    /// The limit after the first probe (default 20, Netflix's start for
    /// Vegas and Gradient2): high enough not to throttle a healthy
    /// coordinator at first, low enough that one window corrects it.
    pub const fn initial_limit(mut self, limit: usize) -> Self {
        self.initial_limit = limit;
        self
    }

    /// The floor (default 1): below it the limit never goes, whatever the
    /// latency or overload answers say. 1 keeps calls flowing to a
    /// coordinator that serves one at a time.
    pub const fn min_limit(mut self, limit: usize) -> Self {
        self.min_limit = limit;
        self
    }

    /// The ceiling (default 200, as Netflix's AIMD and Gradient2): a
    /// coordinator runs a build per call, so more in flight from one client
    /// is more likely a measurement error than capacity.
    pub const fn max_limit(mut self, limit: usize) -> Self {
        self.max_limit = limit;
        self
    }

    /// How much slower than the no-load latency the mean latency of a window
    /// may be while the limit still grows (default 1.1: at most about 10%
    /// of the time spent queued at the coordinator). Raise it (Netflix's
    /// Gradient2 uses 1.5) for a coordinator whose latency varies a lot at
    /// the same load; at least 1.
    pub const fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The factor applied to the limit when a call ends in overload
    /// (default 0.9, AIMD's multiplicative decrease), and to the
    /// concurrency the coordinator serves when a window is slower than the
    /// tolerance; between 0 and 1.
    pub const fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor;
        self
    }

    /// The concurrency of the first calls, which measure the no-load
    /// latency (default 3, as Envoy's adaptive concurrency filter): low
    /// enough that a coordinator queues nothing, high enough to keep some
    /// traffic going.
    pub const fn probe_concurrency(mut self, concurrency: usize) -> Self {
        self.probe_concurrency = concurrency;
        self
    }

    /// How many first calls run at the probe concurrency before the limit
    /// goes to [`initial_limit`](Self::initial_limit) (default 20; Envoy
    /// takes 50 requests, a coordinator's calls are slower).
    pub const fn probe_samples(mut self, samples: u32) -> Self {
        self.probe_samples = samples;
        self
    }

    /// How long the lowest latency seen is remembered (default 60 s, as
    /// Envoy's re-measurement interval): the no-load latency is the lowest
    /// of the current period and the one before, each period jittered by
    /// ±15% so that clients started together do not forget together; a
    /// coordinator that became slower for good is learned within two
    /// periods. Nothing drops the limit to measure again.
    pub const fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Refuses settings that cannot work, for the client builder.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.min_limit == 0 || self.max_limit < self.min_limit {
            return Err(Error::config(
                "adaptive concurrency: the floor must be at least 1 and at most the ceiling",
            ));
        }
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(Error::config(
                "adaptive concurrency: the tolerance must be a finite number of at least 1",
            ));
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(Error::config(
                "adaptive concurrency: the backoff factor must be between 0 and 1",
            ));
        }
        if self.probe_interval < std::time::Duration::from_millis(1) {
            return Err(Error::config(
                "adaptive concurrency: the probe interval must be at least 1 ms",
            ));
        }
        if self.probe_concurrency == 0 || self.probe_samples == 0 {
            return Err(Error::config(
                "adaptive concurrency: a probe needs at least one call at a concurrency of at least 1",
            ));
        }
        Ok(())
    }

    /// The same settings, made workable: what the layer uses, since a layer
    /// cannot fail to build.
    fn sanitized(self) -> Self {
        let d = AdaptiveLimitConfig::default();
        let min_limit = self.min_limit.max(1);
        // tokio's semaphore holds at most `MAX_PERMITS`.
        let min_limit = min_limit.min(tokio::sync::Semaphore::MAX_PERMITS);
        let max_limit = self
            .max_limit
            .clamp(min_limit, tokio::sync::Semaphore::MAX_PERMITS);
        AdaptiveLimitConfig {
            initial_limit: self.initial_limit.clamp(min_limit, max_limit),
            min_limit,
            max_limit,
            tolerance: if self.tolerance >= 1.0 && self.tolerance.is_finite() {
                self.tolerance
            } else {
                d.tolerance
            },
            backoff: if self.backoff > 0.0 && self.backoff < 1.0 {
                self.backoff
            } else {
                d.backoff
            },
            probe_concurrency: self.probe_concurrency.clamp(min_limit, max_limit),
            probe_samples: self.probe_samples.max(1),
            probe_interval: self.probe_interval,
        }
    }
}

impl Default for AdaptiveLimitConfig {
    fn default() -> Self {
        AdaptiveLimitConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 200,
            tolerance: 1.1,
            backoff: 0.9,
            probe_concurrency: 3,
            probe_samples: 20,
            probe_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Measuring the no-load latency at the probe concurrency; the limit
    /// goes to the initial limit after it.
    Probing {
        samples: u32,
    },
    Running,
}

#[derive(Debug, Default)]
struct Window {
    samples: u32,
    total: Duration,
}

/// The limit and what it is computed from.
#[derive(Debug)]
pub(crate) struct Gradient {
    config: AdaptiveLimitConfig,
    limit: f64,
    phase: Phase,
    /// Until the first decrease the limit grows by half of itself a round
    /// (TCP's slow start), then by one a round.
    slow_start: bool,
    /// Whether the last window left room to grow.
    growing: bool,
    /// The smallest latency of the current memory period, and of the one
    /// before: the baseline is the smaller of the two.
    lowest: Option<Duration>,
    lowest_before: Option<Duration>,
    /// When the current memory period ends (jittered).
    next_period: Instant,
    window: Window,
    /// Bumped at every decision that makes calls started before it stale:
    /// a probe ignores them, and one overload decrease covers them all.
    epoch: u64,
}

/// How much a memory period is jittered: ±15%, as Envoy's default jitter
/// of its minRTT re-measurement.
const PERIOD_JITTER: f64 = 0.15;

impl Gradient {
    pub(crate) fn new(config: AdaptiveLimitConfig, now: Instant) -> Self {
        let config = config.sanitized();
        Gradient {
            limit: config.probe_concurrency as f64,
            phase: Phase::Probing { samples: 0 },
            slow_start: true,
            growing: true,
            lowest: None,
            lowest_before: None,
            next_period: crate::time::saturating_add(now, jittered(config.probe_interval)),
            window: Window::default(),
            epoch: 0,
            config,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        // The float stays within [min, max] by construction.
        (self.limit as usize).clamp(self.config.min_limit, self.config.max_limit)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The no-load latency: the smallest latency seen over the last one to
    /// two memory periods.
    pub(crate) fn baseline(&self) -> Option<Duration> {
        crate::time::earliest(self.lowest, self.lowest_before)
    }

    /// A call started in `epoch` answered in `rtt`, with `in_flight` calls
    /// in flight when it started.
    pub(crate) fn on_success(&mut self, rtt: Duration, epoch: u64, in_flight: usize, now: Instant) {
        if now >= self.next_period {
            // A new memory period: latencies older than the last one are
            // forgotten, so a coordinator that became slower for good is
            // learned again within two periods.
            self.lowest_before = self.lowest.take();
            self.next_period =
                crate::time::saturating_add(now, jittered(self.config.probe_interval));
        }
        if epoch == self.epoch || matches!(self.phase, Phase::Running) {
            self.lowest = Some(self.lowest.map_or(rtt, |l| l.min(rtt)));
        }
        match &mut self.phase {
            Phase::Probing { samples } => {
                if epoch != self.epoch {
                    return;
                }
                *samples += 1;
                if *samples < self.config.probe_samples {
                    return;
                }
                self.limit = self.config.initial_limit as f64;
                self.phase = Phase::Running;
                self.restart();
            }
            Phase::Running => self.sample(rtt, epoch, in_flight),
        }
    }

    /// A call started in `epoch` ended in overload.
    pub(crate) fn on_overload(&mut self, epoch: u64) {
        if epoch != self.epoch || matches!(self.phase, Phase::Probing { .. }) {
            return;
        }
        self.decrease(self.config.backoff);
    }

    fn sample(&mut self, rtt: Duration, epoch: u64, in_flight: usize) {
        let current = self.limit();
        // Additive increase per answer, so that every client gains about
        // the same per round trip whatever its limit (TCP's congestion
        // avoidance: 1/limit per acknowledgement), unless the callers left
        // most of the limit unused (Vegas and Gradient2 hold then).
        if self.growing && in_flight.saturating_mul(2) >= current {
            let step = if self.slow_start {
                0.5
            } else {
                1.0 / self.limit.max(1.0)
            };
            self.set(self.limit + step);
        }
        if epoch != self.epoch {
            // A call started before the last decrease measured the queue
            // that decrease already answered: one decrease per round.
            return;
        }
        let w = &mut self.window;
        w.samples += 1;
        w.total = w.total.saturating_add(rtt);
        if w.samples < MIN_WINDOW.max(u32::try_from(current).unwrap_or(u32::MAX)) {
            return;
        }
        let mean = w.total / w.samples;
        let Some(baseline) = self.baseline().filter(|b| !b.is_zero()) else {
            self.window = Window::default();
            return;
        };
        let ratio = mean.as_secs_f64() / baseline.as_secs_f64();
        self.window = Window::default();
        if ratio <= self.config.tolerance {
            self.growing = true;
        } else {
            // By Little's law the coordinator serves about limit / ratio
            // at a time: go a step (`backoff`) below that, so that its
            // queue drains and every client sees the no-load latency again.
            self.decrease((self.config.backoff / ratio).max(MIN_GRADIENT));
        }
    }

    /// A multiplicative decrease, which ends the slow start and the round.
    fn decrease(&mut self, factor: f64) {
        self.slow_start = false;
        self.growing = false;
        self.set(self.limit * factor);
        self.restart();
    }

    fn set(&mut self, limit: f64) {
        let (min, max) = (self.config.min_limit as f64, self.config.max_limit as f64);
        self.limit = if limit.is_finite() {
            limit.clamp(min, max)
        } else {
            min
        };
    }

    /// A new epoch and an empty window.
    fn restart(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.window = Window::default();
    }
}

/// `period` ± 15%, drawn anew each time, so that clients started together
/// do not forget together.
fn jittered(period: Duration) -> Duration {
    use tower::util::rng::{HasherRng, Rng};
    let f = 1.0 - PERIOD_JITTER + 2.0 * PERIOD_JITTER * HasherRng::new().next_f64();
    Duration::try_from_secs_f64(period.as_secs_f64() * f).unwrap_or(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(10);

    fn probed(config: AdaptiveLimitConfig, now: Instant) -> Gradient {
        let mut g = Gradient::new(config, now);
        assert_eq!(g.limit(), 3);
        for _ in 0..config.probe_samples {
            g.on_success(T, 0, 1, now);
        }
        assert_eq!(g.baseline(), Some(T));
        g
    }

    /// One full window of calls at `in_flight`, each taking `rtt`.
    fn window(g: &mut Gradient, rtt: Duration, in_flight: usize, now: Instant) {
        let n = MIN_WINDOW.max(g.limit() as u32);
        for _ in 0..n {
            g.on_success(rtt, g.epoch(), in_flight, now);
        }
    }

    #[test]
    fn a_probe_sets_the_baseline_then_the_initial_limit() {
        let now = Instant::now();
        let g = probed(AdaptiveLimitConfig::default(), now);
        assert_eq!(g.limit(), 20);
    }

    #[test]
    fn samples_from_before_a_probe_are_ignored_by_it() {
        let now = Instant::now();
        let mut g = Gradient::new(AdaptiveLimitConfig::default(), now);
        g.on_success(Duration::from_secs(9), 7, 1, now);
        assert_eq!(g.baseline(), None);
    }

    #[test]
    fn slow_start_then_one_more_a_round() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        // Slow start: half a call more per answer, ×1.5 a round.
        window(&mut g, T, 20, now);
        assert_eq!(g.limit(), 30);
        // A decrease ends it; the round after a decrease holds.
        g.on_overload(g.epoch());
        assert_eq!(g.limit(), 27);
        window(&mut g, T, 27, now);
        assert_eq!(g.limit(), 27);
        // Then about one more per round: 27 answers of 1/limit each.
        window(&mut g, T, 27, now);
        assert_eq!(g.limit(), 27);
        window(&mut g, T, 27, now);
        assert_eq!(g.limit(), 28);
    }

    #[test]
    fn holds_when_the_callers_leave_the_limit_unused() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        window(&mut g, T, 9, now);
        assert_eq!(g.limit(), 20);
    }

    #[test]
    fn shrinks_below_what_the_latency_says_the_coordinator_serves() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        g.on_overload(g.epoch());
        assert_eq!(g.limit(), 18);
        window(&mut g, T, 18, now);
        // Mean latency 1.25× the baseline at about 19 (it grew by one over
        // the round): the coordinator serves about 19 / 1.25 = 15.2; a step
        // below is 15.2 × 0.9 = 13.7.
        window(&mut g, T.mul_f64(1.25), 18, now);
        assert_eq!(g.limit(), 13);
        // Answers of calls started before the decrease do not count again.
        for _ in 0..20 {
            g.on_success(T * 5, g.epoch() - 1, 13, now);
        }
        assert_eq!(g.limit(), 13);
        // 5× is capped at halving.
        window(&mut g, T * 5, 13, now);
        assert_eq!(g.limit(), 6);
    }

    #[test]
    fn overload_decreases_once_per_epoch() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        let epoch = g.epoch();
        g.on_overload(epoch);
        assert_eq!(g.limit(), 18);
        // Calls started before the decrease do not decrease it again.
        g.on_overload(epoch);
        assert_eq!(g.limit(), 18);
        g.on_overload(g.epoch());
        assert_eq!(g.limit(), 16);
    }

    #[test]
    fn stays_within_floor_and_ceiling() {
        let now = Instant::now();
        let config = AdaptiveLimitConfig::default().min_limit(2).max_limit(24);
        let mut g = probed(config, now);
        for _ in 0..50 {
            g.on_overload(g.epoch());
        }
        assert_eq!(g.limit(), 2);
        for _ in 0..200 {
            let l = g.limit();
            window(&mut g, T, l, now);
        }
        assert_eq!(g.limit(), 24);
    }

    #[test]
    fn the_baseline_is_the_lowest_latency_of_the_last_two_periods() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        // A lower latency lowers it at once.
        g.on_success(T / 2, g.epoch(), 20, now);
        assert_eq!(g.baseline(), Some(T / 2));
        // After one period (60 s ± 15%) it is still remembered...
        let later = now + Duration::from_secs(70);
        g.on_success(T * 2, g.epoch(), 20, later);
        assert_eq!(g.baseline(), Some(T / 2));
        // ...after two it is forgotten: the coordinator became slower.
        let later = later + Duration::from_secs(70);
        g.on_success(T * 2, g.epoch(), 20, later);
        assert_eq!(g.baseline(), Some(T * 2));
    }

    #[test]
    fn bad_settings_are_refused_or_made_workable() {
        let bad = AdaptiveLimitConfig::default()
            .min_limit(0)
            .tolerance(f64::NAN)
            .backoff(2.0);
        assert!(bad.validate().unwrap_err().is_config());
        let fixed = bad.sanitized();
        assert_eq!(fixed.min_limit, 1);
        assert_eq!(fixed.tolerance, 1.1);
        assert_eq!(fixed.backoff, 0.9);
        assert!(AdaptiveLimitConfig::default().validate().is_ok());
    }
}
