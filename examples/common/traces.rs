//! What both orchestrator examples do with traces, in both modes: send a
//! call with a caller's `traceparent`, then check what the coordinator got.
//! Without the `opentelemetry` feature the caller's header is relayed as it
//! came; with it, a `tracing-opentelemetry` layer over an in-memory
//! exporter and the W3C propagator are installed ([`install`]), and the
//! coordinator's parent must be one of the orchestrator's attempt spans,
//! in the caller's trace.

use tower_quality_gate::testing::TestCoordinator;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The caller's trace context in the self-tests.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The `traceparent` the self-tests' caller sends.
pub fn caller() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// Checks the `traceparent` the coordinator got with the last check of
/// `task_id`: the caller's (relayed) without OpenTelemetry, an attempt
/// span's of this orchestrator in the caller's trace with it.
pub fn check_coordinator_parent(
    coordinator: &TestCoordinator,
    task_id: &str,
) -> Result<(), BoxError> {
    let sent = coordinator
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.request.as_ref().is_some_and(|q| q.task_id == task_id))
        .and_then(|r| r.headers.get("traceparent").cloned())
        .ok_or("the coordinator got no traceparent")?;
    let sent = sent.to_str()?;
    println!(
        "  caller sent traceparent {}\n  coordinator got   {sent}",
        caller()
    );
    #[cfg(feature = "opentelemetry")]
    return otel::check_joined(sent);
    #[cfg(not(feature = "opentelemetry"))]
    if sent == caller() {
        Ok(())
    } else {
        Err(format!("expected the caller's traceparent relayed, got {sent}").into())
    }
}

#[cfg(feature = "opentelemetry")]
pub use otel::install;

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::sync::OnceLock;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    use super::{BoxError, CALLER_SPAN, CALLER_TRACE};

    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();

    /// Logs at WARN to stdout, spans at INFO to OpenTelemetry (an OTLP
    /// exporter in production), and the W3C propagator.
    pub fn install(service: &'static str) {
        let exporter = EXPORTER.get_or_init(InMemorySpanExporter::default);
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::WARN))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer(service))
                    .with_filter(LevelFilter::INFO),
            )
            .init();
    }

    /// Prints the trace, and checks the coordinator's parent (`sent`) is
    /// one of this orchestrator's attempt spans, in the caller's trace.
    pub fn check_joined(sent: &str) -> Result<(), BoxError> {
        let fields: Vec<&str> = sent.split('-').collect();
        let [_, sent_trace, sent_parent, _] = fields[..] else {
            return Err(format!("not a traceparent: {sent}").into());
        };
        let exporter = EXPORTER.get().ok_or("no exporter")?;
        let spans = exporter.get_finished_spans()?;
        for span in spans
            .iter()
            .filter(|s| s.span_context.trace_id().to_string() == CALLER_TRACE)
        {
            println!(
                "  span {:<18} id {} parent {}",
                span.name,
                span.span_context.span_id(),
                span.parent_span_id
            );
        }
        let attempt = spans
            .iter()
            .find(|s| s.name == "POST" && s.span_context.span_id().to_string() == sent_parent);
        if sent_trace != CALLER_TRACE || sent_parent == CALLER_SPAN || attempt.is_none() {
            return Err(format!(
                "expected the caller's trace with an attempt span as the parent, got {sent}"
            )
            .into());
        }
        exporter.reset();
        Ok(())
    }
}
