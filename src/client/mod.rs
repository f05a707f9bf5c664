//! [`QualityClient`]: the check composed with tower's retry, timeout and
//! concurrency-limit layers.

mod builder;
mod discovery;
pub mod future;
mod replicas;
mod target;

use std::fmt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tower::retry::Retry;
use tower::util::Either;
use tower::Service;

pub use self::builder::ClientBuilder;
pub use self::replicas::Hedging;
pub use self::target::{AttemptTarget, AttemptTargetFuture};

use self::future::ResponseFuture;
use crate::breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitState};
use crate::call::Identify;
use crate::check::QualityCheck;
use crate::error::Error;
use crate::limit::CallLimit;
use crate::retry::RetryPolicy;
use crate::timeout::{AttemptTimeout, Deadline};
use crate::verdict::Verdict;
use crate::wire::{QualityRequest, QualityResponse};

/// One attempt, bounded by its timeout, behind the breaker when there is one.
type Attempt = Either<CircuitBreaker<AttemptTimeout<AttemptTarget>>, AttemptTimeout<AttemptTarget>>;
/// The whole stack, exactly as [`ClientBuilder`] hands out its layers.
pub(crate) type Stack = Identify<CallLimit<Deadline<Retry<RetryPolicy, Attempt>>>>;

/// The quality check as an orchestrator should make it: retried, bounded in
/// time, limited in concurrency. A `tower::Service` itself, `Clone + Send +
/// Sync`, and cheap to clone: clones share the connection pool, the
/// concurrency limit and the retry budget.
///
/// From the outside in, each call:
///
/// 1. gets its identity ([`Identify`]): a request id (the caller's, or a new
///    one) shared by every attempt, its body encoded once, its deadline (the
///    caller's, or 30 s by default) and its span;
/// 2. waits for one of the `concurrency_limit` slots (default 64) shared by
///    all clones ([`CallLimit`]), within its deadline;
/// 3. runs until its deadline at most ([`Deadline`]), waits included;
/// 4. is retried by [`RetryPolicy`] (default 3 attempts, 100 ms ×2 ≤ 2 s
///    full-jitter backoff, `Retry-After` ≤ 10 s, a 20%-of-calls budget),
///    never past the deadline;
/// 5. passes each attempt through the circuit breaker, if one is configured
///    (off by default), and bounds it by the per-attempt timeout (default
///    10 s, or less when the deadline is nearer);
/// 6. sends it to the coordinator, or balances it over several replicas
///    ([`ClientBuilder::base_urls`]), optionally hedged.
///
/// [`ClientBuilder`] hands out each of these layers; the client is made of
/// exactly them.
///
/// [`check`](QualityClient::check) does all of it in one `await`; called as
/// a plain `tower::Service`, the client does exactly the same, the deadline
/// covering the wait for a slot either way.
///
/// ```no_run
/// use tower_quality_gate::{QualityClient, QualityRequest};
///
/// # async fn run() -> Result<(), tower_quality_gate::Error> {
/// let client = QualityClient::from_env()?;
/// let verdict = client
///     .check(QualityRequest::new("task-1", "agent-1").files(["src/lib.rs"]))
///     .await?;
/// if verdict.approved {
///     println!("accepted by {}", verdict.gate);
/// }
/// # Ok(()) }
/// ```
pub struct QualityClient {
    inner: Stack,
    settings: Arc<Settings>,
    /// Whether `poll_ready` has made the stack ready for the next `call`.
    ready: bool,
}

// ===== impl QualityClient =====

impl QualityClient {
    /// A client for the coordinator at `base_url`, with every default.
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A builder for the coordinator at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// A client configured from the environment: see
    /// [`ClientBuilder::from_env`] (`COORDINATOR_URL` is required).
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env()?.build()
    }

    /// Checks one piece of work: waits for a slot, sends, retries as the
    /// policy allows, and returns the verdict or the last error, all within
    /// the overall deadline.
    ///
    /// A rejection (`approved: false`) is `Ok`; an `Err` is never an
    /// approval.
    ///
    /// The call's deadline (the request's own
    /// [`deadline`](QualityRequest::deadline) or
    /// [`timeout`](QualityRequest::timeout), or the client's total timeout,
    /// whichever ends first) also covers the wait for a slot.
    pub async fn check(&self, req: QualityRequest) -> Result<QualityResponse, Error> {
        // Made ready and called in one poll, as `Oneshot` does; the clone is
        // dropped before the call's future is awaited.
        let future = {
            let mut client = self.clone();
            match std::future::poll_fn(|cx| client.poll_ready(cx)).await {
                Ok(()) => client.call(req),
                Err(error) => ResponseFuture::failed(error),
            }
        };
        let result = future.await;
        // With one coordinator, every error is for it (an attempt's error
        // already names it; a call's timeout or a slot wait does not yet).
        match &self.settings.config.replica_urls[..] {
            [] | [_] => result.map_err(|e| e.for_coordinator(self.settings.check.base_url())),
            _ => result,
        }
    }

    /// [`check`](Self::check), as a fail-closed [`Verdict`]: only an
    /// approval by the coordinator is [`Verdict::Approved`].
    pub async fn verdict(&self, req: QualityRequest) -> Verdict {
        Verdict::from(self.check(req).await)
    }

    fn from_stack(inner: Stack, settings: Arc<Settings>) -> Self {
        QualityClient {
            inner,
            settings,
            ready: false,
        }
    }
}

impl Clone for QualityClient {
    fn clone(&self) -> Self {
        // A clone starts not ready, as tower's services do.
        QualityClient::from_stack(self.inner.clone(), self.settings.clone())
    }
}

impl Service<QualityRequest> for QualityClient {
    type Response = QualityResponse;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.inner.poll_ready(cx))?;
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    /// Calls the stack. Calling without a successful `poll_ready` first is a
    /// misuse that tower's concurrency limit would panic on; here it fails
    /// the call with an error of kind `NotReady` instead.
    fn call(&mut self, req: QualityRequest) -> ResponseFuture {
        if !std::mem::take(&mut self.ready) {
            return ResponseFuture::failed(Error::not_ready());
        }
        ResponseFuture::new(self.inner.call(req))
    }
}

impl fmt::Debug for QualityClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The builder's one `Debug`: every setting, no secret.
        f.debug_struct("QualityClient")
            .field("config", &self.settings.config)
            .field("circuit_state", &self.circuit_state())
            .finish()
    }
}

/// What a client keeps of its builder: the settings it was built with (for
/// `Debug`), its check (for health probes, sharing the attempts' pool when
/// there is one coordinator) and its breaker (for its state).
pub(crate) struct Settings {
    pub(crate) config: ClientBuilder,
    pub(crate) check: QualityCheck,
    pub(crate) breaker: Option<CircuitBreakerLayer>,
}

impl QualityClient {
    /// Asks the coordinator whether it is up; see [`QualityCheck::health`].
    /// It bypasses the retry layer, the limit and any circuit breaker, so a
    /// readiness probe sees the coordinator's state now.
    pub async fn health(&self) -> Result<(), Error> {
        self.settings.check.health().await
    }

    /// The circuit breaker's state, or `None` when the client has none.
    pub fn circuit_state(&self) -> Option<CircuitState> {
        self.settings
            .breaker
            .as_ref()
            .map(CircuitBreakerLayer::state)
    }
}
