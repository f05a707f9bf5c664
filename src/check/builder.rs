//! The builder that owns every knob of a [`QualityCheck`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::config::{self, Config, Secret};
use super::connector::{self, Tls};
use super::resolve::Resolver;
use super::{QualityCheck, Shared};
use crate::error::Error;
use crate::redact::{is_secret_header, secret_parts, Redactor};
use crate::request_id::DEFAULT_REQUEST_ID_HEADER;

/// The default cap on a response body: 1 MiB. A verdict is a few hundred
/// bytes; even rich `details` stay far below this.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The default connect timeout: 3.1 s, as the AWS SDK uses; without one a
/// dead host hangs until the attempt timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// The default idle time after which a pooled connection is closed: 90 s,
/// hyper-util's own default.
pub(crate) const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The default timeout of [`QualityCheck::health`]: 2 s. A health endpoint
/// that takes longer is as good as down for a readiness probe.
pub(crate) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an HTTP/2 keep-alive ping waits for its answer: 20 s, hyper's
/// own default.
const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The coordinator URL used when `COORDINATOR_URL` is unset: the
/// coordinator's conventional port on this host.
/// The environment variable [`QualityCheck::from_env`] reads.
pub(crate) const COORDINATOR_URL_ENV: &str = "COORDINATOR_URL";

/// The header [`QualityCheckBuilder::api_key`] sets.
const API_KEY_HEADER: &str = "x-api-key";

/// The longest timeout accepted by any setter: a day. A longer one is a
/// mistake (a unit mixed up), and `Instant + Duration::MAX` panics inside
/// the timers that use it.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Builds a [`QualityCheck`]. Every option has a documented default;
/// [`build`](QualityCheckBuilder::build) validates them all, so a bad URL or
/// header is an error at start-up, not at the first call.
///
/// ```
/// use tower_quality_gate::QualityCheck;
///
/// let check = QualityCheck::builder("http://127.0.0.1:8000/coordinator")
///     .bearer_token("s3cret")
///     .body_limit(64 * 1024)
///     .build()
///     .unwrap();
/// assert!(!format!("{check:?}").contains("s3cret"));
///
/// let err = QualityCheck::builder("ftp://nope").build().unwrap_err();
/// assert!(err.is_config());
/// ```
#[derive(Clone)]
pub struct QualityCheckBuilder {
    base_url: String,
    body_limit: usize,
    bearer_token: Option<Secret>,
    api_key: Option<Secret>,
    /// Extra headers: name, value, and whether the caller marked it secret.
    headers: Vec<(String, Secret, bool)>,
    user_agent: Option<String>,
    http2: bool,
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    health_timeout: Duration,
    request_id_header: Option<String>,
    tls: Tls,
    proxy: crate::Proxy,
    http2_keep_alive_interval: Option<Duration>,
    http2_keep_alive_timeout: Duration,
    http2_keep_alive_while_idle: bool,
    resolver: Resolver,
}

impl QualityCheckBuilder {
    pub(crate) fn new(base_url: impl Into<String>) -> Self {
        QualityCheckBuilder {
            base_url: base_url.into(),
            body_limit: DEFAULT_BODY_LIMIT,
            bearer_token: None,
            api_key: None,
            headers: Vec::new(),
            user_agent: None,
            http2: false,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle_per_host: usize::MAX,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            request_id_header: Some(DEFAULT_REQUEST_ID_HEADER.to_owned()),
            tls: Tls::default(),
            proxy: crate::Proxy::none(),
            http2_keep_alive_interval: None,
            http2_keep_alive_timeout: DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            http2_keep_alive_while_idle: false,
            resolver: Resolver::default(),
        }
    }

