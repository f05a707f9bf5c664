//! A [`ClientBuilder`] configured from environment variables alone: the
//! one documented set an operator sets, read by [`ClientBuilder::from_env`].

use std::time::Duration;

use crate::check::{QualityCheck, QualityCheckBuilder};
use crate::client::ClientBuilder;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::QualityClient;

const URL: &str = "COORDINATOR_URL";
const TOKEN: &str = "COORDINATOR_TOKEN";
const API_KEY: &str = "COORDINATOR_API_KEY";
const ATTEMPTS: &str = "COORDINATOR_ATTEMPTS";
const ATTEMPT_TIMEOUT: &str = "COORDINATOR_ATTEMPT_TIMEOUT";
const TOTAL_TIMEOUT: &str = "COORDINATOR_TOTAL_TIMEOUT";
const CONNECT_TIMEOUT: &str = "COORDINATOR_CONNECT_TIMEOUT";
const CONCURRENCY_LIMIT: &str = "COORDINATOR_CONCURRENCY_LIMIT";
const HTTP2: &str = "COORDINATOR_HTTP2";
const CA_FILE: &str = "COORDINATOR_CA_FILE";
const CLIENT_CERT_FILE: &str = "COORDINATOR_CLIENT_CERT_FILE";
const CLIENT_KEY_FILE: &str = "COORDINATOR_CLIENT_KEY_FILE";
const PROXY_VARS: [&str; 9] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

impl ClientBuilder {
    /// A builder configured from this process's environment variables;
    /// unset (or empty) ones keep the builder's defaults:
    ///
    /// | Variable | Sets | Example |
    /// |---|---|---|
    /// | `COORDINATOR_URL` | the coordinator's base URL (required) | `https://coordinator.internal:8443` |
    /// | `COORDINATOR_TOKEN` | `Authorization: Bearer …` | |
    /// | `COORDINATOR_API_KEY` | `X-API-Key: …` | |
    /// | `COORDINATOR_ATTEMPTS` | attempts per call, ≥ 1 | `3` |
    /// | `COORDINATOR_ATTEMPT_TIMEOUT` | per-attempt timeout | `10s` |
    /// | `COORDINATOR_TOTAL_TIMEOUT` | overall deadline of a call | `30s` |
    /// | `COORDINATOR_CONNECT_TIMEOUT` | connect timeout (TCP, tunnel, TLS) | `1500ms` |
    /// | `COORDINATOR_CONCURRENCY_LIMIT` | calls in flight, ≥ 1, or `none` | `64` |
    /// | `COORDINATOR_HTTP2` | allow HTTP/2: `true` or `false` | `true` |
    /// | `COORDINATOR_CA_FILE` | a PEM bundle of extra trusted roots (feature `rustls`) | `/etc/mesh/ca.pem` |
    /// | `COORDINATOR_CLIENT_CERT_FILE`, `COORDINATOR_CLIENT_KEY_FILE` | a PEM client certificate chain and key for mutual TLS, both or neither (feature `rustls`) | `/etc/mesh/tls.crt`, `/etc/mesh/tls.key` |
    /// | `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` | the proxy, upper or lower case: see [`Proxy::from_vars`] | `http://proxy:3128` |
    ///
    /// Durations are a whole number and a unit: `ms`, `s`, `m` or `h`
    /// (`1500ms`, `10s`, `2m`). Each invalid value is a configuration error
    /// ([`Error::is_config`]) that names the variable and never shows a
    /// secret's value.
    ///
    /// Without `COORDINATOR_URL` (or with it empty) this is a configuration
    /// error naming the variable, and there is no default coordinator. An
    /// operator who forgot to set it wants the service to refuse to start,
    /// where the deployment reports it, rather than start and fail every
    /// check (fail closed: every piece of work kept out) against a
    /// `127.0.0.1:8000` that a log nobody reads would have mentioned, or
    /// that another local service answers. For a coordinator on this
    /// machine, set `COORDINATOR_URL=http://127.0.0.1:8000` or call
    /// [`QualityClient::builder`] with the URL.
    pub fn from_env() -> Result<Self, Error> {
        from_lookup(os_var)
    }

    /// The same as [`from_env`](Self::from_env), which no longer falls back
    /// to a local coordinator either; kept so that code written for the
    /// earlier lenient `from_env` still builds.
    pub fn from_env_strict() -> Result<Self, Error> {
        from_lookup(os_var)
    }

