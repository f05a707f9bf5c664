//! A fleet of orchestrators: 8 independent `QualityClient`s, 64 closed-loop
//! callers each, against the same in-process coordinators, on tokio's
//! paused clock (deterministic, a few seconds of real time each).
//!
//! How to read the figures: the runs last 20 s of (virtual) time and the
//! figures are over the last 10 s, unless a scenario says otherwise; "in
//! flight" is the coordinator's mean, queued checks included, sampled every
//! 10 ms; p99 is the coordinator's own (arrival to response head, queue
//! included). A caller whose call failed waits 100 ms before its next one,
//! as an orchestrator that got an error would.
//!
//! `cargo test --test fleet -- --nocapture` prints the figures;
//! `cargo test --test fleet -- --ignored --nocapture` runs the
//! longer measurements (the retry budget's promise on a real clock, about
//! 30 s, and the pushback met with the default settings).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_quality_gate::limit::AdaptiveLimitConfig;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{ClientBuilder, QualityClient, QualityRequest};

/// The coordinator's service time per check.
const T: Duration = Duration::from_millis(30);
/// Checks it serves at a time: 16 / 30 ms = 533 checks/s.
const C: usize = 16;
const CLIENTS: usize = 8;
const CALLERS: usize = 64;
/// How long a caller whose call failed waits before its next call.
const AFTER_FAILURE: Duration = Duration::from_millis(100);

fn capacity_per_sec(c: usize) -> f64 {
    c as f64 / T.as_secs_f64()
}

/// What the callers of one client saw: when each call started and ended,
/// and whether it was approved.
#[derive(Default)]
struct Record {
    calls: Mutex<Vec<(Instant, Instant, bool)>>,
}

impl Record {
    fn ok_between(&self, from: Instant, to: Instant) -> usize {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, end, ok)| *ok && *end >= from && *end < to)
            .count()
    }

    /// Failed calls that started at or after `from`.
    fn failed_started_after(&self, from: Instant) -> usize {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(start, _, ok)| !*ok && *start >= from)
            .count()
    }

    /// The longest a failed call that started at or after `from` took.
    fn slowest_failure(&self, from: Instant) -> Duration {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(start, _, ok)| !*ok && *start >= from)
            .map(|(start, end, _)| *end - *start)
            .max()
            .unwrap_or_default()
    }
}

/// One client and its callers.
struct Member {
    record: Arc<Record>,
    callers: Vec<JoinHandle<()>>,
}

/// Clients and their callers, stopped together.
struct Fleet {
    stop: Arc<AtomicBool>,
    members: Vec<Member>,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            stop: Arc::new(AtomicBool::new(false)),
            members: Vec::new(),
        }
    }

    /// Starts a client of its own with `callers` closed-loop callers.
    fn join(&mut self, client: QualityClient, callers: usize) {
        let record = Arc::new(Record::default());
        let n = self.members.len();
        let callers = (0..callers)
            .map(|i| {
                let (client, stop, record) = (client.clone(), self.stop.clone(), record.clone());
                tokio::spawn(async move {
                    let mut sent = 0;
                    while !stop.load(Ordering::SeqCst) {
                        sent += 1;
                        let req = QualityRequest::new(format!("c{n}-{i}-{sent}"), "agent");
                        let start = Instant::now();
                        let ok = matches!(client.check(req).await, Ok(v) if v.approved);
                        record
                            .calls
                            .lock()
                            .unwrap()
                            .push((start, Instant::now(), ok));
                        if !ok {
                            tokio::time::sleep(AFTER_FAILURE).await;
                        }
                    }
                })
            })
            .collect();
        self.members.push(Member { record, callers });
    }

    async fn stop(self) -> Vec<Arc<Record>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut records = Vec::new();
        for m in self.members {
            for c in m.callers {
                c.await.unwrap();
            }
            records.push(m.record);
        }
        records
    }
}

/// Samples the calls in flight at `coordinators` (summed) every 10 ms
/// until `until`.
fn sample_in_flight(
    coordinators: Vec<Arc<TestCoordinator>>,
    until: Instant,
) -> JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < until {
            samples.push(coordinators.iter().map(|c| c.in_flight()).sum());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples
    })
}

