//! [`QualityGate`]: server-side middleware that lets a request through only
//! when the quality gate approves the work it carries.
//!
//! For each request the gate
//!
//! 1. derives a [`QualityRequest`] from it with a user-supplied, possibly
//!    asynchronous function ([`DeriveQualityRequest`]), which may instead
//!    answer on its own (a 400 for a malformed body);
//! 2. asks the quality service: any `Service<QualityRequest, Response =
//!    QualityResponse>` whose error converts into [`Error`] (the crate's
//!    own, or tower's `BoxError` from a stack of tower layers), typically a
//!    [`QualityClient`](crate::QualityClient);
//! 3. forwards the request to the inner service only on
//!    [`Verdict::Approved`]; otherwise it answers with a response built
//!    from the [`Verdict`] ([`MakeRejection`], by default
//!    [`DefaultRejection`]).
//!
//! It fails closed: an error of the quality service is
//! [`Verdict::Unavailable`], answered like a rejection, never an approval.
//! The gate's own error type is the inner service's, so it fits where the
//! inner service did (`Infallible` in axum and tonic).
//!
//! # Request bodies
//!
//! The facts to check usually sit in the request body, which a server sees
//! as a stream. The derive function therefore takes the request *by value*
//! and is asynchronous: it reads the body (with a size limit), decodes it,
//! and hands back the quality request together with the request to forward,
//! rebuilt around the bytes it read. The inner service sees the whole
//! request as sent; the body is read once and buffered once. The forwarded
//! request may even be of another type than the incoming one (a
//! [`DeriveQualityRequest::Request`]). A check derived from headers alone
//! just hands the request back untouched.
//!
//! # Readiness
//!
//! - [`poll_ready`](tower::Service::poll_ready) drives the **inner service**
//!   ready, and only it: the gate can take a request when the service it
//!   guards can, so backpressure passes through it as through any tower
//!   middleware. `call` moves that ready inner service into the response
//!   future and leaves a clone in its place (tower's clone-and-swap idiom,
//!   hence `S: Clone`); the future calls it after an approval. Whatever its
//!   readiness reserved (a concurrency-limit permit) is held while the check
//!   runs, and released unused on a rejection.
//! - The **quality service** is cloned per request and driven ready inside
//!   the response future, after the request was derived. Its readiness is
//!   usually a slot of a concurrency limit shared by every clone (the
//!   client's 64); taking it in `poll_ready` would hold a slot while a slow
//!   client uploads its body, or for requests the derive step turns away.
//!   While every slot is taken, requests wait in their futures, until the
//!   check's deadline if it has one (its own, or a propagated
//!   `grpc-timeout`): then the gate answers as for a timeout. To answer
//!   at once instead, wrap the client in tower's `LoadShed`
//!   (`ServiceBuilder::new().map_err(tower_quality_gate::Error::from).load_shed().service(client)`):
//!   a full client is then [`Verdict::Unavailable`] (a `502` by default).
//! - A clone of the gate starts not ready, as its inner clone does. Calling
//!   it without `poll_ready` is a misuse other services may panic on; the
//!   gate drives the inner service ready in the response future before it
//!   calls it, so it never calls an inner service that is not ready.
//!
//! # Context
//!
//! By default the gate carries the incoming request's context into the
//! check ([`Propagation`]): its
//! `x-request-id` (or, with the `tower-http` feature, the id tower-http's
//! `SetRequestIdLayer` stored), its W3C `traceparent` and `tracestate`, and
//! its `grpc-timeout`, so the check ends when the caller stops waiting
//! (counted from the request's arrival, so reading the body counts) and a
//! timed-out check is answered as any other timeout (`504` by default).
//! Invalid values are ignored; what the derive function sets on the check
//! itself wins (its own `tracestate` too, even with no `traceparent`).
//! [`QualityGateLayer::propagate`] changes it,
//! [`QualityGateLayer::no_propagation`] turns it off.
//!
//! Each request runs in a `quality_gate.gate` span (INFO, with
//! `quality_gate.verdict` = `approved`, `rejected` or `unavailable`): the
//! derive function, the check (whose `quality_gate.check` span is its
//! child) and the inner service. With the `opentelemetry` feature the gate
//! *joins* the caller's trace instead of relaying it: its span's parent is
//! the context the global propagator extracts from the request, and each
//! attempt of the check sends its own span's context ([`crate::otel`]).
//!
//! A propagated `grpc-timeout` ends the check a little before the caller
//! gives up ([`deadline_margin`](crate::propagate::deadline_margin)), so
//! that the gate's answer (a `DEADLINE_EXCEEDED` with its metadata) reaches
//! the caller before the caller's own timer fires.
//!
//! # With axum
//!
//! As a `route_layer`, the gate runs after routing, so path parameters are
//! there for axum's extractors:
//!
//! ```
//! use axum::body::Body;
//! use axum::extract::{FromRequestParts, Path, Request};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::post;
//! use axum::Router;
//! use http::StatusCode;
//! use tower_quality_gate::gate::QualityGateLayer;
//! use tower_quality_gate::testing::{Reply, TestCoordinator};
//! use tower_quality_gate::{QualityClient, QualityRequest};
//! use tower::ServiceExt;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Completion {
//!     agent_id: String,
//!     #[serde(default)]
//!     files: Vec<String>,
//! }
//!
//! /// Reads the body, derives the check, and rebuilds the request around the bytes.
//! async fn derive(req: Request) -> Result<(QualityRequest, Request), Response> {
//!     let (mut parts, body) = req.into_parts();
//!     let Path(task_id) = Path::<String>::from_request_parts(&mut parts, &())
//!         .await
//!         .map_err(IntoResponse::into_response)?;
//!     let bytes = axum::body::to_bytes(body, 64 * 1024)
//!         .await
//!         .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
//!     let completion: Completion =
//!         serde_json::from_slice(&bytes).map_err(|_| StatusCode::BAD_REQUEST.into_response())?;
//!     let check = QualityRequest::new(task_id, completion.agent_id).files(completion.files);
//!     Ok((check, Request::from_parts(parts, Body::from(bytes))))
//! }
//!
//! # #[tokio::main] async fn main() {
//! let coordinator = TestCoordinator::start().await;
//! coordinator.push(Reply::reject("lint", "2 warnings"));
//! let client = QualityClient::new(coordinator.url()).unwrap();
//!
//! let app = Router::new()
//!     .route("/tasks/{task_id}/complete", post(|body: String| async move { body }))
//!     .route_layer(QualityGateLayer::new(client, derive));
//!
//! let body = r#"{"agentId":"agent-1","files":["src/lib.rs"]}"#;
//! let request = || http::Request::post("/tasks/task-1/complete").body(Body::from(body)).unwrap();
//! let rejected = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
//!
//! let approved = app.oneshot(request()).await.unwrap();
//! assert_eq!(approved.status(), StatusCode::OK);
//! let echoed = axum::body::to_bytes(approved.into_body(), 1024).await.unwrap();
//! assert_eq!(echoed, body); // the handler got the body the gate read
//! assert_eq!(coordinator.requests()[1].request.as_ref().unwrap().task_id, "task-1");
//! # }
//! ```
//!
//! # With tonic
//!
//! A tonic server sees `http::Request<tonic::body::Body>`: the derive
//! function reads the gRPC frame (a flag byte, a 4-byte length, the
//! message), decodes the message with prost and rebuilds the request around
//! the frame; rejections are gRPC statuses (`tonic::Status::into_http()`).
//! `tonic::service::LayerExt::named_layer` puts the gate on one gRPC service
//! rather than the whole server. `examples/tonic_orchestrator` shows it.
//!
//! [`Verdict`]: crate::Verdict
//! [`Verdict::Approved`]: crate::Verdict::Approved
//! [`Verdict::Unavailable`]: crate::Verdict::Unavailable

