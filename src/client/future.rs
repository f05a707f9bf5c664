//! The response future of [`QualityClient`](super::QualityClient).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use super::Stack;
use crate::error::Error;
use crate::wire::{QualityRequest, QualityResponse};

type Inner = <Stack as Service<QualityRequest>>::Future;

pin_project! {
    /// The future a [`QualityClient`](super::QualityClient) call returns.
    ///
    /// Dropping it cancels the call at once: the attempt in flight, the
    /// backoff wait or the wait for a slot is abandoned and the concurrency
    /// slot is released.
    pub struct ResponseFuture {
        #[pin]
        inner: Inner,
    }
}

impl ResponseFuture {
    pub(super) fn new(inner: Inner) -> Self {
        ResponseFuture { inner }
    }

    pub(super) fn failed(error: Error) -> Self {
        ResponseFuture {
            inner: crate::call::future::ResponseFuture::failed(error),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<QualityResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
