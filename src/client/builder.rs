//! The builder of [`QualityClient`], which also hands out the stack's layers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::retry::{Retry, RetryLayer};
use tower::timeout::{Timeout, TimeoutLayer};
use tower::util::{Either, MapErr};

use super::replicas::{self, Hedging, DEFAULT_REPLICA_EJECTION};
use super::{attempt_error, total_error, ErrFn, QualityClient, Settings};
use tower::Layer;

use crate::breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use crate::check::{PreparedCheck, QualityCheck, QualityCheckBuilder};
use crate::error::Error;
use crate::retry::{Backoff, RetryBudget, RetryPolicy};

/// The default per-attempt timeout: 10 s. A coordinator runs builds, tests
/// and an AI review, so a verdict legitimately takes seconds; an attempt
/// slower than this is treated as lost and retried.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default overall deadline: 30 s, for all attempts and the waits
/// between them, so three slow attempts fit but a caller never waits longer.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// The default most calls in flight to the coordinator, across all clones:
/// 64, enough for a busy orchestrator, few enough not to swamp a coordinator
/// that runs a build per call.
pub const DEFAULT_CONCURRENCY_LIMIT: usize = 64;

/// The queue in front of the balancer or hedge when the client has no
/// concurrency limit to size it.
const DEFAULT_QUEUE: usize = 1024;

/// Builds a [`QualityClient`]; every option has a documented default and is
/// validated by [`build`](ClientBuilder::build).
///
/// It also hands out each layer of the default stack, so the same stack can
/// be put together with `tower::ServiceBuilder`, with any piece replaced:
///
/// ```
/// use quality_gate::{Error, QualityClient};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), Error> {
/// let b = QualityClient::builder("http://127.0.0.1:8000").attempts(2);
/// let service = ServiceBuilder::new()
///     .layer(b.concurrency_limit_layer())
///     .layer(b.total_timeout_layer())
///     .layer(b.retry_layer()) // or `.retry(your_policy)`
///     .layer(b.attempt_timeout_layer())
///     .map_err(|e: quality_gate::BoxError| Error::from(e)) // back to the typed error
///     .service(b.check_service()?);
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    check: QualityCheckBuilder,
    policy: RetryPolicy,
    attempt_timeout: Duration,
    total_timeout: Duration,
    concurrency_limit: Option<usize>,
    circuit_breaker: Option<CircuitBreakerConfig>,
    replica_urls: Vec<String>,
    replica_ejection: CircuitBreakerConfig,
    hedging: Option<Hedging>,
}

impl ClientBuilder {
    pub(crate) fn new(base_url: impl Into<String>) -> Self {
        ClientBuilder {
            check: QualityCheck::builder(base_url),
            policy: RetryPolicy::new().budget(RetryBudget::default()),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            concurrency_limit: Some(DEFAULT_CONCURRENCY_LIMIT),
            circuit_breaker: None,
            replica_urls: Vec::new(),
            replica_ejection: DEFAULT_REPLICA_EJECTION,
            hedging: None,
        }
    }

    // ----- the call -----

    /// Replaces the options of the underlying [`QualityCheck`] (URL, body
    /// cap, credentials, headers, HTTP/2); see [`QualityCheckBuilder`].
    ///
    /// ```
    /// use quality_gate::QualityClient;
    ///
    /// let client = QualityClient::builder("http://127.0.0.1:8000")
    ///     .check(|c| c.api_key("k-123").header("x-team", "infra").body_limit(64 * 1024))
    ///     .build()
    ///     .unwrap();
    /// assert!(!format!("{client:?}").contains("k-123"));
    /// ```
    pub fn check(mut self, f: impl FnOnce(QualityCheckBuilder) -> QualityCheckBuilder) -> Self {
        self.check = f(self.check);
        self
    }

