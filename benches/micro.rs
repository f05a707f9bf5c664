//! Micro-benchmarks of the per-call work that is not I/O, through the
//! public API only:
//!
//! - `encode`: a typical request (five files, a one-line summary) to JSON
//!   bytes, as `QualityClient` encodes it once per call;
//! - `decode`: `QualityResponse::from_json` on a small verdict, on a
//!   300-byte one with per-gate `details`, and on one whose `details` carry
//!   64 KiB of AI-review findings;
//! - `retry_decision`: one `tower::retry::Policy::retry` call of the
//!   client's `RetryPolicy` (deadline and budget set, as `QualityClient`
//!   configures it) after a verdict, a 503, a 503 with `Retry-After`, a 400,
//!   and a boxed tower timeout;
//! - `classify`: `Error::is_retryable` and `Error::from(BoxError)`.
//!
//! The status errors are real: they come from calls to the crate's
//! `TestCoordinator`, made once before measuring.
//!
//! Run it with `cargo bench --bench micro` (about a minute);
//! `cargo bench --bench micro -- decode` runs the benchmarks whose name
//! contains `decode`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use tower::retry::Policy;
use tower::ServiceExt;
use tower_quality_gate::call::Call;
use tower_quality_gate::retry::{RetryBudget, RetryPolicy};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{
    BoxError, Error, QualityCheck, QualityRequest, QualityResponse, TimeoutKind,
};

mod support;

/// The request of the throughput bench: a typical check of a five-file change.
fn request() -> QualityRequest {
    support::request(1234)
}

/// A verdict whose `details.aiReview.findings` hold at least `size` bytes.
fn verdict_with_details(size: usize) -> Vec<u8> {
    let mut findings = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let finding = json!({
            "file": format!("src/module_{}/file_{}.rs", i % 17, i),
            "line": 10 + i,
            "severity": if i % 3 == 0 { "warning" } else { "info" },
            "message": "consider borrowing here instead of cloning the whole request body",
        });
        len += finding.to_string().len() + 1;
        findings.push(finding);
        i += 1;
    }
    let verdict = json!({
        "approved": false,
        "gate": "aiReview",
        "message": "confidence 0.82 is below 0.9",
        "details": {"aiReview": {"confidence": 0.82, "approved": false, "findings": findings}},
    });
    serde_json::to_vec(&verdict).expect("a JSON value always encodes")
}

fn encode(c: &mut Criterion) {
    let req = request();
    let len = serde_json::to_vec(&req).expect("encodes").len();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("request_5_files", |b| {
        b.iter(|| serde_json::to_vec(black_box(&req)).expect("encodes"))
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let small = br#"{"approved":false,"gate":"lint","message":"2 warnings"}"#.to_vec();
    let typical = br#"{"approved":true,"gate":"aiReview","message":"all gates passed","details":{"build":{"ok":true,"ms":8123},"lint":{"ok":true,"warnings":0},"test":{"ok":true,"passed":412,"failed":0},"coverage":{"ok":true,"percent":91.4},"aiReview":{"confidence":0.94,"approved":true,"findings":[]}}}"#.to_vec();
    let large = verdict_with_details(64 * 1024);
    let mut group = c.benchmark_group("decode");
    for (name, body) in [
        ("small", &small),
        ("typical_details", &typical),
        ("details_64KiB", &large),
    ] {
        assert!(QualityResponse::from_json(body).is_ok(), "{name} decodes");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| QualityResponse::from_json(black_box(body)))
        });
    }
    group.finish();
}

/// Real errors, from calls to a scripted coordinator.
struct Errors {
    unavailable: Error,
    unavailable_retry_after: Error,
    bad_request: Error,
}

