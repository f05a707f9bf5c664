//! Retrying failed checks: [`RetryPolicy`] for tower's `Retry`, its
//! [`Backoff`] and its shared [`RetryBudget`].
//!
//! # Writing your own policy
//!
//! [`RetryPolicy`] is an ordinary [`tower::retry::Policy`]; any other policy
//! plugs into the same place. A policy that retries only 503s, after a fixed
//! second:
//!
//! ```
//! use std::time::Duration;
//! use quality_gate::{Error, QualityCheck, QualityRequest, QualityResponse};
//! use tower::retry::Policy;
//!
//! #[derive(Clone)]
//! struct Only503 { left: u32 }
//!
//! impl Policy<QualityRequest, QualityResponse, Error> for Only503 {
//!     type Future = tokio::time::Sleep;
//!
//!     fn retry(
//!         &mut self,
//!         _req: &mut QualityRequest,
//!         result: &mut Result<QualityResponse, Error>,
//!     ) -> Option<Self::Future> {
//!         let is_503 = matches!(result, Err(e) if e.status() == Some(http::StatusCode::SERVICE_UNAVAILABLE));
//!         if is_503 && self.left > 0 {
//!             self.left -= 1;
//!             Some(tokio::time::sleep(Duration::from_secs(1)))
//!         } else {
//!             None
//!         }
//!     }
//!
//!     fn clone_request(&mut self, req: &QualityRequest) -> Option<QualityRequest> {
//!         Some(req.clone())
//!     }
//! }
//!
//! # fn main() -> Result<(), Error> {
//! let service = tower::ServiceBuilder::new()
//!     .retry(Only503 { left: 2 })
//!     .service(QualityCheck::new("http://127.0.0.1:8000")?);
//! # let _ = service; Ok(()) }
//! ```
//!
//! `examples/custom_retry_policy.rs` runs such a policy against a test
//! coordinator.

mod backoff;
mod budget;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Sleep};
use tower::retry::Policy;

pub use self::backoff::{
    Backoff, ExponentialBackoff, Jitter, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF,
};
pub use self::budget::RetryBudget;

use crate::error::{BoxError, Error};

/// The default number of attempts, the first included: 3, as the original
/// coordinator client made.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The default longest `Retry-After` honoured: 10 s. A server asking for
/// more ends the retries with its own error rather than holding the call.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The retry policy of the default stack, for [`tower::retry::Retry`].
///
/// It retries only what [`Error::is_retryable`] calls safe (connect and
/// transport failures, timeouts, 408, 429, 5xx), never a 4xx, an invalid or
/// oversized response, or a verdict (`approved: false` is an answer, not a
/// failure). Between attempts it waits as its [`Backoff`] says, or as long as
/// the coordinator's `Retry-After` asks if that is longer. It gives up, with
/// the last error, when:
///
/// - the attempts are spent (default 3 in all);
/// - `Retry-After` asks for more than [`max_retry_after`](Self::max_retry_after)
///   (default 10 s);
/// - the wait would pass the call's [`deadline`](Self::deadline), if one is set;
/// - the shared [`RetryBudget`], if one is set, is spent.
///
/// One failure is resent at once and not counted: a request written to a
/// pooled connection the coordinator had just closed, which never reached
/// it ([`Error::is_lost_on_pooled_connection`]); once per call.
///
/// It works with the crate's [`Error`] and with a [`BoxError`] (when a tower
/// timeout sits between it and the service); in the latter case a tower
/// `Elapsed` counts as a retryable timeout.
///
/// Cloning is cheap (two `Arc`s); the attempt count lives in the clone that
/// tower's `Retry` makes for each call, so calls never share it.
///
/// ```
/// use std::time::Duration;
/// use quality_gate::retry::{ExponentialBackoff, Jitter, RetryBudget, RetryPolicy};
/// use quality_gate::QualityCheck;
///
/// # fn main() -> Result<(), quality_gate::Error> {
/// let policy = RetryPolicy::new()
///     .attempts(4)
///     .backoff(ExponentialBackoff::new(Duration::from_millis(50)).jitter(Jitter::Full))
///     .budget(RetryBudget::default());
/// let service = tower::ServiceBuilder::new()
///     .retry(policy)
///     .service(QualityCheck::new("http://127.0.0.1:8000")?);
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Arc<dyn Backoff>,
    max_retry_after: Duration,
    deadline: Option<Duration>,
    budget: Option<Arc<RetryBudget>>,
    /// Attempts finished in this call; zero in the template policy.
    finished: u32,
    /// When this call started, set as tower's `Retry` hands the call in.
    started: Option<Instant>,
    /// Whether this call already resent a request lost on a pooled connection.
    resent_lost: bool,
}

/// What the policy needs to know of a failed attempt.
struct Failure {
    retryable: bool,
    retry_after: Option<Duration>,
    kind: &'static str,
    lost_on_pooled_connection: bool,
}

