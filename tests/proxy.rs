//! Calls through HTTP proxies: a forward proxy for `http://` coordinators,
//! `CONNECT` tunnels for `https://` ones (feature `rustls`), `NO_PROXY`,
//! and proxy failures. The proxy is written in the test and records what it
//! received.
//!
//! Run with `cargo test --features rustls --test proxy`.

mod net;

use tower_quality_gate::testing::TestCoordinator;
use tower_quality_gate::{Proxy, QualityClient, QualityRequest};

use net::{ProxyMode, TestProxy};

/// `ops:s3cret`, as `Proxy-Authorization: Basic` carries it.
const BASIC_OPS: &str = "Basic b3BzOnMzY3JldA==";

fn vars(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let pairs = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect::<Vec<_>>();
    move |name| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

#[tokio::test]
async fn http_goes_through_a_forward_proxy_with_its_credentials() {
    let coordinator = TestCoordinator::start().await;
    let proxy = TestProxy::start(ProxyMode::Serve).await;
    let client = QualityClient::builder(coordinator.url())
        .http(|c| c.proxy(Proxy::url(proxy.url(Some("ops:s3cret")))))
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("s3cret"));

    let verdict = client.check(QualityRequest::new("t", "a")).await.unwrap();
    assert!(verdict.approved);
    let records = proxy.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].request_line,
        format!("POST {}/api/quality/check HTTP/1.1", coordinator.url()),
        "absolute-form request line"
    );
    assert_eq!(records[0].authorization.as_deref(), Some(BASIC_OPS));
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test]
async fn environment_proxies_apply_to_named_hosts_but_not_no_proxy_or_loopback() {
    let coordinator = TestCoordinator::start().await;
    let proxy = TestProxy::start(ProxyMode::Serve).await;
    let port = coordinator.addr().port();
    let named = format!("http://coordinator.test:{port}");
    let call = |url: String, env: Vec<(&'static str, String)>| async move {
        let client = QualityClient::builder(url)
            .attempts(1)
            .http(|c| {
                c.proxy(Proxy::from_vars(vars(&env)))
                    .connect_timeout(Some(std::time::Duration::from_secs(2)))
            })
            .build()
            .unwrap();
        client.check(QualityRequest::new("t", "a")).await
    };

    // Only the proxy can resolve `coordinator.test`: the lower-case
    // variable routes the call through it.
    call(named.clone(), vec![("http_proxy", proxy.url(None))])
        .await
        .unwrap();
    let records = proxy.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].request_line,
        format!("POST {named}/api/quality/check HTTP/1.1")
    );
    assert_eq!(records[0].authorization, None);

    // Listed in NO_PROXY (either case), the host is looked up directly,
    // which fails, and the proxy sees nothing.
    for no_proxy in ["NO_PROXY", "no_proxy"] {
        let env = vec![
            ("HTTP_PROXY", proxy.url(None)),
            (no_proxy, "other.example, .test".to_owned()),
        ];
        let err = call(named.clone(), env).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }
    // Loopback is always direct with environment proxies.
    call(coordinator.url(), vec![("HTTP_PROXY", proxy.url(None))])
        .await
        .unwrap();
    assert_eq!(proxy.records().len(), 1);
    assert_eq!(coordinator.hits(), 2);
}

#[tokio::test]
async fn an_explicit_proxy_skips_its_no_proxy_hosts() {
    let coordinator = TestCoordinator::start().await;
    let proxy = TestProxy::start(ProxyMode::Serve).await;
    let client = QualityClient::builder(coordinator.url())
        .http(|c| c.proxy(Proxy::url(proxy.url(None)).no_proxy("localhost, 127.0.0.0/8")))
        .build()
        .unwrap();
    client.check(QualityRequest::new("t", "a")).await.unwrap();
    assert!(proxy.records().is_empty(), "{:?}", proxy.records());
    assert_eq!(coordinator.hits(), 1);
}

#[tokio::test]
async fn a_proxy_that_is_down_is_a_connect_error() {
    let proxy_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let coordinator = TestCoordinator::start().await;
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .http(|c| {
            c.proxy(Proxy::url(format!(
                "http://ops:s3cret@127.0.0.1:{proxy_port}"
            )))
        })
        .build()
        .unwrap();
    let err = client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
    assert_eq!(coordinator.hits(), 0);
}

#[tokio::test]
async fn no_proxy_star_exempts_an_ip_literal_coordinator() {
    let coordinator = TestCoordinator::start().await;
    let proxy = TestProxy::start(ProxyMode::Serve).await;
    for list in ["*", " * ", "other.example, *"] {
        let client = QualityClient::builder(coordinator.url())
            .http(|c| c.proxy(Proxy::url(proxy.url(Some("ops:s3cret"))).no_proxy(list)))
            .build()
            .unwrap();
        client.check(QualityRequest::new("t", "a")).await.unwrap();
    }
    assert!(proxy.records().is_empty(), "{:?}", proxy.records());
    assert_eq!(coordinator.hits(), 3);
}

