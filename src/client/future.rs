//! The response future of [`QualityClient`](super::QualityClient).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

use super::Stack;
use crate::error::Error;
use crate::wire::{Prepared, QualityResponse};

type StackFuture = <Stack as Service<Prepared>>::Future;

pin_project! {
    /// The future a [`QualityClient`](super::QualityClient) call returns.
    ///
    /// Dropping it cancels the call at once: the attempt in flight or the
    /// backoff wait is abandoned and the concurrency slot is released.
    pub struct ResponseFuture {
        #[pin]
        state: State,
        // The call's span, entered while the stack is polled, so the retry
        // policy's events carry the call's identity.
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Called {
            #[pin]
            future: StackFuture,
            request: Prepared,
            // Read only for the debug event: no clock read when it is off.
            started: Option<Instant>,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl ResponseFuture {
    pub(super) fn new(future: StackFuture, request: Prepared, span: tracing::Span) -> Self {
        ResponseFuture {
            span,
            state: State::Called {
                future,
                request,
                started: tracing::enabled!(tracing::Level::DEBUG).then(Instant::now),
            },
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            span: tracing::Span::none(),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<QualityResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        match this.state.project() {
            StateProj::Called {
                future,
                request,
                started,
            } => {
                let attempts = request.attempts();
                let result = ready!(future.poll(cx)).map_err(|e| e.with_attempts(attempts));
                let outcome = match &result {
                    Ok(v) if v.approved => "approved",
                    Ok(_) => "rejected",
                    Err(e) => e.kind().as_str(),
                };
                tracing::debug!(
                    attempts,
                    elapsed_ms = started.map_or(0, |s| s.elapsed().as_millis() as u64),
                    outcome,
                    "quality check finished"
                );
                Poll::Ready(result)
            }
            StateProj::Failed { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(Error::not_ready)))
            }
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
