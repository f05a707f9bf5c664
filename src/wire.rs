//! The wire contract: the request the orchestrator sends and the verdict the
//! coordinator answers with, both JSON in camelCase.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::options::CallOptions;

/// One quality check: which agent's work on which task, touching which files.
///
/// Serialized exactly as the coordinator expects:
/// `{"taskId":…,"agentId":…,"files":[…],"diffSummary":…}`.
///
/// ```
/// use tower_quality_gate::QualityRequest;
///
/// let req = QualityRequest::new("task-1", "agent-7")
///     .files(["src/lib.rs"])
///     .diff_summary("add retry budget");
/// let json = serde_json::to_string(&req).unwrap();
/// assert_eq!(
///     json,
///     r#"{"taskId":"task-1","agentId":"agent-7","files":["src/lib.rs"],"diffSummary":"add retry budget"}"#
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityRequest {
    /// The task the agent worked on.
    pub task_id: String,
    /// The agent whose work is checked.
    pub agent_id: String,
    /// The files the work touched, as paths relative to the repository.
    pub files: Vec<String>,
    /// A short human-readable summary of the diff.
    pub diff_summary: String,
    /// Per-call options (deadline, request id, headers): not serialized.
    #[serde(skip)]
    options: Options,
}

/// A request's per-call options, on the heap only when it has any: most
/// requests have none, and a request is moved by value through every layer
/// that takes it (the options would add 168 bytes to each move).
#[derive(Clone, Default)]
struct Options(Option<Box<CallOptions>>);

impl Options {
    fn get(&self) -> &CallOptions {
        static NONE: std::sync::OnceLock<CallOptions> = std::sync::OnceLock::new();
        match &self.0 {
            Some(options) => options,
            None => NONE.get_or_init(CallOptions::default),
        }
    }

    fn get_mut(&mut self) -> &mut CallOptions {
        self.0.get_or_insert_with(Default::default)
    }

    fn take(&mut self) -> CallOptions {
        self.0.take().map(|options| *options).unwrap_or_default()
    }
}

impl PartialEq for Options {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Options {}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl QualityRequest {
    /// A request for `task_id` by `agent_id`, with no files and an empty summary.
    pub fn new(task_id: impl Into<String>, agent_id: impl Into<String>) -> Self {
        QualityRequest {
            task_id: task_id.into(),
            agent_id: agent_id.into(),
            files: Vec::new(),
            diff_summary: String::new(),
            options: Options::default(),
        }
    }

    /// Sets the files the work touched.
    pub fn files<I, S>(mut self, files: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.files = files.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the diff summary.
    pub fn diff_summary(mut self, summary: impl Into<String>) -> Self {
        self.diff_summary = summary.into();
        self
    }

    /// Ends the call by `deadline` at the latest, waits, retries and backoff
    /// included: a retry that cannot start before it is not scheduled, and
    /// a call still running then fails with a total timeout
    /// ([`Error::is_total_timeout`]). The client's own overall timeout still
    /// applies if it ends sooner. A `std::time::Instant` converts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quality_gate::QualityRequest;
    ///
    /// let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    /// let req = QualityRequest::new("task-1", "agent-1").deadline(deadline);
    /// assert_eq!(req.options().deadline, Some(deadline));
    /// ```
    pub fn deadline(mut self, deadline: impl Into<tokio::time::Instant>) -> Self {
        self.options.get_mut().deadline = Some(deadline.into());
        self
    }

    /// Ends the call after `timeout` at the latest, counted from when the
    /// client takes it; like [`deadline`](Self::deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.get_mut().timeout = Some(timeout);
        self
    }

    /// Sends this request id on every attempt instead of a generated one
    /// (for example the id of the server request being handled).
    pub fn request_id(mut self, id: HeaderValue) -> Self {
        self.options.get_mut().request_id = Some(id);
        self
    }

    /// Sends this header with every attempt of this call only (for example
    /// `traceparent`). A header the client sets itself (`content-type`,
    /// `content-length`, `host`, …) fails the call with a configuration
    /// error. Any other header replaces the configured header of the same
    /// name for this call, credentials included: a call's own
    /// `authorization` is sent instead of the
    /// [`bearer_token`](crate::QualityCheckBuilder::bearer_token), a call's
    /// own `x-api-key` instead of the
    /// [`api_key`](crate::QualityCheckBuilder::api_key). Such a value is
    /// treated as a secret: scrubbed from echoing error bodies, hidden from
    /// `Debug`.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.options.get_mut().headers.insert(name, value);
        self
    }

    /// The JSON body of this request, the per-call options left out.
    ///
    /// Serialized into a buffer this thread keeps from call to call, then
    /// copied once into a body of exactly its size: one allocation, where
    /// serializing into a new `Vec` grows it five or six times for a typical
    /// request, and a body whose clones (one per attempt) share it by
    /// reference count without allocating again.
    pub(crate) fn encode(&self) -> Bytes {
        /// A buffer that grew beyond this is dropped after use rather than
        /// kept for the thread's lifetime.
        const KEEP: usize = 64 * 1024;
        thread_local! {
            static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let encode = |buf: &mut Vec<u8>| {
            buf.clear();
            // Serializing strings into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, self);
            let body = Bytes::copy_from_slice(buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            body
        };
        BUF.try_with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => encode(&mut buf),
            // Only if serializing re-entered this function.
            Err(_) => encode(&mut Vec::new()),
        })
        // The thread is being torn down: a buffer of its own.
        .unwrap_or_else(|_| encode(&mut Vec::new()))
    }

