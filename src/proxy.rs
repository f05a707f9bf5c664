//! [`Proxy`]: whether and how calls go through an HTTP proxy.

use std::fmt;

use http::header::HeaderValue;
use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;

use crate::error::Error;
use crate::redact::Secret;

/// Which HTTP proxy carries the calls to the coordinator.
///
/// `http://` coordinators are reached through the proxy as a forward proxy
/// (the request line carries the absolute URL); `https://` coordinators
/// through a `CONNECT` tunnel, so the proxy sees only the host and port and
/// TLS runs end to end. Credentials in the proxy URL
/// (`http://user:pass@proxy:3128`) are sent as `Proxy-Authorization: Basic`
/// and are never printed by `Debug`, errors or logs.
///
/// Only `http://` proxies are supported (not `https://` or SOCKS proxies);
/// another scheme is a configuration error at build time.
///
/// The default of a builder is [`Proxy::none`]: a library embedded in an
/// orchestrator should not change its routes because of a variable meant
/// for other tools. [`ClientBuilder::from_env`](crate::ClientBuilder::from_env)
/// uses [`Proxy::from_env`].
///
/// ```
/// use tower_quality_gate::{Proxy, QualityCheck};
///
/// let check = QualityCheck::builder("http://coordinator.internal:8000")
///     .proxy(Proxy::url("http://ops:s3cret@proxy.internal:3128").no_proxy("localhost, .svc"))
///     .build()
///     .unwrap();
/// assert!(!format!("{check:?}").contains("s3cret"));
///
/// let err = QualityCheck::builder("http://coordinator.internal:8000")
///     .proxy(Proxy::url("socks5://proxy.internal:1080"))
///     .build()
///     .unwrap_err();
/// assert!(err.is_config());
/// ```
#[derive(Clone, Default)]
pub struct Proxy {
    /// `None` when no variable or URL names a proxy.
    vars: Option<Vars>,
}

/// The proxy settings, in the shape of the environment variables.
#[derive(Clone, Default)]
struct Vars {
    /// `(variable name, value)`; the value may carry credentials.
    all: Option<(&'static str, Secret)>,
    http: Option<(&'static str, Secret)>,
    https: Option<(&'static str, Secret)>,
    no: String,
    /// Loopback hosts bypass the proxy (environment proxies only).
    loopback_direct: bool,
}

// ===== impl Proxy =====

impl Proxy {
    /// No proxy: connect to the coordinator directly (the default).
    pub fn none() -> Proxy {
        Proxy::default()
    }

    /// One proxy for every coordinator URL, `http` and `https`.
    pub fn url(url: impl Into<String>) -> Proxy {
        Proxy {
            vars: Some(Vars {
                all: Some(("the proxy URL", Secret(url.into()))),
                ..Vars::default()
            }),
        }
    }

    /// Hosts reached directly, not through the proxy: a comma-separated
    /// list of host names (a name also matches its subdomains; a leading
    /// dot is optional), IP addresses, CIDR ranges, or `*` for all, as
    /// curl's `NO_PROXY`. It matches hosts only, never `host:port`. It
    /// replaces any `NO_PROXY` read by [`from_vars`](Self::from_vars), and
    /// does nothing on [`Proxy::none`].
    pub fn no_proxy(mut self, hosts: impl Into<String>) -> Proxy {
        if let Some(vars) = &mut self.vars {
            vars.no = hosts.into();
        }
        self
    }

    /// The proxies named by this process's environment, read now: see
    /// [`Proxy::from_vars`].
    pub fn from_env() -> Proxy {
        Proxy::from_vars(|name| std::env::var(name).ok())
    }

    /// The proxies named by `HTTP_PROXY` (for `http` coordinators),
    /// `HTTPS_PROXY` (for `https`), `ALL_PROXY` (for both, when the other is
    /// unset) and `NO_PROXY`, each upper case first, then lower case, as
    /// curl reads them; `lookup` returns a variable's value. Empty values
    /// count as unset. As in curl, the variables are ignored under CGI
    /// (`REQUEST_METHOD` set), where `HTTP_PROXY` is a request header an
    /// attacker chooses.
    ///
    /// Loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) are always reached
    /// directly, as Go's `net/http` does: a proxy set for the whole machine
    /// cannot reach this host's loopback, and the default coordinator is
    /// `http://127.0.0.1:8000`. Use [`Proxy::url`] to send loopback calls
    /// through a proxy anyway.
    ///
    /// ```
    /// use tower_quality_gate::Proxy;
    ///
    /// let proxy = Proxy::from_vars(|name| match name {
    ///     "HTTPS_PROXY" => Some("http://proxy.internal:3128".to_owned()),
    ///     "no_proxy" => Some("localhost".to_owned()),
    ///     _ => None,
    /// });
    /// assert!(format!("{proxy:?}").contains("proxy.internal:3128"));
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Proxy {
        if lookup("REQUEST_METHOD").is_some() {
            return Proxy::none();
        }
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|name| Some((name, lookup(name).filter(|v| !v.trim().is_empty())?)))
                .map(|(name, value)| (name, Secret(value)))
        };
        let vars = Vars {
            all: first(["ALL_PROXY", "all_proxy"]),
            http: first(["HTTP_PROXY", "http_proxy"]),
            https: first(["HTTPS_PROXY", "https_proxy"]),
            no: first(["NO_PROXY", "no_proxy"])
                .map(|(_, v)| v.0)
                .unwrap_or_default(),
            loopback_direct: true,
        };
        let any = vars.all.is_some() || vars.http.is_some() || vars.https.is_some();
        Proxy {
            vars: any.then_some(vars),
        }
    }

    /// Checks every proxy URL and builds the matcher; `None` for no proxy.
    pub(crate) fn matcher(&self) -> Result<Option<Matcher>, Error> {
        let Some(vars) = &self.vars else {
            return Ok(None);
        };
        let url = |slot: &Option<(&'static str, Secret)>| -> Result<String, Error> {
            match slot {
                Some((var, Secret(url))) => check_url(var, url).map(|()| url.clone()),
                None => Ok(String::new()),
            }
        };
        let builder = Matcher::builder()
            .all(url(&vars.all)?)
            .http(url(&vars.http)?)
            .https(url(&vars.https)?)
            .no(if vars.loopback_direct {
                format!("{},{LOOPBACK}", vars.no)
            } else {
                vars.no.clone()
            });
        Ok(Some(builder.build()))
    }
}

/// The hosts environment proxies never apply to.
const LOOPBACK: &str = "localhost,127.0.0.0/8,::1";

/// The `Proxy-Authorization` value to send with each request when `uri`
/// goes through a forward proxy that has credentials; `https` URIs go
/// through a tunnel, which carries them in its `CONNECT` instead.
pub(crate) fn forward_auth(matcher: Option<&Matcher>, uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let mut auth = matcher?.intercept(uri)?.basic_auth()?.clone();
    auth.set_sensitive(true);
    Some(auth)
}

/// Refuses a proxy URL that hyper-util would ignore or that this crate
/// cannot speak to, naming the variable but never the URL's credentials.
fn check_url(var: &str, url: &str) -> Result<(), Error> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| Error::config(format!("{var} is not a valid proxy URL")))?;
    match uri.scheme_str() {
        None | Some("http") => {}
        Some("https") => {
            return Err(Error::config(format!(
                "{var}: https:// proxies are not supported; use http:// (https coordinators are still tunnelled end to end)"
            )))
        }
        Some(other) => {
            return Err(Error::config(format!(
                "{var}: {other}:// proxies are not supported; use an http:// proxy"
            )))
        }
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => Ok(()),
        _ => Err(Error::config(format!("{var} names no proxy host"))),
    }
}

