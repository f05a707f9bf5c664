//! Faults of the connection: refused, unreachable, reset or closed before
//! the head or in the middle of the body, a coordinator that never answers,
//! a body that trickles past the deadline.

use std::time::Duration;

use tokio::time::Instant;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{Error, ErrorKind};

use crate::common::{
    caused_by_io, caused_by_reset, client, closed_before_head, failed_before_head, gaps, request,
};

const BACKOFFS: Duration = Duration::from_millis(300);

#[tokio::test(start_paused = true)]
async fn refused_connection_is_a_connect_error_after_three_attempts() {
    let coordinator = TestCoordinator::start().await;
    coordinator.stop().await;
    let client = client(&coordinator);

    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err:?}");
    assert!(err.is_connect() && err.is_retryable());
    assert_eq!(err.status(), None);
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(start.elapsed(), BACKOFFS);
    assert_eq!(coordinator.hits(), 0);
    assert_eq!(coordinator.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_coordinator_is_a_connect_error_after_three_connect_timeouts() {
    // A listener that never accepts, its queue full: the kernel drops every
    // further SYN, as a host behind a firewall that drops packets does.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let _queued = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = crate::common::builder(format!("http://{addr}"))
        .build()
        .unwrap();

    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert!(err.is_connect() && err.is_retryable(), "{err:?}");
    assert!(caused_by_io(&err, std::io::ErrorKind::TimedOut), "{err:?}");
    assert_eq!(err.attempts(), Some(3));
    // Three connect timeouts of 3.1 s, and the two backoffs.
    assert_eq!(start.elapsed(), Duration::from_millis(3100) * 3 + BACKOFFS);
}

/// A connection fault, and how the client tells it apart from the others.
struct ConnectionFault {
    name: &'static str,
    reply: Reply,
    is_it: fn(&Error) -> bool,
}

fn connection_faults() -> [ConnectionFault; 4] {
    [
        ConnectionFault {
            name: "reset before the head",
            reply: Reply::reset_before_headers(),
            is_it: |e| caused_by_reset(e) && failed_before_head(e),
        },
        ConnectionFault {
            name: "reset mid-body",
            reply: Reply::reset_mid_body(),
            is_it: |e| caused_by_reset(e) && !failed_before_head(e),
        },
        ConnectionFault {
            name: "closed before the head",
            reply: Reply::close_before_headers(),
            is_it: |e| closed_before_head(e) && !caused_by_reset(e),
        },
        ConnectionFault {
            name: "closed mid-body",
            reply: Reply::cut_mid_body(),
            is_it: |e| {
                caused_by_io(e, std::io::ErrorKind::UnexpectedEof)
                    && !caused_by_reset(e)
                    && !failed_before_head(e)
            },
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn a_connection_failing_every_attempt_is_a_transport_error() {
    for ConnectionFault { name, reply, is_it } in connection_faults() {
        let coordinator = TestCoordinator::start().await;
        coordinator.always(reply);
        let client = client(&coordinator);

        let start = Instant::now();
        let err = client.check(request(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport, "{name}: {err:?}");
        assert!(err.is_transport() && err.is_retryable(), "{name}");
        assert!(is_it(&err), "{name}: {err:?}");
        assert_eq!(err.attempts(), Some(3), "{name}");
        assert_eq!(start.elapsed(), BACKOFFS, "{name}");
        assert_eq!(coordinator.hits(), 3, "{name}");
        // A failed connection is never reused: one per attempt.
        assert_eq!(coordinator.connections(), 3, "{name}");
        assert_eq!(coordinator.in_flight(), 0, "{name}");
        assert_eq!(coordinator.open_connections(), 0, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_connection_fault_is_retried_into_a_verdict() {
    for ConnectionFault { name, reply, .. } in connection_faults() {
        let coordinator = TestCoordinator::start().await;
        coordinator
            .push(reply)
            .push(Reply::reject("lint", "2 warnings"));
        let client = client(&coordinator);

        let start = Instant::now();
        let verdict = client.check(request(1)).await.unwrap();
        assert!(!verdict.approved, "{name}");
        assert_eq!(verdict.gate, "lint", "{name}");
        assert_eq!(coordinator.hits(), 2, "{name}");
        assert_eq!(gaps(&coordinator), [Duration::from_millis(100)], "{name}");
        assert_eq!(start.elapsed(), Duration::from_millis(100), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_that_never_answers_meets_the_overall_deadline() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let client = client(&coordinator);

    // Attempts at 0 s, 10.1 s and 20.3 s, each cut by the 10 s attempt
    // timeout; the 30 s deadline cuts the third.
    let start = Instant::now();
    let err = client.check(request(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.is_total_timeout() && !err.is_attempt_timeout(),
        "{err:?}"
    );
    // A call out of time is final: no policy may retry it (#19).
    assert!(!err.is_retryable());
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(coordinator.hits(), 3);
    assert_eq!(
        gaps(&coordinator),
        [Duration::from_millis(10_100), Duration::from_millis(10_200)]
    );
    // Each abandoned attempt closed its connection, and the coordinator
    // stopped waiting on it.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(coordinator.in_flight(), 0);
    assert_eq!(coordinator.open_connections(), 0);
    assert_eq!(coordinator.connections(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_trickling_body_counts_against_the_attempt_timeout_and_the_deadline() {
    // A 30-byte verdict at one byte a second takes 30 s to arrive.
    let trickle = Reply::approve().trickle(1, Duration::from_secs(1));

    // By default each attempt is cut at 10 s, body included, and the third
    // by the deadline.
    let coordinator = TestCoordinator::start().await;
    coordinator.always(trickle.clone());
    let start = Instant::now();
    let err = client(&coordinator).check(request(1)).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(coordinator.hits(), 3);

    // With a roomier attempt timeout only the deadline stops it.
    let coordinator = TestCoordinator::start().await;
    coordinator.always(trickle);
    let client = crate::common::builder(coordinator.url())
        .attempt_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = client.check(request(2)).await.unwrap_err();
    assert!(err.is_total_timeout(), "{err:?}");
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(coordinator.hits(), 1);

    // The abandoned response is not left running: the coordinator's next
    // write fails and it drops the connection.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(coordinator.in_flight(), 0);
    assert_eq!(coordinator.open_connections(), 0);
}
