//! Carrying a server request's context into the quality check it makes:
//! its request id, its W3C trace context and its gRPC deadline.
//!
//! [`QualityGate`](crate::gate::QualityGate) does this for every request
//! by default ([`Propagation`]); a handler that calls a
//! [`QualityClient`](crate::QualityClient) itself can use the same pieces:
//! [`Propagation::extract`] on the incoming headers, then
//! [`Propagated::apply`] to the [`QualityRequest`], or the parsers alone
//! ([`parse_grpc_timeout`], [`is_valid_traceparent`]).
//!
//! What is taken, and what is ignored:
//!
//! - **request id**: the `x-request-id` header, when it is 1 to 128
//!   visible ASCII characters (anything else could not be logged or sent
//!   safely, and is ignored; the client then generates one);
//! - **trace context**: `traceparent` when it is exactly one valid W3C
//!   header (`00-{32 hex}-{16 hex}-{2 hex}`, lowercase, ids not all zero;
//!   a higher version is parsed as W3C Trace Context §4.3 says and sent on
//!   as version `00`), and `tracestate` only along with such a
//!   `traceparent` (at most 512 bytes and 32 members, several headers
//!   joined with `,`). With the `opentelemetry` feature the gate joins the
//!   trace instead of relaying these ([`crate::otel`]);
//! - **deadline**: `grpc-timeout` (1 to 8 ASCII digits and a unit `H`, `M`,
//!   `S`, `m`, `u` or `n`, as gRPC's HTTP/2 protocol says); the check must
//!   end a margin ([`deadline_margin`]) before the caller stops waiting,
//!   counted from when the request arrived, so reading its body counts
//!   against it, and the answer has time to travel back.
//!
//! ```
//! use std::time::Duration;
//! use http::HeaderMap;
//! use tower_quality_gate::propagate::Propagation;
//! use tower_quality_gate::QualityRequest;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-request-id", "req-42".parse().unwrap());
//! headers.insert("grpc-timeout", "200m".parse().unwrap());
//! headers.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
//! );
//!
//! let context = Propagation::default().extract(&headers);
//! let check = context.apply(QualityRequest::new("task-1", "agent-1"));
//! assert_eq!(check.options().request_id.as_ref().unwrap(), "req-42");
//! assert!(check.options().headers.contains_key("traceparent"));
//! assert!(check.options().deadline.is_some());
//! ```

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::request_id::DEFAULT_REQUEST_ID_HEADER;
use crate::wire::QualityRequest;

/// The gRPC deadline header: `grpc-timeout`.
const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The W3C trace-context header: `traceparent`.
const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace-state header: `tracestate`.
const TRACESTATE: &str = "tracestate";

/// The longest request id taken from an incoming request: 128 bytes, room
/// for any UUID or ULID with a prefix, too little to smuggle a payload.
const MAX_REQUEST_ID: usize = 128;
/// W3C: vendors may drop a `tracestate` longer than 512 characters.
const MAX_TRACESTATE: usize = 512;
/// W3C: at most 32 list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The most [`deadline_margin`] takes off an incoming deadline.
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// How much earlier than an incoming `grpc-timeout` the check must end:
/// a tenth of it, at most 50 ms.
///
/// The caller's timer started before it sent the request and stops when
/// the answer arrives, so the time the request and the answer spend on
/// the way (and the server spends encoding a status) is not in the
/// timeout the server sees. Without a margin the check ends as the
/// caller's own deadline passes, and the caller reports its own local
/// `DEADLINE_EXCEEDED`, without the server's metadata (`x-error-kind`,
/// `x-request-id`). A tenth scales with the deadline (a caller with a
/// tight one is near: 30 ms of 300 ms); the 50 ms cap covers a round trip
/// between zones without taking seconds off a long deadline. Envoy's
/// `grpc_timeout_header_offset` does the same with a fixed offset.
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::propagate::deadline_margin;
///
/// assert_eq!(deadline_margin(Duration::from_millis(300)), Duration::from_millis(30));
/// assert_eq!(deadline_margin(Duration::from_secs(30)), Duration::from_millis(50));
/// ```
pub fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 10).min(MAX_DEADLINE_MARGIN)
}

