//! The orchestrator's two gRPC services.

use quality_gate::{QualityClient, Verdict};
use tonic::{Request, Response, Status};

use crate::pb::gated_orchestrator_server::GatedOrchestrator;
use crate::pb::orchestrator_server::Orchestrator;
use crate::pb::{CompleteTaskReply, CompleteTaskRequest};
use crate::status::{check_for, status_for};

/// `Orchestrator`: asks the quality gate through a shared client (its
/// clones share the connection pool, the concurrency limit and the retry
/// budget).
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
        let check = check_for(request.into_inner())?;
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