/// The client every orchestrator of the fleet runs: the adaptive limit on,
/// the fixed one off, everything else default.
fn fleet_builder(url: String) -> ClientBuilder {
    QualityClient::builder(url)
        .adaptive_concurrency(AdaptiveLimitConfig::default())
        .concurrency_limit(None)
}

fn jain(x: &[usize]) -> f64 {
    let sum: f64 = x.iter().map(|&v| v as f64).sum();
    let squares: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (x.len() as f64 * squares)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The figures of a run, over its measured span.
#[derive(Debug)]
struct Figures {
    shares: Vec<usize>,
    jain: f64,
    goodput: f64,
    in_flight: f64,
    p99: Duration,
    hits_per_success: f64,
    /// The most arrivals in one 100 ms slot, over the mean.
    burst: f64,
}

impl Figures {
    fn print(&self, name: &str) {
        eprintln!(
            "{name}: Jain {:.3}, goodput {:.0}/s, coordinator in flight {:.1} (capacity {C}), p99 {:?}, {:.2} hits per success, busiest 100 ms slot {:.2}x the mean; approved per client {:?}",
            self.jain, self.goodput, self.in_flight, self.p99, self.hits_per_success, self.burst, self.shares
        );
    }
}

/// Runs `fleet` until `end`, measuring from `from`: `coordinator` is reset
/// then, so its hits and latencies are the span's.
async fn measure(
    fleet: Fleet,
    coordinator: &Arc<TestCoordinator>,
    start: Instant,
    from: Duration,
    end: Duration,
) -> (Figures, Vec<Arc<Record>>) {
    tokio::time::sleep_until(start + from).await;
    coordinator.reset();
    let sampler = sample_in_flight(vec![coordinator.clone()], start + end);
    tokio::time::sleep_until(start + end).await;
    let hits = coordinator.hits();
    let arrivals: Vec<Instant> = coordinator.requests().iter().map(|r| r.at).collect();
    let latencies = coordinator.latencies();
    let records = fleet.stop().await;
    let samples = sampler.await.unwrap();
    let (from, to) = (start + from, start + end);
    let shares: Vec<usize> = records.iter().map(|r| r.ok_between(from, to)).collect();
    let ok: usize = shares.iter().sum();
    let secs = (to - from).as_secs_f64();
    let slot = Duration::from_millis(100);
    let slots = (secs / slot.as_secs_f64()) as usize;
    let mut per_slot = vec![0usize; slots];
    for at in arrivals {
        let i = ((at - from).as_secs_f64() / slot.as_secs_f64()) as usize;
        if let Some(n) = per_slot.get_mut(i) {
            *n += 1;
        }
    }
    let mean_slot = per_slot.iter().sum::<usize>() as f64 / slots as f64;
    let figures = Figures {
        jain: jain(&shares),
        goodput: ok as f64 / secs,
        in_flight: samples.iter().sum::<usize>() as f64 / samples.len().max(1) as f64,
        p99: percentile(latencies, 0.99),
        hits_per_success: hits as f64 / ok.max(1) as f64,
        burst: per_slot.iter().copied().max().unwrap_or(0) as f64 / mean_slot.max(1e-9),
        shares,
    };
    (figures, records)
}

/// Runs `CLIENTS` clients of `CALLERS` callers, made by `client`, against
/// `coordinator` for 20 s, the n-th joining n × `stagger` seconds after
/// the first; the figures are over `from` seconds to 20 s.
async fn run_fleet(
    coordinator: &Arc<TestCoordinator>,
    client: impl Fn(String) -> QualityClient,
    stagger: u64,
    from: u64,
) -> Figures {
    let (stagger, from) = (Duration::from_secs(stagger), Duration::from_secs(from));
    let start = Instant::now();
    let mut fleet = Fleet::new();
    for n in 0..CLIENTS {
        tokio::time::sleep_until(start + stagger * n as u32).await;
        fleet.join(client(coordinator.url()), CALLERS);
    }
    let end = Duration::from_secs(20);
    measure(fleet, coordinator, start, from, end).await.0
}

fn fleet_client(url: String) -> QualityClient {
    fleet_builder(url).build().unwrap()
}

/// What a fleet needs of a coordinator it shares: its queue short (in
/// flight at most 1.3 × capacity) and its p99 at most twice the service
/// time, with the goodput kept.
fn assert_gentle(f: &Figures) {
    assert!(f.goodput >= 0.9 * capacity_per_sec(C), "{f:?}");
    assert!(f.in_flight <= 1.3 * C as f64, "{f:?}");
    assert!(f.p99 <= T * 2, "{f:?}");
}

async fn coordinator() -> Arc<TestCoordinator> {
    let coordinator = Arc::new(TestCoordinator::start().await);
    coordinator.capacity(C, T);
    coordinator
}

#[tokio::test(start_paused = true)]
async fn eight_clients_share_one_coordinator_fairly() {
    let coordinator = coordinator().await;
    let f = run_fleet(&coordinator, fleet_client, 0, 10).await;
    f.print("8 clients x 64 callers");
    assert!(f.jain >= 0.90, "{f:?}");
    assert_gentle(&f);
}

#[tokio::test(start_paused = true)]
async fn late_joiners_one_a_second_get_their_share() {
    let coordinator = coordinator().await;
    // The last joins at 7 s: Jain over the last 8 s, all present.
    let f = run_fleet(&coordinator, fleet_client, 1, 12).await;
    f.print("late joiners, 1 a second");
    assert!(f.jain >= 0.85, "{f:?}");
    assert_gentle(&f);
}

/// The coordinator answers 503 with `Retry-After: 1` to every check beyond
/// its capacity (no queue): the fleet backs off on it, and the retries of
/// the callers it turned away come back spread, not in one slot.
#[tokio::test(start_paused = true)]
async fn pushback_with_retry_after_is_met_gently() {
    let coordinator = coordinator().await;
    coordinator.shed_above(0, Reply::status(503).retry_after("1"));
    let f = run_fleet(&coordinator, fleet_client, 0, 10).await;
    f.print("503 + Retry-After: 1 above capacity");
    assert!(f.hits_per_success <= 2.0, "{f:?}");
    assert!(f.burst <= 3.0, "{f:?}");
    // The jitter is random: Jain's index measured 0.86–0.94 here.
    assert!(f.jain >= 0.75, "{f:?}");
    assert_gentle(&f);
}

/// Two coordinators of capacity 8 each, on 127.0.0.1 and 127.0.0.2, that a
/// resolver names, and `n` fleet clients discovering them with the default
/// interval.
async fn discovered_fleet(
    set: Vec<usize>,
) -> (
    Vec<Arc<TestCoordinator>>,
    Arc<Mutex<Vec<std::net::SocketAddr>>>,
) {
    let mut coordinators = Vec::new();
    for last in 1..=2u8 {
        let addr = std::net::SocketAddr::from(([127, 0, 0, last], 0));
        let c = TestCoordinator::start_on(addr).await.unwrap();
        c.capacity(C / 2, T);
        c.record_requests(true);
        coordinators.push(Arc::new(c));
    }
    let named = set.iter().map(|&i| coordinators[i].addr()).collect();
    (coordinators, Arc::new(Mutex::new(named)))
}

fn discovering_client(set: &Arc<Mutex<Vec<std::net::SocketAddr>>>) -> QualityClient {
    let set = set.clone();
    let resolver = move |_: &str| {
        let addrs = set.lock().unwrap().clone();
        async move { Ok::<_, std::io::Error>(addrs) }
    };
    fleet_builder("http://coordinator.test".into())
        .discover_replicas(resolver, None)
        .build()
        .unwrap()
}

/// Approved calls per second, in one-second bins from `from`.
fn goodput_by_second(records: &[Arc<Record>], from: Instant, secs: u64) -> Vec<usize> {
    (0..secs)
        .map(|s| {
            let lo = from + Duration::from_secs(s);
            records
                .iter()
                .map(|r| r.ok_between(lo, lo + Duration::from_secs(1)))
                .sum()
        })
        .collect()
}

/// Both discovered replicas go down for 5 s: calls fail fast (no failed
/// call takes longer than its attempts' backoff), not at their deadline;
/// once they are back, both take load at once, goodput is whole again
/// within 3 s, and no call started after their return fails.
#[tokio::test(start_paused = true)]
async fn an_outage_of_every_discovered_replica_fails_fast_and_recovers() {
    let (coordinators, set) = discovered_fleet(vec![0, 1]).await;
    let start = Instant::now();
    let mut fleet = Fleet::new();
    for _ in 0..CLIENTS {
        fleet.join(discovering_client(&set), CALLERS);
    }
    tokio::time::sleep_until(start + Duration::from_secs(6)).await;
    for c in &coordinators {
        c.stop().await;
    }
    let down = Instant::now();
    tokio::time::sleep_until(down + Duration::from_secs(5)).await;
    for c in &coordinators {
        c.restart().await.unwrap();
        c.reset();
    }
    let back = Instant::now();
    tokio::time::sleep_until(back + Duration::from_secs(1)).await;
    let hits_first_second: Vec<usize> = coordinators.iter().map(|c| c.hits()).collect();
    tokio::time::sleep_until(back + Duration::from_secs(5)).await;
    let records = fleet.stop().await;

    // Calls queued on the client side when the outage began fail once
    // their turn comes; those started in it fail at once.
    let slowest_queued = records
        .iter()
        .map(|r| r.slowest_failure(start))
        .max()
        .unwrap();
    let slowest = records
        .iter()
        .map(|r| r.slowest_failure(down + Duration::from_millis(500)))
        .max()
        .unwrap();
    let lost: usize = records.iter().map(|r| r.failed_started_after(back)).sum();
    let failed_in_outage: usize = records.iter().map(|r| r.failed_started_after(down)).sum();
    let goodput = goodput_by_second(&records, back, 5);
    eprintln!(
        "outage of every discovered replica: {failed_in_outage} calls failed during it, those started in it in at most {slowest:?} (queued before it: {slowest_queued:?}); after the return: approved per second {goodput:?} (capacity {:.0}), hits per replica in the first second {hits_first_second:?}, {lost} calls started after it failed",
        capacity_per_sec(C)
    );
    assert!(failed_in_outage > 0);
    // The backoff of 3 attempts: at most 100 + 200 ms.
    assert!(slowest <= Duration::from_millis(300), "{slowest:?}");
    assert_eq!(lost, 0);
    assert!(
        hits_first_second.iter().all(|&h| h > 0),
        "{hits_first_second:?}"
    );
    assert!(
        goodput[2] as f64 >= 0.85 * capacity_per_sec(C),
        "{goodput:?}"
    );
}

/// A replica added to the name takes load within 10 s with the default
/// re-resolution interval.
#[tokio::test(start_paused = true)]
async fn a_replica_added_takes_load_within_10_s() {
    let (coordinators, set) = discovered_fleet(vec![0]).await;
    let start = Instant::now();
    let mut fleet = Fleet::new();
    for _ in 0..CLIENTS {
        fleet.join(discovering_client(&set), CALLERS);
    }
    tokio::time::sleep_until(start + Duration::from_millis(5500)).await;
    set.lock().unwrap().push(coordinators[1].addr());
    let added = Instant::now();
    let mut first = None;
    while first.is_none() && added.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        first = coordinators[1].requests().first().map(|r| r.at - added);
    }
    tokio::time::sleep_until(added + Duration::from_secs(10)).await;
    coordinators[0].reset();
    coordinators[1].reset();
    tokio::time::sleep_until(added + Duration::from_secs(12)).await;
    let hits: Vec<usize> = coordinators.iter().map(|c| c.hits()).collect();
    let records = fleet.stop().await;
    let goodput = goodput_by_second(&records, added + Duration::from_secs(10), 2);
    eprintln!(
        "a replica added: first hit after {first:?}; 10-12 s after: hits per replica {hits:?}, approved per second {goodput:?}"
    );
    let first = first.expect("the added replica got no call");
    assert!(first <= Duration::from_secs(10), "{first:?}");
    assert!(
        hits[1] as f64 >= 0.3 * (hits[0] + hits[1]) as f64,
        "{hits:?}"
    );
}

