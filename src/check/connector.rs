//! The connector under the pooled client: the route to the coordinator
//! (direct, through an HTTP forward proxy, or through a `CONNECT` tunnel),
//! TLS for `https` with the `rustls` feature, and one connect timeout over
//! all of it.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::proxy::Matcher;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::resolve::Resolver;
pub(crate) use super::tls::Tls;
use crate::error::{BoxError, Error};

/// The connector type of this build.
#[cfg(not(feature = "rustls"))]
pub(crate) type Connector = Timed<Route>;

/// The connector type of this build.
#[cfg(feature = "rustls")]
pub(crate) type Connector = Timed<hyper_rustls::HttpsConnector<Route>>;

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

fn tcp(connect_timeout: Option<Duration>, resolver: Resolver) -> HttpConnector<Resolver> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_nodelay(true);
    // Bounds each address tried; `Timed` bounds the whole connection.
    http.set_connect_timeout(connect_timeout);
    http.enforce_http(false);
    http
}

/// The connector for these options. `http2` offers `h2` by ALPN on `https`
/// coordinators; cleartext HTTP/2 is the client's prior-knowledge setting.
pub(crate) fn connector(
    connect_timeout: Option<Duration>,
    http2: bool,
    tls: &Tls,
    proxy: Option<Matcher>,
    resolver: Resolver,
) -> Result<Connector, Error> {
    let route = Route(Arc::new(RouteParts {
        resolver,
        connect_timeout,
        // The proxy is reached by its own name, never at addresses pinned
        // for a discovered replica.
        to_proxy: tcp(connect_timeout, Resolver::default()),
        proxy,
    }));
    #[cfg(feature = "rustls")]
    let route = hyper_rustls::HttpsConnector::from((route, super::tls::client_config(tls, http2)?));
    #[cfg(not(feature = "rustls"))]
    let _ = (http2, tls);
    Ok(Timed {
        inner: route,
        timeout: connect_timeout,
    })
}

/// Refuses a coordinator reached at resolved or pinned addresses (a
/// discovered replica) through a proxy: the proxy would be asked for the
/// host name, so every replica would silently be the one the proxy picks.
pub(crate) fn refuse_proxied_replicas(
    resolver: &Resolver,
    proxy: Option<&Matcher>,
    uri: &Uri,
) -> Result<(), Error> {
    let proxied = proxy.is_some_and(|m| m.intercept(uri).is_some());
    if proxied && !resolver.is_system() {
        return Err(Error::config(format!(
            "discovered replicas are reached at their own addresses, but the proxy would be asked for {}: list the host in NO_PROXY",
            uri.host().unwrap_or_default()
        )));
    }
    Ok(())
}

// ===== Timed =====

/// Bounds a whole connection attempt (TCP, proxy tunnel, TLS handshake) by
/// the connect timeout, as reqwest does: `HttpConnector`'s own timeout
/// covers TCP only, so a coordinator that accepts and never answers the
/// ClientHello would cost an attempt timeout each time.
#[derive(Clone, Debug)]
pub(crate) struct Timed<C> {
    inner: C,
    timeout: Option<Duration>,
}

/// The connect timeout passed: a connect error.
#[derive(Debug)]
pub(crate) struct ConnectTimeout(Duration);

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no connection within the connect timeout ({:?})", self.0)
    }
}

impl StdError for ConnectTimeout {}

impl<C> Service<Uri> for Timed<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    // Boxed: a connection is made once per pooled connection, not per call,
    // and the pool needs the future `Unpin`.
    type Future = Connecting<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            match timeout {
                Some(limit) => match tokio::time::timeout(limit, connecting).await {
                    Ok(result) => result.map_err(Into::into),
                    Err(_) => Err(ConnectTimeout(limit).into()),
                },
                None => connecting.await.map_err(Into::into),
            }
        })
    }
}

// ===== Route =====

/// Opens the TCP connection a request needs: to the coordinator, to its
/// forward proxy (`http`), or a `CONNECT` tunnel through the proxy (`https`).
///
/// One `Arc`: hyper-util's pool clones the connector for every request,
/// pooled connection or not.
#[derive(Clone)]
pub(crate) struct Route(Arc<RouteParts>);

struct RouteParts {
    /// How the coordinator's host is resolved; a connector is made per
    /// connection, for the destination's port (see [`Resolver::for_destination`]).
    resolver: Resolver,
    connect_timeout: Option<Duration>,
    to_proxy: HttpConnector<Resolver>,
    proxy: Option<Matcher>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matcher is left out: its proxy settings are the builder's to show.
        f.debug_struct("Route")
            .field("proxy", &self.0.proxy.is_some())
            .finish()
    }
}

impl Service<Uri> for Route {
    type Response = Conn;
    type Error = BoxError;
    type Future = Connecting<Conn>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // `HttpConnector` is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = &*self.0;
        let intercept = route.proxy.as_ref().and_then(|m| m.intercept(&dst));
        let direct = match intercept {
            Some(_) => None,
            None => Some(route.resolver.for_destination(&dst)),
        };
        let mut http = route.to_proxy.clone();
        let connect_timeout = route.connect_timeout;
        Box::pin(async move {
            let Some(proxy) = intercept else {
                let (resolver, dst) = direct.unwrap_or_else(|| (Resolver::default(), dst));
                let io = tcp(connect_timeout, resolver).call(dst).await?;
                return Ok(Conn::new(io, false));
            };
            if proxy.uri().scheme_str() != Some("http") {
                return Err("only http:// proxies are supported".into());
            }
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Ok(Conn::new(tunnel.call(dst).await?, false))
            } else {
                // The client then writes absolute-form request lines.
                Ok(Conn::new(http.call(proxy.uri().clone()).await?, true))
            }
        })
    }
}

/// A TCP connection, to the coordinator or to a proxy.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TokioIo<TcpStream>,
    forward_proxy: bool,
}

impl Conn {
    fn new(io: TokioIo<TcpStream>, forward_proxy: bool) -> Self {
        Conn { io, forward_proxy }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forward_proxy)
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timed_bounds_a_connection_that_never_completes() {
        let never = tower::service_fn(|_: Uri| std::future::pending::<Result<(), BoxError>>());
        let mut timed = Timed {
            inner: never,
            timeout: Some(Duration::from_millis(3100)),
        };
        let started = tokio::time::Instant::now();
        let err = timed
            .call(Uri::from_static("https://c.example/"))
            .await
            .unwrap_err();
        assert!(err.is::<ConnectTimeout>(), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(3100));

        let ready = tower::service_fn(|_: Uri| async { Ok::<_, BoxError>(7) });
        let mut timed = Timed {
            inner: ready,
            timeout: Some(Duration::from_millis(1)),
        };
        assert_eq!(timed.call(Uri::from_static("https://c/")).await.unwrap(), 7);
    }
}