mod derive;
pub mod future;
mod layer;
mod rejection;

use std::fmt;
use std::task::{ready, Context, Poll};

use tower::Service;

pub use self::derive::DeriveQualityRequest;
pub use self::layer::QualityGateLayer;
pub use self::rejection::{DefaultRejection, MakeRejection};

use self::future::ResponseFuture;
use crate::error::Error;
use crate::propagate::{Propagated, Propagation};
use crate::wire::{QualityRequest, QualityResponse};

/// Lets a request through to the inner service only when the quality
/// service approves the work it carries; see the [module docs](self) for the
/// steps, body handling and readiness.
///
/// Usually built by [`QualityGateLayer`]. Cloning it clones the inner
/// service, the quality service and both functions; a clone starts not
/// ready.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower_quality_gate::gate::QualityGate;
/// use tower_quality_gate::{Error, QualityRequest, QualityResponse};
/// use tower::{service_fn, ServiceExt};
///
/// # tokio_test::block_on(async {
/// // Approves task-1 only (a QualityClient in real use).
/// let quality = service_fn(|req: QualityRequest| async move {
///     Ok::<_, Error>(match req.task_id.as_str() {
///         "task-1" => QualityResponse::approved("all"),
///         _ => QualityResponse::rejected("test", "1 failing"),
///     })
/// });
/// let inner = service_fn(|req: Request<String>| async move {
///     Ok::<_, Infallible>(Response::new(format!("accepted {}", req.body())))
/// });
/// // The body is the task id here; a real server decodes it.
/// let derive = |req: Request<String>| async move {
///     Ok::<_, Response<String>>((QualityRequest::new(req.body().as_str(), "agent-1"), req))
/// };
/// let gate = QualityGate::new(inner, quality, derive);
///
/// let approved = gate.clone().oneshot(Request::new("task-1".to_owned())).await.unwrap();
/// assert_eq!(approved.body(), "accepted task-1");
/// let rejected = gate.oneshot(Request::new("task-2".to_owned())).await.unwrap();
/// assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
/// # });
/// ```
pub struct QualityGate<S, Q, D, R = DefaultRejection> {
    inner: S,
    quality: Q,
    derive: D,
    reject: R,
    propagation: Propagation,
    /// Whether `poll_ready` has driven `inner` ready for the next `call`.
    ready: bool,
}

