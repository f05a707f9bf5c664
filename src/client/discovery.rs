//! Replicas found at run time, by a resolver or a discovery stream: the
//! machinery behind the builder's `discover_*` options (which live with
//! the rest of the builder, in `builder.rs`).

use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tower::discover::Change;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::replicas::{self, Replica, Routed, Routing};

use crate::call::Call;
use crate::check::QualityCheckBuilder;
use crate::discover::{Discovery, Resolve, ResolveNow};
use crate::error::{BoxError, Error};
use crate::wire::QualityResponse;

/// The default time between resolutions; see `discover_replicas`: 5 s, as
/// Envoy's `STRICT_DNS` clusters (`dns_refresh_rate`), so that a replica
/// added to the name takes load within about 5 s.
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// Where the replicas come from, when they are discovered.
#[derive(Clone)]
pub(crate) enum Discovered {
    /// The base URL's host, resolved again and again.
    Resolver {
        resolver: Arc<dyn Resolve>,
        interval: Duration,
    },
    /// A stream the user gave: one client can use it.
    Stream(Arc<Mutex<Option<MakeTarget>>>),
}

type MakeTarget = Box<dyn FnOnce(&QualityCheckBuilder, Replica, usize) -> Routed + Send>;

impl fmt::Debug for Discovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discovered::Resolver { interval, .. } => f
                .debug_struct("Resolver")
                .field("interval", interval)
                .finish_non_exhaustive(),
            Discovered::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Replicas the base URL's host resolves to, resolved every `interval`.
pub(super) fn resolver(resolver: impl Resolve, interval: Option<Duration>) -> Discovered {
    Discovered::Resolver {
        resolver: Arc::new(resolver),
        interval: interval.unwrap_or(DEFAULT_RESOLVE_INTERVAL),
    }
}

/// Replicas from a stream of base URLs, each built from the template.
pub(super) fn base_urls<D, K, E>(stream: D) -> Discovered
where
    D: Stream<Item = Result<Change<K, String>, E>> + Send + 'static,
    K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
    E: Into<BoxError>,
{
    from_stream(stream, |template, key, url| {
        match template.clone().base_url(url).build() {
            Ok(check) => Some(BoxCloneSyncService::new(check)),
            Err(error) => {
                tracing::warn!(replica = ?key, %error, "skipping a discovered replica");
                None
            }
        }
    })
}

/// Replicas from a stream of services.
pub(super) fn services<D, K, S, E>(stream: D) -> Discovered
where
    D: Stream<Item = Result<Change<K, S>, E>> + Send + 'static,
    K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
    S: Service<Call, Response = QualityResponse, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    E: Into<BoxError>,
{
    from_stream(stream, |_, _, service| {
        Some(BoxCloneSyncService::new(service))
    })
}

fn from_stream<D, K, V, E, F>(stream: D, make: F) -> Discovered
where
    D: Stream<Item = Result<Change<K, V>, E>> + Send + 'static,
    K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
    E: Into<BoxError>,
    F: Fn(&QualityCheckBuilder, &K, V) -> Option<Routed> + Send + 'static,
{
    let target: MakeTarget = Box::new(move |template, replica, queue| {
        let template = template.clone();
        let mapped = MapChanges {
            stream: Box::pin(stream),
            make: move |key: &K, value: V| {
                let inner = make(&template, key, value)?;
                Some((format!("{key:?}"), inner))
            },
            done: false,
        };
        replicas::balanced_discover(mapped, replica, queue)
    });
    Discovered::Stream(Arc::new(Mutex::new(Some(target))))
}

