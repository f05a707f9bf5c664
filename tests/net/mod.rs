//! What the network suites share: a private CA that issues certificates,
//! a TLS coordinator on 127.0.0.1 that records the protocol of each
//! request and counts failed handshakes, and an HTTP proxy that records
//! what it received.

// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

mod proxy;
#[cfg(feature = "rustls")]
mod tls;

pub use self::proxy::*;
#[cfg(feature = "rustls")]
pub use self::tls::*;
