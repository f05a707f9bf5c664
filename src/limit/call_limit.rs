//! [`CallLimit`]: a fixed number of calls in flight, where a call waits for
//! its slot inside its deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::PollSemaphore;
use tower::{Layer, Service};

use crate::call::Call;
use crate::error::Error;

/// Wraps a `Service<Call>` in a [`CallLimit`]; every service it makes, and
/// every clone, shares its slots.
///
/// Made by [`ClientBuilder::concurrency_limit_layer`](crate::ClientBuilder::concurrency_limit_layer),
/// whose built client counts against the same slots.
#[derive(Clone)]
pub struct CallLimitLayer {
    semaphore: Arc<Semaphore>,
}

impl CallLimitLayer {
    pub(crate) fn with_semaphore(semaphore: Arc<Semaphore>) -> Self {
        CallLimitLayer { semaphore }
    }
}

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            semaphore: self.semaphore.clone(),
        }
    }
}

impl fmt::Debug for CallLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallLimitLayer")
            .field("available", &self.semaphore.available_permits())
            .finish()
    }
}

/// At most so many [`Call`]s in flight below it: a call holds its slot
/// from its first attempt to its end (retries and waits included) and
/// gives it back when it ends or is dropped.
///
/// Unlike tower's `ConcurrencyLimit`, which waits in `poll_ready` before the
/// call exists, a call waits for its slot in its future, so the call's
/// deadline (set by [`Identify`](crate::call::Identify) above it) covers the
/// wait: a call that gets no slot in time fails with a total timeout
/// ([`Error::is_total_timeout`]) and sends nothing. `poll_ready` is the
/// inner service's. On the common path, a free slot, it costs what tower's
/// does: no allocation and no timer; a call that must wait allocates its
/// place in the queue and arms one timer, at its deadline.
///
/// With tower's own limit in its place, the wait happens before the call
/// has a deadline, and is not bounded by it.
pub struct CallLimit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
}

impl<S: Clone> Clone for CallLimit<S> {
    fn clone(&self) -> Self {
        CallLimit {
            inner: self.inner.clone(),
            semaphore: self.semaphore.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CallLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallLimit")
            .field("inner", &self.inner)
            .field("available", &self.semaphore.available_permits())
            .finish()
    }
}

impl<S> Service<Call> for CallLimit<S>
where
    S: Service<Call> + Clone,
    S::Error: From<Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CallLimitFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return CallLimitFuture {
                state: State::Called {
                    future: self.inner.call(call),
                    permit: Some(permit),
                },
            };
        }
        // The service made ready goes with the call; this one keeps a clone,
        // as tower's docs advise for a service called later.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let mut waiting: crate::metrics::Waiting = Default::default();
        waiting.set(true);
        CallLimitFuture {
            state: State::Waiting {
                semaphore: PollSemaphore::new(self.semaphore.clone()),
                timer: call.deadline().map(tokio::time::sleep_until),
                service: Some(service),
                call: Some(call),
                waiting,
            },
        }
    }
}

pin_project! {
    /// The future of a [`CallLimit`] call: the wait for a slot, bounded by
    /// the call's deadline, then the call, holding its slot.
    pub struct CallLimitFuture<S, F> {
        #[pin]
        state: State<S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        Waiting {
            semaphore: PollSemaphore,
            #[pin]
            timer: Option<Sleep>,
            service: Option<S>,
            call: Option<Call>,
            waiting: crate::metrics::Waiting,
        },
        Called {
            #[pin]
            future: F,
            permit: Option<OwnedSemaphorePermit>,
        },
    }
}

impl<S, F, T> Future for CallLimitFuture<S, F>
where
    S: Service<Call, Future = F>,
    S::Error: From<Error>,
    F: Future<Output = Result<T, S::Error>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let called = match self.as_mut().project().state.project() {
                StateProj::Called { future, permit } => {
                    let result = ready!(future.poll(cx));
                    // The slot goes back before the caller sees the answer.
                    permit.take();
                    return Poll::Ready(result);
                }
                StateProj::Waiting {
                    semaphore,
                    timer,
                    service,
                    call,
                    ..
                } => {
                    // The slot first: one that frees as the deadline passes
                    // still lets the call start, and the call ends at once.
                    if let Poll::Ready(permit) = semaphore.poll_acquire(cx) {
                        let (Some(mut service), Some(call), Some(permit)) =
                            (service.take(), call.take(), permit)
                        else {
                            // The semaphore is never closed.
                            return Poll::Ready(Err(Error::not_ready().into()));
                        };
                        State::Called {
                            future: service.call(call),
                            permit: Some(permit),
                        }
                    } else {
                        if let Some(timer) = timer.as_pin_mut() {
                            ready!(timer.poll(cx));
                        } else {
                            return Poll::Pending;
                        }
                        let error = match call.as_ref() {
                            Some(call) => call.out_of_time(),
                            None => Error::not_ready(),
                        };
                        tracing::debug!(
                            "quality check passed its deadline waiting for a concurrency slot"
                        );
                        return Poll::Ready(Err(error.into()));
                    }
                }
            };
            self.as_mut().project().state.set(called);
        }
    }
}

impl<S, F> fmt::Debug for CallLimitFuture<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting = matches!(self.state, State::Waiting { .. });
        f.debug_struct("CallLimitFuture")
            .field("waiting", &waiting)
            .finish()
    }
}
