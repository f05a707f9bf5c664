//! The orchestrator's two gRPC services.

use std::time::Duration;

use tonic::{Request, Response, Status};
use tower_quality_gate::propagate::{parse_grpc_timeout, Propagation, GRPC_TIMEOUT};
use tower_quality_gate::{QualityClient, Verdict};

use crate::pb::gated_orchestrator_server::GatedOrchestrator;
use crate::pb::orchestrator_server::Orchestrator;
use crate::pb::{CompleteTaskReply, CompleteTaskRequest};
use crate::status::{check_for, status_for};

/// Time kept back from the caller's deadline to send the answer: the check
/// ends this much before it, so the caller gets this service's
/// `DEADLINE_EXCEEDED` (and its message) rather than tonic's own
/// `CANCELLED` when the deadline passes.
const ANSWER_MARGIN: Duration = Duration::from_millis(20);

/// `Orchestrator`: asks the quality gate through a shared client (its
/// clones share the connection pool, the concurrency limit and the retry
/// budget).
///
/// Each check carries the gRPC call's context: it ends before the caller's
/// deadline (`grpc-timeout`: tonic applies it to the handler but has no
/// getter, so it is read from the metadata), and sends the caller's
/// `x-request-id` and `traceparent` to the coordinator.
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
        let metadata = request.metadata();
        let budget = metadata
            .get(GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .map(|d| d.saturating_sub(ANSWER_MARGIN));
        // Ids and trace context; the deadline is taken above, with the margin.
        let context = Propagation::default()
            .deadline(false)
            .extract(metadata.as_ref());
        let mut check = context.apply(check_for(request.into_inner())?);
        if let Some(budget) = budget {
            check = check.timeout(budget);
        }
        match self.client.verdict(check).await {
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
