//! The one error type of the crate, classified so callers never match strings.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;

pub(crate) use crate::retry_after::{honours_retry_after, RetryAfter};

/// A boxed error, as tower's middleware returns them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a quality check produced no verdict.
///
/// An error is never an approval: an orchestrator that gets one must treat
/// the work as not accepted. Ask what happened with the `is_*` queries,
/// [`Error::status`] or [`Error::kind`]; [`Error::is_retryable`] says whether
/// trying again is safe and may help.
///
/// Errors that come back through tower layers as [`BoxError`] convert back
/// with `Error::from(boxed)`: a tower timeout (`Elapsed`) becomes a timeout
/// error, and an `Error` that was boxed is unboxed unchanged.
///
/// ```
/// use tower_quality_gate::{BoxError, Error};
///
/// let boxed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
/// let err = Error::from(boxed);
/// assert!(err.is_timeout());
/// assert!(err.is_retryable());
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    source: Option<BoxError>,
    /// Attempts the call made before failing; 0 when not known.
    attempts: u32,
    /// The id of the call that failed, when a client gave it one.
    request_id: Option<http::HeaderValue>,
    /// The coordinator provably did not process the request.
    unprocessed: bool,
    /// The coordinator the error was for, as `scheme://host:port` (no user
    /// info, path or query: see [`Error::coordinator`]).
    coordinator: Option<Box<str>>,
}

#[derive(Clone, Debug)]
enum Kind {
    Config(String),
    Connect,
    Transport,
    Timeout(TimeoutKind),
    Status {
        status: StatusCode,
        snippet: String,
        retry_after: Option<RetryAfter>,
    },
    InvalidResponse(&'static str),
    BodyTooLarge {
        limit: usize,
    },
    CircuitOpen,
    NoReplica,
    NotReady,
    Other,
}

/// The class of an [`Error`], for metrics labels and `match`es.
///
/// New kinds may be added, so a `match` needs a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration is invalid (a bad URL, a bad header value).
    Config,
    /// No connection to the coordinator could be made.
    Connect,
    /// The connection failed after it was made: reset, closed early, or an
    /// incomplete message.
    Transport,
    /// An attempt, or the whole call, took too long.
    Timeout,
    /// The coordinator answered with a non-success HTTP status.
    Status,
    /// The response was not a valid verdict: bad JSON, wrong shape, or not JSON.
    InvalidResponse,
    /// The response body was larger than the configured cap.
    BodyTooLarge,
    /// A circuit breaker is open and failed the call without sending it.
    CircuitOpen,
    /// A service was called without being driven to readiness first.
    NotReady,
    /// An error from another layer that fits no other kind.
    Other,
}

/// Which timeout fired.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// One attempt took longer than the per-attempt timeout.
    Attempt,
    /// The whole call, retries and waits included, passed its deadline.
    Total,
    /// The health check passed its own timeout.
    Health,
    /// A timeout layer the crate does not know fired (a tower `Elapsed`).
    Unknown,
}

/// What a [`BoxError`] from a tower layer holds, read in one place: the
/// crate's own [`Error`], tower's `Elapsed` (its `Timeout` fired), or
/// anything else.
pub(crate) enum Boxed<'a> {
    Error(&'a Error),
    Elapsed,
    Other,
}

