//! An adaptive concurrency limit: as many calls in flight as the service
//! behind can take without queueing them, learned from latency and
//! overload answers.
//!
//! A fixed limit is wrong in one direction or the other: 64 calls in flight
//! to a coordinator that runs 4 builds at a time queue 60 of them there
//! (each waits 16 build times), while a coordinator that runs 128 at a time
//! is left half idle. [`AdaptiveLimit`] finds the coordinator's capacity and
//! keeps the excess waiting on the client side, in `poll_ready`, where a
//! deadline, a load shedder or a caller can still act on it.
//!
//! # The algorithm
//!
//! AIMD (additive increase, multiplicative decrease) on two signals, the
//! latency of a window of calls against a no-load latency and overload
//! answers, designed for the hard case: a fleet of independent clients
//! (one per orchestrator replica) sharing the same coordinators, none of
//! which knows the others exist.
//!
//! - **Why AIMD.** Chiu and Jain (1989) showed that among linear controls
//!   only additive increase with multiplicative decrease converges to fair
//!   shares among independent clients that see the same congestion signal:
//!   every decrease takes more from the larger, every increase gives the
//!   same to all. A pure gradient (Envoy's, Netflix Gradient2's) scales
//!   each limit by the ratio its own client measures, so a client whose
//!   baseline was measured under the others' load keeps growing while the
//!   others shrink: measured with 8 clients, six sat at a limit of 1 with
//!   Jain's fairness index 0.19–0.43, and the last to join won.
//! - **No-load latency: the lowest seen, over the last one to two
//!   periods.** Every client of a fleet sees the same coordinator, so the
//!   smallest latency any of them observes is the same service time; a
//!   mean measured at a low concurrency (Envoy's probe) includes the queue
//!   the *other* clients keep (measured: 41–67 ms for a true 31 ms), and a
//!   long-term average (Gradient2) drifts up with the queue it should
//!   detect. The limit starts with [`probe_samples`](AdaptiveLimitConfig::probe_samples)
//!   (20) calls at [`probe_concurrency`](AdaptiveLimitConfig::probe_concurrency)
//!   (3), then keeps the lowest latency of the current
//!   [`probe_interval`](AdaptiveLimitConfig::probe_interval) (60 s) and
//!   of the one before; each period is jittered by ±15% (Envoy's jitter
//!   of its re-measurement), so clients started together do not forget
//!   together, and a coordinator that became slower for good is learned
//!   within two periods. Nothing drops the limit to re-measure: the
//!   decrease below drains the queue often enough for every client to see
//!   the service time again.
//! - **Increase.** A window is `max(limit, 10)` calls, about one round
//!   trip of the whole limit. While the last window's mean latency was
//!   within [`tolerance`](AdaptiveLimitConfig::tolerance) (1.1) times the
//!   no-load latency, each answer adds `1 / limit` (about one a round trip
//!   whatever the limit: TCP's congestion avoidance, Netflix's `AIMDLimit`),
//!   so a client at the floor gains as fast as one at 100; until the first
//!   decrease, each answer adds ½ instead (×1.5 a round trip, TCP's slow
//!   start), so a large coordinator is found in a few round trips. An
//!   increase needs at least half of the limit in use (Vegas and Gradient2
//!   hold otherwise: an idle client proves nothing).
//! - **Decrease on latency.** A window whose mean latency is `ratio` times
//!   the no-load latency, above the tolerance, multiplies the limit by
//!   `backoff / ratio` (0.9 / ratio, at least ½). By Little's law a
//!   coordinator serving `C` calls at a time makes `n > C` calls take
//!   `n / C` times as long on average, so `limit / ratio` is about what it
//!   serves and the decrease lands a step below it: its queue drains, and
//!   the clients' shares move toward equal (the same factor for all).
//! - **Decrease on overload.** A call that ends in what the classifier
//!   calls overload ([`Overload`]: status 429 or 503, or an attempt
//!   timeout) multiplies the limit by [`backoff`](AdaptiveLimitConfig::backoff)
//!   (0.9), once per round: the calls started before a decrease do not
//!   decrease it again, as TCP halves once per window, so a burst of
//!   timeouts does not collapse the limit to the floor.
//! - **Bounds.** [`min_limit`](AdaptiveLimitConfig::min_limit) (1) and
//!   [`max_limit`](AdaptiveLimitConfig::max_limit) (200).
//!
//! Measured against a simulated coordinator of capacity 4 and 128
//! (`tests/adaptive.rs`), the calls in flight settle within 30% of the
//! capacity and the 99th percentile latency within twice the unloaded one.
//! With 8 clients of 64 callers each against a coordinator of capacity 16
//! (`tests/fleet.rs`), Jain's index is 0.94 (0.95 with clients joining a
//! second apart), the coordinator holds 14 calls on average and its p99 is
//! twice the service time; see BENCHMARKS.md.
//!
//! The lowest latency is a good no-load latency when a check's service
//! time varies little. For a coordinator whose builds take from one to
//! ten seconds it is far below a typical call: raise
//! [`tolerance`](AdaptiveLimitConfig::tolerance) to the ratio of a typical
//! call to the fastest (or leave the limit off, the default).
//!
//! # Backpressure
//!
//! As tower's `ConcurrencyLimit`: `poll_ready` takes a permit, and is
//! pending while the limit is reached, until a call ends; the response
//! future gives it back when it completes or is dropped. A clone starts
//! without a permit. A `call` without a permit does not panic: it fails
//! with an error of kind `NotReady`.
//!
//! ```
//! use tower_quality_gate::limit::{AdaptiveLimitConfig, AdaptiveLimitLayer};
//! use tower_quality_gate::QualityCheck;
//! use tower::Layer;
//!
//! # fn main() -> Result<(), tower_quality_gate::Error> {
//! let layer = AdaptiveLimitLayer::new(AdaptiveLimitConfig::default());
//! let handle = layer.handle();
//! let service = layer.layer(QualityCheck::new("http://127.0.0.1:8000")?);
//! assert_eq!(handle.limit(), 3); // probing the no-load latency first
//! assert_eq!(service.limit(), 3);
//! # Ok(()) }
//! ```

