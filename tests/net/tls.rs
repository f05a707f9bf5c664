//! A private CA and a TLS coordinator.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A private certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], with its key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a verifier picks a candidate issuer by name.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("tower-quality-gate test CA {n}"),
        );
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for these names, valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        self.issue(CertificateParams::new(names).unwrap())
    }

    /// A certificate for `localhost` that expired in 2021.
    pub fn expired_leaf(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der()).unwrap();
        roots
    }
}

/// The TLS configuration of a coordinator presenting `leaf`, offering
/// `alpn`, and requiring a client certificate issued by `client_ca` if set.
pub fn server_config(leaf: &Leaf, alpn: &[&[u8]], client_ca: Option<&Ca>) -> rustls::ServerConfig {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let mut config = builder
        .with_single_cert(vec![leaf.cert.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A TLS coordinator on 127.0.0.1 that approves every check.
pub struct TlsCoordinator {
    /// `https://localhost:{port}`.
    pub url: String,
    pub port: u16,
    /// The HTTP version of every request served, in order.
    pub versions: Arc<Mutex<Vec<http::Version>>>,
    /// Handshakes that failed on the server's side.
    pub failed_handshakes: Arc<AtomicUsize>,
}

impl TlsCoordinator {
    pub async fn start(config: rustls::ServerConfig) -> TlsCoordinator {
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let versions = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (seen, failed) = (versions.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, failed) = (acceptor.clone(), seen.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(req.version());
                        async move { Ok::<_, Infallible>(approval(req.uri().path())) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsCoordinator {
            url: format!("https://localhost:{port}"),
            port,
            versions,
            failed_handshakes,
        }
    }

    pub fn versions(&self) -> Vec<http::Version> {
        self.versions.lock().unwrap().clone()
    }

    /// Handshakes that failed on the server's side, once `want` have (the
    /// server may see a failure a moment after the client does), or after 2 s.
    pub async fn failed_handshakes(&self, want: usize) -> usize {
        for _ in 0..400 {
            let n = self.failed_handshakes.load(Ordering::SeqCst);
            if n >= want {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.failed_handshakes.load(Ordering::SeqCst)
    }
}

/// The coordinator's answer to `path`: an approval from gate `net`, or a
/// healthy status.
pub fn approval(path: &str) -> http::Response<Full<Bytes>> {
    let body: &'static str = if path == "/api/quality/check" {
        r#"{"approved":true,"gate":"net"}"#
    } else {
        r#"{"status":"ok"}"#
    };
    let mut response = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