impl<'a> Boxed<'a> {
    pub(crate) fn of(err: &'a BoxError) -> Boxed<'a> {
        if let Some(err) = err.downcast_ref::<Error>() {
            Boxed::Error(err)
        } else if err.is::<tower::timeout::error::Elapsed>() {
            Boxed::Elapsed
        } else {
            Boxed::Other
        }
    }
}

// ===== impl Error =====

impl Error {
    fn new(kind: Kind, source: Option<BoxError>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                source,
                attempts: 0,
                request_id: None,
                unprocessed: false,
                coordinator: None,
            }),
        }
    }

    /// Names the coordinator `base` (its scheme, host and port only) as the
    /// one this error was for, unless the error already names one.
    pub(crate) fn for_coordinator(mut self, base: &http::Uri) -> Error {
        if self.inner.coordinator.is_none() {
            let scheme = base.scheme_str().unwrap_or("http");
            let port = base
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let host = base.host().unwrap_or("");
            self.inner.coordinator = Some(format!("{scheme}://{host}:{port}").into());
        }
        self
    }

    /// The coordinator this error was for, as `scheme://host:port`
    /// (`http://10.0.0.2:8000`): never user info, a path or a query, which
    /// may carry secrets. Connect, transport, TLS, timeout and status errors
    /// of a [`QualityCheck`](crate::QualityCheck) name it, and so do the
    /// errors of a [`QualityClient`](crate::QualityClient) with one base URL;
    /// with several replicas, an attempt's error names its replica and a
    /// call's timeout names none (its [`source`](StdError::source), the last
    /// attempt's error, may). `Display` says it for connect, transport, TLS
    /// and timeout errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let port = listener.local_addr().unwrap().port();
    /// drop(listener); // nothing listens there now
    /// let client = tower_quality_gate::QualityClient::builder(format!("http://127.0.0.1:{port}/base"))
    ///     .attempts(1)
    ///     .build()?;
    /// let err = client.check(tower_quality_gate::QualityRequest::new("t", "a")).await.unwrap_err();
    /// assert_eq!(err.coordinator(), Some(format!("http://127.0.0.1:{port}").as_str()));
    /// assert!(err.to_string().contains(&format!("at http://127.0.0.1:{port}")));
    /// # Ok(()) }
    /// ```
    pub fn coordinator(&self) -> Option<&str> {
        self.inner.coordinator.as_deref()
    }

    /// " at {coordinator}" when the error names one, for `Display`.
    fn at(&self) -> impl fmt::Display + '_ {
        struct At<'a>(Option<&'a str>);
        impl fmt::Display for At<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Some(c) => write!(f, " at {c}"),
                    None => Ok(()),
                }
            }
        }
        At(self.coordinator())
    }

    pub(crate) fn config(msg: impl Into<String>) -> Error {
        Error::new(Kind::Config(msg.into()), None)
    }

    pub(crate) fn config_with(msg: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::new(Kind::Config(msg.into()), Some(source.into()))
    }

    pub(crate) fn connect(source: impl Into<BoxError>) -> Error {
        Error::new(Kind::Connect, Some(source.into()))
    }

    pub(crate) fn transport(source: impl Into<BoxError>) -> Error {
        Error::new(Kind::Transport, Some(source.into()))
    }

    /// A timeout error of the given kind.
    pub fn timeout(kind: TimeoutKind) -> Error {
        Error::new(Kind::Timeout(kind), None)
    }

    pub(crate) fn http_status(
        status: StatusCode,
        snippet: String,
        retry_after: Option<RetryAfter>,
    ) -> Error {
        Error::new(
            Kind::Status {
                status,
                snippet,
                retry_after: retry_after.filter(|_| honours_retry_after(status)),
            },
            None,
        )
    }

    pub(crate) fn invalid(reason: &'static str) -> Error {
        Error::new(Kind::InvalidResponse(reason), None)
    }

    /// Keeps where and how the body failed to decode, not serde's message:
    /// it quotes the values it rejects (`invalid type: string "…"`), and a
    /// coordinator may have put a credential there.
    pub(crate) fn invalid_json(source: serde_json::Error) -> Error {
        let source = JsonError {
            category: source.classify(),
            line: source.line(),
            column: source.column(),
        };
        Error::new(
            Kind::InvalidResponse("body is not a valid verdict"),
            Some(source.into()),
        )
    }

    pub(crate) fn body_too_large(limit: usize) -> Error {
        Error::new(Kind::BodyTooLarge { limit }, None)
    }

    /// The error a circuit breaker answers with while it is open.
    pub fn circuit_open() -> Error {
        Error::new(Kind::CircuitOpen, None)
    }

    /// Every replica behind the balancer is ejected: a circuit-open error.
    pub(crate) fn no_replica() -> Error {
        Error::new(Kind::NoReplica, None)
    }

    pub(crate) fn not_ready() -> Error {
        Error::new(Kind::NotReady, None)
    }

    /// Converts an error from a tower layer, naming which timeout an `Elapsed` was.
    pub(crate) fn from_layer(err: BoxError, timeout: TimeoutKind) -> Error {
        match Boxed::of(&err) {
            Boxed::Error(_) => match err.downcast::<Error>() {
                Ok(err) => *err,
                Err(err) => Error::new(Kind::Other, Some(err)),
            },
            Boxed::Elapsed => Error::new(Kind::Timeout(timeout), Some(err)),
            Boxed::Other => Error::new(Kind::Other, Some(err)),
        }
    }

    /// A copy of this error to keep as the cause of a later one (the last
    /// failed attempt of a call that then ran out of time): the same kind,
    /// status, `Retry-After`, attempts and request id; its own source, if
    /// any, is kept as text. Made only when an attempt fails.
    pub(crate) fn to_cause(&self) -> Error {
        let source = self
            .inner
            .source
            .as_ref()
            .map(|s| -> BoxError { s.to_string().into() });
        Error {
            inner: Box::new(Inner {
                kind: self.inner.kind.clone(),
                source,
                attempts: self.inner.attempts,
                request_id: self.inner.request_id.clone(),
                unprocessed: self.inner.unprocessed,
                coordinator: self.inner.coordinator.clone(),
            }),
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self.inner.kind {
            Kind::Config(_) => ErrorKind::Config,
            Kind::Connect => ErrorKind::Connect,
            Kind::Transport => ErrorKind::Transport,
            Kind::Timeout(_) => ErrorKind::Timeout,
            Kind::Status { .. } => ErrorKind::Status,
            Kind::InvalidResponse(_) => ErrorKind::InvalidResponse,
            Kind::BodyTooLarge { .. } => ErrorKind::BodyTooLarge,
            Kind::CircuitOpen | Kind::NoReplica => ErrorKind::CircuitOpen,
            Kind::NotReady => ErrorKind::NotReady,
            Kind::Other => ErrorKind::Other,
        }
    }

    /// True when the configuration was invalid; nothing was sent.
    pub fn is_config(&self) -> bool {
        matches!(self.inner.kind, Kind::Config(_))
    }

    /// True when no connection to the coordinator could be made
    /// (refused, unreachable, or the connect timeout passed).
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Connect)
    }

    /// True when the connection failed after it was made (reset, closed
    /// before or during the response).
    pub fn is_transport(&self) -> bool {
        matches!(self.inner.kind, Kind::Transport)
    }

    /// True for any timeout: per attempt, or for the whole call.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout(_))
    }

    /// Which timeout fired, if this is a timeout.
    pub fn timeout_kind(&self) -> Option<TimeoutKind> {
        match self.inner.kind {
            Kind::Timeout(k) => Some(k),
            _ => None,
        }
    }

    /// True when one attempt passed the per-attempt timeout.
    pub fn is_attempt_timeout(&self) -> bool {
        self.timeout_kind() == Some(TimeoutKind::Attempt)
    }

    /// True when the whole call passed its overall deadline.
    pub fn is_total_timeout(&self) -> bool {
        self.timeout_kind() == Some(TimeoutKind::Total)
    }

    /// True when the response was not a valid verdict (bad JSON, wrong
    /// shape, or a non-JSON content type).
    pub fn is_invalid_response(&self) -> bool {
        matches!(self.inner.kind, Kind::InvalidResponse(_))
    }

    /// True when the response body passed the configured size cap.
    pub fn is_body_too_large(&self) -> bool {
        matches!(self.inner.kind, Kind::BodyTooLarge { .. })
    }

    /// True when a circuit breaker failed the call without sending it
    /// (the client's breaker, or every replica ejected).
    pub fn is_circuit_open(&self) -> bool {
        matches!(self.inner.kind, Kind::CircuitOpen | Kind::NoReplica)
    }

    /// The HTTP status the coordinator answered with, for status errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self.inner.kind {
            Kind::Status { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The start of the error response's body (at most 256 characters, on
    /// one line), for status errors. Every configured secret (bearer token,
    /// API key, secret headers) is replaced by `[redacted]`.
    pub fn body_snippet(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Status { snippet, .. } => Some(snippet),
            _ => None,
        }
    }

    /// How long the coordinator asked the client to wait (`Retry-After`),
    /// counted from now: only for 429 and 503 answers, the statuses whose
    /// `Retry-After` the retry policy honours. A delay too large to
    /// represent reads as `u64::MAX` seconds.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_at(SystemTime::now())
    }

    pub(crate) fn retry_after_at(&self, now: SystemTime) -> Option<Duration> {
        match self.inner.kind {
            Kind::Status {
                retry_after: Some(ra),
                ..
            } => Some(ra.delay_from(now)),
            _ => None,
        }
    }

    /// How many attempts of the call were sent before it failed (hedged
    /// copies included), when the call went through
    /// [`Identify`](crate::call::Identify), as every
    /// [`QualityClient`](crate::QualityClient) call does; a bare
    /// [`QualityCheck`](crate::QualityCheck) makes one and does not say.
    pub fn attempts(&self) -> Option<u32> {
        match self.inner.attempts {
            0 => None,
            n => Some(n),
        }
    }

    /// The request id of the call that failed (the `x-request-id` it sent),
    /// when it had one: the key to find the call in the coordinator's logs.
    pub fn request_id(&self) -> Option<&str> {
        self.inner
            .request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
    }

    pub(crate) fn with_request_id(mut self, id: http::HeaderValue) -> Error {
        self.inner.request_id = Some(id);
        self
    }

    pub(crate) fn unprocessed(mut self) -> Error {
        self.inner.unprocessed = true;
        self
    }

    /// True when the coordinator provably did not process the request: it
    /// refused the HTTP/2 stream (`REFUSED_STREAM`) or closed the connection
    /// with a `GOAWAY` below it (RFC 9113 §8.7). The retry policy resends
    /// such a request at once, once per call, without counting an attempt
    /// or spending the budget: no other failure is resent for free.
    pub fn is_unprocessed(&self) -> bool {
        self.inner.unprocessed
    }

    /// Sets the source (the cause) of an error that has none.
    pub(crate) fn caused_by(mut self, cause: Option<Error>) -> Error {
        if self.inner.source.is_none() {
            self.inner.source = cause.map(|c| Box::new(c) as BoxError);
        }
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Error {
        self.inner.attempts = attempts;
        self
    }

    /// Whether trying again is safe and may succeed: connect and transport
    /// failures, attempt timeouts, and the statuses 408, 429 and 5xx. Never
    /// for other 4xx, invalid or oversized responses, configuration errors,
    /// an open circuit, or a call that passed its deadline
    /// ([`is_total_timeout`](Self::is_total_timeout)): whatever policy
    /// retries, a call out of time is final.
    pub fn is_retryable(&self) -> bool {
        match &self.inner.kind {
            Kind::Connect | Kind::Transport if self.is_tls() => false,
            // A call past its deadline is over: no attempt may follow, so a
            // policy that retries what is retryable stops there.
            Kind::Timeout(TimeoutKind::Total) => false,
            Kind::Connect | Kind::Transport | Kind::Timeout(_) => true,
            Kind::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Kind::Config(_)
            | Kind::InvalidResponse(_)
            | Kind::BodyTooLarge { .. }
            | Kind::CircuitOpen
            | Kind::NoReplica
            | Kind::NotReady
            | Kind::Other => false,
        }
    }
}

