//! The builder that owns every knob of a [`QualityCheck`].

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::config::{self, Config, Secret};
use super::connector::{self, Tls};
use super::resolve::Resolver;
use super::QualityCheck;
use crate::error::Error;
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
/// The coordinator URL used when `COORDINATOR_URL` is unset: the
/// coordinator's conventional port on this host.
pub(crate) const DEFAULT_COORDINATOR_URL: &str = "http://127.0.0.1:8000";
/// The environment variable [`QualityCheck::from_env`] reads.
pub(crate) const COORDINATOR_URL_ENV: &str = "COORDINATOR_URL";

/// Builds a [`QualityCheck`]. Every option has a documented default;
/// [`build`](QualityCheckBuilder::build) validates them all, so a bad URL or
/// header is an error at start-up, not at the first call.
///
/// ```
/// use quality_gate::QualityCheck;
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
#[derive(Clone, Debug)]
pub struct QualityCheckBuilder {
    base_url: String,
    body_limit: usize,
    bearer_token: Option<Secret>,
    api_key: Option<Secret>,
    headers: Vec<(String, Secret)>,
    user_agent: Option<String>,
    http2: bool,
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    health_timeout: Duration,
    request_id_header: Option<String>,
    tls: Tls,
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
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sends `Authorization: Bearer {token}` on every call. The token never
    /// appears in `Debug` output, errors or logs. Default: none.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(Secret(token.into()));
        self
    }

    /// Sends `X-API-Key: {key}` on every call, the convention of the
    /// coordinator's own services. Redacted like the bearer token. Default: none.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret(key.into()));
        self
    }

    /// Adds a static header sent on every call. The value is validated at
    /// build time (a newline in it is a configuration error) and never
    /// printed, since it may be a credential.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret(value.into())));
        self
    }

    /// The `User-Agent` sent (default `quality-gate/{version}`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// Speaks HTTP/2 with prior knowledge instead of HTTP/1.1 (default off:
    /// most coordinators are plain HTTP/1.1 servers).
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// How long to wait for a TCP connection (default 3.1 s); `None` waits
    /// until an outer timeout fires.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per coordinator (default unlimited;
    /// the concurrency limit of a `QualityClient` bounds them in practice).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The timeout of [`QualityCheck::health`] (default 2 s).
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
    pub fn request_id_header(mut self, name: Option<&str>) -> Self {
        self.request_id_header = name.map(str::to_owned);
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
    pub(crate) fn sends_request_ids(&self) -> bool {
        self.request_id_header.is_some()
    }

    /// Validates the options and builds the service.
    ///
    /// Must be called inside a Tokio runtime only if the service is then
    /// used there; building itself spawns nothing.
    pub fn build(self) -> Result<QualityCheck, Error> {
        let config = self.config()?;
        let http = connector::connector(
            self.connect_timeout,
            self.http2,
            &self.tls,
            self.resolver.clone(),
        )?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2)
            .build(http);
        Ok(QualityCheck {
            client: Arc::new(client),
            config: Arc::new(config),
        })
    }

    fn config(&self) -> Result<Config, Error> {
        let (base, check_uri, health_uri) = config::endpoints(&self.base_url)?;
        let mut headers = HeaderMap::new();
        let mut secrets = Vec::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let agent = match &self.user_agent {
            Some(agent) => HeaderValue::from_str(agent)
                .map_err(|e| Error::config_with("user agent is not a valid header value", e))?,
            None => HeaderValue::from_static(concat!("quality-gate/", env!("CARGO_PKG_VERSION"))),
        };
        headers.insert(header::USER_AGENT, agent);
        if let Some(token) = &self.bearer_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0))
                .map_err(|e| Error::config_with("bearer token is not a valid header value", e))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
            secrets.push(token.clone());
        }
        if let Some(key) = &self.api_key {
            let (name, mut value) = config::header("x-api-key", &key.0)?;
            value.set_sensitive(true);
            headers.insert(name, value);
            secrets.push(key.clone());
        }
        for (name, value) in &self.headers {
            let (name, mut value) = config::header(name, &value.0)?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let request_id_header = match &self.request_id_header {
            Some(name) => Some(config::header(name, "")?.0),
            None => None,
        };
        Ok(Config {
            base,
            request_id_header,
            check_uri,
            health_uri,
            headers,
            body_limit: self.body_limit,
            health_timeout: self.health_timeout,
            secrets,
        })
    }

    /// Connects to `addrs` instead of resolving the base URL's host, which
    /// still names the coordinator in the `Host` header and for TLS; empty
    /// means the system resolver (the default). Set by replica discovery.
    pub(crate) fn pin_addresses(mut self, addrs: Vec<std::net::SocketAddr>) -> Self {
        self.resolver = Resolver::pinned(addrs);
        self
    }
}

/// Reads the coordinator URL from `COORDINATOR_URL`, or the default.
pub(crate) fn env_url() -> Result<String, Error> {
    match std::env::var(COORDINATOR_URL_ENV) {
        Ok(url) => Ok(url),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_COORDINATOR_URL.to_owned()),
        Err(e) => Err(Error::config_with(
            format!("{COORDINATOR_URL_ENV} is not valid unicode"),
            e,
        )),
    }
}
