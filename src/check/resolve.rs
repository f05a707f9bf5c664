//! The resolver under the connector: the system resolver, or addresses
//! pinned by discovery, so that a replica found at one address keeps its
//! host name for the `Host` header and TLS (SNI and certificate checks).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiFuture, GaiResolver, Name};
use pin_project_lite::pin_project;
use tower::Service;

/// Resolves a host name with `getaddrinfo`, or to the pinned addresses.
#[derive(Clone)]
pub(crate) struct Resolver {
    pinned: Option<Arc<[SocketAddr]>>,
    system: GaiResolver,
}

impl Resolver {
    /// Connects to `addrs` whatever the name; none means the system resolver.
    pub(crate) fn pinned(addrs: Vec<SocketAddr>) -> Self {
        Resolver {
            pinned: (!addrs.is_empty()).then(|| addrs.into()),
            system: GaiResolver::new(),
        }
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::pinned(Vec::new())
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pinned {
            Some(addrs) => f.debug_tuple("Pinned").field(addrs).finish(),
            None => f.write_str("System"),
        }
    }
}

impl Service<Name> for Resolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        match &self.pinned {
            Some(addrs) => Resolving::Pinned {
                addrs: Some(addrs.clone()),
            },
            None => Resolving::System {
                future: self.system.call(name),
            },
        }
    }
}

/// The addresses a [`Resolver`] found.
pub(crate) enum Addrs {
    System(GaiAddrs),
    Pinned(Arc<[SocketAddr]>, usize),
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Addrs::System(addrs) => addrs.next(),
            Addrs::Pinned(addrs, next) => {
                let addr = addrs.get(*next).copied();
                *next += 1;
                addr
            }
        }
    }
}

pin_project! {
    /// A [`Resolver`]'s lookup.
    #[project = ResolvingProj]
    pub(crate) enum Resolving {
        System { #[pin] future: GaiFuture },
        Pinned { addrs: Option<Arc<[SocketAddr]>> },
    }
}

impl Future for Resolving {
    type Output = io::Result<Addrs>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResolvingProj::System { future } => future.poll(cx).map_ok(Addrs::System),
            ResolvingProj::Pinned { addrs } => Poll::Ready(match addrs.take() {
                Some(addrs) => Ok(Addrs::Pinned(addrs, 0)),
                None => Err(io::Error::other("resolved twice")),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[tokio::test]
    async fn pinned_addresses_answer_for_any_name() {
        let addr = SocketAddr::from(([127, 0, 0, 7], 8000));
        let mut resolver = Resolver::pinned(vec![addr]);
        let name = Name::from_str("coordinator.example").unwrap();
        let addrs: Vec<_> = resolver.call(name).await.unwrap().collect();
        assert_eq!(addrs, [addr]);
        assert_eq!(format!("{resolver:?}"), "Pinned([127.0.0.7:8000])");
    }
}
