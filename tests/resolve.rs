//! Replicas found by a resolver connect where the resolver says, ports
//! included, whatever port the base URL names; and `health()` under
//! discovery asks those replicas, not the base URL's host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_quality_gate::discover::Resolve;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{Proxy, QualityClient, QualityRequest};

/// A resolver answering `addrs` for any name, counting its lookups.
fn resolver(addrs: Vec<SocketAddr>, lookups: Arc<AtomicUsize>) -> impl Resolve {
    move |_: &str| {
        lookups.fetch_add(1, Ordering::SeqCst);
        let addrs = addrs.clone();
        async move { Ok(addrs) }
    }
}

/// A coordinator approving every check.
async fn approving() -> TestCoordinator {
    let c = TestCoordinator::start().await;
    c.always(Reply::approve());
    c
}

/// Whether the client's check was approved.
async fn approved(client: &QualityClient) -> bool {
    client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap()
        .approved
}

/// The status of the client's failed health check.
async fn unhealthy_status(client: &QualityClient) -> Option<u16> {
    client
        .health()
        .await
        .unwrap_err()
        .status()
        .map(|s| s.as_u16())
}

/// A client for `url` whose replicas are what `addrs` says.
fn client(url: &str, addrs: Vec<SocketAddr>) -> QualityClient {
    counting_client(url, addrs, Arc::default())
}

/// [`client`], counting the resolver's lookups in `lookups`.
fn counting_client(url: &str, addrs: Vec<SocketAddr>, lookups: Arc<AtomicUsize>) -> QualityClient {
    QualityClient::builder(url)
        .discover_replicas(resolver(addrs, lookups), Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn two_replicas_on_one_host_keep_their_resolved_ports() {
    let (a, b) = (approving().await, approving().await);
    assert_ne!(a.addr().port(), b.addr().port());
    // Port 1 listens nowhere: a call that went there would fail.
    let client = client("http://coordinator.test:1", vec![a.addr(), b.addr()]);
    for i in 0..40 {
        let verdict = client
            .check(QualityRequest::new(format!("t{i}"), "a"))
            .await
            .unwrap();
        assert!(verdict.approved);
    }
    assert_eq!(a.hits() + b.hits(), 40);
    assert!(a.hits() > 0 && b.hits() > 0, "{} / {}", a.hits(), b.hits());
    // The URL still names the coordinator, its port included.
    assert_eq!(a.requests()[0].headers["host"], "coordinator.test:1");

    a.set_health(Reply::status(503));
    b.set_health(Reply::status(200));
    // The first replica that accepts a connection answers: `a`, unhealthy.
    assert_eq!(unhealthy_status(&client).await, Some(503));
}

#[tokio::test]
async fn an_answer_without_a_port_takes_the_url_port() {
    let c = approving().await;
    let url = format!("http://coordinator.test:{}", c.addr().port());
    let portless = SocketAddr::new(c.addr().ip(), 0);
    let client = client(&url, vec![portless]);
    assert!(approved(&client).await);
    assert_eq!(c.hits(), 1);
}

#[tokio::test]
async fn health_under_discovery_asks_the_discovered_replicas() {
    let down = TestCoordinator::start().await;
    let up = TestCoordinator::start().await;
    let down_addr = down.addr();
    down.shutdown();
    let lookups = Arc::new(AtomicUsize::new(0));
    // `coordinator.invalid` resolves nowhere (RFC 6761): the system
    // resolver would fail, the discovery's answers the replicas.
    let client = counting_client(
        "http://coordinator.invalid:8000",
        vec![down_addr, up.addr()],
        lookups.clone(),
    );
    client.health().await.unwrap();
    assert!(lookups.load(Ordering::SeqCst) >= 1);
    assert_eq!(up.requests().last().unwrap().path, "/health");

    up.set_health(Reply::status(503));
    assert_eq!(unhealthy_status(&client).await, Some(503));
}

/// Through a proxy, every discovered replica would be whatever the proxy
/// makes of the host name: refused at build time, unless `NO_PROXY` lists
/// the host.
#[tokio::test]
async fn discovered_replicas_behind_a_proxy_are_refused_unless_no_proxy() {
    let c = approving().await;
    let build = |no_proxy: &str| {
        QualityClient::builder("http://coordinator.test:8000")
            .discover_replicas(
                resolver(vec![c.addr()], Arc::default()),
                Duration::from_secs(30),
            )
            .http(|h| h.proxy(Proxy::url("http://proxy.test:3128").no_proxy(no_proxy)))
            .build()
    };
    let err = build("").unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert!(err.to_string().contains("NO_PROXY"), "{err}");
    let client = build(".test").unwrap();
    assert!(approved(&client).await);
}
