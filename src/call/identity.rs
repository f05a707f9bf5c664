//! [`Call`]: a call's identity, on the ground floor: what every attempt
//! of one call shares, and the one [`Record`] its layers share.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::record::Record;
use crate::error::{Error, TimeoutKind};
use crate::wire::QualityRequest;

/// One call of the quality check, as every attempt of it sees it: the
/// request, its body encoded once, its request id, its deadline and
/// per-call headers, and how many attempts were sent so far.
///
/// Cloning is a reference-count increment; clones are the same call (they
/// share the attempt count). Made by [`Identify`](super::Identify), or by
/// [`Call::new`] for a single attempt.
#[derive(Clone)]
pub struct Call {
    inner: Arc<Inner>,
    /// A hedged copy's own concurrency slot, held while the copy lives:
    /// owned by the copy (made by [`Call::hedge_copy`]), not by the call.
    copy_slot: Option<Arc<Mutex<Option<OwnedSemaphorePermit>>>>,
}

struct Inner {
    /// With its per-call options: the call's headers are theirs.
    request: QualityRequest,
    body: Bytes,
    request_id: Option<HeaderValue>,
    started: Instant,
    deadline: Option<Instant>,
    attempts: AtomicU32,
    /// What the attempts learned that a layer above must know later.
    record: Record,
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
        request: QualityRequest,
        settings: &Settings,
        span: tracing::Span,
    ) -> Result<Call, Error> {
        // The options stay on the request (on the heap, when it has any):
        // nothing to move for the many calls without.
        let options = request.options();
        // The same headers a configuration may not set, for the same reasons.
        crate::headers::refuse_reserved(&options.headers)?;
        let started = Instant::now();
        let deadline = options.effective_deadline(started, settings.timeout);
        let request_id = match &options.request_id {
            Some(id) => Some(id.clone()),
            None if settings.generate_ids => Some(crate::request_id::next()),
            None => None,
        };
        let body = request.encode();
        Ok(Call {
            inner: Arc::new(Inner {
                request,
                body,
                request_id,
                started,
                deadline,
                attempts: AtomicU32::new(0),
                record: Record::default(),
                span,
                metrics: crate::metrics::CallMetrics::start(started),
            }),
            copy_slot: None,
        })
    }

    /// The request, with its per-call options as the caller set them. The
    /// values in effect are the call's own: [`deadline`](Self::deadline)
    /// (the earliest of the request's deadline, its timeout and the
    /// client's total timeout), [`request_id`](Self::request_id) (the
    /// request's, or a generated one) and [`headers`](Self::headers).
    pub fn request(&self) -> &QualityRequest {
        &self.inner.request
    }

    /// The JSON body every attempt sends.
    pub(crate) fn body(&self) -> &Bytes {
        &self.inner.body
    }

    /// The call's request id: the caller's own, or a generated one.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.inner.request_id.as_ref()
    }

    /// The per-call headers every attempt sends.
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.request.options().headers
    }

    /// When the call started: when [`Identify`](super::Identify) (or
    /// [`Call::new`]) made it. Its deadline, when it comes from a timeout
    /// (the request's own or the client's total timeout), counts from here;
    /// each attempt's timeout counts from that attempt's start.
    ///
    /// ```
    /// use tower_quality_gate::call::Call;
    /// use tower_quality_gate::QualityRequest;
    ///
    /// let call = Call::new(QualityRequest::new("task-1", "agent-1")).unwrap();
    /// assert!(call.started() <= tokio::time::Instant::now());
    /// ```
    pub fn started(&self) -> Instant {
        self.inner.started
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

    /// Records how the call ended in the call metrics.
    pub(crate) fn finish_metrics(&self, result: &Result<crate::QualityResponse, Error>) {
        self.inner.metrics.finish(result);
    }

    /// The call's tracing span (disabled when no subscriber wants it).
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Counts one more attempt sent and returns its number, from 1.
    pub(crate) fn start_attempt(&self) -> u32 {
        self.inner.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The record the layers below share ([`Record`]).
    pub(crate) fn record(&self) -> &Record {
        &self.inner.record
    }

    /// Whether the call's deadline has passed: nothing more may be sent.
    pub(crate) fn expired(&self) -> bool {
        self.expired_at(Instant::now())
    }

    /// Whether the call's deadline has passed at `now` (a clock read the
    /// caller needs for something else too).
    pub(crate) fn expired_at(&self, now: Instant) -> bool {
        self.inner.deadline.is_some_and(|d| d <= now)
    }

    /// The error of a call that ran out of time: a total timeout, with the
    /// last failed attempt (if any) as its cause and the attempts made.
    pub(crate) fn out_of_time(&self) -> Error {
        Error::timeout(TimeoutKind::Total)
            .caused_by(self.inner.record.take_cause())
            .with_attempts(self.attempts())
    }

    /// Takes back the count of an attempt the coordinator provably never
    /// processed.
    pub(crate) fn uncount_attempt(&self) {
        let _ = self
            .inner
            .attempts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The same call, as a hedged copy of its current attempt: it can
    /// hold a concurrency slot of its own ([`hold_hedge_slot`](Self::hold_hedge_slot)),
    /// given back when the copy ends.
    pub(crate) fn hedge_copy(&self) -> Call {
        Call {
            inner: self.inner.clone(),
            copy_slot: Some(Arc::default()),
        }
    }

    /// Takes a concurrency slot for this hedged copy, held while the copy
    /// lives; true when it has one. A call that is not a copy holds none.
    pub(crate) fn hold_hedge_slot(
        &self,
        take: impl FnOnce() -> Option<OwnedSemaphorePermit>,
    ) -> bool {
        let Some(slot) = &self.copy_slot else {
            return false;
        };
        let mut slot = lock(slot);
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
            .field("headers", &self.headers().keys().collect::<Vec<_>>())
            .field("deadline", &self.inner.deadline)
            .field("attempts", &self.attempts())
            .finish_non_exhaustive()
    }
}

/// What [`Identify`](super::Identify) adds to every call.
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