    /// Like [`from_env`](Self::from_env), with the variables given by
    /// `lookup` instead of read from the process: for tests, or
    /// configuration held elsewhere.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use tower_quality_gate::ClientBuilder;
    ///
    /// let vars = HashMap::from([
    ///     ("COORDINATOR_URL", "http://coordinator.internal:8000"),
    ///     ("COORDINATOR_TOKEN", "s3cret"),
    ///     ("COORDINATOR_ATTEMPT_TIMEOUT", "1500ms"),
    ///     ("HTTP_PROXY", "http://proxy.internal:3128"),
    /// ]);
    /// let builder = ClientBuilder::from_vars(|name| vars.get(name).map(|v| v.to_string()))?;
    /// let shown = format!("{builder:?}");
    /// assert!(shown.contains("attempt_timeout: 1.5s") && !shown.contains("s3cret"));
    /// let client = builder.build()?;
    /// # let _ = client;
    ///
    /// let err = ClientBuilder::from_vars(|name| match name {
    ///     "COORDINATOR_URL" => Some("http://coordinator.internal:8000".to_owned()),
    ///     "COORDINATOR_ATTEMPTS" => Some("three".to_owned()),
    ///     _ => None,
    /// })
    /// .unwrap_err();
    /// assert!(err.to_string().contains("COORDINATOR_ATTEMPTS"));
    /// # Ok::<(), tower_quality_gate::Error>(())
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        from_lookup(|name| Ok(lookup(name)))
    }

    /// The same as [`from_vars`](Self::from_vars), as
    /// [`from_env_strict`](Self::from_env_strict) is the same as
    /// [`from_env`](Self::from_env).
    pub fn from_vars_strict(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        from_lookup(|name| Ok(lookup(name)))
    }
}

fn os_var(name: &str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        // Not the `VarError` as a source: it would print the value, which
        // may be a credential.
        Err(_) => Err(Error::config(format!("{name} is not valid unicode"))),
    }
}

fn from_lookup(
    lookup: impl Fn(&str) -> Result<Option<String>, Error>,
) -> Result<ClientBuilder, Error> {
    // Empty counts as unset: `FOO=` in a unit file or compose file means "no value".
    let get = |name: &str| -> Result<Option<String>, Error> {
        Ok(lookup(name)?.filter(|v| !v.trim().is_empty()))
    };
    let url = match get(URL)? {
        Some(url) => {
            crate::check::config::endpoints(&url).map_err(|e| {
                Error::config_with(format!("{URL} is not a valid coordinator URL"), e)
            })?;
            url
        }
        None => return Err(Error::config(format!("{URL} is not set: set it to the coordinator's base URL (http://127.0.0.1:8000 for one on this machine)"))),
    };
    let mut b = QualityClient::builder(url);
    if let Some(token) = get(TOKEN)? {
        header_value(TOKEN, &format!("Bearer {token}"))?;
        b = b.bearer_token(token);
    }
    if let Some(key) = get(API_KEY)? {
        header_value(API_KEY, &key)?;
        b = b.api_key(key);
    }
    if let Some(v) = get(ATTEMPTS)? {
        let attempts = positive(ATTEMPTS, &v)?
            .try_into()
            .map_err(|_| Error::config(format!("{ATTEMPTS} is too large")))?;
        client_alone(ATTEMPTS, |b| b.attempts(attempts))?;
        b = b.attempts(attempts);
    }
    if let Some(v) = get(ATTEMPT_TIMEOUT)? {
        let timeout = duration(ATTEMPT_TIMEOUT, &v)?;
        client_alone(ATTEMPT_TIMEOUT, |b| b.attempt_timeout(timeout))?;
        b = b.attempt_timeout(timeout);
    }
    if let Some(v) = get(TOTAL_TIMEOUT)? {
        let timeout = duration(TOTAL_TIMEOUT, &v)?;
        client_alone(TOTAL_TIMEOUT, |b| b.total_timeout(timeout))?;
        b = b.total_timeout(timeout);
    }
    if let Some(v) = get(CONNECT_TIMEOUT)? {
        let timeout = duration(CONNECT_TIMEOUT, &v)?;
        check_alone(CONNECT_TIMEOUT, |c| c.connect_timeout(Some(timeout)))?;
        b = b.http(|c| c.connect_timeout(Some(timeout)));
    }
    if let Some(v) = get(CONCURRENCY_LIMIT)? {
        let limit = if v.trim().eq_ignore_ascii_case("none") {
            None
        } else {
            Some(positive(CONCURRENCY_LIMIT, &v)?)
        };
        client_alone(CONCURRENCY_LIMIT, |b| b.concurrency_limit(limit))?;
        b = b.concurrency_limit(limit);
    }
    if let Some(v) = get(HTTP2)? {
        let enabled = match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(Error::config(format!("{HTTP2} must be true or false"))),
        };
        b = b.http(|c| c.http2(enabled));
    }
    for name in PROXY_VARS {
        lookup(name)?;
    }
    let proxy = Proxy::from_vars(|name| lookup(name).ok().flatten());
    b = b.http(|c| c.proxy(proxy));
    tls_files(b, &get)
}

