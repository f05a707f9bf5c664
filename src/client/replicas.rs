//! Several coordinator replicas behind tower's power-of-two-choices
//! balancer, and opt-in hedging.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::sync::Semaphore;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::{Change, ServiceList};
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
/// consecutive failed attempts, for 1 s, then one probe decides.
///
/// 1 s is Linkerd's least failure-accrual penalty. A dead replica then
/// costs one probe a second (a refused connection fails at once and the
/// call is retried on another replica), and a replica that comes back
/// takes load within a second: with 10 s, a fleet whose replicas all
/// restarted ran on the first one to be probed for up to 10 s.
pub(crate) const DEFAULT_REPLICA_EJECTION: CircuitBreakerConfig = CircuitBreakerConfig {
    failure_threshold: 3,
    cooldown: Duration::from_secs(1),
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
    let ejectable = Arc::new(Mutex::new(breakers.clone()));
    let replicas = breakers
        .into_iter()
        .map(|b| PendingRequests::new(b, CompleteOnResponse::default()))
        .collect::<Vec<_>>();
    let balance = PanicWhenEjected::new(Balance::new(ServiceList::new(replicas)), ejectable);
    buffered(balance, queue)
}

/// The breakers of the replicas behind one balancer, shared with the
/// panic router.
type Ejectable<S> = Arc<Mutex<Vec<Ejecting<S>>>>;

/// In front of the balancer: when every replica is ejected, sends the call
/// to one of them anyway (in turn), past its breaker, instead of failing it
/// or letting it wait for a cooldown to end: Envoy's panic mode, whose
/// default threshold (50% healthy) is here "none healthy". A dead replica
/// then fails the call at once with its own error (`Connect` for a refused
/// connection, as a single coordinator does), and a replica that came back
/// answers the very next call, before any breaker's cooldown ends.
///
/// A call sent past the breakers skips the replica's adaptive limit too:
/// the balancer's own copy of an ejected replica may hold the limit's last
/// permit while it waits for its cooldown. Once a probe closes a breaker
/// (within the ejection cooldown, 1 s by default), calls are balanced and
/// limited again.
///
/// When some replica is only at its adaptive limit the call waits for it:
/// that one is ready again as soon as a call ends. With no replica at all
/// (before a discovery's first answer) the call waits too, within its
/// attempt timeout.
struct PanicWhenEjected<B, S> {
    inner: B,
    replicas: Ejectable<S>,
    /// `poll_ready` found every replica ejected: the next call panics.
    panic: bool,
    /// The replica the next panicking call goes to, in turn.
    next: usize,
}

impl<B, S> PanicWhenEjected<B, S> {
    fn new(inner: B, replicas: Ejectable<S>) -> Self {
        PanicWhenEjected {
            inner,
            replicas,
            panic: false,
            next: 0,
        }
    }

    fn replicas(&self) -> std::sync::MutexGuard<'_, Vec<Ejecting<S>>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B, S> tower::Service<Call> for PanicWhenEjected<B, S>
where
    B: tower::Service<Call, Response = QualityResponse>,
    B::Error: Into<BoxError>,
    S: tower::Service<Call, Response = QualityResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = QualityResponse;
    type Error = BoxError;
    type Future = PanicFuture<B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                self.panic = false;
                Poll::Ready(result.map_err(Into::into))
            }
            Poll::Pending => {
                let replicas = self.replicas();
                let ejected = !replicas.is_empty()
                    && replicas.iter().all(|r| r.state() != CircuitState::Closed);
                drop(replicas);
                if ejected {
                    self.panic = true;
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if !std::mem::take(&mut self.panic) {
            return PanicFuture::Called {
                future: self.inner.call(call),
            };
        }
        let replicas = self.replicas();
        if replicas.is_empty() {
            return PanicFuture::Shed;
        }
        let target: AttemptTimeout<S> = match replicas[self.next % replicas.len()].get_ref() {
            Either::Left(limited) => limited.get_ref().clone(),
            Either::Right(timed) => timed.clone(),
        };
        drop(replicas);
        self.next = self.next.wrapping_add(1);
        tracing::debug!("every replica is ejected: sending the attempt to one anyway");
        PanicFuture::Panic {
            future: Box::pin(async move { target.oneshot(call).await.map_err(BoxError::from) }),
        }
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<QualityResponse, BoxError>> + Send>>;

pin_project! {
    /// A balanced call, a call sent past the breakers, or the error of one
    /// that found no replica at all.
    #[project = PanicProj]
    enum PanicFuture<F> {
        Called { #[pin] future: F },
        Panic { future: Boxed },
        Shed,
    }
}

impl<F, E> Future for PanicFuture<F>
where
    F: Future<Output = Result<QualityResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<QualityResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            PanicProj::Called { future } => future.poll(cx).map_err(Into::into),
            PanicProj::Panic { future } => future.as_mut().poll(cx),
            PanicProj::Shed => Poll::Ready(Err(Error::no_replica().into())),
        }
    }
}

/// A discovery stream of labelled services, each wrapped as a replica (its
/// attempt timeout, adaptive limit, ejection and load count), whose
/// breakers are kept for the panic router.
pub(crate) struct Replicas<D, K, S> {
    stream: D,
    replica: Replica,
    breakers: HashMap<K, Ejecting<S>>,
    shared: Ejectable<S>,
}

impl<D: Unpin, K, S> Unpin for Replicas<D, K, S> {}

impl<D, K, S> Replicas<D, K, S>
where
    K: Hash + Eq,
    S: Clone,
{
    fn publish(&self) {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) =
            self.breakers.values().cloned().collect();
    }
}

impl<D, K, S, E> Stream for Replicas<D, K, S>
where
    D: Stream<Item = Result<Change<K, (String, S)>, E>> + Unpin,
    K: Hash + Eq + Clone,
    S: Clone,
{
    type Item = Result<Change<K, ReplicaService<S>>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let change = match std::task::ready!(Pin::new(&mut this.stream).poll_next(cx)) {
            Some(Ok(change)) => change,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => return Poll::Ready(None),
        };
        let change = match change {
            Change::Insert(key, (label, service)) => {
                let ejecting = this.replica.ejecting(service, &label);
                this.breakers.insert(key.clone(), ejecting.clone());
                Change::Insert(
                    key,
                    PendingRequests::new(ejecting, CompleteOnResponse::default()),
                )
            }
            Change::Remove(key) => {
                this.breakers.remove(&key);
                Change::Remove(key)
            }
        };
        this.publish();
        Poll::Ready(Some(Ok(change)))
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

/// Balances over the replicas a discovery stream of labelled services
/// inserts and removes, each wrapped as `replica` says.
///
/// Before the first insert there is no replica, and a call waits for one
/// (within its attempt timeout); once every replica is ejected, calls go
/// to them anyway, as with a fixed list ([`PanicWhenEjected`]).
pub(crate) fn balanced_discover<D, K, E>(discover: D, replica: Replica, queue: usize) -> Routed
where
    D: Stream<Item = Result<Change<K, (String, Routed)>, E>> + Unpin + Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    E: Into<BoxError>,
{
    let shared: Ejectable<Routed> = Arc::default();
    let replicas = Replicas {
        stream: discover,
        replica,
        breakers: HashMap::new(),
        shared: shared.clone(),
    };
    buffered(PanicWhenEjected::new(Balance::new(replicas), shared), queue)
}
