//! The composed client against a real coordinator on 127.0.0.1, with
//! tokio's clock paused so backoff and timeouts are exact.

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{ErrorKind, QualityClient};

mod common;

use common::{builder, gaps, request, spawn_checks};

#[test]
fn client_is_clone_send_sync() {
    fn assert<T: Clone + Send + Sync + 'static>() {}
    assert::<QualityClient>();
    assert::<tower_quality_gate::QualityCheck>();
}

#[tokio::test(start_paused = true)]
async fn retries_503_twice_then_approves() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push_n(Reply::status(503), 2);
    let client = builder(coordinator.url()).build().unwrap();
    let verdict = client.check(request(1)).await.unwrap();
    assert!(verdict.approved);
    assert_eq!(coordinator.hits(), 3);
    assert_eq!(
        gaps(&coordinator),
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_not_retried() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::reject("lint", "warnings"));
    let client = builder(coordinator.url()).build().unwrap();
    let verdict = client.check(request(1)).await.unwrap();
    assert!(!verdict.approved);
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    let coordinator = TestCoordinator::start().await;
    for reply in [
        Reply::status(400),
        Reply::status(422),
        Reply::malformed_json(),
    ] {
        coordinator.reset();
        coordinator.always(reply);
        let client = builder(coordinator.url()).build().unwrap();
        let err = client.check(request(1)).await.unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(err.attempts(), Some(1));
        assert_eq!(coordinator.hits(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn connection_refused_makes_three_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = builder(url).build().unwrap();
    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_coordinator_hits_attempt_timeouts_then_the_deadline() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    // Attempts at 0 s, 1.1 s and 2.3 s; the deadline at 2.8 s cuts the third.
    let client = builder(coordinator.url())
        .attempt_timeout(Duration::from_secs(1))
        .total_timeout(Duration::from_millis(2800))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(2800));
    assert_eq!(coordinator.hits(), 3);

    // With a roomier deadline the attempt timeouts end it, after 3 attempts.
    coordinator.reset();
    let client = builder(coordinator.url())
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = client.check(request(2)).await.unwrap_err();
    assert!(err.is_attempt_timeout(), "{err:?}");
    assert!(err.is_timeout() && err.is_retryable());
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(start.elapsed(), Duration::from_millis(3300));
    assert_eq!(coordinator.hits(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(429).retry_after("1"));
    let client = builder(coordinator.url()).build().unwrap();
    assert!(client.check(request(1)).await.unwrap().approved);
    assert_eq!(coordinator.hits(), 2);
    assert_eq!(gaps(&coordinator), [Duration::from_secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_cap_returns_the_server_error_at_once() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503).retry_after("60"));
    let client = builder(coordinator.url()).build().unwrap();
    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(coordinator.hits(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_returns_the_server_error() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503).retry_after("8"));
    let client = builder(coordinator.url())
        .total_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = client.check(request(1)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_limit_bounds_calls_in_flight() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve().delay(Duration::from_millis(10)));
    let client = builder(coordinator.url())
        .concurrency_limit(Some(8))
        .build()
        .unwrap();
    let calls = spawn_checks(&client, 0..500);
    for call in calls {
        assert!(call.await.unwrap().unwrap().approved);
    }
    assert_eq!(coordinator.hits(), 500);
    assert_eq!(coordinator.peak_in_flight(), 8);
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_free_their_slots() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = builder(coordinator.url())
        .concurrency_limit(Some(8))
        .build()
        .unwrap();
    let calls = spawn_checks(&client, 0..100);
    while coordinator.in_flight() < 8 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for call in &calls {
        call.abort();
    }
    for call in calls {
        assert!(call.await.unwrap_err().is_cancelled());
    }

    // All 8 slots are free again: 8 new calls are in flight at once.
    coordinator.reset();
    coordinator.always(Reply::approve().delay(Duration::from_secs(1)));
    let start = Instant::now();
    let next = spawn_checks(&client, 0..8);
    for call in next {
        assert!(call.await.unwrap().unwrap().approved);
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(coordinator.hits(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_backoff_frees_its_slot() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503));
    let client = builder(coordinator.url())
        .concurrency_limit(Some(1))
        .build()
        .unwrap();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.check(request(1)).await }
    });
    while coordinator.hits() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    // The only slot is free: this call goes straight through.
    assert!(client.check(request(2)).await.unwrap().approved);
    assert_eq!(coordinator.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn service_contract() {
    let coordinator = TestCoordinator::start().await;
    let mut client = builder(coordinator.url())
        .concurrency_limit(Some(1))
        .build()
        .unwrap();
    // Called without poll_ready: a typed error, not a panic.
    let err = client.call(request(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady);
    // The usual way.
    let verdict = client
        .ready()
        .await
        .unwrap()
        .call(request(2))
        .await
        .unwrap();
    assert!(verdict.approved);
    // Readiness holds no slot: a call waits for its slot inside the call,
    // within its deadline, so a clone is ready while another is.
    let mut other = client.clone();
    client.ready().await.unwrap();
    let mut task = tokio_test::task::spawn(other.ready());
    tokio_test::assert_ready_ok!(task.poll());
    drop(task);
    assert!(other.call(request(3)).await.unwrap().approved);
    assert_eq!(coordinator.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_covers_the_wait_for_a_slot() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve().delay(Duration::from_secs(20)));
    let client = builder(coordinator.url())
        .concurrency_limit(Some(1))
        .attempt_timeout(Duration::from_secs(25))
        .build()
        .unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.check(request(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let start = Instant::now();
    let err = client.check(request(2)).await.unwrap_err();
    assert!(err.is_total_timeout());
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(first.await.unwrap().unwrap().approved);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_caps_an_outage() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    let budget =
        tower_quality_gate::retry::RetryBudget::new(Duration::from_secs(10), 0, 0.2).unwrap();
    let client = builder(coordinator.url())
        .retry_budget(Some(budget))
        .build()
        .unwrap();
    for n in 0..100 {
        let err = client.check(request(n)).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    }
    // 100 calls, 20% of them retried once more at most.
    let hits = coordinator.hits();
    assert!((100..=120).contains(&hits), "{hits}");
    // Without a budget every call makes its three attempts.
    coordinator.reset();
    let client = builder(coordinator.url())
        .retry_budget(None)
        .build()
        .unwrap();
    for n in 0..10 {
        client.check(request(n)).await.unwrap_err();
    }
    assert_eq!(coordinator.hits(), 30);
}

#[tokio::test]
async fn bad_configuration_fails_at_build() {
    for b in [
        QualityClient::builder("ftp://host"),
        QualityClient::builder("http://127.0.0.1:1").concurrency_limit(Some(0)),
        QualityClient::builder("http://127.0.0.1:1").total_timeout(Duration::ZERO),
        QualityClient::builder("http://127.0.0.1:1").bearer_token("a\r\nb"),
        QualityClient::builder("http://127.0.0.1:1").http(|c| c.header("x-a", "a\nb")),
    ] {
        assert!(b.build().unwrap_err().is_config());
    }
}

#[tokio::test]
async fn health_reports_up_down_and_slow() {
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::new(coordinator.url()).unwrap();
    client.health().await.unwrap();
    coordinator.set_health(Reply::status(503));
    let err = client.health().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let slow = QualityClient::builder(coordinator.url())
        .http(|c| c.health_timeout(Duration::from_millis(20)))
        .build()
        .unwrap();
    coordinator.set_health(Reply::approve().delay(Duration::from_secs(5)));
    let err = slow.health().await.unwrap_err();
    assert_eq!(
        err.timeout_kind(),
        Some(tower_quality_gate::TimeoutKind::Health)
    );
    assert_eq!(coordinator.requests()[0].path, "/health");
}
