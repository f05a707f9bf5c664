//! The connector under the pooled client: plain TCP, or TCP with rustls
//! when the `rustls` feature is on.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;

use super::resolve::Resolver;
use crate::error::Error;

/// The connector type of this build.
#[cfg(not(feature = "rustls"))]
pub(crate) type Connector = HttpConnector<Resolver>;

/// The connector type of this build.
#[cfg(feature = "rustls")]
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector<Resolver>>;

/// TLS options of a build with the `rustls` feature.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tls {
    /// Extra trusted roots, DER-encoded, on top of (or instead of) the
    /// built-in Mozilla roots.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) roots: Vec<Vec<u8>>,
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) no_builtin_roots: bool,
}

fn tcp(connect_timeout: Option<Duration>, resolver: Resolver) -> HttpConnector<Resolver> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    http
}

#[cfg(not(feature = "rustls"))]
pub(crate) fn connector(
    connect_timeout: Option<Duration>,
    _http2: bool,
    _tls: &Tls,
    resolver: Resolver,
) -> Result<Connector, Error> {
    Ok(tcp(connect_timeout, resolver))
}

#[cfg(feature = "rustls")]
pub(crate) fn connector(
    connect_timeout: Option<Duration>,
    http2: bool,
    tls: &Tls,
    resolver: Resolver,
) -> Result<Connector, Error> {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    if !tls.no_builtin_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for der in &tls.roots {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| {
            Error::config_with("a root certificate is not a valid DER certificate", e)
        })?;
    }
    if roots.is_empty() {
        return Err(Error::config("no trusted root certificate for https"));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::config_with("TLS protocol versions", e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = tcp(connect_timeout, resolver);
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    Ok(if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}
