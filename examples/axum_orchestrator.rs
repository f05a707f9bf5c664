//! An agent orchestrator on axum 0.8 that asks the quality gate before it
//! accepts a task's completion.
//!
//! - `POST /tasks/{task_id}/complete` takes `{"agentId", "files",
//!   "diffSummary"}`, calls the gate through the `QualityClient` in the
//!   router state, and answers 200 with the verdict when approved, 422 with
//!   the gate's message when rejected, and 504 / 503 / 502 when the
//!   coordinator timed out / could not be reached / failed otherwise. A
//!   failure answer carries the error's kind, a fixed sentence and the
//!   request id, never the coordinator's own error text, which is logged.
//! - `POST /gated/tasks/{task_id}/complete` is the same flow with the check
//!   done by `QualityGateLayer` as a `route_layer`: the handler runs only for
//!   approved work.
//!
//! A malformed body gets a 400 on both routes.
//!
//! Deadlines and ids: the first route gives each check a budget of its own
//! ([`CHECK_BUDGET`], a `.timeout(..)` on the `QualityRequest`) and carries
//! the caller's `x-request-id`, `traceparent` and `grpc-timeout` into it
//! (`tower_quality_gate::propagate`); the gate layer of the second does the same
//! by itself. A check that runs out of time is a 504 on both.
//!
//! With the `metrics` feature it also serves `GET /metrics` in Prometheus's
//! text format (`metrics-exporter-prometheus`, with the crate's metrics).
//!
//! Traces, in both modes: without the `opentelemetry` feature the caller's
//! `traceparent` is relayed to the coordinator as it came (the coordinator's
//! span is the caller's child). With it, a `tracing-opentelemetry` layer
//! (in-memory exporter here; OTLP in production) and the W3C propagator are
//! installed: both routes join the caller's trace, every attempt sends its
//! own `POST` span as the coordinator's parent, and the self-test prints
//! the spans and checks the coordinator's parent-id is an attempt span's,
//! not the caller's.
//!
//! Without `COORDINATOR_URL` it starts an in-process coordinator that
//! approves `task-approved`, rejects `task-rejected`, fails on
//! `task-failing` and takes 3 s over `task-slow`. It then serves on
//! 127.0.0.1:0, sends itself those requests with a hyper client, prints and
//! checks the answers, and exits; with `--serve` it keeps serving.
//!
//! ```text
//! cargo run --example axum_orchestrator
//! cargo run --example axum_orchestrator --features metrics
//! cargo run --example axum_orchestrator --features opentelemetry
//! cargo run --example axum_orchestrator -- --serve
//! COORDINATOR_URL=http://127.0.0.1:8000 cargo run --example axum_orchestrator
//! ```

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tower_quality_gate::gate::QualityGateLayer;
use tower_quality_gate::propagate::Propagation;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest, Verdict};
use tracing::Instrument;

#[path = "common/traces.rs"]
mod traces;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The longest a completion waits for its check on the first route, retries
/// included: the orchestrator answers within it, whatever the client's own
/// 30 s allow. A caller's shorter `grpc-timeout` wins.
const CHECK_BUDGET: Duration = Duration::from_secs(2);

/// The router's state: one client, shared (its clones share the connection
/// pool, the concurrency limit and the retry budget).
#[derive(Clone)]
struct AppState {
    client: QualityClient,
}

/// What an agent sends when it says a task is done.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Completion {
    agent_id: String,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    diff_summary: String,
}

impl Completion {
    fn into_check(self, task_id: String) -> QualityRequest {
        QualityRequest::new(task_id, self.agent_id)
            .files(self.files)
            .diff_summary(self.diff_summary)
    }
}

fn router(client: QualityClient) -> Router {
    let gated = Router::new()
        .route("/gated/tasks/{task_id}/complete", post(accepted))
        .route_layer(QualityGateLayer::new(client.clone(), derive_check).reject_with(not_accepted));
    Router::new()
        .route("/tasks/{task_id}/complete", post(complete))
        .with_state(AppState { client })
        .merge(gated)
}