    /// The per-call options.
    pub fn options(&self) -> &CallOptions {
        self.options.get()
    }

    /// The per-call options, to change in place.
    pub(crate) fn options_mut(&mut self) -> &mut CallOptions {
        self.options.get_mut()
    }

    /// The per-call options, taken out (the request is left with none).
    pub(crate) fn take_options(&mut self) -> CallOptions {
        self.options.take()
    }
}

/// The coordinator's verdict.
///
/// `approved: false` is a successful call with a rejection, not an error.
/// Unknown fields are ignored; a missing or wrongly typed `approved` or `gate`
/// makes the whole response invalid (an error, never an approval).
///
/// ```
/// use tower_quality_gate::QualityResponse;
///
/// let r = QualityResponse::from_json(br#"{"approved":false,"gate":"lint","extra":1}"#).unwrap();
/// assert!(!r.approved);
/// assert_eq!(r.gate, "lint");
/// assert!(QualityResponse::from_json(br#"{"approved":"yes","gate":"lint"}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityResponse {
    /// Whether the work passed every gate.
    pub approved: bool,
    /// The gate that decided: the first failing one, or the last one passed.
    pub gate: String,
    /// A human-readable explanation, if the coordinator gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-gate results as the coordinator sent them (for example
    /// `details.aiReview = {confidence, approved, findings}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

impl QualityResponse {
    /// An approval by `gate`, with no message or details.
    pub fn approved(gate: impl Into<String>) -> Self {
        QualityResponse {
            approved: true,
            gate: gate.into(),
            message: None,
            details: None,
        }
    }

    /// A rejection by `gate` with a message.
    pub fn rejected(gate: impl Into<String>, message: impl Into<String>) -> Self {
        QualityResponse {
            approved: false,
            gate: gate.into(),
            message: Some(message.into()),
            details: None,
        }
    }

    /// Decodes a response body, classifying any failure as an invalid response.
    pub fn from_json(body: &[u8]) -> Result<Self, Error> {
        // serde's derived impl would also take `[true, "gate"]`; a verdict
        // is an object.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::invalid("body is not a JSON object"));
        }
        serde_json::from_slice(body).map_err(Error::invalid_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_files_serialize_as_empty_array() {
        let v = serde_json::to_value(QualityRequest::new("t", "a")).unwrap();
        assert_eq!(
            v,
            json!({"taskId": "t", "agentId": "a", "files": [], "diffSummary": ""})
        );
    }

    #[test]
    fn unicode_and_control_characters_round_trip() {
        let req = QualityRequest::new("tâche-✓", "агент\u{0}\u{1b}")
            .files(["dir/файл.rs", "emoji-🦀.md", "tab\tnew\nline"])
            .diff_summary("\"quoted\" \\ back \u{7f} 中文");
        let bytes = crate::call::Call::new(req.clone()).unwrap().body().clone();
        let back: QualityRequest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, req);
        assert_eq!(req.encode(), bytes);
    }

    #[test]
    fn very_long_diff_summary_is_kept_whole() {
        let summary = "x".repeat(4 * 1024 * 1024);
        let req = QualityRequest::new("t", "a").diff_summary(summary.clone());
        let back: QualityRequest =
            serde_json::from_slice(crate::call::Call::new(req.clone()).unwrap().body()).unwrap();
        assert_eq!(back.diff_summary.len(), summary.len());
        // Encoded twice on this thread: the large buffer is not kept, and a
        // small request after it encodes whole.
        assert_eq!(req.encode(), req.encode());
        let small = QualityRequest::new("t", "a");
        assert_eq!(
            &small.encode()[..],
            br#"{"taskId":"t","agentId":"a","files":[],"diffSummary":""}"#
        );
    }

    #[test]
    fn response_ignores_unknown_fields_and_keeps_details() {
        let r = QualityResponse::from_json(
            br#"{"approved":true,"gate":"aiReview","message":null,"details":{"aiReview":{"confidence":0.93}},"x":[1]}"#,
        )
        .unwrap();
        assert!(r.approved);
        assert_eq!(r.message, None);
        assert_eq!(r.details.unwrap()["aiReview"]["confidence"], json!(0.93));
    }

    #[test]
    fn response_with_bad_shape_is_invalid() {
        for body in [
            &br#"{"gate":"build"}"#[..],
            br#"{"approved":"true","gate":"build"}"#,
            br#"{"approved":true}"#,
            br#"{"approved":true,"gate":7}"#,
            br#"{"approved":true,"gate":"g","details":[1]}"#,
            br#"[true,"build"]"#,
            b"",
            b"{not json",
        ] {
            let err = QualityResponse::from_json(body).unwrap_err();
            assert!(err.is_invalid_response(), "{body:?}: {err:?}");
            assert!(!err.is_retryable());
        }
    }
}
