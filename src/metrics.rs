//! Metrics of the client, through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`).
//!
//! Why `metrics` rather than OpenTelemetry's API: it is the usual facade of
//! Rust services (as `log` and `tracing` are for events), it leaves the
//! exporter to the application (Prometheus, StatsD, OpenTelemetry through
//! `metrics-exporter-opentelemetry`, …), and without an installed recorder
//! every call is a no-op. Without the feature the hooks compile to nothing.
//! Spans, which OpenTelemetry picks up through `tracing-opentelemetry`, are
//! described in the crate's README.
//!
//! Names and labels follow the OpenTelemetry HTTP client conventions where
//! one exists. Every label has a bounded set of values: no request ids,
//! task ids, URLs or free text.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | [`ATTEMPT_DURATION`] `http.client.request.duration` | histogram, s | `http.request.method`, `server.address`, `server.port`, `http.response.status_code` (when an answer came), `error.type` (on failure) |
//! | [`CALL_DURATION`] `quality_gate.call.duration` | histogram, s | `outcome` (`approved`, `rejected`, `error`), `error.type` (on error) |
//! | [`VERDICTS`] `quality_gate.verdicts` | counter | `gate`, `approved` |
//! | [`ERRORS`] `quality_gate.errors` | counter | `error.type` |
//! | [`RETRIES`] `quality_gate.retries` | counter | `error.type` (of the attempt retried) |
//! | [`RETRIES_REFUSED`] `quality_gate.retries.refused` | counter | `reason` (`attempts`, `retry_after`, `deadline`, `budget`) |
//! | [`BREAKER_TRANSITIONS`] `quality_gate.breaker.transitions` | counter | `replica`, `state` (`open`, `half_open`, `closed`) |
//! | [`REPLICA_EJECTIONS`] `quality_gate.replica.ejections` | counter | `replica` |
//! | [`CALLS_IN_FLIGHT`] `quality_gate.calls.in_flight` | gauge | — |
//! | [`CALLS_WAITING`] `quality_gate.calls.waiting` | gauge | — |
//!
//! - `error.type` is the status code (`"503"`) for an error answer, else
//!   the error's [`kind`](crate::ErrorKind::as_str) (`timeout`, `connect`…);
//!   an attempt abandoned before its answer (its timeout or the call's
//!   deadline passed, a hedged copy won, the caller gave up) is
//!   `cancelled`.
//! - `gate` is the coordinator's gate name when it is at most 32
//!   characters of `[A-Za-z0-9_.-]`, else `other`, so a misbehaving
//!   coordinator cannot make up series.
//! - `replica` is a replica's configured base URL
//!   ([`ClientBuilder::base_urls`](crate::ClientBuilder::base_urls)) behind
//!   the balancer, `client` for the client's own breaker.
//!
//! Histograms are exported as the exporter decides; for Prometheus,
//! [`DURATION_BUCKETS`] are OpenTelemetry's advised boundaries:
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower_quality_gate::metrics::DURATION_BUCKETS;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = PrometheusBuilder::new()
//!     .set_buckets(DURATION_BUCKETS)?
//!     .build_recorder();
//! let handle = recorder.handle();
//! metrics::with_local_recorder(&recorder, || {
//!     tower_quality_gate::metrics::describe();
//!     metrics::counter!(tower_quality_gate::metrics::VERDICTS, "gate" => "lint", "approved" => "false")
//!         .increment(1);
//! });
//! assert!(handle.render().contains("quality_gate_verdicts"));
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use http::StatusCode;
use metrics::{counter, gauge, histogram, Label};
use tokio::time::Instant;

use crate::error::Error;
use crate::wire::QualityResponse;

/// Duration of one attempt (one HTTP request), in seconds: histogram.
pub const ATTEMPT_DURATION: &str = "http.client.request.duration";
/// Duration of one call, attempts and waits included, in seconds:
/// histogram.
pub const CALL_DURATION: &str = "quality_gate.call.duration";
/// Verdicts received, by gate and approval: counter.
pub const VERDICTS: &str = "quality_gate.verdicts";
/// Calls that ended in an error, by `error.type`: counter.
pub const ERRORS: &str = "quality_gate.errors";
/// Retries scheduled, by the `error.type` retried: counter.
pub const RETRIES: &str = "quality_gate.retries";
/// Retryable failures that were not retried, by `reason`: counter.
pub const RETRIES_REFUSED: &str = "quality_gate.retries.refused";
/// Circuit-breaker state changes, by `replica` and new `state`: counter.
pub const BREAKER_TRANSITIONS: &str = "quality_gate.breaker.transitions";
/// Replicas taken out of the balancer, by `replica`: counter.
pub const REPLICA_EJECTIONS: &str = "quality_gate.replica.ejections";
/// Calls between their start and their end: gauge.
pub const CALLS_IN_FLIGHT: &str = "quality_gate.calls.in_flight";
/// Calls waiting for a slot of the concurrency limit: gauge.
pub const CALLS_WAITING: &str = "quality_gate.calls.waiting";

/// OpenTelemetry's advised boundaries for HTTP durations, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Registers the units and descriptions of the crate's metrics with the
/// current recorder (optional: exporters that show them, such as
/// Prometheus's `# HELP`, use them).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of one HTTP attempt to the coordinator."
    );
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Duration of one quality check, retries and waits included."
    );
    describe_counter!(VERDICTS, "Verdicts received, by gate and approval.");
    describe_counter!(
        ERRORS,
        "Quality checks that ended in an error, by error type."
    );
    describe_counter!(RETRIES, "Retries scheduled, by the error type retried.");
    describe_counter!(
        RETRIES_REFUSED,
        "Retryable failures not retried, by reason."
    );
    describe_counter!(BREAKER_TRANSITIONS, "Circuit-breaker state changes.");
    describe_counter!(REPLICA_EJECTIONS, "Replicas taken out of the balancer.");
    describe_gauge!(CALLS_IN_FLIGHT, "Quality checks in flight.");
    describe_gauge!(
        CALLS_WAITING,
        "Quality checks waiting for a concurrency slot."
    );
}

