//! Fail-closed decisions: [`Verdict`], and typed views of a verdict's details.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::wire::QualityResponse;

/// What an orchestrator does with a check's outcome, in a form that cannot
/// mistake an error for an approval: only [`Verdict::Approved`] lets work in.
///
/// ```
/// use tower_quality_gate::{Error, QualityResponse, Verdict};
///
/// let approved = Verdict::from(Ok::<_, Error>(QualityResponse::approved("all")));
/// assert!(approved.is_approved());
///
/// let rejected = Verdict::from(Ok::<_, Error>(QualityResponse::rejected("lint", "3 warnings")));
/// assert!(!rejected.is_approved());
/// assert_eq!(rejected.gate(), Some("lint"));
///
/// let boxed: tower_quality_gate::BoxError = Box::new(tower::timeout::error::Elapsed::new());
/// let unavailable = Verdict::from(Err::<QualityResponse, _>(Error::from(boxed)));
/// assert!(!unavailable.is_approved());
/// assert!(unavailable.error().unwrap().is_timeout());
/// ```
#[derive(Debug)]
#[must_use = "a verdict decides whether the work is accepted"]
pub enum Verdict {
    /// Every gate passed.
    Approved(QualityResponse),
    /// A gate failed: the work is not accepted.
    Rejected {
        /// The gate that failed.
        gate: String,
        /// The coordinator's explanation, if any.
        message: Option<String>,
        /// Per-gate results, if any.
        details: Option<Map<String, Value>>,
    },
    /// No verdict could be had: the work is not accepted either (fail closed).
    Unavailable {
        /// Why there is no verdict.
        error: Error,
    },
}

impl Verdict {
    /// True only for an approval by the coordinator.
    pub fn is_approved(&self) -> bool {
        matches!(self, Verdict::Approved(_))
    }

    /// True when a gate rejected the work.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Verdict::Rejected { .. })
    }

    /// True when the coordinator gave no verdict.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Verdict::Unavailable { .. })
    }

    /// The deciding gate, when the coordinator answered.
    pub fn gate(&self) -> Option<&str> {
        match self {
            Verdict::Approved(r) => Some(&r.gate),
            Verdict::Rejected { gate, .. } => Some(gate),
            Verdict::Unavailable { .. } => None,
        }
    }

    /// The coordinator's message, when it answered with one.
    pub fn message(&self) -> Option<&str> {
        match self {
            Verdict::Approved(r) => r.message.as_deref(),
            Verdict::Rejected { message, .. } => message.as_deref(),
            Verdict::Unavailable { .. } => None,
        }
    }

    /// The error, when there is no verdict.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Verdict::Unavailable { error } => Some(error),
            _ => None,
        }
    }
}

impl From<Result<QualityResponse, Error>> for Verdict {
    fn from(result: Result<QualityResponse, Error>) -> Verdict {
        match result {
            Ok(r) if r.approved => Verdict::Approved(r),
            Ok(r) => Verdict::Rejected {
                gate: r.gate,
                message: r.message,
                details: r.details,
            },
            Err(error) => Verdict::Unavailable { error },
        }
    }
}

/// The AI review's result, as coordinators put it in `details.aiReview`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct AiReview {
    /// The reviewer's confidence, 0 to 1 (coordinators approve at ≥ 0.9).
    pub confidence: f64,
    /// Whether the reviewer approved.
    pub approved: bool,
    /// The reviewer's findings, as sent.
    #[serde(default)]
    pub findings: Vec<Value>,
}

impl QualityResponse {
    /// The raw result of one gate, `details[gate]`, if the coordinator sent it.
    pub fn detail(&self, gate: &str) -> Option<&Value> {
        self.details.as_ref()?.get(gate)
    }

    /// `details.aiReview`, if present and well-formed; `None` otherwise,
    /// never an error: details inform, the `approved` flag decides.
    ///
    /// ```
    /// use tower_quality_gate::QualityResponse;
    ///
    /// let r = QualityResponse::from_json(
    ///     br#"{"approved":true,"gate":"aiReview","details":{"aiReview":{"confidence":0.93,"approved":true,"findings":[]}}}"#,
    /// ).unwrap();
    /// assert_eq!(r.ai_review().unwrap().confidence, 0.93);
    /// assert_eq!(QualityResponse::approved("all").ai_review(), None);
    /// ```
    pub fn ai_review(&self) -> Option<AiReview> {
        AiReview::deserialize(self.detail("aiReview")?).ok()
    }

    /// The coverage percentage from `details.coverage`, given either as a
    /// number or as `{"percent": n}`.
    pub fn coverage_percent(&self) -> Option<f64> {
        match self.detail("coverage")? {
            Value::Number(n) => n.as_f64(),
            Value::Object(o) => o.get("percent")?.as_f64(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(details: Value) -> QualityResponse {
        QualityResponse {
            details: details.as_object().cloned(),
            ..QualityResponse::approved("all")
        }
    }

    #[test]
    fn typed_details_never_fail() {
        assert_eq!(
            response(json!({"coverage": 91.5})).coverage_percent(),
            Some(91.5)
        );
        assert_eq!(
            response(json!({"coverage": {"percent": 85}})).coverage_percent(),
            Some(85.0)
        );
        assert_eq!(
            response(json!({"coverage": "high"})).coverage_percent(),
            None
        );
        assert_eq!(
            response(json!({"aiReview": {"confidence": "x"}})).ai_review(),
            None
        );
        let review = response(json!({"aiReview": {"confidence": 0.5, "approved": false, "findings": ["f"], "model": "m"}}))
            .ai_review()
            .unwrap();
        assert!(!review.approved);
        assert_eq!(review.findings, [json!("f")]);
    }

    #[test]
    fn only_an_approval_approves() {
        let rejected = Verdict::from(Ok(QualityResponse::rejected("test", "1 failing")));
        assert!(rejected.is_rejected() && !rejected.is_approved());
        assert_eq!(rejected.message(), Some("1 failing"));
        let unavailable = Verdict::from(Err(Error::circuit_open()));
        assert!(unavailable.is_unavailable() && !unavailable.is_approved());
        assert_eq!(unavailable.gate(), None);
    }
}
