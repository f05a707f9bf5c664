//! The composition matrix: stacks built by hand from the builder's layers,
//! with tower's own layers swapped in, layers removed or reordered, each
//! held to the same invariants. Every cell: one request id per call, at
//! most `attempts` sends, `attempts()` equal to what was sent, the
//! deadline held, a cut attempt retried, the documented error kind, the
//! cause in `source()`, the breaker opening on the failures it counts.
//!
//! Cells: {`AttemptTimeout`, tower `Timeout`, none} × {`Deadline`, none} ×
//! {`RetryPolicy`, a user policy} × {breaker, none} in the builder's order,
//! plus the reorderings (limit below retry, deadline below retry, timeout
//! above breaker) and tower's own concurrency limit.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::retry::{Policy, RetryLayer};
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};
use tower_quality_gate::breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
use tower_quality_gate::call::Call;
use tower_quality_gate::retry::{Jitter, JitteredBackoff};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{
    BoxError, ClientBuilder, Error, ErrorKind, QualityClient, QualityRequest, QualityResponse,
};

const ATTEMPT: Duration = Duration::from_secs(1);
const TOTAL: Duration = Duration::from_secs(3);
const USER_DELAY: Duration = Duration::from_millis(100);

type Below = BoxCloneSyncService<Call, QualityResponse, BoxError>;
type Stack = BoxCloneSyncService<QualityRequest, QualityResponse, Error>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Timer {
    Attempt,
    Tower,
    Untimed,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Builder,
    LimitBelowRetry,
    DeadlineBelowRetry,
    TimeoutAboveBreaker,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    timer: Timer,
    deadline: bool,
    user_policy: bool,
    breaker: bool,
    order: Order,
    tower_limit: bool,
}

impl Cell {
    /// A Deadline layer bounds the retry's waits (it sits above the retry).
    fn deadline_above_retry(&self) -> bool {
        self.deadline && self.order != Order::DeadlineBelowRetry
    }

    /// tower's `Timeout` sits below the breaker: the breaker sees its drop,
    /// not its `Elapsed`, and cannot count it (documented on the breaker).
    fn breaker_blind(&self) -> bool {
        self.timer == Timer::Tower && self.order == Order::TimeoutAboveBreaker
    }
}

fn cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for timer in [Timer::Attempt, Timer::Tower, Timer::Untimed] {
        for deadline in [true, false] {
            for user_policy in [false, true] {
                for breaker in [true, false] {
                    cells.push(Cell {
                        timer,
                        deadline,
                        user_policy,
                        breaker,
                        order: Order::Builder,
                        tower_limit: false,
                    });
                }
            }
        }
    }
    for order in [
        Order::LimitBelowRetry,
        Order::DeadlineBelowRetry,
        Order::TimeoutAboveBreaker,
    ] {
        for timer in [Timer::Attempt, Timer::Tower] {
            for user_policy in [false, true] {
                cells.push(Cell {
                    timer,
                    deadline: true,
                    user_policy,
                    breaker: true,
                    order,
                    tower_limit: false,
                });
            }
        }
    }
    for user_policy in [false, true] {
        cells.push(Cell {
            timer: Timer::Attempt,
            deadline: true,
            user_policy,
            breaker: false,
            order: Order::Builder,
            tower_limit: true,
        });
    }
    cells
}

/// A user's policy, as the README writes one: retries what is retryable
/// while the call has attempts left, after a fixed delay.
#[derive(Clone)]
struct UserPolicy;

impl UserPolicy {
    fn decide(call: &Call, retryable: bool) -> Option<tokio::time::Sleep> {
        (retryable && call.attempts() < 3).then(|| tokio::time::sleep(USER_DELAY))
    }
}

impl Policy<Call, QualityResponse, BoxError> for UserPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        call: &mut Call,
        result: &mut Result<QualityResponse, BoxError>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(_) => false,
            Err(e) => match e.downcast_ref::<Error>() {
                Some(e) => e.is_retryable(),
                None => e.is::<tower::timeout::error::Elapsed>(),
            },
        };
        UserPolicy::decide(call, retryable)
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

#[derive(Clone, Copy)]
enum Piece {
    Limit,
    Deadline,
    Retry,
    Breaker,
    Timer,
}

fn boxed<S>(service: S) -> Below
where
    S: Service<Call, Response = QualityResponse> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

fn builder(url: String, limit: usize) -> ClientBuilder {
    QualityClient::builder(url)
        .backoff(JitteredBackoff::default().jitter(Jitter::None))
        .attempt_timeout(ATTEMPT)
        .total_timeout(TOTAL)
        .concurrency_limit(limit)
}

