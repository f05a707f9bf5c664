//! Metrics of the client, through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`).
//!
//! Why `metrics` rather than OpenTelemetry's API: it is the usual facade of
//! Rust services (as `log` and `tracing` are for events), it leaves the
//! exporter to the application (Prometheus, StatsD, OpenTelemetry through
//! `metrics-exporter-opentelemetry`, …), and without an installed recorder
//! every call is a no-op. Without the feature the hooks compile to nothing
//! (this one file, with the recording behind `#[cfg(feature = "metrics")]`:
//! a new metric is one edit here). Spans, which OpenTelemetry picks up
//! through `tracing-opentelemetry`, are described in
//! [`guide::observability`](crate::guide::observability).
//!
//! Names and labels follow the OpenTelemetry HTTP client conventions where
//! one exists. Every label has a bounded set of values, the same in every
//! process of a fleet: no request ids, task ids, addresses, URLs or free
//! text.
//!
//! | name | Prometheus name (`with_recommended_naming(true)`) | type | labels |
//! | --- | --- | --- | --- |
//! | [`ATTEMPT_DURATION`] `http.client.request.duration` | `http_client_request_duration_seconds` | histogram, s | `http_request_method`, `server_address`, `server_port`, `http_response_status_code` (when an answer came), `error_type` (on failure) |
//! | [`CALL_DURATION`] `quality_gate.call.duration` | `quality_gate_call_duration_seconds` | histogram, s | `outcome` (`approved`, `rejected`, `error`), `error_type` (on error) |
//! | [`VERDICTS`] `quality_gate.verdicts` | `quality_gate_verdicts_total` | counter | `gate`, `approved` |
//! | [`ERRORS`] `quality_gate.errors` | `quality_gate_errors_total` | counter | `error_type` |
//! | [`RETRIES`] `quality_gate.retries` | `quality_gate_retries_total` | counter | `error_type` (of the attempt retried) |
//! | [`RETRIES_REFUSED`] `quality_gate.retries.refused` | `quality_gate_retries_refused_total` | counter | `reason` (`attempts`, `retry_after`, `deadline`, `budget`) |
//! | [`BREAKER_TRANSITIONS`] `quality_gate.breaker.transitions` | `quality_gate_breaker_transitions_total` | counter | `replica`, `state` (`open`, `half_open`, `closed`) |
//! | [`REPLICA_EJECTIONS`] `quality_gate.replica.ejections` | `quality_gate_replica_ejections_total` | counter | `replica` |
//! | [`CALLS_IN_FLIGHT`] `quality_gate.calls.in_flight` | `quality_gate_calls_in_flight` | gauge | — |
//! | [`CALLS_WAITING`] `quality_gate.calls.waiting` | `quality_gate_calls_waiting` | gauge | — |
//!
//! The Prometheus column is what a scrape shows with
//! `metrics-exporter-prometheus`'s `with_recommended_naming(true)` and
//! [`describe`] called (it registers the units): dots become underscores in
//! names and label names, histograms get the `_seconds` unit (and the
//! `_bucket`, `_sum`, `_count` series), counters `_total`, as Prometheus's
//! naming guide and the OpenTelemetry-to-Prometheus mapping ask. Without
//! recommended naming the exporter leaves out the suffixes.
//!
//! - `error.type` is the status code (`"503"`, `"429"`) for an error answer,
//!   else the error's [`kind`](crate::ErrorKind::as_str) (`timeout`,
//!   `connect`…), on attempts, retries, calls and errors alike: 429 and 503
//!   retries are told apart. An attempt abandoned before its answer (its
//!   timeout or the call's deadline passed, a hedged copy won, the caller
//!   gave up) is `cancelled`.
//! - `gate` is the coordinator's gate name when it is in the allowlist
//!   ([`set_gate_labels`]; by default [`DEFAULT_GATE_LABELS`]: `build`,
//!   `lint`, `tests`, `coverage`, `aiReview`, `all`), else `other`. An
//!   allowlist rather than "the first N names seen": a coordinator
//!   answering a thousand names makes no new series, and every process of a
//!   fleet reports the same label set whatever order it saw the names in.
//! - `replica` is a replica's configured base URL
//!   ([`ClientBuilder::base_urls`](crate::ClientBuilder::base_urls)), the
//!   base URL's `host:port` for every replica found by
//!   [`discover_replicas`](crate::ClientBuilder::discover_replicas) (the
//!   address a replica was found at changes as pods churn; it is in the
//!   log events, not the label), a discovery stream's key (its `Debug`
//!   text: use stable keys such as a slot or host name), and `client` for
//!   the client's own breaker.
//!
//! Histograms are exported as the exporter decides; for Prometheus,
//! [`DURATION_BUCKETS`] are OpenTelemetry's advised boundaries:
//!
#![cfg_attr(feature = "metrics", doc = "```")]
#![cfg_attr(not(feature = "metrics"), doc = "```ignore")]
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower_quality_gate::metrics::DURATION_BUCKETS;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = PrometheusBuilder::new()
//!     .set_buckets(DURATION_BUCKETS)?
//!     .with_recommended_naming(true)
//!     .build_recorder();
//! let handle = recorder.handle();
//! metrics::with_local_recorder(&recorder, || {
//!     tower_quality_gate::metrics::describe();
//!     metrics::counter!(tower_quality_gate::metrics::VERDICTS, "gate" => "lint", "approved" => "false")
//!         .increment(1);
//! });
//! assert!(handle.render().contains("quality_gate_verdicts_total"));
//! # Ok(()) }
//! ```

