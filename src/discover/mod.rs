//! Dynamic replicas: a name resolved again and again, and the replicas it
//! names added to and removed from tower's balancer as they come and go.
//!
//! [`Resolve`] turns a `host:port` into addresses ([`SystemResolver`] asks
//! the system, as `getaddrinfo`; any `Fn(&str) -> impl Future` will do).
//! [`Discovery`] is a `tower::discover::Discover` stream over it: it
//! resolves at once, then every `interval` (5 s by default in the client,
//! as Envoy's `STRICT_DNS` clusters refresh, so that a replica added to the
//! name takes load within seconds; a lookup every 5 s per client is cheap
//! next to a check) and, at most once every 5 s, soon after a replica fails
//! to connect (as gRPC re-resolves when a subchannel fails: with a longer
//! interval of your own, this still finds a replacement fast), and yields
//! `Change::Insert(addr, service)` for each new address and
//! `Change::Remove(addr)` for each one gone. A replica that stays keeps its
//! service, so its ejection state and its adaptive limit follow it for as
//! long as it exists; tower's p2c balancer lets a removed replica's calls in
//! flight finish.
//!
//! A resolution that fails or answers no address changes nothing: a DNS
//! hiccup does not empty the balancer.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use tower_quality_gate::discover::{Discovery, ResolveNow};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::future::poll_fn;
//! use std::pin::Pin;
//! use tower::discover::{Change, Discover};
//!
//! let resolver = |_name: &str| async {
//!     Ok(vec![SocketAddr::from(([127, 0, 0, 2], 8000))])
//! };
//! let mut discovery = Discovery::new(
//!     resolver,
//!     "coordinator.internal:8000",
//!     Duration::from_secs(30),
//!     |addr: SocketAddr, _: &ResolveNow| Some(addr.to_string()), // a service per address
//! );
//! let change = poll_fn(|cx| Pin::new(&mut discovery).poll_discover(cx)).await;
//! assert!(matches!(change, Some(Ok(Change::Insert(_, s))) if s == "127.0.0.2:8000"));
//! # }
//! ```

mod stream;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

pub use self::stream::{Discovery, ResolveNow};

/// A resolution in progress.
pub type Resolving = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves a `host:port` name into the addresses of its replicas.
///
/// Any `Fn(&str) -> impl Future<Output = io::Result<Vec<SocketAddr>>>` is a
/// resolver; [`SystemResolver`] is the system's.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses `name` (`host:port`) stands for now.
    fn resolve(&self, name: &str) -> Resolving;
}

impl<F, Fut> Resolve for F
where
    F: Fn(&str) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
{
    fn resolve(&self, name: &str) -> Resolving {
        Box::pin(self(name))
    }
}

/// The system resolver, through `tokio::net::lookup_host` (`getaddrinfo`
/// on a blocking thread): what a DNS name with one record per replica
/// needs.
///
/// ```
/// use tower_quality_gate::discover::{Resolve, SystemResolver};
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let addrs = SystemResolver.resolve("127.0.0.1:8000").await?;
/// assert_eq!(addrs, ["127.0.0.1:8000".parse().unwrap()]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str) -> Resolving {
        let name = name.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
    }
}
