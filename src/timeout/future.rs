//! The response futures of [`Deadline`](super::Deadline)
//! ([`DeadlineFuture`]) and [`AttemptTimeout`](super::AttemptTimeout)
//! ([`ResponseFuture`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::call::Call;
use crate::error::{Error, TimeoutKind};

pin_project! {
    /// The future of [`AttemptTimeout`](super::AttemptTimeout): the
    /// attempt raced against its timer, or an immediate timeout for a call
    /// whose deadline had already passed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        timer: Option<Sleep>,
        kind: TimeoutKind,
        call: Held,
    }
}

impl<F> ResponseFuture<F> {
    /// An attempt, bounded by a timer at `at`, which is no later than the
    /// call's deadline.
    pub(super) fn attempt(inner: F, at: Instant, kind: TimeoutKind, call: Call) -> Self {
        ResponseFuture {
            inner: Some(inner),
            timer: Some(tokio::time::sleep_until(at)),
            kind,
            call: Held { call, timing: true },
        }
    }

    pub(super) fn expired(call: Call) -> Self {
        ResponseFuture {
            inner: None,
            timer: None,
            kind: TimeoutKind::Total,
            call: Held {
                call,
                timing: false,
            },
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
                this.call.stop_timing();
                return Poll::Ready(result);
            }
            match this.timer.as_pin_mut() {
                Some(timer) => ready!(timer.poll(cx)),
                None => return Poll::Pending,
            }
        }
        this.call.stop_timing();
        // A call out of time says what failed before; an attempt's own
        // timeout is its own cause. Read before the attempt below is
        // dropped: a dropped attempt is recorded as cut, which would hide
        // the failure before it.
        let error = timed_out(*this.kind, Some(&this.call.call));
        // Dropped now, not when this future is: its span ends as a timeout.
        crate::trace::timed_out(|| this.inner.set(None));
        Poll::Ready(Err(E::from(error)))
    }
}

/// The error of a call or attempt whose timer of `kind` fired: a call out
/// of time says what failed before; an attempt's own timeout is its own
/// cause.
fn timed_out(kind: TimeoutKind, call: Option<&Call>) -> Error {
    match (kind, call) {
        (TimeoutKind::Total, Some(call)) => call.out_of_time(),
        (kind, Some(call)) => Error::timeout(kind).with_attempts(call.attempts()),
        (kind, None) => Error::timeout(kind),
    }
}

pin_project! {
    /// The future of [`Deadline`](super::Deadline): the call below, bounded
    /// by the call's deadline, or an immediate timeout for a call whose
    /// deadline had already passed.
    ///
    /// Its timer is armed only while no attempt timer bounds the call (in a
    /// backoff wait, say), so on the common path a call has one timer, its
    /// attempt's; and it is boxed, so that the space of a timer that is
    /// rarely armed is not carried (and moved) in every call's future.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: Option<F>,
        timer: Option<Pin<Box<Sleep>>>,
        until: Option<Instant>,
        call: Option<Call>,
    }
}

impl<F> DeadlineFuture<F> {
    pub(super) fn untimed(inner: F) -> Self {
        DeadlineFuture {
            inner: Some(inner),
            timer: None,
            until: None,
            call: None,
        }
    }

    /// A whole call, bounded by its deadline `at`.
    pub(super) fn deadline(inner: F, at: Instant, call: Call) -> Self {
        DeadlineFuture {
            inner: Some(inner),
            timer: None,
            until: Some(at),
            call: Some(call),
        }
    }

    pub(super) fn expired(call: Call) -> Self {
        DeadlineFuture {
            inner: None,
            timer: None,
            until: None,
            call: Some(call),
        }
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
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
                return Poll::Ready(result);
            }
            if this.timer.is_none() {
                // Armed the first time no attempt timer covers the call.
                // Every wake-up of the call polls from the top, so this
                // runs again whenever an attempt ends.
                let covered = this.call.as_ref().is_some_and(|c| c.record().timed());
                match *this.until {
                    Some(at) if !covered => {
                        *this.timer = Some(Box::pin(tokio::time::sleep_until(at)));
                    }
                    _ => return Poll::Pending,
                }
            }
            match this.timer.as_mut() {
                Some(timer) => ready!(timer.as_mut().poll(cx)),
                None => return Poll::Pending,
            }
        }
        // Read before the call below is dropped (see `ResponseFuture`).
        let error = timed_out(TimeoutKind::Total, this.call.as_ref());
        crate::trace::timed_out(|| this.inner.set(None));
        Poll::Ready(Err(E::from(error)))
    }
}

impl<F> fmt::Debug for DeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineFuture")
            .field("deadline", &self.until)
            .field("timed", &self.timer.is_some())
            .finish_non_exhaustive()
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

/// The call an attempt's future holds, and whether its attempt timer is
/// still counted as running in the call's record (until the attempt ends,
/// or the future is dropped).
struct Held {
    call: Call,
    timing: bool,
}

impl Held {
    fn stop_timing(&mut self) {
        if std::mem::take(&mut self.timing) {
            self.call.record().timer_ended();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop_timing();
    }
}
