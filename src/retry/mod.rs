//! Retrying failed checks: [`RetryPolicy`] for tower's `Retry`, its
//! [`RetryBackoff`] and its shared [`RetryBudget`].
//!
//! The retry layer sits below [`Identify`](crate::call::Identify), so it
//! retries [`Call`]s: every attempt shares the call's request id, body,
//! deadline and attempt count.
//!
//! # Writing your own policy
//!
//! [`RetryPolicy`] is an ordinary [`tower::retry::Policy`]; any other policy
//! over [`Call`] plugs into the same place and keeps all of that. A policy
//! that retries only 503s, after a fixed delay:
//!
//! ```
//! use std::time::Duration;
//! use tower_quality_gate::call::Call;
//! use tower_quality_gate::{Error, QualityResponse};
//! use tower::retry::Policy;
//!
//! #[derive(Clone)]
//! struct Only503 { max_attempts: u32 }
//!
//! impl Policy<Call, QualityResponse, Error> for Only503 {
//!     type Future = tokio::time::Sleep;
//!
//!     fn retry(
//!         &mut self,
//!         call: &mut Call,
//!         result: &mut Result<QualityResponse, Error>,
//!     ) -> Option<Self::Future> {
//!         let is_503 = matches!(result, Err(e) if e.status() == Some(http::StatusCode::SERVICE_UNAVAILABLE));
//!         // The call counts its attempts: no counter of our own.
//!         (is_503 && call.attempts() < self.max_attempts)
//!             .then(|| tokio::time::sleep(Duration::from_millis(200)))
//!     }
//!
//!     fn clone_request(&mut self, call: &Call) -> Option<Call> {
//!         Some(call.clone()) // a reference-count increment
//!     }
//! }
//!
//! # fn main() -> Result<(), Error> {
//! let b = tower_quality_gate::QualityClient::builder("http://127.0.0.1:8000");
//! let service = tower::ServiceBuilder::new()
//!     .layer(b.identify_layer())
//!     .layer(b.deadline_layer())
//!     .retry(Only503 { max_attempts: 3 })
//!     .layer(b.attempt_timeout_layer())
//!     .service(b.check_service()?);
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

use tokio::time::Sleep;
use tower::retry::Policy;

pub use self::backoff::{Jitter, JitteredBackoff, RetryBackoff};
pub use self::budget::RetryBudget;

use crate::call::Call;
use crate::classify::{ClassifyFailure, RetryableFailures};
use crate::error::{BoxError, Boxed, Error, TimeoutKind};

/// The default number of attempts, the first included: 3, as the original
/// coordinator client made.
const DEFAULT_ATTEMPTS: u32 = 3;
/// The default longest `Retry-After` honoured: 10 s. A server asking for
/// more ends the retries with its own error rather than holding the call.
const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The retry policy of the default stack, for [`tower::retry::Retry`] over
/// [`Call`]s.
///
/// It retries only what its classifier ([`classify`](Self::classify),
/// default [`Error::is_retryable`]) calls safe (connect and transport
/// failures, attempt timeouts, 408, 429, 5xx), never a 4xx, an invalid or
/// oversized response, or a verdict (`approved: false` is an answer, not a
/// failure). Between attempts it waits as its [`RetryBackoff`] says, or at
/// least as long as the coordinator's `Retry-After` asks, plus a random
/// share of up to half of it (so the callers it turned away do not all
/// return in the same instant). It gives up, with
/// the last error, when:
///
/// - the call has sent its attempts (default 3 in all, hedged copies
///   included: [`Call::attempts`]), so a coordinator never receives more
///   copies of a call than that;
/// - `Retry-After` asks for more than [`max_retry_after`](Self::max_retry_after)
///   (default 10 s);
/// - the wait would reach the call's deadline ([`Call::deadline`]): an
///   attempt that could not start before it is never scheduled;
/// - the shared [`RetryBudget`], if one is set, is spent.
///
/// One failure is resent at once and not counted: an HTTP/2 stream the
/// coordinator refused without processing it ([`Error::is_unprocessed`]);
/// once per call.
///
/// It works with the crate's [`Error`] and with a [`BoxError`] (when a tower
/// layer that boxes errors sits between it and the service); in the latter
/// case a tower `Elapsed` counts as a retryable timeout.
///
/// Cloning is cheap (one `Arc`); tower's `Retry` clones it for each call.
///
/// ```
/// use std::time::Duration;
/// use tower_quality_gate::retry::{JitteredBackoff, Jitter, RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::new()
///     .attempts(4)
///     .backoff(JitteredBackoff::new(Duration::from_millis(50)).jitter(Jitter::Full))
///     .budget(RetryBudget::default());
/// assert_eq!(policy.max_attempts(), 4);
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    /// The settings, behind one reference count: tower's `Retry` clones the
    /// policy into every call's future.
    settings: Arc<Settings>,
    /// Decisions made for this call: zero in the policy tower's `Retry`
    /// keeps, which never decides, and in each call's fresh clone of it.
    decided: u32,
    /// Whether this call already resent a request the coordinator provably
    /// never processed.
    resent_unprocessed: bool,
}