    /// The coordinator's base URL (`http://host:port`, optionally with a path
    /// prefix); the check is sent to `{base}/api/quality/check`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The largest response body read, in bytes (default 1 MiB). A larger one
    /// fails with [`Error::is_body_too_large`] without being read whole.
    ///
    /// Must be at least 1: 0 would refuse every verdict, and is a
    /// configuration error at build time.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sends `Authorization: Bearer {token}` on every call. The token never
    /// appears in `Debug` output, errors or logs: an error body that echoes
    /// it has it replaced by `[redacted]`. Default: none.
    ///
    /// With a token set, an `authorization` header from
    /// [`header`](Self::header) is a configuration error. A call's own
    /// `authorization` header ([`QualityRequest::header`](crate::QualityRequest::header))
    /// replaces it for that call: the more specific setting wins, as a
    /// per-request header wins over a default one in most HTTP clients.
    ///
    /// An empty or all-blank token is no token (`Authorization: Bearer `
    /// with nothing after it is never sent), so
    /// `.bearer_token(std::env::var("TOKEN").unwrap_or_default())` means
    /// "the token, if there is one", as an empty `COORDINATOR_TOKEN` does for
    /// [`ClientBuilder::from_env`](crate::ClientBuilder::from_env).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.bearer_token = (!token.trim().is_empty()).then_some(Secret(token));
        self
    }

    /// Sends `X-API-Key: {key}` on every call, the convention of the
    /// coordinator's own services. Redacted like the bearer token. Default: none.
    ///
    /// With a key set, an `x-api-key` header from [`header`](Self::header)
    /// is a configuration error; a call's own `x-api-key` header replaces it
    /// for that call. An empty or all-blank key is no key, as for
    /// [`bearer_token`](Self::bearer_token).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.api_key = (!key.trim().is_empty()).then_some(Secret(key));
        self
    }

    /// Adds a static header sent on every call. The value is validated at
    /// build time (a newline in it is a configuration error) and never
    /// printed.
    ///
    /// A header whose name marks a credential is a secret: its value is
    /// removed from error bodies, logs and gate responses like the bearer
    /// token. Those names are `authorization`, `proxy-authorization`,
    /// `cookie`, any name ending in `-key` or `_key`, and any containing
    /// `auth`, `token`, `secret`, `password`, `passwd`, `credential`,
    /// `cookie` or `session` (so `x-coordinator-token` is one). Use
    /// [`secret_header`](Self::secret_header) for a credential under any
    /// other name.
    ///
    /// Reserved names are configuration errors at build time (the error
    /// names the header, never its value): `host`, `content-length`,
    /// `content-type`, `transfer-encoding`, `connection`, `keep-alive`,
    /// `proxy-connection`, `te`, `trailer`, `upgrade`, `user-agent` (use
    /// [`user_agent`](Self::user_agent)), the request-id header, and
    /// `authorization` / `x-api-key` when [`bearer_token`](Self::bearer_token)
    /// / [`api_key`](Self::api_key) set them.
    ///
    /// ```
    /// use tower_quality_gate::QualityCheck;
    ///
    /// let err = QualityCheck::builder("http://127.0.0.1:8000")
    ///     .header("content-length", "3")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_config() && err.to_string().contains("content-length"));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into(), Secret(value.into()), false));
        self
    }

    /// Adds a static header whose value is a credential, whatever its name:
    /// like [`header`](Self::header), and its value is also removed from
    /// error bodies, logs and gate responses.
    pub fn secret_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret(value.into()), true));
        self
    }

    /// The `User-Agent` sent (default `tower-quality-gate/{version}`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// Allows HTTP/2 (default off: most coordinators are plain HTTP/1.1
    /// servers). On `http://` coordinators it speaks HTTP/2 with prior
    /// knowledge; on `https://` ones it offers `h2` by ALPN and speaks
    /// whichever protocol the coordinator picks.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// How long to wait for a usable connection: TCP, any proxy tunnel and
    /// the TLS handshake together (default 3.1 s). Passing it is a connect
    /// error ([`Error::is_connect`]). `None` waits until an outer timeout
    /// fires.
    ///
    /// Zero, or more than a day, is a configuration error at build time.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept (default 90 s); `None`
    /// keeps it until the coordinator closes it, zero keeps none.
    ///
    /// More than a day is a configuration error at build time.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// The most idle connections kept per coordinator (default unlimited;
    /// the concurrency limit of a `QualityClient` bounds them in practice).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The timeout of [`QualityCheck::health`] (default 2 s).
    ///
    /// Zero (every health check would fail), or more than a day, is a
    /// configuration error at build time.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// The header that carries each call's id (default `x-request-id`);
    /// `None` sends none.
    ///
    /// The id is new for every call and the same on every retry of it, so a
    /// coordinator can de-duplicate a retried check; it is also in the
    /// tracing span of each attempt. A bare `QualityCheck` makes one attempt
    /// per call, so there each attempt has its own id; behind a
    /// [`QualityClient`](crate::QualityClient) retries share it.
    ///
    /// A reserved name (see [`header`](Self::header)), or one the builder
    /// already sends, is a configuration error at build time.
    pub fn request_id_header<'a>(mut self, name: impl Into<Option<&'a str>>) -> Self {
        self.request_id_header = name.into().map(str::to_owned);
        self
    }

    /// Trusts this DER-encoded root certificate for `https` coordinators, on
    /// top of the built-in Mozilla roots (feature `rustls`). An invalid
    /// certificate is a configuration error at build time.
    #[cfg(feature = "rustls")]
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.tls.roots.push(der.into());
        self
    }

    /// Whether to trust the built-in Mozilla roots (default true; feature
    /// `rustls`). Turn them off to trust only the roots you add, e.g. a
    /// private CA.
    #[cfg(feature = "rustls")]
    pub fn builtin_roots(mut self, enabled: bool) -> Self {
        self.tls.no_builtin_roots = !enabled;
        self
    }

    /// Whether calls carry a request id.
    /// The base URL, validated, without building a client (and its pool).
    pub(crate) fn base_uri(&self) -> Result<http::Uri, Error> {
        Ok(config::endpoints(&self.base_url)?.0)
    }

    pub(crate) fn sends_request_ids(&self) -> bool {
        self.request_id_header.is_some()
    }

    /// Validates the options and builds the service.
    ///
    /// Must be called inside a Tokio runtime only if the service is then
    /// used there; building itself spawns nothing.
    pub fn build(self) -> Result<QualityCheck, Error> {
        let proxy = self.proxy.matcher()?;
        let (_, check_uri, _) = config::endpoints(&self.base_url)?;
        // A forward proxy's credentials ride on every request: a secret too.
        let auth = crate::proxy::forward_auth(proxy.as_ref(), &check_uri);
        let mut config = self.config(auth.as_ref().and_then(|a| a.to_str().ok()))?;
        if let Some(auth) = auth {
            config.headers.insert(header::PROXY_AUTHORIZATION, auth);
        }
        connector::refuse_proxied_replicas(&self.resolver, proxy.as_ref(), &check_uri)?;
        let https = config.base.scheme_str() == Some("https");
        let http = connector::connector(
            self.connect_timeout,
            self.http2,
            &self.tls,
            proxy,
            self.resolver.clone(),
        )?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2 && !https)
            .http2_keep_alive_interval(self.http2_keep_alive_interval)
            .http2_keep_alive_timeout(self.http2_keep_alive_timeout)
            .http2_keep_alive_while_idle(self.http2_keep_alive_while_idle)
            .build(http);
        Ok(QualityCheck {
            shared: Arc::new(Shared {
                client,
                config: Arc::new(config),
            }),
        })
    }

    fn config(&self, proxy_auth: Option<&str>) -> Result<Config, Error> {
        let (base, check_uri, health_uri) = config::endpoints(&self.base_url)?;
        self.check_limits()?;
        let mut headers = HeaderMap::new();
        let mut secrets: Vec<&str> = Vec::new();
        secrets.extend(proxy_auth.into_iter().flat_map(secret_parts));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let agent = match &self.user_agent {
            Some(agent) => HeaderValue::from_str(agent)
                .map_err(|e| Error::config_with("user agent is not a valid header value", e))?,
            None => {
                HeaderValue::from_static(concat!("tower-quality-gate/", env!("CARGO_PKG_VERSION")))
            }
        };
        headers.insert(header::USER_AGENT, agent);
        if let Some(token) = &self.bearer_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0))
                .map_err(|e| Error::config_with("bearer token is not a valid header value", e))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
            secrets.push(&token.0);
        }
        if let Some(key) = &self.api_key {
            let (name, mut value) = config::header(API_KEY_HEADER, &key.0)?;
            value.set_sensitive(true);
            headers.insert(name, value);
            secrets.push(&key.0);
        }
        let request_id_header = match &self.request_id_header {
            Some(name) => {
                let name = config::header(name, "")?.0;
                self.refuse_reserved(&name, "request id header")?;
                Some(name)
            }
            None => None,
        };
        for (name, secret, marked) in &self.headers {
            let (name, mut value) = config::header(name, &secret.0)?;
            self.refuse_reserved(&name, "header")?;
            if request_id_header.as_ref() == Some(&name) {
                return Err(Error::config(format!(
                    "header {name} is the request id header, set for each call"
                )));
            }
            value.set_sensitive(true);
            if *marked || is_secret_header(&name) {
                secrets.extend(secret_parts(&secret.0));
            }
            headers.append(name, value);
        }
        if let Some(name) = &request_id_header {
            // A place for each call's id, filled in per attempt: the map
            // cloned for an attempt then never grows.
            headers.insert(name.clone(), HeaderValue::from_static(""));
        }
        Ok(Config {
            base,
            request_id_header,
            check_uri,
            health_uri,
            headers,
            body_limit: self.body_limit,
            health_timeout: self.health_timeout,
            secrets: Redactor::new(secrets),
        })
    }

    // ----- networks: TLS, proxies, HTTP/2 keep-alive -----

    /// Trusts every certificate of this PEM bundle (`-----BEGIN
    /// CERTIFICATE-----` blocks) for `https` coordinators, on top of the
    /// other roots (feature `rustls`): the usual way to trust a private CA.
    /// A bundle with no certificate, or an unreadable one, is a
    /// configuration error at build time.
    ///
    /// ```
    /// let ca = rcgen::generate_simple_self_signed(vec!["ca.internal".to_owned()]).unwrap();
    /// let check = tower_quality_gate::QualityCheck::builder("https://coordinator.internal")
    ///     .add_root_certificate_pem(ca.cert.pem())
    ///     .builtin_roots(false)
    ///     .build()
    ///     .unwrap();
    /// # let _ = check;
    /// ```
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls.pem_roots.push(pem.as_ref().to_vec());
        self
    }

    /// Also trusts the operating system's certificate store (default off;
    /// feature `native-roots`), loaded once at build time.
    ///
    /// It uses `rustls-native-certs` rather than `rustls-platform-verifier`:
    /// the OS roots then join the Mozilla roots and any private CA in one
    /// rustls root store, verified by the same webpki code on every
    /// platform, so what the tests check is what runs in production; it
    /// honours `SSL_CERT_FILE` and `SSL_CERT_DIR`, which is how containers
    /// and meshes hand out their CA; and it is one small crate, where the
    /// platform verifier brings each OS's native verification stack. The
    /// cost: no OS-specific policy such as revocation checks on macOS and
    /// Windows (use [`tls_config`](Self::tls_config) with the platform
    /// verifier for that). Combine with `builtin_roots(false)` to trust the
    /// OS store instead of the Mozilla roots. An OS store that yields no
    /// certificate is a configuration error.
    #[cfg(feature = "native-roots")]
    #[cfg_attr(docsrs, doc(cfg(feature = "native-roots")))]
    pub fn native_roots(mut self, enabled: bool) -> Self {
        self.tls.native_roots = enabled;
        self
    }

    /// Presents this client certificate for mutual TLS (feature `rustls`):
    /// `cert_chain_pem` holds the certificate then any intermediates,
    /// `key_pem` its private key (PKCS#8, PKCS#1 or SEC1). The key is never
    /// printed; an unreadable chain or key is a configuration error at
    /// build time. Default: no client certificate.
    ///
    /// ```
    /// let cert = rcgen::generate_simple_self_signed(vec!["agent-7".to_owned()]).unwrap();
    /// let check = tower_quality_gate::QualityCheck::builder("https://coordinator.internal")
    ///     .client_identity_pem(cert.cert.pem(), cert.signing_key.serialize_pem())
    ///     .build()
    ///     .unwrap();
    /// assert!(!format!("{check:?}").contains("PRIVATE KEY"));
    /// ```
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn client_identity_pem(
        mut self,
        cert_chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        let key = String::from_utf8_lossy(key_pem.as_ref()).into_owned();
        self.tls.identity = Some((cert_chain_pem.as_ref().to_vec(), Secret(key)));
        self
    }

    /// Uses this rustls configuration for `https` coordinators, for anything
    /// the other options do not cover (another verifier, crypto provider or
    /// protocol version); it replaces the roots and client identity set
    /// here (feature `rustls`). Its ALPN list is replaced according to
    /// [`http2`](Self::http2).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.config = Some(Arc::new(config));
        self
    }

    /// The HTTP proxy to reach the coordinator through (default
    /// [`Proxy::none`](crate::Proxy::none)); see [`Proxy`](crate::Proxy).
    pub fn proxy(mut self, proxy: crate::Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// Sends an HTTP/2 ping after this much silence on a connection
    /// (default `None`: no pings), so a coordinator or middlebox that
    /// silently dropped the connection fails the calls on it within the
    /// [ping timeout](Self::http2_keep_alive_timeout) instead of hanging
    /// until an outer timeout. Some servers (grpc-go) send `GOAWAY` to
    /// clients that ping more than every 5 minutes while idle.
    pub fn http2_keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.http2_keep_alive_interval = interval.into();
        self
    }

    /// How long a keep-alive ping waits for its answer before the
    /// connection is closed and its calls fail (default 20 s; only with
    /// [`http2_keep_alive_interval`](Self::http2_keep_alive_interval)).
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// Whether to ping idle connections too, with no call in flight
    /// (default false: pings only watch connections that carry calls).
    pub fn http2_keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.http2_keep_alive_while_idle = enabled;
        self
    }
}

