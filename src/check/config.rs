//! The validated configuration one `QualityCheck` and its clones share.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;

use crate::error::{Error, RetryAfter};
pub(crate) use crate::redact::Secret;
use crate::redact::{Redactor, ERROR_BODY_READ};

/// The path of the check endpoint below the coordinator's base URL.
pub(crate) const CHECK_PATH: &str = "/api/quality/check";
/// The path of the coordinator's health endpoint below its base URL.
pub(crate) const HEALTH_PATH: &str = "/health";

/// Everything a call needs, validated once at build time.
pub(crate) struct Config {
    pub(crate) base: Uri,
    pub(crate) check_uri: Uri,
    pub(crate) health_uri: Uri,
    /// Headers sent on every call; secret ones are marked sensitive.
    pub(crate) headers: HeaderMap,
    pub(crate) body_limit: usize,
    pub(crate) health_timeout: Duration,
    /// The header carrying each call's id; `None` sends none.
    pub(crate) request_id_header: Option<HeaderName>,
    /// Every secret value (bearer token, API key, secret headers), scrubbed
    /// from any error body the coordinator echoes them in.
    pub(crate) secrets: Redactor,
}

impl Config {
    /// The error for a non-success answer: its status, the start of its
    /// body with every secret removed, and its `Retry-After`.
    ///
    /// A body of [`ERROR_BODY_READ`] bytes or more is taken to have been cut
    /// by the read, so a secret half-sent at its end is removed too.
    pub(crate) fn status_error(
        &self,
        status: http::StatusCode,
        body: &[u8],
        retry_after: Option<RetryAfter>,
    ) -> Error {
        self.status_error_using(&self.secrets, status, body, retry_after)
    }

    /// [`status_error`](Self::status_error) with another redactor: the
    /// configured secrets and those of one call's own headers.
    pub(crate) fn status_error_using(
        &self,
        secrets: &Redactor,
        status: http::StatusCode,
        body: &[u8],
        retry_after: Option<RetryAfter>,
    ) -> Error {
        let truncated = body.len() >= ERROR_BODY_READ;
        Error::http_status(status, secrets.snippet(body, truncated), retry_after)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header names only: values may carry credentials.
        f.debug_struct("Config")
            .field("base_url", &self.base)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

/// Validates a coordinator base URL and derives the endpoint URIs from it.
///
/// Accepts `http://host[:port][/prefix][/]` (and `https://…` with the
/// `rustls` feature); refuses other schemes, user info, a query or a
/// fragment, with a configuration error that says why.
pub(crate) fn endpoints(base: &str) -> Result<(Uri, Uri, Uri), Error> {
    // Errors name the URL without its query, fragment or user info: that is
    // where tokens end up.
    let shown = shown(base);
    let bad = |why: &str| Error::config(format!("coordinator URL {shown:?} {why}"));
    // `Uri` drops a fragment silently; a URL with one is a mistake to report.
    if base.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    let uri: Uri = base.trim().parse().map_err(|e| {
        Error::config_with(format!("coordinator URL {shown:?} is not a valid URL"), e)
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if cfg!(feature = "rustls") => {}
        Some("https") => {
            return Err(bad(
                "needs the `rustls` feature of tower-quality-gate for https",
            ))
        }
        Some(_) => return Err(bad("has a scheme other than http")),
        None => return Err(bad("has no scheme; expected http://host:port")),
    }
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a.clone(),
        _ => return Err(bad("has no host")),
    };
    if authority.as_str().contains('@') {
        return Err(Error::config(
            "coordinator URL must not carry credentials; use bearer_token or api_key",
        ));
    }
    // `Uri` keeps a port it cannot read as a number (`:99999`), and the
    // client would then use port 80.
    let port = &authority.as_str()[authority.host().len()..];
    if port.len() > 1 && authority.port_u16().is_none() {
        return Err(bad("has a port outside 1 to 65535"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let scheme = uri.scheme_str().unwrap_or("http");
    let prefix = uri.path().trim_end_matches('/');
    let join = |path: &str| -> Result<Uri, Error> {
        format!("{scheme}://{authority}{prefix}{path}")
            .parse()
            .map_err(|e| Error::config_with(format!("coordinator URL {shown:?}"), e))
    };
    Ok((uri.clone(), join(CHECK_PATH)?, join(HEALTH_PATH)?))
}

/// A URL as it may be shown: without query, fragment or user info.
///
/// Everything up to the last `@` is user info to hide, wherever `?`, `#` or
/// `/` fall: a password may hold any of them (`http://admin:p#x@host`), and
/// which part a parser would call user info does not matter here.
pub(crate) fn shown(base: &str) -> String {
    let base = base.trim();
    let shown = match base.rfind('@') {
        Some(at) => {
            // A scheme is shown only if it is one (letters, digits, `+-.`),
            // so nothing of the user info passes for it.
            let scheme = base[..at]
                .find("://")
                .map(|i| &base[..i])
                .filter(|s| {
                    s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                })
                .map_or(String::new(), |s| format!("{s}://"));
            format!("{scheme}[redacted]{}", &base[at..])
        }
        None => base.to_owned(),
    };
    let end = shown.find(['?', '#']).unwrap_or(shown.len());
    shown[..end].to_owned()
}

/// Parses a header name and value given by the user, refusing bad ones
/// without echoing the value.
pub(crate) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| Error::config_with(format!("{name:?} is not a valid header name"), e))?;
    let value = HeaderValue::from_str(value).map_err(|e| {
        Error::config_with(
            format!("the value of header {name} is not a valid header value"),
            e,
        )
    })?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_prefixes_and_trailing_slashes() {
        for (base, want) in [
            (
                "http://127.0.0.1:8000",
                "http://127.0.0.1:8000/api/quality/check",
            ),
            (
                "http://127.0.0.1:8000/",
                "http://127.0.0.1:8000/api/quality/check",
            ),
            (
                "http://h:1/coordinator",
                "http://h:1/coordinator/api/quality/check",
            ),
            (
                "http://h:1/coordinator/",
                "http://h:1/coordinator/api/quality/check",
            ),
            ("http://h:1/a/b//", "http://h:1/a/b/api/quality/check"),
            (" http://h ", "http://h/api/quality/check"),
        ] {
            let (_, check, health) = endpoints(base).unwrap();
            assert_eq!(check.to_string(), want, "{base}");
            assert!(health.to_string().ends_with("/health"));
        }
    }

    #[test]
    fn refuses_bad_urls_with_config_errors() {
        for base in [
            "",
            "127.0.0.1:8000",
            "ftp://h/",
            #[cfg(not(feature = "rustls"))]
            "https://h/",
            "http://",
            "http://u:p@h/",
            "http://u:p#x@h/",
            "http://u:p?x@h/",
            "http://u:p/x@h/",
            "u:p@h",
            "u:p@h://x",
            "u:p://x@h",
            "http://u:p@h:99999/",
            "http://h/?a=1",
            "http://h/#frag",
            "http://h o/",
            "not a url",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0x50/",
        ] {
            let err = endpoints(base).unwrap_err();
            assert!(err.is_config(), "{base:?}: {err:?}");
            assert!(!format!("{err} {err:?}").contains("u:p"), "{err}");
            assert!(!err.to_string().contains("a=1"), "{err}");
        }
    }

    #[test]
    fn bad_header_values_are_config_errors_without_the_value() {
        let err = header("x-api-key", "sec\r\nret").unwrap_err();
        assert!(err.is_config());
        assert!(!format!("{err} {err:?}").contains("sec"));
        assert!(header("bad name", "v").unwrap_err().is_config());
    }
}
