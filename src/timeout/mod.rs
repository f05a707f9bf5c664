//! Time limits on a [`Call`]: [`Deadline`] bounds the whole call by the
//! call's deadline, [`AttemptTimeout`] bounds each attempt, and both answer
//! with the crate's typed timeout error.
//!
//! They read the deadline from the call ([`Call::deadline`], set by
//! [`Identify`](crate::call::Identify)), so the overall deadline, the retry
//! policy's planning and each attempt's timer are one clock. Unlike tower's
//! `Timeout`, their error stays the inner service's type (`Error`, or a
//! `BoxError` holding one) and says which limit passed, with the attempts
//! made and the last attempt's error as its source.
//!
//! # Where they go, and what holds without them
//!
//! The builder's order is `Deadline` above the retry layer and
//! `AttemptTimeout` below it (and below or above a breaker). Each stands
//! alone:
//!
//! - a call past its deadline is never sent, by either layer or by the
//!   crate's sender ([`QualityCheck`](crate::QualityCheck)), and fails with
//!   a total timeout, which no policy retries ([`Error::is_retryable`] is
//!   false), so a user's policy below a `Deadline` stops;
//! - an attempt still running at the deadline ends then, whether an
//!   `AttemptTimeout`, a `Deadline` or only the sender keeps the deadline
//!   (tower's `Timeout` in place of `AttemptTimeout` included);
//! - a total timeout's `source()` is the last failed (or cut) attempt,
//!   whatever the retry policy: the sender keeps it in the call's
//!   [`Record`](crate::call) as it happens;
//! - without a `Deadline` above the retry layer, a user's policy that
//!   sleeps past the deadline is stopped when its next attempt would start
//!   (the crate's [`RetryPolicy`](crate::retry::RetryPolicy) never sleeps
//!   past it): put `Deadline` above the retry layer for the deadline to
//!   hold to the instant.
//!
//! On the common path a call runs one timer: the attempt's. The deadline's
//! own timer is armed only while no `AttemptTimeout` keeps it (in a backoff
//! wait, say).

pub mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use self::layer::{AttemptTimeoutLayer, DeadlineLayer};

use self::future::{DeadlineFuture, ResponseFuture};
use crate::call::Call;
use crate::error::{Error, TimeoutKind};

/// Fails a call with a total timeout ([`Error::is_total_timeout`]) when its
/// deadline passes, retries and waits included; a call without a deadline
/// passes through with no timer. A call whose deadline has already passed
/// is not sent at all.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

/// Fails one attempt with an attempt timeout ([`Error::is_attempt_timeout`])
/// after `timeout`, or with a total timeout if the call's deadline comes
/// first, so that no attempt outlives its call.
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

// ===== impl Deadline =====

impl<S> Deadline<S> {
    /// Bounds the calls of `inner` by their deadlines.
    pub fn new(inner: S) -> Self {
        Deadline { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Call> for Deadline<S>
where
    S: Service<Call>,
    S::Error: From<Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        match call.deadline() {
            None => DeadlineFuture::untimed(self.inner.call(call)),
            Some(_) if call.expired() => DeadlineFuture::expired(call),
            Some(at) => {
                let inner = self.inner.call(call.clone());
                DeadlineFuture::deadline(inner, at, call)
            }
        }
    }
}

// ===== impl AttemptTimeout =====

impl<S> AttemptTimeout<S> {
    /// Bounds each attempt of `inner` by `timeout` and the call's deadline.
    pub fn new(inner: S, timeout: Duration) -> Self {
        AttemptTimeout { inner, timeout }
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Call> for AttemptTimeout<S>
where
    S: Service<Call>,
    S::Error: From<Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        // One clock read for both the expiry check and the timer's end.
        let now = tokio::time::Instant::now();
        // Nothing is sent past the deadline, whatever sits above: an attempt
        // that could not start in time is never counted.
        if call.expired_at(now) {
            return ResponseFuture::expired(call);
        }
        let own = call
            .record()
            .timer_started(crate::time::saturating_add(now, self.timeout));
        let (at, kind) = match call.deadline() {
            Some(deadline) if deadline <= own => (deadline, TimeoutKind::Total),
            _ => (own, TimeoutKind::Attempt),
        };
        let inner = self.inner.call(call.clone());
        ResponseFuture::attempt(inner, at, kind, call)
    }
}
