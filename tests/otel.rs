//! OpenTelemetry-native traces (feature `opentelemetry`): every attempt
//! sends its own span's context, the gate joins the caller's trace, numbers
//! are integers, a timed-out attempt is an error. Spans go to the SDK's
//! in-memory exporter; a real coordinator on 127.0.0.1 records what each
//! attempt sent. Clock paused.
#![cfg(feature = "opentelemetry")]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use opentelemetry::trace::{SpanId, Status, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{service_fn, Layer, ServiceExt};
use tower_quality_gate::gate::QualityGateLayer;
use tower_quality_gate::testing::{Recorded, Reply, TestCoordinator};
use tower_quality_gate::{Hedging, QualityRequest};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer as _;

use common::{builder, client, request, spawn_checks};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The spans exported while it lives, on this thread (tests run on
/// current-thread runtimes).
struct Traces {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Traces {
    /// Installs the OpenTelemetry layer (only for spans `keep` accepts)
    /// and the W3C propagator.
    fn install(keep: fn(&tracing::Metadata<'_>) -> bool) -> Traces {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tests"))
            .with_filter(tracing_subscriber::filter::filter_fn(keep));
        let subscriber = tracing_subscriber::registry().with(layer);
        Traces {
            exporter,
            _provider: provider,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn all() -> Traces {
        Traces::install(|_| true)
    }

    fn spans(&self, name: &str) -> Vec<SpanData> {
        let mut spans: Vec<SpanData> = self
            .exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        spans.sort_by_key(|s| attr(s, "quality_gate.attempt").map(|v| v.to_string()));
        spans
    }

    fn one(&self, name: &str) -> SpanData {
        let mut spans = self.spans(name);
        assert_eq!(spans.len(), 1, "{name}: {spans:?}");
        spans.remove(0)
    }
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// The `traceparent` the coordinator saw, as (trace id, parent id).
fn sent_parent(recorded: &Recorded) -> (TraceId, SpanId) {
    let value = recorded.headers["traceparent"].to_str().unwrap();
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    assert_eq!(fields[0], "00");
    (
        TraceId::from_hex(fields[1]).unwrap(),
        SpanId::from_hex(fields[2]).unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn each_attempt_sends_its_own_span_as_the_parent() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503));
    let client = client(&coordinator);

    let handler = tracing::info_span!("handler");
    client
        .check(request(1))
        .instrument(handler.clone())
        .await
        .unwrap();
    drop(handler);

    let handler = traces.one("handler");
    let call = traces.one("quality_gate.check");
    let attempts = traces.spans("POST");
    assert_eq!(attempts.len(), 2);
    let trace_id = handler.span_context.trace_id();
    assert_eq!(call.parent_span_id, handler.span_context.span_id());
    let recorded = coordinator.requests();
    assert_eq!(recorded.len(), 2);
    for (attempt, sent) in attempts.iter().zip(&recorded) {
        assert_eq!(attempt.span_context.trace_id(), trace_id);
        assert_eq!(attempt.parent_span_id, call.span_context.span_id());
        assert_eq!(attempt.span_kind, opentelemetry::trace::SpanKind::Client);
        // The coordinator's parent is the attempt's span, not the handler's.
        assert_eq!(
            sent_parent(sent),
            (trace_id, attempt.span_context.span_id())
        );
    }
    assert_ne!(
        attempts[0].span_context.span_id(),
        attempts[1].span_context.span_id()
    );

    // Integers, as the HTTP conventions want them.
    let port = i64::from(coordinator.addr().port());
    let (first, second) = (&attempts[0], &attempts[1]);
    assert_eq!(
        attr(first, "http.response.status_code"),
        Some(Value::I64(503))
    );
    assert_eq!(attr(first, "server.port"), Some(Value::I64(port)));
    assert_eq!(attr(first, "quality_gate.attempt"), Some(Value::I64(1)));
    assert_eq!(attr(first, "http.request.resend_count"), None);
    assert_eq!(attr(first, "error.type"), Some(Value::from("503")));
    assert!(matches!(first.status, Status::Error { .. }));
    assert_eq!(
        attr(second, "http.response.status_code"),
        Some(Value::I64(200))
    );
    assert_eq!(
        attr(second, "http.request.resend_count"),
        Some(Value::I64(1))
    );
    assert_eq!(attr(second, "quality_gate.attempt"), Some(Value::I64(2)));
    assert_eq!(attr(second, "error.type"), None);
    assert_eq!(second.status, Status::Unset);
    // The call succeeded: no error on its span.
    assert_eq!(attr(&call, "quality_gate.attempts"), Some(Value::I64(2)));
    assert_eq!(attr(&call, "error.type"), None);
    assert_eq!(call.status, Status::Unset);
}

#[tokio::test(start_paused = true)]
async fn a_call_with_no_span_around_it_starts_a_trace() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    client(&coordinator).check(request(1)).await.unwrap();

    let call = traces.one("quality_gate.check");
    let attempt = traces.one("POST");
    assert_eq!(call.parent_span_id, SpanId::INVALID);
    assert_eq!(
        sent_parent(&coordinator.requests()[0]),
        (call.span_context.trace_id(), attempt.span_context.span_id())
    );
}

#[tokio::test(start_paused = true)]
async fn a_filtered_out_attempt_span_sends_the_calls_context() {
    let traces = Traces::install(|meta| meta.name() != "POST");
    let coordinator = TestCoordinator::start().await;
    client(&coordinator).check(request(1)).await.unwrap();

    assert!(traces.spans("POST").is_empty());
    let call = traces.one("quality_gate.check");
    assert_eq!(
        sent_parent(&coordinator.requests()[0]),
        (call.span_context.trace_id(), call.span_context.span_id())
    );
}

#[tokio::test(start_paused = true)]
async fn trace_headers_the_caller_sets_are_sent_as_set() {
    let _traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    let own = request(1).header(
        HeaderName::from_static("traceparent"),
        HeaderValue::from_static(CALLER),
    );
    client(&coordinator)
        .check(own)
        .instrument(tracing::info_span!("handler"))
        .await
        .unwrap();

    let sent = &coordinator.requests()[0].headers;
    assert_eq!(sent["traceparent"], CALLER);
    assert!(!sent.contains_key("tracestate"));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_cut_by_its_timeout_is_a_timeout_error() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::hang());
    let client = builder(coordinator.url())
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    client.check(request(1)).await.unwrap();

    let attempts = traces.spans("POST");
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attr(&attempts[0], "error.type"),
        Some(Value::from("timeout"))
    );
    assert!(matches!(attempts[0].status, Status::Error { .. }));
    assert_eq!(attr(&attempts[0], "quality_gate.cancelled"), None);
    assert_eq!(attr(&attempts[1], "error.type"), None);
    // The span ended when the timer fired, not after the backoff.
    let took = attempts[0]
        .end_time
        .duration_since(attempts[0].start_time)
        .unwrap();
    assert!(
        took < attempts[1]
            .start_time
            .duration_since(attempts[0].start_time)
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_times_out_says_so_on_both_spans() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let err = client(&coordinator)
        .check(request(1).timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    let call = traces.one("quality_gate.check");
    let attempt = traces.one("POST");
    for span in [&call, &attempt] {
        assert_eq!(attr(span, "error.type"), Some(Value::from("timeout")));
        assert!(matches!(span.status, Status::Error { .. }));
    }
    assert_eq!(
        attr(&call, "error.type").unwrap().as_str(),
        err.kind().as_str()
    );
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_call_marks_its_attempt_cancelled_not_failed() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = client(&coordinator);
    let call = client.check(request(1));
    // The caller gives up first (a select, a dropped handler).
    assert!(tokio::time::timeout(Duration::from_millis(50), call)
        .await
        .is_err());

    let attempt = traces.one("POST");
    assert_eq!(
        attr(&attempt, "quality_gate.cancelled"),
        Some(Value::Bool(true))
    );
    assert_eq!(attr(&attempt, "error.type"), None);
    assert_eq!(attempt.status, Status::Unset);
}

#[tokio::test(start_paused = true)]
async fn a_hedged_copy_that_lost_is_cancelled_not_failed() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    // Every other request is slow: a copy of a slow one is fast.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    coordinator.respond_with(move |_| {
        let slow = counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
        let delay = if slow { 2000 } else { 10 };
        Reply::approve().delay(Duration::from_millis(delay))
    });
    let hedging = Hedging::default()
        .percentile(0.3)
        .min_data_points(10)
        .period(Duration::from_secs(5));
    let client = builder(coordinator.url()).hedging(hedging).build().unwrap();
    // Warm up the latency histogram, then let it rotate into view.
    for call in spawn_checks(&client, 0..50) {
        call.await.unwrap().unwrap();
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    if seen.load(Ordering::SeqCst) % 2 == 1 {
        client.check(request(98)).await.unwrap(); // the next one is slow
    }
    traces.exporter.reset();

    client.check(request(99)).await.unwrap();
    let attempts = traces.spans("POST");
    assert_eq!(
        attempts.len(),
        2,
        "no copy was sent: the test proves nothing"
    );
    let (slow, copy) = (&attempts[0], &attempts[1]);
    assert_eq!(
        attr(slow, "quality_gate.cancelled"),
        Some(Value::Bool(true))
    );
    assert_eq!(attr(slow, "error.type"), None);
    assert_eq!(slow.status, Status::Unset);
    assert_eq!(attr(copy, "quality_gate.cancelled"), None);
    assert_eq!(
        attr(copy, "http.response.status_code"),
        Some(Value::I64(200))
    );
    // Each copy sent its own span as the coordinator's parent.
    let recorded = coordinator.requests();
    let sent: Vec<SpanId> = recorded[recorded.len() - 2..]
        .iter()
        .map(|r| sent_parent(r).1)
        .collect();
    assert_eq!(
        sent,
        [slow.span_context.span_id(), copy.span_context.span_id()]
    );
}

async fn derive(
    req: Request<String>,
) -> Result<(QualityRequest, Request<String>), Response<String>> {
    Ok((QualityRequest::new(req.body().as_str(), "agent-1"), req))
}

#[tokio::test(start_paused = true)]
async fn the_gate_joins_the_callers_trace() {
    let traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(503));
    let client = client(&coordinator);
    let inner = service_fn(|req: Request<String>| async move {
        tracing::info_span!("handler").in_scope(|| ());
        Ok::<_, Infallible>(Response::new(req.into_body()))
    });
    let service = QualityGateLayer::new(client, derive).layer(inner);

    let req = Request::post("/tasks/complete")
        .header("traceparent", CALLER)
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(String::from("task-1"))
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);

    let caller_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let caller_span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let gate = traces.one("quality_gate.gate");
    assert_eq!(gate.span_context.trace_id(), caller_trace);
    assert_eq!(gate.parent_span_id, caller_span);
    assert!(gate.parent_span_is_remote);
    assert_eq!(
        attr(&gate, "quality_gate.verdict"),
        Some(Value::from("approved"))
    );
    let call = traces.one("quality_gate.check");
    assert_eq!(call.parent_span_id, gate.span_context.span_id());
    // The handler ran inside the gate's span, in the caller's trace.
    assert_eq!(
        traces.one("handler").parent_span_id,
        gate.span_context.span_id()
    );

    let attempts = traces.spans("POST");
    let recorded = coordinator.requests();
    assert_eq!((attempts.len(), recorded.len()), (2, 2));
    for (attempt, sent) in attempts.iter().zip(&recorded) {
        assert_eq!(attempt.parent_span_id, call.span_context.span_id());
        assert_eq!(
            sent_parent(sent),
            (caller_trace, attempt.span_context.span_id())
        );
        assert_ne!(sent_parent(sent).1, caller_span);
        // The caller's vendor state travels on in the trace.
        assert_eq!(sent.headers["tracestate"], "congo=t61rcWkgMzE");
    }
}

#[tokio::test(start_paused = true)]
async fn trace_headers_a_derive_function_sets_are_sent_as_set() {
    let _traces = Traces::all();
    let coordinator = TestCoordinator::start().await;
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    let derive = move |req: Request<String>| async move {
        let check = QualityRequest::new("task-1", "agent-1").header(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static(own),
        );
        Ok::<_, Response<String>>((check, req))
    };
    let inner = service_fn(|req: Request<String>| async move {
        Ok::<_, Infallible>(Response::new(req.into_body()))
    });
    let service = QualityGateLayer::new(client(&coordinator), derive).layer(inner);

    let req = Request::post("/tasks/complete")
        .header("traceparent", CALLER)
        .body(String::new())
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);
    let sent = &coordinator.requests()[0].headers;
    assert_eq!(sent["traceparent"], own);
    assert!(!sent.contains_key("tracestate"));
}
