//! Several coordinator replicas behind tower's power-of-two-choices
//! balancer, and opt-in hedging.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::hedge::Hedge;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::load_shed::LoadShed;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use crate::breaker::{CircuitBreaker, CircuitBreakerConfig};
use crate::call::Call;
use crate::check::QualityCheck;
use crate::error::{BoxError, Error, TimeoutKind};
use crate::timeout::AttemptTimeout;
use crate::wire::QualityResponse;

/// An attempt's target when it is more than one plain check: a balanced set
/// of replicas, a hedged check, or both.
pub(crate) type Routed = BoxCloneSyncService<Call, QualityResponse, Error>;

/// The default ejection of a failing replica: out of the balancer after 3
/// consecutive failed attempts, for 10 s, then one probe decides. Shorter
/// than the client-wide breaker, since the other replicas carry the load.
pub(crate) const DEFAULT_REPLICA_EJECTION: CircuitBreakerConfig = CircuitBreakerConfig {
    failure_threshold: 3,
    cooldown: Duration::from_secs(10),
};

/// How attempts are routed over replicas.
pub(crate) struct Routing {
    pub(crate) attempt_timeout: Duration,
    pub(crate) ejection: CircuitBreakerConfig,
    pub(crate) hedging: Option<Hedging>,
    pub(crate) queue: usize,
    /// The client's concurrency limit: a hedged copy takes a slot too.
    pub(crate) slots: Arc<Semaphore>,
    /// A hedged copy counts as an attempt, and is not sent past the last.
    pub(crate) max_attempts: u32,
}

/// When to send a second copy of a slow attempt (tower's hedge).
///
/// Hedging sends a copy of an attempt that has not answered after the
/// `percentile` latency of recent attempts, and takes whichever answers
/// first. It is safe here only because a quality check is idempotent on
/// the coordinator's side: it reads the work and answers a verdict, and both
/// copies carry the same request id, so a coordinator can de-duplicate. It
/// costs extra load (up to `1 - percentile` of calls, 10% by default), so
/// turn it on when tail latency matters more than coordinator capacity,
/// and preferably with several replicas, where the copy goes to another one.
///
/// The coordinator never sees more than the client promises: a copy is sent
/// only if a slot of the client's concurrency limit is free (it holds it
/// until the call ends), and only while the call has attempts left (a copy
/// counts as one of its attempts, in [`Error::attempts`]).
///
/// ```
/// use std::time::Duration;
/// use quality_gate::Hedging;
///
/// let hedging = Hedging::default().percentile(0.95).min_data_points(50);
/// assert_eq!(hedging.period, Duration::from_secs(30));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedging {
    /// The latency percentile after which a copy is sent (default 0.9).
    pub percentile: f32,
    /// Attempts recorded before hedging starts (default 20): without data
    /// there is no latency to compare with.
    pub min_data_points: u64,
    /// The window of the latency histogram (default 30 s).
    pub period: Duration,
}

impl Hedging {
    /// The latency percentile after which a copy is sent (default 0.9).
    pub fn percentile(mut self, percentile: f32) -> Self {
        self.percentile = percentile;
        self
    }

    /// Attempts recorded before hedging starts (default 20).
    pub fn min_data_points(mut self, points: u64) -> Self {
        self.min_data_points = points;
        self
    }

    /// The window of the latency histogram (default 30 s).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }
}

impl Default for Hedging {
    fn default() -> Self {
        Hedging {
            percentile: 0.9,
            min_data_points: 20,
            period: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
struct HedgePolicy {
    slots: Arc<Semaphore>,
    max_attempts: u32,
}

impl tower::hedge::Policy<Call> for HedgePolicy {
    fn clone_request(&self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }

    fn can_retry(&self, call: &Call) -> bool {
        call.attempts() < self.max_attempts
            && call.hold_hedge_slot(|| self.slots.clone().try_acquire_owned().ok())
    }
}

/// Builds the routed attempt target. Needs a Tokio runtime: the balancer
/// and the hedge each run behind a `Buffer`, whose worker is a task.
pub(crate) fn routed(checks: Vec<QualityCheck>, routing: Routing) -> Result<Routed, Error> {
    let Routing {
        attempt_timeout,
        ejection,
        hedging,
        queue,
        slots,
        max_attempts,
    } = routing;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::config(
            "a client with several replicas or hedging must be built inside a Tokio runtime",
        ));
    }
    let mut checks = checks;
    let target = match (checks.pop(), checks.is_empty()) {
        (Some(only), true) => BoxCloneSyncService::new(only),
        (Some(last), false) => {
            checks.push(last);
            balanced(checks, attempt_timeout, ejection, queue)
        }
        (None, _) => return Err(Error::config("no coordinator URL given")),
    };
    Ok(match hedging {
        None => target,
        Some(h) => {
            let policy = HedgePolicy {
                slots,
                max_attempts,
            };
            let hedge =
                Hedge::new::<Call>(target, policy, h.min_data_points, h.percentile, h.period);
            buffered(hedge, queue)
        }
    })
}

fn balanced(
    checks: Vec<QualityCheck>,
    attempt_timeout: Duration,
    ejection: CircuitBreakerConfig,
    queue: usize,
) -> Routed {
    // Each replica times its own attempts, so that a replica that hangs is
    // ejected like one that fails; the client's attempt timeout still
    // bounds the wait for the balancer.
    let replicas: Vec<_> = checks
        .into_iter()
        .map(|check| {
            let label = check.base_url().to_string();
            let timed = AttemptTimeout::new(check, attempt_timeout);
            PendingRequests::new(
                CircuitBreaker::ejecting(timed, ejection, &label),
                CompleteOnResponse::default(),
            )
        })
        .collect();
    // With every replica ejected the balancer is not ready; shedding turns
    // that into an immediate error instead of a wait for the timeout.
    let balance = LoadShed::new(Balance::new(ServiceList::new(replicas)));
    buffered(balance, queue)
}

fn buffered<S>(service: S, queue: usize) -> Routed
where
    S: tower::Service<Call, Response = QualityResponse> + Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    S::Future: Send,
{
    BoxCloneSyncService::new(Buffer::new(service, queue.max(1)).map_err(routed_error))
}

fn routed_error(err: BoxError) -> Error {
    if err.is::<tower::load_shed::error::Overloaded>() {
        return Error::no_replica();
    }
    Error::from_layer(err, TimeoutKind::Attempt)
}
