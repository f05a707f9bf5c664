//! The client's metrics (feature `metrics`), read back from
//! `metrics-util`'s `DebuggingRecorder` after scripted runs against a real
//! coordinator on 127.0.0.1.
//!
//! `cargo test --features metrics --test metrics`
//!
//! The recorder is installed for the test's thread only, so each test runs
//! on a current-thread runtime (tokio's default for `#[tokio::test]`).
#![cfg(feature = "metrics")]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_quality_gate::breaker::CircuitBreakerConfig;
use tower_quality_gate::metrics::{
    set_gate_labels, ATTEMPT_DURATION, BREAKER_TRANSITIONS, CALLS_IN_FLIGHT, CALLS_WAITING,
    CALL_DURATION, DEFAULT_GATE_LABELS, ERRORS, REPLICA_EJECTIONS, RETRIES, RETRIES_REFUSED,
    VERDICTS,
};
use tower_quality_gate::retry::{Jitter, JitteredBackoff};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest};

/// A metric's labels, sorted.
type Labels = Vec<(String, String)>;

/// Every metric of a snapshot: name, labels, value.
struct Metrics(Vec<(String, Labels, DebugValue)>);

impl Metrics {
    fn take(snapshotter: &Snapshotter) -> Metrics {
        Metrics(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let key = key.key();
                    let mut labels: Labels = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    labels.sort();
                    (key.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    /// The values of `name` whose labels include all of `labels`.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&DebugValue> {
        self.0
            .iter()
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .collect()
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .into_iter()
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    fn gauge(&self, name: &str) -> f64 {
        match self.matching(name, &[])[..] {
            [DebugValue::Gauge(g)] => g.0,
            ref other => panic!("{name}: {other:?}"),
        }
    }

    /// The samples of histogram `name` with `labels`.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .into_iter()
            .flat_map(|v| match v {
                DebugValue::Histogram(samples) => samples.iter().map(|s| s.0).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    /// Every label set `name` was recorded with.
    fn label_sets(&self, name: &str) -> Vec<Labels> {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, ls, _)| ls.clone())
            .collect()
    }
}

fn client(coordinator: &TestCoordinator) -> QualityClient {
    QualityClient::builder(coordinator.url())
        .backoff(JitteredBackoff::default().jitter(Jitter::None)) // 100 ms, then 200 ms
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_scripted_run_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let coordinator = TestCoordinator::start().await;
    let port = coordinator.addr().port().to_string();
    let client = client(&coordinator);
    // 1: a 503, retried after 100 ms, then approved by "all".
    coordinator.push(Reply::status(503));
    coordinator.push(Reply::approve());
    let approved = client.check(QualityRequest::new("task-1", "agent-1")).await;
    assert!(approved.unwrap().approved);
    // 2: rejected by "lint".
    coordinator.push(Reply::reject("lint", "2 warnings"));
    let rejected = client.check(QualityRequest::new("task-2", "agent-1")).await;
    assert!(!rejected.unwrap().approved);
    // 3: a 503 whose retry would pass the caller's 50 ms: an error.
    coordinator.push(Reply::status(503));
    let failed = client
        .check(QualityRequest::new("task-3", "agent-1").timeout(Duration::from_millis(50)))
        .await;
    assert_eq!(failed.unwrap_err().status().map(|s| s.as_u16()), Some(503));

    let m = Metrics::take(&snapshotter);

    // Two verdicts, by gate and approval; the gate name is a bounded label.
    assert_eq!(m.counter(VERDICTS, &[]), 2);
    assert_eq!(m.counter(VERDICTS, &[("approved", "true")]), 1);
    assert_eq!(
        m.counter(VERDICTS, &[("gate", "lint"), ("approved", "false")]),
        1
    );
    // One retry, of a 503 (labelled as the attempt histogram labels it);
    // one refusal, for the deadline.
    assert_eq!(m.counter(RETRIES, &[]), 1);
    assert_eq!(m.counter(RETRIES, &[("error.type", "503")]), 1);
    assert_eq!(m.counter(RETRIES_REFUSED, &[]), 1);
    assert_eq!(m.counter(RETRIES_REFUSED, &[("reason", "deadline")]), 1);
    // One error, by its status.
    assert_eq!(m.counter(ERRORS, &[]), 1);
    assert_eq!(m.counter(ERRORS, &[("error.type", "503")]), 1);

    // Calls: three durations, by outcome; the first took the 100 ms backoff.
    let approved = m.samples(CALL_DURATION, &[("outcome", "approved")]);
    assert_eq!(approved.len(), 1);
    assert!((0.1..0.11).contains(&approved[0]), "{approved:?}");
    assert_eq!(
        m.samples(CALL_DURATION, &[("outcome", "rejected")]).len(),
        1
    );
    assert_eq!(
        m.samples(
            CALL_DURATION,
            &[("outcome", "error"), ("error.type", "503")]
        )
        .len(),
        1
    );

    // Attempts: four HTTP requests, with the OTel client labels.
    let server = [
        ("http.request.method", "POST"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
    ];
    assert_eq!(m.samples(ATTEMPT_DURATION, &server).len(), 4);
    let ok = [&server[..], &[("http.response.status_code", "200")]].concat();
    assert_eq!(m.samples(ATTEMPT_DURATION, &ok).len(), 2);
    let unavailable = [
        &server[..],
        &[("http.response.status_code", "503"), ("error.type", "503")],
    ]
    .concat();
    assert_eq!(m.samples(ATTEMPT_DURATION, &unavailable).len(), 2);
    // error.type only on failures.
    for labels in m.label_sets(ATTEMPT_DURATION) {
        let status = labels
            .iter()
            .find(|(k, _)| k == "http.response.status_code");
        let error = labels.iter().find(|(k, _)| k == "error.type");
        assert_eq!(
            error.is_some(),
            status.is_none_or(|(_, s)| s != "200"),
            "{labels:?}"
        );
    }

    // Nothing left in flight or waiting.
    assert_eq!(m.gauge(CALLS_IN_FLIGHT), 0.0);
    assert!(m.matching(CALLS_WAITING, &[]).is_empty()); // no call waited
}

#[tokio::test(start_paused = true)]
async fn hanging_attempts_are_cancelled_and_waiting_calls_are_gauged() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = QualityClient::builder(coordinator.url())
        .concurrency_limit(1)
        .attempts(1)
        .build()
        .unwrap();

    let first = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .check(QualityRequest::new("task-1", "agent-1").timeout(Duration::from_secs(1)))
                .await
        }
    });
    tokio::task::yield_now().await;
    let second = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .check(QualityRequest::new("task-2", "agent-1").timeout(Duration::from_millis(500)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One call sends, the other waits for the only slot: both have
    // started (their clocks run), so both are in flight (#19).
    let before = Metrics::take(&snapshotter);
    assert_eq!(before.gauge(CALLS_IN_FLIGHT), 2.0);
    assert_eq!(before.gauge(CALLS_WAITING), 1.0);

    assert!(second.await.unwrap().unwrap_err().is_total_timeout());
    assert!(first.await.unwrap().unwrap_err().is_total_timeout());
    let m = Metrics::take(&snapshotter);
    // The one attempt sent was abandoned at its call's deadline.
    assert_eq!(
        m.samples(ATTEMPT_DURATION, &[("error.type", "cancelled")]),
        vec![1.0]
    );
    assert_eq!(m.counter(ERRORS, &[("error.type", "timeout")]), 2);
    // A snapshot drains gauges too: this one holds the changes since.
    assert_eq!(m.gauge(CALLS_IN_FLIGHT), -2.0);
    assert_eq!(m.gauge(CALLS_WAITING), -1.0);
}

#[tokio::test(start_paused = true)]
async fn breaker_transitions_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let coordinator = TestCoordinator::start().await;
    coordinator.push_n(Reply::status(500), 2);
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .circuit_breaker(
            CircuitBreakerConfig::default()
                .failure_threshold(2)
                .cooldown(Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    for n in 0..3 {
        let err = client
            .check(QualityRequest::new(format!("task-{n}"), "agent-1"))
            .await
            .unwrap_err();
        assert_eq!(err.is_circuit_open(), n == 2, "{err:?}");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        client
            .check(QualityRequest::new("probe", "agent-1"))
            .await
            .unwrap()
            .approved
    );

    let m = Metrics::take(&snapshotter);
    let client_breaker = |state| {
        m.counter(
            BREAKER_TRANSITIONS,
            &[("replica", "client"), ("state", state)],
        )
    };
    assert_eq!(client_breaker("open"), 1);
    assert_eq!(client_breaker("half_open"), 1);
    assert_eq!(client_breaker("closed"), 1);
    assert_eq!(m.counter(ERRORS, &[("error.type", "circuit_open")]), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_replica_is_ejected_and_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let coordinator = TestCoordinator::start().await;
    // Nothing listens there: every attempt is refused.
    let dead = format!("http://127.0.0.1:{}", unused_port());
    let client = QualityClient::builder(coordinator.url())
        .base_urls([coordinator.url(), dead.clone()])
        .replica_ejection(
            CircuitBreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    for n in 0..20 {
        let verdict = client
            .check(QualityRequest::new(format!("task-{n}"), "agent-1"))
            .await;
        assert!(verdict.unwrap().approved);
    }

    let m = Metrics::take(&snapshotter);
    let dead_label = format!("{dead}/");
    assert_eq!(m.counter(REPLICA_EJECTIONS, &[("replica", &dead_label)]), 1);
    assert_eq!(
        m.counter(
            BREAKER_TRANSITIONS,
            &[("replica", &dead_label), ("state", "open")]
        ),
        1
    );
    assert_eq!(m.counter(REPLICA_EJECTIONS, &[]), 1);
}

/// A port nothing listens on: bound, then released.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `gate` is an allowlist: a coordinator answering hundreds of gate names
/// adds one `other` series, and the label set does not depend on the
/// order names were seen in (every process of a fleet reports the same).
#[tokio::test(start_paused = true)]
async fn gate_labels_are_an_allowlist() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    // The defaults stay listed: other tests of this binary use them.
    let mut gates: Vec<&str> = DEFAULT_GATE_LABELS.to_vec();
    gates.push("security");
    set_gate_labels(gates);

    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);
    let names: Vec<String> = (0..300)
        .map(|n| match n % 3 {
            0 => "security".to_owned(),
            1 => format!("gate-{n}"),
            _ => "Security".to_owned(), // compared exactly
        })
        .collect();
    for (n, name) in names.iter().enumerate() {
        coordinator.push(Reply::reject(name, "no"));
        let verdict = client
            .check(QualityRequest::new(format!("task-{n}"), "agent-1"))
            .await
            .unwrap();
        assert_eq!(verdict.gate, *name);
    }

    let m = Metrics::take(&snapshotter);
    let mut shown: Vec<String> = m
        .label_sets(VERDICTS)
        .into_iter()
        .flat_map(|labels| labels.into_iter().filter(|(k, _)| k == "gate"))
        .map(|(_, v)| v)
        .collect();
    shown.sort();
    assert_eq!(shown, ["other", "security"]);
    assert_eq!(m.counter(VERDICTS, &[("gate", "security")]), 100);
    assert_eq!(m.counter(VERDICTS, &[("gate", "other")]), 200);
}

/// Retries are labelled as the attempt histogram labels attempts: a 429
/// retry and a 503 retry are told apart.
#[tokio::test(start_paused = true)]
async fn retries_of_429_and_503_are_told_apart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);
    for status in [429, 503, 503] {
        coordinator.push(Reply::status(status));
        coordinator.push(Reply::approve());
        let verdict = client.check(QualityRequest::new("t", "a")).await.unwrap();
        assert!(verdict.approved);
    }
    let m = Metrics::take(&snapshotter);
    assert_eq!(m.counter(RETRIES, &[("error.type", "429")]), 1);
    assert_eq!(m.counter(RETRIES, &[("error.type", "503")]), 2);
    for status in ["429", "503"] {
        let attempts = m.samples(ATTEMPT_DURATION, &[("error.type", status)]).len();
        let retries = m.counter(RETRIES, &[("error.type", status)]) as usize;
        assert_eq!(attempts, retries, "{status}");
    }
}

/// Under `discover_replicas` the `replica` label is the base URL's
/// `host:port`, however many addresses replicas come and go at: dead
/// replicas at two different addresses are ejected under one label.
#[tokio::test(start_paused = true)]
async fn discovered_replicas_have_one_stable_label() {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let live = TestCoordinator::start().await;
    let dead = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let set = Arc::new(Mutex::new(vec![live.addr(), dead(unused_port())]));
    let answer = set.clone();
    let client = QualityClient::builder("http://coordinator.test:8000")
        .discover_replicas(
            move |_: &str| {
                let addrs = answer.lock().unwrap().clone();
                async move { Ok::<_, std::io::Error>(addrs) }
            },
            Duration::from_secs(30),
        )
        .replica_ejection(
            CircuitBreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(600)),
        )
        .build()
        .unwrap();
    let run = |from: usize| {
        let client = client.clone();
        async move {
            for n in from..from + 20 {
                let verdict = client
                    .check(QualityRequest::new(format!("task-{n}"), "agent-1"))
                    .await;
                assert!(verdict.unwrap().approved);
            }
        }
    };
    run(0).await;
    // The dead replica is replaced by another dead one, elsewhere.
    *set.lock().unwrap() = vec![live.addr(), dead(unused_port())];
    tokio::time::sleep(Duration::from_secs(31)).await;
    run(20).await;

