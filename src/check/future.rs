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
use super::stamp::lost_on_pooled_connection;
use crate::error::{Error, RetryAfter};
use crate::wire::QualityResponse;

/// How much of an error response's body is read for the error's snippet.
const ERROR_BODY_READ: usize = 1024;

/// The future a [`QualityCheck`](super::QualityCheck) call returns.
///
/// It resolves once the whole verdict is read and decoded, so a reset or a
/// stall while the body arrives is part of the attempt (and of any timeout
/// around it). Dropping it aborts the attempt.
pub struct ResponseFuture {
    state: State,
    config: Arc<Config>,
    span: tracing::Span,
    /// The attempt's place in the order of connection opens.
    ticket: u64,
}

enum State {
    Sending(legacy::ResponseFuture),
    Reading {
        body: Incoming,
        /// The first data frame, kept as it came while it is the only one:
        /// a small verdict arrives in one frame and is never copied.
        first: Option<Bytes>,
        buf: BytesMut,
        status: StatusCode,
        retry_after: Option<RetryAfter>,
    },
    Done,
}

impl ResponseFuture {
    pub(super) fn new(
        sending: legacy::ResponseFuture,
        config: Arc<Config>,
        span: tracing::Span,
        ticket: u64,
    ) -> Self {
        ResponseFuture {
            state: State::Sending(sending),
            config,
            span,
            ticket,
        }
    }

    /// Decides from the response head whether to read the body, and how much.
    fn on_head(&mut self, response: http::Response<Incoming>) -> Result<(), Error> {
        let (parts, body) = response.into_parts();
        let status = parts.status;
        self.span.record("status", status.as_u16());
        if status.is_success() {
            check_content_type(&parts.headers)?;
            if content_length(&parts.headers).is_some_and(|n| n > self.config.body_limit as u64) {
                // Refused from the header alone: the body is never read.
                return Err(Error::body_too_large(self.config.body_limit));
            }
        }
        // Only an error answer's Retry-After matters to the retry policy.
        let retry_after = if status.is_success() {
            None
        } else {
            parts
                .headers
                .get(header::RETRY_AFTER)
                .and_then(RetryAfter::parse)
        };
        self.state = State::Reading {
            body,
            first: None,
            buf: BytesMut::new(),
            status,
            retry_after,
        };
        Ok(())
    }

    fn finish(&mut self, result: Result<QualityResponse, Error>) -> Poll<<Self as Future>::Output> {
        self.state = State::Done;
        match &result {
            Ok(verdict) => {
                let outcome = if verdict.approved {
                    "approved"
                } else {
                    "rejected"
                };
                self.span.record("outcome", outcome);
                tracing::debug!(gate = %verdict.gate, "verdict");
            }
            Err(err) => {
                self.span.record("outcome", err.kind().as_str());
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
        let span = this.span.clone();
        let _entered = span.enter();
        loop {
            match &mut this.state {
                State::Sending(sending) => {
                    let result = ready!(Pin::new(sending).poll(cx));
                    let ticket = this.ticket;
                    let head = result
                        .map_err(|e| classify(e, ticket))
                        .and_then(|r| this.on_head(r));
                    if let Err(err) = head {
                        return this.finish(Err(err));
                    }
                }
                State::Reading {
                    body,
                    first,
                    buf,
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
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
                                if have + data.len() > limit {
                                    if status.is_success() {
                                        return this.finish(Err(Error::body_too_large(limit)));
                                    }
                                    if let Some(f) = first.take() {
                                        buf.extend_from_slice(&f);
                                    }
                                    let keep = limit - have;
                                    buf.extend_from_slice(&data[..keep]);
                                    true
                                } else if have == 0 {
                                    *first = Some(data);
                                    false
                                } else {
                                    if let Some(f) = first.take() {
                                        buf.reserve(f.len() + data.len());
                                        buf.extend_from_slice(&f);
                                    }
                                    buf.extend_from_slice(&data);
                                    false
                                }
                            } else {
                                false
                            }
                        }
                        Some(Err(err)) => return this.finish(Err(Error::transport(err))),
                        None => true,
                    };
                    if done {
                        let body = match first.take() {
                            Some(only) if buf.is_empty() => only,
                            _ => buf.split().freeze(),
                        };
                        let retry_after = *retry_after;
                        let result = this.decode(status, &body, retry_after);
                        return this.finish(result);
                    }
                }
                State::Done => panic!("ResponseFuture polled after completion"),
            }
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
            Err(self.config.status_error(status, body, retry_after))
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Sending(_) => "sending",
            State::Reading { .. } => "reading",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Splits hyper-util's errors into "never connected" and "failed after",
/// and marks a request lost on a pooled connection the coordinator had
/// closed (see [`stamp`](super::stamp)).
pub(super) fn classify(err: legacy::Error, ticket: u64) -> Error {
    if err.is_connect() {
        Error::connect(err)
    } else if lost_on_pooled_connection(&err, ticket) || crate::http2::unprocessed_h2(&err) {
        Error::transport(err).lost_on_pooled_connection()
    } else {
        Error::transport(err)
    }
}

/// A present content type must be JSON (`application/json` or `…+json`);
/// a missing one is tolerated and the body decides.
fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
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

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
