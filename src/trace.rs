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
//! Numbers are recorded as `i64`, the integer type the OpenTelemetry bridge
//! (`tracing-opentelemetry`) exports as an integer: it has no `u64`
//! recorder, and a `u64` would reach OpenTelemetry as text (semantic
//! conventions v1.44 want integers for the status code, the port and the
//! resend count).
//!
//! `error.type` is the response's status code (`"503"`) for a status error
//! and the error kind ([`ErrorKind::as_str`](crate::ErrorKind::as_str))
//! otherwise, on both spans: the call span's is the error its caller gets.
//! An attempt cut by its timeout or the call's deadline ends with
//! `error.type = "timeout"` and status Error. An attempt dropped for any
//! other reason (the losing copy of a hedged call, or a caller that gave
//! up) did not fail: it ends with status Unset, no `error.type`, and
//! `quality_gate.cancelled = true`.
//!
//! With the `opentelemetry` feature each attempt also sends its own span's
//! trace context ([`crate::otel`]).
//!
//! - one span per request through a [`QualityGate`](crate::gate::QualityGate),
//!   `quality_gate.gate` (INFO): `quality_gate.verdict` (`approved`,
//!   `rejected`, `unavailable`).
//!
//! No field carries a request body, a header value or a credential.

use std::cell::Cell;

use tracing::field::Empty;

use crate::error::{Error, ErrorKind};
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

/// Records a call's request id on its span.
pub(crate) fn record_request_id(span: &tracing::Span, request_id: Option<&http::HeaderValue>) {
    if span.is_disabled() {
        return;
    }
    if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
        span.record("quality_gate.request_id", id);
    }
}

/// Records how a call ended on its span, and logs it at DEBUG.
pub(crate) fn call_finished(
    span: &tracing::Span,
    attempts: u32,
    result: &Result<QualityResponse, Error>,
) {
    if span.is_disabled() && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    span.record("quality_gate.attempts", i64::from(attempts));
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
            with_error_type(error, |error_type| {
                span.record("error.type", error_type);
                span.record("otel.status_code", "ERROR");
                tracing::debug!(
                    parent: span,
                    attempts,
                    error.type = error_type,
                    "quality check failed"
                );
            });
        }
    }
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
        server.port = i64::from(url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 })),
        url.full = %url,
        network.protocol.version = Empty,
        http.response.status_code = Empty,
        http.request.resend_count = Empty,
        error.type = Empty,
        quality_gate.request_id = Empty,
        quality_gate.attempt = i64::from(attempt),
        quality_gate.cancelled = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if attempt > 1 {
        span.record("http.request.resend_count", i64::from(attempt - 1));
    }
    if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
        span.record("quality_gate.request_id", id);
    }
    span
}

/// Records the response status of an attempt (an integer, as OpenTelemetry
/// wants it).
pub(crate) fn attempt_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
}

/// Records a failed attempt on its span.
pub(crate) fn attempt_failed(span: &tracing::Span, error: &Error) {
    with_error_type(error, |t| span.record("error.type", t));
    span.record("otel.status_code", "ERROR");
}

/// The `error.type` of a failed call or attempt, handed to `f`: the status
/// code of a status error (as the HTTP conventions say), the error kind
/// otherwise.
pub(crate) fn with_error_type<R>(error: &Error, f: impl FnOnce(&str) -> R) -> R {
    match error.status() {
        Some(status) => f(status.as_str()),
        None => f(error.kind().as_str()),
    }
}

thread_local! {
    /// Set while a timer drops the attempt it cut short.
    static TIMING_OUT: Cell<bool> = const { Cell::new(false) };
}

/// Drops an attempt's future (whatever `drop_it` drops) because its timer
/// fired: the attempt span then ends as a timeout, not as a cancellation.
pub(crate) fn timed_out<R>(drop_it: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            TIMING_OUT.with(|t| t.set(self.0));
        }
    }
    let _reset = Reset(TIMING_OUT.with(|t| t.replace(true)));
    drop_it()
}

/// Whether the attempt being dropped now was cut by a timer (see
/// [`timed_out`]); otherwise it was cancelled.
pub(crate) fn timing_out() -> bool {
    TIMING_OUT.with(Cell::get)
}

/// Records on its span how an attempt dropped before it finished ended:
/// a timeout if a timer cut it, a cancellation otherwise.
pub(crate) fn attempt_dropped(span: &tracing::Span) {
    if span.is_disabled() {
        return;
    }
    if timing_out() {
        span.record("error.type", ErrorKind::Timeout.as_str());
        span.record("otel.status_code", "ERROR");
    } else {
        span.record("quality_gate.cancelled", true);
    }
}

/// Adds the trace context of the attempt whose span is `span` to its
/// request headers, with the `opentelemetry` feature (see [`crate::otel`]);
/// nothing without it.
#[inline(always)]
pub(crate) fn inject_context(
    span: &tracing::Span,
    call_span: &tracing::Span,
    headers: &mut http::HeaderMap,
) {
    #[cfg(feature = "opentelemetry")]
    crate::otel::inject(span, call_span, headers);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, call_span, headers);
}

/// The span of one request through the gate.
pub(crate) fn gate_span() -> tracing::Span {
    tracing::info_span!("quality_gate.gate", quality_gate.verdict = Empty)
}

/// Records the gate's verdict on its span.
pub(crate) fn gate_verdict(span: &tracing::Span, verdict: &crate::verdict::Verdict) {
    let verdict = if verdict.is_approved() {
        "approved"
    } else if verdict.is_rejected() {
        "rejected"
    } else {
        "unavailable"
    };
    span.record("quality_gate.verdict", verdict);
}