fn real_errors(rt: &tokio::runtime::Runtime) -> Errors {
    rt.block_on(async {
        let coordinator = TestCoordinator::start().await;
        coordinator
            .push(Reply::status(503))
            .push(Reply::status(503).retry_after("1"))
            .push(Reply::status(400));
        let check = QualityCheck::new(coordinator.url()).expect("a valid check");
        let call = || check.clone().oneshot(request());
        let unavailable = call().await.expect_err("a 503");
        let unavailable_retry_after = call().await.expect_err("a 503");
        let bad_request = call().await.expect_err("a 400");
        assert_eq!(
            unavailable_retry_after.retry_after(),
            Some(Duration::from_secs(1))
        );
        Errors {
            unavailable,
            unavailable_retry_after,
            bad_request,
        }
    })
}

fn retry_decision(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let errors = real_errors(&rt);
    // A retry's wait is a Tokio `Sleep`, which needs a runtime to exist.
    let _runtime = rt.enter();

    // As `QualityClient` configures it: a deadline and a budget of 20% of
    // calls, here with a floor of a billion retries a second so that it
    // never runs out and every decision takes the same path (tower's budget
    // expires deposits by time window, so deposits matching withdrawals
    // one for one do not keep it solvent over a run of millions).
    let mut template = RetryPolicy::new().budget(
        RetryBudget::new(Duration::from_secs(10), 1_000_000_000, 0.2).expect("a valid budget"),
    );
    // The call a policy is handed, with the client's 30 s deadline.
    let mut attempt = Call::new(request().timeout(Duration::from_secs(30))).expect("a call");
    // What tower's `Retry` does per call: the template sees the call, then
    // a clone of it decides for that call.
    let call_for_clone = attempt.clone();
    let mut per_call = move || {
        Policy::<Call, QualityResponse, Error>::clone_request(&mut template, &call_for_clone);
        template.clone()
    };
    let mut group = c.benchmark_group("retry_decision");
    let mut verdict: Result<QualityResponse, Error> = Ok(QualityResponse::approved("all"));
    let mut unavailable = Err(errors.unavailable);
    let mut retry_after = Err(errors.unavailable_retry_after);
    let mut bad_request = Err(errors.bad_request);
    for (name, result, retries) in [
        ("verdict_stops", &mut verdict, false),
        ("503_retries", &mut unavailable, true),
        ("503_retry_after_retries", &mut retry_after, true),
        ("400_stops", &mut bad_request, false),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                &mut per_call,
                |policy| {
                    let wait = policy.retry(&mut attempt, result);
                    assert_eq!(wait.is_some(), retries);
                    wait
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("boxed_elapsed_retries", |b| {
        let mut elapsed: Result<QualityResponse, BoxError> =
            Err(Box::new(tower::timeout::error::Elapsed::new()));
        b.iter_batched_ref(
            &mut per_call,
            |policy| {
                let wait = Policy::<Call, QualityResponse, BoxError>::retry(
                    policy,
                    &mut attempt,
                    &mut elapsed,
                );
                assert!(wait.is_some());
                wait
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn classify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let errors = real_errors(&rt);
    let timeout = Error::timeout(TimeoutKind::Attempt);

    let mut group = c.benchmark_group("classify");
    for (name, err) in [
        ("is_retryable/503", &errors.unavailable),
        ("is_retryable/400", &errors.bad_request),
        ("is_retryable/timeout", &timeout),
    ] {
        group.bench_function(name, |b| b.iter(|| black_box(err).is_retryable()));
    }
    group.bench_function("from_box_error/elapsed", |b| {
        b.iter_batched(
            || -> BoxError { Box::new(tower::timeout::error::Elapsed::new()) },
            Error::from,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("from_box_error/typed", |b| {
        b.iter_batched(
            || -> BoxError { Box::new(Error::timeout(TimeoutKind::Attempt)) },
            Error::from,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("from_box_error/other", |b| {
        b.iter_batched(
            || -> BoxError { "a layer's own error".into() },
            Error::from,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Each figure is tens of nanoseconds to tens of microseconds: 3 s of
    // samples is plenty, and keeps the whole run near a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = encode, decode, retry_decision, classify
}
criterion_main!(benches);
