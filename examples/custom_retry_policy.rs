//! A policy of your own in place of the default: retry only 503s, after a
//! fixed delay, at most twice, around the bare `QualityCheck` with tower's
//! `ServiceBuilder`. Runs against an in-process test coordinator.
//!
//! ```text
//! cargo run --example custom_retry_policy
//! ```

use std::time::Duration;

use http::StatusCode;
use quality_gate::testing::{Reply, TestCoordinator};
use quality_gate::{Error, QualityCheck, QualityRequest, QualityResponse};
use tower::retry::Policy;
use tower::{ServiceBuilder, ServiceExt};

/// Retries a 503 after `delay`, up to `retries` times; nothing else.
#[derive(Clone, Debug)]
struct RetryOn503 {
    retries: u32,
    delay: Duration,
}

impl Policy<QualityRequest, QualityResponse, Error> for RetryOn503 {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut QualityRequest,
        result: &mut Result<QualityResponse, Error>,
    ) -> Option<Self::Future> {
        match result {
            Err(e) if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE) && self.retries > 0 => {
                // This is the clone tower made for this call: the count is
                // per call.
                self.retries -= 1;
                Some(tokio::time::sleep(self.delay))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &QualityRequest) -> Option<QualityRequest> {
        Some(req.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let coordinator = TestCoordinator::start().await;
    // The first call meets two 503s, then an approval; the second a 500.
    coordinator
        .push_n(Reply::status(503), 2)
        .push(Reply::approve())
        .push(Reply::status(500));

    let service = ServiceBuilder::new()
        .retry(RetryOn503 {
            retries: 2,
            delay: Duration::from_millis(20),
        })
        .service(QualityCheck::new(coordinator.url())?);

    let req = QualityRequest::new("task-1", "agent-1").files(["src/lib.rs"]);
    let first = service.clone().oneshot(req.clone()).await;
    println!(
        "first call: {:?} after {} hits",
        first.as_ref().map(|v| v.approved),
        coordinator.hits()
    );
    assert!(first.unwrap().approved, "two 503s are retried");
    assert_eq!(coordinator.hits(), 3);

    let second = service.oneshot(req).await;
    let status = second.as_ref().err().and_then(Error::status);
    println!("second call: status {status:?} (a 500 is not retried by this policy)");
    assert_eq!(status, Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(coordinator.hits(), 4);
    Ok(())
}
