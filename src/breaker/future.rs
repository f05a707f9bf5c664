use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{Admission, Shared};
use crate::error::Error;

pin_project! {
    /// The future of a [`CircuitBreaker`](super::CircuitBreaker) call:
    /// the inner call, whose outcome it records, or an immediate
    /// circuit-open error.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        outcome: Option<Outcome>,
    }
}

/// Records the call's end in the breaker, or its drop if it never ends.
struct Outcome {
    shared: Arc<Shared>,
    admission: Admission,
    recorded: bool,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded {
            self.shared.record(self.admission, None);
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(inner: F, shared: Arc<Shared>, admission: Admission) -> Self {
        ResponseFuture {
            inner: Some(inner),
            outcome: Some(Outcome {
                shared,
                admission,
                recorded: false,
            }),
        }
    }

    pub(super) fn refused() -> Self {
        ResponseFuture {
            inner: None,
            outcome: None,
        }
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, Error>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(Error::circuit_open()));
        };
        let result = ready!(inner.poll(cx));
        if let Some(outcome) = this.outcome {
            let failed = matches!(&result, Err(e) if e.is_retryable());
            outcome.shared.record(outcome.admission, Some(failed));
            outcome.recorded = true;
        }
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("refused", &self.inner.is_none())
            .finish()
    }
}
