//! The response future of [`Deadline`](super::Deadline) and
//! [`AttemptTimeout`](super::AttemptTimeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::call::Call;
use crate::error::{Error, TimeoutKind};

pin_project! {
    /// The inner call raced against a timer, or an immediate timeout for a
    /// call whose deadline had already passed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        timer: Option<Sleep>,
        // A deadline's timer is armed only while no attempt timer bounds
        // the call (in a backoff wait, say): on the common path a call has
        // one timer, its attempt's.
        lazy_until: Option<Instant>,
        kind: TimeoutKind,
        call: Option<Call>,
        // Held by an attempt's future while its timer runs.
        attempt: Option<TimerRunning>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn untimed(inner: F) -> Self {
        ResponseFuture {
            inner: Some(inner),
            timer: None,
            lazy_until: None,
            kind: TimeoutKind::Total,
            call: None,
            attempt: None,
        }
    }

    /// An attempt, bounded by a timer at `at`, which is no later than the
    /// call's deadline.
    pub(super) fn attempt(inner: F, at: Instant, kind: TimeoutKind, call: Call) -> Self {
        let timed = TimerRunning(call.clone());
        ResponseFuture {
            inner: Some(inner),
            timer: Some(tokio::time::sleep_until(at)),
            lazy_until: None,
            kind,
            attempt: Some(timed),
            call: Some(call),
        }
    }

    /// A whole call, bounded by its deadline `at`.
    pub(super) fn deadline(inner: F, at: Instant, call: Call) -> Self {
        ResponseFuture {
            inner: Some(inner),
            timer: None,
            lazy_until: Some(at),
            kind: TimeoutKind::Total,
            call: Some(call),
            attempt: None,
        }
    }

    pub(super) fn expired(call: Call) -> Self {
        ResponseFuture {
            inner: None,
            timer: None,
            lazy_until: None,
            kind: TimeoutKind::Total,
            call: Some(call),
            attempt: None,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The inner call first: an answer that is ready wins over a timer
        // that fired in the same tick.
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            if let Poll::Ready(result) = inner.poll(cx) {
                this.attempt.take();
                return Poll::Ready(result);
            }
            if this.timer.is_none() {
                // A deadline's timer, armed the first time no attempt timer
                // covers the call. Every wake-up of the call polls from the
                // top, so this runs again whenever an attempt ends.
                let covered = this.call.as_ref().is_some_and(|c| c.record().timed());
                match *this.lazy_until {
                    Some(at) if !covered => this.timer.set(Some(tokio::time::sleep_until(at))),
                    _ => return Poll::Pending,
                }
            }
            match this.timer.as_pin_mut() {
                Some(timer) => ready!(timer.poll(cx)),
                None => return Poll::Pending,
            }
        }
        this.attempt.take();
        // A call out of time says what failed before; an attempt's own
        // timeout is its own cause. Read before the attempt below is
        // dropped: a dropped attempt is recorded as cut, which would hide
        // the failure before it.
        let error = match (this.kind, this.call.as_ref()) {
            (TimeoutKind::Total, Some(call)) => call.out_of_time(),
            (kind, Some(call)) => Error::timeout(*kind).with_attempts(call.attempts()),
            (kind, None) => Error::timeout(*kind),
        };
        // Dropped now, not when this future is: its span ends as a timeout.
        crate::trace::timed_out(|| this.inner.set(None));
        Poll::Ready(Err(E::from(error)))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("kind", &self.kind)
            .field("timed", &self.timer.is_some())
            .finish_non_exhaustive()
    }
}

/// Marks an attempt timer as running in the call's record while it lives.
struct TimerRunning(Call);

impl Drop for TimerRunning {
    fn drop(&mut self) {
        self.0.record().timer_ended();
    }
}
