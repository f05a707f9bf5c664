//! Faults of the answer: 5xx storms, 429 and 503 with `Retry-After`, and
//! bodies that are not a verdict.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::ErrorKind;

/// The client's default body cap, 1 MiB.
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
use serde_json::json;
use tokio::time::Instant;

use crate::common::{builder, client, gaps, hits_per_task, request, spawn_checks, Tally};

#[tokio::test(start_paused = true)]
async fn a_5xx_storm_fails_every_call_after_three_attempts() {
    let coordinator = TestCoordinator::start().await;
    let next = Arc::new(AtomicUsize::new(0));
    coordinator.respond_with({
        let next = next.clone();
        move |_| Reply::status([500, 502, 503, 504][next.fetch_add(1, Ordering::SeqCst) % 4])
    });
    let client = client(&coordinator);

    let start = Instant::now();
    let calls = spawn_checks(&client, 0..50);
    let mut tally = Tally::default();
    for call in calls {
        let outcome = call.await.unwrap();
        tally.add(&outcome);
        let err = outcome.unwrap_err();
        assert!(err.status().unwrap().is_server_error(), "{err:?}");
        assert!(err.is_retryable());
        assert_eq!(err.attempts(), Some(3));
        assert_eq!(err.body_snippet(), Some(r#"{"error":"scripted"}"#));
    }
    assert_eq!(tally.errors("status"), 50);
    assert_eq!(coordinator.hits(), 150);
    assert!(hits_per_task(&coordinator).values().all(|&n| n == 3));
    // All 50 run at once (the limit is 64): two backoffs in all.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

/// An HTTP date `secs` seconds from now (rounded down to the second, as the
/// format is); `Retry-After` dates are wall-clock time, not tokio's.
fn http_date_in(secs: i64) -> String {
    let now = SystemTime::now();
    let at = if secs >= 0 {
        now + Duration::from_secs(secs as u64)
    } else {
        now - Duration::from_secs(secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_wait_when_it_is_longer_than_the_backoff() {
    let ms = Duration::from_millis;
    for (reply, min, max) in [
        (Reply::status(429).retry_after("2"), ms(2000), ms(2000)),
        (Reply::status(503).retry_after("10"), ms(10_000), ms(10_000)),
        (Reply::status(503).retry_after("0"), ms(100), ms(100)),
        (Reply::status(503).retry_after("soon"), ms(100), ms(100)),
        (
            Reply::status(429).retry_after(&http_date_in(-60)),
            ms(100),
            ms(100),
        ),
        // A date is whole seconds of the wall clock: 5 s ahead asks for 4 to
        // 5 s, less the real time until the client reads it.
        (
            Reply::status(503).retry_after(&http_date_in(5)),
            ms(3000),
            ms(5000),
        ),
    ] {
        let coordinator = TestCoordinator::start().await;
        coordinator.push(reply.clone());
        let start = Instant::now();
        let verdict = client(&coordinator).check(request(1)).await.unwrap();
        assert!(verdict.approved, "{reply:?}");
        assert_eq!(coordinator.hits(), 2, "{reply:?}");
        let gap = gaps(&coordinator)[0];
        assert!(min <= gap && gap <= max, "{reply:?}: {gap:?}");
        assert_eq!(start.elapsed(), gap, "{reply:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_cap_ends_the_call_with_the_coordinators_error() {
    for (reply, status, min, max) in [
        (Reply::status(503).retry_after("11"), 503, 11, 11),
        (Reply::status(429).retry_after("3600"), 429, 3600, 3600),
        (
            Reply::status(429).retry_after(&http_date_in(60)),
            429,
            58,
            60,
        ),
    ] {
        let coordinator = TestCoordinator::start().await;
        coordinator.always(reply.clone());
        let start = Instant::now();
        let err = client(&coordinator).check(request(1)).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::from_u16(status).ok(), "{reply:?}");
        assert!(err.is_retryable(), "{reply:?}");
        assert_eq!(err.attempts(), Some(1), "{reply:?}");
        let asked = err.retry_after().unwrap();
        assert!(
            Duration::from_secs(min) <= asked && asked <= Duration::from_secs(max),
            "{reply:?}: {asked:?}"
        );
        assert_eq!(coordinator.hits(), 1, "{reply:?}");
        assert_eq!(start.elapsed(), Duration::ZERO, "{reply:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_repeated_is_honoured_each_time_up_to_the_attempts() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(429).retry_after("1"));
    let start = Instant::now();
    let err = client(&coordinator).check(request(1)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(gaps(&coordinator), [Duration::from_secs(1); 2]);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn retry_after_that_would_pass_the_deadline_ends_the_call_without_a_timeout() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503).retry_after("4"));
    let client = builder(coordinator.url())
        .total_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Attempt 2 at 4 s; a third at 8 s would pass the 5 s deadline.
    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(!err.is_timeout());
    assert_eq!(err.attempts(), Some(2));
    assert_eq!(coordinator.hits(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

/// A valid approval padded with whitespace to exactly `len` bytes.
fn approval_of_len(len: usize) -> Reply {
    let json = r#"{"approved":true,"gate":"all"}"#;
    Reply::raw(
        200,
        "application/json",
        format!("{json}{}", " ".repeat(len - json.len())),
    )
}

#[tokio::test(start_paused = true)]
async fn bodies_that_are_not_a_verdict_fail_at_once_and_are_never_retried() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases = [
        (ErrorKind::InvalidResponse, Reply::malformed_json()),
        (
            ErrorKind::InvalidResponse,
            Reply::raw(200, "application/json", ""),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::raw(200, "application/json", "null"),
        ),
        (ErrorKind::InvalidResponse, Reply::json(&json!({}))),
        (
            ErrorKind::InvalidResponse,
            Reply::json(&json!([true, "all"])),
        ),
        (ErrorKind::InvalidResponse, Reply::json(&json!("approved"))),
        (
            ErrorKind::InvalidResponse,
            Reply::json(&json!({"gate": "build"})),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::json(&json!({"approved": "true", "gate": "build"})),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::json(&json!({"approved": 1, "gate": "build"})),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::json(&json!({"approved": true, "gate": 5})),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::json(&json!({"approved": true, "gate": "all", "details": [1]})),
        ),
        // Nesting deeper than serde_json's recursion limit: an error, not a
        // stack overflow.
        (
            ErrorKind::InvalidResponse,
            Reply::raw(
                200,
                "application/json",
                format!(r#"{{"approved":true,"gate":"all","details":{{"x":{deep}}}}}"#),
            ),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::approve().content_type("text/html"),
        ),
        (
            ErrorKind::InvalidResponse,
            Reply::raw(200, "text/plain", "approved"),
        ),
        (
            ErrorKind::BodyTooLarge,
            Reply::approve().body_of_size(DEFAULT_BODY_LIMIT as u64 + 1),
        ),
        (ErrorKind::BodyTooLarge, Reply::approve().endless_body()),
        (
            ErrorKind::BodyTooLarge,
            approval_of_len(DEFAULT_BODY_LIMIT + 1),
        ),
    ];
    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);
    for (n, (kind, reply)) in cases.into_iter().enumerate() {
        coordinator.push(reply);
        let start = Instant::now();
        let err = client.check(request(n)).await.unwrap_err();
        assert_eq!(err.kind(), kind, "case {n}: {err:?}");
        assert!(!err.is_retryable(), "case {n}");
        assert_eq!(err.attempts(), Some(1), "case {n}");
        assert_eq!(coordinator.hits(), n + 1, "case {n}");
        assert_eq!(start.elapsed(), Duration::ZERO, "case {n}");
    }

    // The cap is inclusive: a verdict of exactly 1 MiB is read.
    coordinator.push(approval_of_len(DEFAULT_BODY_LIMIT));
    assert!(client.check(request(100)).await.unwrap().approved);
}
