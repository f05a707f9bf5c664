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
        kind: TimeoutKind,
        call: Option<Call>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn untimed(inner: F) -> Self {
        ResponseFuture {
            inner: Some(inner),
            timer: None,
            kind: TimeoutKind::Total,
            call: None,
        }
    }

    pub(super) fn timed(inner: F, at: Instant, kind: TimeoutKind, call: Call) -> Self {
        ResponseFuture {
            inner: Some(inner),
            timer: Some(tokio::time::sleep_until(at)),
            kind,
            call: Some(call),
        }
    }

    pub(super) fn expired(call: Call) -> Self {
        ResponseFuture {
            inner: None,
            timer: None,
            kind: TimeoutKind::Total,
            call: Some(call),
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
        let this = self.project();
        // The inner call first: an answer that is ready wins over a timer
        // that fired in the same tick.
        if let Some(inner) = this.inner.as_pin_mut() {
            if let Poll::Ready(result) = inner.poll(cx) {
                return Poll::Ready(result);
            }
            match this.timer.as_pin_mut() {
                Some(timer) => ready!(timer.poll(cx)),
                None => return Poll::Pending,
            }
        }
        // The cause of a call that ran out of time is its last failed
        // attempt, if one was retried; an attempt's own timeout has none.
        let cause = match this.kind {
            TimeoutKind::Total => this.call.as_ref().and_then(Call::take_error),
            _ => None,
        };
        let error = Error::timeout(*this.kind).caused_by(cause);
        let error = match this.call.as_ref() {
            Some(call) => error.with_attempts(call.attempts()),
            None => error,
        };
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
