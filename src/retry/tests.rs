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
    RetryPolicy::new().backoff(JitteredBackoff::default().jitter(Jitter::None))
}

fn call() -> Call {
    Call::new(crate::QualityRequest::new("t", "a")).unwrap()
}

/// Runs one call's decisions as tower's `Retry` does: the template is
/// cloned for the call, each attempt is sent (counted on the call), and the
/// clone decides after it. Returns the waits it asked for.
fn waits(template: &mut RetryPolicy, errors: impl IntoIterator<Item = Error>) -> Vec<Duration> {
    waits_for(template, &mut call(), errors)
}

fn waits_for(
    template: &mut RetryPolicy,
    call: &mut Call,
    errors: impl IntoIterator<Item = Error>,
) -> Vec<Duration> {
    Policy::<Call, (), Error>::clone_request(template, call);
    let mut policy = template.clone();
    let mut out = Vec::new();
    for err in errors {
        call.start_attempt();
        let mut result: Result<(), Error> = Err(err);
        match policy.retry(call, &mut result) {
            Some(sleep) => out.push(sleep.deadline() - Instant::now()),
            None => break,
        }
        Policy::<Call, (), Error>::clone_request(&mut policy, call);
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
    let mut req = call();
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
            .backoff(JitteredBackoff::new(Duration::from_secs(2)).jitter(Jitter::None)),
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
    let with_deadline = || {
        let req = crate::QualityRequest::new("t", "a").timeout(Duration::from_secs(5));
        Call::new(req).unwrap()
    };
    let mut policy = deterministic();
    // 4 s fits into 5 s from the start of the call.
    let fits = waits_for(
        &mut policy,
        &mut with_deadline(),
        [status(503, Some(RetryAfter::Delay(Duration::from_secs(4))))],
    );
    assert_eq!(fits.len(), 1);

    // The same wait after 2 s spent in the first attempt does not: the
    // policy plans on the call's own deadline, the clock the deadline layer
    // fires on.
    let mut call = with_deadline();
    tokio::time::advance(Duration::from_secs(2)).await;
    let none = waits_for(
        &mut policy,
        &mut call,
        [status(503, Some(RetryAfter::Delay(Duration::from_secs(4))))],
    );
    assert!(none.is_empty());
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
    let mut req = call();
    req.start_attempt();
    let mut per_call = policy.clone();
    let mut elapsed: Result<(), BoxError> = Err(Box::new(tower::timeout::error::Elapsed::new()));
    assert!(per_call.retry(&mut req, &mut elapsed).is_some());
    let mut typed: Result<(), BoxError> = Err(Box::new(status(400, None)));
    assert!(per_call.retry(&mut req, &mut typed).is_none());
    let mut other: Result<(), BoxError> = Err("unknown".into());
    assert!(policy.retry(&mut req, &mut other).is_none());
}

#[tokio::test(start_paused = true)]
async fn attempt_count_resets_per_request() {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let inner = service_fn(move |c: Call| {
        c.start_attempt();
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), Error>(status(503, None)) }
    });
    let mut svc = tower::retry::Retry::new(deterministic(), inner);
    for n in 1..=3 {
        let err = svc.ready().await.unwrap().call(call()).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(hits.load(Ordering::SeqCst), 3 * n);
    }
}

#[tokio::test(start_paused = true)]
async fn one_attempt_never_retries() {
    let mut policy = deterministic().attempts(1);
    assert!(waits(&mut policy, errors(3, 503)).is_empty());
    // 0 sends one attempt too (the builder refuses it as a setting).
    let mut zero = deterministic().attempts(0);
    assert!(waits(&mut zero, errors(3, 503)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_call_deposits_in_the_budget_once_whatever_its_attempts() {
    // 50% of calls and no floor: two calls pay for one retry, however many
    // decisions each made.
    let half = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    let mut policy = deterministic().attempts(1).budget(half);
    for _ in 0..2 {
        assert!(waits(&mut policy, errors(1, 503)).is_empty());
    }
    let mut policy = policy.attempts(3);
    assert_eq!(waits(&mut policy, errors(3, 503)).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_as_long_as_the_window_keeps_its_deposit() {
    // No floor, one retry per call: a call whose first attempt took the
    // whole window (a 10 s attempt timeout against a 10 s window) still
    // pays for its own retry.
    let all = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
    let mut policy = deterministic().attempts(2).budget(all);
    for _ in 0..3 {
        let mut slow = call();
        Policy::<Call, (), Error>::clone_request(&mut policy, &slow);
        let mut per_call = policy.clone();
        slow.start_attempt();
        tokio::time::advance(Duration::from_secs(15)).await;
        let mut result: Result<(), Error> = Err(status(503, None));
        assert!(per_call.retry(&mut slow, &mut result).is_some());
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The class of the test above: whatever the window and however
        /// long the first attempt took (up to three windows), a call's own
        /// deposit is in the window its retry is judged in.
        #[test]
        fn a_calls_own_deposit_pays_for_its_retry(ttl_s in 1u64..=60, first_ms in 0u64..=180_000) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let retried = runtime.block_on(async {
                let budget = RetryBudget::new(Duration::from_secs(ttl_s), 0, 1.0).unwrap();
                let mut policy = deterministic().attempts(2).budget(budget);
                let mut slow = call();
                Policy::<Call, (), Error>::clone_request(&mut policy, &slow);
                let mut per_call = policy.clone();
                slow.start_attempt();
                tokio::time::advance(Duration::from_millis(first_ms)).await;
                let mut result: Result<(), Error> = Err(status(503, None));
                per_call.retry(&mut slow, &mut result).is_some()
            });
            prop_assert!(retried, "ttl {ttl_s} s, first attempt {first_ms} ms");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_classifier_decides_what_is_retried_and_the_rest_stays() {
    // Not a 500, everything else as usual: attempts, backoff, deadline.
    let mut policy = deterministic().classify(|e: &Error| {
        e.is_retryable() && e.status() != Some(StatusCode::INTERNAL_SERVER_ERROR)
    });
    assert!(waits(&mut policy, errors(3, 500)).is_empty());
    assert_eq!(waits(&mut policy, errors(3, 503)).len(), 2);
    // A total timeout is final whatever the classifier says.
    let mut always = deterministic().classify(|_: &Error| true);
    let mut req = call();
    req.start_attempt();
    let mut result: Result<(), Error> = Err(Error::timeout(crate::TimeoutKind::Total));
    assert!(always.retry(&mut req, &mut result).is_none());
}

/// Any wait a backoff or a coordinator asks for, however absurd, is
/// planned without panicking: the sums saturate.
#[tokio::test(start_paused = true)]
async fn absurd_waits_never_panic() {
    #[derive(Debug)]
    struct Forever;
    impl RetryBackoff for Forever {
        fn delay(&self, _retry: u32) -> Duration {
            Duration::MAX
        }
    }
    let with_deadline =
        || Call::new(crate::QualityRequest::new("t", "a").timeout(Duration::MAX)).unwrap();
    let mut policy = RetryPolicy::new()
        .backoff(Forever)
        .max_retry_after(Duration::MAX);
    let _ = waits_for(&mut policy, &mut with_deadline(), errors(3, 503));
    let huge = status(503, Some(RetryAfter::Delay(Duration::MAX)));
    let _ = waits_for(&mut policy, &mut with_deadline(), [huge]);
    let _ = waits(&mut policy, errors(3, 503));
}
