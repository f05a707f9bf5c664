//! Configuration from environment variables, through
//! `ClientBuilder::from_vars` so no test touches the process environment.
//!
//! Run with `cargo test --features rustls --test env`.

mod net;

use std::collections::HashMap;

use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{ClientBuilder, Error, QualityRequest};

use net::{ProxyMode, TestProxy};

fn from(pairs: &[(&str, &str)]) -> Result<ClientBuilder, Error> {
    let mut vars: HashMap<String, String> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    // COORDINATOR_URL is required (#18): a local one unless the test sets it.
    vars.entry("COORDINATOR_URL".to_owned())
        .or_insert_with(|| "http://127.0.0.1:8000".to_owned());
    ClientBuilder::from_vars(|name| vars.get(name).cloned())
}

#[tokio::test]
async fn every_variable_reaches_the_client() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(503));
    let url = coordinator.url();
    let builder = from(&[
        ("COORDINATOR_URL", &url),
        ("COORDINATOR_TOKEN", "tok-s3cret"),
        ("COORDINATOR_API_KEY", "key-s3cret"),
        ("COORDINATOR_ATTEMPTS", "2"),
        ("COORDINATOR_ATTEMPT_TIMEOUT", "1500ms"),
        ("COORDINATOR_TOTAL_TIMEOUT", "2m"),
        ("COORDINATOR_CONNECT_TIMEOUT", "10s"),
        ("COORDINATOR_CONCURRENCY_LIMIT", "none"),
        ("COORDINATOR_HTTP2", "false"),
        ("NO_PROXY", "127.0.0.1"),
    ])
    .unwrap();
    let shown = format!("{builder:?}");
    for want in [
        "max_attempts: 2",
        "attempt_timeout: 1.5s",
        "total_timeout: 120s",
        "connect_timeout: Some(10s)",
        "concurrency_limit: None",
        "http2: false",
    ] {
        assert!(shown.contains(want), "{want} not in {shown}");
    }
    assert!(!shown.contains("s3cret"), "{shown}");

    let client = builder
        .backoff(tower_quality_gate::retry::JitteredBackoff::new(
            std::time::Duration::from_millis(1),
        ))
        .build()
        .unwrap();
    let err = client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.attempts(), Some(2));
    let seen = coordinator.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["authorization"], "Bearer tok-s3cret");
    assert_eq!(seen[0].headers["x-api-key"], "key-s3cret");
}

#[test]
fn each_invalid_value_is_a_config_error_naming_its_variable() {
    // Each case: the variables set, and the one the error must name.
    #[cfg_attr(not(feature = "rustls"), allow(unused_mut))]
    let mut cases: Vec<(Vec<(&str, String)>, &str)> = [
        ("COORDINATOR_URL", "ftp://u:s3cret@host"),
        ("COORDINATOR_URL", "not a url"),
        ("COORDINATOR_TOKEN", "s3cret\nline"),
        ("COORDINATOR_API_KEY", "s3cret\r\n"),
        ("COORDINATOR_ATTEMPTS", "0"),
        ("COORDINATOR_ATTEMPTS", "three"),
        ("COORDINATOR_ATTEMPT_TIMEOUT", "10"),
        ("COORDINATOR_TOTAL_TIMEOUT", "0s"),
        ("COORDINATOR_CONNECT_TIMEOUT", "1.5s"),
        // Valid as a duration, refused by the builder: named all the same.
        ("COORDINATOR_CONNECT_TIMEOUT", "48h"),
        ("COORDINATOR_CONCURRENCY_LIMIT", "-1"),
        ("COORDINATOR_HTTP2", "maybe"),
        ("COORDINATOR_CA_FILE", "/nonexistent/ca.pem"),
        ("COORDINATOR_CLIENT_CERT_FILE", "/nonexistent/tls.crt"),
    ]
    .into_iter()
    .map(|(name, value)| (vec![(name, value.to_owned())], name))
    .collect();
    #[cfg(feature = "rustls")]
    let _files = {
        // Files that exist but are not what the variable needs.
        let agent = net::Ca::new().leaf(&["agent-7"]);
        let other = net::Ca::new().leaf(&["agent-8"]);
        let files = TempFiles::new(&[
            ("not.pem", "s3cret, not PEM"),
            ("tls.crt", &agent.cert_pem),
            ("tls.key", &agent.key_pem),
            ("other.key", &other.key_pem),
        ]);
        let (junk, cert, key, other_key) = (
            files.path("not.pem"),
            files.path("tls.crt"),
            files.path("tls.key"),
            files.path("other.key"),
        );
        let pair = |cert: &str, key: &str| {
            vec![
                ("COORDINATOR_CLIENT_CERT_FILE", cert.to_owned()),
                ("COORDINATOR_CLIENT_KEY_FILE", key.to_owned()),
            ]
        };
        cases.extend([
            (
                vec![("COORDINATOR_CA_FILE", junk.clone())],
                "COORDINATOR_CA_FILE",
            ),
            // A key where the CA should be: no CERTIFICATE block.
            (
                vec![("COORDINATOR_CA_FILE", key.clone())],
                "COORDINATOR_CA_FILE",
            ),
            (pair(&cert, &junk), "COORDINATOR_CLIENT_KEY_FILE"),
            (pair(&junk, &key), "COORDINATOR_CLIENT_CERT_FILE"),
            (pair(&key, &key), "COORDINATOR_CLIENT_CERT_FILE"),
            (pair(&cert, &other_key), "COORDINATOR_CLIENT_KEY_FILE"),
        ]);
        files
    };
    for (vars, name) in cases {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (*n, v.as_str())).collect();
        // Refused by `from_vars`, or at the latest by `build()`.
        let err = from(&pairs).and_then(|b| b.build()).unwrap_err();
        assert!(err.is_config(), "{vars:?}: {err:?}");
        assert!(err.to_string().contains(name), "{name}: {err}");
        assert!(
            !format!("{err} {err:?}").contains("s3cret"),
            "{name}: {err:?}"
        );
    }
    // A proxy URL is checked at build time, still by name.
    let err = from(&[("HTTPS_PROXY", "socks5://u:s3cret@proxy:1080")])
        .unwrap()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("HTTPS_PROXY"), "{err}");
    assert!(!format!("{err:?}").contains("s3cret"));
}

