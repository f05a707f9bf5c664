//! The README's hand-built stack and `build()` are the same stack: over the
//! same fault rows they send the same number of attempts with one request
//! id per call, report the same `attempts()` and the same error kinds.
//! And the crate's middleware composes with tower's own.

use std::collections::HashSet;
use std::time::Duration;

use tower::retry::Policy;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_quality_gate::call::Call;
use tower_quality_gate::retry::{Jitter, JitteredBackoff};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{
    ClientBuilder, Error, ErrorKind, QualityClient, QualityRequest, QualityResponse,
};

type Boxed = BoxCloneSyncService<QualityRequest, QualityResponse, Error>;

fn builder(url: String) -> ClientBuilder {
    QualityClient::builder(url)
        .backoff(JitteredBackoff::default().jitter(Jitter::None))
        .attempt_timeout(Duration::from_secs(1))
}

/// The README's recipe ("Your own retry policy"), with the crate's policy.
fn hand_built(b: &ClientBuilder) -> Boxed {
    let service = ServiceBuilder::new()
        .layer(b.identify_layer())
        .layer(b.concurrency_limit_layer())
        .layer(b.deadline_layer())
        .layer(b.retry_layer())
        .option_layer(b.circuit_breaker_layer())
        .layer(b.attempt_timeout_layer())
        .service(b.target_service().unwrap());
    BoxCloneSyncService::new(service)
}

fn built(b: &ClientBuilder) -> Boxed {
    BoxCloneSyncService::new(b.clone().build().unwrap())
}

/// What a coordinator and a caller saw of one call.
#[derive(Debug, PartialEq)]
struct Seen {
    outcome: Result<bool, (ErrorKind, Option<u32>, Option<u16>)>,
    hits: usize,
    ids: usize,
    elapsed: Duration,
}

async fn run(make: fn(&ClientBuilder) -> Boxed, script: &[Reply]) -> Seen {
    let coordinator = TestCoordinator::start().await;
    for reply in script {
        coordinator.push(reply.clone());
    }
    let service = make(&builder(coordinator.url()));
    let start = tokio::time::Instant::now();
    let result = service
        .oneshot(QualityRequest::new("task-1", "agent-1"))
        .await;
    let elapsed = start.elapsed();
    let ids: HashSet<_> = coordinator
        .requests()
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    Seen {
        outcome: result
            .map(|v| v.approved)
            .map_err(|e| (e.kind(), e.attempts(), e.status().map(|s| s.as_u16()))),
        hits: coordinator.hits(),
        ids: ids.len(),
        elapsed,
    }
}

#[tokio::test(start_paused = true)]
async fn the_recipe_and_build_behave_alike_on_every_fault_row() {
    let rows: Vec<(&str, Vec<Reply>, Seen)> = vec![
        (
            "503 then a verdict",
            vec![Reply::status(503), Reply::approve()],
            Seen {
                outcome: Ok(true),
                hits: 2,
                ids: 1,
                elapsed: Duration::from_millis(100),
            },
        ),
        (
            "a reset then a verdict",
            vec![Reply::reset_before_headers(), Reply::approve()],
            Seen {
                outcome: Ok(true),
                hits: 2,
                ids: 1,
                elapsed: Duration::from_millis(100),
            },
        ),
        (
            "503 with Retry-After: 2 then a verdict",
            vec![Reply::status(503).retry_after("2"), Reply::approve()],
            Seen {
                outcome: Ok(true),
                hits: 2,
                ids: 1,
                elapsed: Duration::from_secs(2),
            },
        ),
        (
            "a hang on every attempt",
            vec![Reply::hang(), Reply::hang(), Reply::hang()],
            Seen {
                outcome: Err((ErrorKind::Timeout, Some(3), None)),
                hits: 3,
                ids: 1,
                elapsed: Duration::from_millis(3000 + 100 + 200),
            },
        ),
        (
            "500 on every attempt",
            vec![Reply::status(500), Reply::status(500), Reply::status(500)],
            Seen {
                outcome: Err((ErrorKind::Status, Some(3), Some(500))),
                hits: 3,
                ids: 1,
                elapsed: Duration::from_millis(300),
            },
        ),
        (
            "a 400 is not retried",
            vec![Reply::status(400)],
            Seen {
                outcome: Err((ErrorKind::Status, Some(1), Some(400))),
                hits: 1,
                ids: 1,
                elapsed: Duration::ZERO,
            },
        ),
    ];
    for (row, script, want) in rows {
        let recipe = run(hand_built, &script).await;
        let client = run(built, &script).await;
        assert_eq!(recipe, want, "the README recipe: {row}");
        assert_eq!(client, want, "build(): {row}");
    }
}

/// A user's own policy, written against `Call` alone, keeps one id per call
/// and the call's attempt count without knowing about either.
#[derive(Clone)]
struct TwoTries;

impl Policy<Call, QualityResponse, Error> for TwoTries {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        call: &mut Call,
        result: &mut Result<QualityResponse, Error>,
    ) -> Option<Self::Future> {
        (result.is_err() && call.attempts() < 2).then(|| std::future::ready(()))
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn a_users_own_policy_keeps_the_calls_identity() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    let b = builder(coordinator.url());
    let service = ServiceBuilder::new()
        .layer(b.identify_layer())
        .layer(b.deadline_layer())
        .retry(TwoTries)
        .layer(b.attempt_timeout_layer())
        .service(b.check_service().unwrap());
    let caller_id = http::HeaderValue::from_static("caller-7");
    let err = service
        .oneshot(QualityRequest::new("t", "a").request_id(caller_id))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), Some(2));
    assert_eq!(err.request_id(), Some("caller-7"));
    let requests = coordinator.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|r| r.headers["x-request-id"] == "caller-7"));
    assert_eq!(requests[0].body, requests[1].body);
}

