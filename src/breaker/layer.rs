use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Shared};

/// Wraps services in a [`CircuitBreaker`]; every service this layer makes
/// shares one breaker state, as do their clones.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A layer with these settings and a new, closed state.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Shared::new(config)),
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

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker::with_shared(inner, self.shared.clone())
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}
