//! The gate carries an incoming request's context into its check: the
//! request id and W3C trace context reach the coordinator, and a
//! `grpc-timeout` bounds the check. Real coordinator on 127.0.0.1, paused
//! clock.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_quality_gate::gate::{DeriveQualityRequest, QualityGateLayer};
use tower_quality_gate::propagate::{deadline_margin, Propagation};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The check comes from the headers alone; the body is the task id.
async fn derive(
    req: Request<String>,
) -> Result<(QualityRequest, Request<String>), Response<String>> {
    Ok((QualityRequest::new(req.body().as_str(), "agent-1"), req))
}

/// A gated echo service and the count of requests it handled.
fn gated<D>(
    layer: QualityGateLayer<QualityClient, D>,
) -> (
    impl Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
    Arc<AtomicUsize>,
)
where
    D: DeriveQualityRequest<
            Request<String>,
            Request = Request<String>,
            Response = Response<String>,
        > + Clone,
{
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let inner = service_fn(move |req: Request<String>| {
        count.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(Response::new(req.into_body())) }
    });
    (layer.layer(inner), handled)
}

fn incoming() -> http::request::Builder {
    Request::post("/tasks/complete")
}

#[tokio::test(start_paused = true)]
async fn request_id_and_trace_context_reach_the_coordinator() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503)); // and a retry: every attempt carries them
    let client = QualityClient::new(coordinator.url()).unwrap();
    let (service, handled) = gated(QualityGateLayer::new(client, derive));

    let req = incoming()
        .header("x-request-id", "edge-req-42")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(String::from("task-1"))
        .unwrap();
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(handled.load(Ordering::SeqCst), 1);

    let requests = coordinator.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.headers["x-request-id"], "edge-req-42");
        assert_eq!(r.headers["traceparent"], TRACEPARENT);
        assert_eq!(r.headers["tracestate"], "congo=t61rcWkgMzE");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_trace_context_and_ids_are_not_forwarded() {
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::new(coordinator.url()).unwrap();
    let (service, _) = gated(QualityGateLayer::new(client, derive));

    let req = incoming()
        .header("x-request-id", "two words")
        .header(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("grpc-timeout", "1.5S")
        .body(String::from("task-1"))
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);

    let sent = &coordinator.requests()[0].headers;
    // The client's own generated id instead.
    assert!(sent["x-request-id"].to_str().unwrap().starts_with("qg-"));
    assert!(!sent.contains_key("traceparent"));
    assert!(!sent.contains_key("tracestate"));
}

#[tokio::test(start_paused = true)]
async fn a_derive_functions_own_tracestate_is_kept() {
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::new(coordinator.url()).unwrap();
    // Its own vendor entry, no traceparent of its own.
    let derive = |req: Request<String>| async move {
        let check = QualityRequest::new("task-1", "agent-1").header(
            http::HeaderName::from_static("tracestate"),
            http::HeaderValue::from_static("orchestrator=own"),
        );
        Ok::<_, Response<String>>((check, req))
    };
    let inner = service_fn(|req: Request<String>| async move {
        Ok::<_, Infallible>(Response::new(req.into_body()))
    });
    let service = QualityGateLayer::new(client, derive).layer(inner);

    let req = incoming()
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(String::new())
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);
    let sent = &coordinator.requests()[0].headers;
    assert_eq!(sent["traceparent"], TRACEPARENT);
    assert_eq!(sent["tracestate"], "orchestrator=own");
    assert_eq!(sent.get_all("tracestate").iter().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_later_traceparent_version_is_sent_on_as_version_00() {
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::new(coordinator.url()).unwrap();
    let (service, _) = gated(QualityGateLayer::new(client, derive));

    let req = incoming()
        .header(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes-next",
        )
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(String::from("task-1"))
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);
    let sent = &coordinator.requests()[0].headers;
    assert_eq!(sent["traceparent"], TRACEPARENT); // flags: the sampled bit only
    assert_eq!(sent["tracestate"], "congo=t61rcWkgMzE");
}