/// The breaker over tower's own `Timeout` (a `BoxError` service), and the
/// crate's retry policy above it: they compose, and the breaker counts
/// tower's `Elapsed` as a failure.
#[tokio::test(start_paused = true)]
async fn the_breaker_composes_above_a_tower_timeout() {
    use tower_quality_gate::breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};

    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let b = builder(coordinator.url()).attempts(1);
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default().failure_threshold(2));
    let service = ServiceBuilder::new()
        .layer(b.identify_layer())
        .layer(breaker.clone())
        .timeout(Duration::from_millis(50))
        .service(b.check_service().unwrap());
    for _ in 0..2 {
        let err = service
            .clone()
            .oneshot(QualityRequest::new("t", "a"))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let err = service
        .oneshot(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_circuit_open(), "{err:?}");
    assert_eq!(coordinator.hits(), 2);
}

/// A policy that sleeps past the call's deadline (unlike the crate's, which
/// never does) is cut by the deadline layer at the deadline, with the
/// attempts made; and a stack without an attempt timeout is bounded by the
/// deadline alone.
#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_wait_no_attempt_timer_covers() {
    #[derive(Clone)]
    struct SleepsLong;
    impl Policy<Call, QualityResponse, Error> for SleepsLong {
        type Future = tokio::time::Sleep;
        fn retry(
            &mut self,
            _call: &mut Call,
            result: &mut Result<QualityResponse, Error>,
        ) -> Option<Self::Future> {
            result
                .is_err()
                .then(|| tokio::time::sleep(Duration::from_secs(60)))
        }
        fn clone_request(&mut self, call: &Call) -> Option<Call> {
            Some(call.clone())
        }
    }

    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503));
    let b = builder(coordinator.url());
    let service = ServiceBuilder::new()
        .layer(b.identify_layer())
        .layer(b.deadline_layer())
        .retry(SleepsLong)
        .layer(b.attempt_timeout_layer())
        .service(b.check_service().unwrap());
    let start = tokio::time::Instant::now();
    let req = QualityRequest::new("t", "a").timeout(Duration::from_secs(2));
    let err = service.oneshot(req).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(err.attempts(), Some(1));

    // No attempt timeout at all: the deadline alone bounds a hang.
    coordinator.always(Reply::hang());
    let bare = ServiceBuilder::new()
        .layer(b.identify_layer())
        .layer(b.deadline_layer())
        .service(b.check_service().unwrap());
    let start = tokio::time::Instant::now();
    let req = QualityRequest::new("t", "a").timeout(Duration::from_millis(200));
    let err = bare.oneshot(req).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

/// With the crate's policy, a call whose retried attempt runs into the
/// deadline fails at the deadline with a total timeout that carries the
/// attempts and, as its source, the error that was retried.
#[tokio::test(start_paused = true)]
async fn a_call_out_of_time_says_what_went_wrong_before() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503)).push(Reply::hang());
    let client = builder(coordinator.url())
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let req = QualityRequest::new("t", "a").timeout(Duration::from_secs(2));
    let err = client.check(req).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(err.attempts(), Some(2));
    assert!(err.request_id().is_some_and(|id| id.starts_with("qg-")));
    let cause = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<Error>())
        .expect("the retried attempt's error as the cause");
    assert_eq!(cause.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
}

/// A call that never gets a slot of the concurrency limit ends at its
/// deadline with a total timeout that still names it: no attempt was made,
/// and the request id it would have sent is on the error.
#[tokio::test(start_paused = true)]
async fn a_call_that_never_gets_a_slot_still_has_its_request_id() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = builder(coordinator.url())
        .concurrency_limit(1)
        .build()
        .unwrap();
    let holder = {
        let client = client.clone();
        tokio::spawn(async move { client.check(QualityRequest::new("held", "a")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = tokio::time::Instant::now();
    let req = QualityRequest::new("waiting", "a").timeout(Duration::from_millis(500));
    let err = client.check(req).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(err.attempts(), None);
    assert!(
        err.request_id().is_some_and(|id| id.starts_with("qg-")),
        "{err:?}"
    );
    assert_eq!(coordinator.hits(), 1);
    holder.abort();
}

/// A per-call header named like the request-id header would send another id
/// than the one errors and spans report: the call fails with a
/// configuration error and sends nothing.
#[tokio::test(start_paused = true)]
async fn a_per_call_request_id_header_is_refused() {
    let coordinator = TestCoordinator::start().await;
    let client = builder(coordinator.url()).build().unwrap();
    let req = QualityRequest::new("t", "a").header(
        http::HeaderName::from_static("x-request-id"),
        http::HeaderValue::from_static("mine"),
    );
    let err = client.check(req).await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert_eq!(coordinator.hits(), 0);
    assert_eq!(
        err.attempts(),
        None,
        "nothing was sent, so no attempt counts"
    );

    // Every header a configuration may not set is refused per call too.
    for name in [
        "user-agent",
        "keep-alive",
        "trailer",
        "content-length",
        "host",
    ] {
        let req = QualityRequest::new("t", "a").header(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static("x"),
        );
        let err = client.check(req).await.unwrap_err();
        assert!(
            err.is_config() && err.to_string().contains(name),
            "{name}: {err}"
        );
    }
    assert_eq!(coordinator.hits(), 0);

    // And a per-call credential is never printed by the request's Debug.
    let req = QualityRequest::new("t", "a").header(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer s3cret"),
    );
    assert!(!format!("{req:?}").contains("s3cret"));
}
