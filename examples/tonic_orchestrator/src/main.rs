//! An agent orchestrator's gRPC server (tonic 0.14) that asks the quality
//! gate before it accepts a task's completion.
//!
//! - `orchestrator.v1.Orchestrator/CompleteTask` calls the gate through a
//!   shared `QualityClient` and answers the verdict, or a status:
//!   `FAILED_PRECONDITION` when a gate rejected the work, `DEADLINE_EXCEEDED`
//!   when the check timed out, `UNAVAILABLE` when the coordinator could not
//!   be reached or failed in a way worth retrying, `INTERNAL` otherwise, and
//!   `INVALID_ARGUMENT` for a completion without task or agent.
//! - `orchestrator.v1.GatedOrchestrator/CompleteTask` does the same with
//!   `QualityGateLayer` put on that one service
//!   (`tonic::service::LayerExt::named_layer`): its handler runs only for
//!   approved work.
//!
//! Both carry the incoming call's deadline (`grpc-timeout`) and ids
//! (`x-request-id`, `traceparent`) into the check: the first reads them
//! from the request's metadata (`tower_quality_gate::propagate`), the gate layer
//! does it by itself. The check ends a margin before the caller's deadline
//! (`propagate::deadline_margin`), so a hurried caller gets the server's
//! `DEADLINE_EXCEEDED` with `x-error-kind` and `x-request-id`, not its own.
//!
//! Traces, in both modes: without the `opentelemetry` feature the caller's
//! `traceparent` is relayed to the coordinator as it came. With it, a
//! `tracing-opentelemetry` layer (in-memory exporter here) and the W3C
//! propagator are installed: both services join the caller's trace, each
//! attempt sends its own `POST` span as the coordinator's parent, and the
//! self-test prints the spans and checks that parent.
//!
//! Without `COORDINATOR_URL` it starts an in-process coordinator that
//! approves `task-approved`, rejects `task-rejected`, fails on
//! `task-failing` and takes 3 s over `task-slow`, serves on 127.0.0.1:0,
//! calls itself with a tonic client, prints and checks the answers, and
//! exits; with `--serve` it keeps serving.
//!
//! ```text
//! cargo run -p tonic_orchestrator
//! cargo run -p tonic_orchestrator --features opentelemetry
//! cargo run -p tonic_orchestrator -- --serve
//! ```

mod gated;
mod service;
mod status;
#[path = "../../common/traces.rs"]
mod traces;

/// The code generated from `proto/orchestrator.proto`.
pub mod pb {
    tonic::include_proto!("orchestrator.v1");
}

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::service::LayerExt;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::Server;
use tonic::Code;
use tower_quality_gate::gate::QualityGateLayer;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::QualityClient;

