//! [`QualityCheck`]: one attempt of the quality check, as a tower `Service`.

mod attempt;
mod builder;
pub(crate) mod config;
mod connector;
pub mod future;
mod health;
mod resolve;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use tower::Service;

pub use self::attempt::AttemptFuture;
pub use self::builder::QualityCheckBuilder;

use self::config::Config;
use self::future::ResponseFuture;
use crate::call::Call;
use crate::error::Error;
use crate::wire::{QualityRequest, QualityResponse};

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
/// use tower_quality_gate::{QualityCheck, QualityRequest};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), tower_quality_gate::Error> {
/// let check = QualityCheck::new("http://127.0.0.1:8000")?;
/// let verdict = check
///     .oneshot(QualityRequest::new("task-1", "agent-1").files(["src/lib.rs"]))
///     .await?;
/// println!("approved: {}", verdict.approved);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QualityCheck {
    // One Arc: tower's Retry clones the service into every call's future,
    // and a client is cloned for each `check`.
    shared: Arc<Shared>,
}

/// What the clones of a [`QualityCheck`] share.
struct Shared {
    client: Client<connector::Connector, Full<Bytes>>,
    /// Also held by each attempt's future.
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

    /// A service for the coordinator named by `COORDINATOR_URL`; a
    /// configuration error naming the variable when it is unset, as for
    /// [`ClientBuilder::from_env`](crate::ClientBuilder::from_env).
    pub fn from_env() -> Result<Self, Error> {
        Self::builder(builder::env_url()?).build()
    }

    /// A builder for the coordinator at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> QualityCheckBuilder {
        QualityCheckBuilder::new(base_url)
    }

    /// The coordinator's base URL as configured.
    pub fn base_url(&self) -> &http::Uri {
        &self.shared.config.base
    }

    /// Sends one attempt of `call`, and says its number (0 when it was
    /// refused before anything was sent).
    fn send(&self, call: &Call) -> (ResponseFuture, u32) {
        if let Err(error) = self.refuse_id_header(call.headers()) {
            // Refused before anything counts as an attempt.
            return (ResponseFuture::failed(error, self.shared.config.clone()), 0);
        }
        let attempt = call.start_attempt();
        let span = crate::trace::attempt_span_of(
            call.span(),
            call.request_id(),
            attempt,
            &self.shared.config.check_uri,
        );
        let future = self.send_attempt(
            call.body().clone(),
            call.request_id(),
            call.headers(),
            call.span(),
            span,
        );
        (future, attempt)
    }

    /// Sends `req` as the one attempt of a call nobody else shares: its
    /// body, id and headers go straight into the HTTP request, without the
    /// [`Call`] record that attempts of a retried call share (an `Arc`, a
    /// clock read for a deadline nothing here enforces, a body clone).
    /// The same checks and the same request as through [`Call::new`].
    fn send_request(&self, mut req: QualityRequest) -> ResponseFuture {
        let options = req.take_options();
        let refused = crate::headers::refuse_reserved(&options.headers)
            .and_then(|()| self.refuse_id_header(&options.headers));
        if let Err(error) = refused {
            return ResponseFuture::failed(error, self.shared.config.clone());
        }
        let request_id = match options.request_id {
            Some(id) => Some(id),
            None if self.shared.config.request_id_header.is_some() => {
                Some(crate::request_id::next())
            }
            None => None,
        };
        let span = crate::trace::attempt_span_of(
            &tracing::Span::none(),
            request_id.as_ref(),
            1,
            &self.shared.config.check_uri,
        );
        self.send_attempt(
            req.encode(),
            request_id.as_ref(),
            &options.headers,
            &tracing::Span::none(),
            span,
        )
    }

    /// A per-call header named like the request-id header: the id has its
    /// own option, and a header of that name would send another id than the
    /// one errors and spans report. Refused before anything counts as an
    /// attempt.
    fn refuse_id_header(&self, headers: &HeaderMap) -> Result<(), Error> {
        match &self.shared.config.request_id_header {
            Some(name) if !headers.is_empty() && headers.contains_key(name) => {
                Err(Error::config(format!(
                    "the per-call header {name} is the request-id header: set the id with QualityRequest::request_id"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Sends one attempt: `body`, the configured headers, the request id,
    /// the call's own headers and, with the `opentelemetry` feature, the
    /// trace context of `span` (or of `call_span`, the nearest enabled one).
    fn send_attempt(
        &self,
        body: Bytes,
        request_id: Option<&HeaderValue>,
        call_headers: &HeaderMap,
        call_span: &tracing::Span,
        span: tracing::Span,
    ) -> ResponseFuture {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.shared.config.check_uri.clone();
        // The configured headers hold a place for the id (see the builder),
        // so filling it in does not grow the map.
        let headers = request.headers_mut();
        *headers = self.shared.config.headers.clone();
        if let Some(name) = &self.shared.config.request_id_header {
            match request_id {
                Some(id) => headers.insert(name, id.clone()),
                None => headers.remove(name),
            };
        }
        // A call's own headers may carry a credential too (a per-call
        // `authorization`): an error body that echoes it is scrubbed of it.
        let call_secrets = if call_headers.is_empty() {
            None
        } else {
            for (name, value) in call_headers {
                let mut value = value.clone();
                if crate::redact::is_secret_header(name) {
                    value.set_sensitive(true);
                }
                headers.insert(name.clone(), value);
            }
            self.shared
                .config
                .secrets
                .with_call_headers(call_headers)
                .map(Arc::new)
        };
        // After the call's own headers: trace headers a caller set are its
        // choice and suppress injection.
        crate::trace::inject_context(&span, call_span, headers);
        ResponseFuture::new(
            self.shared.client.request(request),
            self.shared.config.clone(),
            call_secrets,
            span,
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

    /// Sends `req` as a call of one attempt, with its own request id (as
    /// [`Call::new`] gives it one).
    fn call(&mut self, req: QualityRequest) -> ResponseFuture {
        self.send_request(req)
    }
}

impl Service<Call> for QualityCheck {
    type Response = QualityResponse;
    type Error = Error;
    type Future = AttemptFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    /// Sends one attempt of `call`: its body, its request id and per-call
    /// headers, counted in its attempts; a call past its deadline is not
    /// sent (see [`AttemptFuture`]).
    fn call(&mut self, call: Call) -> AttemptFuture {
        if call.expired() {
            return AttemptFuture::expired(call);
        }
        let (future, attempt) = self.send(&call);
        AttemptFuture::new(future, call, attempt)
    }
}

impl fmt::Debug for QualityCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QualityCheck")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
