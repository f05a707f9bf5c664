//! The connection pool against a coordinator that closes keep-alive
//! connections, and one that restarts on the same port mid-run.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::ErrorKind;

use crate::common::{
    builder, client, closed_before_head, hits_per_task, request, spawn_checks, Tally,
};

#[tokio::test(start_paused = true)]
async fn idle_connections_closed_between_calls_are_replaced_without_an_error() {
    let coordinator = TestCoordinator::start().await;
    // No retries: whatever recovers here is the pool itself.
    let client = builder(coordinator.url()).attempts(1).build().unwrap();

    let start = Instant::now();
    for n in 0..20 {
        assert!(client.check(request(n)).await.unwrap().approved, "{n}");
        assert_eq!(coordinator.close_idle_connections(), 1, "{n}");
        // The client reads the FIN before its next call.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(coordinator.hits(), 20);
    let connections: HashSet<u64> = coordinator
        .requests()
        .iter()
        .map(|r| r.connection)
        .collect();
    assert_eq!(connections.len(), 20, "each call on a new connection");
    assert_eq!(coordinator.open_connections(), 0);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn connection_close_replies_are_never_reused() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve().connection_close());
    let client = builder(coordinator.url()).attempts(1).build().unwrap();

    let start = Instant::now();
    for n in 0..20 {
        assert!(client.check(request(n)).await.unwrap().approved, "{n}");
    }
    assert_eq!(coordinator.hits(), 20);
    assert_eq!(coordinator.connections(), 20);
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(coordinator.open_connections(), 0);
}

/// The race every HTTP/1.1 client has: the coordinator closes an idle
/// connection just as the pool hands it out. hyper-util resends a request
/// only if it was never written; here it was written (into a connection
/// whose FIN the pool had not read yet), and from the client's side that
/// looks exactly like a coordinator that read the request and then hung up.
/// So it is an ordinary failed attempt: retried after the backoff, counted
/// in `attempts()` and the budget, never resent for free.
#[tokio::test(start_paused = true)]
async fn a_close_racing_the_next_call_costs_one_counted_attempt() {
    let coordinator = TestCoordinator::start().await;
    let client = client(&coordinator);
    assert!(client.check(request(0)).await.unwrap().approved);

    let start = Instant::now();
    for n in 1..=10 {
        assert_eq!(coordinator.close_idle_connections(), 1);
        // No yield: the pool has not seen the FIN yet.
        assert!(client.check(request(n)).await.unwrap().approved, "{n}");
    }
    // One backoff per call (100 ms without jitter), and the lost request
    // never reached the coordinator.
    assert_eq!(start.elapsed(), Duration::from_millis(100) * 10);
    assert_eq!(coordinator.hits(), 11);
    assert!(hits_per_task(&coordinator).values().all(|&n| n == 1));
}

#[tokio::test(start_paused = true)]
async fn with_one_attempt_a_close_racing_the_call_fails_it() {
    let coordinator = TestCoordinator::start().await;
    let client = builder(coordinator.url()).attempts(1).build().unwrap();
    assert!(client.check(request(0)).await.unwrap().approved);

    assert_eq!(coordinator.close_idle_connections(), 1);
    let err = client.check(request(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(closed_before_head(&err), "{err:?}");
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(coordinator.hits(), 1);
}

/// A coordinator that reads each request and then closes the reused
/// keep-alive connection receives every copy the client sends: never more
/// than `attempts` allows, and `attempts()` says exactly how many.
#[tokio::test(start_paused = true)]
async fn a_coordinator_hanging_up_on_reused_connections_sees_at_most_attempts_copies() {
    for attempts in [1, 2, 3, 5] {
        let coordinator = TestCoordinator::start().await;
        let client = builder(coordinator.url())
            .attempts(attempts)
            .build()
            .unwrap();
        // A warm, pooled connection first.
        assert!(client.check(request(0)).await.unwrap().approved);
        coordinator.always(Reply::close_before_headers());
        let err = client.check(request(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport, "{attempts}");
        assert_eq!(err.attempts(), Some(attempts), "{attempts}");
        assert_eq!(
            hits_per_task(&coordinator)["task-1"],
            attempts as usize,
            "attempts({attempts})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_restarted_on_the_same_port_mid_run() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve().delay(Duration::from_millis(10)));
    let client = builder(coordinator.url())
        .concurrency_limit(Some(16))
        .build()
        .unwrap();

    // 200 calls of 10 ms, 16 at a time. At 55 ms the coordinator goes down,
    // cutting the 16 calls in flight; they retry at 155 ms (refused) and at
    // 355 ms, after it came back at 205 ms. Holding their slots through the
    // backoff, they keep the others waiting: those then run in 7 waves.
    let start = Instant::now();
    let calls = spawn_checks(&client, 0..200);
    tokio::time::sleep_until(start + Duration::from_millis(55)).await;
    coordinator.stop().await;
    assert_eq!(coordinator.open_connections(), 0);
    tokio::time::sleep_until(start + Duration::from_millis(205)).await;
    coordinator.restart().await.unwrap();

    let mut tally = Tally::default();
    for call in calls {
        tally.add(&call.await.unwrap());
    }
    assert_eq!(tally.approved, 200, "{tally:?}");
    // 16 calls were cut after they reached the coordinator; their refused
    // second attempts never reached it.
    assert_eq!(coordinator.hits(), 216);
    let hits = hits_per_task(&coordinator);
    assert_eq!(hits.values().filter(|&&n| n == 2).count(), 16);
    assert_eq!(hits.values().filter(|&&n| n == 1).count(), 184);
    assert_eq!(start.elapsed(), Duration::from_millis(365 + 70));
    assert_eq!(coordinator.peak_in_flight(), 16);

    // Down for longer than a call's retries: every call fails, typed, in
    // 300 ms; back up, every call succeeds.
    coordinator.stop().await;
    let start = Instant::now();
    let calls: Vec<_> = (0..32)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.check(request(1000 + n)).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(err.attempts(), Some(3));
    }
    assert_eq!(start.elapsed(), Duration::from_millis(300 * 2));
    coordinator.restart().await.unwrap();
    for n in 0..32 {
        assert!(client.check(request(2000 + n)).await.unwrap().approved);
    }
    assert_eq!(coordinator.hits(), 216 + 32);
}
