//! The response future of [`AdaptiveLimit`](super::AdaptiveLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{Outcome, Permit};
use crate::classify::ClassifyFailure;
use crate::error::Error;

pin_project! {
    /// The future of an [`AdaptiveLimit`](super::AdaptiveLimit) call: the
    /// inner call, holding its permit until it ends or is dropped, or an
    /// immediate `NotReady` error for a call made without a permit.
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        permit: Option<Permit>,
        classify: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Failed { error: Option<Error> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn new(future: F, permit: Permit, classify: C) -> Self {
        ResponseFuture {
            state: State::Called { future },
            permit: Some(permit),
            classify,
        }
    }

    pub(super) fn failed(error: Error, classify: C) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            permit: None,
            classify,
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
        let future = match this.state.project() {
            StateProj::Called { future } => future,
            StateProj::Failed { error } => {
                let error = error.take().unwrap_or_else(Error::not_ready);
                return Poll::Ready(Err(error.into()));
            }
        };
        let result = ready!(future.poll(cx));
        // The permit goes back before the caller sees the answer, so a
        // caller that calls again at once finds it free.
        if let Some(mut permit) = this.permit.take() {
            let outcome = match &result {
                Ok(_) => Some(Outcome::Success),
                Err(e) if this.classify.is_failure(e) => Some(Outcome::Overload),
                Err(_) => None,
            };
            permit.finish(outcome);
        }
        Poll::Ready(result)
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