// ===== impl QualityGate =====

impl<S, Q, D> QualityGate<S, Q, D> {
    /// Guards `inner` with `quality`, checking what `derive` makes of each
    /// request, and answers rejections with [`DefaultRejection`].
    pub fn new(inner: S, quality: Q, derive: D) -> Self {
        QualityGate {
            inner,
            quality,
            derive,
            reject: DefaultRejection,
            propagation: Propagation::default(),
            ready: false,
        }
    }
}

impl<S, Q, D, R> QualityGate<S, Q, D, R> {
    /// Answers work that is not approved with `reject(verdict)` instead.
    pub fn reject_with<R2>(self, reject: R2) -> QualityGate<S, Q, D, R2> {
        QualityGate {
            inner: self.inner,
            quality: self.quality,
            derive: self.derive,
            reject,
            propagation: self.propagation,
            ready: self.ready,
        }
    }

    /// What to carry from each incoming request into its check (default
    /// [`Propagation::default`]: the `x-request-id`, the W3C trace context
    /// and the `grpc-timeout` deadline); [`Propagation::none`] turns it off.
    /// What the derive function sets on the check itself wins.
    pub fn propagate(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The quality service each request is checked with.
    pub fn quality(&self) -> &Q {
        &self.quality
    }

    /// Consumes the gate, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<B, S, Q, D, R> Service<http::Request<B>> for QualityGate<S, Q, D, R>
where
    D: DeriveQualityRequest<http::Request<B>>,
    S: Service<D::Request, Response = D::Response> + Clone,
    Q: Service<QualityRequest, Response = QualityResponse> + Clone,
    Q::Error: Into<Error>,
    R: MakeRejection<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<D::Future, Q, S, R, D::Request>;

    /// Ready when the inner service is; the quality service is driven ready
    /// per request, in the response future.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        ready!(self.inner.poll_ready(cx))?;
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = crate::trace::gate_span();
        // Read now, before the body: a deadline counts from the arrival.
        let propagated = self.propagated(&req);
        // With OpenTelemetry the gate's span joins the caller's trace, and
        // the check's attempts send their own context instead of the relay.
        #[cfg(feature = "opentelemetry")]
        let propagated =
            if self.propagation.trace_context && crate::otel::join(&span, req.headers()) {
                propagated.without_trace_context()
            } else {
                propagated
            };
        // Take the inner service driven ready by poll_ready into the future,
        // leaving an unready clone for the next call.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let ready = std::mem::take(&mut self.ready);
        ResponseFuture::new(
            self.derive.derive(req),
            self.quality.clone(),
            inner,
            ready,
            self.reject.clone(),
            propagated,
            span,
        )
    }
}

impl<S, Q, D, R> QualityGate<S, Q, D, R> {
    fn propagated<B>(&self, req: &http::Request<B>) -> Propagated {
        #[cfg(feature = "tower-http")]
        return self
            .propagation
            .extract_with_extensions(req.headers(), req.extensions());
        #[cfg(not(feature = "tower-http"))]
        self.propagation.extract(req.headers())
    }
}

impl<S: Clone, Q: Clone, D: Clone, R: Clone> Clone for QualityGate<S, Q, D, R> {
    fn clone(&self) -> Self {
        // A clone has not been polled ready, whatever the original was.
        QualityGate {
            inner: self.inner.clone(),
            quality: self.quality.clone(),
            derive: self.derive.clone(),
            reject: self.reject.clone(),
            propagation: self.propagation,
            ready: false,
        }
    }
}

impl<S: fmt::Debug, Q: fmt::Debug, D, R> fmt::Debug for QualityGate<S, Q, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QualityGate")
            .field("inner", &self.inner)
            .field("quality", &self.quality)
            .field("propagation", &self.propagation)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}
