//! What the client logs: the call's identity and outcome per attempt, never
//! the request body or a credential.

use std::io::Write;
use std::sync::{Arc, Mutex};

use quality_gate::testing::{Reply, TestCoordinator};
use quality_gate::{QualityClient, QualityRequest};

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

#[tokio::test(start_paused = true)]
async fn logs_attempts_and_outcome_without_secrets_or_body() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("quality_gate=trace")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
