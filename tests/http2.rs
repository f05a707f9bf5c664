//! HTTP/2 faults from a coordinator written in the test with the `h2`
//! crate (or raw frames): a `GOAWAY` that leaves the call unprocessed, a
//! stream reset with `REFUSED_STREAM`, and a connection that stops
//! answering keep-alive pings.
//!
//! Run with `cargo test --test http2`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_quality_gate::{QualityCheck, QualityClient, QualityRequest};

/// What the coordinator does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// On its first connection, answers the first request with
    /// `GOAWAY(last_stream_id = 0)`: the request was not processed.
    GoAwayFirst,
    /// Resets the first stream it receives with `REFUSED_STREAM`.
    RefuseFirstStream,
    /// Takes each request, then stops reading the connection: no response,
    /// and no answer to pings.
    StopAnswering,
}

/// A cleartext HTTP/2 coordinator that approves checks, but for its fault.
struct H2Coordinator {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Requests received, faulted or not.
    streams: Arc<AtomicUsize>,
    /// Requests answered with a verdict.
    served: Arc<AtomicUsize>,
}

impl H2Coordinator {
    async fn start(fault: Fault) -> H2Coordinator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let streams = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let counters = (connections.clone(), streams.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = counters.0.fetch_add(1, Ordering::SeqCst);
                let (streams, served) = (counters.1.clone(), counters.2.clone());
                if fault == Fault::GoAwayFirst && n == 0 {
                    tokio::spawn(go_away_on_first_request(tcp, streams));
                } else {
                    tokio::spawn(serve(tcp, fault, streams, served));
                }
            }
        });
        H2Coordinator {
            url,
            connections,
            streams,
            served,
        }
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.streams.load(Ordering::SeqCst),
            self.served.load(Ordering::SeqCst),
        )
    }
}

async fn serve(tcp: TcpStream, fault: Fault, streams: Arc<AtomicUsize>, served: Arc<AtomicUsize>) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = conn.accept().await {
        let n = streams.fetch_add(1, Ordering::SeqCst);
        match fault {
            Fault::RefuseFirstStream if n == 0 => {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            }
            Fault::StopAnswering => {
                // Holds the connection without polling it: pings go unanswered.
                let _held = (conn, respond);
                std::future::pending::<()>().await;
                return;
            }
            _ => {}
        }
        let response = http::Response::builder()
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let Ok(mut body) = respond.send_response(response, false) else {
            continue;
        };
        let verdict = Bytes::from_static(br#"{"approved":true,"gate":"h2"}"#);
        if body.send_data(verdict, true).is_ok() {
            served.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Raw frames: the server preface, then `GOAWAY(last_stream_id = 0,
/// NO_ERROR)` as soon as a request's HEADERS arrive, then reads to the end.
async fn go_away_on_first_request(mut tcp: TcpStream, streams: Arc<AtomicUsize>) {
    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }
    const SETTINGS: u8 = 4;
    const HEADERS: u8 = 1;
    const GOAWAY: u8 = 7;
    let mut preface = [0u8; 24];
    if tcp.read_exact(&mut preface).await.is_err()
        || tcp.write_all(&frame(SETTINGS, 0, &[])).await.is_err()
    {
        return;
    }
    let mut header = [0u8; 9];
    while tcp.read_exact(&mut header).await.is_ok() {
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match (header[3], header[4] & 1) {
            (SETTINGS, 0) => frame(SETTINGS, 1, &[]),
            (HEADERS, _) => {
                streams.fetch_add(1, Ordering::SeqCst);
                frame(GOAWAY, 0, &[0; 8])
            }
            _ => continue,
        };
        if tcp.write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn h2_check(url: &str) -> QualityCheck {
    QualityCheck::builder(url).http2(true).build().unwrap()
}

#[tokio::test]
async fn a_call_above_goaway_last_stream_id_is_unprocessed_and_resent() {
    let coordinator = H2Coordinator::start(Fault::GoAwayFirst).await;
    let err = h2_check(&coordinator.url)
        .oneshot(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_transport() && err.is_retryable(), "{err:?}");
    assert!(err.is_unprocessed(), "not marked unprocessed: {err:?}");
    assert_eq!(coordinator.counts(), (1, 1, 0));

    // The client resends an unprocessed call at once, without spending an
    // attempt: one attempt is enough.
    assert_eq!(one_attempt_check(&coordinator.url).await, "h2");
    assert_eq!(coordinator.counts(), (2, 2, 1));
}

/// A call through a client allowed one attempt: an unprocessed resend must
/// not need a second. Returns the verdict's gate.
async fn one_attempt_check(url: &str) -> String {
    let client = QualityClient::builder(url)
        .attempts(1)
        .http(|c| c.http2(true))
        .build()
        .unwrap();
    client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap()
        .gate
}

#[tokio::test]
async fn a_refused_stream_is_unprocessed_and_resent() {
    let coordinator = H2Coordinator::start(Fault::RefuseFirstStream).await;
    let check = h2_check(&coordinator.url);
    let err = check
        .clone()
        .oneshot(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_transport() && err.is_retryable(), "{err:?}");
    assert!(err.is_unprocessed(), "not marked unprocessed: {err:?}");
    // The connection survives a refused stream.
    check.oneshot(QualityRequest::new("t", "a")).await.unwrap();
    assert_eq!(coordinator.counts(), (1, 2, 1));

    let coordinator = H2Coordinator::start(Fault::RefuseFirstStream).await;
    assert_eq!(one_attempt_check(&coordinator.url).await, "h2");
    assert_eq!(coordinator.counts(), (1, 2, 1));
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_fails_the_call_within_the_ping_timeout() {
    let coordinator = H2Coordinator::start(Fault::StopAnswering).await;
    let (interval, timeout) = (Duration::from_millis(50), Duration::from_millis(100));
    let check = QualityCheck::builder(coordinator.url.clone())
        .http2(true)
        .http2_keep_alive_interval(Some(interval))
        .http2_keep_alive_timeout(timeout)
        .build()
        .unwrap();
    let started = Instant::now();
    // A bare check has no attempt timeout: only the pings can end this call.
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        check.oneshot(QualityRequest::new("t", "a")),
    )
    .await
    .expect("the call hung: keep-alive pings did not fire")
    .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_transport() && err.is_retryable(), "{err:?}");
    assert!(!err.is_unprocessed(), "{err:?}");
    assert!(
        took >= interval && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(coordinator.counts(), (1, 1, 0));
}
