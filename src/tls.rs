//! TLS to the coordinator (feature `rustls`): the trust and identity
//! options, the `rustls::ClientConfig` built from them, and the
//! classification of TLS failures into [`TlsFailure`].

use std::error::Error as StdError;
use std::fmt;

/// What went wrong in a TLS handshake with the coordinator, from
/// [`Error::tls_failure`](crate::Error::tls_failure).
///
/// None of these is retried: a certificate the client refuses, or a client
/// certificate the coordinator refuses, stays refused until someone changes
/// the configuration.
///
/// New kinds may be added, so a `match` needs a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The coordinator's certificate is not signed by a trusted root: add
    /// the private CA with `add_root_certificate_pem`.
    UnknownIssuer,
    /// The coordinator's certificate is not valid for the host name in the
    /// coordinator URL.
    NameMismatch,
    /// The coordinator's certificate has expired, or is not valid yet.
    Expired,
    /// The coordinator's certificate is invalid in another way (revoked,
    /// bad signature, wrong purpose, unreadable).
    BadCertificate,
    /// The coordinator refused the client's certificate, or asked for one
    /// and got none (mutual TLS).
    ClientCertificateRefused,
    /// The handshake failed for another reason: no common protocol version
    /// or cipher suite, or a protocol violation.
    Handshake,
}

impl TlsFailure {
    fn describe(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => {
                "the coordinator's certificate is not signed by a trusted root"
            }
            TlsFailure::NameMismatch => {
                "the coordinator's certificate is not valid for its host name"
            }
            TlsFailure::Expired => "the coordinator's certificate has expired or is not yet valid",
            TlsFailure::BadCertificate => "the coordinator's certificate is invalid",
            TlsFailure::ClientCertificateRefused => {
                "the coordinator refused the client certificate (or its absence)"
            }
            TlsFailure::Handshake => "the TLS handshake failed",
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The TLS failure somewhere in an error's source chain.
pub(crate) fn failure(err: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    #[cfg(feature = "rustls")]
    {
        find_rustls(err).map(classify)
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = err;
        None
    }
}

/// Writes `": TLS: {what}"` when the chain holds a TLS failure; the tail of
/// a connect or transport error's message.
pub(crate) fn fmt_failure(
    err: Option<&(dyn StdError + 'static)>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    #[cfg(feature = "rustls")]
    if let Some(rustls) = err.and_then(find_rustls) {
        return write!(f, ": TLS: {} ({rustls})", classify(rustls));
    }
    let _ = (err, f);
    Ok(())
}

/// Finds the `rustls::Error` in a source chain.
///
/// `io::Error::source` skips the error it wraps (it returns *that* error's
/// source), and rustls failures always travel inside `io::Error`s, so
/// those are opened with `get_ref`.
#[cfg(feature = "rustls")]
fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                return find_rustls(inner);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(feature = "rustls")]
fn classify(err: &rustls::Error) -> TlsFailure {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => TlsFailure::UnknownIssuer,
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. } => TlsFailure::Expired,
            _ => TlsFailure::BadCertificate,
        },
        // The coordinator sends these alerts about the client's certificate.
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied,
        ) => TlsFailure::ClientCertificateRefused,
        _ => TlsFailure::Handshake,
    }
}

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

#[cfg(all(test, feature = "rustls"))]
mod tests {
    use std::io;

    use rustls::{AlertDescription, CertificateError};

    use super::*;

    /// As hyper-rustls hands a handshake failure on: tokio-rustls's
    /// `io::Error`, wrapped in another.
    fn wrapped(err: rustls::Error) -> io::Error {
        io::Error::other(io::Error::new(io::ErrorKind::InvalidData, err))
    }

    #[test]
    fn failures_are_found_inside_io_errors_and_classified() {
        for (err, want) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsFailure::UnknownIssuer,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                TlsFailure::NameMismatch,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                TlsFailure::Expired,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Revoked),
                TlsFailure::BadCertificate,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                TlsFailure::ClientCertificateRefused,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
                TlsFailure::Handshake,
            ),
        ] {
            assert_eq!(failure(&wrapped(err)), Some(want));
        }
        assert_eq!(failure(&io::Error::other("refused")), None);
    }
}
