//! What the test coordinator answers: a verdict, a status, or a fault.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;

use crate::wire::QualityResponse;

/// One scripted answer of a [`TestCoordinator`](super::TestCoordinator).
///
/// Start from a verdict, a status or a fault, then adjust it:
///
/// ```
/// use std::time::Duration;
/// use quality_gate::testing::Reply;
///
/// let slow_reject = Reply::reject("lint", "2 warnings").delay(Duration::from_millis(50));
/// let busy = Reply::status(503).retry_after("1");
/// let huge = Reply::approve().body_of_size(10 * 1024 * 1024);
/// # let _ = (slow_reject, busy, huge);
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: BodyPlan,
    pub(crate) delay: Duration,
    pub(crate) close_before_headers: bool,
}

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
    /// A `Content-Length` of `bytes.len() * 2`, then `bytes`, then the
    /// connection is cut.
    CutAfter(Bytes),
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
            close_before_headers: false,
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

    /// Closes the connection without answering (after any delay).
    pub fn close_before_headers() -> Reply {
        Reply {
            close_before_headers: true,
            ..Reply::approve()
        }
    }

    /// Sends the head announcing the whole body, half of it, then cuts the
    /// connection.
    pub fn cut_mid_body() -> Reply {
        let mut reply = Reply::approve();
        if let BodyPlan::Bytes(b) = &reply.body {
            reply.body = BodyPlan::CutAfter(b.slice(..b.len() / 2));
        }
        reply
    }
}

/// Counts a request as in flight until its response body is done or dropped.
pub(crate) struct InFlight(pub(crate) Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

const FILLER: Bytes = Bytes::from_static(&[b' '; 16 * 1024]);

/// The body a scripted reply streams.
pub(crate) struct FaultBody {
    plan: BodyPlan,
    sent: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    _in_flight: InFlight,
}

impl FaultBody {
    pub(crate) fn new(plan: BodyPlan, in_flight: InFlight) -> Self {
        FaultBody {
            plan,
            sent: 0,
            sleep: None,
            _in_flight: in_flight,
        }
    }
}

/// The error that makes hyper cut a connection mid-body.
#[derive(Debug)]
pub(crate) struct Cut;

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scripted connection cut")
    }
}

impl std::error::Error for Cut {}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let this = &mut *self;
        match &this.plan {
            BodyPlan::Bytes(b) => {
                if this.sent > 0 || b.is_empty() {
                    return Poll::Ready(None);
                }
                this.sent = b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b.clone()))))
            }
            BodyPlan::Sized(len) => {
                let left = len - this.sent;
                if left == 0 {
                    return Poll::Ready(None);
                }
                let n = left.min(FILLER.len() as u64);
                this.sent += n;
                Poll::Ready(Some(Ok(Frame::data(FILLER.slice(..n as usize)))))
            }
            BodyPlan::Endless => Poll::Ready(Some(Ok(Frame::data(FILLER.clone())))),
            BodyPlan::Trickle {
                bytes,
                chunk,
                every,
            } => {
                if this.sent as usize >= bytes.len() {
                    return Poll::Ready(None);
                }
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(*every)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                let start = this.sent as usize;
                let end = (start + chunk).min(bytes.len());
                this.sent = end as u64;
                Poll::Ready(Some(Ok(Frame::data(bytes.slice(start..end)))))
            }
            BodyPlan::CutAfter(b) => {
                if this.sent > 0 {
                    return Poll::Ready(Some(Err(Cut)));
                }
                this.sent = 1;
                Poll::Ready(Some(Ok(Frame::data(b.clone()))))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.plan {
            BodyPlan::Bytes(b) => SizeHint::with_exact(b.len() as u64),
            BodyPlan::Sized(len) => SizeHint::with_exact(*len),
            BodyPlan::CutAfter(b) => SizeHint::with_exact(b.len() as u64 * 2 + 2),
            _ => SizeHint::default(),
        }
    }
}
