//! The response body a scripted reply streams: whole, sized filler,
//! trickling, endless, or cut part-way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::reply::BodyPlan;
use super::state::InFlight;

const FILLER: Bytes = Bytes::from_static(&[b' '; 16 * 1024]);

/// Where a [`BodyPlan::CutAfter`] body is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CutStep {
    Send,
    /// The part was handed to hyper; one `Pending` lets it flush the head and
    /// the part to the socket before the cut.
    Flush,
    Cut,
}

/// The body of a scripted response; holds the request's in-flight count
/// until it is finished or dropped.
pub(crate) struct FaultBody {
    plan: BodyPlan,
    sent: u64,
    step: CutStep,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    in_flight: InFlight,
}

impl FaultBody {
    pub(crate) fn new(plan: BodyPlan, in_flight: InFlight) -> Self {
        FaultBody {
            plan,
            sent: 0,
            step: CutStep::Send,
            sleep: None,
            in_flight,
        }
    }
}

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
            BodyPlan::CutAfter { bytes, reset } => match this.step {
                CutStep::Send => {
                    this.step = CutStep::Flush;
                    Poll::Ready(Some(Ok(Frame::data(bytes.clone()))))
                }
                CutStep::Flush => {
                    this.step = CutStep::Cut;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                CutStep::Cut => {
                    if *reset {
                        this.in_flight.conn.reset();
                    } else {
                        this.in_flight.conn.close();
                    }
                    // The connection's task drops the connection, and this
                    // body with it.
                    Poll::Pending
                }
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.plan {
            BodyPlan::Bytes(b) => SizeHint::with_exact(b.len() as u64),
            BodyPlan::Sized(len) => SizeHint::with_exact(*len),
            BodyPlan::CutAfter { bytes, .. } => SizeHint::with_exact(bytes.len() as u64 * 2 + 2),
            _ => SizeHint::default(),
        }
    }
}

/// The error that makes hyper drop a connection without answering.
#[derive(Debug)]
pub(crate) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection cut")
    }
}

impl std::error::Error for Cut {}