#[cfg(feature = "rustls")]
fn tls_files(
    mut b: ClientBuilder,
    get: &dyn Fn(&str) -> Result<Option<String>, Error>,
) -> Result<ClientBuilder, Error> {
    if let Some(path) = get(CA_FILE)? {
        let pem = read(CA_FILE, &path)?;
        check_alone(CA_FILE, |c| c.add_root_certificate_pem(&pem))?;
        b = b.http(|c| c.add_root_certificate_pem(pem));
    }
    match (get(CLIENT_CERT_FILE)?, get(CLIENT_KEY_FILE)?) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (read(CLIENT_CERT_FILE, &cert)?, read(CLIENT_KEY_FILE, &key)?);
            // Which file is at fault: the chain is read first, so an error
            // with no key that is not about the key is the chain's.
            let chain_alone = QualityCheck::builder(PROBE_URL)
                .client_identity_pem(&cert, "")
                .build();
            if let Err(e) = chain_alone {
                if !e.to_string().contains("client key") {
                    return Err(named(CLIENT_CERT_FILE, e));
                }
            }
            check_alone(
                &format!("{CLIENT_KEY_FILE} (with {CLIENT_CERT_FILE})"),
                |c| c.client_identity_pem(&cert, &key),
            )?;
            b = b.http(|c| c.client_identity_pem(cert, key));
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::config(format!(
                "{CLIENT_CERT_FILE} and {CLIENT_KEY_FILE} must be set together"
            )))
        }
    }
    Ok(b)
}

#[cfg(not(feature = "rustls"))]
fn tls_files(
    b: ClientBuilder,
    get: &dyn Fn(&str) -> Result<Option<String>, Error>,
) -> Result<ClientBuilder, Error> {
    for name in [CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE] {
        if get(name)?.is_some() {
            return Err(Error::config(format!(
                "{name} needs the `rustls` feature of tower-quality-gate"
            )));
        }
    }
    Ok(b)
}

#[cfg(feature = "rustls")]
fn read(name: &str, path: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::config_with(format!("{name}: cannot read {path:?}"), e))
}

/// A placeholder address for the settings checked alone below: they are
/// validated, never sent.
const PROBE_URL: &str = "http://127.0.0.1:8000";

/// Builds a check with one variable's setting alone, so that what only
/// `build()` refuses is refused now, naming the variable.
fn check_alone(
    name: &str,
    set: impl FnOnce(QualityCheckBuilder) -> QualityCheckBuilder,
) -> Result<(), Error> {
    set(QualityCheck::builder(PROBE_URL))
        .build()
        .map(drop)
        .map_err(|e| named(name, e))
}

/// [`check_alone`] for a client setting.
fn client_alone(name: &str, set: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Result<(), Error> {
    set(QualityClient::builder(PROBE_URL))
        .build()
        .map(drop)
        .map_err(|e| named(name, e))
}

/// A build error of one variable's setting, naming the variable. Build
/// errors never show a secret's value.
fn named(name: &str, error: Error) -> Error {
    let reason = error.to_string();
    let reason = reason
        .strip_prefix("invalid configuration: ")
        .unwrap_or(&reason)
        .to_owned();
    Error::config_with(format!("{name}: {reason}"), error)
}

/// Checks a secret's header value, naming the variable, never the value.
fn header_value(name: &str, value: &str) -> Result<(), Error> {
    http::HeaderValue::from_str(value)
        .map(drop)
        .map_err(|_| Error::config(format!("{name} is not a valid header value")))
}

fn positive(name: &str, value: &str) -> Result<usize, Error> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::config(format!(
            "{name} must be a whole number of at least 1"
        ))),
    }
}

/// Parses `1500ms`, `10s`, `2m` or `1h`.
pub(crate) fn duration(name: &str, value: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::config(format!(
            "{name} must be a duration above zero like 1500ms, 10s or 2m"
        ))
    };
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, want) in [
            ("1500ms", Duration::from_millis(1500)),
            ("10s", Duration::from_secs(10)),
            (" 2m ", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(duration("X", s).unwrap(), want, "{s}");
        }
        for s in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "0s",
            "10 sec",
            "99999999999999999999s",
        ] {
            let err = duration("X_TIMEOUT", s).unwrap_err();
            assert!(
                err.is_config() && err.to_string().contains("X_TIMEOUT"),
                "{s}"
            );
        }
    }
}
