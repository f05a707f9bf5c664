//! The headers the client owns: a ground-floor table every layer that
//! takes headers from a caller (the builder's configured headers, a call's
//! own headers) reads, so the rule is written once.

use http::header::HeaderName;
use http::HeaderMap;

use crate::error::Error;

/// Headers the client writes itself, or that describe the connection or the
/// body: set by `QualityCheckBuilder::header` or as a call's own header
/// they would contradict the request (a `content-length` cuts the body
/// short), so they are refused.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    ("host", "it is taken from the coordinator URL"),
    ("content-length", "the client sets it from the body"),
    ("content-type", "the body is always JSON"),
    ("transfer-encoding", "the client frames the body"),
    ("connection", "the connection pool manages it"),
    ("keep-alive", "the connection pool manages it"),
    ("proxy-connection", "the connection pool manages it"),
    ("te", "it is hop-by-hop"),
    ("trailer", "it is hop-by-hop"),
    ("upgrade", "it is hop-by-hop"),
    ("user-agent", "use user_agent()"),
];

/// Why `name` is a header the client sets itself and no caller may set, if
/// it is one: for configured headers and per-call headers alike.
pub(crate) fn reserved_header(name: &HeaderName) -> Option<&'static str> {
    RESERVED_HEADERS
        .iter()
        .find(|(reserved, _)| name == reserved)
        .map(|(_, why)| *why)
}

/// Refuses a call's own `headers` when one is a header the client owns,
/// naming it and saying why: one rule for the bare service and for a
/// [`Call`](crate::call::Call).
pub(crate) fn refuse_reserved(headers: &HeaderMap) -> Result<(), Error> {
    let reserved = headers
        .keys()
        .find_map(|name| reserved_header(name).map(|why| (name, why)));
    match reserved {
        Some((name, why)) => Err(Error::config(format!(
            "the per-call header {name} is reserved: {why}"
        ))),
        None => Ok(()),
    }
}
