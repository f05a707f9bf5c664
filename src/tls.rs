//! The classification of TLS failures into [`TlsFailure`]: a ground-floor
//! module the error type reads (the trust and identity options and the
//! `rustls::ClientConfig` built from them are the one-attempt service's:
//! `check/tls.rs`).

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
