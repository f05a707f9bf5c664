//! The builder of [`QualityClient`], which also hands out the stack's layers.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use tokio::sync::Semaphore;
use tower::discover::Change;
use tower::retry::RetryLayer;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use super::discovery::{self, Discovered};
use super::replicas::{self, Hedging, Routed, DEFAULT_REPLICA_EJECTION};
use super::{AttemptTarget, QualityClient, Settings};

use crate::breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use crate::call::{Call, IdentifyLayer};
use crate::check::{QualityCheck, QualityCheckBuilder};
use crate::discover::Resolve;
use crate::error::{BoxError, Error};
use crate::limit::{AdaptiveLimit, AdaptiveLimitConfig, CallLimitLayer};
use crate::retry::{RetryBackoff, RetryBudget, RetryPolicy};
use crate::timeout::{AttemptTimeout, AttemptTimeoutLayer, DeadlineLayer};
use crate::wire::QualityResponse;

/// 10 s: a coordinator runs builds, tests and an AI review, so a verdict
/// legitimately takes seconds; an attempt slower than this is treated as lost.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// 30 s for all attempts and the waits between them: three slow attempts
/// fit, and a caller never waits longer.
const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// 64 calls in flight: enough for a busy orchestrator, few enough not to
/// swamp a coordinator that runs a build per call.
const DEFAULT_CONCURRENCY_LIMIT: usize = 64;

/// The queue in front of the balancer or hedge when the client has no
/// concurrency limit to size it.
const DEFAULT_QUEUE: usize = 1024;

/// Builds a [`QualityClient`]; every option has a documented default and is
/// validated by [`build`](ClientBuilder::build).
///
/// It also hands out each layer of the stack, and [`build`](Self::build)
/// is made of exactly those layers, so a stack put together with
/// `tower::ServiceBuilder`, with any piece replaced, keeps everything the
/// built client does (request ids shared by retries, attempt counts, the
/// call's span and deadline):
///
/// ```
/// use tower_quality_gate::{Error, QualityClient};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), Error> {
/// let b = QualityClient::builder("http://127.0.0.1:8000").attempts(2);
/// let service = ServiceBuilder::new()
///     .layer(b.identify_layer()) // the call's id, body, deadline, span: outside any retry
///     .layer(b.concurrency_limit_layer())
///     .layer(b.deadline_layer())
///     .layer(b.retry_layer()) // or `.retry(your_policy)`: any Policy<Call, _, _>
///     .option_layer(b.circuit_breaker_layer())
///     .layer(b.attempt_timeout_layer())
///     .service(b.target_service()?);
/// # let _ = service; Ok(()) }
/// ```
///
/// Builders that are clones of one another share one concurrency limit:
/// the layers one builder hands out and the client it builds count against
/// the same slots.
#[derive(Clone)]
pub struct ClientBuilder {
    pub(super) check: QualityCheckBuilder,
    pub(super) policy: RetryPolicy,
    pub(super) attempt_timeout: Duration,
    pub(super) total_timeout: Duration,
    pub(super) concurrency_limit: Option<usize>,
    pub(super) semaphore: Arc<Semaphore>,
    pub(super) circuit_breaker: Option<CircuitBreakerConfig>,
    pub(super) replica_urls: Vec<String>,
    pub(super) replica_ejection: CircuitBreakerConfig,
    pub(super) hedging: Option<Hedging>,
    pub(super) adaptive: Option<AdaptiveLimitConfig>,
    pub(super) discovery: Option<Discovered>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Replica URLs as they may be shown: user info is never printed.
        let replicas: Vec<String> = self
            .replica_urls
            .iter()
            .map(|u| crate::check::config::shown(u))
            .collect();
        f.debug_struct("ClientBuilder")
            .field("check", &self.check)
            .field("policy", &self.policy)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("replicas", &replicas)
            .field("replica_ejection", &self.replica_ejection)
            .field("hedging", &self.hedging)
            .finish()
    }
}

