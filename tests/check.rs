//! The bare one-attempt service against a real coordinator on 127.0.0.1.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tower::ServiceExt;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{ErrorKind, QualityCheck, QualityRequest, QualityResponse};

fn request() -> QualityRequest {
    QualityRequest::new("task-1", "agent-1")
        .files(["src/lib.rs", "README.md"])
        .diff_summary("add retries")
}

async fn check_once(
    coordinator: &TestCoordinator,
) -> Result<QualityResponse, tower_quality_gate::Error> {
    QualityCheck::new(coordinator.url())?
        .oneshot(request())
        .await
}

#[tokio::test]
async fn approved_verdict() {
    let coordinator = TestCoordinator::start().await;
    let verdict = check_once(&coordinator).await.unwrap();
    assert!(verdict.approved);
    assert_eq!(verdict.gate, "all");
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test]
async fn rejected_verdict_is_a_successful_call() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::json(&json!({
        "approved": false,
        "gate": "coverage",
        "message": "coverage 80% < 85%",
        "details": {"coverage": {"percent": 80.0}},
        "unknownField": true
    })));
    let verdict = check_once(&coordinator).await.unwrap();
    assert!(!verdict.approved);
    assert_eq!(verdict.gate, "coverage");
    assert_eq!(verdict.message.as_deref(), Some("coverage 80% < 85%"));
    assert_eq!(verdict.details.unwrap()["coverage"]["percent"], json!(80.0));
}

#[tokio::test]
async fn sends_the_exact_request() {
    let coordinator = TestCoordinator::start().await;
    check_once(&coordinator).await.unwrap();
    let got = &coordinator.requests()[0];
    assert_eq!(got.method, http::Method::POST);
    assert_eq!(got.path, "/api/quality/check");
    assert_eq!(got.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        body,
        json!({"taskId": "task-1", "agentId": "agent-1", "files": ["src/lib.rs", "README.md"], "diffSummary": "add retries"})
    );
    // The exact bytes, not just the same JSON value: field order and casing.
    assert_eq!(
        std::str::from_utf8(&got.body).unwrap(),
        r#"{"taskId":"task-1","agentId":"agent-1","files":["src/lib.rs","README.md"],"diffSummary":"add retries"}"#
    );
}

#[tokio::test]
async fn base_url_with_prefix_and_trailing_slash() {
    let coordinator = TestCoordinator::start().await;
    for base in [
        format!("{}/coordinator", coordinator.url()),
        format!("{}/coordinator/", coordinator.url()),
    ] {
        QualityCheck::new(base)
            .unwrap()
            .oneshot(request())
            .await
            .unwrap();
    }
    QualityCheck::new(format!("{}/", coordinator.url()))
        .unwrap()
        .oneshot(request())
        .await
        .unwrap();
    let paths: Vec<String> = coordinator.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/coordinator/api/quality/check",
            "/coordinator/api/quality/check",
            "/api/quality/check"
        ]
    );
}

#[tokio::test]
async fn connection_refused_is_a_retryable_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = QualityCheck::new(url)
        .unwrap()
        .oneshot(request())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), None);
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn status_errors_carry_code_snippet_and_retryability() {
    let coordinator = TestCoordinator::start().await;
    for (code, retryable) in [(400, false), (422, false), (500, true), (503, true)] {
        coordinator.push(Reply::raw(
            code,
            "text/plain",
            format!("failure {code}\n{}", "x".repeat(5000)),
        ));
        let err = check_once(&coordinator).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::from_u16(code).unwrap()));
        assert_eq!(err.kind(), ErrorKind::Status);
        assert_eq!(err.is_retryable(), retryable, "{code}");
        let snippet = err.body_snippet().unwrap();
        assert!(
            // On one line: the newline escaped.
            snippet.starts_with(&format!("failure {code}\\nx")),
            "{snippet}"
        );
        assert_eq!(snippet.chars().count(), 256);
        assert!(err.to_string().contains(&code.to_string()));
    }
}