/// What [`QualityGate`](crate::gate::QualityGate) carries from an incoming
/// request into the check it makes: by default ([`Propagation::default`])
/// the request id, the trace context and the gRPC deadline, each of which
/// can be turned off; [`Propagation::none`] takes nothing.
///
/// On by default because a check made on behalf of a request is part of
/// it: the coordinator's logs should carry the caller's id and trace, and a
/// check nobody waits for any more should not hold a slot.
///
/// ```
/// use tower_quality_gate::propagate::Propagation;
///
/// let only_ids = Propagation::none().request_id(true);
/// assert_ne!(only_ids, Propagation::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Propagation {
    request_id: bool,
    pub(crate) trace_context: bool,
    deadline: bool,
}

impl Default for Propagation {
    /// Everything on.
    fn default() -> Self {
        Propagation {
            request_id: true,
            trace_context: true,
            deadline: true,
        }
    }
}

impl Propagation {
    /// Propagates nothing: each check gets a new request id, no trace
    /// headers and only the client's own deadline.
    pub const fn none() -> Self {
        Propagation {
            request_id: false,
            trace_context: false,
            deadline: false,
        }
    }

    /// Whether to send the incoming `x-request-id` (default true).
    pub const fn request_id(mut self, on: bool) -> Self {
        self.request_id = on;
        self
    }

    /// Whether to send the incoming `traceparent` and `tracestate` (default
    /// true).
    pub const fn trace_context(mut self, on: bool) -> Self {
        self.trace_context = on;
        self
    }

    /// Whether to end the check by the incoming `grpc-timeout` (default
    /// true).
    pub const fn deadline(mut self, on: bool) -> Self {
        self.deadline = on;
        self
    }

    /// Reads what is to be propagated from an incoming request's headers,
    /// now: a deadline is counted from this call. Invalid values are left
    /// out, never an error.
    pub fn extract(&self, headers: &HeaderMap) -> Propagated {
        let mut out = Propagated::default();
        if self.request_id {
            out.request_id = headers
                .get(DEFAULT_REQUEST_ID_HEADER)
                .filter(|v| is_valid_request_id(v.as_bytes()))
                .cloned();
        }
        if self.trace_context {
            let mut parents = headers.get_all(TRACEPARENT).iter();
            if let (Some(parent), None) = (parents.next(), parents.next()) {
                if let Some(parent) = traceparent(parent) {
                    out.traceparent = Some(parent);
                    out.tracestate = tracestate(headers);
                }
            }
        }
        if self.deadline {
            out.deadline = headers
                .get(GRPC_TIMEOUT)
                .and_then(|v| parse_grpc_timeout(v.as_bytes()))
                .map(|timeout| crate::time::after(timeout - deadline_margin(timeout)));
        }
        out
    }

    /// [`extract`](Self::extract), adding the id from tower-http's
    /// `SetRequestIdLayer` (the `RequestId` extension) when the headers
    /// carry none.
    #[cfg(feature = "tower-http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tower-http")))]
    pub fn extract_with_extensions(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Propagated {
        let mut out = self.extract(headers);
        if self.request_id && out.request_id.is_none() {
            out.request_id = extensions
                .get::<tower_http::request_id::RequestId>()
                .map(|id| id.header_value())
                .filter(|v| is_valid_request_id(v.as_bytes()))
                .cloned();
        }
        out
    }
}

/// The context taken from one incoming request by
/// [`Propagation::extract`], to [`apply`](Self::apply) to the check made
/// for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Propagated {
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    deadline: Option<Instant>,
}

impl Propagated {
    /// The incoming request id, if valid.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }

    /// The incoming `traceparent`, if valid.
    pub fn traceparent(&self) -> Option<&HeaderValue> {
        self.traceparent.as_ref()
    }