impl Failure {
    fn of(err: &Error) -> Failure {
        Failure {
            retryable: err.is_retryable(),
            retry_after: err.retry_after_at(SystemTime::now()),
            kind: err.kind().as_str(),
            lost_on_pooled_connection: err.is_lost_on_pooled_connection(),
        }
    }

    fn of_boxed(err: &BoxError) -> Failure {
        if let Some(err) = err.downcast_ref::<Error>() {
            Failure::of(err)
        } else if err.is::<tower::timeout::error::Elapsed>() {
            Failure {
                retryable: true,
                retry_after: None,
                kind: "timeout",
                lost_on_pooled_connection: false,
            }
        } else {
            Failure {
                retryable: false,
                retry_after: None,
                kind: "other",
                lost_on_pooled_connection: false,
            }
        }
    }
}

// ===== impl RetryPolicy =====

impl RetryPolicy {
    /// The default policy: 3 attempts, [`ExponentialBackoff::default`]
    /// (100 ms, ×2, ≤ 2 s, full jitter), `Retry-After` honoured up to 10 s,
    /// no deadline, no budget.
    pub fn new() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_ATTEMPTS,
            backoff: Arc::new(ExponentialBackoff::default()),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            deadline: None,
            budget: None,
            finished: 0,
            started: None,
            resent_lost: false,
        }
    }

    /// The most attempts per call, the first included (default 3). `1`
    /// disables retries; `0` is treated as `1`.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The waits between attempts (default [`ExponentialBackoff::default`]).
    pub fn backoff(mut self, backoff: impl Backoff) -> Self {
        self.backoff = Arc::new(backoff);
        self
    }

    /// The longest `Retry-After` honoured (default 10 s); a longer one ends
    /// the retries with the coordinator's error.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The time a whole call may take, counted from when `Retry` receives it
    /// (default none). Set it to the overall timeout around the retry layer:
    /// a retry whose wait would pass it is not attempted, so the caller gets
    /// the coordinator's error instead of a timeout.
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Spends retries from `budget` (default none). Every clone of this
    /// policy shares it.
    pub fn budget(mut self, budget: impl Into<Arc<RetryBudget>>) -> Self {
        self.budget = Some(budget.into());
        self
    }

    /// Removes the retry budget.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The number of attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Decides after an attempt: `None` to stop, or the wait before the next.
    fn decide(&mut self, outcome: Result<(), Failure>) -> Option<Duration> {
        self.finished += 1;
        let attempt = self.finished;
        let failure = match outcome {
            Ok(()) => {
                tracing::debug!(attempt, outcome = "ok", "attempt finished");
                return None;
            }
            Err(failure) => failure,
        };
        if failure.lost_on_pooled_connection && !self.resent_lost {
            // It never reached the coordinator: resend it at once, once per
            // call, as hyper-util does for requests it never wrote. It costs
            // neither an attempt nor a token of the budget.
            self.resent_lost = true;
            self.finished -= 1;
            tracing::debug!(
                attempt,
                "resending a request lost on a closed pooled connection"
            );
            return Some(Duration::ZERO);
        }
        let stop = |reason: &str| {
            tracing::debug!(
                attempt,
                outcome = "error",
                error_kind = failure.kind,
                reason,
                "not retrying"
            );
        };
        if !failure.retryable {
            stop("not retryable");
            return None;
        }
        if attempt >= self.max_attempts {
            stop("attempts spent");
            return None;
        }
        let mut delay = self.backoff.delay(attempt);
        if let Some(asked) = failure.retry_after {
            if asked > self.max_retry_after {
                stop("retry-after beyond the cap");
                return None;
            }
            delay = delay.max(asked);
        }
        if let (Some(deadline), Some(started)) = (self.deadline, self.started) {
            if started.elapsed() + delay >= deadline {
                stop("the wait would pass the deadline");
                return None;
            }
        }
        if let Some(budget) = &self.budget {
            if !budget.withdraw() {
                stop("retry budget spent");
                return None;
            }
        }
        tracing::debug!(
            attempt,
            outcome = "error",
            error_kind = failure.kind,
            next_attempt = attempt + 1,
            delay_ms = delay.as_millis() as u64,
            "retrying"
        );
        Some(delay)
    }

    fn on_clone_request(&mut self) {
        if self.finished == 0 {
            // The template policy sees every call before it is cloned for it.
            self.started = Some(Instant::now());
            if let Some(budget) = &self.budget {
                budget.deposit();
            }
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<Req: Clone, Res> Policy<Req, Res, Error> for RetryPolicy {
    type Future = Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, Error>) -> Option<Sleep> {
        let outcome = result.as_ref().map(|_| ()).map_err(Failure::of);
        self.decide(outcome).map(tokio::time::sleep)
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        self.on_clone_request();
        Some(req.clone())
    }
}

impl<Req: Clone, Res> Policy<Req, Res, BoxError> for RetryPolicy {
    type Future = Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Sleep> {
        let outcome = result.as_ref().map(|_| ()).map_err(Failure::of_boxed);
        self.decide(outcome).map(tokio::time::sleep)
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        self.on_clone_request();
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests;