#[tokio::test]
async fn invalid_responses() {
    let coordinator = TestCoordinator::start().await;
    let cases = [
        Reply::malformed_json(),
        Reply::json(&json!({"gate": "build"})),
        Reply::json(&json!({"approved": "true", "gate": "build"})),
        Reply::json(&json!({"approved": true, "gate": null})),
        Reply::raw(200, "text/html", "<html>approved</html>"),
        Reply::approve().content_type("text/plain"),
        Reply::raw(200, "application/json", ""),
    ];
    let n = cases.len();
    for reply in cases {
        coordinator.push(reply);
        let err = check_once(&coordinator).await.unwrap_err();
        assert!(err.is_invalid_response(), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(coordinator.hits(), n);
    // JSON with parameters, or a +json type, is fine.
    coordinator.push(Reply::approve().content_type("application/json; charset=utf-8"));
    coordinator.push(Reply::approve().content_type("application/vnd.coordinator+json"));
    assert!(check_once(&coordinator).await.unwrap().approved);
    assert!(check_once(&coordinator).await.unwrap().approved);
}

#[tokio::test]
async fn oversized_bodies_are_refused_without_reading_them() {
    let coordinator = TestCoordinator::start().await;
    // Announced by Content-Length: refused from the head.
    coordinator.push(Reply::approve().body_of_size(10 * 1024 * 1024));
    let err = check_once(&coordinator).await.unwrap_err();
    assert!(err.is_body_too_large(), "{err:?}");
    assert!(!err.is_retryable());
    // Not announced and never ending: only the cap stops it.
    coordinator.push(Reply::approve().endless_body());
    let err = check_once(&coordinator).await.unwrap_err();
    assert!(err.is_body_too_large(), "{err:?}");
    // A smaller cap applies too.
    let small = QualityCheck::builder(coordinator.url())
        .body_limit(10)
        .build()
        .unwrap();
    let err = small.oneshot(request()).await.unwrap_err();
    assert!(err.is_body_too_large());
    assert!(err.to_string().contains("10 bytes"));
}

#[tokio::test]
async fn connection_cut_mid_body_is_a_retryable_transport_error() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::cut_mid_body());
    let err = check_once(&coordinator).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(err.is_retryable());
    coordinator.push(Reply::close_before_headers());
    let err = check_once(&coordinator).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
}

#[tokio::test]
async fn credentials_are_sent_but_never_shown() {
    let coordinator = TestCoordinator::start().await;
    // A coordinator that echoes the credentials back in its error body.
    coordinator.respond_with(|r| {
        let auth = r.headers["authorization"].to_str().unwrap().to_owned();
        let key = r.headers["x-api-key"].to_str().unwrap().to_owned();
        Reply::raw(401, "text/plain", format!("rejected {auth} / {key}"))
    });
    let check = QualityCheck::builder(coordinator.url())
        .bearer_token("tok-SECRET-1")
        .api_key("key-SECRET-2")
        .header("x-team", "infra")
        .build()
        .unwrap();
    let err = check.clone().oneshot(request()).await.unwrap_err();
    let got = &coordinator.requests()[0];
    assert_eq!(got.headers["authorization"], "Bearer tok-SECRET-1");
    assert_eq!(got.headers["x-api-key"], "key-SECRET-2");
    assert_eq!(got.headers["x-team"], "infra");
    let shown = format!("{check:?} {err:?} {err}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(!shown.contains("SECRET"), "{shown}");
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let coordinator = TestCoordinator::start().await;
    let check = QualityCheck::builder(coordinator.url())
        .http2(true)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(check.clone().oneshot(request()).await.unwrap().approved);
    }
    assert_eq!(coordinator.hits(), 3);
}

#[tokio::test]
async fn keep_alive_reuses_connections() {
    let coordinator = TestCoordinator::start().await;
    let check = QualityCheck::new(coordinator.url()).unwrap();
    for _ in 0..20 {
        check.clone().oneshot(request()).await.unwrap();
    }
    assert_eq!(coordinator.hits(), 20);
    assert_eq!(coordinator.connections(), 1);
}

#[tokio::test]
async fn slow_body_is_read_whole() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::reject("lint", "slow").trickle(3, Duration::from_millis(1)));
    let verdict = check_once(&coordinator).await.unwrap();
    assert_eq!(verdict.message.as_deref(), Some("slow"));
}

/// The bare service sends a request's one attempt without a shared `Call`:
/// the same id, headers and refusals as a call through `Call::new`.
#[tokio::test]
async fn one_attempt_carries_its_id_and_headers_and_refuses_reserved_ones() {
    let coordinator = TestCoordinator::start().await;
    let check = QualityCheck::new(coordinator.url()).unwrap();
    // A generated id, different for each call.
    check.clone().oneshot(request()).await.unwrap();
    check.clone().oneshot(request()).await.unwrap();
    // The caller's own id and a per-call header.
    let own = http::HeaderValue::from_static("req-42");
    let traced = request().request_id(own.clone()).header(
        http::HeaderName::from_static("traceparent"),
        http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    check.clone().oneshot(traced).await.unwrap();
    let got = coordinator.requests();
    assert_eq!(got.len(), 3);
    let id = |i: usize| got[i].headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(id(0).starts_with("qg-") && id(1).starts_with("qg-"));
    assert_ne!(id(0), id(1));
    assert_eq!(id(2), "req-42");
    assert_eq!(
        got[2].headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    // Refused before anything is sent: a header the client owns, and the
    // request-id header set as a plain header.
    for (name, why) in [
        ("content-length", "reserved"),
        ("x-request-id", "request-id header"),
    ] {
        let req = request().header(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static("1"),
        );
        let err = check.clone().oneshot(req).await.unwrap_err();
        assert!(err.is_config(), "{name}: {err:?}");
        assert!(err.to_string().contains(why), "{name}: {err}");
    }
    assert_eq!(coordinator.hits(), 3);
    // Without an id header configured, none is sent.
    let quiet = QualityCheck::builder(coordinator.url())
        .request_id_header(None)
        .build()
        .unwrap();
    quiet.oneshot(request()).await.unwrap();
    assert!(!coordinator.requests()[3]
        .headers
        .contains_key("x-request-id"));
}