// ===== TLS failures (network) =====

impl Error {
    /// True when a TLS handshake with the coordinator failed: its
    /// certificate was refused (unknown issuer, wrong name, expired), it
    /// refused the client's certificate, or the two sides share no protocol.
    /// Such an error is a connect or transport error that is not retried;
    /// [`tls_failure`](Self::tls_failure) says which, and `Display` says why.
    pub fn is_tls(&self) -> bool {
        self.tls_failure().is_some()
    }

    /// What failed in the TLS handshake, if this is a TLS failure.
    pub fn tls_failure(&self) -> Option<crate::tls::TlsFailure> {
        crate::tls::failure(self.inner.source.as_deref()?)
    }
}

impl From<BoxError> for Error {
    /// Unboxes an [`Error`], turns a tower `Elapsed` into a timeout of unknown
    /// kind, and wraps anything else as [`ErrorKind::Other`].
    fn from(err: BoxError) -> Error {
        Error::from_layer(err, TimeoutKind::Unknown)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("tower_quality_gate::Error");
        d.field("kind", &self.inner.kind);
        if self.inner.attempts > 0 {
            d.field("attempts", &self.inner.attempts);
        }
        if let Some(id) = self.request_id() {
            d.field("request_id", &id);
        }
        if self.inner.unprocessed {
            d.field("unprocessed", &true);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            Kind::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Kind::Connect => {
                write!(f, "could not connect to the coordinator{}", self.at())?;
                crate::tls::fmt_failure(self.source(), f)
            }
            Kind::Transport => {
                write!(f, "connection to the coordinator{} failed", self.at())?;
                crate::tls::fmt_failure(self.source(), f)
            }
            Kind::Timeout(TimeoutKind::Attempt) => {
                write!(f, "attempt to the coordinator{} timed out", self.at())
            }
            Kind::Timeout(TimeoutKind::Total) => {
                write!(f, "quality check{} passed its deadline", self.at())
            }
            Kind::Timeout(TimeoutKind::Health) => {
                write!(f, "health check of the coordinator{} timed out", self.at())
            }
            Kind::Timeout(TimeoutKind::Unknown) => {
                write!(f, "quality check{} timed out", self.at())
            }
            Kind::Status {
                status, snippet, ..
            } => {
                write!(f, "coordinator answered {status}")?;
                if !snippet.is_empty() {
                    write!(f, ": {snippet}")?;
                }
                Ok(())
            }
            Kind::InvalidResponse(reason) => write!(f, "invalid coordinator response: {reason}"),
            Kind::BodyTooLarge { limit } => {
                write!(f, "coordinator response body is larger than {limit} bytes")
            }
            Kind::CircuitOpen => f.write_str("circuit open: coordinator calls are failing fast"),
            Kind::NoReplica => f.write_str("circuit open: every coordinator replica is failing"),
            Kind::NotReady => f.write_str("service called before poll_ready returned ready"),
            Kind::Other => f.write_str("quality check failed"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

/// Why a body did not decode as a verdict, without any of the body's text.
#[derive(Debug)]
struct JsonError {
    category: serde_json::error::Category,
    line: usize,
    column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use serde_json::error::Category;
        let what = match self.category {
            Category::Io => "the body could not be read",
            Category::Syntax => "the body is not valid JSON",
            Category::Data => "a field is missing or has the wrong type",
            Category::Eof => "the JSON ends early",
        };
        write!(f, "{what} (line {}, column {})", self.line, self.column)
    }
}

impl StdError for JsonError {}

impl ErrorKind {
    /// A short, stable, lower-case name, for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Connect => "connect",
            ErrorKind::Transport => "transport",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status => "status",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::Other => "other",
        }
    }
}

impl ErrorKind {
    /// A fixed sentence saying what went wrong, in terms safe to show to
    /// anyone: unlike the error's `Display`, it never carries the
    /// coordinator's own words (an error body may echo internals). What a
    /// gate or a server sends its callers when there was no verdict.
    ///
    /// ```
    /// use tower_quality_gate::ErrorKind;
    ///
    /// assert_eq!(ErrorKind::Timeout.generic_message(), "the quality check timed out");
    /// ```
    pub fn generic_message(self) -> &'static str {
        match self {
            ErrorKind::Config => "the quality check is misconfigured",
            ErrorKind::Connect => "the quality coordinator could not be reached",
            ErrorKind::Transport => "the connection to the quality coordinator failed",
            ErrorKind::Timeout => "the quality check timed out",
            ErrorKind::Status => "the quality coordinator answered with an error",
            ErrorKind::InvalidResponse => "the quality coordinator's answer was not a verdict",
            ErrorKind::BodyTooLarge => "the quality coordinator's answer was too large",
            ErrorKind::CircuitOpen => {
                "the quality coordinator is failing; checks are refused for a while"
            }
            ErrorKind::NotReady | ErrorKind::Other => "the quality check failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        let retryable = |code: u16| {
            Error::http_status(StatusCode::from_u16(code).unwrap(), String::new(), None)
                .is_retryable()
        };
        for code in [408, 429, 500, 501, 502, 503, 504, 599] {
            assert!(retryable(code), "{code}");
        }
        for code in [300, 400, 401, 403, 404, 409, 422] {
            assert!(!retryable(code), "{code}");
        }
    }

