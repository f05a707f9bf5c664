//! At poll level: the quality service is tower-test's mock (its handle sees
//! each check and answers it by hand), the guarded service a counter.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::limit::ConcurrencyLimit;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_quality_gate::gate::{QualityGate, QualityGateLayer};
use tower_quality_gate::{
    BoxError, Error, ErrorKind, QualityClient, QualityRequest, QualityResponse, TimeoutKind,
    Verdict,
};
use tower_test::mock;

type Quality = mock::Mock<QualityRequest, QualityResponse>;
type Handle = mock::Handle<QualityRequest, QualityResponse>;

/// The mock quality service and its handle.
fn quality() -> (Quality, Handle) {
    mock::pair()
}

/// The next check the quality service received, answered with `answer`;
/// its task id.
fn answer_next(handle: &mut Handle, answer: Result<QualityResponse, Error>) -> String {
    let (check, respond) = assert_ready!(handle.poll_request()).expect("a check");
    match answer {
        Ok(verdict) => respond.send_response(verdict),
        Err(error) => respond.send_error(error),
    }
    check.task_id
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

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
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

#[test]
fn gate_is_clone_send_sync() {
    fn assert<T: Clone + Send + Sync + 'static>() {}
    assert::<QualityGate<Inner, QualityClient, fn(Request<String>) -> Ready<Derived>>>();
    assert::<QualityGateLayer<QualityClient, fn(Request<String>) -> Ready<Derived>>>();
}

#[tokio::test]
async fn approved_request_is_forwarded_once_the_check_answers() {
    let ((quality, mut handle), inner) = (quality(), Inner::default());
    let mut gate = QualityGate::new(inner.clone(), quality, derive);

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("task-1/agent-1")));
    assert_pending!(call.poll());
    assert_eq!(inner.calls(), 0, "nothing is forwarded before the verdict");

    assert_eq!(answer_next(&mut handle, approved()), "task-1");
    assert!(call.is_woken());
    let response = assert_ready_ok!(call.poll());
    assert_eq!(response.body(), "inner got task-1/agent-1");
    assert_eq!(inner.calls(), 1);
    // A finished future stays pending rather than panicking.
    assert_pending!(call.poll());
}

#[tokio::test]
async fn rejection_is_answered_without_the_inner_service() {
    let ((quality, mut handle), inner) = (quality(), Inner::default());
    let mut gate = QualityGate::new(inner.clone(), quality, derive);

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("t/a")));
    assert_pending!(call.poll());
    answer_next(
        &mut handle,
        Ok(QualityResponse::rejected("lint", "2 warnings")),
    );
    let response = assert_ready_ok!(call.poll());
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
        let ((quality, mut handle), inner) = (quality(), Inner::default());
        let kind = error.kind();
        let mut gate = QualityGate::new(inner.clone(), quality, derive);
        assert_ready_ok!(poll_ready(&mut gate));
        let mut call = task::spawn(gate.call(request("t/a")));
        assert_pending!(call.poll());
        // The mock boxes the error; the gate reads the crate's error back.
        answer_next(&mut handle, Err(error));
        let response = assert_ready_ok!(call.poll());
        assert_eq!(response.status(), status, "{kind}");
        assert_eq!(json_body(&response)["kind"], json!(kind.as_str()));
        assert_eq!(json_body(&response)["approved"], json!(false));
        assert_eq!(inner.calls(), 0, "{kind}");
    }
}

