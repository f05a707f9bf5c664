//! [`Record`]: the one piece of per-call state the layers below
//! [`Identify`](super::Identify) share besides the call's identity.
//!
//! Layers talk through the request, the response and the error, as tower's
//! do. Two things cannot travel that way, because tower's `Retry` drops the
//! result of an attempt it retries and because a timer above an attempt
//! drops the attempt instead of answering it:
//!
//! - **the last attempt's outcome**, the cause (`source()`) of a total
//!   timeout that comes later, whatever retry policy sits between. Written
//!   only by the attempt itself (the crate's sender,
//!   [`QualityCheck`](crate::QualityCheck)): its error when it fails, or
//!   "cut" when it is dropped before it answers;
//! - **the attempt timer**: whether an
//!   [`AttemptTimeout`](crate::timeout::AttemptTimeout) bounds the call by
//!   its deadline right now, so a [`Deadline`](crate::timeout::Deadline)
//!   (or the sender's own deadline check) need not arm a second timer, and
//!   the end it set, so that a nested attempt timer ends no later and a
//!   breaker below it can tell an attempt cut by its timer from one the
//!   caller abandoned. Written only by `AttemptTimeout`.
//!
//! Every reader does the right thing when the writer is absent: with no
//! attempt timer, the deadline arms its own; with no record of a failure, a
//! total timeout has no cause.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use crate::error::{Error, TimeoutKind};

/// See the [module docs](self).
#[derive(Default)]
pub(crate) struct Record {
    /// Attempt timers running now whose end is no later than the deadline.
    timers: AtomicU32,
    /// The end the outermost attempt timer set for the current attempt.
    attempt_end: Mutex<Option<Instant>>,
    /// The last attempt that failed or was cut, by attempt number.
    last: Mutex<Last>,
}

#[derive(Default)]
enum Last {
    #[default]
    Nothing,
    Failed(u32, Error),
    Cut(u32, TimeoutKind),
}

impl Last {
    fn attempt(&self) -> u32 {
        match self {
            Last::Nothing => 0,
            Last::Failed(n, _) | Last::Cut(n, _) => *n,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Record {
    // ----- written by the sender -----

    /// Attempt `attempt` failed with `error`.
    pub(crate) fn failed(&self, attempt: u32, error: &Error) {
        let mut last = lock(&self.last);
        if last.attempt() <= attempt {
            *last = Last::Failed(attempt, error.to_cause());
        }
    }

    /// Attempt `attempt` was dropped before it answered. A later attempt's
    /// outcome (a hedged copy's) is kept over it.
    pub(crate) fn cut(&self, attempt: u32, deadline: Option<Instant>) {
        let kind = if self.cut_by_attempt_timer(deadline) {
            TimeoutKind::Attempt
        } else {
            TimeoutKind::Unknown
        };
        let mut last = lock(&self.last);
        if last.attempt() < attempt {
            *last = Last::Cut(attempt, kind);
        }
    }

    /// The last attempt's failure, once: the cause of a total timeout.
    pub(crate) fn take_cause(&self) -> Option<Error> {
        match std::mem::take(&mut *lock(&self.last)) {
            Last::Nothing => None,
            Last::Failed(_, error) => Some(error),
            Last::Cut(_, kind) => Some(Error::timeout(kind)),
        }
    }

    // ----- written by the attempt timer -----

    /// An attempt timer that ends by the deadline starts. Returns the end
    /// to use: `at`, or the earlier end an outer timer (the client's, above
    /// a replica's behind a balancer) set for this attempt, so that the
    /// inner one decides and its replica's breaker sees the timeout.
    pub(crate) fn timer_started(&self, at: Instant) -> Instant {
        let outermost = self.timers.fetch_add(1, Ordering::Relaxed) == 0;
        let mut end = lock(&self.attempt_end);
        match (*end, outermost) {
            (Some(outer), false) => outer.min(at),
            _ => {
                *end = Some(at);
                at
            }
        }
    }

    /// An attempt timer ended (its attempt answered, or it fired).
    pub(crate) fn timer_ended(&self) {
        self.timers.fetch_sub(1, Ordering::Relaxed);
    }

    // ----- read by the deadline, the sender and the breaker -----

    /// Whether an attempt timer bounds the call by its deadline right now.
    pub(crate) fn timed(&self) -> bool {
        self.timers.load(Ordering::Relaxed) > 0
    }

    /// Whether the current attempt's own timer (not the call's deadline)
    /// has passed: an attempt dropped now was cut by it.
    pub(crate) fn cut_by_attempt_timer(&self, deadline: Option<Instant>) -> bool {
        match *lock(&self.attempt_end) {
            Some(end) => end <= Instant::now() && deadline.is_none_or(|d| end < d),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_newest_attempt_is_the_cause_and_a_hedged_copy_does_not_hide_a_failure() {
        let record = Record::default();
        assert!(record.take_cause().is_none());
        record.failed(1, &Error::circuit_open());
        // A copy of attempt 1 dropped after it failed keeps the failure.
        record.cut(1, None);
        assert!(record.take_cause().unwrap().is_circuit_open());
        // Taken once.
        assert!(record.take_cause().is_none());
        record.failed(1, &Error::circuit_open());
        record.cut(2, None);
        let cause = record.take_cause().unwrap();
        assert_eq!(cause.timeout_kind(), Some(TimeoutKind::Unknown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_nested_timer_ends_no_later_and_a_cut_at_its_end_is_an_attempt_timeout() {
        let record = Record::default();
        let now = Instant::now();
        let outer = record.timer_started(now + Duration::from_secs(1));
        let inner = record.timer_started(now + Duration::from_secs(2));
        assert_eq!((outer, inner), (now + Duration::from_secs(1), outer));
        assert!(record.timed());
        record.timer_ended();
        record.timer_ended();
        assert!(!record.timed());
        assert!(!record.cut_by_attempt_timer(None));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(record.cut_by_attempt_timer(None));
        // An end at the deadline is the deadline's, not the attempt's.
        assert!(!record.cut_by_attempt_timer(Some(outer)));
        record.cut(1, None);
        let cause = record.take_cause().unwrap();
        assert!(cause.is_attempt_timeout());
    }
}