/// The cell's stack, from the outside in.
fn stack(cell: Cell, b: &ClientBuilder, breaker: &CircuitBreakerLayer) -> Stack {
    use Piece::*;
    let pieces: &[Piece] = match cell.order {
        Order::Builder => &[Limit, Deadline, Retry, Breaker, Timer],
        Order::LimitBelowRetry => &[Deadline, Retry, Limit, Breaker, Timer],
        Order::DeadlineBelowRetry => &[Limit, Retry, Deadline, Breaker, Timer],
        Order::TimeoutAboveBreaker => &[Limit, Deadline, Retry, Timer, Breaker],
    };
    let mut service = boxed(b.target_service().unwrap());
    for piece in pieces.iter().rev() {
        service = match piece {
            Limit if cell.tower_limit => {
                let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
                boxed(GlobalConcurrencyLimitLayer::with_semaphore(slots).layer(service))
            }
            Limit => boxed(b.concurrency_limit_layer().layer(service)),
            Deadline if cell.deadline => boxed(b.deadline_layer().layer(service)),
            Retry if cell.user_policy => boxed(RetryLayer::new(UserPolicy).layer(service)),
            Retry => boxed(b.retry_layer().layer(service)),
            Breaker if cell.breaker => boxed(breaker.clone().layer(service)),
            Timer if cell.timer == self::Timer::Attempt => {
                boxed(b.attempt_timeout_layer().layer(service))
            }
            Timer if cell.timer == self::Timer::Tower => {
                boxed(TimeoutLayer::new(ATTEMPT).layer(service))
            }
            _ => service,
        };
    }
    BoxCloneSyncService::new(b.identify_layer().layer(service))
}

/// What a coordinator and a caller saw of one call.
#[derive(Debug)]
struct Seen {
    result: Result<QualityResponse, Error>,
    hits: usize,
    ids: usize,
    elapsed: Duration,
    breaker: CircuitState,
}

impl Seen {
    fn err(&self) -> &Error {
        self.result.as_ref().expect_err("an error")
    }
}

/// Runs one call of `request` through the cell's stack against a
/// coordinator that answers `script`, then checks the invariants every
/// cell keeps whatever the scenario.
async fn run(cell: Cell, script: &[Reply], request: QualityRequest, threshold: u32) -> Seen {
    let coordinator = TestCoordinator::start().await;
    for reply in script {
        coordinator.push(reply.clone());
    }
    let b = builder(coordinator.url(), 64);
    let breaker =
        CircuitBreakerLayer::new(CircuitBreakerConfig::default().failure_threshold(threshold));
    let service = stack(cell, &b, &breaker);
    let start = Instant::now();
    let result = service.oneshot(request).await;
    let elapsed = start.elapsed();
    let ids: HashSet<_> = coordinator
        .requests()
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    let seen = Seen {
        result,
        hits: coordinator.hits(),
        ids: ids.len(),
        elapsed,
        breaker: breaker.state(),
    };
    // One request id per call, at most `attempts` sends, and an error that
    // says how many were sent.
    assert!(seen.ids <= 1, "{cell:?}: {seen:?}");
    assert!(seen.hits <= 3, "{cell:?}: {seen:?}");
    if let Err(e) = &seen.result {
        assert_eq!(
            e.attempts().unwrap_or(0) as usize,
            seen.hits,
            "{cell:?}: {seen:?}"
        );
        assert!(e.request_id().is_some(), "{cell:?}: {seen:?}");
    }
    seen
}

fn is_timeout_cause(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<Error>())
        .is_some_and(Error::is_timeout)
}

/// A hanging attempt is cut by its timer and retried; without a timer
/// the call's deadline ends it, wherever the deadline is kept.
#[tokio::test(start_paused = true)]
async fn a_cut_attempt_is_retried() {
    for cell in cells() {
        let seen = run(
            cell,
            &[Reply::hang(), Reply::approve()],
            QualityRequest::new("t", "a"),
            5,
        )
        .await;
        if cell.timer == Timer::Untimed {
            let err = seen.err();
            assert!(err.is_total_timeout(), "{cell:?}: {seen:?}");
            assert_eq!((seen.hits, seen.elapsed), (1, TOTAL), "{cell:?}: {seen:?}");
        } else {
            assert!(
                seen.result.as_ref().is_ok_and(|v| v.approved),
                "{cell:?}: {seen:?}"
            );
            let backoff = Duration::from_millis(100);
            assert_eq!(
                (seen.hits, seen.elapsed),
                (2, ATTEMPT + backoff),
                "{cell:?}: {seen:?}"
            );
        }
    }
}

