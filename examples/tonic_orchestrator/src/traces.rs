//! OpenTelemetry: a `tracing-opentelemetry` layer over an in-memory
//! exporter, and the W3C propagator.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::BoxError;

static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();

/// Logs at WARN to stdout, spans at INFO to OpenTelemetry.
pub fn install() {
    let exporter = EXPORTER.get_or_init(InMemorySpanExporter::default);
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::WARN))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("tonic_orchestrator"))
                .with_filter(LevelFilter::INFO),
        )
        .init();
}

/// Prints the trace, and checks the coordinator's parent (`sent`) is
/// one of this orchestrator's attempt spans, in the caller's trace.
pub fn check_joined(sent: &str, trace: &str, caller: &str) -> Result<(), BoxError> {
    let fields: Vec<&str> = sent.split('-').collect();
    let [_, sent_trace, sent_parent, _] = fields[..] else {
        return Err(format!("not a traceparent: {sent}").into());
    };
    let spans = EXPORTER.get().ok_or("no exporter")?.get_finished_spans()?;
    for span in spans
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace)
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
    if sent_trace != trace || sent_parent == caller || attempt.is_none() {
        return Err(format!(
            "expected the caller's trace with an attempt span as the parent, got {sent}"
        )
        .into());
    }
    EXPORTER.get().ok_or("no exporter")?.reset();
    Ok(())
}
