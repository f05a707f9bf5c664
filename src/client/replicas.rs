//! Several coordinator replicas behind tower's power-of-two-choices
//! balancer, and opt-in hedging.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::Semaphore;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::{Discover, ServiceList};
use tower::hedge::Hedge;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::{BoxCloneSyncService, Either};
use tower::ServiceExt;

use crate::breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use crate::call::Call;
use crate::check::QualityCheck;
use crate::error::{BoxError, Error, TimeoutKind};
use crate::limit::{AdaptiveLimit, AdaptiveLimitConfig};
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
    /// An adaptive concurrency limit per replica.
    pub(crate) adaptive: Option<AdaptiveLimitConfig>,
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
/// while the copy runs), and only while the call has attempts left (a copy
/// counts as one of its attempts, in [`Error::attempts`]).
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::Hedging;
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
        Some(call.hedge_copy())
    }

    fn can_retry(&self, call: &Call) -> bool {
        call.attempts() < self.max_attempts
            && call.hold_hedge_slot(|| self.slots.clone().try_acquire_owned().ok())
    }
}

/// Builds the routed attempt target. Needs a Tokio runtime: the balancer
/// and the hedge each run behind a `Buffer`, whose worker is a task.
pub(crate) fn routed(checks: Vec<QualityCheck>, routing: Routing) -> Result<Routed, Error> {
    routed_by(routing, |replica, queue| {
        let mut checks = checks;
        Ok(match (checks.pop(), checks.is_empty()) {
            (Some(only), true) => match replica.adaptive {
                Some(config) => BoxCloneSyncService::new(AdaptiveLimit::new(
                    AttemptTimeout::new(only, replica.attempt_timeout),
                    config,
                )),
                None => BoxCloneSyncService::new(only),
            },
            (Some(last), false) => {
                checks.push(last);
                balanced(checks, replica, queue)
            }
            (None, _) => return Err(Error::config("no coordinator URL given")),
        })
    })
}

/// Builds the attempt target with `target`, given how to wrap each replica
/// and the queue in front of a balancer, then hedges it if asked.
pub(crate) fn routed_by(
    routing: Routing,
    target: impl FnOnce(Replica, usize) -> Result<Routed, Error>,
) -> Result<Routed, Error> {
    let Routing {
        attempt_timeout,
        ejection,
        hedging,
        queue,
        slots,
        max_attempts,
        adaptive,
    } = routing;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::config(
            "a client with several replicas or hedging must be built inside a Tokio runtime",
        ));
    }
    let replica = Replica {
        attempt_timeout,
        ejection,
        adaptive,
    };
    let target = target(replica, queue)?;
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

/// How each replica behind the balancer is wrapped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replica {
    pub(crate) attempt_timeout: Duration,
    pub(crate) ejection: CircuitBreakerConfig,
    pub(crate) adaptive: Option<AdaptiveLimitConfig>,
}

/// One replica as the balancer sees it: its attempts timed, limited when an
/// adaptive limit is set, ejected while failing, its pending calls counted.
pub(crate) type ReplicaService<S = QualityCheck> = PendingRequests<
    CircuitBreaker<Either<AdaptiveLimit<AttemptTimeout<S>>, AttemptTimeout<S>>>,
    CompleteOnResponse,
>;

/// A replica's breaker over its (limited) timed attempts.
type Ejecting<S> = CircuitBreaker<Either<AdaptiveLimit<AttemptTimeout<S>>, AttemptTimeout<S>>>;

impl Replica {
    /// Wraps one replica's check, labelled `label` in the breaker's events.
    pub(crate) fn wrap<S>(&self, check: S, label: &str) -> ReplicaService<S> {
        PendingRequests::new(self.ejecting(check, label), CompleteOnResponse::default())
    }

    fn ejecting<S>(&self, check: S, label: &str) -> Ejecting<S> {
        // Each replica times its own attempts, so that a replica that hangs
        // is ejected like one that fails (and its limit sees the timeout);
        // the client's attempt timeout still bounds the wait for the
        // balancer.
        let timed = AttemptTimeout::new(check, self.attempt_timeout);
        // A limit per replica, inside the breaker: a replica at its limit is
        // not ready, and the balancer picks another.
        let limited = match self.adaptive {
            Some(config) => Either::Left(AdaptiveLimit::new(timed, config)),
            None => Either::Right(timed),
        };
        CircuitBreaker::ejecting(limited, self.ejection, label)
    }
}

fn balanced(checks: Vec<QualityCheck>, replica: Replica, queue: usize) -> Routed {
    let breakers: Vec<_> = checks
        .into_iter()
        .map(|check| {
            let label = check.base_url().to_string();
            replica.ejecting(check, &label)
        })
        .collect();
    let probes = breakers.clone();
    let replicas = breakers
        .into_iter()
        .map(|b| PendingRequests::new(b, CompleteOnResponse::default()))
        .collect::<Vec<_>>();
    let balance = ShedWhenEjected {
        inner: Balance::new(ServiceList::new(replicas)),
        probes,
        shed: false,
    };
    buffered(balance, queue)
}

/// Fails a call at once when every replica is ejected, as tower's
/// `LoadShed` would, but waits when some replica is only at its adaptive
/// limit: that one is ready again as soon as a call ends.
struct ShedWhenEjected<S> {
    inner: S,
    /// Clones of the replicas' breakers, sharing their states.
    probes: Vec<Ejecting<QualityCheck>>,
    /// `poll_ready` found every replica ejected: the next call fails.
    shed: bool,
}

impl<S> tower::Service<Call> for ShedWhenEjected<S>
where
    S: tower::Service<Call, Response = QualityResponse>,
    S::Error: Into<BoxError>,
{
    type Response = QualityResponse;
    type Error = BoxError;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                self.shed = false;
                Poll::Ready(result.map_err(Into::into))
            }
            Poll::Pending
                if self
                    .probes
                    .iter()
                    .all(|p| p.state() != CircuitState::Closed) =>
            {
                self.shed = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if std::mem::take(&mut self.shed) {
            return ShedFuture::Shed;
        }
        ShedFuture::Called {
            future: self.inner.call(call),
        }
    }
}

pin_project! {
    /// A balanced call, or the error of one shed.
    #[project = ShedProj]
    enum ShedFuture<F> {
        Called { #[pin] future: F },
        Shed,
    }
}

impl<F, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<QualityResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<QualityResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProj::Called { future } => future.poll(cx).map_err(Into::into),
            ShedProj::Shed => Poll::Ready(Err(Error::no_replica().into())),
        }
    }
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

/// Balances over the replicas a discovery stream inserts and removes.
///
/// Unlike the fixed list, there is no load shedding in front: before the
/// first resolution answers there is no replica yet, and a call waits for
/// one (within its attempt timeout) instead of failing at once.
pub(crate) fn balanced_discover<D>(discover: D, queue: usize) -> Routed
where
    D: Discover<Service = ReplicaService<Routed>> + Unpin + Send + 'static,
    D::Key: std::hash::Hash + Clone + Send,
    D::Error: Into<BoxError>,
{
    buffered(Balance::new(discover), queue)
}
