//! Per-call context: a caller's deadline, request id and headers, through
//! the whole stack to a real coordinator on 127.0.0.1, with tokio's clock
//! paused so times are exact.

mod common;

use std::error::Error as _;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{Error, QualityClient};

use common::{builder, client, request};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(start_paused = true)]
async fn callers_deadline_ends_a_hanging_call_as_a_total_timeout() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = client(&coordinator); // 30 s total, 10 s per attempt

    let start = Instant::now();
    let deadline = start + Duration::from_millis(200);
    let err = client
        .check(request(1).deadline(deadline))
        .await
        .unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert!(err.is_total_timeout(), "{err:?}");
    assert!(!err.is_attempt_timeout());
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(coordinator.hits(), 1);
    // The crate's typed error, not tokio's `Elapsed` in disguise.
    assert!(err
        .source()
        .is_none_or(|s| !s.is::<tokio::time::error::Elapsed>()));
}

#[tokio::test(start_paused = true)]
async fn callers_timeout_wins_over_the_clients_longer_one() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = client(&coordinator);

    let start = Instant::now();
    let err = client
        .check(request(1).timeout(Duration::from_millis(350)))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(350));
    assert!(err.is_total_timeout(), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_past_the_callers_deadline_is_not_scheduled() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    let client = client(&coordinator); // first backoff: exactly 100 ms

    let start = Instant::now();
    let err = client
        .check(request(1).timeout(Duration::from_millis(80)))
        .await
        .unwrap_err();

    assert_eq!(coordinator.hits(), 1);
    assert_eq!(
        err.status(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "{err:?}"
    );
    assert!(!err.is_timeout());
    assert_eq!(err.attempts(), Some(1));
    assert!(start.elapsed() < Duration::from_millis(80));
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_callers_deadline_is_not_scheduled() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(429).retry_after("2"));
    let client = client(&coordinator);

    let err = client
        .check(request(1).deadline(Instant::now() + Duration::from_secs(1)))
        .await
        .unwrap_err();

    assert_eq!(coordinator.hits(), 1);
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn request_id_and_traceparent_reach_the_coordinator_on_every_attempt() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push_n(Reply::status(503), 2);
    let client = client(&coordinator);

    let req = request(1)
        .request_id(HeaderValue::from_static("caller-id-7"))
        .header(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static(TRACEPARENT),
        );
    assert!(client.check(req).await.unwrap().approved);

    let requests = coordinator.requests();
    assert_eq!(requests.len(), 3);
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.headers["x-request-id"], "caller-id-7", "attempt {i}");
        assert_eq!(r.headers["traceparent"], TRACEPARENT, "attempt {i}");
        assert_eq!(r.headers.get_all("traceparent").iter().count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_reserved_per_call_header_fails_with_a_config_error_and_sends_nothing() {
    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);

    for name in [http::header::CONTENT_LENGTH, http::header::HOST] {
        let req = request(1).header(name.clone(), HeaderValue::from_static("5"));
        let err = client.check(req).await.unwrap_err();
        assert!(err.is_config(), "{name}: {err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(coordinator.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_slot_then_503_with_retry_after_ends_as_a_total_timeout_with_its_cause() {
    let coordinator = TestCoordinator::start().await;
    // The first call holds the only slot for 1 s; the second waits for it,
    // gets a 503 asking for 1 s, and its retry hangs past its deadline.
    coordinator.push(Reply::approve().delay(Duration::from_secs(1)));
    coordinator.push(Reply::status(503).retry_after("1"));
    coordinator.push(Reply::hang());
    let client: QualityClient = builder(coordinator.url())
        .concurrency_limit(1)
        .build()
        .unwrap();

    let start = Instant::now();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.check(request(1)).await }
    });
    tokio::task::yield_now().await;
    let err = client
        .check(request(2).timeout(Duration::from_secs(3)))
        .await
        .unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(first.await.unwrap().unwrap().approved);
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(err.attempts(), Some(2));
    let cause = err
        .source()
        .and_then(|s| s.downcast_ref::<Error>())
        .expect("the 503 as the cause");
    assert_eq!(cause.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(cause.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(coordinator.hits(), 3);
}
