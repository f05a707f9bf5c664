//! https to a coordinator, with the `rustls` feature: TLS coordinators on
//! 127.0.0.1 with certificates from a private CA made for the test.
//!
//! Run with `cargo test --features rustls --test tls`.
#![cfg(feature = "rustls")]

mod net;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_quality_gate::{
    Error, QualityCheck, QualityCheckBuilder, QualityClient, QualityRequest, TlsFailure,
};

use net::{server_config, Ca, TlsCoordinator};

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// One check through a bare `QualityCheck` (one attempt, no retries).
async fn check_once(builder: QualityCheckBuilder) -> Result<String, Error> {
    let check = builder.build()?;
    let verdict = check.oneshot(QualityRequest::new("t", "a")).await?;
    Ok(verdict.gate)
}

/// A builder trusting only `ca`, given as PEM.
fn trusting(url: &str, ca: &Ca) -> QualityCheckBuilder {
    QualityCheck::builder(url)
        .add_root_certificate_pem(ca.pem())
        .builtin_roots(false)
}

#[tokio::test]
async fn a_private_ca_given_as_pem_or_der() {
    let ca = Ca::new();
    let coordinator =
        TlsCoordinator::start(server_config(&ca.leaf(&["localhost"]), H2_H1, None)).await;

    assert_eq!(
        check_once(trusting(&coordinator.url, &ca)).await.unwrap(),
        "net"
    );
    // DER, on top of the Mozilla roots, through the full client.
    let client = QualityClient::builder(coordinator.url.clone())
        .http(|c| c.add_root_certificate(ca.der().to_vec()))
        .build()
        .unwrap();
    assert_eq!(
        client
            .check(QualityRequest::new("t", "a"))
            .await
            .unwrap()
            .gate,
        "net"
    );
    client.health().await.unwrap();
    assert_eq!(coordinator.versions().len(), 3);
    assert_eq!(coordinator.failed_handshakes(0).await, 0);
}

#[tokio::test]
async fn an_unknown_issuer_is_a_tls_error_that_is_not_retried() {
    let ca = Ca::new();
    let coordinator =
        TlsCoordinator::start(server_config(&ca.leaf(&["localhost"]), H2_H1, None)).await;

    // Mozilla roots only: the private CA is unknown.
    let client = QualityClient::builder(coordinator.url.clone())
        .build()
        .unwrap();
    let err = client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_connect() && err.is_tls(), "{err:?}");
    assert_eq!(err.tls_failure(), Some(TlsFailure::UnknownIssuer));
    assert!(!err.is_retryable());
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(coordinator.failed_handshakes(1).await, 1);
    let shown = err.to_string();
    assert!(shown.contains("not signed by a trusted root"), "{shown}");
}

#[tokio::test]
async fn a_name_mismatch_and_an_expired_certificate_are_tls_errors() {
    let ca = Ca::new();
    let wrong_name =
        TlsCoordinator::start(server_config(&ca.leaf(&["other.example"]), H2_H1, None)).await;
    let err = check_once(trusting(&wrong_name.url, &ca))
        .await
        .unwrap_err();
    assert_eq!(err.tls_failure(), Some(TlsFailure::NameMismatch), "{err:?}");
    assert!(
        err.to_string().contains("not valid for its host name"),
        "{err}"
    );

    let expired = TlsCoordinator::start(server_config(&ca.expired_leaf(), H2_H1, None)).await;
    let err = check_once(trusting(&expired.url, &ca)).await.unwrap_err();
    assert_eq!(err.tls_failure(), Some(TlsFailure::Expired), "{err:?}");
    assert!(err.is_connect() && !err.is_retryable());
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_its_certificate() {
    let (server_ca, client_ca) = (Ca::new(), Ca::new());
    let coordinator = TlsCoordinator::start(server_config(
        &server_ca.leaf(&["localhost"]),
        H2_H1,
        Some(&client_ca),
    ))
    .await;

    let err = check_once(trusting(&coordinator.url, &server_ca))
        .await
        .unwrap_err();
    assert!(err.is_tls(), "{err:?}");
    assert_eq!(
        err.tls_failure(),
        Some(TlsFailure::ClientCertificateRefused)
    );
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("refused the client certificate"),
        "{err}"
    );

    // A certificate from another CA is refused too.
    let stranger = server_ca.leaf(&["agent-7"]);
    let err = check_once(
        trusting(&coordinator.url, &server_ca)
            .client_identity_pem(&stranger.cert_pem, &stranger.key_pem),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.tls_failure(),
        Some(TlsFailure::ClientCertificateRefused),
        "{err:?}"
    );

    let agent = client_ca.leaf(&["agent-7"]);
    let builder =
        trusting(&coordinator.url, &server_ca).client_identity_pem(&agent.cert_pem, &agent.key_pem);
    assert!(!format!("{builder:?}").contains("PRIVATE KEY"));
    assert_eq!(check_once(builder).await.unwrap(), "net");
    assert_eq!(coordinator.versions().len(), 1);
    assert_eq!(coordinator.failed_handshakes(2).await, 2);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"]);
    let both = TlsCoordinator::start(server_config(&leaf, H2_H1, None)).await;
    let h1_only = TlsCoordinator::start(server_config(&leaf, &[b"http/1.1"], None)).await;

    for (coordinator, http2, want) in [
        (&both, true, http::Version::HTTP_2),
        (&both, false, http::Version::HTTP_11),
        (&h1_only, true, http::Version::HTTP_11),
    ] {
        let before = coordinator.versions().len();
        check_once(trusting(&coordinator.url, &ca).http2(http2))
            .await
            .unwrap();
        assert_eq!(coordinator.versions()[before..], [want], "http2({http2})");
    }
}