/// The same pushback met by clients with the default settings (no adaptive
/// limit, 64 calls in flight each, 3 attempts, the retry budget): the
/// `Retry-After` jitter keeps retries spread, and the budget and the
/// callers' own pause after a failure keep the hits per success bounded
/// (3.15, above the 2 the adaptive limit reaches: see BENCHMARKS.md). A
/// measurement for the record, kept out of CI's time.
#[tokio::test(start_paused = true)]
#[ignore = "about 30 s of real time; a figure for BENCHMARKS.md"]
async fn pushback_with_retry_after_default_settings() {
    let coordinator = coordinator().await;
    coordinator.shed_above(0, Reply::status(503).retry_after("1"));
    let default = |url: String| QualityClient::new(url).unwrap();
    let f = run_fleet(&coordinator, default, 0, 10).await;
    f.print("503 + Retry-After: 1 above capacity, default settings");
    assert!(f.burst <= 3.0, "{f:?}");
}

// ----- on a real clock (`--ignored`) -----

/// Over every 10 s span (stepped by 100 ms) of `events` (when, calls,
/// retries): the most retries above `0.2 × calls + 100`.
fn worst_excess(events: &[(Duration, u64, u64)]) -> (f64, u64) {
    let end = events.last().map(|e| e.0).unwrap_or_default();
    let (mut worst, mut most) = (f64::MIN, 0);
    let mut from = Duration::ZERO;
    while from + Duration::from_secs(10) <= end {
        let span = events
            .iter()
            .filter(|e| e.0 >= from && e.0 < from + Duration::from_secs(10));
        let (calls, retries) = span.fold((0, 0), |(c, r), e| (c + e.1, r + e.2));
        worst = worst.max(retries as f64 - (0.2 * calls as f64 + 100.0));
        most = most.max(retries);
        from += Duration::from_millis(100);
    }
    (worst, most)
}

