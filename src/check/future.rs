//! The response future of one check attempt: send, then read the capped body,
//! then decode.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy;

use super::config::Config;
use crate::error::{Error, RetryAfter};
use crate::redact::{Redactor, ERROR_BODY_READ};
use crate::wire::QualityResponse;

/// The future a [`QualityCheck`](super::QualityCheck) call returns.
///
/// It resolves once the whole verdict is read and decoded, so a reset or a
/// stall while the body arrives is part of the attempt (and of any timeout
/// around it). Dropping it aborts the attempt.
pub struct ResponseFuture {
    state: State,
    config: Arc<Config>,
    /// The configured secrets and the call's own secret headers, when it
    /// has any: what an echoing error body is scrubbed of.
    call_secrets: Option<Arc<Redactor>>,
    span: tracing::Span,
    metrics: crate::metrics::AttemptMetrics,
}

enum State {
    Sending(legacy::ResponseFuture),
    Reading {
        body: Incoming,
        read: Read,
        status: StatusCode,
        /// Boxed: only a 429 or a 503 with the header has one, and the
        /// future stays smaller for every other call.
        retry_after: Option<Box<RetryAfter>>,
    },
    Failed(Option<Error>),
    Done,
}

impl ResponseFuture {
    pub(super) fn new(
        sending: legacy::ResponseFuture,
        config: Arc<Config>,
        call_secrets: Option<Arc<Redactor>>,
        span: tracing::Span,
    ) -> Self {
        ResponseFuture {
            state: State::Sending(sending),
            metrics: crate::metrics::AttemptMetrics::start(&config.check_uri),
            config,
            call_secrets,
            span,
        }
    }

    /// A future that fails at once, before anything is sent.
    pub(super) fn failed(error: Error, config: Arc<Config>) -> Self {
        ResponseFuture {
            state: State::Failed(Some(error)),
            config,
            call_secrets: None,
            span: tracing::Span::none(),
            metrics: crate::metrics::AttemptMetrics::none(),
        }
    }

    /// Decides from the response head whether to read the body, and how much.
    fn on_head(&mut self, response: http::Response<Incoming>) -> Result<(), Error> {
        let (parts, body) = response.into_parts();
        let status = parts.status;
        self.metrics.status(status);
        // A disabled span still looks its fields up by name to record
        // nothing: not done unless a subscriber wants the span.
        if !self.span.is_disabled() {
            crate::trace::attempt_status(&self.span, status);
            self.span
                .record("network.protocol.version", protocol_version(parts.version));
        }
        if status.is_success() {
            check_content_type(&parts.headers)?;
            // hyper has parsed `Content-Length` into the body's exact size.
            if body.size_hint().lower() > self.config.body_limit as u64 {
                // Refused from the header alone: the body is never read.
                return Err(Error::body_too_large(self.config.body_limit));
            }
        }
        // Only a 429's or a 503's Retry-After matters to the retry policy.
        let retry_after = RetryAfter::from_head(status, &parts.headers);
        self.state = State::Reading {
            body,
            read: Read::Empty,
            status,
            retry_after: retry_after.map(Box::new),
        };
        Ok(())
    }

    fn finish(&mut self, result: Result<QualityResponse, Error>) -> Poll<<Self as Future>::Output> {
        self.state = State::Done;
        let result = result.map_err(|e| e.for_coordinator(&self.config.base));
        self.metrics.finish(result.as_ref().err());
        match &result {
            Ok(verdict) => {
                tracing::debug!(approved = verdict.approved, gate = %verdict.gate, "verdict");
            }
            Err(err) => {
                if !self.span.is_disabled() {
                    crate::trace::attempt_failed(&self.span, err);
                }
                tracing::debug!(error = %err, retryable = err.is_retryable(), "attempt failed");
            }
        }
        Poll::Ready(result)
    }
}

