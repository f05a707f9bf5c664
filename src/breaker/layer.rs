use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Shared};
use crate::classify::RetryableFailures;

/// Wraps services in a [`CircuitBreaker`]; every service this layer makes
/// shares one breaker state, as do their clones.
///
/// Above a tower timeout (whose error is a `BoxError`) it works the same:
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::breaker::CircuitBreakerLayer;
/// use tower_quality_gate::QualityCheck;
///
/// # fn main() -> Result<(), tower_quality_gate::Error> {
/// let service = tower::ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::default())
///     .timeout(Duration::from_secs(5))
///     .service(QualityCheck::new("http://127.0.0.1:8000")?);
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = RetryableFailures> {
    shared: Arc<Shared>,
    classify: C,
}

impl CircuitBreakerLayer {
    /// A layer with these settings, the default classifier and a new,
    /// closed state.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Shared::new(config)),
            classify: RetryableFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Counts as failures what `classify` says (default
    /// [`RetryableFailures`]); see [`ClassifyFailure`](crate::classify::ClassifyFailure).
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            shared: self.shared,
            classify,
        }
    }

    /// The state shared by the services this layer made.
    pub fn state(&self) -> CircuitState {
        self.shared.state()
    }
}

impl Default for CircuitBreakerLayer {
    /// 5 consecutive failures open the circuit for 30 s.
    fn default() -> Self {
        CircuitBreakerLayer::new(CircuitBreakerConfig::default())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> CircuitBreaker<S, C> {
        CircuitBreaker::with_shared(inner, self.shared.clone(), self.classify.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}
