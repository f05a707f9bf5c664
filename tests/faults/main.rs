//! The reliability suite: the composed `QualityClient` against a coordinator
//! that fails in every way issue 4 lists, on 127.0.0.1, with tokio's clock
//! paused so every time bound is exact.
//!
//! Each scenario asserts the outcome (a verdict, or an error's kind, status
//! and attempts), how many requests reached the coordinator, and how long
//! the call took. The backoff has no jitter (100 ms, then 200 ms); every
//! other setting is the default: 3 attempts, 10 s per attempt, 30 s in all,
//! `Retry-After` up to 10 s, the 20%-plus-10/s retry budget.

#[path = "../common/mod.rs"]
mod common;

mod http;
mod load;
mod pool;
mod transport;
