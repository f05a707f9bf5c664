//! The response future of [`Identify`](super::Identify).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::Call;
use crate::error::Error;
use crate::wire::QualityResponse;

pin_project! {
    /// The future an [`Identify`](super::Identify) call returns: the stack
    /// below, polled inside the call's span; its error, if any, carries the
    /// call's attempt count and request id.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        call: Option<Call>,
        error: Option<Error>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, call: Call) -> Self {
        ResponseFuture {
            inner: Some(inner),
            call: Some(call),
            error: None,
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            inner: None,
            call: None,
            error: Some(error),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<QualityResponse, E>>,
    E: Into<Error>,
{
    type Output = Result<QualityResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(this.error.take().unwrap_or_else(Error::not_ready)));
        };
        let Some(call) = this.call.as_ref() else {
            return Poll::Ready(Err(Error::not_ready()));
        };
        let result = {
            let _entered = call.span().enter();
            ready!(inner.poll(cx))
        };
        let result = result.map_err(|e| call.annotate(e.into()));
        crate::trace::call_finished(call.span(), call.attempts(), &result);
        call.finish_metrics(&result);
        this.call.take();
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}
