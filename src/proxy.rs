//! [`Proxy`]: whether and how calls go through an HTTP proxy.

use std::fmt;
use std::net::IpAddr;

use http::header::HeaderValue;
use http::Uri;
use hyper_util::client::proxy::matcher::{self, Intercept};

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
/// A proxy URL is used trimmed of surrounding whitespace (a trailing
/// newline from a Kubernetes secret included), exactly as it was checked;
/// whitespace inside it is a configuration error. A URL is never dropped
/// silently: what cannot be used is refused at build time.
///
/// # `NO_PROXY`
///
/// The hosts reached directly follow curl's `NO_PROXY` (curl's
/// `lib/noproxy.c`, `CURLOPT_NOPROXY`): a comma-separated list whose
/// entries are trimmed of whitespace and compared without regard to case.
///
/// | entry | matches | does not match |
/// |---|---|---|
/// | `*` (alone or as an entry) | every host, IP literals included | — |
/// | `example.com` | `example.com`, `www.example.com` | `notexample.com`, `example.com.evil` |
/// | `.example.com` (leading dot) | the same as `example.com`, the domain itself included | |
/// | `*.example.com` | the same as `.example.com` (as Go's `net/http`; curl would never match it) | |
/// | `example.com.` (trailing dot) | the same as `example.com` (host names ignore a trailing dot too) | |
/// | `192.168.1.10`, `::1`, `[::1]` | that address | a host name resolving to it |
/// | `10.0.0.0/8`, `fd00::/8` | every address in the range (`/0`: all of that family) | host names |
/// | `example.com:8080`, `10.0.0.1:8080` | nothing: entries with a port never match, as in curl (a warning is logged) | |
///
/// An IP-literal coordinator matches only IP entries (and `*`), a named
/// coordinator only name entries (and `*`): no name is resolved to
/// decide. Replicas found by
/// [`discover_replicas`](crate::ClientBuilder::discover_replicas) are
/// reached at their own addresses, which a proxy asked for the host name
/// cannot honour: their host must be listed, or `build()` refuses. Environment proxies ([`Proxy::from_vars`]) also always skip
/// `localhost`, `127.0.0.0/8` and `::1`.
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

    /// Hosts reached directly, not through the proxy, as curl's
    /// `NO_PROXY` (see [the table](Proxy#no_proxy)). It replaces any
    /// `NO_PROXY` read by [`from_vars`](Self::from_vars), and does nothing
    /// on [`Proxy::none`].
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
        // What was checked is what is used: the trimmed URL.
        let url = |slot: &Option<(&'static str, Secret)>| -> Result<String, Error> {
            match slot {
                Some((var, Secret(url))) => check_url(var, url),
                None => Ok(String::new()),
            }
        };
        let proxies = matcher::Matcher::builder()
            .all(url(&vars.all)?)
            .http(url(&vars.http)?)
            .https(url(&vars.https)?)
            .build();
        let mut no = NoProxy::parse(&vars.no);
        if vars.loopback_direct {
            no.extend(NoProxy::parse(LOOPBACK));
        }
        Ok(Some(Matcher { proxies, no }))
    }
}

/// Which proxy, if any, carries a call to a given coordinator URL: the
/// proxy URLs (hyper-util's matcher, given no `NO_PROXY` of its own) behind
/// this crate's [`NoProxy`].
pub(crate) struct Matcher {
    proxies: matcher::Matcher,
    no: NoProxy,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy URLs may carry credentials: the `Proxy` shows them redacted.
        f.debug_struct("Matcher")
            .field("no", &self.no)
            .finish_non_exhaustive()
    }
}

impl Matcher {
    /// The proxy for `uri`, or `None` to connect directly.
    pub(crate) fn intercept(&self, uri: &Uri) -> Option<Intercept> {
        if self.no.matches(uri.host()?) {
            return None;
        }
        self.proxies.intercept(uri)
    }
}

/// A parsed `NO_PROXY` list; see [`Proxy`]'s table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    all: bool,
    /// Networks: an address and its prefix length.
    nets: Vec<(IpAddr, u8)>,
    /// Domains in lower case, without leading or trailing dots.
    domains: Vec<String>,
}

