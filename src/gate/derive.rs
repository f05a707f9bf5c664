//! [`DeriveQualityRequest`]: how the gate turns an incoming request into the
//! quality check it asks for.

use std::future::Future;

use crate::wire::QualityRequest;

/// Derives the [`QualityRequest`] to check from an incoming request, and
/// hands back the request to forward if the work is approved.
///
/// It takes the request by value and is asynchronous, because the facts to
/// check (agent, files, diff summary) usually sit in the body: the
/// implementation reads the body, decodes it, and rebuilds the request
/// around the bytes it read (for `http` requests,
/// `Request::from_parts(parts, Body::from(bytes))`), so the inner service
/// still gets the whole request. When no quality request can be derived (a
/// malformed body, a missing header), it answers with a response of its
/// own, typically a 400: the request then goes neither to the coordinator
/// nor to the inner service.
///
/// Any `FnMut(Req) -> Fut` whose future resolves to
/// `Result<(QualityRequest, Forward), Response>` implements it; an `async`
/// closure body is the usual form:
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use tower_quality_gate::gate::DeriveQualityRequest;
/// use tower_quality_gate::QualityRequest;
///
/// // From headers only: no body needs reading, the request passes unchanged.
/// let mut derive = |req: Request<String>| async move {
///     let header = |name: &str| req.headers().get(name)?.to_str().ok().map(str::to_owned);
///     match (header("x-task-id"), header("x-agent-id")) {
///         (Some(task), Some(agent)) => Ok((QualityRequest::new(task, agent), req)),
///         _ => {
///             let mut bad = Response::new(String::from("x-task-id and x-agent-id are required"));
///             *bad.status_mut() = StatusCode::BAD_REQUEST;
///             Err(bad)
///         }
///     }
/// };
/// # tokio_test::block_on(async {
/// let req = Request::builder()
///     .header("x-task-id", "task-1")
///     .header("x-agent-id", "agent-1")
///     .body(String::new())
///     .unwrap();
/// let (check, _forward) = derive.derive(req).await.unwrap();
/// assert_eq!(check.task_id, "task-1");
/// let missing = derive.derive(Request::new(String::new())).await.unwrap_err();
/// assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
/// # });
/// ```
pub trait DeriveQualityRequest<Req> {
    /// The request handed to the inner service when the work is approved:
    /// usually `Req` itself, rebuilt around its buffered body.
    type Request;
    /// The answer sent instead when no quality request can be derived.
    type Response;
    /// Resolves to the check and the request to forward, or to the answer.
    type Future: Future<Output = Result<(QualityRequest, Self::Request), Self::Response>>;

    /// Starts deriving the check for `request`.
    fn derive(&mut self, request: Req) -> Self::Future;
}

impl<F, Fut, Req, Forward, Res> DeriveQualityRequest<Req> for F
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<(QualityRequest, Forward), Res>>,
{
    type Request = Forward;
    type Response = Res;
    type Future = Fut;

    fn derive(&mut self, request: Req) -> Fut {
        self(request)
    }
}