#[tokio::test]
async fn a_custom_rustls_config_is_used_with_our_alpn() {
    let ca = Ca::new();
    let coordinator =
        TlsCoordinator::start(server_config(&ca.leaf(&["localhost"]), H2_H1, None)).await;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"spdy/3".to_vec()];

    let builder = QualityCheck::builder(coordinator.url.clone())
        .tls_config(config)
        .http2(true);
    assert_eq!(check_once(builder).await.unwrap(), "net");
    assert_eq!(coordinator.versions(), [http::Version::HTTP_2]);
}

#[tokio::test]
async fn the_connect_timeout_covers_the_tls_handshake() {
    // Accepts and never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });

    // A real handshake needs real time, so the clock runs; the bound is short.
    let connect_timeout = Duration::from_millis(200);
    let check = QualityCheck::builder(format!("https://localhost:{port}"))
        .connect_timeout(Some(connect_timeout))
        .build()
        .unwrap();
    let started = Instant::now();
    // A bare check has no attempt timeout: without the connect timeout
    // around the handshake it would wait here forever.
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        check.oneshot(QualityRequest::new("t", "a")),
    )
    .await
    .expect("the call hung past the connect timeout")
    .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_connect() && !err.is_tls(), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        took >= connect_timeout && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_tls_options_are_config_errors() {
    let url = "https://localhost:1";
    let leaf = Ca::new().leaf(&["agent"]);
    for (why, builder) in [
        (
            "DER garbage",
            QualityCheck::builder(url).add_root_certificate(b"not a certificate".to_vec()),
        ),
        (
            "PEM without a certificate",
            QualityCheck::builder(url).add_root_certificate_pem("hello"),
        ),
        ("no roots", QualityCheck::builder(url).builtin_roots(false)),
        (
            "key without PEM",
            QualityCheck::builder(url).client_identity_pem(&leaf.cert_pem, "s3cret-key"),
        ),
        (
            "no client certificate",
            QualityCheck::builder(url).client_identity_pem("", &leaf.key_pem),
        ),
    ] {
        let err = builder.build().unwrap_err();
        assert!(err.is_config(), "{why}: {err:?}");
        assert!(
            !format!("{err} {err:?}").contains("s3cret"),
            "{why}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_discovered_replica_is_verified_against_the_host_name() {
    let ca = Ca::new();
    let coordinator =
        TlsCoordinator::start(server_config(&ca.leaf(&["localhost"]), H2_H1, None)).await;
    let addr: std::net::SocketAddr = coordinator
        .url
        .trim_start_matches("https://localhost:")
        .parse::<u16>()
        .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();
    // The replica is reached at 127.0.0.1, which the certificate does not
    // name: only SNI and verification against "localhost" make this work.
    let resolver = move |_: &str| async move { Ok(vec![addr]) };
    let client = QualityClient::builder("https://localhost")
        .http(|c| c.add_root_certificate_pem(ca.pem()))
        .discover_replicas(resolver, None)
        .build()
        .unwrap();
    let verdict = client.check(QualityRequest::new("t", "a")).await.unwrap();
    assert_eq!(verdict.gate, "net");
}