/// What every clone of a policy shares, until a setter is called on one
/// (copy on write: the budget, an `Arc` itself, stays shared).
#[derive(Clone)]
struct Settings {
    max_attempts: u32,
    backoff: Arc<dyn RetryBackoff>,
    max_retry_after: Duration,
    budget: Option<Arc<RetryBudget>>,
    /// What may be retried; `None` for [`RetryableFailures`].
    classify: Option<Arc<dyn ClassifyFailure<Error> + Send + Sync>>,
}

/// What the policy needs to know of a failed attempt.
struct Failure {
    retryable: bool,
    retry_after: Option<Duration>,
    kind: &'static str,
    status: Option<http::StatusCode>,
    unprocessed: bool,
}

impl Failure {
    fn of(err: &Error, retryable: bool) -> Failure {
        Failure {
            retryable,
            retry_after: err.retry_after_at(SystemTime::now()),
            kind: err.kind().as_str(),
            status: err.status(),
            unprocessed: err.is_unprocessed(),
        }
    }
}

// ===== impl RetryPolicy =====

impl RetryPolicy {
    /// The default policy: 3 attempts, [`JitteredBackoff::default`]
    /// (100 ms, ×2, ≤ 2 s, full jitter), `Retry-After` honoured up to 10 s,
    /// no budget.
    pub fn new() -> Self {
        RetryPolicy {
            settings: Arc::new(Settings {
                max_attempts: DEFAULT_ATTEMPTS,
                backoff: Arc::new(JitteredBackoff::default()),
                max_retry_after: DEFAULT_MAX_RETRY_AFTER,
                budget: None,
                classify: None,
            }),
            decided: 0,
            resent_unprocessed: false,
        }
    }

    /// Retries only the failures `classify` calls retryable (default
    /// [`RetryableFailures`]: [`Error::is_retryable`]), keeping everything
    /// else the policy does: attempts, backoff, `Retry-After`, the deadline
    /// and the budget. A new rule is a classifier, not a new policy.
    ///
    /// ```
    /// use tower_quality_gate::retry::RetryPolicy;
    /// use tower_quality_gate::Error;
    ///
    /// // Retry what is retryable, except a 500: that coordinator is broken.
    /// let policy = RetryPolicy::new().classify(|e: &Error| {
    ///     e.is_retryable() && e.status().map(|s| s.as_u16()) != Some(500)
    /// });
    /// # let _ = policy;
    /// ```
    ///
    /// Whatever it says, a call past its deadline is never retried, nor is an
    /// error from another tower layer that the crate cannot read.
    pub fn classify(
        mut self,
        classify: impl ClassifyFailure<Error> + Send + Sync + 'static,
    ) -> Self {
        self.settings_mut().classify = Some(Arc::new(classify));
        self
    }

    /// Whether `error` may be retried.
    fn retryable(&self, error: &Error) -> bool {
        let yes = match &self.settings.classify {
            None => RetryableFailures.is_failure(error),
            Some(classify) => classify.is_failure(error),
        };
        yes && !error.is_total_timeout()
    }

    fn failure(&self, error: &Error) -> Failure {
        Failure::of(error, self.retryable(error))
    }

    fn failure_boxed(&self, error: &BoxError) -> Failure {
        match Boxed::of(error) {
            Boxed::Error(error) => self.failure(error),
            // tower's Timeout fired: judged as a timeout of unknown kind.
            Boxed::Elapsed => self.failure(&Error::timeout(TimeoutKind::Unknown)),
            Boxed::Other => Failure {
                retryable: false,
                retry_after: None,
                kind: "other",
                status: None,
                unprocessed: false,
            },
        }
    }