    #[test]
    fn boxed_error_round_trips() {
        let boxed: BoxError = Box::new(Error::http_status(
            StatusCode::BAD_GATEWAY,
            "x".into(),
            None,
        ));
        let err = Error::from(boxed);
        assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));

        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        let err = Error::from_layer(elapsed, TimeoutKind::Attempt);
        assert!(err.is_attempt_timeout() && !err.is_total_timeout());
        assert!(err.source().is_some());

        let other: BoxError = "boom".into();
        assert_eq!(Error::from(other).kind(), ErrorKind::Other);
    }

    #[test]
    fn retry_after_forms() {
        let v = http::HeaderValue::from_static("7");
        assert_eq!(
            RetryAfter::parse(&v),
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(5));
        let ra = RetryAfter::parse(&http::HeaderValue::from_str(&date).unwrap()).unwrap();
        assert_eq!(ra.delay_from(now), Duration::from_secs(5));
        assert_eq!(ra.delay_from(now + Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(
            RetryAfter::parse(&http::HeaderValue::from_static("soon")),
            None
        );
        for bad in ["-1", "+5", "1.5", "", " ", "0x10"] {
            assert_eq!(
                RetryAfter::parse(&http::HeaderValue::from_static(bad)),
                None,
                "{bad:?}"
            );
        }
        let huge = http::HeaderValue::from_static("99999999999999999999999999");
        assert_eq!(
            RetryAfter::parse(&huge),
            Some(RetryAfter::Delay(Duration::from_secs(u64::MAX)))
        );
    }

    #[test]
    fn json_errors_keep_the_position_not_the_values() {
        let bad = br#"{"approved":"tok-SECRET","gate":"g"}"#;
        let err =
            Error::invalid_json(serde_json::from_slice::<crate::QualityResponse>(bad).unwrap_err());
        assert!(err.is_invalid_response());
        let text = format!("{err} {err:?} {}", err.source().unwrap());
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("wrong type (line 1, column 24)"), "{text}");
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        let seven = Some(RetryAfter::Delay(Duration::from_secs(7)));
        for (code, want) in [
            (429, seven),
            (503, seven),
            (500, None),
            (502, None),
            (301, None),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(RetryAfter::from_head(status, &headers), want, "{code}");
            let err = Error::http_status(status, String::new(), seven);
            assert_eq!(err.retry_after().is_some(), want.is_some(), "{code}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_retry_after_parses_without_panicking(
                value in prop_oneof![
                    "[ -~\t]{0,64}",
                    "[0-9 ]{0,40}",
                    // Any HTTP date up to the year 9999.
                    (0u64..253_402_300_800).prop_map(|secs| httpdate::fmt_http_date(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
                    )),
                ],
                now in any::<u64>(),
            ) {
                let value = http::HeaderValue::from_str(&value).unwrap();
                let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(now));
                if let (Some(ra), Some(now)) = (RetryAfter::parse(&value), now) {
                    let _ = ra.delay_from(now);
                }
            }

            #[test]
            fn any_number_of_seconds_is_a_delay(digits in "[0-9]{1,60}") {
                let value = http::HeaderValue::from_str(&digits).unwrap();
                let want = digits.parse::<u64>().unwrap_or(u64::MAX);
                prop_assert_eq!(
                    RetryAfter::parse(&value),
                    Some(RetryAfter::Delay(Duration::from_secs(want)))
                );
            }
        }
    }
}
