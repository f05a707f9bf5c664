//! Bad input from the caller: empty ids, huge requests, control characters
//! and unicode, malformed base URLs. Nothing panics; what is sent arrives
//! exactly; what cannot be sent is a configuration error before any call.

mod common;

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{ErrorKind, QualityCheck, QualityClient, QualityRequest, QualityResponse};

use common::client;

/// Asserts the coordinator received `req` exactly: the same value, and the
/// same bytes as the request's own JSON encoding.
fn assert_received(coordinator: &TestCoordinator, req: &QualityRequest) {
    let got = coordinator.requests().pop().unwrap();
    assert_eq!(got.request.as_ref(), Some(req));
    assert_eq!(got.body, serde_json::to_vec(req).unwrap());
}

#[tokio::test(start_paused = true)]
async fn empty_ids_are_sent_as_they_are_and_the_coordinator_decides() {
    let coordinator = TestCoordinator::start().await;
    coordinator.respond_with(|r| match &r.request {
        Some(q) if q.task_id.is_empty() || q.agent_id.is_empty() => {
            Reply::raw(422, "application/json", r#"{"error":"taskId is empty"}"#)
        }
        _ => Reply::approve(),
    });
    let client = client(&coordinator);
    let req = QualityRequest::new("", "");

    let start = Instant::now();
    let err = client.check(req.clone()).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert!(!err.is_retryable());
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(err.body_snippet(), Some(r#"{"error":"taskId is empty"}"#));
    assert_eq!(coordinator.hits(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_received(&coordinator, &req);
    assert_eq!(
        &coordinator.requests()[0].body[..],
        br#"{"taskId":"","agentId":"","files":[],"diffSummary":""}"#
    );
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_files_arrive_whole() {
    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);
    let req = QualityRequest::new("task-big", "agent-1")
        .files((0..100_000).map(|n| format!("src/module_{n}/file_{n}.rs")))
        .diff_summary("x".repeat(1 << 20));

    let start = Instant::now();
    assert!(client.check(req.clone()).await.unwrap().approved);
    assert_eq!(coordinator.hits(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_received(&coordinator, &req);
    assert!(coordinator.requests()[0].body.len() > 4 << 20);
}

/// Every ASCII and C1 control character, and unicode that trips naive
/// encoders: non-BMP, joiners, right-to-left, combining marks, line and
/// paragraph separators, a byte-order mark, and JSON's own metacharacters.
fn awkward_text() -> String {
    let controls: String = (0u32..0x20)
        .chain([0x7f])
        .chain(0x80..0xa0)
        .filter_map(char::from_u32)
        .collect();
    format!(
        "{controls}|🦀 👩‍💻 שלום مرحبا e\u{301} \u{2028}\u{2029}\u{feff}\u{fffd} \"q\" \\ / </script> \u{10ffff}"
    )
}

#[tokio::test(start_paused = true)]
async fn control_characters_and_unicode_round_trip_exactly() {
    let coordinator = TestCoordinator::start().await;
    let text = awkward_text();
    // The coordinator answers with the same text in its verdict.
    coordinator.respond_with(|r| {
        let q = r.request.clone().unwrap();
        Reply::verdict(&QualityResponse::rejected(q.agent_id, q.diff_summary))
    });
    let client = client(&coordinator);
    let req = QualityRequest::new(format!("task-{text}"), text.clone())
        .files([text.clone(), format!("dir/{text}.rs"), String::new()])
        .diff_summary(text.clone());

    let verdict = client.check(req.clone()).await.unwrap();
    assert_received(&coordinator, &req);
    assert_eq!(verdict.gate, text);
    assert_eq!(verdict.message.as_deref(), Some(text.as_str()));
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test]
async fn malformed_base_urls_are_config_errors_before_any_call() {
    let coordinator = TestCoordinator::start().await;
    let url = coordinator.url();
    let mut cases = vec![
        (format!("{url}/?token=1"), "query"),
        (format!("{url}?a"), "query"),
        (format!("{url}/#frag"), "fragment"),
        (format!("{url}#"), "fragment"),
        (format!("{url}/prefix?a=b#c"), "fragment"),
        ("ftp://127.0.0.1:1".to_owned(), "scheme"),
        ("127.0.0.1:8000".to_owned(), "scheme"),
        ("http://".to_owned(), "not a valid URL"),
        ("http://u:p@127.0.0.1:1".to_owned(), "credentials"),
        ("http://127.0.0.1:1/a b".to_owned(), "not a valid URL"),
        ("http://127.0.0.1:1/\0".to_owned(), "not a valid URL"),
        ("http://bücher.example".to_owned(), "not a valid URL"),
        ("".to_owned(), "not a valid URL"),
        (format!("http://{}", "a".repeat(100_000)), "not a valid URL"),
    ];
    if !cfg!(feature = "rustls") {
        cases.push(("https://127.0.0.1:1".to_owned(), "https"));
    }
    for (base, says) in cases {
        let err = QualityClient::new(base.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{base:?}");
        assert!(!err.is_retryable(), "{base:?}");
        let shown = err.to_string();
        assert!(shown.starts_with("invalid configuration: "), "{shown}");
        assert!(shown.contains(says), "{base:?}: {shown}");
        assert!(QualityCheck::new(base.clone()).unwrap_err().is_config());
    }
    // Nothing reached the coordinator.
    assert_eq!(coordinator.connections(), 0);
}

#[tokio::test]
async fn a_port_out_of_range_is_a_config_error() {
    for base in ["http://127.0.0.1:99999", "http://127.0.0.1:65536/prefix"] {
        let err = QualityClient::new(base).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{base}");
        assert!(err.to_string().contains("port"), "{err}");
    }
}

#[tokio::test]
async fn a_query_is_refused_without_echoing_it() {
    let err = QualityClient::new("http://127.0.0.1:1/?token=SECRET").unwrap_err();
    assert!(err.is_config());
    assert!(!format!("{err} {err:?}").contains("SECRET"), "{err}");
}
