//! The crate's spans and events, named after the OpenTelemetry semantic
//! conventions for HTTP clients, in one place.
//!
//! - one span per call, `quality_gate.check` (INFO): `quality_gate.task_id`,
//!   `quality_gate.agent_id`, `quality_gate.request_id`,
//!   `quality_gate.attempts`, `quality_gate.gate`, `quality_gate.approved`,
//!   `error.type`, `otel.status_code`;
//! - one span per attempt, `POST` (INFO, `otel.kind = "client"`):
//!   `http.request.method`, `server.address`, `server.port`, `url.full`,
//!   `network.protocol.version`, `http.response.status_code`,
//!   `http.request.resend_count` (from the second attempt on),
//!   `error.type`, `quality_gate.request_id`, `quality_gate.attempt`.
//!
//! No field carries a request body, a header value or a credential.

use tracing::field::Empty;

use crate::call::Call;
use crate::error::Error;
use crate::wire::{QualityRequest, QualityResponse};

/// The span of one call.
pub(crate) fn call_span(request: &QualityRequest) -> tracing::Span {
    tracing::info_span!(
        "quality_gate.check",
        quality_gate.task_id = %request.task_id,
        quality_gate.agent_id = %request.agent_id,
        quality_gate.request_id = Empty,
        quality_gate.attempts = Empty,
        quality_gate.gate = Empty,
        quality_gate.approved = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

pub(crate) fn record_request_id(call: &Call) {
    if call.span().is_disabled() {
        return;
    }
    if let Some(id) = call.request_id().and_then(|id| id.to_str().ok()) {
        call.span().record("quality_gate.request_id", id);
    }
}

/// Records how a call ended on its span, and logs it at DEBUG.
pub(crate) fn call_finished(call: &Call, result: &Result<QualityResponse, Error>) {
    let span = call.span();
    if span.is_disabled() && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let attempts = call.attempts();
    span.record("quality_gate.attempts", attempts);
    match result {
        Ok(verdict) => {
            span.record("quality_gate.gate", verdict.gate.as_str());
            span.record("quality_gate.approved", verdict.approved);
            tracing::debug!(
                parent: span,
                attempts,
                approved = verdict.approved,
                gate = %verdict.gate,
                "quality check finished"
            );
        }
        Err(error) => {
            span.record("error.type", error.kind().as_str());
            span.record("otel.status_code", "ERROR");
            tracing::debug!(
                parent: span,
                attempts,
                error.type = error.kind().as_str(),
                "quality check failed"
            );
        }
    }
}

/// The span of one attempt, a child of the call's.
pub(crate) fn attempt_span(call: &Call, attempt: u32, url: &http::Uri) -> tracing::Span {
    attempt_span_of(call.span(), call.request_id(), attempt, url)
}

/// The span of one attempt, a child of `parent`, for a call with this id.
pub(crate) fn attempt_span_of(
    parent: &tracing::Span,
    request_id: Option<&http::HeaderValue>,
    attempt: u32,
    url: &http::Uri,
) -> tracing::Span {
    let span = tracing::info_span!(
        parent: parent,
        "POST",
        otel.kind = "client",
        otel.name = "POST",
        otel.status_code = Empty,
        http.request.method = "POST",
        server.address = url.host().unwrap_or(""),
        server.port = url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 }),
        url.full = %url,
        network.protocol.version = Empty,
        http.response.status_code = Empty,
        http.request.resend_count = Empty,
        error.type = Empty,
        quality_gate.request_id = Empty,
        quality_gate.attempt = attempt,
    );
    if span.is_disabled() {
        return span;
    }
    if attempt > 1 {
        span.record("http.request.resend_count", attempt - 1);
    }
    if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
        span.record("quality_gate.request_id", id);
    }
    span
}
