//! The quality gate as server middleware: at poll level against hand-driven
//! services (readiness, ordering, fail closed), then end to end as an axum
//! `route_layer` in front of a real coordinator on 127.0.0.1.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use http::{Request, Response, StatusCode};
use quality_gate::breaker::CircuitBreakerConfig;
use quality_gate::gate::{QualityGate, QualityGateLayer};
use quality_gate::testing::{Reply, TestCoordinator};
use quality_gate::{
    BoxError, Error, ErrorKind, QualityClient, QualityRequest, QualityResponse, TimeoutKind,
    Verdict,
};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::limit::ConcurrencyLimit;
use tower::{Service, ServiceBuilder, ServiceExt};

// ===== hand-driven services =====

type Checked = Result<QualityResponse, Error>;
type Answer = oneshot::Sender<Checked>;

/// A quality service whose answers the test sends by hand, and which records
/// what it was asked.
#[derive(Clone, Default)]
struct Quality {
    seen: Arc<Mutex<Vec<QualityRequest>>>,
    answers: Arc<Mutex<VecDeque<oneshot::Receiver<Checked>>>>,
}

impl Quality {
    /// Queues the answer channel for the next call.
    fn expect(&self) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.answers.lock().unwrap().push_back(rx);
        tx
    }

    fn seen(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|r| r.task_id.clone()).collect()
    }
}

impl Service<QualityRequest> for Quality {
    type Response = QualityResponse;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Checked> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: QualityRequest) -> Self::Future {
        self.seen.lock().unwrap().push(req);
        let answer = self.answers.lock().unwrap().pop_front();
        Box::pin(async move {
            match answer {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(Error::circuit_open())),
                None => Err(Error::circuit_open()),
            }
        })
    }
}

/// A quality service that fails in `poll_ready`, as an open breaker may.
#[derive(Clone, Default)]
struct Broken {
    calls: Arc<AtomicUsize>,
}

impl Service<QualityRequest> for Broken {
    type Response = QualityResponse;
    type Error = Error;
    type Future = Ready<Result<QualityResponse, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Err(Error::circuit_open()))
    }

    fn call(&mut self, _: QualityRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(QualityResponse::approved("all")))
    }
}

/// The guarded service: counts calls and echoes the body.
#[derive(Clone, Default)]
struct Inner {
    calls: Arc<AtomicUsize>,
}

impl Inner {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<String>> for Inner {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(Response::new(format!("inner got {}", req.body()))))
    }
}

type Derived = Result<(QualityRequest, Request<String>), Response<String>>;

/// Derives `task/agent` from the body; anything else is a 400.
fn derive(req: Request<String>) -> Ready<Derived> {
    let parsed = req
        .body()
        .split_once('/')
        .map(|(task, agent)| QualityRequest::new(task, agent));
    ready(match parsed {
        Some(check) => Ok((check, req)),
        None => {
            let mut bad = Response::new(String::from("bad request"));
            *bad.status_mut() = StatusCode::BAD_REQUEST;
            Err(bad)
        }
    })
}

fn request(body: &str) -> Request<String> {
    Request::new(body.to_owned())
}

fn approved() -> Result<QualityResponse, Error> {
    Ok(QualityResponse::approved("all"))
}

fn json_body(response: &Response<String>) -> Value {
    serde_json::from_str(response.body()).unwrap()
}

/// Drives `service` to readiness, at poll level.
fn poll_ready<S: Service<R>, R>(service: &mut S) -> Poll<Result<(), S::Error>> {
    task::spawn(()).enter(|cx, _| service.poll_ready(cx))
}

// ===== poll level =====

#[test]
fn gate_is_clone_send_sync() {
    fn assert<T: Clone + Send + Sync + 'static>() {}
    assert::<QualityGate<Inner, QualityClient, fn(Request<String>) -> Ready<Derived>>>();
    assert::<QualityGateLayer<QualityClient, fn(Request<String>) -> Ready<Derived>>>();
}

