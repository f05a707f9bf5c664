//! A call's identity: [`Identify`] turns each [`QualityRequest`] into one
//! [`Call`] (request id, body encoded once, deadline, attempt count, span)
//! that every attempt below it shares, whatever sits between.
//!
//! Put [`IdentifyLayer`] outside any retry layer, as tower-http's
//! `SetRequestId` goes outside what should share an id. Every layer below
//! is a `Service<Call>`: the crate's retry policy, timeouts, breaker and
//! [`QualityCheck`](crate::QualityCheck) read the call's deadline and count
//! its attempts, and a user's own `tower::retry::Policy<Call, …>` gets all of
//! it by cloning the call (a reference-count increment).
//!
//! ```
//! use tower_quality_gate::call::{Call, IdentifyLayer};
//! use tower_quality_gate::{Error, QualityRequest, QualityResponse};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let inner = service_fn(|call: Call| async move {
//!     assert!(call.request_id().is_some());
//!     Ok::<_, Error>(QualityResponse::approved(call.request().task_id.clone()))
//! });
//! let service = IdentifyLayer::new().layer(inner);
//! let verdict = service.oneshot(QualityRequest::new("task-1", "agent-1")).await.unwrap();
//! assert_eq!(verdict.gate, "task-1");
//! # });
//! ```

pub mod future;
mod layer;
mod options;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tower::Service;

pub use self::layer::IdentifyLayer;
pub use self::options::CallOptions;

use self::future::ResponseFuture;
use crate::error::Error;
use crate::wire::{QualityRequest, QualityResponse};

/// One call of the quality check, as every attempt of it sees it: the
/// request, its body encoded once, its request id, its deadline and
/// per-call headers, and how many attempts were sent so far.
///
/// Cloning is a reference-count increment; clones are the same call (they
/// share the attempt count). Made by [`Identify`], or by
/// [`Call::new`] for a single attempt.
#[derive(Clone)]
pub struct Call {
    inner: Arc<Inner>,
}

struct Inner {
    request: QualityRequest,
    body: Bytes,
    request_id: Option<HeaderValue>,
    headers: HeaderMap,
    deadline: Option<Instant>,
    attempts: AtomicU32,
    /// Attempts under an [`AttemptTimeout`](crate::timeout::AttemptTimeout)
    /// right now, whose timers fire by the call's deadline at the latest.
    timed_attempts: AtomicU32,
    /// The end of the current attempt as the outermost attempt timer set
    /// it: a timer below (a replica's, behind a balancer) ends no later, so
    /// that it, not the outer one, decides the attempt and its replica
    /// sees the timeout.
    attempt_ends: Mutex<Option<Instant>>,
    /// The last failed attempt's error, kept by the retry policy when it
    /// decides to retry, so that a deadline passing in the wait that
    /// follows can say what went wrong before.
    last_error: Mutex<Option<Error>>,
    /// A slot of the concurrency limit held for a hedged copy.
    hedge_slot: Mutex<Option<OwnedSemaphorePermit>>,
    span: tracing::Span,
    metrics: crate::metrics::CallMetrics,
}

// ===== impl Call =====

impl Call {
    /// A call for `request`, with the request id it carries (or a new one),
    /// its own deadline or timeout if it has one, and no span.
    ///
    /// Fails with a configuration error when the request's per-call headers
    /// name a header the client owns.
    pub fn new(request: QualityRequest) -> Result<Call, Error> {
        Call::with(request, &Settings::default(), tracing::Span::none())
    }

    pub(crate) fn with(
        mut request: QualityRequest,
        settings: &Settings,
        span: tracing::Span,
    ) -> Result<Call, Error> {
        let options = std::mem::take(request.options_mut());
        // The same headers a configuration may not set, for the same reasons.
        let reserved = options
            .headers
            .keys()
            .find_map(|name| crate::check::config::reserved_header(name).map(|why| (name, why)));
        if let Some((name, why)) = reserved {
            return Err(Error::config(format!(
                "the per-call header {name} is reserved: {why}"
            )));
        }
        let deadline = options.effective_deadline(Instant::now(), settings.timeout);
        let request_id = match options.request_id {
            Some(id) => Some(id),
            None if settings.generate_ids => Some(crate::request_id::next()),
            None => None,
        };
        // Serializing strings into a Vec cannot fail.
        let body = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
        Ok(Call {
            inner: Arc::new(Inner {
                request,
                body,
                request_id,
                headers: options.headers,
                deadline,
                attempts: AtomicU32::new(0),
                timed_attempts: AtomicU32::new(0),
                attempt_ends: Mutex::new(None),
                last_error: Mutex::new(None),
                hedge_slot: Mutex::new(None),
                span,
                metrics: crate::metrics::CallMetrics::start(),
            }),
        })
    }

    /// The request, without its per-call options (those are on the call).
    pub fn request(&self) -> &QualityRequest {
        &self.inner.request
    }

