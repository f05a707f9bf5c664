//! Many calls at once: the concurrency limit under 10,000 calls, 1,000
//! calls cancelled at random points, and a full outage against the retry
//! budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower_quality_gate::testing::{Recorded, Reply, TestCoordinator};
use tower_quality_gate::QualityClient;

use crate::common::{builder, client, hits_per_task, request, spawn_checks, task_id, Rng, Tally};

const LIMIT: usize = 16;

/// What the coordinator does with each attempt of call `n`, and so what the
/// call must end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Approve,
    Reject,
    /// A 503, then an approval on the retry.
    FlakyThenApprove,
    /// A reset before the head, then an approval on the retry.
    ResetThenApprove,
    /// 503 to every attempt.
    Down,
    /// A body that is not JSON.
    Malformed,
}

impl Plan {
    fn of(n: usize) -> Plan {
        match n % 20 {
            3 | 13 => Plan::FlakyThenApprove,
            7 => Plan::Down,
            9 => Plan::Reject,
            11 => Plan::Malformed,
            17 => Plan::ResetThenApprove,
            _ => Plan::Approve,
        }
    }

    fn reply(self, attempt: usize, delay: Duration) -> Reply {
        let reply = match (self, attempt) {
            (Plan::Approve, _) => Reply::approve(),
            (Plan::Reject, _) => Reply::reject("lint", "warnings"),
            (Plan::FlakyThenApprove, 1) | (Plan::Down, _) => Reply::status(503),
            (Plan::ResetThenApprove, 1) => Reply::reset_before_headers(),
            (Plan::FlakyThenApprove | Plan::ResetThenApprove, _) => Reply::approve(),
            (Plan::Malformed, _) => Reply::malformed_json(),
        };
        reply.delay(delay)
    }

    fn attempts(self) -> usize {
        match self {
            Plan::Approve | Plan::Reject | Plan::Malformed => 1,
            Plan::FlakyThenApprove | Plan::ResetThenApprove => 2,
            Plan::Down => 3,
        }
    }

    /// How long the call holds its slot: its attempts and its backoffs.
    fn duration(self, delay: Duration) -> Duration {
        let backoffs = [0, 0, 100, 300][self.attempts()];
        delay * self.attempts() as u32 + Duration::from_millis(backoffs)
    }
}

fn delay_of(n: usize) -> Duration {
    Duration::from_millis(1 + (n % 4) as u64)
}

