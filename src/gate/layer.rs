//! [`QualityGateLayer`]: the gate as a tower `Layer`.

use std::fmt;

use tower::Layer;

use super::rejection::DefaultRejection;
use super::QualityGate;
use crate::propagate::Propagation;

/// Wraps a service in a [`QualityGate`]: requests reach it only when the
/// quality service approves the work they carry.
///
/// Built from the quality service (typically a
/// [`QualityClient`](crate::QualityClient), cloned per request) and the
/// function that derives the check from a request (see
/// [`DeriveQualityRequest`](super::DeriveQualityRequest)); what it answers
/// otherwise is [`DefaultRejection`] for `http` responses, or
/// [`reject_with`](Self::reject_with) a function of the
/// [`Verdict`](crate::Verdict). See the [module docs](super) for an axum
/// example and how readiness works.
#[derive(Clone)]
pub struct QualityGateLayer<Q, D, R = DefaultRejection> {
    quality: Q,
    derive: D,
    reject: R,
    propagation: Propagation,
}

// ===== impl QualityGateLayer =====

impl<Q, D> QualityGateLayer<Q, D> {
    /// A layer that checks each request with `quality`, asking for what
    /// `derive` makes of it, and answers rejections with [`DefaultRejection`].
    pub fn new(quality: Q, derive: D) -> Self {
        QualityGateLayer {
            quality,
            derive,
            reject: DefaultRejection,
            propagation: Propagation::default(),
        }
    }
}

impl<Q, D, R> QualityGateLayer<Q, D, R> {
    /// Answers work that is not approved with `reject(verdict)` instead.
    pub fn reject_with<R2>(self, reject: R2) -> QualityGateLayer<Q, D, R2> {
        QualityGateLayer {
            quality: self.quality,
            derive: self.derive,
            reject,
            propagation: self.propagation,
        }
    }

    /// What to carry from each incoming request into its check: by default
    /// the `x-request-id`, the W3C `traceparent`/`tracestate` and the
    /// `grpc-timeout` deadline ([`Propagation::default`]); see
    /// [`QualityGate::propagate`].
    ///
    /// ```
    /// use tower_quality_gate::gate::QualityGateLayer;
    /// use tower_quality_gate::propagate::Propagation;
    /// use tower_quality_gate::{QualityClient, QualityRequest};
    ///
    /// # fn main() -> Result<(), tower_quality_gate::Error> {
    /// let client = QualityClient::new("http://127.0.0.1:8000")?;
    /// let derive = |req: http::Request<String>| async move {
    ///     Ok::<_, http::Response<String>>((QualityRequest::new("task-1", "agent-1"), req))
    /// };
    /// // Ids and traces, but not the caller's deadline.
    /// let layer = QualityGateLayer::new(client, derive)
    ///     .propagate(Propagation::default().deadline(false));
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn propagate(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// Propagates nothing: [`propagate`](Self::propagate)`(Propagation::none())`.
    pub fn no_propagation(self) -> Self {
        self.propagate(Propagation::none())
    }
}

impl<S, Q, D, R> Layer<S> for QualityGateLayer<Q, D, R>
where
    Q: Clone,
    D: Clone,
    R: Clone,
{
    type Service = QualityGate<S, Q, D, R>;

    fn layer(&self, inner: S) -> Self::Service {
        QualityGate::new(inner, self.quality.clone(), self.derive.clone())
            .reject_with(self.reject.clone())
            .propagate(self.propagation)
    }
}

impl<Q: fmt::Debug, D, R> fmt::Debug for QualityGateLayer<Q, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QualityGateLayer")
            .field("quality", &self.quality)
            .field("propagation", &self.propagation)
            .finish_non_exhaustive()
    }
}
