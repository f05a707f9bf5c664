//! What the test coordinator answers: a verdict, a status, or a fault.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use crate::wire::QualityResponse;

/// One scripted answer of a [`TestCoordinator`](super::TestCoordinator).
///
/// Start from a verdict, a status or a fault, then adjust it:
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::testing::Reply;
///
/// let slow_reject = Reply::reject("lint", "2 warnings").delay(Duration::from_millis(50));
/// let busy = Reply::status(503).retry_after("1");
/// let huge = Reply::approve().body_of_size(10 * 1024 * 1024);
/// let once = Reply::approve().connection_close();
/// # let _ = (slow_reject, busy, huge, once);
/// ```
///
/// The faults, by where they strike:
///
/// | before the head | in the body | after the response |
/// |---|---|---|
/// | [`delay`](Self::delay), [`hang`](Self::hang) | [`trickle`](Self::trickle), [`endless_body`](Self::endless_body), [`body_of_size`](Self::body_of_size) | [`connection_close`](Self::connection_close) |
/// | [`close_before_headers`](Self::close_before_headers) (FIN) | [`cut_mid_body`](Self::cut_mid_body) (FIN) | |
/// | [`reset_before_headers`](Self::reset_before_headers) (RST) | [`reset_mid_body`](Self::reset_mid_body) (RST) | |
///
/// and, for the verdict itself, [`malformed_json`](Self::malformed_json),
/// [`json`](Self::json) of any shape, and [`content_type`](Self::content_type).
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: BodyPlan,
    pub(crate) delay: Duration,
    pub(crate) abort: Option<Abort>,
}

/// How a reply ends the connection instead of answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abort {
    /// A clean close (FIN).
    Close,
    /// A reset (RST).
    Reset,
}

impl Reply {
    /// An approval by the `all` gate.
    pub fn approve() -> Reply {
        Reply::verdict(&QualityResponse::approved("all"))
    }

    /// A rejection by `gate` with `message`.
    pub fn reject(gate: &str, message: &str) -> Reply {
        Reply::verdict(&QualityResponse::rejected(gate, message))
    }

    /// This verdict, as JSON with status 200.
    pub fn verdict(verdict: &QualityResponse) -> Reply {
        Reply::json(&serde_json::to_value(verdict).unwrap_or(Value::Null))
    }

    /// Any JSON value with status 200 (for wrong shapes and unknown fields).
    pub fn json(value: &Value) -> Reply {
        Reply::raw(200, "application/json", value.to_string())
    }

    /// A status with an empty JSON error body, e.g. `Reply::status(503)`.
    pub fn status(status: u16) -> Reply {
        Reply::raw(status, "application/json", r#"{"error":"scripted"}"#)
    }

    /// A body as given, with this status and content type.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: vec![("content-type".into(), content_type.into())],
            body: BodyPlan::Bytes(body.into()),
            delay: Duration::ZERO,
            abort: None,
        }
    }

    /// Status 200 with a body that is not JSON at all.
    pub fn malformed_json() -> Reply {
        Reply::raw(200, "application/json", r#"{"approved": tru"#)
    }

    /// Waits this long before sending the response head.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Adds a `Retry-After` header (seconds, or an HTTP date).
    pub fn retry_after(self, value: &str) -> Reply {
        self.header("retry-after", value)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the content type.
    pub fn content_type(mut self, content_type: &str) -> Reply {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        self.header("content-type", content_type)
    }

    /// Streams `len` bytes of filler (spaces) instead of the body, announced
    /// by its `Content-Length`.
    pub fn body_of_size(mut self, len: u64) -> Reply {
        self.body = BodyPlan::Sized(len);
        self
    }

    /// Sends the body `chunk` bytes at a time, `every` apart.
    pub fn trickle(mut self, chunk: usize, every: Duration) -> Reply {
        let bytes = match &self.body {
            BodyPlan::Bytes(b) => b.clone(),
            _ => Bytes::new(),
        };
        self.body = BodyPlan::Trickle {
            bytes,
            chunk: chunk.max(1),
            every,
        };
        self
    }

    /// Sends the head, then body chunks forever, without a `Content-Length`:
    /// only a reading cap or a timeout stops a client.
    pub fn endless_body(mut self) -> Reply {
        self.body = BodyPlan::Endless;
        self
    }

    /// Never answers: the head is never sent.
    pub fn hang() -> Reply {
        Reply::approve().delay(Duration::MAX)
    }

    /// Sends `Connection: close`, and closes the connection after this
    /// response, as a server that limits requests per connection does: the
    /// client must not reuse it.
    pub fn connection_close(self) -> Reply {
        self.header("connection", "close")
    }

    /// Closes the connection cleanly (a FIN) without answering, after any
    /// delay.
    pub fn close_before_headers() -> Reply {
        Reply {
            abort: Some(Abort::Close),
            ..Reply::approve()
        }
    }

    /// Resets the connection (a RST, not a clean close) without answering,
    /// after any delay: the client reads `ECONNRESET`, as from a crashed
    /// process or a load balancer that dropped the connection.
    ///
    /// ```
    /// use tower_quality_gate::testing::{Reply, TestCoordinator};
    /// use tower_quality_gate::{QualityCheck, QualityRequest};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let coordinator = TestCoordinator::start().await;
    /// coordinator.push(Reply::reset_before_headers());
    /// let check = QualityCheck::new(coordinator.url())?;
    /// let err = check.oneshot(QualityRequest::new("t-1", "a-1")).await.unwrap_err();
    /// assert!(err.is_transport() && err.is_retryable());
    /// # Ok(()) }
    /// ```
    pub fn reset_before_headers() -> Reply {
        Reply {
            abort: Some(Abort::Reset),
            ..Reply::approve()
        }
    }

    /// Sends the head announcing the whole body, half of it, then closes the
    /// connection cleanly (a FIN).
    pub fn cut_mid_body() -> Reply {
        Reply::approve().cut_body(false)
    }

    /// Sends the head announcing the whole body, half of it, then resets the
    /// connection (a RST).
    pub fn reset_mid_body() -> Reply {
        Reply::approve().cut_body(true)
    }

    fn cut_body(mut self, reset: bool) -> Reply {
        if let BodyPlan::Bytes(b) = &self.body {
            self.body = BodyPlan::CutAfter {
                bytes: b.slice(..b.len() / 2),
                reset,
            };
        }
        self
    }
}

/// What the body of a reply streams.
#[derive(Clone, Debug)]
pub(crate) enum BodyPlan {
    /// These bytes, with a `Content-Length`.
    Bytes(Bytes),
    /// `len` bytes of filler, streamed in 16 KiB chunks with a `Content-Length`.
    Sized(u64),
    /// These bytes, one `chunk` at a time, `every` apart.
    Trickle {
        bytes: Bytes,
        chunk: usize,
        every: Duration,
    },
    /// Chunks forever.
    Endless,
    /// A `Content-Length` of `bytes.len() * 2 + 2`, then `bytes`, then the
    /// connection is closed (or reset).
    CutAfter { bytes: Bytes, reset: bool },
}
