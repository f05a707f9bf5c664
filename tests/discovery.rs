//! Replicas that come and go while calls flow: found by a resolver whose
//! answer changes, or by a stream of base URLs. Calls in flight to a removed
//! replica finish, new replicas get traffic, removed ones stop getting it,
//! and no call is lost.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::discover::Change;
use tower_quality_gate::discover::Resolve;
use tower_quality_gate::retry::{Jitter, JitteredBackoff};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityCheck, QualityClient, QualityRequest};

const INTERVAL: Duration = Duration::from_secs(30);

/// Three coordinators on 127.0.0.1, .2 and .3.
async fn replicas(delay: Duration) -> Vec<TestCoordinator> {
    let mut replicas = Vec::new();
    for last in 1..=3 {
        let addr = SocketAddr::from(([127, 0, 0, last], 0));
        let coordinator = TestCoordinator::start_on(addr).await.unwrap();
        coordinator.always(Reply::approve().delay(delay));
        replicas.push(coordinator);
    }
    replicas
}

/// A resolver that answers the addresses in `set`, whatever the name.
fn resolver(set: Arc<Mutex<Vec<SocketAddr>>>) -> impl Resolve {
    move |_: &str| {
        let addrs = set.lock().unwrap().clone();
        async move { Ok(addrs) }
    }
}

/// Callers sending checks back to back until stopped; counts what ended.
struct Flow {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    callers: Vec<JoinHandle<usize>>,
}

impl Flow {
    fn start(client: &QualityClient, callers: usize) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let callers = (0..callers)
            .map(|i| {
                let (client, stop, ok, failed) =
                    (client.clone(), stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut sent = 0;
                    while !stop.load(Ordering::SeqCst) {
                        sent += 1;
                        let req = QualityRequest::new(format!("task-{i}-{sent}"), "agent-1");
                        match client.check(req).await {
                            Ok(v) if v.approved => ok.fetch_add(1, Ordering::SeqCst),
                            _ => failed.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                    sent
                })
            })
            .collect();
        Flow {
            stop,
            ok,
            failed,
            callers,
        }
    }

