//! The builder's options for many coordinators: an adaptive concurrency
//! limit per coordinator, and replicas found by a resolver or a discovery
//! stream.

use tower::util::BoxCloneSyncService;

use super::builder::ClientBuilder;
use super::replicas::Routed;

use crate::error::Error;
use crate::limit::{AdaptiveLimit, AdaptiveLimitConfig};
use crate::timeout::AttemptTimeout;

impl ClientBuilder {
    /// Limits the attempts in flight to each coordinator with an adaptive
    /// limit (default off): it grows while the coordinator's latency stays
    /// near its no-load value and shrinks when latency grows or the
    /// coordinator answers 429, 503 or times out; see
    /// [`limit`](crate::limit) for the algorithm and
    /// [`AdaptiveLimitConfig`] for the defaults (start at 20, floor 1,
    /// ceiling 200, 10% latency tolerance).
    ///
    /// With several replicas, each has its own limit, inside the balancer,
    /// so a replica at its limit is not picked. Calls beyond the limit wait
    /// on the client side, in `poll_ready`, within their deadline.
    ///
    /// The fixed [`concurrency_limit`](Self::concurrency_limit) (default
    /// 64) still bounds the calls in flight, waits between retries
    /// included: raise it, or set it to `None`, to let the adaptive limit
    /// find a capacity above it.
    ///
    /// Off by default: a coordinator that runs builds of very different
    /// lengths has a latency that says little about its load, and the limit
    /// spends a few calls at concurrency 3 every minute measuring it.
    ///
    /// ```
    /// use quality_gate::limit::AdaptiveLimitConfig;
    /// use quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), quality_gate::Error> {
    /// let client = QualityClient::builder("http://127.0.0.1:8000")
    ///     .adaptive_concurrency(AdaptiveLimitConfig::default().max_limit(500))
    ///     .concurrency_limit(None)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn adaptive_concurrency(mut self, config: impl Into<Option<AdaptiveLimitConfig>>) -> Self {
        self.adaptive = config.into();
        self
    }

    /// The one coordinator behind its adaptive limit, when one is set.
    pub(super) fn adaptive_target(&self) -> Result<Option<Routed>, Error> {
        let Some(config) = self.adaptive else {
            return Ok(None);
        };
        // The limit sees its attempts' timeouts as overload: the attempt
        // timeout runs inside it (the client's own still bounds the wait).
        let timed = AttemptTimeout::new(self.check_service()?, self.attempt_timeout);
        Ok(Some(BoxCloneSyncService::new(AdaptiveLimit::new(
            timed, config,
        ))))
    }
}