/// A coordinator that hangs: the deadline ends the call exactly, with the
/// attempts sent and the last cut attempt as its cause; a breaker above
/// any timer (or below the crate's own) opens after its threshold.
#[tokio::test(start_paused = true)]
async fn a_hanging_coordinator_ends_at_the_deadline_and_opens_the_breaker() {
    for cell in cells() {
        let seen = run(
            cell,
            &[Reply::hang(), Reply::hang(), Reply::hang()],
            QualityRequest::new("t", "a"),
            2,
        )
        .await;
        let err = seen.err();
        let counts = cell.breaker && cell.timer != Timer::Untimed && !cell.breaker_blind();
        if cell.timer == Timer::Untimed {
            assert!(err.is_total_timeout(), "{cell:?}: {seen:?}");
            assert_eq!((seen.hits, seen.elapsed), (1, TOTAL), "{cell:?}: {seen:?}");
        } else if counts {
            // Two cut attempts open it; the third is refused, and the
            // refusal is final.
            assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{cell:?}: {seen:?}");
            assert_eq!(seen.hits, 2, "{cell:?}: {seen:?}");
            assert!(seen.elapsed < TOTAL, "{cell:?}: {seen:?}");
        } else {
            assert!(err.is_total_timeout(), "{cell:?}: {seen:?}");
            assert_eq!((seen.hits, seen.elapsed), (3, TOTAL), "{cell:?}: {seen:?}");
            assert!(is_timeout_cause(err), "{cell:?}: {seen:?}");
        }
        let expected = if counts {
            CircuitState::Open
        } else {
            CircuitState::Closed
        };
        assert_eq!(seen.breaker, expected, "{cell:?}: {seen:?}");
    }
}

/// 503s and a short deadline: the crate's policy does not wait past the
/// deadline and returns the 503; a user's policy that does is ended by the
/// deadline (above the retry: at the deadline; otherwise when the next
/// attempt would start), with the 503 as the cause, whatever the timer.
#[tokio::test(start_paused = true)]
async fn a_deadline_in_a_users_wait_ends_the_call_with_the_cause() {
    let deadline = Duration::from_millis(150);
    for cell in cells() {
        let seen = run(
            cell,
            &[Reply::status(503), Reply::status(503), Reply::status(503)],
            QualityRequest::new("t", "a").timeout(deadline),
            5,
        )
        .await;
        let err = seen.err();
        assert_eq!(seen.hits, 2, "{cell:?}: {seen:?}");
        if !cell.user_policy {
            assert_eq!(
                err.status().map(|s| s.as_u16()),
                Some(503),
                "{cell:?}: {seen:?}"
            );
            assert_eq!(
                seen.elapsed,
                Duration::from_millis(100),
                "{cell:?}: {seen:?}"
            );
            continue;
        }
        assert!(err.is_total_timeout(), "{cell:?}: {seen:?}");
        assert!(!err.is_retryable(), "{cell:?}: {seen:?}");
        let cause = std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<Error>())
            .unwrap_or_else(|| panic!("{cell:?}: no cause in {seen:?}"));
        assert_eq!(cause.status().map(|s| s.as_u16()), Some(503), "{cell:?}");
        let ends = if cell.deadline_above_retry() {
            deadline
        } else {
            Duration::from_millis(100) + USER_DELAY
        };
        assert_eq!(seen.elapsed, ends, "{cell:?}: {seen:?}");
    }
}

/// One slot, taken by a call that hangs: a second call with a 500 ms
/// deadline ends at 500 ms having sent nothing, wherever the crate's limit
/// sits. tower's own limit waits in `poll_ready`, before the call exists:
/// its wait is not bounded by the call's deadline (documented).
#[tokio::test(start_paused = true)]
async fn the_wait_for_a_slot_counts_against_the_deadline() {
    for cell in cells().into_iter().filter(|c| c.timer == Timer::Attempt) {
        let coordinator = TestCoordinator::start().await;
        coordinator.always(Reply::hang());
        let b = builder(coordinator.url(), 1);
        let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
        let service = stack(cell, &b, &breaker);
        let first = tokio::spawn(service.clone().oneshot(QualityRequest::new("t", "1")));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = Instant::now();
        let second = service
            .oneshot(QualityRequest::new("t", "2").timeout(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(second.is_total_timeout(), "{cell:?}: {second:?}");
        if cell.tower_limit {
            // The slot frees when the first call ends (3 s after it began);
            // only then does the second call start its own clock.
            assert_eq!(
                start.elapsed(),
                TOTAL - Duration::from_millis(10) + Duration::from_millis(500)
            );
            assert_eq!(second.attempts(), Some(1), "{cell:?}");
        } else {
            assert_eq!(start.elapsed(), Duration::from_millis(500), "{cell:?}");
            assert_eq!(second.attempts(), None, "{cell:?}: nothing was sent");
        }
        assert!(first.await.unwrap().unwrap_err().is_total_timeout());
    }
}

/// The built client keeps the deadline over the slot wait however it is
/// called: `check`, or as a plain tower `Service`.
#[tokio::test(start_paused = true)]
async fn the_built_client_counts_the_slot_wait_as_a_service_too() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = builder(coordinator.url(), 1).build().unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.check(QualityRequest::new("t", "1")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    for by_service in [false, true] {
        let start = Instant::now();
        let request = QualityRequest::new("t", "2").timeout(Duration::from_millis(500));
        let err = if by_service {
            client.clone().oneshot(request).await.unwrap_err()
        } else {
            client.check(request).await.unwrap_err()
        };
        assert!(err.is_total_timeout(), "{err:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(err.attempts(), None);
        assert!(err.request_id().is_some());
    }
    assert!(first.await.unwrap().unwrap_err().is_total_timeout());
    // Only the first call's attempts were sent.
    assert_eq!(coordinator.hits(), 3);
}