// Without the feature the hooks keep their signatures and do nothing (and
// the examples above, whose module is then private, are not run).
#![cfg_attr(not(feature = "metrics"), allow(dead_code, unused_variables))]

use std::sync::{Arc, RwLock};

use http::StatusCode;

use crate::error::Error;
use crate::wire::QualityResponse;

#[cfg(feature = "metrics")]
use {
    metrics::{counter, gauge, histogram, Label},
    std::sync::atomic::{AtomicBool, Ordering},
    tokio::time::Instant,
};

/// Runs its statements only with the `metrics` feature: the one switch.
macro_rules! record {
    ($($body:tt)*) => {
        #[cfg(feature = "metrics")]
        {
            $($body)*
        }
    };
}

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

/// The gate names the `gate` label shows by default: the coordinator's
/// documented gates, and `all` for an approval by every gate.
pub const DEFAULT_GATE_LABELS: &[&str] = &["build", "lint", "tests", "coverage", "aiReview", "all"];

/// The allowlist set by [`set_gate_labels`]; `None`: the default.
static GATE_LABELS: RwLock<Option<Arc<[String]>>> = RwLock::new(None);

/// Sets, for this process, the gate names the `gate` label of
/// [`VERDICTS`] shows as themselves (compared exactly); every other name
/// is `other`. Set the same list in every process of a fleet (from
/// configuration, at start-up), so that they all report the same series.
/// The default is [`DEFAULT_GATE_LABELS`].
///
#[cfg_attr(feature = "metrics", doc = "```")]
#[cfg_attr(not(feature = "metrics"), doc = "```ignore")]
/// tower_quality_gate::metrics::set_gate_labels(["build", "lint", "security"]);
/// ```
pub fn set_gate_labels<I, S>(gates: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let gates: Arc<[String]> = gates.into_iter().map(Into::into).collect();
    *GATE_LABELS.write().unwrap_or_else(|e| e.into_inner()) = Some(gates);
}

/// The `gate` label of a verdict by `gate`.
fn gate_label(gate: &str) -> String {
    let listed = match &*GATE_LABELS.read().unwrap_or_else(|e| e.into_inner()) {
        Some(gates) => gates.iter().any(|g| g == gate),
        None => DEFAULT_GATE_LABELS.contains(&gate),
    };
    if listed {
        gate.to_owned()
    } else {
        String::from("other")
    }
}

/// The text of a replica's label that carries a detail for the logs (the
/// address it was found at): `name (detail)`. The `replica` metric label
/// is the name alone, stable as replicas come and go.
pub(crate) fn replica_label(name: &str, detail: impl std::fmt::Display) -> String {
    format!("{name} ({detail})")
}

/// The `replica` metric label of a breaker labelled `label`: the label
/// without a [`replica_label`] detail.
fn replica_name(label: &str) -> &str {
    match label.strip_suffix(')').and_then(|l| l.rsplit_once(" (")) {
        Some((name, _)) => name,
        None => label,
    }
}

/// Registers the units and descriptions of the crate's metrics with the
/// current recorder (optional: exporters that show them, such as
/// Prometheus's `# HELP` and its unit suffixes, use them).
pub fn describe() {
    record! {
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
        describe_counter!(ERRORS, "Quality checks that ended in an error, by error type.");
        describe_counter!(RETRIES, "Retries scheduled, by the error type retried.");
        describe_counter!(RETRIES_REFUSED, "Retryable failures not retried, by reason.");
        describe_counter!(BREAKER_TRANSITIONS, "Circuit-breaker state changes.");
        describe_counter!(REPLICA_EJECTIONS, "Replicas taken out of the balancer.");
        describe_gauge!(CALLS_IN_FLIGHT, "Quality checks in flight.");
        describe_gauge!(CALLS_WAITING, "Quality checks waiting for a concurrency slot.");
    }
}

/// `error.type`: the status code of an error answer, else the kind.
fn error_type(status: Option<StatusCode>, kind: &'static str) -> String {
    match status {
        Some(status) => status.as_str().to_owned(),
        None => kind.to_owned(),
    }
}

// ----- per call -----

/// A call's start, counted in flight until it ends.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    #[cfg(feature = "metrics")]
    start: Instant,
    #[cfg(feature = "metrics")]
    done: AtomicBool,
}