#[tokio::test]
async fn quality_poll_ready_error_fails_closed() {
    let ((quality, mut handle), inner) = (quality(), Inner::default());
    // The next poll_ready fails, as an open breaker's may.
    handle.send_error(Error::circuit_open());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut gate =
        QualityGate::new(inner.clone(), quality, derive).reject_with(move |verdict: Verdict| {
            record
                .lock()
                .unwrap()
                .push(verdict.error().map(Error::kind));
            Response::new(String::from("not accepted"))
        });
    let response = gate
        .ready()
        .await
        .unwrap()
        .call(request("t/a"))
        .await
        .unwrap();
    assert_eq!(response.body(), "not accepted");
    assert_eq!(*seen.lock().unwrap(), [Some(ErrorKind::CircuitOpen)]);
    assert_pending!(handle.poll_request(), "no check was sent");
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn derive_failure_is_answered_without_a_check() {
    let ((quality, mut handle), inner) = (quality(), Inner::default());
    let mut gate = QualityGate::new(inner.clone(), quality, derive);
    let response = gate
        .ready()
        .await
        .unwrap()
        .call(request("no slash"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_pending!(handle.poll_request());
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn poll_ready_waits_for_the_inner_service_not_the_quality_service() {
    let inner = ConcurrencyLimit::new(Inner::default(), 1);
    let (quality, mut handle) = quality();
    // The guarded service's one slot is taken elsewhere; the quality
    // service is not ready at all.
    handle.allow(0);
    let mut inner_holder = inner.clone();
    assert_ready_ok!(poll_ready(&mut inner_holder));

    let mut gate = QualityGate::new(inner, quality, derive);
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| gate.poll_ready(cx)));

    drop(inner_holder);
    assert!(ready.is_woken());
    // Ready although the quality service is not.
    assert_ready_ok!(ready.enter(|cx, _| gate.poll_ready(cx)));
}

#[tokio::test]
async fn the_quality_slot_is_taken_after_the_request_is_derived() {
    let (quality, mut handle) = quality();
    let limited = ConcurrencyLimit::new(quality, 1);
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

    assert_ready_ok!(poll_ready(&mut gate));
    let mut slow_call = task::spawn(gate.call(request("slow/agent")));
    assert_ready_ok!(poll_ready(&mut gate));
    let mut fast_call = task::spawn(gate.call(request("fast/agent")));
    assert_pending!(slow_call.poll());
    assert_pending!(fast_call.poll());

    // The slow upload holds no slot: the fast check got it.
    upload.notify_one();
    assert!(slow_call.is_woken());
    assert_pending!(slow_call.poll());
    assert_eq!(answer_next(&mut handle, approved()), "fast");
    assert_pending!(handle.poll_request(), "the one slot is the fast check's");
    assert_eq!(
        assert_ready_ok!(fast_call.poll()).body(),
        "inner got fast/agent"
    );

    // The fast call freed the slot: now the slow check goes out.
    assert!(slow_call.is_woken());
    assert_pending!(slow_call.poll());
    assert_eq!(answer_next(&mut handle, approved()), "slow");
    assert_eq!(
        assert_ready_ok!(slow_call.poll()).body(),
        "inner got slow/agent"
    );
}

#[tokio::test]
async fn the_inner_reservation_is_held_during_the_check_and_freed_by_a_rejection() {
    let ((quality, mut handle), inner) = (quality(), Inner::default());
    let mut gate = QualityGate::new(ConcurrencyLimit::new(inner.clone(), 1), quality, derive);
    let mut other = gate.clone();

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("t/a")));
    assert_pending!(call.poll());
    let mut other_ready = task::spawn(());
    assert_pending!(other_ready.enter(|cx, _| other.poll_ready(cx)));

    answer_next(
        &mut handle,
        Ok(QualityResponse::rejected("test", "1 failing")),
    );
    let response = assert_ready_ok!(call.poll());
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    drop(call);
    assert!(other_ready.is_woken());
    assert_ready_ok!(other_ready.enter(|cx, _| other.poll_ready(cx)));
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn a_clone_called_without_poll_ready_drives_the_inner_service_ready_first() {
    let ((quality, mut handle), inner) = (quality(), Inner::default());
    let limited = ConcurrencyLimit::new(inner.clone(), 1);
    let mut holder = limited.clone();
    assert_ready_ok!(poll_ready(&mut holder));
    let gate = QualityGate::new(limited, quality, derive);

    // tower's ConcurrencyLimit panics when called unready; the gate waits.
    let mut call = task::spawn(gate.clone().call(request("t/a")));
    assert_pending!(call.poll());
    assert_eq!(answer_next(&mut handle, approved()), "t");
    assert_pending!(call.poll());
    assert_eq!(inner.calls(), 0);

    drop(holder);
    assert!(call.is_woken());
    assert_eq!(assert_ready_ok!(call.poll()).body(), "inner got t/a");
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn a_load_shed_client_answers_at_once_when_full() {
    let (quality, mut handle) = quality();
    handle.allow(0);
    let shed = ServiceBuilder::new()
        .map_err(Error::from)
        .load_shed()
        .service(quality);
    let mut gate = QualityGate::new(Inner::default(), shed, derive);

    assert_ready_ok!(poll_ready(&mut gate));
    let mut call = task::spawn(gate.call(request("t/a")));
    let response = assert_ready!(call.poll()).unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_body(&response)["kind"], json!("other"));
    assert_pending!(handle.poll_request());
}
