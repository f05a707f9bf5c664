//! OpenTelemetry-native traces (feature `opentelemetry`): traces that join.
//!
//! Supported pair: **`tracing-opentelemetry` 0.34 with `opentelemetry`
//! 0.33** (and an SDK of the same line, `opentelemetry_sdk` 0.33). The
//! application must use these same versions: the global propagator and the
//! span contexts are shared through them, and a second copy of either crate
//! is a second, empty global.
//!
//! With a `tracing-opentelemetry` layer installed and a global text-map
//! propagator set (the W3C [`TraceContextPropagator`], or any other):
//!
//! - **every attempt sends its own context**: the `POST` span of each
//!   attempt (see [Spans](#spans)) is injected into that attempt's request headers through the global
//!   propagator. The coordinator's span then has the attempt span as its
//!   parent: same trace id as the call's parent, the attempt's own span id,
//!   each retry and each hedged copy its own (W3C Trace Context §3.2). A
//!   call with no span around it starts a trace. When a filter disables
//!   the `POST` span, the nearest enabled span's context is sent instead
//!   (the call's `quality_gate.check` span, else the current span).
//! - **the gate joins the trace**: [`QualityGate`](crate::gate::QualityGate)
//!   extracts the incoming context with the global propagator into its
//!   `quality_gate.gate` span, so the server's spans sit between the caller
//!   and the coordinator, and it no longer copies the caller's
//!   `traceparent`/`tracestate` into the check (it still relays them, as
//!   without the feature, when its span has no OpenTelemetry context: no
//!   layer installed, or its span filtered out). When a span around the
//!   gate already carries an OpenTelemetry context (the server's own
//!   instrumentation extracted it), the gate leaves the join to it.
//!
//! **Escape hatch**: trace headers the caller sets itself, with
//! [`QualityRequest::header`](crate::QualityRequest::header) or in a gate's
//! derive function (any header the global propagator writes, such as
//! `traceparent` or `tracestate`), are the caller's choice: nothing is
//! injected into that call, and its headers go out as set. They are taken
//! as a set (W3C's `traceparent`/`tracestate` pair): set all of them or
//! none.
//!
//! Without the feature nothing of OpenTelemetry is compiled in: the spans
//! are plain `tracing` spans and the gate relays the caller's
//! `traceparent` and `tracestate` byte for byte (see
//! [`propagate`](crate::propagate)).
//!
//! # Spans
//!
//! The crate's `tracing` spans (with or without the feature), named and
//! typed after the OpenTelemetry HTTP client conventions (v1.44):
//!
//! | span | fields |
//! |---|---|
//! | `quality_gate.gate` (INFO), one per request through a gate | `quality_gate.verdict` (`approved`, `rejected`, `unavailable`) |
//! | `quality_gate.check` (INFO), one per call | `quality_gate.task_id`, `quality_gate.agent_id`, `quality_gate.request_id`, `quality_gate.attempts` (i64), `quality_gate.gate`, `quality_gate.approved`, `error.type` and `otel.status_code = "ERROR"` when the caller gets an error |
//! | `POST` (INFO, `otel.kind = "client"`), one per attempt | `http.request.method`, `server.address`, `server.port` (i64), `url.full`, `network.protocol.version`, `http.response.status_code` (i64), `http.request.resend_count` (i64, from the second attempt), `error.type`, `otel.status_code`, `quality_gate.request_id`, `quality_gate.attempt` (i64), `quality_gate.cancelled` |
//!
//! Integers are `i64`: `tracing-opentelemetry` exports a `u64` as text.
//! `error.type` is the status code for a status error (`"503"`) and the
//! error kind otherwise (`"timeout"`, `"connect"`, …), on the call span as
//! on the attempt's. An attempt cut by its timeout or the call's deadline
//! has `error.type = "timeout"` and status Error; an attempt dropped for
//! another reason (a hedged copy that lost the race, a caller that gave
//! up) did not fail: no `error.type`, status Unset,
//! `quality_gate.cancelled = true`.
//!
//! # Install
//!
//! ```toml
//! [dependencies]
//! tower-quality-gate = { version = "0.2", features = ["opentelemetry"] }
//! opentelemetry = "0.33"
//! # `testing` for the in-memory exporter of this example; an exporter of
//! # your own (OTLP, stdout) needs only the SDK's `trace` feature.
//! opentelemetry_sdk = { version = "0.33", features = ["trace", "testing"] }
//! tracing-opentelemetry = "0.34"
//! tracing-subscriber = "0.3"
//! ```
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::propagation::TraceContextPropagator;
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! // Your exporter here (OTLP, stdout…); the in-memory one keeps spans for a test.
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder()
//!     .with_simple_exporter(exporter.clone())
//!     .build();
//! opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("orchestrator")))
//!     .init();
//! ```
//!
//! [`TraceContextPropagator`]: https://docs.rs/opentelemetry_sdk/0.33/opentelemetry_sdk/propagation/struct.TraceContextPropagator.html

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Injects the context of `span` (the attempt's), or of the nearest span
/// with a context, into an attempt's `headers`, unless they already carry
/// one of the propagator's headers (the caller's choice).
pub(crate) fn inject(span: &tracing::Span, call_span: &tracing::Span, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        if propagator.fields().any(|field| headers.contains_key(field)) {
            return;
        }
        let Some(cx) = nearest_context([span, call_span, &tracing::Span::current()]) else {
            return;
        };
        propagator.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// The first of `spans` whose OpenTelemetry context has a valid span: a
/// span disabled by a filter, or not seen by the OpenTelemetry layer, has
/// none.
fn nearest_context<const N: usize>(spans: [&tracing::Span; N]) -> Option<Context> {
    spans
        .into_iter()
        .filter(|span| !span.is_disabled())
        .map(OpenTelemetrySpanExt::context)
        .find(|cx| cx.span().span_context().is_valid())
}

/// Joins `span` to the trace of an incoming request, as the gate does for
/// its own span: its parent becomes the context the global propagator
/// extracts from the request's `headers`, unless a span around it (the
/// current span) already has an OpenTelemetry context. For a handler that
/// calls a [`QualityClient`](crate::QualityClient) itself: call it before `span` is first
/// entered, and make the check inside `span`.
///
/// True when checks made inside `span` carry an OpenTelemetry context, so
/// the caller's trace headers are not to be relayed
/// ([`Propagation::trace_context`](crate::propagate::Propagation::trace_context)`(false)`);
/// false when OpenTelemetry is not in use for it (no layer, or `span`
/// filtered out): then relay them, as without the feature.
///
/// ```
/// use http::HeaderMap;
/// use tower_quality_gate::propagate::Propagation;
///
/// # let headers = HeaderMap::new();
/// let span = tracing::info_span!("complete_task");
/// let joined = tower_quality_gate::otel::join(&span, &headers);
/// let context = Propagation::default().trace_context(!joined).extract(&headers);
/// # let _ = context;
/// // client.check(context.apply(check)).instrument(span).await
/// ```
pub fn join(span: &tracing::Span, headers: &HeaderMap) -> bool {
    // A server span around the gate that already has a context: the
    // server's instrumentation joined (or chose not to), and the gate's
    // span is its child.
    let outer = tracing::Span::current();
    if !outer.is_disabled() && has_context(&outer) {
        return true;
    }
    if span.is_disabled() {
        return false;
    }
    let incoming = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    // Err when no OpenTelemetry layer is installed; Ok without a context
    // when the layer's own filter left the span out.
    span.set_parent(incoming).is_ok() && has_context(span)
}

fn has_context(span: &tracing::Span) -> bool {
    span.context().span().span_context().is_valid()
}

/// Writes a propagator's fields into request headers; a name or value that
/// is not a valid header is skipped.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Reads a propagator's fields from request headers; a value that is not
/// visible ASCII is absent.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}
