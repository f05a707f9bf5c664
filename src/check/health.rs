//! The coordinator's health endpoint: `GET {base}/health`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use super::future::classify;
use super::QualityCheck;
use crate::error::{Error, RetryAfter, TimeoutKind};
use crate::redact::ERROR_BODY_READ;

/// How much of an unhealthy answer's body is read for the error's snippet.
const HEALTH_BODY_READ: usize = ERROR_BODY_READ;

impl QualityCheck {
    /// Asks the coordinator whether it is up: `GET {base}/health`, `Ok(())`
    /// on any 2xx, a typed error otherwise (a status error, a connect error,
    /// or a timeout of kind [`TimeoutKind::Health`] after the health timeout,
    /// 2 s by default).
    ///
    /// Sends the same credentials and headers as a check. Never retried: a
    /// readiness probe wants the state now.
    ///
    /// A [`QualityClient`](crate::QualityClient) built with
    /// [`discover_replicas`](crate::ClientBuilder::discover_replicas) asks
    /// the discovered replicas, not the base URL's host: the name is
    /// resolved by the discovery's resolver, and the first replica (in its
    /// order) that accepts a connection answers.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_quality_gate::Error> {
    /// let check = tower_quality_gate::QualityCheck::new("http://127.0.0.1:8000")?;
    /// let ready = check.health().await.is_ok();
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Result<(), Error> {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.shared.config.health_uri.clone();
        *request.headers_mut() = self.shared.config.headers.clone();
        request.headers_mut().remove(http::header::CONTENT_TYPE);
        if let Some(name) = &self.shared.config.request_id_header {
            request.headers_mut().remove(name);
        }
        let call = async {
            let response = self
                .shared
                .client
                .request(request)
                .await
                .map_err(classify)?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let retry_after = RetryAfter::from_head(status, response.headers());
            // An unreadable or long body still leaves the status to report.
            let body = Limited::new(response.into_body(), HEALTH_BODY_READ)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Err(self.shared.config.status_error(status, &body, retry_after))
        };
        let result = match tokio::time::timeout(self.shared.config.health_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(TimeoutKind::Health)),
        };
        result.map_err(|e| e.for_coordinator(&self.shared.config.base))
    }
}
