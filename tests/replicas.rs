//! Several coordinator replicas: balancing, ejection of a dead one, and
//! hedging past a slow one.

use std::time::Duration;

use tokio::time::Instant;
use tower_quality_gate::breaker::CircuitBreakerConfig;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{Hedging, QualityClient};

mod common;

use common::{builder, request, spawn_checks};

async fn replicas(n: usize) -> Vec<TestCoordinator> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TestCoordinator::start().await);
    }
    all
}

fn client(replicas: &[TestCoordinator]) -> QualityClient {
    builder(replicas[0].url())
        .base_urls(replicas.iter().map(TestCoordinator::url))
        .retry_budget(None)
        .build()
        .unwrap()
}

async fn run(client: &QualityClient, calls: std::ops::Range<usize>) -> usize {
    let mut approved = 0;
    for h in spawn_checks(client, calls) {
        if h.await.unwrap().is_ok_and(|v| v.approved) {
            approved += 1;
        }
    }
    approved
}

#[tokio::test(start_paused = true)]
async fn calls_are_spread_over_replicas() {
    let replicas = replicas(3).await;
    for r in &replicas {
        r.always(Reply::approve().delay(Duration::from_millis(5)));
    }
    let client = client(&replicas);
    assert_eq!(run(&client, 0..300).await, 300);
    let hits: Vec<usize> = replicas.iter().map(TestCoordinator::hits).collect();
    assert_eq!(hits.iter().sum::<usize>(), 300);
    assert!(hits.iter().all(|h| *h >= 50), "{hits:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dead_replica_is_avoided() {
    let mut replicas = replicas(3).await;
    for r in &replicas {
        r.always(Reply::approve().delay(Duration::from_millis(5)));
    }
    let client = client(&replicas);
    assert_eq!(run(&client, 0..100).await, 100);

    // Kill one mid-run: every later call still gets its verdict.
    let dead = replicas.remove(1);
    drop(dead);
    for r in &replicas {
        r.reset();
    }
    assert_eq!(run(&client, 100..400).await, 300);
    let live: usize = replicas.iter().map(TestCoordinator::hits).sum();
    assert_eq!(live, 300);
}

/// With every replica down, calls fail at once with the replicas' own
/// `Connect` error (after the deterministic 100 + 200 ms of backoff), not
/// after their deadline; when they come back the very next call succeeds,
/// although every replica is still ejected for 10 s (panic routing: when
/// none is healthy, calls go to them anyway).
#[tokio::test(start_paused = true)]
async fn all_replicas_down_fail_fast_and_the_first_call_after_their_return_succeeds() {
    let replicas = replicas(2).await;
    let client = builder(replicas[0].url())
        .base_urls(replicas.iter().map(TestCoordinator::url))
        .replica_ejection(
            CircuitBreakerConfig::default()
                .failure_threshold(3)
                .cooldown(Duration::from_secs(10)),
        )
        .retry_budget(None)
        .build()
        .unwrap();
    assert!(client.check(request(0)).await.unwrap().approved);
    for r in &replicas {
        r.stop().await;
    }
    for n in 1..10 {
        let start = Instant::now();
        let err = client.check(request(n)).await.unwrap_err();
        assert!(err.is_connect(), "{n}: {err:?}");
        assert!(start.elapsed() <= Duration::from_millis(300), "{n}");
    }
    for r in &replicas {
        r.restart().await.unwrap();
        r.reset();
    }
    let start = Instant::now();
    for n in 10..20 {
        assert!(client.check(request(n)).await.unwrap().approved, "{n}");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Sent in turn to both while both are ejected.
    assert!(replicas.iter().all(|r| r.hits() >= 4));
}

#[tokio::test(start_paused = true)]
async fn hedging_overtakes_a_slow_replica() {
    let replicas = replicas(2).await;
    replicas[0].always(Reply::approve().delay(Duration::from_secs(2)));
    replicas[1].always(Reply::approve().delay(Duration::from_millis(10)));
    let hedging = Hedging::default()
        .percentile(0.3)
        .min_data_points(10)
        .period(Duration::from_secs(5));
    let hedged = QualityClient::builder(replicas[0].url())
        .base_urls(replicas.iter().map(TestCoordinator::url))
        .hedging(Some(hedging))
        .build()
        .unwrap();
    // Warm up the latency histogram (about half the calls take 10 ms, half
    // 2 s), then let it rotate into view: hedging reads the previous period.
    let start = Instant::now();
    assert_eq!(run(&hedged, 0..50).await, 50);
    tokio::time::advance(Duration::from_millis(5500) - start.elapsed()).await;

    // Sequential calls: without hedging, those sent to the slow replica
    // would take 2 s each.
    for n in 0..20 {
        let start = Instant::now();
        assert!(hedged.check(request(n)).await.unwrap().approved);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn replicas_need_a_runtime_and_valid_urls() {
    let bad =
        QualityClient::builder("http://127.0.0.1:1").base_urls(["http://127.0.0.1:1", "ftp://x"]);
    assert!(bad.build().unwrap_err().is_config());
    let no_runtime = std::thread::spawn(|| {
        QualityClient::builder("http://127.0.0.1:1")
            .base_urls(["http://127.0.0.1:1", "http://127.0.0.1:2"])
            .build()
            .unwrap_err()
    })
    .join()
    .unwrap();
    assert!(no_runtime.is_config());
}

/// Hedged copies count against the concurrency limit: with a limit of 8
/// the coordinator never has more than 8 requests of the client in flight,
/// and no call sends more copies than its attempts allow.
#[tokio::test(start_paused = true)]
async fn hedged_copies_stay_within_the_concurrency_limit_and_the_attempts() {
    let replicas = replicas(2).await;
    for r in &replicas {
        // Half the calls are slow enough to be hedged.
        r.respond_with(|rec| {
            let n: usize = common::task_id(rec)[5..].parse().unwrap_or(0);
            Reply::approve().delay(Duration::from_millis(if n.is_multiple_of(2) {
                10
            } else {
                1000
            }))
        });
    }
    let hedging = Hedging::default()
        .percentile(0.3)
        .min_data_points(10)
        .period(Duration::from_secs(5));
    let client = QualityClient::builder(replicas[0].url())
        .base_urls(replicas.iter().map(TestCoordinator::url))
        .hedging(hedging)
        .concurrency_limit(8)
        .attempts(2)
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(run(&client, 0..50).await, 50);
    tokio::time::advance(Duration::from_millis(5500).saturating_sub(start.elapsed())).await;
    // Six calls at a time: two slots are free for copies, and a copy
    // beyond them would break the limit.
    for batch in 0..30 {
        let first = 100 + 6 * batch;
        assert_eq!(run(&client, first..first + 6).await, 6);
    }
    let peak: usize = replicas.iter().map(TestCoordinator::peak_in_flight).sum();
    let hedged = replicas.iter().map(TestCoordinator::hits).sum::<usize>() - 230;
    assert!(hedged > 0, "no copy was sent: the test proves nothing");
    assert!(
        peak <= 8,
        "the coordinators saw {peak} in flight with a limit of 8"
    );
    for (task, hits) in common::hits_per_task(&replicas[0])
        .into_iter()
        .chain(common::hits_per_task(&replicas[1]))
    {
        assert!(hits <= 2, "{task} sent {hits} copies with attempts(2)");
    }
}

/// In real time (the buffer hop in front of the balancer takes a moment),
/// a hanging replica's own attempt timer still decides its attempts, so its
/// breaker counts the timeouts and ejects it: it sees at most the 3
/// attempts of the default ejection, however many calls follow.
#[tokio::test]
async fn a_hanging_replica_is_ejected_in_real_time() {
    let replicas = replicas(2).await;
    replicas[0].always(Reply::hang());
    let client = builder(replicas[0].url())
        .base_urls(replicas.iter().map(TestCoordinator::url))
        // Long enough that the healthy replica answers within it on a
        // loaded CI machine (20 ms was not, now and then).
        .attempt_timeout(Duration::from_millis(100))
        .retry_budget(None)
        .build()
        .unwrap();
    // Until the ejection a call's attempts may all land on the hanging
    // replica (p2c picks among equals at random): that spends the 3
    // failures the ejection needs, so at most one call fails.
    let mut failed = 0;
    for n in 0..30 {
        match client.check(request(n)).await {
            Ok(verdict) => assert!(verdict.approved, "{n}"),
            Err(err) => {
                assert!(err.is_attempt_timeout(), "{n}: {err:?}");
                failed += 1;
            }
        }
    }
    assert!(failed <= 1, "{failed} calls failed");
    assert!(
        replicas[0].hits() <= 3,
        "the hanging replica got {} attempts",
        replicas[0].hits()
    );
    // Every answered call was answered by the healthy replica (an attempt
    // the machine's load slowed past its timer adds a hit).
    assert!(
        replicas[1].hits() >= 30 - failed,
        "the healthy replica got {} attempts for {} answered calls",
        replicas[1].hits(),
        30 - failed
    );
}
