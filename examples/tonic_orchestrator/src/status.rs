//! From the quality gate's verdicts and errors to gRPC statuses.

use quality_gate::{QualityRequest, Verdict};
use tonic::Status;

use crate::pb::CompleteTaskRequest;

/// The status for work that is not accepted.
///
/// - rejected: `FAILED_PRECONDITION` — the call was valid, the work it
///   carries does not meet the gate's conditions, and retrying the same
///   work will not change that;
/// - timed out: `DEADLINE_EXCEEDED`;
/// - coordinator unreachable, circuit open, or any failure worth retrying
///   (transport, 408, 429, 5xx): `UNAVAILABLE`, which gRPC clients treat as
///   transient and may retry with backoff;
/// - any other failure (our own configuration, a 4xx from the coordinator,
///   an answer that is not a verdict): `INTERNAL`, because retrying will
///   not help and the fault is on the server's side, not the caller's.
pub fn status_for(verdict: Verdict) -> Status {
    match verdict {
        Verdict::Rejected { gate, message, .. } => Status::failed_precondition(format!(
            "rejected by the {gate} gate: {}",
            message.unwrap_or_default()
        )),
        Verdict::Unavailable { error } => {
            let message = format!("no quality verdict ({}): {error}", error.kind());
            if error.is_timeout() {
                Status::deadline_exceeded(message)
            } else if error.is_connect() || error.is_circuit_open() || error.is_retryable() {
                Status::unavailable(message)
            } else {
                Status::internal(message)
            }
        }
        // The gate never answers an approval as a rejection; say so loudly.
        Verdict::Approved(_) => Status::internal("an approval was answered as a rejection"),
    }
}

/// The check a completion asks for, or `INVALID_ARGUMENT`.
pub fn check_for(completion: CompleteTaskRequest) -> Result<QualityRequest, Status> {
    if completion.task_id.trim().is_empty() || completion.agent_id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "task_id and agent_id are required",
        ));
    }
    Ok(QualityRequest::new(completion.task_id, completion.agent_id)
        .files(completion.files)
        .diff_summary(completion.diff_summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quality_gate::{BoxError, Error, QualityResponse, TimeoutKind};
    use tonic::Code;

    fn code(verdict: Verdict) -> Code {
        status_for(verdict).code()
    }

    fn unavailable(error: Error) -> Verdict {
        Verdict::Unavailable { error }
    }

    #[test]
    fn verdicts_and_errors_map_to_codes() {
        let rejected = Verdict::from(Ok::<_, Error>(QualityResponse::rejected("lint", "x")));
        assert_eq!(code(rejected), Code::FailedPrecondition);
        assert_eq!(
            code(unavailable(Error::timeout(TimeoutKind::Total))),
            Code::DeadlineExceeded
        );
        assert_eq!(code(unavailable(Error::circuit_open())), Code::Unavailable);
        let other: BoxError = "boom".into();
        assert_eq!(code(unavailable(Error::from(other))), Code::Internal);
    }

    #[test]
    fn blank_ids_are_invalid() {
        let completion = CompleteTaskRequest {
            task_id: "t".into(),
            agent_id: " ".into(),
            ..Default::default()
        };
        assert_eq!(
            check_for(completion).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