#[tokio::test(start_paused = true)]
async fn propagation_can_be_turned_off() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve().delay(Duration::from_secs(1)));
    let client = QualityClient::new(coordinator.url()).unwrap();
    let (service, handled) = gated(QualityGateLayer::new(client, derive).no_propagation());

    let start = Instant::now();
    let req = incoming()
        .header("x-request-id", "edge-req-42")
        .header("traceparent", TRACEPARENT)
        .header("grpc-timeout", "200m")
        .body(String::from("task-1"))
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);
    // The 200 ms budget was not applied: the 1 s answer was waited for.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    let sent = &coordinator.requests()[0].headers;
    assert_ne!(sent["x-request-id"], "edge-req-42");
    assert!(!sent.contains_key("traceparent"));

    // Only the deadline off: ids still go.
    assert_eq!(
        Propagation::default().deadline(false),
        Propagation::none().request_id(true).trace_context(true)
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_bounds_the_check_and_the_gate_answers_as_for_a_timeout() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = QualityClient::new(coordinator.url()).unwrap(); // 30 s of its own
    let (service, handled) = gated(QualityGateLayer::new(client, derive));

    let start = Instant::now();
    let req = incoming()
        .header("grpc-timeout", "200m")
        .body(String::from("task-1"))
        .unwrap();
    let response = service.oneshot(req).await.unwrap();

    // 200 ms less the margin left for the answer to reach the caller.
    assert_eq!(
        deadline_margin(Duration::from_millis(200)),
        Duration::from_millis(20)
    );
    assert_eq!(start.elapsed(), Duration::from_millis(180));
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    assert_eq!(body["kind"], "timeout");
    assert_eq!(body["approved"], false);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_also_bounds_the_wait_for_a_client_slot() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = QualityClient::builder(coordinator.url())
        .concurrency_limit(1)
        .build()
        .unwrap();
    let (service, handled) = gated(QualityGateLayer::new(client, derive));

    // The first request takes the client's only slot and hangs; the second
    // (polled after it) waits for that slot.
    let first = service
        .clone()
        .oneshot(incoming().body(String::from("task-1")).unwrap());
    let req = incoming()
        .header("grpc-timeout", "200m")
        .body(String::from("task-2"))
        .unwrap();
    let second = service.oneshot(req);
    let start = Instant::now();
    let response = tokio::select! {
        biased;
        _ = first => panic!("the hanging check ended"),
        response = second => response.unwrap(),
    };

    assert_eq!(start.elapsed(), Duration::from_millis(180)); // less the margin
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(coordinator.hits(), 1); // the second check was never sent
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_derived_checks_own_earlier_deadline_wins() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = QualityClient::new(coordinator.url()).unwrap();
    let derive = |req: Request<String>| async move {
        let check = QualityRequest::new("task-1", "agent-1").timeout(Duration::from_millis(50));
        Ok::<_, Response<String>>((check, req))
    };
    let inner = service_fn(|req: Request<String>| async move {
        Ok::<_, Infallible>(Response::new(req.into_body()))
    });
    let service = QualityGateLayer::new(client, derive).layer(inner);

    let start = Instant::now();
    let req = incoming()
        .header("grpc-timeout", "5S")
        .body(String::new())
        .unwrap();
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[cfg(feature = "tower-http")]
#[tokio::test(start_paused = true)]
async fn tower_http_request_id_is_used_when_the_header_is_missing() {
    use tower_http::request_id::RequestId;

    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::new(coordinator.url()).unwrap();
    let (service, _) = gated(QualityGateLayer::new(client, derive));

    let mut req = incoming().body(String::from("task-1")).unwrap();
    req.extensions_mut()
        .insert(RequestId::new(http::HeaderValue::from_static(
            "made-by-tower-http",
        )));
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        coordinator.requests()[0].headers["x-request-id"],
        "made-by-tower-http"
    );
}
