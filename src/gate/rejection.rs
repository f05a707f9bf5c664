//! [`MakeRejection`]: what the gate answers instead of forwarding, and
//! [`DefaultRejection`], its answer for `http` responses.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::json;

use crate::verdict::Verdict;

/// Builds the response the gate sends when work is not approved.
///
/// The gate calls it with [`Verdict::Rejected`] (a gate failed) or
/// [`Verdict::Unavailable`] (no verdict could be had: fail closed), never
/// with [`Verdict::Approved`]. Any `FnMut(Verdict) -> Res` implements it:
///
/// ```
/// use tower_quality_gate::gate::MakeRejection;
/// use tower_quality_gate::{Error, QualityResponse, Verdict};
///
/// let mut reject = |verdict: Verdict| match verdict {
///     Verdict::Rejected { gate, .. } => format!("rejected by {gate}"),
///     _ => String::from("try again later"),
/// };
/// let rejected = Verdict::from(Ok::<_, Error>(QualityResponse::rejected("lint", "2 warnings")));
/// assert_eq!(reject.make_rejection(rejected), "rejected by lint");
/// ```
pub trait MakeRejection<Res> {
    /// The response for a verdict that does not let the request through.
    fn make_rejection(&mut self, verdict: Verdict) -> Res;
}

impl<F, Res> MakeRejection<Res> for F
where
    F: FnMut(Verdict) -> Res,
{
    fn make_rejection(&mut self, verdict: Verdict) -> Res {
        self(verdict)
    }
}

/// The gate's answer for `http::Response<B>` when no other is given: a JSON
/// body with the status [`DefaultRejection::status`] picks.
///
/// - rejected: `422 Unprocessable Entity`,
///   `{"approved":false,"gate":…,"message":…,"details":…}` — the request was
///   understood, the work it carries failed a gate;
/// - unavailable: `504 Gateway Timeout` when the check timed out, `503
///   Service Unavailable` when the coordinator could not be reached or a
///   circuit breaker is open (both pass: trying later may work), `502 Bad
///   Gateway` for any other failure (an error status, an invalid answer);
///   the body is `{"approved":false,"kind":…,"error":…,"requestId":…}`: the
///   error's [`kind`](crate::ErrorKind::as_str), the kind's fixed
///   [`generic_message`](crate::ErrorKind::generic_message), and the call's
///   [`request_id`](crate::Error::request_id) (`null` when unknown). The
///   coordinator's own error text never reaches the gate's callers (it may
///   echo internals); the full error is logged at WARN instead, with every
///   configured secret removed.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_quality_gate::gate::{DefaultRejection, MakeRejection};
/// use tower_quality_gate::{Error, QualityResponse, TimeoutKind, Verdict};
///
/// let rejected = Verdict::from(Ok::<_, Error>(QualityResponse::rejected("test", "1 failing")));
/// let response: Response<String> = DefaultRejection.make_rejection(rejected);
/// assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
/// assert!(response.body().contains(r#""gate":"test""#));
///
/// let timed_out = Verdict::Unavailable { error: Error::timeout(TimeoutKind::Total) };
/// assert_eq!(DefaultRejection::status(&timed_out), StatusCode::GATEWAY_TIMEOUT);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultRejection;

impl DefaultRejection {
    /// The status [`DefaultRejection`] answers a verdict with.
    ///
    /// An approval is never a rejection; asked about one anyway, it answers
    /// `500 Internal Server Error` rather than anything that reads as success.
    pub fn status(verdict: &Verdict) -> StatusCode {
        match verdict {
            Verdict::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Verdict::Unavailable { error } if error.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            Verdict::Unavailable { error } if error.is_connect() || error.is_circuit_open() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Verdict::Unavailable { .. } => StatusCode::BAD_GATEWAY,
            Verdict::Approved(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl<B> MakeRejection<Response<B>> for DefaultRejection
where
    B: From<String>,
{
    fn make_rejection(&mut self, verdict: Verdict) -> Response<B> {
        let status = DefaultRejection::status(&verdict);
        let body = match verdict {
            Verdict::Rejected {
                gate,
                message,
                details,
            } => json!({"approved": false, "gate": gate, "message": message, "details": details}),
            Verdict::Unavailable { error } => {
                let kind = error.kind();
                tracing::warn!(
                    error = %error,
                    error_kind = kind.as_str(),
                    request_id = error.request_id().unwrap_or(""),
                    status = status.as_u16(),
                    "quality gate: no verdict, failing closed"
                );
                json!({
                    "approved": false,
                    "kind": kind.as_str(),
                    "error": kind.generic_message(),
                    "requestId": error.request_id(),
                })
            }
            Verdict::Approved(_) => {
                json!({"approved": false, "error": "an approval was answered as a rejection"})
            }
        };
        let mut response = Response::new(B::from(body.to_string()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, TimeoutKind};
    use crate::wire::QualityResponse;

    fn unavailable(error: Error) -> Verdict {
        Verdict::Unavailable { error }
    }

    #[test]
    fn statuses_follow_the_error() {
        let status = DefaultRejection::status;
        assert_eq!(
            status(&unavailable(Error::timeout(TimeoutKind::Attempt))),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(&unavailable(Error::circuit_open())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(&unavailable(Error::connect("refused"))),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(&unavailable(Error::http_status(
                StatusCode::SERVICE_UNAVAILABLE,
                String::new(),
                None
            ))),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(&unavailable(Error::invalid("x"))),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(&Verdict::Approved(QualityResponse::approved("all"))),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn bodies_are_json_and_never_approve() {
        let rejected = Verdict::from(Ok(QualityResponse::rejected("lint", "2 warnings")));
        let response: Response<String> = DefaultRejection.make_rejection(rejected);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(
            body,
            json!({"approved": false, "gate": "lint", "message": "2 warnings", "details": null})
        );

        let response: Response<String> =
            DefaultRejection.make_rejection(unavailable(Error::circuit_open()));
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["approved"], json!(false));
        assert_eq!(body["kind"], json!("circuit_open"));
        assert_eq!(body["requestId"], json!(null));
    }

    #[test]
    fn unavailable_bodies_carry_no_coordinator_text() {
        let error = Error::http_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stack trace: db password hunter2".into(),
            None,
        )
        .with_request_id(http::HeaderValue::from_static("req-42"));
        let response: Response<String> = DefaultRejection.make_rejection(unavailable(error));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "approved": false,
                "kind": "status",
                "error": "the quality coordinator answered with an error",
                "requestId": "req-42",
            })
        );
    }
}