impl ClientBuilder {
    pub(crate) fn new(base_url: impl Into<String>) -> Self {
        ClientBuilder {
            check: QualityCheck::builder(base_url),
            policy: RetryPolicy::new().budget(RetryBudget::default()),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            concurrency_limit: Some(DEFAULT_CONCURRENCY_LIMIT),
            semaphore: Arc::new(Semaphore::new(DEFAULT_CONCURRENCY_LIMIT)),
            circuit_breaker: None,
            replica_urls: Vec::new(),
            replica_ejection: DEFAULT_REPLICA_EJECTION,
            hedging: None,
            adaptive: None,
            discovery: None,
        }
    }

    // ----- HTTP: each attempt -----

    /// Sets any option of the HTTP side of each attempt (URL, body cap,
    /// credentials, headers, HTTP/2, connection pool, TLS): the
    /// [`QualityCheckBuilder`] is their one home. The common ones have
    /// shortcuts here ([`bearer_token`](Self::bearer_token),
    /// [`api_key`](Self::api_key), [`header`](Self::header),
    /// [`body_limit`](Self::body_limit), [`connect_timeout`](Self::connect_timeout),
    /// [`http2`](Self::http2)).
    ///
    /// ```
    /// use tower_quality_gate::QualityClient;
    ///
    /// let client = QualityClient::builder("http://127.0.0.1:8000")
    ///     .http(|h| h.api_key("k-123").header("x-team", "infra").pool_max_idle_per_host(8))
    ///     .build()
    ///     .unwrap();
    /// assert!(!format!("{client:?}").contains("k-123"));
    /// ```
    pub fn http(mut self, f: impl FnOnce(QualityCheckBuilder) -> QualityCheckBuilder) -> Self {
        self.check = f(self.check);
        self
    }