/// The discovered replicas behind the balancer, each made from `template`.
pub(super) fn target(
    discovered: &Discovered,
    template: &QualityCheckBuilder,
    routing: Routing,
) -> Result<Routed, Error> {
    let target = match discovered {
        Discovered::Resolver { resolver, interval } => {
            let name = resolved_name(template)?;
            let template = template.clone();
            let resolver = resolver.clone();
            replicas::routed_by(routing, |replica, queue| {
                let discovery = Discovery::new(
                    move |name: &str| resolver.resolve(name),
                    name.clone(),
                    *interval,
                    move |addr: SocketAddr, now: &ResolveNow| {
                        let label = crate::metrics::replica_label(&name, addr);
                        let check = match template.clone().pin_addresses(vec![addr]).build() {
                            Ok(check) => check,
                            Err(error) => {
                                tracing::warn!(replica = %label, %error, "skipping a replica");
                                return None;
                            }
                        };
                        let now = now.clone();
                        let reporting = ServiceExt::<Call>::map_err(check, move |error: Error| {
                            if error.is_connect() {
                                now.request();
                            }
                            error
                        });
                        Some((label, BoxCloneSyncService::new(reporting)))
                    },
                );
                Ok(replicas::balanced_discover(discovery, replica, queue))
            })?
        }
        Discovered::Stream(slot) => {
            let make = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(make) = make else {
                return Err(Error::config(
                    "a discovery stream serves one client, and it was used by another",
                ));
            };
            let template = template.clone();
            replicas::routed_by(routing, |replica, queue| {
                Ok(make(&template, replica, queue))
            })?
        }
    };
    Ok(target)
}

/// The service `health()` asks when the client has no single check to
/// borrow: under `discover_replicas`, one that connects where the
/// discovery's resolver points (its first replica that accepts a
/// connection), not to the base URL's host resolved by the system.
pub(super) fn health_check(
    discovered: Option<&Discovered>,
    template: &QualityCheckBuilder,
) -> Result<crate::QualityCheck, Error> {
    match discovered {
        Some(Discovered::Resolver { resolver, .. }) => template
            .clone()
            .resolve_with(resolver.clone(), resolved_name(template)?)
            .build(),
        _ => template.clone().build(),
    }
}

/// `host:port` of the base URL, for the resolver.
fn resolved_name(template: &QualityCheckBuilder) -> Result<String, Error> {
    // Parsed, not built: a client here would be a pool thrown away.
    let url = template.base_uri()?;
    let Some(host) = url.host() else {
        return Err(Error::config("the base URL has no host to resolve"));
    };
    // hyper connects to an address literal without asking the resolver,
    // so every replica would be that one address.
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return Err(Error::config(
            "discovering replicas needs a host name in the base URL, not an IP address",
        ));
    }
    let port = url.port_u16().unwrap_or(match url.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Ok(format!("{host}:{port}"))
}

/// A discovery stream whose inserted values are made into replicas; an
/// insert that cannot be is skipped.
struct MapChanges<D, F> {
    stream: Pin<Box<D>>,
    make: F,
    /// The user's stream ended: it is never polled again (it may not be
    /// fused), and the replicas it gave keep serving.
    done: bool,
}

// The closure is never pinned, and the stream is boxed.
impl<D, F> Unpin for MapChanges<D, F> {}

impl<D, F, K, V, E, S> Stream for MapChanges<D, F>
where
    D: Stream<Item = Result<Change<K, V>, E>>,
    F: FnMut(&K, V) -> Option<S>,
    E: Into<BoxError>,
{
    type Item = Result<Change<K, S>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // A stream of nothing but errors or refused entries must not hold
        // the balancer's task: after this many, yield and come back.
        const BUDGET: usize = 32;
        for _ in 0..BUDGET {
            if self.done {
                return Poll::Pending;
            }
            let change = match ready!(self.stream.as_mut().poll_next(cx)) {
                None => {
                    // Ending the balancer's discovery would fail every
                    // call; the set simply stops changing.
                    self.done = true;
                    tracing::warn!(
                        "the replica discovery stream ended; the replicas stay as they are"
                    );
                    return Poll::Pending;
                }
                Some(Err(e)) => {
                    // An error ends a balancer's discovery for good: the
                    // replicas it has keep serving instead.
                    let error: BoxError = e.into();
                    tracing::warn!(%error, "the replica discovery stream failed; skipping");
                    continue;
                }
                Some(Ok(change)) => change,
            };
            match change {
                Change::Remove(key) => return Poll::Ready(Some(Ok(Change::Remove(key)))),
                Change::Insert(key, value) => {
                    if let Some(service) = (self.make)(&key, value) {
                        return Poll::Ready(Some(Ok(Change::Insert(key, service))));
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
