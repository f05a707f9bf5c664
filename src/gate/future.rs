//! The response future of [`QualityGate`](super::QualityGate).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::rejection::MakeRejection;
use crate::error::{Error, TimeoutKind};
use crate::propagate::Propagated;
use crate::verdict::Verdict;
use crate::wire::{QualityRequest, QualityResponse};

pin_project! {
    /// The future a [`QualityGate`](super::QualityGate) call returns: derive
    /// the check, wait for the quality service, check, then either answer
    /// the rejection or call the inner service.
    ///
    /// `F` is the derive future, `Q` the quality service, `S` the inner
    /// service, `R` the rejection builder and `Fwd` the forwarded request.
    /// Dropping it cancels whichever step is running; the inner service is
    /// called only after an approval. Polled again after it completed, it
    /// stays pending.
    pub struct ResponseFuture<F, Q, S, R, Fwd>
    where
        Q: Service<QualityRequest>,
        S: Service<Fwd>,
    {
        #[pin]
        state: State<F, Q::Future, S::Future>,
        quality: Q,
        inner: S,
        // Whether `inner` was driven ready by the gate's `poll_ready`.
        inner_ready: bool,
        reject: R,
        forward: Option<Fwd>,
        // The incoming request's context, added to the derived check.
        propagated: Option<Propagated>,
        // The gate's span, entered while any step runs.
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, QF, SF> {
        Derive { #[pin] future: F },
        QualityReady {
            check: Option<QualityRequest>,
            // The check's deadline, if it has one: waiting for the quality
            // service's slot counts against it.
            #[pin]
            deadline: Option<Sleep>,
        },
        Check { #[pin] future: QF },
        InnerReady,
        Call { #[pin] future: SF },
        Done,
    }
}

impl<F, Q, S, R, Fwd> ResponseFuture<F, Q, S, R, Fwd>
where
    Q: Service<QualityRequest>,
    S: Service<Fwd>,
{
    pub(super) fn new(
        derive: F,
        quality: Q,
        inner: S,
        inner_ready: bool,
        reject: R,
        propagated: Propagated,
        span: tracing::Span,
    ) -> Self {
        ResponseFuture {
            state: State::Derive { future: derive },
            quality,
            inner,
            inner_ready,
            reject,
            forward: None,
            propagated: Some(propagated),
            span,
        }
    }
}

impl<F, Q, S, R, Fwd> Future for ResponseFuture<F, Q, S, R, Fwd>
where
    F: Future<Output = Result<(QualityRequest, Fwd), S::Response>>,
    Q: Service<QualityRequest, Response = QualityResponse>,
    Q::Error: Into<Error>,
    S: Service<Fwd>,
    R: MakeRejection<S::Response>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        // One step after another, each entered only when the one before is
        // done: nothing races, and the inner service is never polled before
        // an approval.
        loop {
            let verdict = match this.state.as_mut().project() {
                StateProj::Derive { future } => match ready!(future.poll(cx)) {
                    Ok((check, forward)) => {
                        let mut check = match this.propagated.take() {
                            Some(propagated) => propagated.apply(check),
                            None => check,
                        };
                        *this.forward = Some(forward);
                        // A timeout on the derived check counts from now,
                        // so the wait for a quality slot is within it too.
                        let now = tokio::time::Instant::now();
                        if let Some(at) = check.options().effective_deadline(now, None) {
                            check.options_mut().deadline = Some(at);
                        }
                        let deadline = check.options().deadline.map(tokio::time::sleep_until);
                        this.state.set(State::QualityReady {
                            check: Some(check),
                            deadline,
                        });
                        continue;
                    }
                    Err(answer) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(answer));
                    }
                },
                // The quality service's slot is taken here, after the
                // request was read, not in the gate's poll_ready.
                StateProj::QualityReady { check, deadline } => match this.quality.poll_ready(cx) {
                    // Not ready by the check's deadline: a timeout, like one
                    // the client would have reported.
                    Poll::Pending => match deadline.as_pin_mut().map(|d| d.poll(cx)) {
                        Some(Poll::Ready(())) => Verdict::Unavailable {
                            error: Error::timeout(TimeoutKind::Total),
                        },
                        _ => return Poll::Pending,
                    },
                    Poll::Ready(Ok(())) => match check.take() {
                        Some(check) => {
                            let future = this.quality.call(check);
                            this.state.set(State::Check { future });
                            continue;
                        }
                        None => Verdict::Unavailable {
                            error: Error::not_ready(),
                        },
                    },
                    Poll::Ready(Err(error)) => Verdict::Unavailable {
                        error: error.into(),
                    },
                },
                StateProj::Check { future } => {
                    Verdict::from(ready!(future.poll(cx)).map_err(Into::into))
                }
                StateProj::InnerReady => {
                    if !*this.inner_ready {
                        // Called without the gate's poll_ready (or on a
                        // clone): drive the inner service ready now.
                        if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e));
                        }
                        *this.inner_ready = true;
                    }
                    let Some(forward) = this.forward.take() else {
                        this.state.set(State::Done);
                        return Poll::Pending;
                    };
                    *this.inner_ready = false;
                    let future = this.inner.call(forward);
                    this.state.set(State::Call { future });
                    continue;
                }
                StateProj::Call { future } => {
                    let result = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(result);
                }
                StateProj::Done => return Poll::Pending,
            };
            crate::trace::gate_verdict(this.span, &verdict);
            if verdict.is_approved() {
                this.state.set(State::InnerReady);
                continue;
            }
            tracing::debug!(
                gate = verdict.gate(),
                error = verdict.error().map(|e| e.kind().as_str()),
                "quality gate did not let the request through"
            );
            this.state.set(State::Done);
            *this.forward = None;
            return Poll::Ready(Ok(this.reject.make_rejection(verdict)));
        }
    }
}

impl<F, Q, S, R, Fwd> fmt::Debug for ResponseFuture<F, Q, S, R, Fwd>
where
    Q: Service<QualityRequest>,
    S: Service<Fwd>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.state {
            State::Derive { .. } => "derive",
            State::QualityReady { .. } => "quality_ready",
            State::Check { .. } => "check",
            State::InnerReady => "inner_ready",
            State::Call { .. } => "call",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("step", &step)
            .finish_non_exhaustive()
    }
}
