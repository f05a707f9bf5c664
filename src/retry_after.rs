//! `Retry-After` (RFC 9110 §10.2.3): parsed once, where the response head
//! is read, and turned into a wait only when a retry policy asks.

use std::time::{Duration, SystemTime};

use http::StatusCode;

/// A `Retry-After` header, kept as sent: seconds, or an HTTP date that is
/// turned into a wait only when it is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    Delay(Duration),
    At(SystemTime),
}

impl RetryAfter {
    /// The `Retry-After` of a response that may carry one: only 429 (Too
    /// Many Requests) and 503 (Service Unavailable), the two statuses whose
    /// `Retry-After` asks the client to wait (RFC 9110 §10.2.3). On any
    /// other status it is ignored.
    pub(crate) fn from_head(status: StatusCode, headers: &http::HeaderMap) -> Option<RetryAfter> {
        if !honours_retry_after(status) {
            return None;
        }
        headers
            .get(http::header::RETRY_AFTER)
            .and_then(RetryAfter::parse)
    }

    /// Parses `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`.
    ///
    /// Any run of digits is a delay in seconds, saturating: a number too
    /// large for a `u64` asks for `u64::MAX` seconds, far beyond any cap,
    /// rather than being ignored (which would retry at once).
    pub(crate) fn parse(value: &http::HeaderValue) -> Option<RetryAfter> {
        let s = std::str::from_utf8(value.as_bytes()).ok()?.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let secs = s.parse::<u64>().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(secs)));
        }
        httpdate::parse_http_date(s).ok().map(RetryAfter::At)
    }

    /// The wait this asks for, as of `now`; a date in the past asks for none.
    pub(crate) fn delay_from(self, now: SystemTime) -> Duration {
        match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(t) => t.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// Whether a status's `Retry-After` is honoured: 429 and 503 only.
pub(crate) fn honours_retry_after(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}