fn error_type(error: &Error) -> String {
    match error.status() {
        Some(status) => status.as_str().to_owned(),
        None => error.kind().as_str().to_owned(),
    }
}

fn gate_label(gate: &str) -> String {
    let plain = !gate.is_empty()
        && gate.len() <= 32
        && gate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if plain {
        gate.to_owned()
    } else {
        String::from("other")
    }
}

// ----- per call -----

/// A call's start, counted in flight until it ends.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    start: Instant,
    done: AtomicBool,
}

impl CallMetrics {
    pub(crate) fn start() -> Self {
        gauge!(CALLS_IN_FLIGHT).increment(1.0);
        CallMetrics {
            start: Instant::now(),
            done: AtomicBool::new(false),
        }
    }

    /// Records how the call ended, once.
    pub(crate) fn finish(&self, result: &Result<QualityResponse, Error>) {
        if self.done.swap(true, Ordering::Relaxed) {
            return;
        }
        gauge!(CALLS_IN_FLIGHT).decrement(1.0);
        let seconds = self.start.elapsed().as_secs_f64();
        match result {
            Ok(verdict) => {
                let approved = if verdict.approved { "true" } else { "false" };
                let outcome = if verdict.approved {
                    "approved"
                } else {
                    "rejected"
                };
                histogram!(CALL_DURATION, "outcome" => outcome).record(seconds);
                counter!(VERDICTS, "gate" => gate_label(&verdict.gate), "approved" => approved)
                    .increment(1);
            }
            Err(error) => {
                let kind = error.kind().as_str();
                histogram!(CALL_DURATION, "outcome" => "error", "error.type" => kind)
                    .record(seconds);
                counter!(ERRORS, "error.type" => kind).increment(1);
            }
        }
    }
}

impl Drop for CallMetrics {
    fn drop(&mut self) {
        if !self.done.swap(true, Ordering::Relaxed) {
            gauge!(CALLS_IN_FLIGHT).decrement(1.0);
        }
    }
}

// ----- per attempt -----

/// One attempt's start and target, recorded when it ends or is dropped.
#[derive(Debug)]
pub(crate) struct AttemptMetrics {
    start: Instant,
    server: Option<(String, String)>,
    status: Option<StatusCode>,
}

impl AttemptMetrics {
    pub(crate) fn start(uri: &http::Uri) -> Self {
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = uri.host().unwrap_or("").to_owned();
        AttemptMetrics {
            start: Instant::now(),
            server: Some((host, port.to_string())),
            status: None,
        }
    }

    /// A failure before anything was sent: not an attempt.
    pub(crate) fn none() -> Self {
        AttemptMetrics {
            start: Instant::now(),
            server: None,
            status: None,
        }
    }

    pub(crate) fn status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }

    pub(crate) fn finish(&mut self, error: Option<&Error>) {
        self.record(error.map(error_type));
    }

    fn record(&mut self, error_type: Option<String>) {
        let Some(server) = self.server.take() else {
            return;
        };
        let mut labels = vec![
            Label::new("http.request.method", "POST"),
            Label::new("server.address", server.0),
            Label::new("server.port", server.1),
        ];
        if let Some(status) = self.status {
            labels.push(Label::new(
                "http.response.status_code",
                status.as_str().to_owned(),
            ));
        }
        if let Some(error_type) = error_type {
            labels.push(Label::new("error.type", error_type));
        }
        histogram!(ATTEMPT_DURATION, labels).record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for AttemptMetrics {
    fn drop(&mut self) {
        self.record(Some(String::from("cancelled")));
    }
}

// ----- waiting for a slot -----

/// Whether a client instance is waiting for a concurrency slot.
#[derive(Debug, Default)]
pub(crate) struct Waiting(bool);

impl Waiting {
    pub(crate) fn set(&mut self, waiting: bool) {
        if waiting != self.0 {
            self.0 = waiting;
            let g = gauge!(CALLS_WAITING);
            if waiting {
                g.increment(1.0);
            } else {
                g.decrement(1.0);
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.set(false);
    }
}

// ----- retries and breakers -----

pub(crate) fn retry_scheduled(error_type: &'static str) {
    counter!(RETRIES, "error.type" => error_type).increment(1);
}

pub(crate) fn retry_refused(reason: &'static str) {
    counter!(RETRIES_REFUSED, "reason" => reason).increment(1);
}

pub(crate) fn breaker_transition(replica: Option<&str>, state: &'static str) {
    let replica = replica.unwrap_or("client").to_owned();
    counter!(BREAKER_TRANSITIONS, "replica" => replica.clone(), "state" => state).increment(1);
    if state == "open" && replica != "client" {
        counter!(REPLICA_EJECTIONS, "replica" => replica).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_labels_are_bounded() {
        assert_eq!(gate_label("aiReview"), "aiReview");
        assert_eq!(gate_label("build-1.x_y"), "build-1.x_y");
        assert_eq!(gate_label(""), "other");
        assert_eq!(gate_label("has space"), "other");
        assert_eq!(gate_label(&"g".repeat(33)), "other");
        assert_eq!(gate_label("ünïcode"), "other");
    }
}
