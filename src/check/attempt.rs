//! [`AttemptFuture`]: one attempt of a [`Call`], as the crate's sender
//! makes it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::future::ResponseFuture;
use crate::call::Call;
use crate::error::Error;
use crate::wire::QualityResponse;

pin_project! {
    /// The future of one attempt of a [`Call`] sent by
    /// [`QualityCheck`](super::QualityCheck).
    ///
    /// Besides the attempt itself it does two things for the call, so that
    /// they hold whatever layers sit above (tower's own `Timeout` or
    /// `Retry` with any policy included):
    ///
    /// - the call's deadline: a call already past it is not sent (nor
    ///   counted), and an attempt still running when it passes ends with a
    ///   total timeout. The timer is armed only when no
    ///   [`AttemptTimeout`](crate::timeout::AttemptTimeout) above keeps the
    ///   deadline already, so the default stack still runs one timer per
    ///   attempt;
    /// - the attempt's outcome, kept in the call's record as the cause of a
    ///   total timeout that may come later (tower's `Retry` drops the
    ///   errors it retries).
    ///
    /// Dropping it aborts the attempt.
    pub struct AttemptFuture {
        inner: Option<ResponseFuture>,
        // Boxed: armed only when no attempt timer above keeps the deadline,
        // so every attempt's future does not carry (and move) its space.
        timer: Option<Pin<Box<Sleep>>>,
        sent: Sent,
    }
}

/// The attempt as the call's record sees it: an attempt dropped before it
/// answered was cut.
struct Sent {
    call: Call,
    /// The attempt's number, from 1; 0 when nothing was sent.
    attempt: u32,
    done: bool,
}

impl Drop for Sent {
    fn drop(&mut self) {
        if !self.done && self.attempt > 0 {
            self.call.record().cut(self.attempt, self.call.deadline());
        }
    }
}

impl AttemptFuture {
    pub(super) fn new(inner: ResponseFuture, call: Call, attempt: u32) -> Self {
        AttemptFuture {
            inner: Some(inner),
            timer: None,
            sent: Sent {
                call,
                attempt,
                done: false,
            },
        }
    }

    /// A call past its deadline: nothing is sent.
    pub(super) fn expired(call: Call) -> Self {
        AttemptFuture {
            inner: None,
            timer: None,
            sent: Sent {
                call,
                attempt: 0,
                done: true,
            },
        }
    }
}

impl Future for AttemptFuture {
    type Output = Result<QualityResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let call = &this.sent.call;
        // The attempt first: an answer that is ready wins over a deadline
        // that passed in the same tick.
        if let Some(inner) = this.inner.as_mut() {
            if let Poll::Ready(result) = Pin::new(inner).poll(cx) {
                this.sent.done = true;
                if let (Err(error), n @ 1..) = (&result, this.sent.attempt) {
                    call.record().failed(n, error);
                }
                return Poll::Ready(result);
            }
            if this.timer.is_none() {
                // Armed the first time no attempt timer keeps the deadline;
                // every wake-up polls from the top, so this runs again.
                match call.deadline() {
                    Some(at) if !call.record().timed() => {
                        *this.timer = Some(Box::pin(tokio::time::sleep_until(at)));
                    }
                    _ => return Poll::Pending,
                }
            }
            if let Some(timer) = this.timer.as_mut() {
                ready!(timer.as_mut().poll(cx));
            }
        }
        this.sent.done = true;
        Poll::Ready(Err(this.sent.call.out_of_time()))
    }
}

impl fmt::Debug for AttemptFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptFuture")
            .field("attempt", &self.sent.attempt)
            .finish_non_exhaustive()
    }
}