    /// The JSON body every attempt sends.
    pub fn body(&self) -> &Bytes {
        &self.inner.body
    }

    /// The call's request id: the caller's own, or a generated one.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.inner.request_id.as_ref()
    }

    /// The per-call headers every attempt sends.
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.headers
    }

    /// The instant by which the call must be over, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// The time left before the deadline, if there is one (zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// How many attempts of this call were sent to a coordinator so far,
    /// hedged copies included.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts.load(Ordering::Relaxed)
    }

    /// The call's tracing span (disabled when no subscriber wants it).
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Counts one more attempt sent and returns its number, from 1.
    pub(crate) fn start_attempt(&self) -> u32 {
        self.inner.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Marks an attempt whose timer fires by the call's deadline at the
    /// latest as started; the guard marks it ended when dropped.
    pub(crate) fn timed_attempt(&self) -> TimedAttempt {
        self.inner.timed_attempts.fetch_add(1, Ordering::Relaxed);
        TimedAttempt(self.clone())
    }

    /// The end an attempt timer gives the attempt starting now: `at`, or an
    /// earlier end an outer attempt timer already set for this attempt.
    /// The first (outermost) timer of an attempt records its end.
    pub(crate) fn attempt_end(&self, at: Instant, outermost: bool) -> Instant {
        let mut ends = lock(&self.inner.attempt_ends);
        match (*ends, outermost) {
            (_, true) => {
                *ends = Some(at);
                at
            }
            (Some(outer), false) => outer.min(at),
            (None, false) => at,
        }
    }

    /// Whether an attempt timer bounds the call by its deadline right now,
    /// so the deadline needs no timer of its own.
    pub(crate) fn deadline_covered(&self) -> bool {
        self.inner.timed_attempts.load(Ordering::Relaxed) > 0
    }

    /// Takes back the count of an attempt the coordinator provably never
    /// processed.
    pub(crate) fn uncount_attempt(&self) {
        let _ = self
            .inner
            .attempts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Keeps the error of an attempt that is being retried.
    pub(crate) fn keep_error(&self, error: Error) {
        *lock(&self.inner.last_error) = Some(error);
    }

    /// The error of the last attempt that was retried, once.
    pub(crate) fn take_error(&self) -> Option<Error> {
        lock(&self.inner.last_error).take()
    }

    /// Holds a concurrency slot for a hedged copy until the call ends;
    /// true when the call has one.
    pub(crate) fn hold_hedge_slot(
        &self,
        take: impl FnOnce() -> Option<OwnedSemaphorePermit>,
    ) -> bool {
        let mut slot = lock(&self.inner.hedge_slot);
        if slot.is_none() {
            *slot = take();
        }
        slot.is_some()
    }

    /// Adds what the call knows to an error that ends it.
    pub(crate) fn annotate(&self, error: Error) -> Error {
        let error = error.with_attempts(self.attempts());
        match &self.inner.request_id {
            Some(id) => error.with_request_id(id.clone()),
            None => error,
        }
    }
}

/// An attempt under a timer bounded by the call's deadline, while it lives.
pub(crate) struct TimedAttempt(Call);

impl Drop for TimedAttempt {
    fn drop(&mut self) {
        self.0.inner.timed_attempts.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are left out: a caller may pass a credential.
        f.debug_struct("Call")
            .field("task_id", &self.inner.request.task_id)
            .field("agent_id", &self.inner.request.agent_id)
            .field("request_id", &self.inner.request_id)
            .field("headers", &self.inner.headers.keys().collect::<Vec<_>>())
            .field("deadline", &self.inner.deadline)
            .field("attempts", &self.attempts())
            .finish_non_exhaustive()
    }
}

/// What [`Identify`] adds to every call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) generate_ids: bool,
    pub(crate) timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            generate_ids: true,
            timeout: None,
        }
    }
}

/// Gives each [`QualityRequest`] its [`Call`] and passes the call down;
/// made by [`IdentifyLayer`], whose docs say what it sets.
///
/// Its response future enters the call's span while the stack below runs,
/// and adds the attempt count and request id to an error that ends the call
/// ([`Error::attempts`], [`Error::request_id`]).
#[derive(Clone, Debug)]
pub struct Identify<S> {
    inner: S,
    settings: Settings,
}

impl<S> Identify<S> {
    pub(crate) fn new(inner: S, settings: Settings) -> Self {
        Identify { inner, settings }
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

impl<S> Service<QualityRequest> for Identify<S>
where
    S: Service<Call, Response = QualityResponse>,
    S::Error: Into<Error>,
{
    type Response = QualityResponse;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: QualityRequest) -> Self::Future {
        let span = crate::trace::call_span(&request);
        let call = match Call::with(request, &self.settings, span) {
            Ok(call) => call,
            Err(error) => return ResponseFuture::failed(error),
        };
        crate::trace::record_request_id(&call);
        let future = call.span().in_scope(|| self.inner.call(call.clone()));
        ResponseFuture::new(future, call)
    }
}