impl CallMetrics {
    /// A call that started at `started` (the call's own clock read).
    #[inline]
    pub(crate) fn start(started: tokio::time::Instant) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = started;
        record! {
            gauge!(CALLS_IN_FLIGHT).increment(1.0);
        }
        CallMetrics {
            #[cfg(feature = "metrics")]
            start: started,
            #[cfg(feature = "metrics")]
            done: AtomicBool::new(false),
        }
    }

    /// Records how the call ended, once.
    #[inline]
    pub(crate) fn finish(&self, result: &Result<QualityResponse, Error>) {
        record! {
            if self.done.swap(true, Ordering::Relaxed) {
                return;
            }
            gauge!(CALLS_IN_FLIGHT).decrement(1.0);
            let seconds = self.start.elapsed().as_secs_f64();
            match result {
                Ok(verdict) => {
                    let (approved, outcome) = if verdict.approved {
                        ("true", "approved")
                    } else {
                        ("false", "rejected")
                    };
                    histogram!(CALL_DURATION, "outcome" => outcome).record(seconds);
                    counter!(VERDICTS, "gate" => gate_label(&verdict.gate), "approved" => approved)
                        .increment(1);
                }
                Err(error) => {
                    let kind = error_type(error.status(), error.kind().as_str());
                    histogram!(CALL_DURATION, "outcome" => "error", "error.type" => kind.clone())
                        .record(seconds);
                    counter!(ERRORS, "error.type" => kind).increment(1);
                }
            }
        }
    }
}

#[cfg(feature = "metrics")]
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
    #[cfg(feature = "metrics")]
    start: Instant,
    #[cfg(feature = "metrics")]
    server: Option<(String, String)>,
    #[cfg(feature = "metrics")]
    status: Option<StatusCode>,
}

impl AttemptMetrics {
    #[inline]
    pub(crate) fn start(uri: &http::Uri) -> Self {
        AttemptMetrics {
            #[cfg(feature = "metrics")]
            start: Instant::now(),
            #[cfg(feature = "metrics")]
            server: {
                let https = uri.scheme_str() == Some("https");
                let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
                Some((uri.host().unwrap_or("").to_owned(), port.to_string()))
            },
            #[cfg(feature = "metrics")]
            status: None,
        }
    }

    /// A failure before anything was sent: not an attempt.
    #[inline]
    pub(crate) fn none() -> Self {
        AttemptMetrics {
            #[cfg(feature = "metrics")]
            start: Instant::now(),
            #[cfg(feature = "metrics")]
            server: None,
            #[cfg(feature = "metrics")]
            status: None,
        }
    }

    #[inline]
    pub(crate) fn status(&mut self, status: StatusCode) {
        record! {
            self.status = Some(status);
        }
    }

    #[inline]
    pub(crate) fn finish(&mut self, error: Option<&Error>) {
        record! {
            self.record(error.map(|e| error_type(e.status(), e.kind().as_str())));
        }
    }

    #[cfg(feature = "metrics")]
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

#[cfg(feature = "metrics")]
impl Drop for AttemptMetrics {
    fn drop(&mut self) {
        self.record(Some(String::from("cancelled")));
    }
}

// ----- waiting for a slot -----

/// Whether a client instance is waiting for a concurrency slot.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    #[cfg(feature = "metrics")]
    waiting: bool,
}

impl Waiting {
    #[inline]
    pub(crate) fn set(&mut self, waiting: bool) {
        record! {
            if waiting != self.waiting {
                self.waiting = waiting;
                let g = gauge!(CALLS_WAITING);
                if waiting {
                    g.increment(1.0);
                } else {
                    g.decrement(1.0);
                }
            }
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Waiting {
    fn drop(&mut self) {
        self.set(false);
    }
}

// ----- retries and breakers -----

/// A retry of an attempt that failed with `status` (an error answer) or
/// an error of `kind`.
#[inline]
pub(crate) fn retry_scheduled(status: Option<StatusCode>, kind: &'static str) {
    record! {
        counter!(RETRIES, "error.type" => error_type(status, kind)).increment(1);
    }
}

#[inline]
pub(crate) fn retry_refused(reason: &'static str) {
    record! {
        counter!(RETRIES_REFUSED, "reason" => reason).increment(1);
    }
}

#[inline]
pub(crate) fn breaker_transition(replica: Option<&str>, state: &'static str) {
    record! {
        let replica = replica.map_or("client", replica_name).to_owned();
        counter!(BREAKER_TRANSITIONS, "replica" => replica.clone(), "state" => state).increment(1);
        if state == "open" && replica != "client" {
            counter!(REPLICA_EJECTIONS, "replica" => replica).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_labels_are_an_allowlist() {
        for gate in DEFAULT_GATE_LABELS {
            assert_eq!(gate_label(gate), *gate);
        }
        for other in ["", "Lint", "lint ", "gate-17", "ünïcode", &"g".repeat(33)] {
            assert_eq!(gate_label(other), "other", "{other:?}");
        }
    }

    #[test]
    fn replica_names_drop_the_detail() {
        let label = replica_label("coordinator.internal:8000", "10.0.0.7:8000");
        assert_eq!(label, "coordinator.internal:8000 (10.0.0.7:8000)");
        assert_eq!(replica_name(&label), "coordinator.internal:8000");
        assert_eq!(
            replica_name("http://10.0.0.7:8000/"),
            "http://10.0.0.7:8000/"
        );
        assert_eq!(replica_name("(a)"), "(a)");
    }
}