/// The first route: the handler asks the gate itself.
async fn complete(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    completion: Result<Json<Completion>, JsonRejection>,
) -> Response {
    // Read before the body: a caller's deadline counts from its arrival.
    // With OpenTelemetry the handler's span joins the caller's trace, and
    // the check's attempts send their own context instead of the caller's.
    let span = tracing::info_span!("complete");
    #[cfg(feature = "opentelemetry")]
    let joined = tower_quality_gate::otel::join(&span, &headers);
    #[cfg(not(feature = "opentelemetry"))]
    let joined = false;
    let context = Propagation::default()
        .trace_context(!joined)
        .extract(&headers);
    let Json(completion) = match completion {
        Ok(completion) => completion,
        // An oversized body stays a 413; anything else malformed is a 400.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return invalid(StatusCode::PAYLOAD_TOO_LARGE, &rejection.body_text())
        }
        Err(rejection) => return invalid(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let check = completion.into_check(task_id.clone()).timeout(CHECK_BUDGET);
    match state
        .client
        .verdict(context.apply(check))
        .instrument(span)
        .await
    {
        Verdict::Approved(v) => (
            StatusCode::OK,
            Json(
                json!({"accepted": true, "taskId": task_id, "gate": v.gate, "message": v.message}),
            ),
        )
            .into_response(),
        // Not approved, for whatever reason: the work is not accepted.
        verdict => not_accepted(verdict),
    }
}

/// The second route's handler: behind the gate, so the work was approved;
/// it still gets the whole body the gate read.
async fn accepted(Path(task_id): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<Completion>(&body) {
        Ok(c) => Json(json!({"accepted": true, "taskId": task_id, "agentId": c.agent_id}))
            .into_response(),
        Err(e) => invalid(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// How the gate layer derives its check: reads the body (at most 1 MiB),
/// and rebuilds the request around it for the handler.
async fn derive_check(req: Request) -> Result<(QualityRequest, Request), Response> {
    let (mut parts, body) = req.into_parts();
    let Path(task_id) = Path::<String>::from_request_parts(&mut parts, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| invalid(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 1 MiB"))?;
    let completion: Completion = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let check = completion.into_check(task_id);
    Ok((check, Request::from_parts(parts, Body::from(bytes))))
}

/// A rejection or a failed check, as the orchestrator answers it.
fn not_accepted(verdict: Verdict) -> Response {
    let (status, body) = match verdict {
        Verdict::Rejected { gate, message, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"accepted": false, "gate": gate, "message": message}),
        ),
        Verdict::Unavailable { error } => {
            let status = if error.is_timeout() {
                StatusCode::GATEWAY_TIMEOUT
            } else if error.is_circuit_open() || error.is_connect() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            // The coordinator's error text stays in the log: it may echo
            // internals (paths, stack traces) the orchestrator's callers
            // must not see. They get the kind, a fixed sentence and the id
            // to quote when they ask.
            tracing::warn!(error = %error, request_id = error.request_id(), "quality check failed");
            let kind = error.kind();
            let body = json!({
                "accepted": false,
                "kind": kind.as_str(),
                "error": kind.generic_message(),
                "requestId": error.request_id(),
            });
            (status, body)
        }
        // The gate never rejects with an approval; answer loudly if it did.
        Verdict::Approved(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"accepted": false}),
        ),
    };
    (status, Json(body)).into_response()
}

/// A completion the orchestrator could not read.
fn invalid(status: StatusCode, reason: &str) -> Response {
    let body = json!({"accepted": false, "error": format!("invalid completion: {reason}")});
    (status, Json(body)).into_response()
}

/// The in-process coordinator's script: the task id says what happens.
async fn local_coordinator() -> TestCoordinator {
    let coordinator = TestCoordinator::start().await;
    coordinator.respond_with(|r| match r.request.as_ref().map(|q| q.task_id.as_str()) {
        Some("task-rejected") => Reply::reject("lint", "3 warnings in src/lib.rs"),
        Some("task-failing") => Reply::raw(500, "text/plain", INTERNAL_DETAIL),
        Some("task-slow") => Reply::approve().delay(Duration::from_secs(3)),
        _ => Reply::approve(),
    });
    coordinator
}

/// What the in-process coordinator's failure says: nothing an agent should see.
const INTERNAL_DETAIL: &str = "Traceback: connection to db-primary.internal:5432 refused";

const COMPLETION: &str =
    r#"{"agentId":"agent-7","files":["src/lib.rs"],"diffSummary":"add the parser"}"#;

/// A self-test request: path, body, an extra header, the status expected.
type Case = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    u16,
);

/// Sends the requests a user would, prints the answers, and checks the
/// statuses: exact ones against the in-process coordinator, plausible ones
/// against a real one.
async fn self_test(
    addr: SocketAddr,
    coordinator: Option<&TestCoordinator>,
) -> Result<(), BoxError> {
    let scripted = coordinator.is_some();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // A caller that waits 300 ms at most, and says so.
    let hurried = Some(("grpc-timeout", "300m"));
    let cases: [Case; 10] = [
        ("/tasks/task-approved/complete", COMPLETION, None, 200),
        ("/tasks/task-rejected/complete", COMPLETION, None, 422),
        ("/tasks/task-failing/complete", COMPLETION, None, 502),
        ("/tasks/task-approved/complete", "{not json", None, 400),
        // Over the route's 2 s budget, then over the caller's 300 ms.
        ("/tasks/task-slow/complete", COMPLETION, None, 504),
        ("/tasks/task-slow/complete", COMPLETION, hurried, 504),
        ("/gated/tasks/task-approved/complete", COMPLETION, None, 200),
        ("/gated/tasks/task-rejected/complete", COMPLETION, None, 422),
        ("/gated/tasks/task-slow/complete", COMPLETION, hurried, 504),
        (
            "/gated/tasks/task-approved/complete",
            r#"{"files":[]}"#,
            None,
            400,
        ),
    ];
    for (path, body, header, expected) in cases {
        let mut req = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .header("x-request-id", "self-test");
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        let started = std::time::Instant::now();
        let req = req.body(Full::new(Bytes::from_static(body.as_bytes())))?;
        let response = client.request(req).await?;
        let status = response.status().as_u16();
        let text = response.into_body().collect().await?.to_bytes();
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&text);
        println!(
            "POST {path} {header:?} -> {status} in {} ms: {text}",
            took.as_millis()
        );
        if text.contains("db-primary") {
            return Err(format!("POST {path}: the coordinator's error text leaked").into());
        }
        let ok = if scripted || expected == 400 {
            // A hurried caller is answered within its 300 ms (and a margin
            // for a loaded CI machine), not after the route's 2 s.
            status == expected && (header.is_none() || took < Duration::from_millis(1500))
        } else {
            [200, 422, 502, 503, 504].contains(&status)
        };
        if !ok {
            return Err(format!("POST {path}: expected {expected}, got {status}").into());
        }
    }
    if let Some(coordinator) = coordinator {
        for path in [
            "/tasks/task-traced/complete",
            "/gated/tasks/task-traced/complete",
        ] {
            traced_call(&client, addr, coordinator, path).await?;
        }
    }
    #[cfg(feature = "metrics")]
    {
        let uri: http::Uri = format!("http://{addr}/metrics").parse()?;
        let response = client.get(uri).await?;
        let status = response.status();
        let text = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&text);
        println!(
            "GET /metrics -> {status}, {} lines, among them:",
            text.lines().count()
        );
        for line in text
            .lines()
            .filter(|l| l.starts_with("quality_gate_verdicts"))
        {
            println!("  {line}");
        }
        for name in [
            "quality_gate_verdicts_total",
            "quality_gate_errors_total",
            "http_client_request_duration_seconds_bucket",
            "quality_gate_call_duration_seconds_bucket",
        ] {
            if !text.contains(name) {
                return Err(format!("/metrics has no {name}:\n{text}").into());
            }
        }
    }
    Ok(())
}

