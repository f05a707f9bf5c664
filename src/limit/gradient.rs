//! The limit algorithm: a latency gradient against a probed no-load
//! latency, with a multiplicative decrease on overload. Pure logic, driven
//! by the service with explicit instants; the module docs say why.

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
    /// The factor applied to the limit on an overload answer (default 0.9).
    pub backoff: f64,
    /// The concurrency at which the no-load latency is measured (default 3).
    pub probe_concurrency: usize,
    /// Successful calls a probe averages (default 20).
    pub probe_samples: u32,
    /// How often the no-load latency is measured again (default 60 s).
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
    /// (default 0.9, AIMD's multiplicative decrease); between 0 and 1.
    pub const fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor;
        self
    }

    /// The concurrency at which the no-load latency is measured (default 3,
    /// as Envoy's adaptive concurrency filter): low enough that a
    /// coordinator queues nothing, high enough to keep some traffic going.
    pub const fn probe_concurrency(mut self, concurrency: usize) -> Self {
        self.probe_concurrency = concurrency;
        self
    }

    /// Successful calls whose mean latency is the no-load latency (default
    /// 20; Envoy takes 50 requests, a coordinator's calls are slower).
    pub const fn probe_samples(mut self, samples: u32) -> Self {
        self.probe_samples = samples;
        self
    }

    /// How often the no-load latency is measured again (default 60 s, as
    /// Envoy), so a coordinator that became slower or faster for good is
    /// learned again; each probe holds the limit at the probe concurrency
    /// for `probe_samples` calls.
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
    /// returns to `resume` after it.
    Probing {
        resume: f64,
        samples: u32,
        total: Duration,
    },
    Running,
}

#[derive(Debug, Default)]
struct Window {
    samples: u32,
    total: Duration,
    max_in_flight: usize,
}

/// The limit and what it is computed from.
#[derive(Debug)]
pub(crate) struct Gradient {
    config: AdaptiveLimitConfig,
    limit: f64,
    phase: Phase,
    /// The mean latency of the last probe.
    baseline: Option<Duration>,
    next_probe: Instant,
    window: Window,
    /// Bumped at every decision that makes calls started before it stale:
    /// a probe ignores them, and one overload decrease covers them all.
    epoch: u64,
}

impl Gradient {
    pub(crate) fn new(config: AdaptiveLimitConfig, now: Instant) -> Self {
        let config = config.sanitized();
        Gradient {
            limit: config.probe_concurrency as f64,
            phase: Phase::Probing {
                resume: config.initial_limit as f64,
                samples: 0,
                total: Duration::ZERO,
            },
            baseline: None,
            next_probe: now,
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

    /// The no-load latency measured by the last probe.
    pub(crate) fn baseline(&self) -> Option<Duration> {
        self.baseline
    }

    /// A call started in `epoch` answered in `rtt`, with `in_flight` calls
    /// in flight when it started.
    pub(crate) fn on_success(&mut self, rtt: Duration, epoch: u64, in_flight: usize, now: Instant) {
        let (resume, samples, total) = match &mut self.phase {
            Phase::Probing {
                resume,
                samples,
                total,
            } => {
                if epoch != self.epoch {
                    return;
                }
                *samples += 1;
                *total = total.saturating_add(rtt);
                if *samples < self.config.probe_samples {
                    return;
                }
                (*resume, *samples, *total)
            }
            Phase::Running => {
                self.sample(rtt, in_flight, now);
                return;
            }
        };
        self.baseline = Some(total / samples.max(1));
        self.limit = resume;
        self.phase = Phase::Running;
        self.next_probe = crate::time::saturating_add(now, self.config.probe_interval);
        self.restart();
    }

    /// A call started in `epoch` ended in overload.
    pub(crate) fn on_overload(&mut self, epoch: u64) {
        if epoch != self.epoch || matches!(self.phase, Phase::Probing { .. }) {
            return;
        }
        self.set(self.limit * self.config.backoff);
        self.restart();
    }

    fn sample(&mut self, rtt: Duration, in_flight: usize, now: Instant) {
        if now >= self.next_probe {
            self.phase = Phase::Probing {
                resume: self.limit,
                samples: 0,
                total: Duration::ZERO,
            };
            self.limit = self.config.probe_concurrency as f64;
            self.restart();
            return;
        }
        let current = self.limit();
        let w = &mut self.window;
        w.samples += 1;
        w.total = w.total.saturating_add(rtt);
        w.max_in_flight = w.max_in_flight.max(in_flight);
        if w.samples < MIN_WINDOW.max(u32::try_from(current).unwrap_or(u32::MAX)) {
            return;
        }
        let Some(baseline) = self.baseline.filter(|b| !b.is_zero()) else {
            self.restart();
            return;
        };
        let mean = w.total / w.samples;
        let ratio = mean.as_secs_f64() / baseline.as_secs_f64();
        let limit = self.limit;
        if ratio <= self.config.tolerance {
            // Latency near its no-load value: room to grow, unless the
            // callers did not use what they had (Vegas and Gradient2 hold).
            if w.max_in_flight.saturating_mul(2) >= current {
                self.set(limit + (limit.sqrt() / 2.0).max(1.0));
            }
        } else {
            let gradient = (self.config.tolerance / ratio).max(MIN_GRADIENT);
            self.set(limit * gradient);
        }
        self.window = Window::default();
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
    fn grows_while_latency_stays_near_the_baseline() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        window(&mut g, T, 20, now);
        // 20 + √20/2 = 22.2
        assert_eq!(g.limit(), 22);
        window(&mut g, T.mul_f64(1.1), 22, now);
        assert!(g.limit() > 22);
    }

    #[test]
    fn holds_when_the_callers_leave_the_limit_unused() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        window(&mut g, T, 9, now);
        assert_eq!(g.limit(), 20);
    }

    #[test]
    fn shrinks_by_the_gradient_when_latency_grows() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        // Mean latency 1.25× the baseline: 20 × 1.1 / 1.25 = 17.6.
        window(&mut g, T.mul_f64(1.25), 20, now);
        assert_eq!(g.limit(), 17);
        // 5× is capped at halving.
        window(&mut g, T * 5, 17, now);
        assert_eq!(g.limit(), 8);
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
        for _ in 0..50 {
            let l = g.limit();
            window(&mut g, T, l, now);
        }
        assert_eq!(g.limit(), 24);
    }

    #[test]
    fn probes_again_after_the_interval() {
        let now = Instant::now();
        let mut g = probed(AdaptiveLimitConfig::default(), now);
        let later = now + Duration::from_secs(61);
        g.on_success(T, g.epoch(), 20, later);
        assert_eq!(g.limit(), 3);
        for _ in 0..20 {
            g.on_success(T * 2, g.epoch(), 3, later);
        }
        assert_eq!(g.baseline(), Some(T * 2));
        assert_eq!(g.limit(), 20);
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
