//! The `QualityGateLayer` on one gRPC service: how it derives the check
//! from a gRPC request, and answers with a gRPC status.
//!
//! A tonic server sees `http::Request<tonic::body::Body>`, the unary
//! message inside one length-prefixed frame (a compression flag byte, a
//! 4-byte big-endian length, the protobuf message). The derive function
//! reads that frame (at most [`MAX_MESSAGE`] bytes), decodes it, and rebuilds
//! the request around the bytes it read for the service's own decoder.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tonic::body::Body;
use tonic::Status;
use tower_quality_gate::{QualityRequest, Verdict};

use crate::pb::CompleteTaskRequest;
use crate::status::{check_for, status_for};

/// The largest request read: tonic's default decoding limit, 4 MiB, plus the
/// frame header.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024 + 5;

type GrpcRequest = http::Request<Body>;
type GrpcResponse = http::Response<Body>;

/// Reads and decodes the request's message, and hands back the check to
/// make and the request rebuilt around the bytes read; a request that
/// cannot be read or decoded is answered with `INVALID_ARGUMENT` (or
/// `UNIMPLEMENTED` for compression) and never checked.
pub async fn derive_check(req: GrpcRequest) -> Result<(QualityRequest, GrpcRequest), GrpcResponse> {
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_MESSAGE).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(Status::invalid_argument(format!("unreadable request: {e}")).into_http())
        }
    };
    let check = decode(&bytes)
        .and_then(check_for)
        .map_err(Status::into_http)?;
    let body = Body::new(Full::new(bytes));
    Ok((check, http::Request::from_parts(parts, body)))
}

/// Decodes the one message of a unary gRPC request.
fn decode(frame: &Bytes) -> Result<CompleteTaskRequest, Status> {
    let [flag, l0, l1, l2, l3, message @ ..] = &frame[..] else {
        return Err(Status::invalid_argument("not a gRPC message"));
    };
    if *flag != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not accepted",
        ));
    }
    let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    if message.len() != len {
        return Err(Status::invalid_argument("expected exactly one message"));
    }
    CompleteTaskRequest::decode(message)
        .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
}

/// Answers work that is not approved with its gRPC status.
pub fn reject(verdict: Verdict) -> GrpcResponse {
    status_for(verdict).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn frame(message: &[u8]) -> Bytes {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(message);
        Bytes::from(bytes)
    }

    #[test]
    fn decodes_one_frame_and_refuses_the_rest() {
        let message = CompleteTaskRequest {
            task_id: "t".into(),
            agent_id: "a".into(),
            ..Default::default()
        };
        let decoded = decode(&frame(&message.encode_to_vec())).unwrap();
        assert_eq!(decoded, message);

        assert_eq!(
            decode(&Bytes::from_static(b"\0\0")).unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut truncated = frame(&message.encode_to_vec()).to_vec();
        truncated.pop();
        assert_eq!(
            decode(&Bytes::from(truncated)).unwrap_err().code(),
            Code::InvalidArgument
        );
        let compressed = Bytes::from_static(b"\x01\0\0\0\0");
        assert_eq!(decode(&compressed).unwrap_err().code(), Code::Unimplemented);
    }
}