/// `GET /metrics`: the crate's metrics (and any others recorded through the
/// `metrics` facade) in Prometheus's text format, durations as histograms
/// with OpenTelemetry's buckets.
#[cfg(feature = "metrics")]
fn metrics_route() -> Result<Router, BoxError> {
    use metrics_exporter_prometheus::PrometheusBuilder;

    // Recommended naming: `_seconds` on durations and `_total` on counters,
    // as Prometheus and OpenTelemetry dashboards expect.
    let handle = PrometheusBuilder::new()
        .set_buckets(tower_quality_gate::metrics::DURATION_BUCKETS)?
        .with_recommended_naming(true)
        .install_recorder()?;
    tower_quality_gate::metrics::describe();
    let render = move || {
        let handle = handle.clone();
        async move {
            // No exporter task runs upkeep for us (no HTTP listener of its own).
            handle.run_upkeep();
            handle.render()
        }
    };
    Ok(Router::new().route("/metrics", axum::routing::get(render)))
}

/// Without the `metrics` feature there is nothing to serve.
#[cfg(not(feature = "metrics"))]
fn metrics_route() -> Result<Router, BoxError> {
    Ok(Router::new())
}

/// Sends one completion with the caller's `traceparent`, then checks the
/// parent the coordinator got (see `examples/common/traces.rs`).
async fn traced_call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    coordinator: &TestCoordinator,
    path: &str,
) -> Result<(), BoxError> {
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("traceparent", traces::caller())
        .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())))?;
    let status = client.request(req).await?.status();
    println!("POST {path} with a traceparent -> {status}");
    if status != StatusCode::OK {
        return Err(format!("traced POST {path}: {status}").into());
    }
    traces::check_coordinator_parent(coordinator, "task-traced")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    #[cfg(feature = "opentelemetry")]
    traces::install("axum_orchestrator");
    #[cfg(not(feature = "opentelemetry"))]
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .init();
    let serve = std::env::args().any(|a| a == "--serve");
    // Keep the in-process coordinator alive until the end of main.
    let (local, url) = match std::env::var("COORDINATOR_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let coordinator = local_coordinator().await;
            let url = coordinator.url();
            println!("started an in-process coordinator at {url}");
            (Some(coordinator), url)
        }
    };
    let app = router(QualityClient::new(url)?).merge(metrics_route()?);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("orchestrator listening on http://{addr}");
    if serve {
        println!("try: curl -i -X POST http://{addr}/tasks/task-approved/complete -H 'content-type: application/json' -d '{COMPLETION}'");
        axum::serve(listener, app).await?;
        return Ok(());
    }
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let result = self_test(addr, local.as_ref()).await;
    server.abort();
    result?;
    println!("all answers as expected");
    Ok(())
}