/// Files in a fresh directory, removed on drop.
#[cfg(feature = "rustls")]
struct TempFiles(std::path::PathBuf);

#[cfg(feature = "rustls")]
impl TempFiles {
    fn new(files: &[(&str, &str)]) -> TempFiles {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tower-quality-gate-env-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        TempFiles(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

#[cfg(feature = "rustls")]
impl Drop for TempFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn both_variants_need_a_url() {
    let err = ClientBuilder::from_vars_strict(|_| None).unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("COORDINATOR_URL"),
        "{err}"
    );
    // Empty counts as unset.
    let err = ClientBuilder::from_vars_strict(|n| (n == "COORDINATOR_URL").then(String::new))
        .unwrap_err();
    assert!(err.is_config());

    // No fallback to a local coordinator (issue #18): the operator is told.
    let err = ClientBuilder::from_vars(|_| None).unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("COORDINATOR_URL is not set"),
        "{err}"
    );
    let strict = ClientBuilder::from_vars_strict(|n| {
        (n == "COORDINATOR_URL").then(|| "http://c:1".to_owned())
    })
    .unwrap();
    assert!(format!("{strict:?}").contains("http://c:1"));
}

#[tokio::test]
async fn proxy_variables_route_the_calls() {
    let coordinator = TestCoordinator::start().await;
    let proxy = TestProxy::start(ProxyMode::Serve).await;
    // Only the proxy resolves `coordinator.test` (loopback would bypass it).
    let url = format!("http://coordinator.test:{}", coordinator.addr().port());
    let client = from(&[
        ("COORDINATOR_URL", &url),
        ("http_proxy", &proxy.url(Some("ops:s3cret"))),
    ])
    .unwrap()
    .build()
    .unwrap();
    client.check(QualityRequest::new("t", "a")).await.unwrap();
    let records = proxy.records();
    assert_eq!(records.len(), 1);
    assert!(records[0]
        .request_line
        .starts_with("POST http://coordinator.test:"));
    assert!(records[0].authorization.is_some());
    assert!(!format!("{client:?}").contains("s3cret"));
}

#[cfg(feature = "rustls")]
#[tokio::test]
async fn tls_files_configure_a_private_ca_and_a_client_certificate() {
    use net::{server_config, Ca, TlsCoordinator};

    let (server_ca, client_ca) = (Ca::new(), Ca::new());
    let coordinator = TlsCoordinator::start(server_config(
        &server_ca.leaf(&["localhost"]),
        &[b"h2", b"http/1.1"],
        Some(&client_ca),
    ))
    .await;
    let agent = client_ca.leaf(&["agent-7"]);
    let files = TempFiles::new(&[
        ("ca.pem", &server_ca.pem()),
        ("tls.crt", &agent.cert_pem),
        ("tls.key", &agent.key_pem),
    ]);
    let (ca, cert, key) = (
        files.path("ca.pem"),
        files.path("tls.crt"),
        files.path("tls.key"),
    );

    let client = from(&[
        ("COORDINATOR_URL", &coordinator.url),
        ("COORDINATOR_CA_FILE", &ca),
        ("COORDINATOR_CLIENT_CERT_FILE", &cert),
        ("COORDINATOR_CLIENT_KEY_FILE", &key),
        ("COORDINATOR_HTTP2", "true"),
    ])
    .unwrap()
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
    assert_eq!(coordinator.versions(), [http::Version::HTTP_2]);

    let err = from(&[
        ("COORDINATOR_URL", &coordinator.url),
        ("COORDINATOR_CLIENT_KEY_FILE", &key),
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("COORDINATOR_CLIENT_CERT_FILE"),
        "{err}"
    );
}

#[cfg(not(feature = "rustls"))]
#[test]
fn tls_files_need_the_rustls_feature() {
    let err = from(&[("COORDINATOR_CA_FILE", "/etc/ca.pem")]).unwrap_err();
    assert!(err.to_string().contains("rustls"), "{err}");
}