    /// Sends `Authorization: Bearer {token}` (never printed); see
    /// [`QualityCheckBuilder::bearer_token`].
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.check(|c| c.bearer_token(token))
    }

    /// Sends `X-API-Key: {key}` (never printed); see
    /// [`QualityCheckBuilder::api_key`].
    pub fn api_key(self, key: impl Into<String>) -> Self {
        self.check(|c| c.api_key(key))
    }

    /// The largest response body read (default 1 MiB); see
    /// [`QualityCheckBuilder::body_limit`].
    pub fn body_limit(self, bytes: usize) -> Self {
        self.check(|c| c.body_limit(bytes))
    }

    // ----- retries -----

    /// The most attempts per call, the first included (default 3; 1 turns
    /// retries off).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.policy = self.policy.attempts(attempts);
        self
    }

    /// The waits between attempts (default 100 ms, ×2, at most 2 s, full
    /// jitter).
    pub fn backoff(mut self, backoff: impl Backoff) -> Self {
        self.policy = self.policy.backoff(backoff);
        self
    }

    /// The longest `Retry-After` honoured (default 10 s).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.policy = self.policy.max_retry_after(max);
        self
    }

    /// The retry budget shared by all clones (default
    /// [`RetryBudget::default`]: 20% of calls plus 10 a second, so an outage
    /// raises the load on the coordinator by about 1.2×, not 3×). `None`
    /// turns it off.
    pub fn retry_budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.policy = match budget {
            Some(budget) => self.policy.budget(budget),
            None => self.policy.no_budget(),
        };
        self
    }

    // ----- time and concurrency -----

    /// The most one attempt may take, body included (default 10 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The most a whole call may take, attempts and waits included
    /// (default 30 s).
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = timeout;
        self
    }

    /// The most calls in flight at once across all clones (default 64);
    /// `None` for no limit.
    pub fn concurrency_limit(mut self, limit: Option<usize>) -> Self {
        self.concurrency_limit = limit;
        self
    }

    /// A circuit breaker around each attempt, shared by all clones (default
    /// off). With `Some(CircuitBreakerConfig::default())`, 5 consecutive
    /// failed attempts make every call fail at once with
    /// [`Error::is_circuit_open`] for 30 s, then one probe decides.
    ///
    /// Off by default because the client already fails closed and bounds
    /// its load on the coordinator with the retry budget, while a breaker
    /// trades availability for that: a coordinator restart of two seconds
    /// becomes thirty seconds of refused work. Turn it on where a failing
    /// coordinator is slow to fail (a host that drops packets makes every
    /// attempt wait for its timeout) or must be shielded from any traffic
    /// while it recovers.
    pub fn circuit_breaker(mut self, config: Option<CircuitBreakerConfig>) -> Self {
        self.circuit_breaker = config;
        self
    }

    // ----- replicas -----

    /// Balances attempts over several coordinator replicas with tower's
    /// power-of-two-choices balancer (least pending requests), in place of
    /// the single base URL. Every replica gets the same options.
    ///
    /// A replica that fails 3 attempts in a row (connection refused, 5xx,
    /// its attempt timeout…) is ejected for 10 s
    /// ([`replica_ejection`](Self::replica_ejection)), so a dead replica is
    /// avoided while the healthy ones serve; when every replica is ejected,
    /// calls fail at once with [`Error::is_circuit_open`]. Retries of a call
    /// are balanced too, so they usually reach another replica.
    ///
    /// The balancer runs behind a `tower::buffer::Buffer`, whose worker is a
    /// task: [`build`](Self::build) must then run inside a Tokio runtime.
    ///
    /// ```
    /// use quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), quality_gate::Error> {
    /// let client = QualityClient::builder("http://10.0.0.1:8000")
    ///     .base_urls(["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"])
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn base_urls<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.replica_urls = urls.into_iter().map(Into::into).collect();
        if let Some(first) = self.replica_urls.first() {
            self.check = self.check.base_url(first.clone());
        }
        self
    }

    /// When a replica is taken out of the balancer, and for how long
    /// (default [`DEFAULT_REPLICA_EJECTION`]: 3 failures, 10 s).
    pub fn replica_ejection(mut self, config: CircuitBreakerConfig) -> Self {
        self.replica_ejection = config;
        self
    }

    /// Sends a second copy of an attempt that is slower than most (default
    /// off); see [`Hedging`] for when that is worth its load. Like
    /// balancing, it needs a Tokio runtime at build time.
    pub fn hedging(mut self, hedging: Option<Hedging>) -> Self {
        self.hedging = hedging;
        self
    }

    // ----- the layers, for a hand-built stack -----

    /// The configured retry policy, its deadline set to the total timeout.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.policy.clone().deadline(Some(self.total_timeout))
    }

    /// tower's retry layer with [`retry_policy`](Self::retry_policy).
    pub fn retry_layer(&self) -> RetryLayer<RetryPolicy> {
        RetryLayer::new(self.retry_policy())
    }

    /// tower's timeout layer with the per-attempt timeout.
    pub fn attempt_timeout_layer(&self) -> TimeoutLayer {
        TimeoutLayer::new(self.attempt_timeout)
    }

    /// tower's timeout layer with the overall deadline.
    pub fn total_timeout_layer(&self) -> TimeoutLayer {
        TimeoutLayer::new(self.total_timeout)
    }

    /// tower's concurrency-limit layer with one semaphore shared by every
    /// service it wraps (a new one per call of this method).
    pub fn concurrency_limit_layer(&self) -> GlobalConcurrencyLimitLayer {
        GlobalConcurrencyLimitLayer::new(self.permits())
    }

    /// The circuit-breaker layer with the configured settings (or the
    /// defaults if none are set), with a new state.
    pub fn circuit_breaker_layer(&self) -> CircuitBreakerLayer {
        CircuitBreakerLayer::new(self.circuit_breaker.unwrap_or_default())
    }

    /// The bare one-attempt service.
    pub fn check_service(&self) -> Result<QualityCheck, Error> {
        self.check.clone().build()
    }

    /// Validates the options and builds the client.
    pub fn build(self) -> Result<QualityClient, Error> {
        if self.attempt_timeout.is_zero() || self.total_timeout.is_zero() {
            return Err(Error::config("timeouts must be longer than zero"));
        }
        if self.concurrency_limit == Some(0) {
            return Err(Error::config(
                "a concurrency limit of 0 would block every call; use None for no limit",
            ));
        }
        // One check per replica (the first is also the client's own, for
        // health and request ids), or the one base URL's.
        let checks = if self.replica_urls.len() > 1 {
            self.replica_urls
                .iter()
                .map(|url| self.check.clone().base_url(url.clone()).build())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![self.check_service()?]
        };
        let check = checks[0].clone();
        let policy = self.retry_policy();
        let target = if checks.len() == 1 && self.hedging.is_none() {
            Either::Left(PreparedCheck(check.clone()))
        } else {
            Either::Right(replicas::routed(
                checks,
                self.attempt_timeout,
                self.replica_ejection,
                self.hedging,
                self.concurrency_limit.unwrap_or(DEFAULT_QUEUE),
            )?)
        };
        let timed = MapErr::new(
            Timeout::new(target, self.attempt_timeout),
            attempt_error as ErrFn,
        );
        let breaker = self.circuit_breaker.map(CircuitBreakerLayer::new);
        let attempt = match &breaker {
            Some(layer) => Either::Left(layer.layer(timed)),
            None => Either::Right(timed),
        };
        let total = MapErr::new(
            Timeout::new(Retry::new(policy.clone(), attempt), self.total_timeout),
            total_error as ErrFn,
        );
        let semaphore = Arc::new(Semaphore::new(self.permits()));
        let settings = Settings {
            check,
            policy,
            attempt_timeout: self.attempt_timeout,
            total_timeout: self.total_timeout,
            concurrency_limit: self.concurrency_limit,
            breaker,
            replicas: self
                .replica_urls
                .iter()
                .filter_map(|u| u.parse().ok())
                .collect(),
            hedging: self.hedging,
        };
        Ok(QualityClient::from_stack(
            ConcurrencyLimit::with_semaphore(total, semaphore),
            Arc::new(settings),
        ))
    }

    fn permits(&self) -> usize {
        self.concurrency_limit
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS)
    }
}