#[tokio::test]
async fn a_proxy_url_with_surrounding_whitespace_is_used_trimmed() {
    let coordinator = TestCoordinator::start().await;
    let proxy = TestProxy::start(ProxyMode::Serve).await;
    let named = format!("http://coordinator.test:{}", coordinator.addr().port());
    // As a Kubernetes secret mounted into the environment leaves it.
    for padded in [
        format!("{}\n", proxy.url(Some("ops:s3cret"))),
        format!(" {}\r\n", proxy.url(Some("ops:s3cret"))),
    ] {
        let client = QualityClient::builder(named.clone())
            .attempts(1)
            .http(|c| c.proxy(Proxy::from_vars(vars(&[("HTTP_PROXY", padded)]))))
            .build()
            .unwrap();
        // Only the proxy resolves `coordinator.test`: a direct call fails.
        client.check(QualityRequest::new("t", "a")).await.unwrap();
    }
    let records = proxy.records();
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(record.authorization.as_deref(), Some(BASIC_OPS));
    }
    assert_eq!(coordinator.hits(), 2);
}

#[tokio::test]
async fn bad_proxy_urls_are_config_errors_naming_the_variable() {
    for (name, url) in [
        ("HTTPS_PROXY", "socks5://ops:s3cret@proxy:1080"),
        ("ALL_PROXY", "https://ops:s3cret@proxy:3128"),
        ("HTTP_PROXY", "http://ops:s3cret@"),
    ] {
        let err = QualityClient::builder("http://127.0.0.1:8000")
            .http(|c| c.proxy(Proxy::from_vars(vars(&[(name, url.to_owned())]))))
            .build()
            .unwrap_err();
        assert!(err.is_config(), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }
}

#[cfg(feature = "rustls")]
mod https {
    use std::time::Duration;

    use super::*;
    use net::{server_config, Ca, TlsCoordinator};
    use tower::ServiceExt;
    use tower_quality_gate::{QualityCheck, QualityCheckBuilder};

    fn trusting(url: &str, ca: &Ca, proxy: Proxy) -> QualityCheckBuilder {
        QualityCheck::builder(url)
            .add_root_certificate_pem(ca.pem())
            .builtin_roots(false)
            .proxy(proxy)
    }

    #[tokio::test]
    async fn https_goes_through_a_connect_tunnel() {
        let ca = Ca::new();
        let leaf = ca.leaf(&["coordinator.test"]);
        let coordinator =
            TlsCoordinator::start(server_config(&leaf, &[b"h2", b"http/1.1"], None)).await;
        let proxy = TestProxy::start(ProxyMode::Serve).await;
        // Only the proxy resolves the name; TLS checks it end to end.
        let url = format!("https://coordinator.test:{}", coordinator.port);

        let env = vars(&[("HTTPS_PROXY", proxy.url(Some("ops:s3cret")))]);
        let check = trusting(&url, &ca, Proxy::from_vars(env))
            .http2(true)
            .build()
            .unwrap();
        for _ in 0..2 {
            let verdict = check
                .clone()
                .oneshot(QualityRequest::new("t", "a"))
                .await
                .unwrap();
            assert_eq!(verdict.gate, "net");
        }
        // One tunnel, kept alive for both calls; TLS ran end to end inside it.
        let records = proxy.records();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(
            records[0].request_line,
            format!("CONNECT coordinator.test:{} HTTP/1.1", coordinator.port)
        );
        assert_eq!(records[0].authorization.as_deref(), Some(BASIC_OPS));
        assert_eq!(coordinator.versions(), [http::Version::HTTP_2; 2]);
    }

    #[tokio::test]
    async fn a_refused_tunnel_is_a_connect_error_without_the_credentials() {
        let ca = Ca::new();
        let proxy = TestProxy::start(ProxyMode::RefuseAuth).await;
        let check = trusting(
            "https://localhost:9",
            &ca,
            Proxy::url(proxy.url(Some("ops:s3cret"))),
        )
        .build()
        .unwrap();
        let err = check
            .oneshot(QualityRequest::new("t", "a"))
            .await
            .unwrap_err();
        assert!(err.is_connect() && !err.is_tls(), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("ProxyAuthRequired"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("b3BzOnMzY3JldA"),
            "{shown}"
        );
        assert_eq!(proxy.records().len(), 1);
    }

    #[tokio::test]
    async fn a_silent_proxy_is_bounded_by_the_connect_timeout() {
        let ca = Ca::new();
        let proxy = TestProxy::start(ProxyMode::Silent).await;
        let connect_timeout = Duration::from_millis(150);
        let check = trusting("https://localhost:9", &ca, Proxy::url(proxy.url(None)))
            .connect_timeout(Some(connect_timeout))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            check.oneshot(QualityRequest::new("t", "a")),
        )
        .await
        .expect("the call hung past the connect timeout")
        .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let took = started.elapsed();
        assert!(
            took >= connect_timeout && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(
            proxy.records()[0].request_line,
            "CONNECT localhost:9 HTTP/1.1"
        );
    }
}