    /// The instant the check must end by, if the request had a
    /// `grpc-timeout`: its end less [`deadline_margin`].
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The same context without the trace headers, for a gate that joined
    /// the trace itself.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn without_trace_context(self) -> Self {
        Propagated {
            traceparent: None,
            tracestate: None,
            ..self
        }
    }

    /// Adds the context to `request`, without overriding what it already
    /// says: its own request id and trace headers are kept (its own
    /// `traceparent` keeps the incoming `tracestate` out, and its own
    /// `tracestate` is kept even when the incoming `traceparent` is
    /// added), and its deadline becomes the earlier of its own and the
    /// incoming one.
    pub fn apply(self, mut request: QualityRequest) -> QualityRequest {
        if self.request_id.is_none() && self.traceparent.is_none() && self.deadline.is_none() {
            // Nothing to add (a `tracestate` travels only with its
            // `traceparent`): a request without options stays without.
            return request;
        }
        let options = request.options_mut();
        if options.request_id.is_none() {
            options.request_id = self.request_id;
        }
        let traceparent = HeaderName::from_static(TRACEPARENT);
        if !options.headers.contains_key(&traceparent) {
            if let Some(parent) = self.traceparent {
                options.headers.insert(traceparent, parent);
                let tracestate = HeaderName::from_static(TRACESTATE);
                if let Some(state) = self.tracestate {
                    if !options.headers.contains_key(&tracestate) {
                        options.headers.insert(tracestate, state);
                    }
                }
            }
        }
        options.deadline = crate::time::earliest(options.deadline, self.deadline);
        request
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits followed by one unit,
/// `H` (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u`
/// (microseconds) or `n` (nanoseconds). Anything else is `None`, as gRPC
/// says a malformed value means no deadline.
///
/// tonic has no getter for the incoming deadline; a handler reads it from
/// the request's metadata:
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::propagate::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"200m"), Some(Duration::from_millis(200)));
/// assert_eq!(parse_grpc_timeout(b"30000000u"), Some(Duration::from_secs(30))); // tonic's 30 s
/// assert_eq!(parse_grpc_timeout(b"300000000u"), None); // 9 digits
/// assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout(b"5"), None); // no unit
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 99,999,999: no overflow in any unit below.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether `value` is a W3C `traceparent` this crate takes: version `00`
/// exactly as `00-{trace-id: 32 hex}-{parent-id: 16 hex}-{flags: 2 hex}`,
/// lowercase hex, neither id all zeros; or a higher version (not `ff`,
/// which is invalid) whose first four fields have that form, followed by
/// the end or a `-` and whatever a later version adds (W3C Trace Context
/// §4.3: parse the fields known, ignore the rest).
///
/// ```
/// use tower_quality_gate::propagate::is_valid_traceparent;
///
/// assert!(is_valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// assert!(is_valid_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
/// assert!(!is_valid_traceparent(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// assert!(!is_valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
/// assert!(!is_valid_traceparent(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
/// assert!(!is_valid_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
/// ```
pub fn is_valid_traceparent(value: &[u8]) -> bool {
    parse_traceparent(value).is_some()
}

/// The four fields of a valid `traceparent`, as hex text.
struct TraceParent<'a> {
    version: &'a [u8],
    trace_id: &'a [u8],
    parent_id: &'a [u8],
    flags: &'a [u8],
}

/// The fields of a valid `traceparent` (see [`is_valid_traceparent`]).
fn parse_traceparent(value: &[u8]) -> Option<TraceParent<'_>> {
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    if value.len() < 55 {
        return None;
    }
    let (head, rest) = value.split_at(55);
    let version = &head[..2];
    let (trace_id, parent_id, flags) = (&head[3..35], &head[36..52], &head[53..55]);
    let well_formed = hex(version)
        && version != b"ff"
        && head[2] == b'-'
        && head[35] == b'-'
        && head[52] == b'-'
        && hex(trace_id)
        && hex(parent_id)
        && hex(flags)
        && nonzero(trace_id)
        && nonzero(parent_id);
    // Version 00 has exactly four fields; a later one may add more after a `-`.
    let tail_ok = match version {
        b"00" => rest.is_empty(),
        _ => rest.is_empty() || rest[0] == b'-',
    };
    (well_formed && tail_ok).then_some(TraceParent {
        version,
        trace_id,
        parent_id,
        flags,
    })
}

/// The `traceparent` to send on for a valid incoming one: a version-`00`
/// header as it came, a later version as version `00` with its trace id,
/// parent id and sampled flag (the only fields this version knows).
fn traceparent(value: &HeaderValue) -> Option<HeaderValue> {
    let TraceParent {
        version,
        trace_id,
        parent_id,
        flags,
    } = parse_traceparent(value.as_bytes())?;
    if version == b"00" {
        return Some(value.clone());
    }
    // The low hex digit's value is odd when the sampled bit is set.
    let low = match flags[1] {
        d @ b'0'..=b'9' => d - b'0',
        d => d - b'a' + 10,
    };
    let sampled = if low & 1 == 1 { "01" } else { "00" };
    let mut out = Vec::with_capacity(55);
    for part in [b"00".as_slice(), trace_id, parent_id] {
        out.extend_from_slice(part);
        out.push(b'-');
    }
    out.extend_from_slice(sampled.as_bytes());
    HeaderValue::from_bytes(&out).ok()
}

fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&value.len()) && value.iter().all(|b| b.is_ascii_graphic())
}

/// The `tracestate` headers joined with `,`, if they make a plausible list:
/// visible ASCII, spaces and tabs; at most 512 bytes and 32 members, each
/// with a `=`.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
    }
    let printable = joined
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t');
    let members: Vec<&[u8]> = joined
        .split(|&b| b == b',')
        .map(|m| m.trim_ascii())
        .filter(|m| !m.is_empty())
        .collect();
    let plausible = printable
        && joined.len() <= MAX_TRACESTATE
        && !members.is_empty()
        && members.len() <= MAX_TRACESTATE_MEMBERS
        && members.iter().all(|m| m.contains(&b'='));
    plausible
        .then(|| HeaderValue::from_bytes(&joined).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn grpc_timeout_units() {
        for (value, expected) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("200m", Duration::from_millis(200)),
            ("30000u", Duration::from_millis(30)),
            ("7n", Duration::from_nanos(7)),
            ("0m", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
            ("00000001S", Duration::from_secs(1)),
        ] {
            assert_eq!(
                parse_grpc_timeout(value.as_bytes()),
                Some(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for value in [
            "",
            "m",
            "5",
            "123456789m",
            "1.5S",
            "-1S",
            "+1S",
            " 1S",
            "1S ",
            "1s",
            "1h",
            "1x",
            "1 m",
            "١S",
            "1mm",
        ] {
            assert_eq!(parse_grpc_timeout(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn traceparent_validation() {
        assert!(is_valid_traceparent(PARENT.as_bytes()));
        assert!(is_valid_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902x7-01",
        ] {
            assert!(!is_valid_traceparent(bad.as_bytes()), "{bad:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[tokio::test(start_paused = true)]
    async fn extract_takes_valid_values_only() {
        let all = headers(&[
            ("x-request-id", "req-1"),
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("grpc-timeout", "250m"),
        ]);
        let got = Propagation::default().extract(&all);
        assert_eq!(got.request_id().unwrap(), "req-1");
        assert_eq!(got.traceparent().unwrap(), PARENT);
        assert_eq!(
            got.tracestate.as_ref().unwrap(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // 250 ms less the margin for the answer's way back.
        assert_eq!(
            got.deadline(),
            Some(Instant::now() + Duration::from_millis(225))
        );
        assert_eq!(Propagation::none().extract(&all), Propagated::default());

        let bad = headers(&[
            ("x-request-id", "has space"),
            ("traceparent", "00-bad"),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("grpc-timeout", "soon"),
        ]);
        assert_eq!(Propagation::default().extract(&bad), Propagated::default());

        // Two traceparent headers: ambiguous, so neither, nor the state.
        let twice = headers(&[
            ("traceparent", PARENT),
            ("traceparent", PARENT),
            ("tracestate", "a=b"),
        ]);
        assert_eq!(
            Propagation::default().extract(&twice),
            Propagated::default()
        );
        let long_id = "x".repeat(MAX_REQUEST_ID + 1);
        assert_eq!(
            Propagation::default()
                .extract(&headers(&[("x-request-id", &long_id)]))
                .request_id(),
            None
        );
        let bad_state = headers(&[("traceparent", PARENT), ("tracestate", "no-equals")]);
        let got = Propagation::default().extract(&bad_state);
        assert!(got.traceparent().is_some());
        assert_eq!(got.tracestate, None);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_keeps_what_the_request_says() {
        let incoming = Propagation::default().extract(&headers(&[
            ("x-request-id", "incoming"),
            ("traceparent", PARENT),
            ("tracestate", "a=b"),
            ("grpc-timeout", "1S"),
        ]));
        let own_parent = "00-11111111111111111111111111111111-2222222222222222-01";
        let earlier = Instant::now() + Duration::from_millis(10);
        let own = QualityRequest::new("t", "a")
            .request_id(HeaderValue::from_static("own"))
            .header(
                HeaderName::from_static(TRACEPARENT),
                HeaderValue::from_static(own_parent),
            )
            .deadline(earlier);
        let applied = incoming.clone().apply(own);
        assert_eq!(applied.options().request_id.as_ref().unwrap(), "own");
        assert_eq!(applied.options().headers[TRACEPARENT], own_parent);
        assert!(!applied.options().headers.contains_key(TRACESTATE));
        assert_eq!(applied.options().deadline, Some(earlier));

        let later = QualityRequest::new("t", "a").deadline(Instant::now() + Duration::from_secs(5));
        let applied = incoming.apply(later);
        assert_eq!(applied.options().request_id.as_ref().unwrap(), "incoming");
        assert_eq!(applied.options().headers[TRACEPARENT], PARENT);
        assert_eq!(applied.options().headers[TRACESTATE], "a=b");
        assert_eq!(
            applied.options().deadline,
            Some(Instant::now() + Duration::from_millis(950)) // 1 s less 50 ms
        );

        // Its own tracestate without a traceparent: the incoming parent
        // fills the gap, its state stays.
        let own_state = QualityRequest::new("t", "a").header(
            HeaderName::from_static(TRACESTATE),
            HeaderValue::from_static("own=1"),
        );
        let applied = Propagation::default()
            .extract(&headers(&[("traceparent", PARENT), ("tracestate", "a=b")]))
            .apply(own_state);
        assert_eq!(applied.options().headers[TRACEPARENT], PARENT);
        assert_eq!(applied.options().headers[TRACESTATE], "own=1");
    }

    #[test]
    fn deadline_margin_is_a_tenth_up_to_50ms() {
        assert_eq!(deadline_margin(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            deadline_margin(Duration::from_millis(20)),
            Duration::from_millis(2)
        );
        assert_eq!(
            deadline_margin(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(3600)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn later_traceparent_versions_are_parsed_as_w3c_says() {
        let ids = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        for (value, sent) in [
            (format!("01-{ids}-01"), format!("00-{ids}-01")),
            (format!("01-{ids}-01-extra"), format!("00-{ids}-01")),
            (format!("fe-{ids}-09-x-y"), format!("00-{ids}-01")),
            (format!("cc-{ids}-0b"), format!("00-{ids}-01")),
            (format!("02-{ids}-08"), format!("00-{ids}-00")),
            (format!("02-{ids}-fe-"), format!("00-{ids}-00")),
        ] {
            let value = HeaderValue::from_str(&value).unwrap();
            assert_eq!(traceparent(&value).unwrap(), sent, "{value:?}");
        }
        for bad in [
            format!("ff-{ids}-01"),          // ff is invalid
            format!("01-{ids}-01x"),         // flags not followed by the end or a dash
            format!("01-{ids}-1"),           // short
            format!("0g-{ids}-01"),          // version not hex
            format!("00-{ids}-01-extra"),    // version 00 has four fields
            format!("01-{}-01", &ids[..47]), // short parent id
        ] {
            assert!(!is_valid_traceparent(bad.as_bytes()), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn grpc_timeout_round_trips(n in 0u64..=99_999_999, unit in 0usize..6) {
            let (suffix, expected) = [
                ('H', Duration::from_secs(n * 3600)),
                ('M', Duration::from_secs(n * 60)),
                ('S', Duration::from_secs(n)),
                ('m', Duration::from_millis(n)),
                ('u', Duration::from_micros(n)),
                ('n', Duration::from_nanos(n)),
            ][unit];
            let value = format!("{n}{suffix}");
            prop_assert_eq!(parse_grpc_timeout(value.as_bytes()), Some(expected));
        }

        #[test]
        fn grpc_timeout_never_panics_and_accepts_only_the_grammar(value in proptest::collection::vec(any::<u8>(), 0..12)) {
            let parsed = parse_grpc_timeout(&value);
            let grammar = value.len() >= 2
                && value.len() <= 9
                && value[..value.len() - 1].iter().all(u8::is_ascii_digit)
                && b"HMSmun".contains(&value[value.len() - 1]);
            prop_assert_eq!(parsed.is_some(), grammar);
        }

        #[test]
        fn traceparent_accepts_exactly_the_format(
            trace in "[0-9a-f]{32}",
            parent in "[0-9a-f]{16}",
            flags in "[0-9a-f]{2}",
            noise in "[ -~]{0,60}",
        ) {
            let value = format!("00-{trace}-{parent}-{flags}");
            let zero = trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0');
            prop_assert_eq!(is_valid_traceparent(value.as_bytes()), !zero);
            // Anything shorter than four fields is refused, never a panic.
            let other = is_valid_traceparent(noise.as_bytes());
            prop_assert!(!other || noise.len() >= 55);
            // A later version takes the same four fields, and whatever follows a dash.
            let later = format!("7f-{trace}-{parent}-{flags}-{noise}");
            prop_assert_eq!(is_valid_traceparent(later.as_bytes()), !zero);
        }
    }
}
