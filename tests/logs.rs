//! What the client logs: the call's identity and outcome per attempt, never
//! the request body or a credential.

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::Response;
use serde_json::json;
use tower_quality_gate::gate::{DefaultRejection, MakeRejection};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest, Verdict};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures every event of the crate, at any level, for this thread
    /// while the guard lives.
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("tower_quality_gate=trace")
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn logs_attempts_and_outcome_without_secrets_or_body() {
    let (captured, _guard) = Captured::start();

    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503));
    let client = QualityClient::builder(coordinator.url())
        .bearer_token("tok-SECRET-1")
        .api_key("key-SECRET-2")
        .build()
        .unwrap();
    let req = QualityRequest::new("task-77", "agent-9")
        .files(["src/SECRET-FILE.rs"])
        .diff_summary("SECRET-BODY");
    assert!(client.check(req).await.unwrap().approved);

    let logs = captured.text();
    for expected in [
        "quality_gate.check{",
        "quality_gate.task_id=task-77",
        "quality_gate.agent_id=agent-9",
        "POST{otel.kind=\"client\"",
        "http.request.method=\"POST\"",
        "server.address=\"127.0.0.1\"",
        "quality_gate.attempt=1",
        "quality_gate.attempt=2",
        "http.request.resend_count=1",
        "http.response.status_code=503",
        "error.type=\"503\"",
        "error.type=\"status\"",
        "retrying",
        "attempts=2",
        "quality check finished",
        "approved=true",
        "quality_gate.request_id=\"qg-",
    ] {
        assert!(
            logs.contains(expected),
            "{expected:?} missing from:\n{logs}"
        );
    }
    assert!(
        !logs.contains("SECRET"),
        "a secret or the body leaked:\n{logs}"
    );
}

/// A coordinator that echoes credentials in its error bodies (as JSON, so a
/// tab in them arrives escaped): neither the DEBUG "attempt failed" events
/// nor the gate's WARN event show them, and the gate's answer carries none
/// of the body.
#[tokio::test(start_paused = true)]
async fn secret_headers_echoed_by_the_coordinator_are_logged_redacted() {
    let (captured, _guard) = Captured::start();
    let coordinator = TestCoordinator::start().await;
    coordinator.respond_with(|r| {
        let echo = |name: &str| {
            r.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let body = json!({
            "error": format!(
                "bad token {} for tenant password {} with key {}",
                echo("x-coordinator-token"),
                echo("x-tenant-pass"),
                echo("x-api-key"),
            )
        });
        Reply::raw(500, "application/json", body.to_string())
    });
    let client = QualityClient::builder(coordinator.url())
        .api_key("key-SECRET-2")
        .http(|c| {
            c.header("x-coordinator-token", "tok-SECRET-\t3")
                .secret_header("x-tenant-pass", "pass-SECRET-4")
        })
        .build()
        .unwrap();
    let err = client
        .check(QualityRequest::new("task-78", "agent-9"))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), Some(3));
    assert!(err
        .to_string()
        .contains("bad token [redacted] for tenant password [redacted]"));
    let response: Response<String> =
        DefaultRejection.make_rejection(Verdict::Unavailable { error: err });
    assert!(
        !response.body().contains("bad token"),
        "{}",
        response.body()
    );

    let logs = captured.text();
    assert_eq!(logs.matches("attempt failed").count(), 3, "{logs}");
    assert_eq!(
        logs.matches("quality gate: no verdict").count(),
        1,
        "{logs}"
    );
    assert_eq!(logs.matches("bad token [redacted]").count(), 4, "{logs}");
    assert!(!logs.contains("SECRET"), "a secret leaked:\n{logs}");
}

/// Per-call context (a caller's request id, trace headers, a credential as
/// a per-call header, a deadline) adds no span field or event that carries
/// a header value other than the request id, the body or a credential.
#[tokio::test(start_paused = true)]
async fn per_call_context_logs_only_the_request_id() {
    use std::time::Duration;

    use http::{HeaderName, HeaderValue};

    let (captured, _guard) = Captured::start();

    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503).retry_after("1"));
    coordinator.push(Reply::hang());
    let client = QualityClient::new(coordinator.url()).unwrap();
    let header = |name: &'static str, value: &'static str| {
        (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    let (auth, auth_value) = header("authorization", "Bearer tok-SECRET-3");
    let (parent, parent_value) = header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let (state, state_value) = header("tracestate", "vendor=SECRET-STATE");
    let req = QualityRequest::new("task-78", "agent-9")
        .diff_summary("SECRET-BODY")
        .request_id(HeaderValue::from_static("caller-rid-1"))
        .header(auth, auth_value)
        .header(parent, parent_value)
        .header(state, state_value)
        .timeout(Duration::from_secs(3));
    let err = client.check(req).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    // The coordinator did get them all.
    assert_eq!(
        coordinator.requests()[1].headers["authorization"],
        "Bearer tok-SECRET-3"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "quality_gate.request_id=\"caller-rid-1\"",
        "attempts=2",
        "error.type=\"timeout\"",
    ] {
        assert!(
            logs.contains(expected),
            "{expected:?} missing from:\n{logs}"
        );
    }
    for leaked in ["SECRET", "4bf92f3577b34da6", "Bearer"] {
        assert!(
            !logs.contains(leaked),
            "{leaked:?} leaked into the logs:\n{logs}"
        );
    }
}

/// The coordinator's own error text reaches the WARN event (operators need
/// it) bounded by the snippet's length, on one line with control and
/// invisible characters escaped, and redacted: a body that tries to forge
/// a log line, recolour the terminal or hide text does neither.
#[tokio::test(start_paused = true)]
async fn the_coordinators_error_text_is_logged_bounded_on_one_line_and_redacted() {
    let (captured, _guard) = Captured::start();
    let coordinator = TestCoordinator::start().await;
    let forged = "1999-01-01T00:00:00.000000Z  INFO forged: approved=true";
    let body = format!(
        "denied\n{forged}\r\x1b[2K\u{202e}hidden\u{2028}tok-SECRET-5 {}",
        "x".repeat(5000)
    );
    coordinator.always(Reply::raw(500, "text/plain", body));
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .bearer_token("tok-SECRET-5")
        .build()
        .unwrap();
    let err = client
        .check(QualityRequest::new("task-79", "agent-9"))
        .await
        .unwrap_err();
    let _: Response<String> = DefaultRejection.make_rejection(Verdict::Unavailable { error: err });

    let logs = captured.text();
    let warn: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("quality gate: no verdict"))
        .collect();
    assert_eq!(warn.len(), 1, "{logs}");
    let line = warn[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(r"denied\n1999-01-01T00:00:00.000000Z  INFO forged: approved=true\r\u{1b}[2K\u{202e}hidden\u{2028}[redacted] xxx"),
        "{line}"
    );
    // Bounded: the 256-character snippet and the event's own fields.
    assert!(
        line.chars().count() < 256 + 300,
        "{} chars: {line}",
        line.len()
    );
    assert!(!logs.lines().any(|l| l.starts_with("1999-")), "{logs}");
    for raw in ['\r', '\x1b', '\u{202e}', '\u{2028}'] {
        assert!(!logs.contains(raw), "{raw:?} in {logs:?}");
    }
    assert!(!logs.contains("SECRET"), "a secret leaked:\n{logs}");
}
