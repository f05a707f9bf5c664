//! The adaptive concurrency limit against simulated coordinators that serve
//! C checks at a time (C = 4 and C = 128) and queue the rest, on a paused
//! clock: it keeps about C calls in flight and the latency near the
//! unloaded one, where a fixed limit of 64 either queues calls at the
//! coordinator (C = 4) or leaves half of it idle (C = 128).
//!
//! `cargo test --test adaptive -- --nocapture` prints the figures.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_quality_gate::limit::AdaptiveLimitConfig;
use tower_quality_gate::testing::TestCoordinator;
use tower_quality_gate::{QualityClient, QualityRequest};

/// The coordinator's service time per check.
const T: Duration = Duration::from_millis(20);
/// Callers, each sending its next check as soon as the last is answered:
/// always more than the coordinator can serve.
const CALLERS: usize = 256;

/// What one run measured, over its measured phase.
#[derive(Debug)]
struct Figures {
    /// Checks in flight at the coordinator (served or queued), sampled every
    /// T / 4: mean, min, max.
    in_flight: (f64, usize, usize),
    p50: Duration,
    p99: Duration,
    /// Checks answered per second of (virtual) time.
    throughput: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs `CALLERS` callers through `client` until `warmup` checks are
/// answered, then measures the next `measured` ones.
async fn run(
    coordinator: &TestCoordinator,
    client: QualityClient,
    warmup: usize,
    measured: usize,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let req = QualityRequest::new(format!("task-{i}"), "agent-1");
                    if client.check(req).await.is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    while coordinator.hits() < warmup {
        tokio::time::sleep(T / 4).await;
    }
    coordinator.reset();
    let start = Instant::now();
    let mut samples = Vec::new();
    while coordinator.latencies().len() < measured {
        samples.push(coordinator.in_flight());
        tokio::time::sleep(T / 4).await;
    }
    let elapsed = start.elapsed();
    let mut latencies = coordinator.latencies();
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no check may fail");

    latencies.sort();
    let mean = samples.iter().sum::<usize>() as f64 / samples.len() as f64;
    Figures {
        in_flight: (
            mean,
            samples.iter().copied().min().unwrap_or(0),
            samples.iter().copied().max().unwrap_or(0),
        ),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// The latency of a check at a coordinator with nothing else to do.
async fn unloaded(coordinator: &TestCoordinator) -> Duration {
    let client = QualityClient::new(coordinator.url()).unwrap();
    for n in 0..5 {
        client
            .check(QualityRequest::new(format!("task-{n}"), "agent-1"))
            .await
            .unwrap();
    }
    let mut latencies = coordinator.latencies();
    latencies.sort();
    coordinator.reset();
    percentile(&latencies, 0.5)
}

fn adaptive(coordinator: &TestCoordinator) -> QualityClient {
    QualityClient::builder(coordinator.url())
        .adaptive_concurrency(AdaptiveLimitConfig::default())
        .concurrency_limit(None)
        .build()
        .unwrap()
}

fn fixed_64(coordinator: &TestCoordinator) -> QualityClient {
    QualityClient::builder(coordinator.url())
        .concurrency_limit(64)
        .build()
        .unwrap()
}

async fn coordinator(capacity: usize) -> (TestCoordinator, Duration) {
    let coordinator = TestCoordinator::start().await;
    coordinator.capacity(capacity, T);
    let unloaded = unloaded(&coordinator).await;
    assert_eq!(unloaded, T);
    (coordinator, unloaded)
}

fn report(name: &str, c: usize, unloaded: Duration, f: &Figures) {
    eprintln!(
        "{name:>9} C={c:<3} in flight mean {:.1} (min {}, max {}), p50 {:?} ({:.2}x), p99 {:?} ({:.2}x), {:.0} checks/s ({:.0}% of capacity)",
        f.in_flight.0,
        f.in_flight.1,
        f.in_flight.2,
        f.p50,
        f.p50.as_secs_f64() / unloaded.as_secs_f64(),
        f.p99,
        f.p99.as_secs_f64() / unloaded.as_secs_f64(),
        f.throughput,
        100.0 * f.throughput / (c as f64 / T.as_secs_f64()),
    );
}

fn assert_settles_at_capacity(c: usize, unloaded: Duration, f: &Figures) {
    let (mean, _, _) = f.in_flight;
    assert!(
        (mean - c as f64).abs() <= 0.3 * c as f64,
        "in flight {mean:.1} not within 30% of {c}"
    );
    assert!(
        f.p99 <= unloaded * 2,
        "p99 {:?} above 2x {unloaded:?}",
        f.p99
    );
    let capacity = c as f64 / T.as_secs_f64();
    assert!(
        f.throughput >= 0.85 * capacity,
        "{:.0} checks/s of {capacity:.0}",
        f.throughput
    );
}

#[tokio::test(start_paused = true)]
async fn small_coordinator_adaptive_keeps_the_queue_on_the_client() {
    let (coordinator, unloaded) = coordinator(4).await;
    let figures = run(&coordinator, adaptive(&coordinator), 400, 800).await;
    report("adaptive", 4, unloaded, &figures);
    assert_settles_at_capacity(4, unloaded, &figures);
}

#[tokio::test(start_paused = true)]
async fn small_coordinator_fixed_64_queues_at_the_coordinator() {
    let (coordinator, unloaded) = coordinator(4).await;
    let figures = run(&coordinator, fixed_64(&coordinator), 400, 800).await;
    report("fixed 64", 4, unloaded, &figures);
    assert_eq!(figures.in_flight.1, 64);
    assert!(figures.p99 >= unloaded * 10, "p99 {:?}", figures.p99);
}

#[tokio::test(start_paused = true)]
async fn large_coordinator_adaptive_uses_its_capacity() {
    let (coordinator, unloaded) = coordinator(128).await;
    let figures = run(&coordinator, adaptive(&coordinator), 3000, 2000).await;
    report("adaptive", 128, unloaded, &figures);
    assert_settles_at_capacity(128, unloaded, &figures);
}

#[tokio::test(start_paused = true)]
async fn large_coordinator_fixed_64_leaves_half_of_it_idle() {
    let (coordinator, unloaded) = coordinator(128).await;
    let figures = run(&coordinator, fixed_64(&coordinator), 500, 2000).await;
    report("fixed 64", 128, unloaded, &figures);
    assert_eq!(figures.in_flight.2, 64);
    assert_eq!(figures.p99, unloaded);
    let capacity = 128.0 / T.as_secs_f64();
    assert!(figures.throughput <= 0.55 * capacity);
}

#[tokio::test(start_paused = true)]
async fn each_replica_gets_a_limit_of_its_own() {
    let (small, _) = coordinator(4).await;
    let (large, unloaded) = coordinator(16).await;
    let client = QualityClient::builder(small.url())
        .base_urls([small.url(), large.url()])
        .adaptive_concurrency(AdaptiveLimitConfig::default())
        .concurrency_limit(None)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let req = QualityRequest::new(format!("task-{i}"), "agent-1");
                    client.check(req).await.unwrap();
                }
            })
        })
        .collect();
    tokio::time::sleep(T * 200).await;
    small.reset();
    large.reset();
    let (mut at_small, mut at_large) = (Vec::new(), Vec::new());
    for _ in 0..800 {
        at_small.push(small.in_flight());
        at_large.push(large.in_flight());
        tokio::time::sleep(T / 4).await;
    }
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let (s, l) = (mean(&at_small), mean(&at_large));
    eprintln!("replicas C=4 and C=16: in flight mean {s:.1} and {l:.1}");
    assert!((s - 4.0).abs() <= 0.3 * 4.0, "{s:.1} at the C=4 replica");
    assert!((l - 16.0).abs() <= 0.3 * 16.0, "{l:.1} at the C=16 replica");
    for c in [&small, &large] {
        let mut latencies = c.latencies();
        latencies.sort();
        assert!(percentile(&latencies, 0.99) <= unloaded * 2);
    }
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_at_build() {
    for config in [
        AdaptiveLimitConfig::default().min_limit(0),
        AdaptiveLimitConfig::default().min_limit(10).max_limit(5),
        AdaptiveLimitConfig::default().tolerance(0.5),
        AdaptiveLimitConfig::default().backoff(1.0),
        AdaptiveLimitConfig::default().probe_samples(0),
    ] {
        let err = QualityClient::builder("http://127.0.0.1:8000")
            .adaptive_concurrency(config)
            .build()
            .unwrap_err();
        assert!(err.is_config(), "{config:?}: {err}");
    }
}
