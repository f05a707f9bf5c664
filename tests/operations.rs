//! Operating against a coordinator: the circuit breaker, request ids, and
//! fail-closed verdicts, against a real coordinator on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use tower_quality_gate::breaker::{CircuitBreakerConfig, CircuitState};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, Verdict};

mod common;

use common::{builder, request, spawn_checks};

fn with_breaker(coordinator: &TestCoordinator) -> QualityClient {
    builder(coordinator.url())
        .retry_budget(None)
        .circuit_breaker(Some(CircuitBreakerConfig::default()))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_fails_fast_and_closes_after_a_good_probe() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    let client = with_breaker(&coordinator);
    assert_eq!(client.circuit_state(), Some(CircuitState::Closed));

    // Two calls of 3 attempts: the 5th failed attempt opens the circuit, and
    // the 6th is refused without reaching the coordinator.
    client.check(request(1)).await.unwrap_err();
    let err = client.check(request(2)).await.unwrap_err();
    assert!(err.is_circuit_open(), "{err:?}");
    assert_eq!(coordinator.hits(), 5);
    assert_eq!(client.circuit_state(), Some(CircuitState::Open));

    // While open: every call fails at once and the hit count stops growing.
    let start = Instant::now();
    for n in 0..100 {
        let verdict = client.verdict(request(n)).await;
        assert!(!verdict.is_approved());
        assert!(verdict.error().unwrap().is_circuit_open());
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(coordinator.hits(), 5);

    // After the 30 s cooldown one probe goes through; it succeeds and closes it.
    coordinator.always(Reply::approve());
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(client.circuit_state(), Some(CircuitState::HalfOpen));
    assert!(client.check(request(3)).await.unwrap().approved);
    assert_eq!(client.circuit_state(), Some(CircuitState::Closed));
    assert_eq!(coordinator.hits(), 6);
}

#[tokio::test(start_paused = true)]
async fn breaker_ignores_rejections_and_client_errors() {
    let coordinator = TestCoordinator::start().await;
    let client = with_breaker(&coordinator);
    for n in 0..10 {
        coordinator.push(if n % 2 == 0 {
            Reply::status(422)
        } else {
            Reply::reject("lint", "no")
        });
        let _ = client.check(request(n)).await;
    }
    assert_eq!(client.circuit_state(), Some(CircuitState::Closed));
    assert_eq!(coordinator.hits(), 10);
}

#[tokio::test]
async fn the_breaker_is_off_by_default() {
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::new(coordinator.url()).unwrap();
    assert_eq!(client.circuit_state(), None);
}

#[tokio::test(start_paused = true)]
async fn request_id_is_shared_by_retries_and_unique_across_calls() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push_n(Reply::status(502), 2);
    let client = builder(coordinator.url()).build().unwrap();
    client.check(request(0)).await.unwrap();
    let ids: Vec<_> = coordinator
        .requests()
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    coordinator.reset();
    let calls = spawn_checks(&client, 1..=1000);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let unique: HashSet<_> = coordinator
        .requests()
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    assert_eq!(unique.len(), 1000);
    assert!(!unique.contains(&ids[0]));
}

#[tokio::test]
async fn request_id_header_is_configurable() {
    let coordinator = TestCoordinator::start().await;
    let named = QualityClient::builder(coordinator.url())
        .http(|c| c.request_id_header(Some("idempotency-key")))
        .build()
        .unwrap();
    named.check(request(1)).await.unwrap();
    let none = QualityClient::builder(coordinator.url())
        .http(|c| c.request_id_header(None))
        .build()
        .unwrap();
    none.check(request(2)).await.unwrap();
    let got = coordinator.requests();
    assert!(got[0].headers.contains_key("idempotency-key"));
    assert!(!got[0].headers.contains_key("x-request-id"));
    assert!(!got[1].headers.contains_key("idempotency-key"));
    assert!(!got[1].headers.contains_key("x-request-id"));
    let bad =
        QualityClient::builder(coordinator.url()).http(|c| c.request_id_header(Some("bad header")));
    assert!(bad.build().unwrap_err().is_config());
}

#[tokio::test(start_paused = true)]
async fn verdicts_fail_closed() {
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .build()
        .unwrap();
    coordinator.push(Reply::approve());
    coordinator.push(Reply::json(&serde_json::json!({
        "approved": false,
        "gate": "aiReview",
        "message": "low confidence",
        "details": {"aiReview": {"confidence": 0.42, "approved": false, "findings": ["unsafe unwrap"]}}
    })));
    coordinator.push(Reply::status(500));
    coordinator.push(Reply::malformed_json());

    assert!(matches!(
        client.verdict(request(1)).await,
        Verdict::Approved(_)
    ));
    match client.verdict(request(2)).await {
        Verdict::Rejected {
            gate,
            message,
            details,
        } => {
            assert_eq!(gate, "aiReview");
            assert_eq!(message.as_deref(), Some("low confidence"));
            assert_eq!(details.unwrap()["aiReview"]["confidence"], 0.42);
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..2 {
        let verdict = client.verdict(request(3)).await;
        assert!(verdict.is_unavailable() && !verdict.is_approved());
    }
}
