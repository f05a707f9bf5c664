//! [`AttemptTarget`]: where the client sends an attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use super::replicas::Routed;
use crate::call::Call;
use crate::check::{AttemptFuture, QualityCheck};
use crate::error::Error;
use crate::wire::QualityResponse;

/// Where the client sends an attempt: the one coordinator, or a balanced,
/// discovered and/or hedged set of replicas
/// ([`ClientBuilder::target_service`](super::ClientBuilder::target_service)).
///
/// A `Service<Call>`, cheap to clone. What it is made of is not part of
/// its type, so that the routing can change without a breaking release.
#[derive(Clone)]
pub struct AttemptTarget {
    inner: Target,
}

#[derive(Clone)]
enum Target {
    One(QualityCheck),
    /// The one coordinator behind a layer (its adaptive limit): the check
    /// is kept for health probes, which share its pool.
    Limited(Routed, QualityCheck),
    Routed(Routed),
}

impl AttemptTarget {
    pub(crate) fn one(check: QualityCheck) -> Self {
        AttemptTarget {
            inner: Target::One(check),
        }
    }

    /// The one coordinator behind `limited`.
    pub(crate) fn limited(limited: Routed, check: QualityCheck) -> Self {
        AttemptTarget {
            inner: Target::Limited(limited, check),
        }
    }

    /// The one coordinator's check, when attempts go to one coordinator.
    pub(crate) fn check(&self) -> Option<&QualityCheck> {
        match &self.inner {
            Target::One(check) | Target::Limited(_, check) => Some(check),
            Target::Routed(_) => None,
        }
    }

    pub(crate) fn routed(routed: Routed) -> Self {
        AttemptTarget {
            inner: Target::Routed(routed),
        }
    }
}

impl Service<Call> for AttemptTarget {
    type Response = QualityResponse;
    type Error = Error;
    type Future = AttemptTargetFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match &mut self.inner {
            Target::One(check) => Service::<Call>::poll_ready(check, cx),
            Target::Routed(routed) | Target::Limited(routed, _) => routed.poll_ready(cx),
        }
    }

    fn call(&mut self, call: Call) -> AttemptTargetFuture {
        let inner = match &mut self.inner {
            Target::One(check) => TargetFuture::One {
                future: check.call(call),
            },
            Target::Routed(routed) | Target::Limited(routed, _) => TargetFuture::Routed {
                future: routed.call(call),
            },
        };
        AttemptTargetFuture { inner }
    }
}

impl fmt::Debug for AttemptTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Target::One(check) => f.debug_tuple("AttemptTarget").field(check).finish(),
            Target::Limited(_, check) => f.debug_tuple("AttemptTarget").field(check).finish(),
            Target::Routed(_) => f.write_str("AttemptTarget(replicas)"),
        }
    }
}

pin_project! {
    /// The future of an [`AttemptTarget`] call: one attempt.
    pub struct AttemptTargetFuture {
        #[pin]
        inner: TargetFuture,
    }
}

type RoutedFuture = <Routed as Service<Call>>::Future;

pin_project! {
    #[project = TargetProj]
    enum TargetFuture {
        One { #[pin] future: AttemptFuture },
        Routed { future: RoutedFuture },
    }
}

impl Future for AttemptTargetFuture {
    type Output = Result<QualityResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            TargetProj::One { future } => future.poll(cx),
            TargetProj::Routed { future } => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for AttemptTargetFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptTargetFuture")
            .finish_non_exhaustive()
    }
}
