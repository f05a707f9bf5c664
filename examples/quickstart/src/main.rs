//! Sends a few quality checks and prints the verdicts.
//!
//! Against the coordinator at `COORDINATOR_URL` if it is set; otherwise
//! against a test coordinator started in this process on 127.0.0.1.
//!
//! ```text
//! cargo run -p quickstart
//! COORDINATOR_URL=http://127.0.0.1:8000 cargo run -p quickstart
//! ```

use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest};

#[tokio::main]
async fn main() -> Result<(), tower_quality_gate::Error> {
    // Keep the in-process coordinator alive until the end of main.
    let (_local, url) = match std::env::var("COORDINATOR_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let coordinator = TestCoordinator::start().await;
            // Reject work that touches no files or skips the tests; approve
            // the rest. The first call meets a brief overload and is retried.
            coordinator.respond_with(|r| match &r.request {
                Some(req) if req.files.is_empty() => Reply::reject("build", "nothing to build"),
                Some(req) if !req.files.iter().any(|f| f.starts_with("tests/")) => {
                    Reply::reject("test", "no tests touched")
                }
                _ => Reply::approve(),
            });
            coordinator.push(Reply::status(503).retry_after("0"));
            let url = coordinator.url();
            println!("started an in-process coordinator at {url}");
            (Some(coordinator), url)
        }
    };

    let client = QualityClient::new(url)?;
    let checks = [
        QualityRequest::new("task-1", "agent-a")
            .files(["src/lib.rs", "tests/lib.rs"])
            .diff_summary("add the parser"),
        QualityRequest::new("task-2", "agent-b")
            .files(["src/main.rs"])
            .diff_summary("tweak the CLI"),
        QualityRequest::new("task-3", "agent-c").diff_summary("empty change"),
    ];
    for req in checks {
        let task = req.task_id.clone();
        match client.check(req).await {
            Ok(v) if v.approved => println!("{task}: approved (gate {})", v.gate),
            Ok(v) => println!(
                "{task}: rejected by gate {}: {}",
                v.gate,
                v.message.unwrap_or_default()
            ),
            // An error is never an approval: the work is not accepted.
            Err(e) => println!(
                "{task}: not accepted, coordinator error ({}): {e}",
                e.kind()
            ),
        }
    }
    Ok(())
}
