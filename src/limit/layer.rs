use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::{AdaptiveLimit, AdaptiveLimitConfig, AdaptiveLimitHandle, Overload, Shared};

/// Wraps services in an [`AdaptiveLimit`]; every service this layer makes,
/// and every clone of them, shares one limit.
///
/// For one limit per replica, use one layer per replica.
///
/// ```
/// use tower_quality_gate::limit::{AdaptiveLimitConfig, AdaptiveLimitLayer};
/// use tower_quality_gate::QualityCheck;
///
/// # fn main() -> Result<(), tower_quality_gate::Error> {
/// let layer = AdaptiveLimitLayer::new(AdaptiveLimitConfig::default().max_limit(50));
/// let handle = layer.handle();
/// let service = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service(QualityCheck::new("http://127.0.0.1:8000")?);
/// assert_eq!(handle.in_flight(), 0);
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone)]
pub struct AdaptiveLimitLayer<C = Overload> {
    shared: Arc<Shared>,
    classify: C,
}

impl AdaptiveLimitLayer {
    /// A layer with these settings, the default classifier ([`Overload`])
    /// and a new limit, which starts by probing the no-load latency.
    pub fn new(config: AdaptiveLimitConfig) -> Self {
        AdaptiveLimitLayer {
            shared: Arc::new(Shared::new(config)),
            classify: Overload,
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// Counts as overload what `classify` says (default [`Overload`]); see
    /// [`ClassifyFailure`](crate::classify::ClassifyFailure).
    pub fn classify<C2>(self, classify: C2) -> AdaptiveLimitLayer<C2> {
        AdaptiveLimitLayer {
            shared: self.shared,
            classify,
        }
    }

    /// A handle on the limit shared by the services this layer makes.
    pub fn handle(&self) -> AdaptiveLimitHandle {
        AdaptiveLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Default for AdaptiveLimitLayer {
    /// [`AdaptiveLimitConfig::default`].
    fn default() -> Self {
        AdaptiveLimitLayer::new(AdaptiveLimitConfig::default())
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit::with_shared(inner, self.shared.clone(), self.classify.clone())
    }
}

impl<C> fmt::Debug for AdaptiveLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("limit", &self.shared.limit())
            .finish_non_exhaustive()
    }
}
