//! https to a coordinator, with the `rustls` feature: a TLS server on
//! 127.0.0.1 with a certificate made for the test.
//!
//! Run with `cargo test --features rustls --test tls`.
#![cfg(feature = "rustls")]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use quality_gate::{QualityCheck, QualityClient, QualityRequest};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serves approvals over TLS with a fresh self-signed certificate; returns
/// the URL and the certificate to trust.
async fn tls_coordinator() -> (String, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = if req.uri().path() == "/api/quality/check" {
                        r#"{"approved":true,"gate":"tls"}"#
                    } else {
                        r#"{"status":"ok"}"#
                    };
                    let mut response =
                        http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    response.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}"), cert)
}

#[tokio::test]
async fn https_with_a_trusted_root() {
    let (url, cert) = tls_coordinator().await;
    for http2 in [false, true] {
        let client = QualityClient::builder(url.clone())
            .http(|c| c.add_root_certificate(cert.to_vec()).http2(http2))
            .build()
            .unwrap();
        let verdict = client.check(QualityRequest::new("t", "a")).await.unwrap();
        assert_eq!(verdict.gate, "tls");
        client.health().await.unwrap();
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connect_error() {
    let (url, _cert) = tls_coordinator().await;
    let check = QualityCheck::new(url).unwrap();
    let err = tower::ServiceExt::oneshot(check, QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn bad_roots_are_config_errors() {
    let err = QualityCheck::builder("https://localhost:1")
        .add_root_certificate(b"not a certificate".to_vec())
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let err = QualityCheck::builder("https://localhost:1")
        .builtin_roots(false)
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

#[tokio::test]
async fn a_discovered_replica_is_verified_against_the_host_name() {
    let (url, cert) = tls_coordinator().await;
    let addr: std::net::SocketAddr = url
        .trim_start_matches("https://localhost:")
        .parse::<u16>()
        .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();
    // The replica is reached at 127.0.0.1, which the certificate does not
    // name: only SNI and verification against "localhost" make this work.
    let resolver = move |_: &str| async move { Ok(vec![addr]) };
    let client = QualityClient::builder("https://localhost")
        .http(|c| c.add_root_certificate(cert.to_vec()))
        .discover_replicas(resolver, None)
        .build()
        .unwrap();
    let verdict = client.check(QualityRequest::new("t", "a")).await.unwrap();
    assert_eq!(verdict.gate, "tls");
}
