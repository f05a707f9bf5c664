//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{Admission, Shared};
use crate::call::Call;
use crate::classify::ClassifyFailure;
use crate::error::Error;

pin_project! {
    /// The future of a [`CircuitBreaker`](super::CircuitBreaker) call:
    /// the inner call, whose outcome it records, or an immediate
    /// circuit-open error.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        outcome: Option<Outcome>,
        classify: Option<C>,
    }
}

/// Records the call's end in the breaker, or its drop if it never ends.
struct Outcome {
    shared: Arc<Shared>,
    admission: Admission,
    recorded: bool,
    /// The call, when the request is a [`Call`]: its record tells an
    /// attempt cut by an attempt timer above from one the caller dropped.
    call: Option<Call>,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded {
            // Cut by its attempt timer, the attempt timed out: a failure, as
            // if the timer sat below the breaker. Dropped for any other
            // reason (the caller gave up, a hedged copy won, the deadline
            // passed), it says nothing of the service.
            let cut = self
                .call
                .as_ref()
                .is_some_and(|c| c.record().cut_by_attempt_timer(c.deadline()));
            self.shared.record(self.admission, cut.then_some(true));
        }
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn admitted(
        inner: F,
        shared: Arc<Shared>,
        admission: Admission,
        classify: C,
        call: Option<Call>,
    ) -> Self {
        ResponseFuture {
            inner: Some(inner),
            outcome: Some(Outcome {
                shared,
                admission,
                recorded: false,
                call,
            }),
            classify: Some(classify),
        }
    }

    pub(super) fn refused() -> Self {
        ResponseFuture {
            inner: None,
            outcome: None,
            classify: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: From<Error>,
    C: ClassifyFailure<E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(E::from(Error::circuit_open())));
        };
        let result = ready!(inner.poll(cx));
        if let (Some(outcome), Some(classify)) = (this.outcome, this.classify.as_ref()) {
            let failed = matches!(&result, Err(e) if classify.is_failure(e));
            outcome.shared.record(outcome.admission, Some(failed));
            outcome.recorded = true;
        }
        Poll::Ready(result)
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("refused", &self.inner.is_none())
            .finish()
    }
}
