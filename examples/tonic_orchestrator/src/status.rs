//! From the quality gate's verdicts and errors to gRPC statuses.

use tonic::metadata::MetadataValue;
use tonic::Status;
use tower_quality_gate::{QualityRequest, Verdict};

use crate::pb::CompleteTaskRequest;

/// The status for work that is not accepted.
///
/// For a failed check the message is the error's kind and a fixed sentence,
/// with the kind and the request id also in the metadata (`x-error-kind`,
/// `x-request-id`); the error itself, coordinator text and all, is logged.
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
            // The coordinator's error text stays in the log: it may echo
            // internals (paths, stack traces) the caller must not see. The
            // caller gets the kind, a fixed sentence and the request id.
            tracing::warn!(error = %error, request_id = error.request_id(), "quality check failed");
            let kind = error.kind();
            let message = format!("no quality verdict ({kind}): {}", kind.generic_message());
            let mut status = if error.is_timeout() {
                Status::deadline_exceeded(message)
            } else if error.is_connect() || error.is_circuit_open() || error.is_retryable() {
                Status::unavailable(message)
            } else {
                Status::internal(message)
            };
            let metadata = status.metadata_mut();
            metadata.insert("x-error-kind", MetadataValue::from_static(kind.as_str()));
            if let Some(id) = error
                .request_id()
                .and_then(|id| MetadataValue::try_from(id).ok())
            {
                metadata.insert("x-request-id", id);
            }
            status
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
    use tonic::Code;
    use tower_quality_gate::{BoxError, Error, QualityResponse, TimeoutKind};

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
    fn failures_say_the_kind_and_a_fixed_sentence() {
        let status = status_for(unavailable(Error::timeout(TimeoutKind::Attempt)));
        assert_eq!(
            status.message(),
            "no quality verdict (timeout): the quality check timed out"
        );
        assert_eq!(status.metadata().get("x-error-kind").unwrap(), "timeout");
        assert!(status.metadata().get("x-request-id").is_none());
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
