//! The resolver under the connector: the system resolver, addresses pinned
//! by discovery, or the discovery's own resolver (for
//! [`health`](crate::QualityClient::health)), so that a replica found at one
//! address keeps its host name for the `Host` header and TLS (SNI and
//! certificate checks).
//!
//! Ports: hyper-util's `HttpConnector` replaces a resolved address's port
//! with the URI's explicit port (`http://coordinator.internal:8000`), which
//! would send every discovered replica to that port whatever the resolver
//! answered. A pinned or discovery resolver therefore answers for a URI
//! stripped of its port ([`Resolver::for_destination`]), and an address it
//! answers with port 0 gets the URI's port (explicit, or the scheme's
//! default): the resolver's ports win, the URL's port is the fallback.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{Authority, Uri};
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiFuture, GaiResolver, Name};
use pin_project_lite::pin_project;
use tower::Service;

use crate::discover::Resolve;

/// Resolves a host name with `getaddrinfo`, to the pinned addresses, or
/// with a discovery's resolver.
#[derive(Clone)]
pub(crate) struct Resolver {
    source: Source,
    /// The port of an answer that has none (port 0).
    default_port: u16,
}

#[derive(Clone)]
enum Source {
    System(GaiResolver),
    Pinned(Arc<[SocketAddr]>),
    /// A discovery's resolver, asked for `name` (`host:port`).
    Discovery {
        resolve: Arc<dyn Resolve>,
        name: Arc<str>,
    },
}

impl Resolver {
    /// Connects to `addrs` whatever the name; none means the system resolver.
    pub(crate) fn pinned(addrs: Vec<SocketAddr>) -> Self {
        let source = if addrs.is_empty() {
            Source::System(GaiResolver::new())
        } else {
            Source::Pinned(addrs.into())
        };
        Resolver {
            source,
            default_port: 0,
        }
    }

    /// Connects to what `resolve` answers for `name` (`host:port`), in its
    /// order, whatever the host asked for.
    pub(crate) fn discovery(resolve: Arc<dyn Resolve>, name: String) -> Self {
        Resolver {
            source: Source::Discovery {
                resolve,
                name: name.into(),
            },
            default_port: 0,
        }
    }

    /// Whether this is the system resolver (no discovery).
    pub(crate) fn is_system(&self) -> bool {
        matches!(self.source, Source::System(_))
    }

    /// The resolver and URI to connect to `dst` with: unchanged for the
    /// system resolver; otherwise `dst` without its port (so that
    /// `HttpConnector` keeps the ports this resolver answers) and this
    /// resolver with `dst`'s port for answers without one.
    pub(crate) fn for_destination(&self, dst: &Uri) -> (Resolver, Uri) {
        if self.is_system() {
            return (self.clone(), dst.clone());
        }
        let port = dst
            .port_u16()
            .unwrap_or(if dst.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let resolver = Resolver {
            source: self.source.clone(),
            default_port: port,
        };
        (resolver, without_port(dst))
    }
}

/// `dst` without the port of its authority (user info never reaches here).
fn without_port(dst: &Uri) -> Uri {
    let Some(host) = dst.host() else {
        return dst.clone();
    };
    let mut parts = dst.clone().into_parts();
    parts.authority = Authority::try_from(host).ok().or(parts.authority);
    Uri::from_parts(parts).unwrap_or_else(|_| dst.clone())
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::pinned(Vec::new())
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Pinned(addrs) => f.debug_tuple("Pinned").field(addrs).finish(),
            Source::System(_) => f.write_str("System"),
            Source::Discovery { name, .. } => f.debug_tuple("Discovery").field(name).finish(),
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
        let port = self.default_port;
        match &mut self.source {
            Source::Pinned(addrs) => Resolving::Pinned {
                addrs: Some(addrs.clone()),
                port,
            },
            Source::System(system) => Resolving::System {
                future: system.call(name),
            },
            Source::Discovery { resolve, name } => Resolving::Discovery {
                future: resolve.resolve(name),
                port,
            },
        }
    }
}

/// The addresses a [`Resolver`] found.
pub(crate) enum Addrs {
    System(GaiAddrs),
    Listed(std::vec::IntoIter<SocketAddr>),
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Addrs::System(addrs) => addrs.next(),
            Addrs::Listed(addrs) => addrs.next(),
        }
    }
}

/// `addrs` with port 0 replaced by `port`.
fn listed(addrs: impl IntoIterator<Item = SocketAddr>, port: u16) -> Addrs {
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .map(|mut addr| {
            if addr.port() == 0 {
                addr.set_port(port);
            }
            addr
        })
        .collect();
    Addrs::Listed(addrs.into_iter())
}

pin_project! {
    /// A [`Resolver`]'s lookup.
    #[project = ResolvingProj]
    pub(crate) enum Resolving {
        System { #[pin] future: GaiFuture },
        Pinned { addrs: Option<Arc<[SocketAddr]>>, port: u16 },
        Discovery { future: crate::discover::Resolving, port: u16 },
    }
}

impl Future for Resolving {
    type Output = io::Result<Addrs>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResolvingProj::System { future } => future.poll(cx).map_ok(Addrs::System),
            ResolvingProj::Pinned { addrs, port } => Poll::Ready(match addrs.take() {
                Some(addrs) => Ok(listed(addrs.iter().copied(), *port)),
                None => Err(io::Error::other("resolved twice")),
            }),
            ResolvingProj::Discovery { future, port } => {
                let port = *port;
                future.as_mut().poll(cx).map(|answer| match answer {
                    Ok(addrs) if addrs.is_empty() => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "the discovery resolver found no replica",
                    )),
                    Ok(addrs) => Ok(listed(addrs, port)),
                    Err(e) => Err(e),
                })
            }
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

    #[tokio::test]
    async fn answered_ports_win_and_the_url_port_fills_port_zero() {
        let answered = SocketAddr::from(([127, 0, 0, 7], 9001));
        let portless = SocketAddr::from(([127, 0, 0, 8], 0));
        let pinned = Resolver::pinned(vec![answered, portless]);
        for (uri, port, stripped) in [
            ("http://c.example:8000/api", 8000, "http://c.example/api"),
            ("https://c.example/api", 443, "https://c.example/api"),
            ("http://c.example/", 80, "http://c.example/"),
        ] {
            let (mut resolver, dst) = pinned.for_destination(&Uri::from_static(uri));
            assert_eq!(dst, stripped);
            let name = Name::from_str("c.example").unwrap();
            let addrs: Vec<_> = resolver.call(name).await.unwrap().collect();
            assert_eq!(addrs, [answered, SocketAddr::from(([127, 0, 0, 8], port))]);
        }
        let system = Resolver::default();
        let uri = Uri::from_static("http://c.example:8000/");
        assert_eq!(system.for_destination(&uri).1, uri);
    }
}
