use std::time::Duration;

use tower::Layer;

use super::{Identify, Settings};

/// Wraps a `Service<Call>` in [`Identify`]: each [`QualityRequest`] gets
/// its [`Call`](super::Call) once, outside any retry.
///
/// The call's request id is the caller's
/// ([`QualityRequest::request_id`](crate::QualityRequest::request_id)) or a
/// new one (`qg-{process}-{counter}`, unique across processes); its deadline
/// is the earliest of the caller's deadline, the caller's timeout and this
/// layer's [`timeout`](Self::timeout) (default none).
///
/// [`QualityRequest`]: crate::QualityRequest
#[derive(Clone, Debug, Default)]
pub struct IdentifyLayer {
    settings: Settings,
}

impl IdentifyLayer {
    /// A layer that generates request ids and sets no deadline of its own.
    pub fn new() -> Self {
        IdentifyLayer::default()
    }

    /// The longest any call may take, counted from when it reaches this
    /// layer (default none). A caller's own earlier deadline still wins.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.timeout = timeout.into();
        self
    }

    /// Whether to generate a request id for a call that brings none
    /// (default true).
    pub fn generate_ids(mut self, enabled: bool) -> Self {
        self.settings.generate_ids = enabled;
        self
    }
}

impl<S> Layer<S> for IdentifyLayer {
    type Service = Identify<S>;

    fn layer(&self, inner: S) -> Identify<S> {
        Identify::new(inner, self.settings)
    }
}