    /// Stops the callers once their calls end: (sent, approved, failed).
    async fn finish(self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let mut sent = 0;
        for caller in self.callers {
            sent += caller.await.unwrap();
        }
        (
            sent,
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_changing_set_of_replicas_loses_no_call() {
    let delay = Duration::from_millis(500);
    let r = replicas(delay).await;
    let set = Arc::new(Mutex::new(vec![r[0].addr(), r[1].addr()]));
    // No port in the URL: each replica keeps its resolved one.
    let client = QualityClient::builder("http://coordinator.test")
        .discover_replicas(resolver(set.clone()), INTERVAL)
        .build()
        .unwrap();
    let flow = Flow::start(&client, 8);

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(r[0].hits() > 0 && r[1].hits() > 0);
    assert_eq!(r[2].hits(), 0);
    let host = &r[0].requests()[0].headers["host"];
    assert_eq!(host, "coordinator.test");

    // The set becomes .2 and .3 while calls are in flight at .1.
    *set.lock().unwrap() = vec![r[1].addr(), r[2].addr()];
    tokio::time::sleep(INTERVAL).await;
    assert!(r[2].hits() > 0, "the new replica gets traffic");
    let at_removed = r[0].hits();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        r[0].hits(),
        at_removed,
        "the removed replica gets no more traffic"
    );

    let (sent, ok, failed) = flow.finish().await;
    assert_eq!((ok, failed), (sent, 0));
    // One attempt per call, each answered where it arrived: the calls in
    // flight at .1 when it was removed were neither dropped nor retried.
    let arrived: usize = r.iter().map(|c| c.hits()).sum();
    assert_eq!(arrived, sent);
    for c in &r {
        assert_eq!(c.latencies().len(), c.hits());
    }
    assert!(sent >= 8 * 2 * 50, "{sent} calls");
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_fails_to_connect_is_replaced_before_the_interval() {
    let r = replicas(Duration::from_millis(100)).await;
    let set = Arc::new(Mutex::new(vec![r[0].addr(), r[1].addr()]));
    let client = QualityClient::builder("http://coordinator.test")
        .discover_replicas(resolver(set.clone()), INTERVAL)
        .build()
        .unwrap();
    let flow = Flow::start(&client, 4);
    tokio::time::sleep(Duration::from_secs(10)).await;

    // .1 goes down and DNS names .3 instead; the connect errors make the
    // client resolve again within 5 s, not 30.
    r[0].stop().await;
    *set.lock().unwrap() = vec![r[1].addr(), r[2].addr()];
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(r[2].hits() > 0, "the replacement gets traffic");

    let (sent, ok, failed) = flow.finish().await;
    assert_eq!((ok, failed), (sent, 0), "retries cover the connect errors");
}

/// Every discovered replica refusing connections fails calls as fast as a
/// fixed list does (the replicas' `Connect` error, after the deterministic
/// 100 + 200 ms of backoff) instead of holding them for their deadline,
/// and the first call after they are back succeeds.
#[tokio::test(start_paused = true)]
async fn every_discovered_replica_down_fails_fast_and_recovers_at_once() {
    let r = replicas(Duration::from_millis(10)).await;
    let set = Arc::new(Mutex::new(vec![r[0].addr(), r[1].addr()]));
    let client = QualityClient::builder("http://coordinator.test")
        .backoff(JitteredBackoff::default().jitter(Jitter::None))
        .discover_replicas(resolver(set), None)
        .retry_budget(None)
        .build()
        .unwrap();
    let req = |n: usize| QualityRequest::new(format!("t-{n}"), "a");
    assert!(client.check(req(0)).await.unwrap().approved);
    r[0].stop().await;
    r[1].stop().await;
    for n in 1..10 {
        let start = Instant::now();
        let err = client.check(req(n)).await.unwrap_err();
        assert!(err.is_connect(), "{n}: {err:?}");
        assert!(start.elapsed() <= Duration::from_millis(300), "{n}");
    }
    r[0].restart().await.unwrap();
    r[1].restart().await.unwrap();
    for n in 10..20 {
        let start = Instant::now();
        assert!(client.check(req(n)).await.unwrap().approved, "{n}");
        assert_eq!(start.elapsed(), Duration::from_millis(10), "{n}");
    }
}

/// An unbounded channel as a stream.
struct Changes(mpsc::UnboundedReceiver<Result<Change<usize, String>, std::io::Error>>);

impl futures_core::Stream for Changes {
    type Item = Result<Change<usize, String>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_base_urls_adds_and_removes_replicas() {
    let r = replicas(Duration::from_millis(200)).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Ok(Change::Insert(0, r[0].url()))).unwrap();
    tx.send(Ok(Change::Insert(1, "not a url".to_owned())))
        .unwrap();
    let client = QualityClient::builder(r[0].url())
        .discover_base_urls(Changes(rx))
        .build()
        .unwrap();
    let flow = Flow::start(&client, 4);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(r[0].hits() > 0);

    tx.send(Err(std::io::Error::other("registry unreachable")))
        .unwrap();
    tx.send(Ok(Change::Insert(2, r[2].url()))).unwrap();
    tx.send(Ok(Change::Remove(0))).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    r[0].reset();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(r[0].hits(), 0);
    assert!(r[2].hits() > 0);

    let (sent, ok, failed) = flow.finish().await;
    assert_eq!((ok, failed), (sent, 0));

    // The stream served that client; another build refuses it.
    let builder =
        QualityClient::builder(r[0].url()).discover_base_urls(Changes(mpsc::unbounded_channel().1));
    let again = builder.clone();
    builder.build().unwrap();
    assert!(again.build().unwrap_err().is_config());
}

#[tokio::test]
async fn a_resolver_needs_a_host_name_to_resolve() {
    let set = Arc::new(Mutex::new(Vec::new()));
    for url in ["http://127.0.0.1:8000", "http://[::1]:8000"] {
        let err = QualityClient::builder(url)
            .discover_replicas(resolver(set.clone()), None)
            .build()
            .unwrap_err();
        assert!(err.is_config(), "{url}: {err}");
    }
}

/// A channel of service changes as a stream.
struct ServiceChanges(
    mpsc::UnboundedReceiver<Result<Change<&'static str, QualityCheck>, Infallible>>,
);

impl futures_core::Stream for ServiceChanges {
    type Item = Result<Change<&'static str, QualityCheck>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_services_is_balanced_as_replicas() {
    let r = replicas(Duration::from_millis(100)).await;
    let (tx, rx) = mpsc::unbounded_channel();
    for (key, c) in ["one", "two"].into_iter().zip(&r) {
        let check = QualityCheck::new(c.url()).unwrap();
        tx.send(Ok(Change::Insert(key, check))).unwrap();
    }
    let client = QualityClient::builder(r[0].url())
        .discover_services(ServiceChanges(rx))
        .build()
        .unwrap();
    let flow = Flow::start(&client, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sent, ok, failed) = flow.finish().await;
    assert_eq!((ok, failed), (sent, 0));
    assert!(r[0].hits() > 0 && r[1].hits() > 0);
    assert_eq!(r[0].hits() + r[1].hits(), sent);
    assert_eq!(r[2].hits(), 0);
}

/// A stream that ends, and is not fused (it panics if polled again), leaves
/// the replicas it gave serving: the balancer polls discovery on every
/// call, and an ended stream is never polled again.
#[tokio::test(start_paused = true)]
async fn a_stream_that_ends_leaves_its_replicas_serving() {
    struct Once(Option<String>, bool);
    impl futures_core::Stream for Once {
        type Item = Result<Change<usize, String>, std::io::Error>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            assert!(!self.1, "polled after it ended");
            match self.0.take() {
                Some(url) => Poll::Ready(Some(Ok(Change::Insert(0, url)))),
                None => {
                    self.1 = true;
                    Poll::Ready(None)
                }
            }
        }
    }
    let r = replicas(Duration::from_millis(20)).await;
    let client = QualityClient::builder(r[0].url())
        .discover_base_urls(Once(Some(r[0].url()), false))
        .build()
        .unwrap();
    for n in 0..5 {
        let req = tower_quality_gate::QualityRequest::new(format!("t-{n}"), "a");
        assert!(client.check(req).await.unwrap().approved, "{n}");
    }
    assert_eq!(r[0].hits(), 5);
}