impl Future for ResponseFuture {
    type Output = Result<QualityResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Entered only when a subscriber wants it (a disabled span's enter
        // does nothing but cost a clone).
        let span = (!this.span.is_disabled()).then(|| this.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        loop {
            match &mut this.state {
                State::Sending(sending) => {
                    let result = ready!(Pin::new(sending).poll(cx));
                    let head = result.map_err(classify).and_then(|r| this.on_head(r));
                    if let Err(err) = head {
                        return this.finish(Err(err));
                    }
                }
                State::Reading {
                    body,
                    read,
                    status,
                    retry_after,
                } => {
                    let status = *status;
                    // Success bodies are read up to the cap; error bodies only
                    // far enough for a snippet.
                    let limit = if status.is_success() {
                        this.config.body_limit
                    } else {
                        ERROR_BODY_READ
                    };
                    let done = match ready!(Pin::new(body).poll_frame(cx)) {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) if read.len() + data.len() > limit => {
                                if status.is_success() {
                                    return this.finish(Err(Error::body_too_large(limit)));
                                }
                                let keep = limit - read.len();
                                read.push_slice(&data[..keep]);
                                true
                            }
                            Ok(data) => {
                                read.push(data);
                                false
                            }
                            Err(_) => false,
                        },
                        Some(Err(err)) => return this.finish(Err(Error::transport(err))),
                        None => true,
                    };
                    if done {
                        let body = std::mem::replace(read, Read::Empty).into_bytes();
                        let retry_after = retry_after.as_deref().copied();
                        let result = this.decode(status, &body, retry_after);
                        return this.finish(result);
                    }
                }
                State::Failed(error) => {
                    let error = error.take().unwrap_or_else(Error::not_ready);
                    return this.finish(Err(error));
                }
                // Polled after completion: a misuse, answered without a panic.
                State::Done => return Poll::Ready(Err(Error::not_ready())),
            }
        }
    }
}

/// The body of a response, as read so far.
enum Read {
    Empty,
    /// The first data frame, kept as it came while it is the only one: a
    /// small verdict arrives in one frame and is never copied.
    One(Bytes),
    /// Several frames, copied together.
    Many(BytesMut),
}

impl Read {
    fn len(&self) -> usize {
        match self {
            Read::Empty => 0,
            Read::One(data) => data.len(),
            Read::Many(buf) => buf.len(),
        }
    }

    /// Adds a frame, kept as it is if it is the first.
    fn push(&mut self, data: Bytes) {
        match self {
            Read::Empty => *self = Read::One(data),
            _ => self.push_slice(&data),
        }
    }

    /// Adds a copy of `data`.
    fn push_slice(&mut self, data: &[u8]) {
        match self {
            Read::Many(buf) => buf.extend_from_slice(data),
            _ => {
                let mut buf = BytesMut::with_capacity(self.len() + data.len());
                if let Read::One(first) = self {
                    buf.extend_from_slice(first);
                }
                buf.extend_from_slice(data);
                *self = Read::Many(buf);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Read::Empty => Bytes::new(),
            Read::One(data) => data,
            Read::Many(buf) => buf.freeze(),
        }
    }
}

impl ResponseFuture {
    fn decode(
        &self,
        status: StatusCode,
        body: &Bytes,
        retry_after: Option<RetryAfter>,
    ) -> Result<QualityResponse, Error> {
        if status.is_success() {
            QualityResponse::from_json(body)
        } else {
            Err(match &self.call_secrets {
                Some(secrets) => self
                    .config
                    .status_error_using(secrets, status, body, retry_after),
                None => self.config.status_error(status, body, retry_after),
            })
        }
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        // Dropped while in flight: cut by a timer, or cancelled.
        if matches!(self.state, State::Sending(_) | State::Reading { .. }) {
            crate::trace::attempt_dropped(&self.span);
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Sending(_) => "sending",
            State::Reading { .. } => "reading",
            State::Failed(_) => "failed",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Splits hyper-util's errors into "never connected" and "failed after".
///
/// A request lost on a pooled connection the coordinator had just closed is
/// a transport error like any other: hyper-util already resends a request
/// it never wrote, and one that was written may have reached the
/// coordinator, so resending it is a retry, counted and budgeted. Only an
/// HTTP/2 stream the coordinator refused (`REFUSED_STREAM`, or above a
/// `GOAWAY`'s last stream id) provably went unprocessed (RFC 9113 §8.7),
/// and is marked so ([`Error::is_unprocessed`]).
pub(super) fn classify(err: legacy::Error) -> Error {
    if err.is_connect() {
        Error::connect(err)
    } else if crate::http2::unprocessed_h2(&err) {
        Error::transport(err).unprocessed()
    } else {
        Error::transport(err)
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A present content type must be JSON (`application/json` or `…+json`);
/// a missing one is tolerated and the body decides.
fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    // The common answer, compared without parsing.
    if value.as_bytes() == b"application/json" {
        return Ok(());
    }
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes();
    let json_suffix =
        essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json");
    if essence.eq_ignore_ascii_case(b"application/json") || json_suffix {
        Ok(())
    } else {
        Err(Error::invalid("content type is not JSON"))
    }
}