    /// The most attempts per call, the first included (default 3). `1`
    /// disables retries; so does `0`, which
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) refuses as a
    /// configuration error.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.settings_mut().max_attempts = attempts;
        self
    }

    /// The waits between attempts (default [`JitteredBackoff::default`]).
    pub fn backoff(mut self, backoff: impl RetryBackoff) -> Self {
        self.settings_mut().backoff = Arc::new(backoff);
        self
    }

    /// The longest `Retry-After` honoured (default 10 s); a longer one ends
    /// the retries with the coordinator's error.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.settings_mut().max_retry_after = max;
        self
    }

    /// Spends retries from `budget` (default none; `None` removes it).
    /// Every clone of this policy shares it.
    pub fn budget(mut self, budget: impl Into<Option<RetryBudget>>) -> Self {
        self.settings_mut().budget = budget.into().map(Arc::new);
        self
    }

    /// The number of attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.settings.max_attempts
    }

    /// The settings to change, this policy's own from now on.
    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Decides after an attempt of `call`: `None` to stop, or the wait
    /// before the next.
    fn decide(&mut self, call: &Call, outcome: Result<(), Failure>) -> Option<Duration> {
        // One clock read for the deposit, the deadline check and the
        // withdrawal.
        let now = tokio::time::Instant::now();
        self.decided += 1;
        if self.decided == 1 {
            // Once per call, whatever its outcome: calls earn retries. Now,
            // not at the call's start: a first attempt as long as the
            // budget's window must not see its call's deposit expire.
            if let Some(budget) = &self.settings.budget {
                budget.deposit_at(now);
            }
        }
        let attempt = call.attempts();
        let failure = match outcome {
            Ok(()) => return None,
            Err(failure) => failure,
        };
        if failure.unprocessed && !self.resent_unprocessed {
            // The coordinator refused the HTTP/2 stream: it never processed
            // the request. Resend it at once, once per call, as hyper-util
            // does for requests it never wrote; it costs neither an attempt
            // nor a token of the budget.
            self.resent_unprocessed = true;
            call.uncount_attempt();
            tracing::debug!(
                attempt,
                "resending a request the coordinator refused unprocessed"
            );
            return Some(Duration::ZERO);
        }
        let stop = |reason: &str| {
            tracing::debug!(
                attempt,
                error.type = failure.kind,
                reason,
                "not retrying"
            );
        };
        if !failure.retryable {
            stop("not retryable");
            return None;
        }
        if attempt >= self.settings.max_attempts {
            crate::metrics::retry_refused("attempts");
            stop("attempts spent");
            return None;
        }
        let mut delay = self.settings.backoff.delay(attempt);
        if let Some(asked) = failure.retry_after {
            if asked > self.settings.max_retry_after {
                crate::metrics::retry_refused("retry_after");
                stop("retry-after beyond the cap");
                return None;
            }
            delay = self.settings.backoff.after_retry_after(asked, delay);
        }
        if let Some(deadline) = call.deadline() {
            if crate::time::saturating_add(now, delay) >= deadline {
                crate::metrics::retry_refused("deadline");
                stop("the next attempt could not start before the deadline");
                return None;
            }
        }
        if let Some(budget) = &self.settings.budget {
            if !budget.withdraw_at(now) {
                crate::metrics::retry_refused("budget");
                stop("retry budget spent");
                return None;
            }
        }
        crate::metrics::retry_scheduled(failure.status, failure.kind);
        tracing::debug!(
            attempt,
            error.type = failure.kind,
            next_attempt = attempt.saturating_add(1),
            delay_ms = crate::time::millis(delay),
            "retrying"
        );
        Some(delay)
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
            .field("max_attempts", &self.settings.max_attempts)
            .field("backoff", &self.settings.backoff)
            .field("max_retry_after", &self.settings.max_retry_after)
            .field("budget", &self.settings.budget)
            .field("custom_classifier", &self.settings.classify.is_some())
            .finish()
    }
}

impl<Res> Policy<Call, Res, Error> for RetryPolicy {
    type Future = Sleep;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Res, Error>) -> Option<Sleep> {
        let outcome = result.as_ref().map(|_| ()).map_err(|e| self.failure(e));
        let delay = self.decide(call, outcome)?;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

impl<Res> Policy<Call, Res, BoxError> for RetryPolicy {
    type Future = Sleep;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Res, BoxError>) -> Option<Sleep> {
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| self.failure_boxed(e));
        let delay = self.decide(call, outcome)?;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

#[cfg(test)]
mod tests;
