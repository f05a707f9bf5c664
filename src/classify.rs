//! [`ClassifyFailure`]: whether an error says the service behind a layer is
//! unwell, as tower-http's `classify` separates "is this a failure" from
//! "what to do about it".
//!
//! The circuit breaker counts what its classifier calls a failure; a user
//! with other rules (count a 429, ignore timeouts) passes their own.

use crate::error::{BoxError, Boxed, Error};

/// Decides whether an error counts as a failure of the service (it is down,
/// overloaded or unreachable), as opposed to an answer from a live one.
///
/// Any `Fn(&E) -> bool + Clone` is a classifier:
///
/// ```
/// use tower_quality_gate::classify::ClassifyFailure;
/// use tower_quality_gate::Error;
///
/// let only_timeouts = |e: &Error| e.is_timeout();
/// assert!(!only_timeouts.is_failure(&Error::circuit_open()));
/// ```
pub trait ClassifyFailure<E> {
    /// True when `error` says the service is unwell.
    fn is_failure(&self, error: &E) -> bool;
}

impl<E, F> ClassifyFailure<E> for F
where
    F: Fn(&E) -> bool,
{
    fn is_failure(&self, error: &E) -> bool {
        self(error)
    }
}

/// The default classifier: a failure is what [`Error::is_retryable`] calls
/// retryable (connect and transport failures, attempt timeouts, 408, 429,
/// 5xx). A 4xx or an invalid response is an answer from a live coordinator.
/// An attempt cut short by its call's deadline
/// ([`Error::is_total_timeout`]) is neither: the caller ran out of time,
/// which says nothing of the coordinator (a propagated 200 ms deadline must
/// not open a breaker).
///
/// For a [`BoxError`] (a tower layer between), a boxed [`Error`] is judged
/// as above, a tower `Elapsed` is a failure, and any other error is a
/// failure too: an error the crate cannot read is no proof of health.
///
/// ```
/// use tower_quality_gate::classify::{ClassifyFailure, RetryableFailures};
/// use tower_quality_gate::{BoxError, Error, TimeoutKind};
///
/// assert!(RetryableFailures.is_failure(&Error::timeout(TimeoutKind::Attempt)));
/// let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
/// assert!(RetryableFailures.is_failure(&elapsed));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryableFailures;

impl ClassifyFailure<Error> for RetryableFailures {
    fn is_failure(&self, error: &Error) -> bool {
        error.is_retryable() && !error.is_total_timeout()
    }
}

impl ClassifyFailure<BoxError> for RetryableFailures {
    fn is_failure(&self, error: &BoxError) -> bool {
        match Boxed::of(error) {
            Boxed::Error(error) => self.is_failure(error),
            Boxed::Elapsed | Boxed::Other => true,
        }
    }
}