impl NoProxy {
    /// Parses a comma-separated list; an entry that can never match is
    /// dropped with a warning (never its neighbours).
    pub(crate) fn parse(list: &str) -> NoProxy {
        let mut no = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no.all = true;
            } else if let Some(net) = network(entry) {
                no.nets.push(net);
            } else if has_port(entry) {
                tracing::warn!(
                    entry,
                    "a NO_PROXY entry with a port never matches (as in curl); list the host alone"
                );
            } else if entry.contains('/') || entry.chars().any(char::is_whitespace) {
                tracing::warn!(
                    entry,
                    "ignoring a NO_PROXY entry that is no host, IP or CIDR range"
                );
            } else {
                let domain = entry.strip_prefix('*').unwrap_or(entry);
                let domain = domain.trim_start_matches('.').trim_end_matches('.');
                if !domain.is_empty() {
                    no.domains.push(domain.to_ascii_lowercase());
                }
            }
        }
        no
    }

    fn extend(&mut self, other: NoProxy) {
        self.all |= other.all;
        self.nets.extend(other.nets);
        self.domains.extend(other.domains);
    }

    /// Whether `host` (as a URI gives it: IPv6 in brackets) is reached
    /// directly.
    pub(crate) fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self
                .nets
                .iter()
                .any(|&(net, bits)| in_network(ip, net, bits));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().any(|domain| {
            name == *domain
                || name
                    .strip_suffix(domain.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// `ip`, `[ip]` or `ip/bits`, as an address and prefix length.
fn network(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match entry.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match bits {
        Some(bits) if bits > max => None,
        Some(bits) => Some((ip, bits)),
        None => Some((ip, max)),
    }
}

/// `host:port`, `ip:port` or `[ipv6]:port`.
fn has_port(entry: &str) -> bool {
    let port = match entry.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(_, port)| port),
        // More than one colon without brackets is an IPv6 address.
        None if entry.matches(':').count() == 1 => entry.split_once(':').map(|(_, port)| port),
        None => None,
    };
    port.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `ip` is in `net`/`bits` (same family only).
fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => (u32::from(ip) as u128, u32::from(net) as u128, 32),
        (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128),
        _ => return false,
    };
    let bits = u32::from(bits).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (ip >> shift) == (net >> shift)
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
/// cannot speak to, naming the variable but never the URL's credentials;
/// returns the URL to use: trimmed, as checked.
fn check_url(var: &str, url: &str) -> Result<String, Error> {
    let url = url.trim();
    let uri: Uri = url
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
        Some(a) if !a.host().is_empty() => Ok(url.to_owned()),
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

    /// curl's `NO_PROXY` forms, one table: (list, coordinator URL,
    /// reached directly).
    const NO_PROXY_CASES: &[(&str, &str, bool)] = &[
        // `*`: every host, IP literals included, alone or in a list.
        ("*", "http://c.example/", true),
        ("*", "http://10.1.2.3:8000/", true),
        ("*", "http://[2001:db8::1]:8000/", true),
        (" * ", "http://10.1.2.3/", true),
        ("a.example, *", "http://10.1.2.3/", true),
        // Domains, with and without a leading dot, match themselves and
        // their subdomains, never a longer name that ends the same.
        ("example.com", "http://example.com/", true),
        ("example.com", "http://www.example.com:8080/", true),
        ("example.com", "http://notexample.com/", false),
        ("example.com", "http://example.com.evil/", false),
        (".example.com", "http://example.com/", true),
        (".example.com", "http://a.b.example.com/", true),
        ("*.example.com", "http://a.example.com/", true),
        ("example.com.", "http://www.example.com/", true),
        ("example.com", "http://www.example.com./", true),
        // Case and whitespace around entries.
        ("EXAMPLE.com", "http://Www.Example.COM/", true),
        (
            "  a.example ,\texample.com\n",
            "http://x.example.com/",
            true,
        ),
        (",,, ,example.com,", "http://example.com/", true),
        // Exact IPs and CIDR ranges; IPv6 with or without brackets.
        ("10.1.2.3", "http://10.1.2.3:8000/", true),
        ("10.1.2.3", "http://10.1.2.4/", false),
        ("10.0.0.0/8", "http://10.200.0.1/", true),
        ("10.0.0.0/8", "http://11.0.0.1/", false),
        ("0.0.0.0/0", "http://192.0.2.1/", true),
        ("192.168.1.0/33", "http://192.168.1.1/", false),
        ("::1", "http://[::1]:8000/", true),
        ("[2001:db8::1]", "http://[2001:db8::1]/", true),
        ("2001:db8::/32", "http://[2001:db8:5::1]/", true),
        ("2001:db8::/32", "http://[2001:db9::1]/", false),
        ("10.0.0.0/8", "http://[::ffff:10.0.0.1]/", false),
        // An IP host matches IP entries only, a name host name entries only.
        ("10.1.2.3", "http://ten.example/", false),
        ("example.com", "http://10.1.2.3/", false),
        // Entries with a port never match, as in curl.
        ("example.com:8000", "http://example.com:8000/", false),
        ("10.1.2.3:8000", "http://10.1.2.3:8000/", false),
        ("[::1]:8000", "http://[::1]:8000/", false),
        // Nothing listed, nothing skipped.
        ("", "http://example.com/", false),
        (" , ", "http://10.1.2.3/", false),
    ];

    #[test]
    fn no_proxy_follows_curl() {
        for &(list, url, direct) in NO_PROXY_CASES {
            let m = Proxy::url("http://proxy.example:3128")
                .no_proxy(list)
                .matcher()
                .unwrap()
                .unwrap();
            let uri: Uri = url.parse().unwrap();
            assert_eq!(
                m.intercept(&uri).is_none(),
                direct,
                "NO_PROXY={list:?} {url}"
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9-]{1,8}"
        }

        proptest! {
            /// A domain entry matches the host itself and its subdomains,
            /// nothing else, whatever the case, the dots around it and the
            /// whitespace around the entry.
            #[test]
            fn a_domain_matches_itself_and_its_subdomains(
                domain in proptest::collection::vec(label(), 1..4),
                host in proptest::collection::vec(label(), 1..5),
                leading_dot in any::<bool>(),
                upper in any::<bool>(),
                padding in "[ \t]{0,2}",
            ) {
                let domain = domain.join(".");
                let host = host.join(".");
                let mut entry = format!("{}{domain}", if leading_dot { "." } else { "" });
                if upper {
                    entry = entry.to_ascii_uppercase();
                }
                let list = format!("other.invalid,{padding}{entry}{padding},10.0.0.0/8");
                let no = NoProxy::parse(&list);
                let expected = host == domain || host.ends_with(&format!(".{domain}"));
                prop_assert_eq!(no.matches(&host), expected, "{} against {}", list, host);
                prop_assert!(no.matches(&domain));
                let (sub, longer) = (format!("x.{domain}"), format!("x{domain}"));
                prop_assert!(no.matches(&sub));
                prop_assert!(!no.matches(&longer));
            }

            /// A CIDR entry matches exactly the addresses that share its
            /// first `bits` bits; `*` matches every host.
            #[test]
            fn a_cidr_matches_its_prefix(net in any::<u32>(), ip in any::<u32>(), bits in 0u8..=32) {
                let entry = format!("{}/{bits}", std::net::Ipv4Addr::from(net));
                let host = std::net::Ipv4Addr::from(ip).to_string();
                let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
                prop_assert_eq!(NoProxy::parse(&entry).matches(&host), net & mask == ip & mask);
                prop_assert!(NoProxy::parse("*").matches(&host));
            }
        }
    }

    #[test]
    fn a_proxy_url_is_used_as_checked_trimmed() {
        for value in [
            "http://proxy.example:3128\n",
            "  http://proxy.example:3128 \r\n",
        ] {
            let m = Proxy::from_vars(|name| (name == "HTTP_PROXY").then(|| value.to_owned()))
                .matcher()
                .unwrap()
                .unwrap();
            let hit = m.intercept(&Uri::from_static("http://c.example/")).unwrap();
            assert_eq!(hit.uri().host(), Some("proxy.example"), "{value:?}");
            assert_eq!(hit.uri().port_u16(), Some(3128), "{value:?}");
        }
        let err = Proxy::url("http://proxy .example:3128")
            .matcher()
            .unwrap_err();
        assert!(
            err.is_config() && err.to_string().contains("proxy URL"),
            "{err}"
        );
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