impl QualityCheckBuilder {
    /// Connects to `addrs` instead of resolving the base URL's host, which
    /// still names the coordinator in the `Host` header and for TLS; empty
    /// means the system resolver (the default). Set by replica discovery.
    pub(crate) fn pin_addresses(mut self, addrs: Vec<std::net::SocketAddr>) -> Self {
        self.resolver = Resolver::pinned(addrs);
        self
    }

    /// Connects to what `resolve` answers for `name` (`host:port`), as the
    /// discovered replicas do: for the client's health checks.
    pub(crate) fn resolve_with(
        mut self,
        resolve: Arc<dyn crate::discover::Resolve>,
        name: String,
    ) -> Self {
        self.resolver = Resolver::discovery(resolve, name);
        self
    }

    /// Refuses values no coordinator call can work with.
    fn check_limits(&self) -> Result<(), Error> {
        if self.body_limit == 0 {
            return Err(Error::config("body limit must be at least 1 byte"));
        }
        let timeouts = [
            ("health timeout", Some(self.health_timeout), false),
            ("connect timeout", self.connect_timeout, false),
            ("pool idle timeout", self.pool_idle_timeout, true),
        ];
        for (what, timeout, zero_ok) in timeouts {
            match timeout {
                Some(t) if t.is_zero() && !zero_ok => {
                    return Err(Error::config(format!("{what} must not be zero")));
                }
                Some(t) if t > MAX_TIMEOUT => {
                    return Err(Error::config(format!(
                        "{what} of {t:?} is longer than a day"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses a header the client sets itself, naming it (never its value).
    fn refuse_reserved(&self, name: &HeaderName, what: &str) -> Result<(), Error> {
        let why = crate::headers::reserved_header(name)
            .or_else(|| {
                (self.bearer_token.is_some() && name == header::AUTHORIZATION)
                    .then_some("bearer_token() sets it")
            })
            .or_else(|| {
                (self.api_key.is_some() && name == API_KEY_HEADER).then_some("api_key() sets it")
            });
        match why {
            Some(why) => Err(Error::config(format!("{what} {name} is reserved: {why}"))),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for QualityCheckBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL as errors show it (a mistyped one may carry user info),
        // and header names only: values may be credentials.
        let headers: Vec<&str> = self
            .headers
            .iter()
            .map(|(name, ..)| name.as_str())
            .collect();
        f.debug_struct("QualityCheckBuilder")
            .field("base_url", &config::shown(&self.base_url))
            .field("body_limit", &self.body_limit)
            .field("bearer_token", &self.bearer_token)
            .field("api_key", &self.api_key)
            .field("headers", &headers)
            .field("user_agent", &self.user_agent)
            .field("http2", &self.http2)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("health_timeout", &self.health_timeout)
            .field("request_id_header", &self.request_id_header)
            .finish_non_exhaustive()
    }
}

/// Reads the coordinator URL from `COORDINATOR_URL`, which must be set
/// (see [`ClientBuilder::from_env`](crate::ClientBuilder::from_env) for why).
pub(crate) fn env_url() -> Result<String, Error> {
    match std::env::var(COORDINATOR_URL_ENV) {
        Ok(url) => Ok(url),
        Err(std::env::VarError::NotPresent) => Err(Error::config(format!(
            "{COORDINATOR_URL_ENV} is not set: set it to the coordinator's base URL (http://127.0.0.1:8000 for one on this machine)"
        ))),
        // Not the `VarError` as a source: it would print the value.
        Err(_) => Err(Error::config(format!(
            "{COORDINATOR_URL_ENV} is not valid unicode"
        ))),
    }
}
