//! The orchestrator's two gRPC services.

use tonic::{Request, Response, Status};
use tower_quality_gate::propagate::Propagation;
use tower_quality_gate::{QualityClient, Verdict};
use tracing::Instrument;

use crate::pb::gated_orchestrator_server::GatedOrchestrator;
use crate::pb::orchestrator_server::Orchestrator;
use crate::pb::{CompleteTaskReply, CompleteTaskRequest};
use crate::status::{check_for, status_for};

/// `Orchestrator`: asks the quality gate through a shared client (its
/// clones share the connection pool, the concurrency limit and the retry
/// budget).
///
/// Each check carries the gRPC call's context: it ends a margin before the
/// caller's deadline (`grpc-timeout`: tonic applies it to the handler but
/// has no getter, so `Propagation` reads it from the metadata and keeps
/// `deadline_margin` back for the answer), so the caller gets this
/// service's `DEADLINE_EXCEEDED` with its metadata rather than its own;
/// it sends the caller's `x-request-id`, and joins the caller's trace
/// (feature `opentelemetry`) or relays its `traceparent`.
#[derive(Clone, Debug)]
pub struct Checking {
    client: QualityClient,
}

impl Checking {
    /// A service that checks with `client`.
    pub fn new(client: QualityClient) -> Self {
        Checking { client }
    }
}

#[tonic::async_trait]
impl Orchestrator for Checking {
    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskReply>, Status> {
        let headers = request.metadata().as_ref();
        let span = tracing::info_span!("complete_task");
        #[cfg(feature = "opentelemetry")]
        let joined = tower_quality_gate::otel::join(&span, headers);
        #[cfg(not(feature = "opentelemetry"))]
        let joined = false;
        let context = Propagation::default()
            .trace_context(!joined)
            .extract(headers);
        let check = context.apply(check_for(request.into_inner())?);
        match self.client.verdict(check).instrument(span).await {
            Verdict::Approved(v) => Ok(Response::new(CompleteTaskReply {
                accepted: true,
                gate: v.gate,
                message: v.message.unwrap_or_default(),
            })),
            // Not approved, for whatever reason: the work is not accepted.
            verdict => Err(status_for(verdict)),
        }
    }
}

/// `GatedOrchestrator`: runs behind the `QualityGateLayer`, so the work was
/// approved before the request got here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gated;

#[tonic::async_trait]
impl GatedOrchestrator for Gated {
    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskReply>, Status> {
        let completion = request.into_inner();
        Ok(Response::new(CompleteTaskReply {
            accepted: true,
            gate: String::new(),
            message: format!(
                "{} accepted from {} behind the gate layer",
                completion.task_id, completion.agent_id
            ),
        }))
    }
}