mod call_limit;
pub mod future;
mod gradient;
mod layer;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::PollSemaphore;
use tower::Service;

pub use self::call_limit::{CallLimit, CallLimitFuture, CallLimitLayer};
use self::future::ResponseFuture;
pub use self::gradient::AdaptiveLimitConfig;
pub use self::layer::AdaptiveLimitLayer;

use self::gradient::Gradient;
use crate::classify::ClassifyFailure;
use crate::error::{BoxError, Boxed, Error};

/// The default overload classifier: an error is overload when it is a
/// timeout or a status 429 (Too Many Requests) or 503 (Service
/// Unavailable); other errors say nothing about load and are ignored, and
/// so does an attempt cut by its call's own deadline
/// ([`Error::is_total_timeout`]: the caller ran out of time).
///
/// For a [`BoxError`] (a tower layer between), a boxed [`Error`] is judged
/// as above and a tower `Elapsed` is overload.
///
/// ```
/// use tower_quality_gate::classify::ClassifyFailure;
/// use tower_quality_gate::limit::Overload;
/// use tower_quality_gate::{Error, TimeoutKind};
///
/// assert!(Overload.is_failure(&Error::timeout(TimeoutKind::Attempt)));
/// assert!(!Overload.is_failure(&Error::circuit_open()));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overload;

impl ClassifyFailure<Error> for Overload {
    fn is_failure(&self, error: &Error) -> bool {
        // A call cut by its own deadline (a caller's short or propagated
        // one) says nothing of the coordinator's load.
        (error.is_timeout() && !error.is_total_timeout())
            || matches!(error.status().map(|s| s.as_u16()), Some(429 | 503))
    }
}

impl ClassifyFailure<BoxError> for Overload {
    fn is_failure(&self, error: &BoxError) -> bool {
        match Boxed::of(error) {
            Boxed::Error(error) => self.is_failure(error),
            Boxed::Elapsed => true,
            Boxed::Other => false,
        }
    }
}

/// Limits the calls in flight to the service behind it to an adaptive
/// limit; see the [module docs](self) for the algorithm.
///
/// Made by [`AdaptiveLimitLayer`] (whose services share one limit) or
/// [`AdaptiveLimit::new`].
pub struct AdaptiveLimit<S, C = Overload> {
    inner: S,
    shared: Arc<Shared>,
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    classify: C,
}

/// A view of an adaptive limit's state, from
/// [`AdaptiveLimitLayer::handle`] or [`AdaptiveLimit::handle`].
#[derive(Clone)]
pub struct AdaptiveLimitHandle {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
}

struct State {
    gradient: Gradient,
    /// Permits that exist: available in the semaphore or held.
    issued: usize,
    /// Held permits to forget when they come back, after a decrease.
    debt: usize,
    in_flight: usize,
}

// ===== impl Shared =====

