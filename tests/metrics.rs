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
    ATTEMPT_DURATION, BREAKER_TRANSITIONS, CALLS_IN_FLIGHT, CALLS_WAITING, CALL_DURATION, ERRORS,
    REPLICA_EJECTIONS, RETRIES, RETRIES_REFUSED, VERDICTS,
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
    // One retry, of a status error; one refusal, for the deadline.
    assert_eq!(m.counter(RETRIES, &[]), 1);
    assert_eq!(m.counter(RETRIES, &[("error.type", "status")]), 1);
    assert_eq!(m.counter(RETRIES_REFUSED, &[]), 1);
    assert_eq!(m.counter(RETRIES_REFUSED, &[("reason", "deadline")]), 1);
    // One error, by kind.
    assert_eq!(m.counter(ERRORS, &[]), 1);
    assert_eq!(m.counter(ERRORS, &[("error.type", "status")]), 1);

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
            &[("outcome", "error"), ("error.type", "status")]
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
