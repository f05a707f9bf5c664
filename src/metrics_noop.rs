//! The metrics hooks without the `metrics` feature: they do nothing and
//! compile away. `metrics.rs` has the real ones and the docs.

use crate::error::Error;
use crate::wire::QualityResponse;

#[derive(Debug)]
pub(crate) struct CallMetrics;

impl CallMetrics {
    #[inline(always)]
    pub(crate) fn start() -> Self {
        CallMetrics
    }

    #[inline(always)]
    pub(crate) fn finish(&self, _: &Result<QualityResponse, Error>) {}
}

#[derive(Debug)]
pub(crate) struct AttemptMetrics;

impl AttemptMetrics {
    #[inline(always)]
    pub(crate) fn start(_: &http::Uri) -> Self {
        AttemptMetrics
    }

    #[inline(always)]
    pub(crate) fn none() -> Self {
        AttemptMetrics
    }

    #[inline(always)]
    pub(crate) fn status(&mut self, _: http::StatusCode) {}

    #[inline(always)]
    pub(crate) fn finish(&mut self, _: Option<&Error>) {}
}

#[derive(Debug, Default)]
pub(crate) struct Waiting;

impl Waiting {
    #[inline(always)]
    pub(crate) fn set(&mut self, _: bool) {}
}

#[inline(always)]
pub(crate) fn retry_scheduled(_: &'static str) {}

#[inline(always)]
pub(crate) fn retry_refused(_: &'static str) {}

#[inline(always)]
pub(crate) fn breaker_transition(_: Option<&str>, _: &'static str) {}
