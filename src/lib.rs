#![doc = include_str!("../README.md")]
//!
//! # The crate's modules
//!
//! - [`guide`]: the reference pages the sections above link to.
//! - [`QualityCheck`]: one attempt, the bare service; [`QualityClient`] and
//!   [`ClientBuilder`]: the default stack and the layers it is made of.
//! - [`call`]: each call's identity ([`call::Identify`], [`call::Call`]);
//!   [`timeout`]: its deadline and attempt timeouts; [`retry`]: the policy,
//!   its backoff and its budget; [`breaker`] and [`classify`]: the circuit
//!   breaker and what counts as a failure.
//! - [`limit`]: the adaptive concurrency limit; [`discover`]: replicas found
//!   at run time.
//! - [`gate`]: the server-side middleware; [`propagate`]: the request id,
//!   trace context and deadline it forwards.
//! - Networks: [`Proxy`], TLS options on [`QualityCheckBuilder`] (feature
//!   `rustls`) with [`TlsFailure`] errors, HTTP/2 keep-alive, and
//!   [`ClientBuilder::from_env`] for configuration from the environment.
//! - `metrics` (feature `metrics`) and `testing` (feature `test-util`): the
//!   metrics and the in-process test coordinator.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod call;
pub mod check;
pub mod classify;
pub mod client;
pub mod discover;
mod env;
mod error;
pub mod gate;
pub mod guide;
mod headers;
mod http2;
pub mod limit;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
mod options;
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod otel;
pub mod propagate;
mod proxy;
mod redact;
mod request_id;
pub mod retry;
mod retry_after;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod time;
pub mod timeout;
mod tls;
mod trace;
mod verdict;
mod wire;

pub use crate::check::QualityCheck;
pub use crate::check::QualityCheckBuilder;
pub use crate::client::{AttemptTarget, ClientBuilder, Hedging, QualityClient};
pub use crate::error::{BoxError, Error, ErrorKind, TimeoutKind};
pub use crate::proxy::Proxy;
pub use crate::tls::TlsFailure;
pub use crate::verdict::{AiReview, Verdict};
pub use crate::wire::{QualityRequest, QualityResponse};