    /// Adds a static header sent on every attempt; see
    /// [`QualityCheckBuilder::header`].
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.http(|h| h.header(name, value))
    }

    /// How long to wait for a connection (default 3.1 s); see
    /// [`QualityCheckBuilder::connect_timeout`].
    pub fn connect_timeout(self, timeout: impl Into<Option<Duration>>) -> Self {
        let timeout = timeout.into();
        self.http(|h| h.connect_timeout(timeout))
    }

    /// Speaks HTTP/2 (default off); see [`QualityCheckBuilder::http2`].
    pub fn http2(self, enabled: bool) -> Self {
        self.http(|h| h.http2(enabled))
    }

    /// Sends `Authorization: Bearer {token}` (never printed); see
    /// [`QualityCheckBuilder::bearer_token`].
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.http(|h| h.bearer_token(token))
    }

    /// Sends `X-API-Key: {key}` (never printed); see
    /// [`QualityCheckBuilder::api_key`].
    pub fn api_key(self, key: impl Into<String>) -> Self {
        self.http(|h| h.api_key(key))
    }

    /// The largest response body read (default 1 MiB); see
    /// [`QualityCheckBuilder::body_limit`].
    pub fn body_limit(self, bytes: usize) -> Self {
        self.http(|h| h.body_limit(bytes))
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
    pub fn backoff(mut self, backoff: impl RetryBackoff) -> Self {
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
    pub fn retry_budget(mut self, budget: impl Into<Option<RetryBudget>>) -> Self {
        self.policy = self.policy.budget(budget);
        self
    }

    /// Replaces the whole retry policy (attempts, backoff, `Retry-After`
    /// cap, budget) with `policy`.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
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

    /// The most calls in flight at once across all clones (default 64),
    /// hedged copies included: the coordinator never sees more; `None` for
    /// no limit.
    pub fn concurrency_limit(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.concurrency_limit = limit.into();
        self.semaphore = Arc::new(Semaphore::new(self.permits()));
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
    pub fn circuit_breaker(mut self, config: impl Into<Option<CircuitBreakerConfig>>) -> Self {
        self.circuit_breaker = config.into();
        self
    }

    // ----- replicas -----

    /// Balances attempts over several coordinator replicas with tower's
    /// power-of-two-choices balancer (least pending requests), in place of
    /// the single base URL. Every replica gets the same options.
    ///
    /// A replica that fails 3 attempts in a row (connection refused, 5xx,
    /// its attempt timeout…) is ejected for 1 s
    /// ([`replica_ejection`](Self::replica_ejection)), so a dead replica is
    /// avoided while the healthy ones serve; when every replica is ejected,
    /// attempts go to them anyway (Envoy's panic mode): they fail at once
    /// with the replicas' own error (`Connect` for a refused connection),
    /// and the first replica back answers the next call. Retries of a call
    /// are balanced too, so they usually reach another replica.
    ///
    /// The balancer runs behind a `tower::buffer::Buffer`, whose worker is a
    /// task: [`build`](Self::build) must then run inside a Tokio runtime.
    ///
    /// ```
    /// use tower_quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
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
    /// (default 3 consecutive failed attempts, then 1 s out, Linkerd's
    /// least failure-accrual penalty: a replica that is back takes load
    /// within a second, a dead one costs one probe a second).
    pub fn replica_ejection(mut self, config: CircuitBreakerConfig) -> Self {
        self.replica_ejection = config;
        self
    }

    /// Sends a second copy of an attempt that is slower than most (default
    /// off); see [`Hedging`] for when that is worth its load. Like
    /// balancing, it needs a Tokio runtime at build time.
    pub fn hedging(mut self, hedging: impl Into<Option<Hedging>>) -> Self {
        self.hedging = hedging.into();
        self
    }

    // ----- many coordinators: adaptive limits and discovery -----

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
    /// spends its first 20 calls at concurrency 3 measuring it. Turn it on
    /// for a fleet of orchestrators sharing coordinators: it is what keeps
    /// their shares fair and the coordinators' queues short.
    ///
    /// ```
    /// use tower_quality_gate::limit::AdaptiveLimitConfig;
    /// use tower_quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
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

    /// Balances attempts over the replicas the base URL's host resolves to,
    /// resolving it again every `interval` (`None`: 5 s, as Envoy's
    /// `STRICT_DNS` clusters, so a replica that joins takes load within
    /// about 5 s while DNS sees twelve lookups a minute per client; at
    /// least 10 ms) and soon after a replica fails to connect (at most once every
    /// 5 s), with `resolver` ([`SystemResolver`](crate::discover::SystemResolver)
    /// for the system's DNS). See [`discover`](crate::discover).
    ///
    /// Each replica connects to its own address but keeps the host name
    /// for the `Host` header and TLS (SNI and certificate checks). Replicas
    /// that appear are added to tower's power-of-two-choices balancer, those
    /// that disappear are removed once their calls in flight are over, and
    /// those that stay keep their ejection state and adaptive limit. A
    /// failed or empty resolution changes nothing.
    ///
    /// Before the first resolution answers there is no replica, and a call
    /// waits for one (within its attempt timeout). Once there are replicas
    /// they fail like [`base_urls`](Self::base_urls): when every one is
    /// ejected, attempts go to them anyway and fail at once with their own
    /// error (`Connect` for a refused connection), and the first replica
    /// back answers the next call. Needs a Tokio runtime at build time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quality_gate::discover::SystemResolver;
    /// use tower_quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let client = QualityClient::builder("http://coordinator.internal:8000")
    ///     .discover_replicas(SystemResolver, Duration::from_secs(10))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn discover_replicas(
        mut self,
        resolver: impl Resolve,
        interval: impl Into<Option<Duration>>,
    ) -> Self {
        self.discovery = Some(discovery::resolver(resolver, interval.into()));
        self
    }

    /// Balances attempts over the replicas a stream of base URLs inserts and
    /// removes (a `tower::discover::Discover` stream of
    /// `Change<K, String>`), each built with this builder's HTTP options.
    /// An insert whose URL is invalid and an error of the stream are
    /// skipped (and logged): the replicas already there keep serving. The
    /// stream serves one built client.
    ///
    /// ```
    /// use tower_quality_gate::QualityClient;
    /// use tokio::sync::mpsc;
    /// use tower::discover::Change;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let (tx, rx) = mpsc::unbounded_channel::<Result<Change<u32, String>, std::io::Error>>();
    /// let stream = futures_like::Receiver(rx);
    /// let client = QualityClient::builder("http://127.0.0.1:8000")
    ///     .discover_base_urls(stream)
    ///     .build()?;
    /// tx.send(Ok(Change::Insert(1, "http://127.0.0.1:8001".into()))).ok();
    /// # let _ = client; Ok(()) }
    /// # mod futures_like {
    /// #     pub struct Receiver<T>(pub tokio::sync::mpsc::UnboundedReceiver<T>);
    /// #     impl<T> futures_core::Stream for Receiver<T> {
    /// #         type Item = T;
    /// #         fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
    /// #             self.0.poll_recv(cx)
    /// #         }
    /// #     }
    /// # }
    /// ```
    pub fn discover_base_urls<D, K, E>(mut self, stream: D) -> Self
    where
        D: Stream<Item = Result<Change<K, String>, E>> + Send + 'static,
        K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
        E: Into<BoxError>,
    {
        self.discovery = Some(discovery::base_urls(stream));
        self
    }

    /// Balances attempts over the services a stream inserts and removes (a
    /// `tower::discover::Discover` stream of `Change<K, S>`), each wrapped
    /// as a replica is: its attempt timeout, adaptive limit if set,
    /// ejection and load count. An error of the stream is skipped (and
    /// logged). The stream serves one built client.
    pub fn discover_services<D, K, S, E>(mut self, stream: D) -> Self
    where
        D: Stream<Item = Result<Change<K, S>, E>> + Send + 'static,
        K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
        S: Service<Call, Response = QualityResponse, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError>,
    {
        self.discovery = Some(discovery::services(stream));
        self
    }

    // ----- the layers, for a hand-built stack -----

    /// The layer that gives each call its identity ([`IdentifyLayer`]):
    /// request id, body encoded once, deadline (the total timeout, or the
    /// caller's earlier one), span. Outermost.
    pub fn identify_layer(&self) -> IdentifyLayer {
        IdentifyLayer::new()
            .timeout(self.total_timeout)
            .generate_ids(self.check.sends_request_ids())
    }

    /// The concurrency-limit layer ([`CallLimitLayer`]) over this
    /// builder's one set of slots (the same for every call of this method,
    /// and for the built client). Below [`identify_layer`](Self::identify_layer):
    /// a call waits for its slot within its deadline.
    pub fn concurrency_limit_layer(&self) -> CallLimitLayer {
        CallLimitLayer::with_semaphore(self.semaphore.clone())
    }

    /// The layer that fails a call when its deadline passes ([`DeadlineLayer`]).
    pub fn deadline_layer(&self) -> DeadlineLayer {
        DeadlineLayer::new()
    }

    /// tower's retry layer with the configured [`RetryPolicy`].
    pub fn retry_layer(&self) -> RetryLayer<RetryPolicy> {
        RetryLayer::new(self.policy.clone())
    }

    /// The circuit-breaker layer with a new state, if one is configured.
    pub fn circuit_breaker_layer(&self) -> Option<CircuitBreakerLayer> {
        self.circuit_breaker.map(CircuitBreakerLayer::new)
    }

    /// The per-attempt timeout layer ([`AttemptTimeoutLayer`]).
    pub fn attempt_timeout_layer(&self) -> AttemptTimeoutLayer {
        AttemptTimeoutLayer::new(self.attempt_timeout)
    }

    /// The bare one-attempt service, for the first (or only) base URL.
    pub fn check_service(&self) -> Result<QualityCheck, Error> {
        self.check.clone().build()
    }

    /// Where attempts go: the one [`QualityCheck`], or, with several base
    /// URLs, discovered replicas or hedging, the balanced and/or hedged
    /// replicas (which need a Tokio runtime), each behind its adaptive
    /// limit when one is set.
    pub fn target_service(&self) -> Result<AttemptTarget, Error> {
        self.validate()?;
        if let Some(target) = self.discovered_target()? {
            return Ok(AttemptTarget::routed(target));
        }
        if self.replica_urls.len() <= 1 && self.hedging.is_none() {
            let check = self.check_service()?;
            return Ok(match self.adaptive {
                Some(config) => {
                    // The limit sees its attempts' timeouts as overload: the
                    // attempt timeout runs inside it (the client's own still
                    // bounds the wait).
                    let timed = AttemptTimeout::new(check.clone(), self.attempt_timeout);
                    let limited = BoxCloneSyncService::new(AdaptiveLimit::new(timed, config));
                    AttemptTarget::limited(limited, check)
                }
                None => AttemptTarget::one(check),
            });
        }
        let checks = if self.replica_urls.len() > 1 {
            self.replica_urls
                .iter()
                .map(|url| self.check.clone().base_url(url.clone()).build())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![self.check_service()?]
        };
        Ok(AttemptTarget::routed(replicas::routed(
            checks,
            self.routing(),
        )?))
    }

    /// Validates the options and builds the client, from exactly the layers
    /// above.
    pub fn build(self) -> Result<QualityClient, Error> {
        let target = self.target_service()?;
        // Health checks borrow the client's own pool when it has one check.
        let check = match target.check() {
            Some(check) => check.clone(),
            None => discovery::health_check(self.discovery.as_ref(), &self.check)?,
        };
        let breaker = self.circuit_breaker_layer();
        let stack = ServiceBuilder::new()
            .layer(self.identify_layer())
            .layer(self.concurrency_limit_layer())
            .layer(self.deadline_layer())
            .layer(self.retry_layer())
            .option_layer(breaker.clone())
            .layer(self.attempt_timeout_layer())
            .service(target);
        let settings = Settings {
            config: self,
            check,
            breaker,
        };
        Ok(QualityClient::from_stack(stack, Arc::new(settings)))
    }

    /// The discovered replicas behind the balancer, when discovery is set.
    fn discovered_target(&self) -> Result<Option<Routed>, Error> {
        let Some(discovered) = &self.discovery else {
            return Ok(None);
        };
        discovery::target(discovered, &self.check, self.routing()).map(Some)
    }

    /// How attempts are routed over replicas.
    pub(super) fn routing(&self) -> replicas::Routing {
        replicas::Routing {
            attempt_timeout: self.attempt_timeout,
            ejection: self.replica_ejection,
            hedging: self.hedging,
            queue: self.concurrency_limit.unwrap_or(DEFAULT_QUEUE),
            slots: self.semaphore.clone(),
            max_attempts: self.policy.max_attempts(),
            adaptive: self.adaptive,
        }
    }

    /// Every setting checked, each refusal naming it: nothing is clamped
    /// silently, and no value, however absurd, panics later.
    fn validate(&self) -> Result<(), Error> {
        let max = Semaphore::MAX_PERMITS;
        let refuse = |setting: &str, why: String| -> Result<(), Error> {
            Err(Error::config(format!("{setting}: {why}")))
        };
        if self.attempt_timeout.is_zero() {
            return refuse("attempt_timeout", "must be longer than zero".into());
        }
        if self.total_timeout.is_zero() {
            return refuse("total_timeout", "must be longer than zero".into());
        }
        match self.concurrency_limit {
            Some(0) => {
                return refuse(
                    "concurrency_limit",
                    "0 would block every call; use None for no limit".into(),
                )
            }
            Some(n) if n > max => {
                return refuse("concurrency_limit", format!("{n} is more than {max}"));
            }
            _ => {}
        }
        if self.policy.max_attempts() == 0 {
            return refuse(
                "attempts",
                "must be at least 1 (1 turns retries off)".into(),
            );
        }
        for (setting, breaker) in [
            ("circuit_breaker", self.circuit_breaker),
            ("replica_ejection", Some(self.replica_ejection)),
        ] {
            if breaker.is_some_and(|b| b.failure_threshold == 0) {
                return refuse(setting, "the failure threshold must be at least 1".into());
            }
        }
        if let Some(h) = &self.hedging {
            if !(h.percentile > 0.0 && h.percentile < 1.0) {
                return refuse(
                    "hedging",
                    format!("percentile {} is outside (0, 1)", h.percentile),
                );
            }
            if h.period < Duration::from_millis(1) || h.period > Duration::from_secs(86_400) {
                return refuse(
                    "hedging",
                    format!("period {:?} is outside 1 ms to 1 day", h.period),
                );
            }
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate()?;
            let largest = adaptive
                .max_limit
                .max(adaptive.initial_limit)
                .max(adaptive.probe_concurrency);
            if largest > max {
                return refuse(
                    "adaptive_concurrency",
                    format!("a limit of {largest} is more than {max}"),
                );
            }
        }
        Ok(())
    }

    fn permits(&self) -> usize {
        self.concurrency_limit
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use crate::breaker::CircuitBreakerConfig;
    use crate::limit::AdaptiveLimitConfig;
    use crate::{Hedging, QualityClient};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// No numeric setting, however absurd, makes `build()` panic: it
        /// builds, or it is a `Config` error naming the setting.
        #[test]
        fn build_never_panics(
            limit in prop_oneof![Just(None), Just(Some(0)), Just(Some(usize::MAX)), any::<usize>().prop_map(Some)],
            attempts in prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
            attempt_ms in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
            total_ms in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
            threshold in prop_oneof![Just(0u32), any::<u32>()],
            percentile in prop_oneof![Just(f32::NAN), Just(0.0f32), Just(1.0f32), any::<f32>()],
            period_ms in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
            adaptive in prop_oneof![Just(usize::MAX), Just(0usize), any::<usize>()],
            replicas in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _entered = runtime.enter();
            let mut b = QualityClient::builder("http://127.0.0.1:1")
                .concurrency_limit(limit)
                .attempts(attempts)
                .attempt_timeout(Duration::from_millis(attempt_ms))
                .total_timeout(Duration::from_millis(total_ms))
                .circuit_breaker(CircuitBreakerConfig::default().failure_threshold(threshold))
                .replica_ejection(CircuitBreakerConfig::default().failure_threshold(threshold))
                .hedging(Hedging::default().percentile(percentile).period(Duration::from_millis(period_ms)))
                .adaptive_concurrency(
                    AdaptiveLimitConfig::default().initial_limit(adaptive).max_limit(adaptive),
                );
            if replicas {
                b = b.base_urls(["http://127.0.0.1:1", "http://127.0.0.1:2"]);
            }
            if let Err(e) = b.build() {
                prop_assert!(e.is_config(), "{e:?}");
            }
        }
    }

    #[test]
    fn absurd_settings_are_config_errors_naming_the_setting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let b = || QualityClient::builder("http://127.0.0.1:1");
        let cases = [
            (
                "concurrency_limit",
                b().concurrency_limit(usize::MAX)
                    .base_urls(["http://a:1", "http://b:1"]),
            ),
            (
                "concurrency_limit",
                b().concurrency_limit(usize::MAX)
                    .hedging(Hedging::default()),
            ),
            ("attempts", b().attempts(0)),
            (
                "circuit_breaker",
                b().circuit_breaker(CircuitBreakerConfig::default().failure_threshold(0)),
            ),
            (
                "replica_ejection",
                b().replica_ejection(CircuitBreakerConfig::default().failure_threshold(0)),
            ),
            ("total_timeout", b().total_timeout(Duration::ZERO)),
            (
                "adaptive_concurrency",
                b().adaptive_concurrency(AdaptiveLimitConfig::default().max_limit(usize::MAX)),
            ),
        ];
        for (setting, builder) in cases {
            let err = builder.build().unwrap_err();
            assert!(err.is_config(), "{setting}: {err:?}");
            assert!(err.to_string().contains(setting), "{setting}: {err}");
        }
    }
}