    let m = Metrics::take(&snapshotter);
    let label = "coordinator.test:8000";
    assert_eq!(m.counter(REPLICA_EJECTIONS, &[]), 2);
    assert_eq!(m.counter(REPLICA_EJECTIONS, &[("replica", label)]), 2);
    for labels in m.label_sets(BREAKER_TRANSITIONS) {
        assert!(
            labels.contains(&("replica".into(), label.into())),
            "{labels:?}"
        );
    }
}

/// What a Prometheus scrape shows with recommended naming: the names of
/// the table in the `metrics` module's docs.
#[tokio::test(start_paused = true)]
async fn a_prometheus_scrape_shows_units_and_totals() {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower_quality_gate::metrics::{describe, DURATION_BUCKETS};

    let recorder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .unwrap()
        .with_recommended_naming(true)
        .build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    describe();

    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);
    coordinator.push(Reply::status(503));
    coordinator.push(Reply::reject("lint", "2 warnings"));
    client.check(QualityRequest::new("t", "a")).await.unwrap();
    coordinator.push(Reply::status(400));
    client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();

    handle.run_upkeep();
    let text = handle.render();
    for line in [
        "# TYPE http_client_request_duration_seconds histogram",
        "# TYPE quality_gate_call_duration_seconds histogram",
        "# TYPE quality_gate_verdicts_total counter",
        "# TYPE quality_gate_errors_total counter",
        "# TYPE quality_gate_retries_total counter",
        "# TYPE quality_gate_calls_in_flight gauge",
        "quality_gate_verdicts_total{gate=\"lint\",approved=\"false\"} 1",
        "quality_gate_retries_total{error_type=\"503\"} 1",
        "quality_gate_errors_total{error_type=\"400\"} 1",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("http_client_request_duration_seconds_bucket{")
                && l.contains("http_response_status_code=\"503\"")
                && l.contains("error_type=\"503\"")
        ),
        "{text}"
    );
}