/// A proxy URL as it may be shown: user info replaced.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}[redacted]{}", &url[..scheme + 3], &url[at..])
        }
        (None, Some(at)) => format!("[redacted]{}", &url[at..]),
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(vars) = &self.vars else {
            return f.write_str("Proxy(none)");
        };
        let mut d = f.debug_struct("Proxy");
        for (label, slot) in [
            ("all", &vars.all),
            ("http", &vars.http),
            ("https", &vars.https),
        ] {
            if let Some((_, Secret(url))) = slot {
                d.field(label, &redacted(url));
            }
        }
        if !vars.no.is_empty() {
            d.field("no_proxy", &vars.no);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_never_show_credentials() {
        for url in [
            "http://u:pw@proxy:3128",
            "u:pw@proxy:3128",
            "https://u:pw@proxy:3128",
            "socks5://u:pw@proxy:1080",
            "http://u:pw@",
        ] {
            let proxy = Proxy::url(url);
            assert!(!format!("{proxy:?}").contains("pw"), "{proxy:?}");
            if let Err(err) = proxy.matcher() {
                assert!(err.is_config());
                assert!(!format!("{err} {err:?}").contains("pw"), "{err:?}");
            }
        }
    }

    #[test]
    fn env_variables_upper_case_first_and_cgi_ignored() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let m = Proxy::from_vars(vars(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:1"),
            ("no_proxy", "skip.example"),
        ]))
        .matcher()
        .unwrap()
        .unwrap();
        let hit = m.intercept(&Uri::from_static("http://c.example/")).unwrap();
        for loopback in [
            "http://localhost:8000/",
            "http://127.0.0.1:8000/",
            "http://[::1]:8000/",
        ] {
            assert!(
                m.intercept(&Uri::from_static(loopback)).is_none(),
                "{loopback}"
            );
        }
        assert_eq!(hit.uri().host(), Some("upper"));
        assert!(m
            .intercept(&Uri::from_static("https://c.example/"))
            .is_none());
        assert!(m
            .intercept(&Uri::from_static("http://a.skip.example/"))
            .is_none());

        let cgi = Proxy::from_vars(vars(&[
            ("HTTP_PROXY", "http://evil:1"),
            ("REQUEST_METHOD", "GET"),
        ]));
        assert!(cgi.matcher().unwrap().is_none());
        assert!(Proxy::from_vars(vars(&[("HTTP_PROXY", " ")]))
            .matcher()
            .unwrap()
            .is_none());
    }

    #[test]
    fn forward_auth_only_for_http_through_a_proxy_with_credentials() {
        let m = Proxy::url("http://Aladdin:opensesame@proxy:3128")
            .no_proxy("direct.example")
            .matcher()
            .unwrap();
        let auth = forward_auth(m.as_ref(), &Uri::from_static("http://c.example/")).unwrap();
        assert_eq!(auth, "Basic QWxhZGRpbjpvcGVuc2VzYW1l");
        assert!(auth.is_sensitive());
        assert!(forward_auth(m.as_ref(), &Uri::from_static("https://c.example/")).is_none());
        assert!(forward_auth(m.as_ref(), &Uri::from_static("http://direct.example/")).is_none());
        let anonymous = Proxy::url("http://proxy:3128").matcher().unwrap();
        assert!(forward_auth(anonymous.as_ref(), &Uri::from_static("http://c/")).is_none());
    }
}
