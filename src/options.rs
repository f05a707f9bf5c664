//! [`CallOptions`]: what a caller says about one call that is not part of
//! the wire body.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// Per-call options of a [`QualityRequest`](crate::QualityRequest): a
/// deadline, a request id, extra headers. They are not serialized; they
/// travel with the request through any tower stack, and the
/// [`Identify`](crate::call::Identify) layer turns them into the
/// [`Call`](crate::call::Call) every attempt shares.
///
/// Set them with the request's builder methods
/// ([`deadline`](crate::QualityRequest::deadline),
/// [`timeout`](crate::QualityRequest::timeout),
/// [`request_id`](crate::QualityRequest::request_id),
/// [`header`](crate::QualityRequest::header)); read them with
/// [`options`](crate::QualityRequest::options).
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The instant by which the call must be over, waits, retries and
    /// backoff included (default none: the client's overall timeout alone).
    pub deadline: Option<Instant>,
    /// The most the call may take, counted from when it starts; combined
    /// with `deadline` and the client's overall timeout, the earliest wins.
    pub timeout: Option<Duration>,
    /// The request id to send instead of a generated one (default none:
    /// the client generates one).
    pub request_id: Option<HeaderValue>,
    /// Headers sent with every attempt of this call only (for example
    /// `traceparent`). The headers the client owns are refused, as they are
    /// in a configuration (`host`, `content-length`, `content-type`,
    /// `transfer-encoding`, `connection`, `keep-alive`, `proxy-connection`,
    /// `te`, `trailer`, `upgrade`, `user-agent`), and so is the request-id
    /// header, which has its own option: the call fails with a
    /// configuration error and nothing is sent.
    pub headers: HeaderMap,
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header names only: a per-call header may carry a credential.
        f.debug_struct("CallOptions")
            .field("deadline", &self.deadline)
            .field("timeout", &self.timeout)
            .field("request_id", &self.request_id)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CallOptions {
    /// The earliest of the caller's deadline, the caller's timeout and the
    /// client's `default_timeout`, counted from `now`.
    pub(crate) fn effective_deadline(
        &self,
        now: Instant,
        default_timeout: Option<Duration>,
    ) -> Option<Instant> {
        // The shortest timeout first: one addition to the clock, not two.
        // (Timeouts past the 30 years `saturating_add` clamps to all mean
        // "never"; which of them wins does not matter.)
        let timeout = crate::time::earliest(self.timeout, default_timeout);
        let after = timeout.map(|d| crate::time::saturating_add(now, d));
        crate::time::earliest(self.deadline, after)
    }
}
