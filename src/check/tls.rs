//! TLS to the coordinator (feature `rustls`): the trust and identity
//! options of a builder and the `rustls::ClientConfig` built from them.
//! What a failed handshake means is classified below, in `crate::tls`.

use std::fmt;

/// The TLS options of a builder; parsed and checked at `build()`.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// Extra trusted roots, DER-encoded.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) roots: Vec<Vec<u8>>,
    /// Extra trusted roots, PEM bundles (every certificate in each).
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) pem_roots: Vec<Vec<u8>>,
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) no_builtin_roots: bool,
    #[cfg_attr(not(feature = "native-roots"), allow(dead_code))]
    pub(crate) native_roots: bool,
    /// A client certificate chain and its private key, both PEM.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) identity: Option<(Vec<u8>, crate::redact::Secret)>,
    /// A complete configuration that replaces all of the above.
    #[cfg(feature = "rustls")]
    pub(crate) config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Tls");
        d.field("roots", &(self.roots.len() + self.pem_roots.len()))
            .field("builtin_roots", &!self.no_builtin_roots)
            .field("native_roots", &self.native_roots)
            .field("client_identity", &self.identity.is_some());
        #[cfg(feature = "rustls")]
        d.field("custom_config", &self.config.is_some());
        d.finish()
    }
}

/// The ALPN protocols offered: `h2` first when HTTP/2 is allowed, so a
/// coordinator that speaks it picks it, and one that does not answers
/// HTTP/1.1.
#[cfg(feature = "rustls")]
fn alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    }
}

/// Builds the rustls configuration of a client, with the ring provider.
#[cfg(feature = "rustls")]
pub(crate) fn client_config(
    tls: &Tls,
    http2: bool,
) -> Result<std::sync::Arc<rustls::ClientConfig>, crate::Error> {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::Error;

    if let Some(config) = &tls.config {
        let mut config = (**config).clone();
        config.alpn_protocols = alpn(http2);
        return Ok(Arc::new(config));
    }
    let mut roots = rustls::RootCertStore::empty();
    if !tls.no_builtin_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    #[cfg(feature = "native-roots")]
    if tls.native_roots {
        let native = rustls_native_certs::load_native_certs();
        if native.certs.is_empty() {
            return Err(match native.errors.into_iter().next() {
                Some(e) => Error::config_with("could not load the OS certificate store", e),
                None => Error::config("the OS certificate store holds no certificate"),
            });
        }
        // Stores hold a few odd certificates webpki cannot use; skip them as
        // browsers do.
        roots.add_parsable_certificates(native.certs);
    }
    for der in &tls.roots {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| {
            Error::config_with("a root certificate is not a valid DER certificate", e)
        })?;
    }
    for pem in &tls.pem_roots {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::config_with("a PEM root certificate could not be read", e))?;
        if certs.is_empty() {
            return Err(Error::config(
                "a PEM root certificate bundle holds no CERTIFICATE block",
            ));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                Error::config_with("a PEM root certificate is not a valid certificate", e)
            })?;
        }
    }
    if roots.is_empty() {
        return Err(Error::config("no trusted root certificate for https"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::config_with("TLS protocol versions", e))?
    .with_root_certificates(roots);
    let mut config = match &tls.identity {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Error::config_with("the client certificate chain could not be read", e)
                })?;
            if chain.is_empty() {
                return Err(Error::config(
                    "the client certificate chain holds no CERTIFICATE block",
                ));
            }
            // The key's parse error is not kept: it might quote key bytes.
            let key = PrivateKeyDer::from_pem_slice(key.0.as_bytes())
                .map_err(|_| Error::config("the client key is not a PEM private key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::config_with("the client certificate and key cannot be used", e)
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn(http2);
    Ok(Arc::new(config))
}
