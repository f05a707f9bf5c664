//! End to end: the gate as an axum `route_layer`, a real coordinator on
//! 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_quality_gate::breaker::CircuitBreakerConfig;
use tower_quality_gate::gate::QualityGateLayer;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Completion {
    agent_id: String,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    diff_summary: String,
}

async fn derive_http(
    req: axum::extract::Request,
) -> Result<(QualityRequest, axum::extract::Request), axum::response::Response> {
    let (mut parts, body) = req.into_parts();
    let Path(task_id) = Path::<String>::from_request_parts(&mut parts, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
    let c: Completion =
        serde_json::from_slice(&bytes).map_err(|_| StatusCode::BAD_REQUEST.into_response())?;
    let check = QualityRequest::new(task_id, c.agent_id)
        .files(c.files)
        .diff_summary(c.diff_summary);
    Ok((check, Request::from_parts(parts, Body::from(bytes))))
}

/// A router whose one route echoes the body it gets, behind the gate.
fn app(client: QualityClient, handled: Arc<AtomicUsize>) -> Router {
    let handler = move |body: String| async move {
        handled.fetch_add(1, Ordering::SeqCst);
        body
    };
    Router::new()
        .route("/tasks/{task_id}/complete", post(handler))
        .route_layer(QualityGateLayer::new(client, derive_http))
}

const COMPLETION: &str = r#"{"agentId":"agent-7","files":["src/lib.rs"],"diffSummary":"fix"}"#;

async fn send(app: &Router, task: &str, body: &'static str) -> (StatusCode, String) {
    let req = Request::post(format!("/tasks/{task}/complete"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn axum_approved_work_reaches_the_handler_with_its_body() {
    let coordinator = TestCoordinator::start().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let app = app(
        QualityClient::new(coordinator.url()).unwrap(),
        handled.clone(),
    );

    let (status, body) = send(&app, "task-9", COMPLETION).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, COMPLETION);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    let sent = coordinator.requests()[0].request.clone().unwrap();
    assert_eq!(
        sent,
        QualityRequest::new("task-9", "agent-7")
            .files(["src/lib.rs"])
            .diff_summary("fix")
    );
}

#[tokio::test]
async fn axum_rejection_is_422_with_the_gates_message() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::reject("coverage", "coverage 71% < 85%"));
    let handled = Arc::new(AtomicUsize::new(0));
    let app = app(
        QualityClient::new(coordinator.url()).unwrap(),
        handled.clone(),
    );

    let (status, body) = send(&app, "task-1", COMPLETION).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["gate"], json!("coverage"));
    assert_eq!(body["message"], json!("coverage 71% < 85%"));
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test]
async fn axum_malformed_body_is_400_and_never_checked() {
    let coordinator = TestCoordinator::start().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let app = app(
        QualityClient::new(coordinator.url()).unwrap(),
        handled.clone(),
    );

    for body in ["{not json", r#"{"files":[]}"#, ""] {
        let (status, _) = send(&app, "task-1", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
    }
    assert_eq!(coordinator.hits(), 0);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn axum_coordinator_failures_are_502_503_504() {
    let coordinator = TestCoordinator::start().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let client = QualityClient::builder(coordinator.url())
        .total_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let app = app(client, handled.clone());

    coordinator.push_n(Reply::status(500), 3);
    let (status, body) = send(&app, "task-1", COMPLETION).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["kind"],
        json!("status")
    );
    assert_eq!(coordinator.hits(), 3, "retried before giving up");

    coordinator.push(Reply::hang());
    let (status, _) = send(&app, "task-2", COMPLETION).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);

    let url = coordinator.url();
    drop(coordinator);
    let app_down = self::app(QualityClient::new(url).unwrap(), handled.clone());
    let (status, body) = send(&app_down, "task-3", COMPLETION).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["kind"],
        json!("connect")
    );
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

/// The coordinator's error text (here a stack trace with a password in it)
/// never reaches the gate's callers: a 502, 503 or 504 body is the error's
/// kind, a fixed sentence for it, and the request id.
#[tokio::test(start_paused = true)]
async fn axum_unavailable_bodies_carry_no_coordinator_text() {
    const LEAK: &str = "Traceback: db password hunter2 at /srv/coordinator";
    let coordinator = TestCoordinator::start().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .total_timeout(Duration::from_secs(5))
        .circuit_breaker(
            CircuitBreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let app = app(client, handled.clone());
    // The body names the kind, a fixed sentence and the call's request id
    // (the one the coordinator received, when the call reached it): nothing
    // the coordinator wrote.
    let check = |body: &str, kind: &str, message: &str, sent: Option<usize>| {
        let body: Value = serde_json::from_str(body).unwrap();
        let id = body["requestId"].as_str().expect("a request id").to_owned();
        assert!(id.starts_with("qg-"), "{id}");
        if let Some(n) = sent {
            assert_eq!(
                coordinator.requests()[n].headers["x-request-id"],
                id.as_str()
            );
        }
        assert_eq!(
            body,
            json!({"approved": false, "kind": kind, "error": message, "requestId": id})
        );
    };

    coordinator.push(Reply::raw(503, "text/plain", LEAK).delay(Duration::from_secs(6)));
    let (status, body) = send(&app, "task-1", COMPLETION).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    check(&body, "timeout", "the quality check timed out", Some(0));

    coordinator.push(Reply::raw(500, "text/plain", LEAK));
    let (status, body) = send(&app, "task-2", COMPLETION).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.contains("hunter2"), "{body}");
    check(
        &body,
        "status",
        "the quality coordinator answered with an error",
        Some(1),
    );

    // The failure opened the circuit (a call cut by the deadline counts as
    // neither): the next call is refused.
    let (status, body) = send(&app, "task-3", COMPLETION).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    check(
        &body,
        "circuit_open",
        "the quality coordinator is failing; checks are refused for a while",
        None,
    );
    assert_eq!(coordinator.hits(), 2);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn axum_concurrent_requests_share_the_clients_limit() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve().delay(Duration::from_millis(100)));
    let handled = Arc::new(AtomicUsize::new(0));
    let client = QualityClient::builder(coordinator.url())
        .concurrency_limit(Some(2))
        .build()
        .unwrap();
    let app = app(client, handled.clone());

    let calls = (0..6).map(|n| {
        let app = app.clone();
        tokio::spawn(async move { send(&app, &format!("task-{n}"), COMPLETION).await.0 })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(coordinator.hits(), 6);
    assert_eq!(coordinator.peak_in_flight(), 2);
    assert_eq!(handled.load(Ordering::SeqCst), 6);
}