use crate::pb::gated_orchestrator_client::GatedOrchestratorClient;
use crate::pb::gated_orchestrator_server::GatedOrchestratorServer;
use crate::pb::orchestrator_client::OrchestratorClient;
use crate::pb::orchestrator_server::OrchestratorServer;
use crate::pb::CompleteTaskRequest;
use crate::service::{Checking, Gated};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Both services; only `GatedOrchestrator` is behind the gate layer.
/// (`Server::builder().layer(gate)` would put it in front of every service,
/// `Orchestrator` included, which checks by itself.)
fn server(client: QualityClient) -> Router {
    let gate =
        QualityGateLayer::new(client.clone(), gated::derive_check).reject_with(gated::reject);
    Server::builder()
        .add_service(OrchestratorServer::new(Checking::new(client)))
        .add_service(gate.named_layer(GatedOrchestratorServer::new(Gated)))
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

fn completion(task_id: &str, agent_id: &str) -> CompleteTaskRequest {
    CompleteTaskRequest {
        task_id: task_id.into(),
        agent_id: agent_id.into(),
        files: vec!["src/lib.rs".into()],
        diff_summary: "add the parser".into(),
    }
}

/// Calls both services as an agent would, prints the answers, and checks
/// the codes: exact ones against the in-process coordinator, plausible ones
/// against a real one.
async fn self_test(
    addr: SocketAddr,
    coordinator: Option<&TestCoordinator>,
) -> Result<(), BoxError> {
    let scripted = coordinator.is_some();
    let url = format!("http://{addr}");
    let mut checking = OrchestratorClient::connect(url.clone()).await?;
    let mut gated = GatedOrchestratorClient::connect(url).await?;
    let cases = [
        ("task-approved", "agent-7", Code::Ok),
        ("task-rejected", "agent-7", Code::FailedPrecondition),
        ("task-failing", "agent-7", Code::Unavailable),
        ("task-approved", "", Code::InvalidArgument),
    ];
    for (task, agent, expected) in cases {
        let answers = [
            (
                "Orchestrator",
                checking.complete_task(completion(task, agent)).await,
            ),
            (
                "GatedOrchestrator",
                gated.complete_task(completion(task, agent)).await,
            ),
        ];
        for (service, answer) in answers {
            let (code, text) = match answer {
                Ok(reply) => (Code::Ok, format!("{:?}", reply.into_inner())),
                Err(status) => (status.code(), status.message().to_owned()),
            };
            println!("{service}/CompleteTask {task:?} by {agent:?} -> {code:?}: {text}");
            if text.contains("db-primary") {
                return Err(
                    format!("{service} {task}: the coordinator's error text leaked").into(),
                );
            }
            let plausible = [
                Code::Ok,
                Code::FailedPrecondition,
                Code::Unavailable,
                Code::DeadlineExceeded,
                Code::Internal,
            ];
            let ok = if scripted || expected == Code::InvalidArgument {
                code == expected
            } else {
                plausible.contains(&code)
            };
            if !ok {
                return Err(
                    format!("{service} {task}: expected {expected:?}, got {code:?}").into(),
                );
            }
        }
    }
    // A caller that waits 300 ms at most: the check ends by then, and the
    // answer says why.
    let mut hurried = tonic::Request::new(completion("task-slow", "agent-7"));
    hurried.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let code = match checking.complete_task(hurried).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    let took = started.elapsed();
    println!(
        "Orchestrator/CompleteTask \"task-slow\" within 300 ms -> {code:?} in {} ms",
        took.as_millis()
    );
    let in_time = took < Duration::from_millis(1500);
    let expected = if scripted {
        code == Code::DeadlineExceeded
    } else {
        code != Code::Cancelled
    };
    if !(in_time && expected) {
        return Err(format!("a hurried call got {code:?} after {took:?}").into());
    }
    if scripted {
        hurried_gated_calls(&gated).await?;
    }
    if let Some(coordinator) = coordinator {
        traced_calls(&mut checking, &mut gated, coordinator).await?;
    }
    Ok(())
}

/// Ten gated calls at once, each waiting 300 ms at most, against a
/// coordinator that takes 3 s: the gate ends each check a margin before the
/// caller's deadline, so at least nine get the server's `DEADLINE_EXCEEDED`
/// with its metadata (`x-error-kind`, `x-request-id`), not their own.
async fn hurried_gated_calls(
    gated: &GatedOrchestratorClient<tonic::transport::Channel>,
) -> Result<(), BoxError> {
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut gated = gated.clone();
            tokio::spawn(async move {
                let mut hurried = tonic::Request::new(completion("task-slow", "agent-7"));
                hurried.set_timeout(Duration::from_millis(300));
                gated.complete_task(hurried).await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(call.await?);
    }
    let from_server = answers
        .iter()
        .filter(|answer| match answer {
            Err(status) => {
                status.code() == Code::DeadlineExceeded
                    && status.metadata().get("x-error-kind").is_some()
                    && status.metadata().get("x-request-id").is_some()
            }
            Ok(_) => false,
        })
        .count();
    println!("GatedOrchestrator/CompleteTask \"task-slow\" x10 within 300 ms -> {from_server} of 10 answered by the server");
    if from_server < 9 {
        return Err(
            format!("only {from_server} of 10 hurried calls got the server's answer").into(),
        );
    }
    Ok(())
}

/// One call to each service with the caller's `traceparent`, then the
/// parent the coordinator got (see `examples/common/traces.rs`).
async fn traced_calls(
    checking: &mut OrchestratorClient<tonic::transport::Channel>,
    gated: &mut GatedOrchestratorClient<tonic::transport::Channel>,
    coordinator: &TestCoordinator,
) -> Result<(), BoxError> {
    let traced = || -> Result<_, BoxError> {
        let mut request = tonic::Request::new(completion("task-traced", "agent-7"));
        request
            .metadata_mut()
            .insert("traceparent", traces::caller().parse()?);
        Ok(request)
    };
    checking.complete_task(traced()?).await?;
    println!("Orchestrator/CompleteTask with a traceparent -> Ok");
    traces::check_coordinator_parent(coordinator, "task-traced")?;
    gated.complete_task(traced()?).await?;
    println!("GatedOrchestrator/CompleteTask with a traceparent -> Ok");
    traces::check_coordinator_parent(coordinator, "task-traced")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    #[cfg(feature = "opentelemetry")]
    traces::install("tonic_orchestrator");
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
    let router = server(QualityClient::new(url)?);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("orchestrator (gRPC) listening on {addr}");
    let incoming = TcpIncoming::from(listener);
    if serve {
        router.serve_with_incoming(incoming).await?;
        return Ok(());
    }
    let server = tokio::spawn(router.serve_with_incoming(incoming));
    let result = self_test(addr, local.as_ref()).await;
    server.abort();
    result?;
    println!("all answers as expected");
    Ok(())
}
