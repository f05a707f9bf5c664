//! A circuit breaker: after repeated failures, fail calls at once for a
//! while instead of sending them to a coordinator that is down.
//!
//! tower has no breaker. Of the crates that offer one for tower 0.5,
//! `tower-circuitbreaker` 0.2 (from the tower-resilience family) opens on a
//! failure *rate* over a sliding window and returns its own
//! `CircuitBreakerError` wrapping the inner error, and `camel-processor`'s
//! breaker comes with an integration framework. What is asked here is the
//! coordinator's own model (N *consecutive* failures, a cooldown, one
//! probe), an error that stays this crate's typed [`Error`] with
//! `is_circuit_open()` and `is_retryable() == false`, a state shared by all
//! clones, and a second mode for replicas behind the balancer (not ready
//! instead of failing). That is about two hundred lines with tests; owning
//! them costs less than adapting either crate.

pub mod future;
mod layer;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::Service;

pub use self::layer::CircuitBreakerLayer;

use self::future::ResponseFuture;
use crate::call::Call;
use crate::classify::{ClassifyFailure, RetryableFailures};
use crate::error::Error;

/// The default number of consecutive failed attempts that opens the
/// circuit: 5, the coordinator's own breaker threshold.
pub(crate) const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// The default time the circuit stays open before one probe is let through:
/// 30 s, the coordinator's own cooldown.
pub(crate) const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// How often an ejected replica looks again while another call probes it.
const HALF_OPEN_RECHECK: Duration = Duration::from_millis(50);

/// The state of a circuit breaker.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls fail at once with [`Error::is_circuit_open`] until the cooldown
    /// ends.
    Open,
    /// One probe call is in flight; the others fail at once until it decides.
    HalfOpen,
}

/// Settings of a [`CircuitBreakerLayer`].
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::breaker::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig::default()
///     .failure_threshold(3)
///     .cooldown(Duration::from_secs(10));
/// assert_eq!(config.failure_threshold, 3);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed attempts that open the circuit (default 5; 0 is
    /// treated as 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe (default 30 s).
    pub cooldown: Duration,
}

impl CircuitBreakerConfig {
    /// Consecutive failed attempts that open the circuit (default 5).
    pub const fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// How long the circuit stays open before a probe (default 30 s).
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            cooldown: DEFAULT_COOLDOWN,
        }
    }
}

/// Fails calls fast while the service behind it keeps failing.
///
/// Closed → open after `failure_threshold` consecutive failures → after
/// `cooldown`, half-open: exactly one call goes through as a probe → closed
/// if it succeeds, open for another cooldown if it fails. While open (and
/// for every call but the probe while half-open) calls fail at once with an
/// error for which [`Error::is_circuit_open`] is true and
/// [`Error::is_retryable`] is false, so a retry layer around it stops.
///
/// Only failures that say the service is unwell count, as its classifier
/// ([`ClassifyFailure`]) decides; by default ([`RetryableFailures`]) those
/// for which [`Error::is_retryable`] is true (connect and transport
/// failures, timeouts, 408, 429, 5xx). A 4xx or an invalid response is an
/// answer from a live coordinator and counts as a success. A call dropped
/// before it finishes counts as neither (a dropped probe lets the next call
/// probe), except an attempt of a [`Call`] cut by an
/// [`AttemptTimeout`](crate::timeout::AttemptTimeout) above the breaker:
/// that attempt timed out, and counts as a failure, so the breaker opens on
/// a hanging coordinator on either side of the crate's attempt timeout.
/// Above tower's own `Timeout` it sees the `Elapsed` error and counts it;
/// below tower's `Timeout` it cannot tell its drop from the caller's, and
/// counts nothing: put it above.
///
/// It is generic tower middleware: it wraps any service whose error can
/// hold the crate's [`Error`] (`S::Error: From<Error>`, so the crate's
/// `Error` or tower's `BoxError`), above or below tower's `Timeout`.
///
/// `poll_ready` never waits while the circuit is open, so callers are not
/// blocked: they get the error from `call`. Every service made by one
/// [`CircuitBreakerLayer`], and every clone of them, shares one state.
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
/// use tower_quality_gate::QualityCheck;
/// use tower::Layer;
///
/// # fn main() -> Result<(), tower_quality_gate::Error> {
/// let layer = CircuitBreakerLayer::new(
///     CircuitBreakerConfig::default().failure_threshold(3).cooldown(Duration::from_secs(10)),
/// );
/// let service = layer.layer(QualityCheck::new("http://127.0.0.1:8000")?);
/// assert_eq!(service.state(), CircuitState::Closed);
/// # Ok(()) }
/// ```
pub struct CircuitBreaker<S, C = RetryableFailures> {
    inner: S,
    shared: Arc<Shared>,
    classify: C,
    /// Whether `poll_ready` drove the inner service ready for the next call.
    inner_ready: bool,
    /// In ejecting mode (one replica behind a balancer), `poll_ready` is
    /// pending while the circuit is open, and this timer wakes it.
    ejecting: Option<Pin<Box<Sleep>>>,
}

pub(crate) struct Shared {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
    /// What the breaker guards, for its events: a replica's address.
    label: Option<Arc<str>>,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What one call was admitted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
}

// ===== impl Shared =====

