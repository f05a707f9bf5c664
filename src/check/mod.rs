//! [`QualityCheck`]: one attempt of the quality check, as a tower `Service`.

mod builder;
pub(crate) mod config;
mod connector;
mod future;
mod health;
mod stamp;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use tower::Service;

pub use self::builder::{
    QualityCheckBuilder, COORDINATOR_URL_ENV, DEFAULT_BODY_LIMIT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_COORDINATOR_URL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT,
};
pub use self::future::ResponseFuture;

use self::config::Config;
use crate::error::Error;
use crate::wire::{Prepared, QualityRequest, QualityResponse};

/// One attempt of the quality check: `POST {base}/api/quality/check` over a
/// pooled keep-alive connection, with the verdict read and decoded inside the
/// call, so a failure while reading the body is this service's error too.
///
/// It retries nothing and has no timeout of its own besides the connect
/// timeout: compose it with tower's layers, or use
/// [`QualityClient`](crate::QualityClient) for the ready-made stack. It is
/// always ready; clones share the connection pool.
///
/// ```no_run
/// use quality_gate::{QualityCheck, QualityRequest};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), quality_gate::Error> {
/// let check = QualityCheck::new("http://127.0.0.1:8000")?;
/// let verdict = check
///     .oneshot(QualityRequest::new("task-1", "agent-1").files(["src/lib.rs"]))
///     .await?;
/// println!("approved: {}", verdict.approved);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QualityCheck {
    // One Arc: tower's Retry clones the service into every call's future.
    client: Arc<Client<connector::Connector, Full<Bytes>>>,
    config: Arc<Config>,
}

// ===== impl QualityCheck =====

impl QualityCheck {
    /// A service for the coordinator at `base_url`, with every default.
    ///
    /// Fails with a configuration error ([`Error::is_config`]) if the URL is
    /// not `http://host[:port][/prefix]`.
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A service for the coordinator named by `COORDINATOR_URL`, or
    /// `http://127.0.0.1:8000` when it is unset.
    pub fn from_env() -> Result<Self, Error> {
        Self::builder(builder::env_url()?).build()
    }

    /// A builder for the coordinator at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> QualityCheckBuilder {
        QualityCheckBuilder::new(base_url)
    }

    /// The coordinator's base URL as configured.
    pub fn base_url(&self) -> &http::Uri {
        &self.config.base
    }

    /// Encodes a request once for all attempts of one call, with a fresh
    /// request id if ids are on.
    pub(crate) fn prepare(&self, req: QualityRequest) -> Prepared {
        let id = self
            .config
            .request_id_header
            .as_ref()
            .map(|_| crate::request_id::next());
        Prepared::new(req, id)
    }

    /// Sends one attempt of a prepared request.
    pub(crate) fn send(&self, req: &Prepared) -> ResponseFuture {
        let attempt = req.start_attempt();
        let span = tracing::debug_span!(
            "quality_check",
            task_id = %req.task_id(),
            agent_id = %req.agent_id(),
            request_id = req.request_id().and_then(|id| id.to_str().ok()).unwrap_or(""),
            attempt,
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let mut request = http::Request::new(Full::new(req.body()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.config.check_uri.clone();
        *request.headers_mut() = self.config.headers.clone();
        if let (Some(name), Some(id)) = (&self.config.request_id_header, req.request_id()) {
            request.headers_mut().insert(name.clone(), id.clone());
        }
        // Taken before the pool is asked for a connection: any connection
        // with an earlier ticket was opened before this attempt.
        let ticket = stamp::ticket();
        ResponseFuture::new(
            self.client.request(request),
            self.config.clone(),
            span,
            ticket,
        )
    }
}

impl Service<QualityRequest> for QualityCheck {
    type Response = QualityResponse;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // hyper-util's pooled client is always ready: it queues for a
        // connection inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: QualityRequest) -> ResponseFuture {
        self.send(&self.prepare(req))
    }
}

impl fmt::Debug for QualityCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QualityCheck")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// [`QualityCheck`] over requests encoded once, so that the retries of one
/// call share one body and one attempt counter.
#[derive(Clone, Debug)]
pub(crate) struct PreparedCheck(pub(crate) QualityCheck);

impl Service<Prepared> for PreparedCheck {
    type Response = QualityResponse;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Prepared) -> ResponseFuture {
        self.0.send(&req)
    }
}