/// tower's `TpsBudget` (10 s, 10/s, 20%) on a real clock, 50 failing calls
/// a second for 30 s, each retried twice if the budget allows: how far above
/// its promise it goes. For the record (BENCHMARKS.md), not a gate.
#[tokio::test]
#[ignore = "30 s of real time"]
async fn tower_tps_budget_on_a_real_clock() {
    use tower::retry::budget::{Budget, TpsBudget};
    let budget = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    let start = std::time::Instant::now();
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while start.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        budget.deposit();
        let retries = (0..2).filter(|_| budget.withdraw()).count() as u64;
        events.push((start.elapsed(), 1, retries));
    }
    let (worst, most) = worst_excess(&events);
    eprintln!(
        "tower TpsBudget, real clock: at most {most} retries in a 10 s span of 500 calls (promise: 200); worst span {worst:+.0} over the promise"
    );
}

/// The client's `RetryBudget` (default, 20% + 10/s over 10 s) on a real
/// clock: 50 calls a second for 30 s against a coordinator that answers
/// 503 to every attempt; every 10 s span of attempts holds at most 20% of
/// its calls plus 100 retries (one slot, 0.5 s, of slack at the edges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 s of real time"]
async fn budget_promise_on_a_real_clock() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    let client = QualityClient::new(coordinator.url()).unwrap();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut calls = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        n += 1;
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let _ = client
                .check(QualityRequest::new(format!("t-{n}"), "a"))
                .await;
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let events: Vec<(Duration, u64, u64)> = coordinator
        .requests()
        .iter()
        .map(|r| {
            let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
            let first = seen.insert(id);
            (r.at - start, first as u64, (!first) as u64)
        })
        .collect();
    let (worst, most) = worst_excess(&events);
    eprintln!(
        "RetryBudget through the client, real clock: {} calls, {} attempts; at most {most} retries in a 10 s span (promise: 0.2 x calls + 100 = 200); worst span {worst:+.0} over the promise",
        seen.len(),
        events.len()
    );
    assert!(worst <= 0.2 * 25.0, "{worst:+.0} retries over the promise");
}
