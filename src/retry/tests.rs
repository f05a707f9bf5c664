//! The policy's decisions, at poll level with paused time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio::time::Instant;
use tower::retry::Policy;
use tower::{service_fn, Service, ServiceExt};

use super::*;
use crate::error::RetryAfter;

fn status(code: u16, retry_after: Option<RetryAfter>) -> Error {
    Error::http_status(
        StatusCode::from_u16(code).unwrap(),
        String::new(),
        retry_after,
    )
}

fn deterministic() -> RetryPolicy {
    RetryPolicy::new().backoff(ExponentialBackoff::default().jitter(Jitter::None))
}

/// Runs one call's decisions: the template sees the call, then its clone
/// decides after each failed attempt. Returns the waits it asked for.
fn waits(template: &mut RetryPolicy, errors: impl IntoIterator<Item = Error>) -> Vec<Duration> {
    let mut req = ();
    Policy::<(), (), Error>::clone_request(template, &req);
    let mut policy = template.clone();
    let mut out = Vec::new();
    for err in errors {
        let mut result: Result<(), Error> = Err(err);
        match policy.retry(&mut req, &mut result) {
            Some(sleep) => out.push(sleep.deadline() - Instant::now()),
            None => break,
        }
        Policy::<(), (), Error>::clone_request(&mut policy, &req);
    }
    out
}

fn errors(n: usize, code: u16) -> Vec<Error> {
    (0..n).map(|_| status(code, None)).collect()
}

#[tokio::test(start_paused = true)]
async fn exact_backoff_sequence_without_jitter() {
    let mut policy = deterministic().attempts(6);
    let got = waits(&mut policy, errors(10, 503));
    let ms: Vec<u128> = got.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600]);
}

#[tokio::test(start_paused = true)]
async fn default_jitter_stays_within_bounds() {
    let mut policy = RetryPolicy::new();
    for _ in 0..2_000 {
        let got = waits(&mut policy, errors(3, 500));
        assert_eq!(got.len(), 2);
        assert!(got[0] <= Duration::from_millis(100));
        assert!(got[1] <= Duration::from_millis(200));
    }
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_and_verdicts_stop_at_once() {
    let mut policy = deterministic();
    for err in [
        status(400, None),
        status(404, None),
        status(422, None),
        Error::invalid("x"),
        Error::body_too_large(1),
        Error::config("x"),
        Error::circuit_open(),
    ] {
        assert!(waits(&mut policy, [err]).is_empty());
    }
    let mut req = ();
    let mut rejected: Result<QualityResponseLike, Error> = Ok(QualityResponseLike);
    assert!(policy.retry(&mut req, &mut rejected).is_none());
}

#[derive(Clone, Copy)]
struct QualityResponseLike;

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_and_date() {
    let mut policy = deterministic();
    let got = waits(
        &mut policy,
        [status(429, Some(RetryAfter::Delay(Duration::from_secs(3))))],
    );
    assert_eq!(got, [Duration::from_secs(3)]);

    let at = SystemTime::now() + Duration::from_secs(5);
    let got = waits(&mut policy, [status(503, Some(RetryAfter::At(at)))]);
    // An HTTP date has whole seconds, and the wall clock moves on.
    assert!(
        got[0] > Duration::from_secs(3) && got[0] <= Duration::from_secs(5),
        "{got:?}"
    );

    // A shorter Retry-After than the backoff keeps the backoff.
    let got = waits(
        &mut deterministic()
            .backoff(ExponentialBackoff::new(Duration::from_secs(2)).jitter(Jitter::None)),
        [status(503, Some(RetryAfter::Delay(Duration::from_secs(1))))],
    );
    assert_eq!(got, [Duration::from_secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_cap_ends_retrying() {
    let mut policy = deterministic().max_retry_after(Duration::from_secs(10));
    let ok = waits(
        &mut policy,
        [status(
            503,
            Some(RetryAfter::Delay(Duration::from_secs(10))),
        )],
    );
    assert_eq!(ok, [Duration::from_secs(10)]);
    let over = waits(
        &mut policy,
        [status(
            503,
            Some(RetryAfter::Delay(Duration::from_secs(11))),
        )],
    );
    assert!(over.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_ends_retrying() {
    let mut policy = deterministic().deadline(Some(Duration::from_secs(5)));
    // 4 s fits into 5 s from the start of the call.
    let fits = waits(
        &mut policy,
        [status(503, Some(RetryAfter::Delay(Duration::from_secs(4))))],
    );
    assert_eq!(fits.len(), 1);

    // The same wait after 2 s spent in the first attempt does not.
    let mut req = ();
    Policy::<(), (), Error>::clone_request(&mut policy, &req);
    let mut call = policy.clone();
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut result: Result<(), Error> =
        Err(status(503, Some(RetryAfter::Delay(Duration::from_secs(4)))));
    assert!(call.retry(&mut req, &mut result).is_none());
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_stops_retries() {
    // No floor and no share: no retry is ever allowed.
    let none = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
    let mut policy = deterministic().budget(none);
    assert!(waits(&mut policy, errors(3, 503)).is_empty());

    // 50% of calls and no floor: the first call's deposit pays half a retry;
    // the second's completes one.
    let half = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    let mut policy = deterministic().budget(half);
    assert_eq!(waits(&mut policy, errors(3, 503)).len(), 0);
    assert_eq!(waits(&mut policy, errors(3, 503)).len(), 1);
    assert_eq!(waits(&mut policy, errors(3, 503)).len(), 0);
}

#[tokio::test(start_paused = true)]
async fn boxed_errors_are_classified_too() {
    let mut policy = deterministic();
    let mut req = ();
    Policy::<(), (), BoxError>::clone_request(&mut policy, &req);
    let mut call = policy.clone();
    let mut elapsed: Result<(), BoxError> = Err(Box::new(tower::timeout::error::Elapsed::new()));
    assert!(call.retry(&mut req, &mut elapsed).is_some());
    let mut typed: Result<(), BoxError> = Err(Box::new(status(400, None)));
    assert!(call.retry(&mut req, &mut typed).is_none());
    let mut other: Result<(), BoxError> = Err("unknown".into());
    assert!(policy.clone().retry(&mut req, &mut other).is_none());
}

#[tokio::test(start_paused = true)]
async fn attempt_count_resets_per_request() {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let inner = service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), Error>(status(503, None)) }
    });
    let mut svc = tower::retry::Retry::new(deterministic(), inner);
    for call in 1..=3 {
        let err = svc.ready().await.unwrap().call(call).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(hits.load(Ordering::SeqCst), 3 * call);
    }
}

#[tokio::test(start_paused = true)]
async fn one_attempt_never_retries() {
    let mut policy = deterministic().attempts(1);
    assert!(waits(&mut policy, errors(3, 503)).is_empty());
    assert_eq!(RetryPolicy::new().attempts(0).max_attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_lost_on_a_pooled_connection_is_resent_once_for_free() {
    let lost = || Error::transport("closed").lost_on_pooled_connection();
    let budget = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
    // One attempt and an empty budget: still resent at once, once.
    let mut policy = deterministic().attempts(1).budget(budget);
    assert_eq!(waits(&mut policy, [lost(), lost()]), [Duration::ZERO]);
    // With attempts left, the resend does not count as one.
    let mut policy = deterministic().attempts(2);
    let got = waits(&mut policy, [lost(), status(503, None), status(503, None)]);
    assert_eq!(got, [Duration::ZERO, Duration::from_millis(100)]);
}
