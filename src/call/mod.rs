//! A call's identity: [`Identify`] turns each [`QualityRequest`] into one
//! [`Call`] (request id, body encoded once, deadline, attempt count, span)
//! that every attempt below it shares, whatever sits between.
//!
//! Put [`IdentifyLayer`] outside any retry layer, as tower-http's
//! `SetRequestId` goes outside what should share an id. Every layer below
//! is a `Service<Call>`: the crate's retry policy, timeouts, breaker and
//! [`QualityCheck`](crate::QualityCheck) read the call's deadline and count
//! its attempts, and a user's own `tower::retry::Policy<Call, …>` gets all of
//! it by cloning the call (a reference-count increment).
//!
//! ```
//! use tower_quality_gate::call::{Call, IdentifyLayer};
//! use tower_quality_gate::{Error, QualityRequest, QualityResponse};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let inner = service_fn(|call: Call| async move {
//!     assert!(call.request_id().is_some());
//!     Ok::<_, Error>(QualityResponse::approved(call.request().task_id.clone()))
//! });
//! let service = IdentifyLayer::new().layer(inner);
//! let verdict = service.oneshot(QualityRequest::new("task-1", "agent-1")).await.unwrap();
//! assert_eq!(verdict.gate, "task-1");
//! # });
//! ```

pub mod future;
mod identity;
mod layer;
mod record;

use std::task::{Context, Poll};

use tower::Service;

pub use self::identity::Call;
pub(crate) use self::identity::Settings;
pub use self::layer::IdentifyLayer;
pub use crate::options::CallOptions;

use self::future::ResponseFuture;
use crate::error::Error;
use crate::wire::{QualityRequest, QualityResponse};

/// Gives each [`QualityRequest`] its [`Call`] and passes the call down;
/// made by [`IdentifyLayer`], whose docs say what it sets.
///
/// Its response future enters the call's span while the stack below runs,
/// and adds the attempt count and request id to an error that ends the call
/// ([`Error::attempts`], [`Error::request_id`]).
#[derive(Clone, Debug)]
pub struct Identify<S> {
    inner: S,
    settings: Settings,
}

impl<S> Identify<S> {
    pub(crate) fn new(inner: S, settings: Settings) -> Self {
        Identify { inner, settings }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<QualityRequest> for Identify<S>
where
    S: Service<Call, Response = QualityResponse>,
    S::Error: Into<Error>,
{
    type Response = QualityResponse;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: QualityRequest) -> Self::Future {
        let span = crate::trace::call_span(&request);
        let call = match Call::with(request, &self.settings, span) {
            Ok(call) => call,
            Err(error) => return ResponseFuture::failed(error),
        };
        crate::trace::record_request_id(call.span(), call.request_id());
        let future = call.span().in_scope(|| self.inner.call(call.clone()));
        ResponseFuture::new(future, call)
    }
}
