//! A policy of your own in place of the default: retry only 503s, after a
//! fixed delay, in the same stack `QualityClient` is built from, assembled
//! with tower's `ServiceBuilder` from the layers the builder hands out.
//! Runs against an in-process test coordinator, and checks that every
//! attempt of a call carried the same request id and that the error says
//! how many attempts were made.
//!
//! ```text
//! cargo run --example custom_retry_policy
//! ```

use std::time::Duration;

use http::StatusCode;
use tower::retry::Policy;
use tower::{ServiceBuilder, ServiceExt};
use tower_quality_gate::call::Call;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{Error, QualityClient, QualityRequest, QualityResponse};

/// Retries a 503 after `delay`, while the call has sent fewer than
/// `max_attempts`; nothing else.
#[derive(Clone, Debug)]
struct RetryOn503 {
    max_attempts: u32,
    delay: Duration,
}

impl Policy<Call, QualityResponse, Error> for RetryOn503 {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        call: &mut Call,
        result: &mut Result<QualityResponse, Error>,
    ) -> Option<Self::Future> {
        match result {
            // The call counts its own attempts, the same count its error
            // reports: no counter in the policy.
            Err(e)
                if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE)
                    && call.attempts() < self.max_attempts =>
            {
                Some(tokio::time::sleep(self.delay))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        // A reference-count increment: the body was encoded once.
        Some(call.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let coordinator = TestCoordinator::start().await;
    let url = match std::env::var("COORDINATOR_URL") {
        Ok(url) => url,
        Err(_) => coordinator.url(),
    };
    // The first call meets two 503s, then an approval; the second a 500.
    coordinator
        .push_n(Reply::status(503), 2)
        .push(Reply::approve())
        .push(Reply::status(500));

    let b = QualityClient::builder(url);
    let service = ServiceBuilder::new()
        .layer(b.identify_layer())
        .layer(b.concurrency_limit_layer())
        .layer(b.deadline_layer())
        .retry(RetryOn503 {
            max_attempts: 3,
            delay: Duration::from_millis(20),
        })
        .option_layer(b.circuit_breaker_layer())
        .layer(b.attempt_timeout_layer())
        .service(b.target_service()?);

    let req = QualityRequest::new("task-1", "agent-1").files(["src/lib.rs"]);
    let first = service.clone().oneshot(req.clone()).await;
    println!(
        "first call: {:?} after {} hits",
        first.as_ref().map(|v| v.approved),
        coordinator.hits()
    );
    if std::env::var("COORDINATOR_URL").is_ok() {
        return Ok(()); // a real coordinator: no scripted answers to check
    }
    assert!(first.unwrap().approved, "two 503s are retried");
    assert_eq!(coordinator.hits(), 3);
    let ids: Vec<_> = coordinator
        .requests()
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "retries share the id");

    let second = service.oneshot(req).await;
    let err = second.expect_err("a 500 is not retried by this policy");
    println!(
        "second call: status {:?} after {:?} attempt(s), request id {:?}",
        err.status(),
        err.attempts(),
        err.request_id()
    );
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(coordinator.hits(), 4);
    Ok(())
}
