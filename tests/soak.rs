//! A bounded soak test: 60 s of mixed faults at high concurrency, in real
//! time, on loopback only, after a 5 s warm-up. Ignored by default; run it
//! with
//!
//! ```sh
//! cargo test --test soak -- --ignored soak
//! ```
//!
//! It prints what happened (to stderr, past the test harness's capture) and
//! asserts that every call ended in a verdict or a typed error, that the
//! limit held, and that memory after the run is within 10% of memory after
//! the warm-up.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::QualityClient;

use common::{request, rss_kib, Rng, Tally};

const WARM_UP: Duration = Duration::from_secs(5);
const RUN: Duration = Duration::from_secs(60);
const WORKERS: usize = 256;
const LIMIT: usize = 64;

/// One reply drawn from a mix of verdicts and every fault the coordinator
/// can play, weighted per thousand.
fn mixed_reply(rng: &mut Rng) -> Reply {
    let quick = Duration::from_micros(rng.below(5_000));
    let roll = rng.below(1000);
    let reply = match roll {
        0..500 => Reply::approve(),
        500..600 => Reply::reject("lint", "2 warnings"),
        600..680 => Reply::status([500, 502, 503, 504][(roll % 4) as usize]),
        680..700 => Reply::status(429).retry_after("1"),
        700..730 => Reply::reset_before_headers(),
        730..760 => Reply::reset_mid_body(),
        760..790 => Reply::close_before_headers(),
        790..820 => Reply::cut_mid_body(),
        820..850 => Reply::malformed_json(),
        850..870 => Reply::approve().content_type("text/html"),
        870..880 => Reply::approve().body_of_size(2 << 20),
        880..885 => Reply::approve().endless_body(),
        885..910 => Reply::approve().trickle(8, Duration::from_millis(5)),
        910..940 => Reply::approve().connection_close(),
        // Slower than the attempt timeout.
        940..970 => return Reply::approve().delay(Duration::from_millis(300)),
        970..980 => return Reply::hang(),
        _ => Reply::approve().delay(Duration::from_millis(20 + rng.below(100))),
    };
    reply.delay(quick)
}

/// Calls as fast as the limit allows until `until`; returns the outcomes.
async fn worker(client: QualityClient, first: usize, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut n = first;
    while Instant::now() < until {
        tally.add(&client.check(request(n)).await);
        n += WORKERS;
    }
    tally
}

/// Closes idle connections every 500 ms, and takes the coordinator down for
/// 200 ms every 15 s, until `until`.
async fn chaos(coordinator: Arc<TestCoordinator>, until: Instant) -> usize {
    let mut restarts = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        coordinator.close_idle_connections();
        if n.is_multiple_of(30) {
            coordinator.stop().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            coordinator.restart().await.unwrap();
            restarts += 1;
        }
    }
    restarts
}

/// Runs the workers and the chaos for `time`; returns the outcomes and how
/// many times the coordinator restarted.
async fn run(
    client: &QualityClient,
    coordinator: &Arc<TestCoordinator>,
    time: Duration,
) -> (Tally, usize) {
    let until = Instant::now() + time;
    let chaos = tokio::spawn(chaos(coordinator.clone(), until));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(client.clone(), w, until)))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let tally = w.await.unwrap();
        total.approved += tally.approved;
        total.rejected += tally.rejected;
        for (kind, n) in tally.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    (total, chaos.await.unwrap())
}

/// Resident memory once the pool is empty: open connections and their
/// buffers on both sides (up to 64 of each) would otherwise swing the
/// figure by more than the growth it looks for.
async fn settled_rss(coordinator: &TestCoordinator) -> u64 {
    coordinator.close_idle_connections();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rss_kib().expect("VmRSS in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 65 s of real time; cargo test --test soak -- --ignored soak"]
async fn soak() {
    let coordinator = Arc::new(TestCoordinator::start().await);
    coordinator.record_requests(false);
    let rng = Mutex::new(Rng::new(0x50a6));
    coordinator.respond_with(move |_| mixed_reply(&mut rng.lock().unwrap()));
    let client = QualityClient::builder(coordinator.url())
        .concurrency_limit(Some(LIMIT))
        .attempt_timeout(Duration::from_millis(250))
        .total_timeout(Duration::from_secs(1))
        // An endless body is read up to the cap before it fails; a few at
        // once at the default 1 MiB would lift the allocator's high-water
        // mark by more than the 10% this test looks for.
        .body_limit(64 * 1024)
        .build()
        .unwrap();

    run(&client, &coordinator, WARM_UP).await;
    coordinator.reset();
    let rss_start = settled_rss(&coordinator).await;

    let (tally, restarts) = run(&client, &coordinator, RUN).await;
    let rss_end = settled_rss(&coordinator).await;

    let calls = tally.calls();
    let growth = (rss_end as f64 / rss_start as f64 - 1.0) * 100.0;
    let mut report = format!(
        "soak: {} s, {WORKERS} workers, limit {LIMIT}, {restarts} restarts\n",
        RUN.as_secs()
    );
    let mut line = |name: &str, value: String| report += &format!("  {name:<24} {value}\n");
    line("calls", calls.to_string());
    line("approved", tally.approved.to_string());
    line("rejected", tally.rejected.to_string());
    for (kind, n) in &tally.errors {
        line(&format!("error {kind}"), n.to_string());
    }
    line("server hits", coordinator.hits().to_string());
    line("peak in flight", coordinator.peak_in_flight().to_string());
    line("connections", coordinator.connections().to_string());
    line("rss after warm-up", format!("{rss_start} KiB"));
    line("rss at end", format!("{rss_end} KiB ({growth:+.1}%)"));
    // Straight to stderr: the harness captures `println!` of a passing test.
    std::io::stderr().write_all(report.as_bytes()).unwrap();

    assert!(calls > 10_000, "{calls}");
    assert!(tally.approved > 0 && tally.rejected > 0);
    assert_eq!(tally.errors("other") + tally.errors("not_ready"), 0);
    assert!(coordinator.peak_in_flight() <= LIMIT);
    assert!(coordinator.hits() <= 3 * calls);
    assert!(growth <= 10.0, "memory grew {growth:.1}%");
}
