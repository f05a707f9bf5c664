//! # quality-gate
//!
//! Asks a coordinator whether an agent's work passes its quality gates, as a
//! [`tower::Service`], with typed errors, bounded retries, timeouts and a
//! concurrency limit.
//!
//! The call is `POST {COORDINATOR_URL}/api/quality/check` with a
//! [`QualityRequest`], answered by a [`QualityResponse`] verdict. An
//! [`Error`] is never an approval: fail closed.
//!
//! - [`QualityCheck`]: one attempt, the bare service.
//! - [`QualityClient`]: the default stack — concurrency limit, overall
//!   deadline, [`RetryPolicy`](retry::RetryPolicy), per-attempt timeout.
//! - [`retry`]: the policy, its backoff and its budget, to reuse or replace.
//! - Networks: [`Proxy`], TLS options on [`QualityCheckBuilder`] (feature
//!   `rustls`) with [`TlsFailure`] errors, HTTP/2 keep-alive, and
//!   [`ClientBuilder::from_env`] for configuration from the environment.
//!
//! ```no_run
//! use quality_gate::{QualityClient, QualityRequest};
//!
//! # #[tokio::main] async fn main() -> Result<(), quality_gate::Error> {
//! let client = QualityClient::from_env()?; // COORDINATOR_URL, or 127.0.0.1:8000
//! let req = QualityRequest::new("task-42", "agent-7")
//!     .files(["src/lib.rs"])
//!     .diff_summary("add retry budget");
//! match client.check(req).await {
//!     Ok(v) if v.approved => println!("accepted"),
//!     Ok(v) => println!("rejected by {}: {:?}", v.gate, v.message),
//!     Err(e) => println!("not accepted, coordinator failed: {e}"),
//! }
//! # Ok(()) }
//! ```
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
mod http2;
pub mod limit;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_noop.rs"]
mod metrics;
pub mod propagate;
mod proxy;
mod redact;
mod request_id;
pub mod retry;
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