fn task_number(r: &Recorded) -> usize {
    task_id(r)["task-".len()..].parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_calls_through_a_limit_of_16() {
    const CALLS: usize = 10_000;
    let coordinator = TestCoordinator::start().await;
    let attempts_seen: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    coordinator.respond_with({
        let attempts_seen = attempts_seen.clone();
        move |r| {
            let n = task_number(r);
            let attempt = {
                let mut seen = attempts_seen.lock().unwrap();
                let a = seen.entry(n).or_default();
                *a += 1;
                *a
            };
            Plan::of(n).reply(attempt, delay_of(n))
        }
    });
    // Retries are counted exactly here; the budget has its own scenario.
    let client = builder(coordinator.url())
        .concurrency_limit(Some(LIMIT))
        .retry_budget(None)
        .build()
        .unwrap();

    let start = Instant::now();
    let calls = spawn_checks(&client, 0..CALLS);
    let mut tally = Tally::default();
    for (n, call) in calls.into_iter().enumerate() {
        let outcome = call.await.unwrap();
        tally.add(&outcome);
        match (Plan::of(n), outcome) {
            (Plan::Approve | Plan::FlakyThenApprove | Plan::ResetThenApprove, Ok(v)) => {
                assert!(v.approved, "{n}")
            }
            (Plan::Reject, Ok(v)) => assert!(!v.approved, "{n}"),
            (Plan::Down, Err(e)) => {
                assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{n}");
                assert_eq!(e.attempts(), Some(3), "{n}");
            }
            (Plan::Malformed, Err(e)) => {
                assert!(e.is_invalid_response(), "{n}: {e:?}");
                assert_eq!(e.attempts(), Some(1), "{n}");
            }
            (plan, outcome) => panic!("call {n} ({plan:?}) ended with {outcome:?}"),
        }
    }
    let elapsed = start.elapsed();

    // Every call accounted for, none lost, none sent more than its plan says.
    assert_eq!(tally.calls(), CALLS);
    assert_eq!(tally.approved, CALLS / 20 * 17);
    assert_eq!(tally.rejected, CALLS / 20);
    assert_eq!(tally.errors("status"), CALLS / 20);
    assert_eq!(tally.errors("invalid_response"), CALLS / 20);
    let expected: usize = (0..CALLS).map(|n| Plan::of(n).attempts()).sum();
    assert_eq!(coordinator.hits(), expected);
    let per_task = hits_per_task(&coordinator);
    assert_eq!(per_task.len(), CALLS);
    for n in 0..CALLS {
        assert_eq!(
            per_task[&format!("task-{n}")],
            Plan::of(n).attempts(),
            "{n}"
        );
    }

    // The limit held, and was reached.
    assert_eq!(coordinator.peak_in_flight(), LIMIT);
    // Connections were reused: a new one only for each reset one.
    let resets = CALLS / 20;
    assert!(coordinator.connections() <= LIMIT + resets);
    // At most 16 calls at once, and never an idle slot while calls waited:
    // the run took between the total work over 16, and that plus the
    // longest call.
    let durations: Vec<Duration> = (0..CALLS)
        .map(|n| Plan::of(n).duration(delay_of(n)))
        .collect();
    let work: Duration = durations.iter().sum();
    let longest = *durations.iter().max().unwrap();
    assert!(
        elapsed >= work / LIMIT as u32,
        "{elapsed:?} < {work:?} / 16"
    );
    assert!(
        elapsed <= work / LIMIT as u32 + longest,
        "{elapsed:?} > {work:?} / 16 + {longest:?}"
    );
}

/// Tasks alive on the runtime besides one per open connection on each side
/// (the coordinator's and hyper-util's): the coordinator's accept loop and
/// the pool's idle reaper.
fn fixed_tasks(coordinator: &TestCoordinator) -> i64 {
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    alive as i64 - 2 * coordinator.open_connections() as i64
}

async fn wave(client: &QualityClient, from: usize, n: usize) -> Tally {
    let calls = spawn_checks(client, from..from + n);
    let mut tally = Tally::default();
    for call in calls {
        tally.add(&call.await.unwrap());
    }
    tally
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_cancelled_at_random_points_leak_nothing() {
    let coordinator = TestCoordinator::start().await;
    let rng = Arc::new(Mutex::new(Rng::new(0x5eed_0004)));
    coordinator.respond_with({
        let rng = rng.clone();
        move |_| {
            let mut rng = rng.lock().unwrap();
            let delay = Duration::from_micros(rng.below(20_000));
            match rng.below(10) {
                0 => Reply::status(503),
                1 => Reply::reject("lint", "warnings").trickle(4, Duration::from_millis(2)),
                2 => Reply::reset_mid_body(),
                _ => Reply::approve(),
            }
            .delay(delay)
        }
    });
    let client = builder(coordinator.url())
        .concurrency_limit(Some(LIMIT))
        .build()
        .unwrap();

    // The baseline: a warm pool of 16 connections.
    assert_eq!(wave(&client, 0, LIMIT).await.calls(), LIMIT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = fixed_tasks(&coordinator);

    // 1,000 calls, each dropped after a random time: before it gets a slot,
    // while it waits for the head, mid-body, or mid-backoff; one in 20 at
    // its first poll.
    let mut cancel_at = Rng::new(42);
    let start = Instant::now();
    let calls: Vec<_> = (0..1000)
        .map(|n| {
            let client = client.clone();
            let after = match cancel_at.below(20) {
                0 => Duration::ZERO,
                _ => Duration::from_micros(cancel_at.below(400_000)),
            };
            tokio::spawn(async move {
                tokio::time::timeout(after, client.check(request(100 + n))).await
            })
        })
        .collect();
    let (mut cancelled, mut tally) = (0, Tally::default());
    for call in calls {
        match call.await.unwrap() {
            Ok(outcome) => tally.add(&outcome),
            Err(_elapsed) => cancelled += 1,
        }
    }
    assert_eq!(cancelled + tally.calls(), 1000);
    assert!(
        cancelled > 500 && tally.calls() > 100,
        "{cancelled} {tally:?}"
    );
    // A finished call is a verdict or a typed error, never anything else.
    assert_eq!(tally.errors("other") + tally.errors("not_ready"), 0);
    assert!(start.elapsed() <= Duration::from_millis(400));
    // Some were dropped after they reached the coordinator.
    assert!(
        coordinator.hits() > tally.calls() + 50,
        "{}",
        coordinator.hits()
    );

    // Let the coordinator finish what the client abandoned.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(coordinator.in_flight(), 0);

    // No task leaked: one per open connection on each side, as before.
    assert_eq!(fixed_tasks(&coordinator), baseline);
    // No slot leaked: 32 calls of 1 s run in two waves of 16.
    coordinator.reset();
    coordinator.always(Reply::approve().delay(Duration::from_secs(1)));
    let start = Instant::now();
    assert_eq!(wave(&client, 5000, 2 * LIMIT).await.approved, 2 * LIMIT);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(coordinator.peak_in_flight(), LIMIT);
    // No connection leaked: the pool holds no more than 16 at rest.
    assert!(coordinator.open_connections() <= LIMIT);
    assert_eq!(fixed_tasks(&coordinator), baseline);
}

#[tokio::test(start_paused = true)]
async fn a_full_outage_is_capped_by_the_retry_budget() {
    const CALLS: usize = 1000;
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    // The default budget: 20% of calls plus 10 retries a second over 10 s.
    let client = client(&coordinator);

    let start = Instant::now();
    let calls = spawn_checks(&client, 0..CALLS);
    let mut attempts = 0;
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        attempts += err.attempts().unwrap() as usize;
    }
    let hits = coordinator.hits();
    // Each error counts its attempts exactly as the coordinator saw them.
    assert_eq!(attempts, hits);
    // The whole outage fits in the budget's 10 s window, so its bound holds:
    // 1.2 x the calls plus the floor of 10/s x 10 s.
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(hits <= CALLS * 12 / 10 + 100, "{hits}");
    // Without the budget it would be 3,000; the budget was spent, not idle.
    assert!(hits >= CALLS + 200, "{hits}");
}
