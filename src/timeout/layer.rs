use std::time::Duration;

use tower::Layer;

use super::{AttemptTimeout, Deadline};

/// Wraps a `Service<Call>` in [`Deadline`]: the call's deadline bounds it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer {
    _priv: (),
}

impl DeadlineLayer {
    /// The layer.
    pub fn new() -> Self {
        DeadlineLayer { _priv: () }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline::new(inner)
    }
}

/// Wraps a `Service<Call>` in [`AttemptTimeout`] with one timeout.
#[derive(Clone, Copy, Debug)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
}

impl AttemptTimeoutLayer {
    /// Bounds each attempt by `timeout` (and by its call's deadline).
    pub fn new(timeout: Duration) -> Self {
        AttemptTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout::new(inner, self.timeout)
    }
}