#[tokio::test]
async fn approved_request_is_forwarded_once_the_check_answers() {
    let (quality, inner) = (Quality::default(), Inner::default());
    let mut gate = QualityGate::new(inner.clone(), quality.clone(), derive);
    let answer = quality.expect();

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("task-1/agent-1")));
    assert_pending!(call.poll());
    assert_eq!(quality.seen(), ["task-1"]);
    assert_eq!(inner.calls(), 0, "nothing is forwarded before the verdict");

    answer.send(approved()).unwrap();
    assert!(call.is_woken());
    let response = assert_ready_ok!(call.poll());
    assert_eq!(response.body(), "inner got task-1/agent-1");
    assert_eq!(inner.calls(), 1);
    // A finished future stays pending rather than panicking.
    assert_pending!(call.poll());
}

#[tokio::test]
async fn rejection_is_answered_without_the_inner_service() {
    let (quality, inner) = (Quality::default(), Inner::default());
    let mut gate = QualityGate::new(inner.clone(), quality.clone(), derive);
    quality
        .expect()
        .send(Ok(QualityResponse::rejected("lint", "2 warnings")))
        .unwrap();

    let response = gate
        .ready()
        .await
        .unwrap()
        .call(request("t/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_body(&response)["gate"], json!("lint"));
    assert_eq!(json_body(&response)["message"], json!("2 warnings"));
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn quality_errors_fail_closed() {
    let cases = [
        (
            Error::timeout(TimeoutKind::Total),
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (Error::circuit_open(), StatusCode::SERVICE_UNAVAILABLE),
        (Error::from(BoxError::from("boom")), StatusCode::BAD_GATEWAY),
    ];
    for (error, status) in cases {
        let (quality, inner) = (Quality::default(), Inner::default());
        let kind = error.kind();
        quality.expect().send(Err(error)).unwrap();
        let mut gate = QualityGate::new(inner.clone(), quality, derive);
        let response = gate
            .ready()
            .await
            .unwrap()
            .call(request("t/a"))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{kind}");
        assert_eq!(json_body(&response)["kind"], json!(kind.as_str()));
        assert_eq!(json_body(&response)["approved"], json!(false));
        assert_eq!(inner.calls(), 0, "{kind}");
    }
}

#[tokio::test]
async fn quality_poll_ready_error_fails_closed() {
    let (broken, inner) = (Broken::default(), Inner::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut gate = QualityGate::new(inner.clone(), broken.clone(), derive).reject_with(
        move |verdict: Verdict| {
            record
                .lock()
                .unwrap()
                .push(verdict.error().map(Error::kind));
            Response::new(String::from("not accepted"))
        },
    );
    let response = gate
        .ready()
        .await
        .unwrap()
        .call(request("t/a"))
        .await
        .unwrap();
    assert_eq!(response.body(), "not accepted");
    assert_eq!(*seen.lock().unwrap(), [Some(ErrorKind::CircuitOpen)]);
    assert_eq!(broken.calls.load(Ordering::SeqCst), 0);
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn derive_failure_is_answered_without_a_check() {
    let (quality, inner) = (Quality::default(), Inner::default());
    let mut gate = QualityGate::new(inner.clone(), quality.clone(), derive);
    let response = gate
        .ready()
        .await
        .unwrap()
        .call(request("no slash"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(quality.seen().is_empty());
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn poll_ready_waits_for_the_inner_service_not_the_quality_service() {
    let inner = ConcurrencyLimit::new(Inner::default(), 1);
    let quality = ConcurrencyLimit::new(Quality::default(), 1);
    // Both single slots are taken elsewhere.
    let mut inner_holder = inner.clone();
    let mut quality_holder = quality.clone();
    assert_ready_ok!(poll_ready(&mut inner_holder));
    assert_ready_ok!(poll_ready(&mut quality_holder));

    let mut gate = QualityGate::new(inner, quality, derive);
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| gate.poll_ready(cx)));

    drop(inner_holder);
    assert!(ready.is_woken());
    // Ready although the quality slot is still taken.
    assert_ready_ok!(ready.enter(|cx, _| gate.poll_ready(cx)));
}

#[tokio::test]
async fn the_quality_slot_is_taken_after_the_request_is_derived() {
    let quality = Quality::default();
    let limited = ConcurrencyLimit::new(quality.clone(), 1);
    let upload = Arc::new(Notify::new());
    let slow = {
        let upload = upload.clone();
        move |req: Request<String>| {
            let upload = upload.clone();
            async move {
                if req.body().starts_with("slow") {
                    upload.notified().await; // a client still uploading its body
                }
                derive(req).await
            }
        }
    };
    let mut gate = QualityGate::new(Inner::default(), limited, slow);
    let (answer_fast, answer_slow) = (quality.expect(), quality.expect());

    assert_ready_ok!(poll_ready(&mut gate));
    let mut slow_call = task::spawn(gate.call(request("slow/agent")));
    assert_ready_ok!(poll_ready(&mut gate));
    let mut fast_call = task::spawn(gate.call(request("fast/agent")));
    assert_pending!(slow_call.poll());
    assert_pending!(fast_call.poll());
    assert_eq!(quality.seen(), ["fast"], "the slow upload holds no slot");

    upload.notify_one();
    assert!(slow_call.is_woken());
    assert_pending!(slow_call.poll());
    assert_eq!(quality.seen(), ["fast"], "the one slot is the fast check's");

    answer_fast.send(approved()).unwrap();
    assert_eq!(
        assert_ready_ok!(fast_call.poll()).body(),
        "inner got fast/agent"
    );
    assert!(slow_call.is_woken());
    assert_pending!(slow_call.poll());
    assert_eq!(quality.seen(), ["fast", "slow"]);
    answer_slow.send(approved()).unwrap();
    assert_eq!(
        assert_ready_ok!(slow_call.poll()).body(),
        "inner got slow/agent"
    );
}

#[tokio::test]
async fn the_inner_reservation_is_held_during_the_check_and_freed_by_a_rejection() {
    let (quality, inner) = (Quality::default(), Inner::default());
    let mut gate = QualityGate::new(
        ConcurrencyLimit::new(inner.clone(), 1),
        quality.clone(),
        derive,
    );
    let mut other = gate.clone();
    let answer = quality.expect();

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("t/a")));
    assert_pending!(call.poll());
    let mut other_ready = task::spawn(());
    assert_pending!(other_ready.enter(|cx, _| other.poll_ready(cx)));

    answer
        .send(Ok(QualityResponse::rejected("test", "1 failing")))
        .unwrap();
    let response = assert_ready_ok!(call.poll());
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    drop(call);
    assert!(other_ready.is_woken());
    assert_ready_ok!(other_ready.enter(|cx, _| other.poll_ready(cx)));
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn a_clone_called_without_poll_ready_drives_the_inner_service_ready_first() {
    let (quality, inner) = (Quality::default(), Inner::default());
    let limited = ConcurrencyLimit::new(inner.clone(), 1);
    let mut holder = limited.clone();
    assert_ready_ok!(poll_ready(&mut holder));
    let gate = QualityGate::new(limited, quality.clone(), derive);

    quality.expect().send(approved()).unwrap();
    // tower's ConcurrencyLimit panics when called unready; the gate waits.
    let mut call = task::spawn(gate.clone().call(request("t/a")));
    assert_pending!(call.poll());
    assert_eq!(quality.seen(), ["t"]);
    assert_eq!(inner.calls(), 0);

    drop(holder);
    assert!(call.is_woken());
    assert_eq!(assert_ready_ok!(call.poll()).body(), "inner got t/a");
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn a_load_shed_client_answers_at_once_when_full() {
    let quality = Quality::default();
    let limited = ConcurrencyLimit::new(quality.clone(), 1);
    let mut holder = limited.clone();
    assert_ready_ok!(poll_ready(&mut holder));
    let shed = ServiceBuilder::new()
        .map_err(Error::from)
        .load_shed()
        .service(limited);
    let mut gate = QualityGate::new(Inner::default(), shed, derive);

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("t/a")));
    let response = assert_ready!(call.poll()).unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_body(&response)["kind"], json!("other"));
    assert!(quality.seen().is_empty());
}

// ===== end to end: axum route_layer, real coordinator =====

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