impl Shared {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        Shared {
            config: CircuitBreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                ..config
            },
            state: Mutex::new(State::Closed { failures: 0 }),
            label: None,
        }
    }

    pub(crate) fn labelled(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    fn label(&self) -> &str {
        self.label.as_deref().unwrap_or("")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Whether a call would be refused right now, without admitting it, and
    /// if so when to look again.
    fn refuses(&self) -> Option<Instant> {
        let now = Instant::now();
        match *self.lock() {
            State::Closed { .. } => None,
            State::Open { until } if now >= until => None,
            State::Open { until } => Some(until),
            // The probe decides soon; there is no deadline to wait for.
            State::HalfOpen => Some(now + HALF_OPEN_RECHECK),
        }
    }

    /// Admits a call, or refuses it with `None`.
    fn admit(&self) -> Option<Admission> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(Admission::Normal),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                crate::metrics::breaker_transition(self.label.as_deref(), "half_open");
                tracing::info!(
                    replica = self.label(),
                    "circuit half-open: letting one probe through"
                );
                Some(Admission::Probe)
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    /// Records how an admitted call ended; `None` when it was dropped.
    pub(crate) fn record(&self, admission: Admission, failed: Option<bool>) {
        let mut state = self.lock();
        let cooldown = self.config.cooldown;
        match (admission, failed, &mut *state) {
            (Admission::Probe, Some(false), _) => {
                *state = State::Closed { failures: 0 };
                crate::metrics::breaker_transition(self.label.as_deref(), "closed");
                tracing::info!(
                    replica = self.label(),
                    "circuit closed: the probe succeeded"
                );
            }
            (Admission::Probe, Some(true), _) => {
                *state = State::Open {
                    until: crate::time::after(cooldown),
                };
                crate::metrics::breaker_transition(self.label.as_deref(), "open");
                tracing::warn!(
                    replica = self.label(),
                    cooldown_ms = crate::time::millis(cooldown),
                    "circuit open again: the probe failed"
                );
            }
            // A dropped probe decided nothing: the next call probes.
            (Admission::Probe, None, _) => {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
            (Admission::Normal, Some(false), State::Closed { failures }) => *failures = 0,
            (Admission::Normal, Some(true), State::Closed { failures }) => {
                *failures += 1;
                if *failures >= self.config.failure_threshold {
                    crate::metrics::breaker_transition(self.label.as_deref(), "open");
                    tracing::warn!(
                        replica = self.label(),
                        failures = *failures,
                        cooldown_ms = crate::time::millis(cooldown),
                        "circuit open: calls fail fast until the cooldown ends"
                    );
                    *state = State::Open {
                        until: crate::time::after(cooldown),
                    };
                }
            }
            // Calls admitted before the circuit opened, or dropped ones,
            // change nothing.
            (Admission::Normal, _, _) => {}
        }
    }
}

// ===== impl CircuitBreaker =====

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` with a breaker of its own and the default classifier.
    pub fn new(inner: S, config: CircuitBreakerConfig) -> Self {
        CircuitBreaker::with_shared(inner, Arc::new(Shared::new(config)), RetryableFailures)
    }

    /// A breaker for one replica behind a balancer: instead of failing calls
    /// while open, it is not ready, so the balancer sends calls elsewhere.
    pub(crate) fn ejecting(inner: S, config: CircuitBreakerConfig, label: &str) -> Self {
        let shared = Arc::new(Shared::new(config).labelled(label));
        CircuitBreaker {
            ejecting: Some(Box::pin(tokio::time::sleep(Duration::ZERO))),
            ..CircuitBreaker::with_shared(inner, shared, RetryableFailures)
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>, classify: C) -> Self {
        CircuitBreaker {
            inner,
            shared,
            classify,
            inner_ready: false,
            ejecting: None,
        }
    }

    /// The current state (`HalfOpen` once the cooldown has ended, even
    /// before the probe is sent).
    pub fn state(&self) -> CircuitState {
        self.shared.state()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // A clone shares the state but not the readiness of this instance.
        let mut clone = CircuitBreaker::with_shared(
            self.inner.clone(),
            self.shared.clone(),
            self.classify.clone(),
        );
        if self.ejecting.is_some() {
            clone.ejecting = Some(Box::pin(tokio::time::sleep(Duration::ZERO)));
        }
        clone
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    Req: 'static,
    S: Service<Req>,
    S::Error: From<Error>,
    C: ClassifyFailure<S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.inner_ready {
            return Poll::Ready(Ok(()));
        }
        if let Some(until) = self.shared.refuses() {
            let Some(wake) = &mut self.ejecting else {
                // Ready at once: the call will fail fast without the inner service.
                return Poll::Ready(Ok(()));
            };
            wake.as_mut().reset(until);
            if wake.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The cooldown is over: fall through and probe.
        }
        let ready = self.inner.poll_ready(cx);
        if let Poll::Ready(Ok(())) = ready {
            self.inner_ready = true;
        }
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // A call admitted while the inner service was not made ready (the
        // circuit closed between poll_ready and call) is refused too: the
        // inner service must not be called unready.
        let inner_ready = std::mem::take(&mut self.inner_ready);
        if inner_ready && self.ejecting.is_some() {
            // A balancer chose this replica while it was ready; failures of
            // calls in flight may have opened the circuit since. Refusing
            // now would fail the call for good, so let it through.
            let admission = self.shared.admit().unwrap_or(Admission::Normal);
            return self.admitted(req, admission);
        }
        match self.shared.admit() {
            Some(admission) if inner_ready => self.admitted(req, admission),
            Some(admission) => {
                self.shared.record(admission, None);
                ResponseFuture::refused()
            }
            None => ResponseFuture::refused(),
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    fn admitted<Req>(&mut self, req: Req, admission: Admission) -> ResponseFuture<S::Future, C>
    where
        Req: 'static,
        S: Service<Req>,
        C: Clone,
    {
        let call = (&req as &dyn Any).downcast_ref::<Call>().cloned();
        let future = self.inner.call(req);
        ResponseFuture::admitted(
            future,
            self.shared.clone(),
            admission,
            self.classify.clone(),
            call,
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .field("state", &self.state())
            .finish()
    }
}

#[cfg(test)]
mod tests;
