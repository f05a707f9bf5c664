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

mod future;
mod layer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::CircuitBreakerLayer;

use crate::error::Error;

/// The default number of consecutive failed attempts that opens the
/// circuit: 5, the coordinator's own breaker threshold.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// The default time the circuit stays open before one probe is let through:
/// 30 s, the coordinator's own cooldown.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// How often an ejected replica looks again while another call probes it.
const HALF_OPEN_RECHECK: Duration = Duration::from_millis(50);

/// The state of a circuit breaker.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed attempts that open the circuit (default 5; 0 is
    /// treated as 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe (default 30 s).
    pub cooldown: Duration,
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
/// Only failures that say the service is unwell count: those for which
/// [`Error::is_retryable`] is true (connect and transport failures,
/// timeouts, 408, 429, 5xx). A 4xx or an invalid response is an answer from
/// a live coordinator and counts as a success. A call dropped before it
/// finishes counts as neither; a dropped probe lets the next call probe.
///
/// `poll_ready` never waits while the circuit is open, so callers are not
/// blocked: they get the error from `call`. Every service made by one
/// [`CircuitBreakerLayer`], and every clone of them, shares one state.
///
/// ```
/// use std::time::Duration;
/// use quality_gate::breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
/// use quality_gate::QualityCheck;
/// use tower::Layer;
///
/// # fn main() -> Result<(), quality_gate::Error> {
/// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig {
///     failure_threshold: 3,
///     cooldown: Duration::from_secs(10),
/// });
/// let service = layer.layer(QualityCheck::new("http://127.0.0.1:8000")?);
/// assert_eq!(service.state(), CircuitState::Closed);
/// # Ok(()) }
/// ```
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
    /// Whether `poll_ready` drove the inner service ready for the next call.
    inner_ready: bool,
    /// In ejecting mode (one replica behind a balancer), `poll_ready` is
    /// pending while the circuit is open, and this timer wakes it.
    ejecting: Option<Pin<Box<Sleep>>>,
}

pub(crate) struct Shared {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
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
        }
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
                tracing::info!("circuit half-open: letting one probe through");
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
                tracing::info!("circuit closed: the probe succeeded");
            }
            (Admission::Probe, Some(true), _) => {
                *state = State::Open {
                    until: crate::time::saturating_deadline(Instant::now(), cooldown),
                };
                tracing::warn!(
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
                    tracing::warn!(
                        failures = *failures,
                        cooldown_ms = crate::time::millis(cooldown),
                        "circuit open: calls fail fast until the cooldown ends"
                    );
                    *state = State::Open {
                        until: crate::time::saturating_deadline(Instant::now(), cooldown),
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
    /// Wraps `inner` with a breaker of its own.
    pub fn new(inner: S, config: CircuitBreakerConfig) -> Self {
        CircuitBreaker::with_shared(inner, Arc::new(Shared::new(config)))
    }

    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>) -> Self {
        CircuitBreaker {
            inner,
            shared,
            inner_ready: false,
            ejecting: None,
        }
    }

    /// A breaker for one replica behind a balancer: instead of failing calls
    /// while open, it is not ready, so the balancer sends calls elsewhere.
    pub(crate) fn ejecting(inner: S, config: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            ejecting: Some(Box::pin(tokio::time::sleep(Duration::ZERO))),
            ..CircuitBreaker::new(inner, config)
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

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        // A clone shares the state but not the readiness of this instance.
        let mut clone = CircuitBreaker::with_shared(self.inner.clone(), self.shared.clone());
        if self.ejecting.is_some() {
            clone.ejecting = Some(Box::pin(tokio::time::sleep(Duration::ZERO)));
        }
        clone
    }
}

impl<S, Req> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
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
            return ResponseFuture::admitted(self.inner.call(req), self.shared.clone(), admission);
        }
        match self.shared.admit() {
            Some(admission) if inner_ready => {
                ResponseFuture::admitted(self.inner.call(req), self.shared.clone(), admission)
            }
            Some(admission) => {
                self.shared.record(admission, None);
                ResponseFuture::refused()
            }
            None => ResponseFuture::refused(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
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
