//! Reference pages, one per topic, for what the [crate-level
//! introduction](crate) leaves out. Each Rust example on them is a complete
//! program, compiled and run by `cargo test`.
//!
//! - [`stack`]: the default client's layers and defaults, and the same stack
//!   built by hand with a retry policy of your own.
//! - [`failures`]: what a caller gets for each fault, and `Verdict`.
//! - [`operating`]: health checks, credentials, request ids, the circuit
//!   breaker.
//! - [`networks`]: configuration from the environment, proxies, TLS, HTTP/2.
//! - [`replicas`]: several coordinators, discovery, hedging, adaptive
//!   concurrency.
//! - [`propagation`]: per-call deadlines and ids, and what the gate forwards.
//! - [`observability`]: spans, metrics, logs and OpenTelemetry.
//! - [`embedding`]: axum, tonic and the `QualityGateLayer` middleware.

#[doc = include_str!("docs/stack.md")]
pub mod stack {}

#[doc = include_str!("docs/failures.md")]
pub mod failures {}

#[doc = include_str!("docs/operating.md")]
pub mod operating {}

#[doc = include_str!("docs/networks.md")]
pub mod networks {}

#[doc = include_str!("docs/replicas.md")]
pub mod replicas {}

#[doc = include_str!("docs/propagation.md")]
pub mod propagation {}

#[doc = include_str!("docs/observability.md")]
pub mod observability {}

#[doc = include_str!("docs/embedding.md")]
pub mod embedding {}