impl Shared {
    pub(crate) fn new(config: AdaptiveLimitConfig) -> Self {
        let gradient = Gradient::new(config, Instant::now());
        let limit = gradient.limit();
        Shared {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(State {
                gradient,
                issued: limit,
                debt: 0,
                in_flight: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limit(&self) -> usize {
        self.lock().gradient.limit()
    }

    fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// A call starts: its epoch and the calls in flight with it.
    fn start(&self) -> (u64, usize) {
        let mut state = self.lock();
        state.in_flight += 1;
        (state.gradient.epoch(), state.in_flight)
    }

    /// A call ended; `outcome` is what it says about the load, if anything.
    fn end(&self, permit: OwnedSemaphorePermit, call: &Started, outcome: Option<Outcome>) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        match outcome {
            Some(Outcome::Success) => {
                let now = Instant::now();
                let rtt = now.saturating_duration_since(call.at);
                state
                    .gradient
                    .on_success(rtt, call.epoch, call.in_flight, now);
            }
            Some(Outcome::Overload) => state.gradient.on_overload(call.epoch),
            None => {}
        }
        if state.debt > 0 {
            state.debt -= 1;
            state.issued -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
        self.resize(&mut state);
    }

    /// Brings the permits in line with the limit.
    fn resize(&self, state: &mut State) {
        let target = state.gradient.limit();
        let effective = state.issued - state.debt;
        if target > effective {
            let mut more = target - effective;
            let cancelled = more.min(state.debt);
            state.debt -= cancelled;
            more -= cancelled;
            if more > 0 {
                self.semaphore.add_permits(more);
                state.issued += more;
            }
        } else if target < effective {
            let fewer = effective - target;
            let now = fewer
                .min(self.semaphore.available_permits())
                .min(u32::MAX as usize);
            if let Ok(permits) = self.semaphore.try_acquire_many(now as u32) {
                permits.forget();
                state.issued -= now;
                state.debt += fewer - now;
            } else {
                state.debt += fewer;
            }
        }
    }
}

/// What a call's end says about the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Overload,
}

/// When a call started, in which epoch, with how many in flight.
struct Started {
    at: Instant,
    epoch: u64,
    in_flight: usize,
}

/// A call's permit: back to the limit (or forgotten, after a decrease) when
/// the call ends or its future is dropped.
pub(crate) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    started: Started,
}

impl Permit {
    fn new(permit: OwnedSemaphorePermit, shared: Arc<Shared>) -> Self {
        let (epoch, in_flight) = shared.start();
        Permit {
            permit: Some(permit),
            shared,
            started: Started {
                at: Instant::now(),
                epoch,
                in_flight,
            },
        }
    }

    fn finish(&mut self, outcome: Option<Outcome>) {
        if let Some(permit) = self.permit.take() {
            self.shared.end(permit, &self.started, outcome);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.finish(None);
    }
}

// ===== impl AdaptiveLimit =====

impl<S> AdaptiveLimit<S> {
    /// Limits `inner` with a limit of its own and the default classifier.
    pub fn new(inner: S, config: AdaptiveLimitConfig) -> Self {
        AdaptiveLimit::with_shared(inner, Arc::new(Shared::new(config)), Overload)
    }
}

impl<S, C> AdaptiveLimit<S, C> {
    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>, classify: C) -> Self {
        AdaptiveLimit {
            inner,
            semaphore: PollSemaphore::new(shared.semaphore.clone()),
            shared,
            permit: None,
            classify,
        }
    }

    /// Counts as overload what `classify` says (default [`Overload`]).
    pub fn classify<C2>(self, classify: C2) -> AdaptiveLimit<S, C2> {
        AdaptiveLimit::with_shared(self.inner, self.shared, classify)
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// A handle on the limit's state, shared with this service's clones.
    pub fn handle(&self) -> AdaptiveLimitHandle {
        AdaptiveLimitHandle {
            shared: self.shared.clone(),
        }
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

impl<S, C, Request> Service<Request> for AdaptiveLimit<S, C>
where
    S: Service<Request>,
    S::Error: From<Error>,
    C: ClassifyFailure<S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The permit first, as tower's ConcurrencyLimit: a service at its
        // limit is not ready, whatever the inner service says.
        if self.permit.is_none() {
            // The semaphore is never closed.
            match ready!(self.semaphore.poll_acquire(cx)) {
                Some(permit) => self.permit = Some(permit),
                None => return Poll::Ready(Err(Error::not_ready().into())),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(permit) = self.permit.take() else {
            return ResponseFuture::failed(Error::not_ready(), self.classify.clone());
        };
        let permit = Permit::new(permit, self.shared.clone());
        ResponseFuture::new(self.inner.call(request), permit, self.classify.clone())
    }
}

impl<S: Clone, C: Clone> Clone for AdaptiveLimit<S, C> {
    fn clone(&self) -> Self {
        // A clone starts without a permit, as tower's ConcurrencyLimit.
        AdaptiveLimit::with_shared(
            self.inner.clone(),
            self.shared.clone(),
            self.classify.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .field("limit", &self.limit())
            .field("has_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

// ===== impl AdaptiveLimitHandle =====

impl AdaptiveLimitHandle {
    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// Calls in flight now (called and not yet ended or dropped).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The no-load latency the last probe measured, if one has finished.
    pub fn baseline(&self) -> Option<Duration> {
        self.shared.lock().gradient.baseline()
    }
}

impl fmt::Debug for AdaptiveLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitHandle")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

#[cfg(test)]
mod tests;
