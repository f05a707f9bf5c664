//! The builder's options for many coordinators: an adaptive concurrency
//! limit per coordinator, and replicas found by a resolver or a discovery
//! stream.

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

use super::builder::ClientBuilder;
use super::replicas::{self, Replica, Routed};

use crate::call::Call;
use crate::check::QualityCheckBuilder;
use crate::discover::{Discovery, Resolve, ResolveNow};
use crate::error::{BoxError, Error};
use crate::limit::{AdaptiveLimit, AdaptiveLimitConfig};
use crate::timeout::AttemptTimeout;
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

impl ClientBuilder {
    /// Limits the attempts in flight to each coordinator with an adaptive
    /// limit (default off): it grows while the coordinator's latency stays
    /// near its no-load value and shrinks when latency grows or the
    /// coordinator answers 429, 503 or times out; see
    /// [`limit`](crate::limit) for the algorithm and
    /// [`AdaptiveLimitConfig`] for the defaults (start at 20, floor 1,
    /// ceiling 200, 10% latency tolerance).
    ///
    /// With several replicas, each has its own limit, inside the balancer,
    /// so a replica at its limit is not picked. Calls beyond the limit wait
    /// on the client side, in `poll_ready`, within their deadline.
    ///
    /// The fixed [`concurrency_limit`](Self::concurrency_limit) (default
    /// 64) still bounds the calls in flight, waits between retries
    /// included: raise it, or set it to `None`, to let the adaptive limit
    /// find a capacity above it.
    ///
    /// Off by default: a coordinator that runs builds of very different
    /// lengths has a latency that says little about its load, and the limit
    /// spends its first 20 calls at concurrency 3 measuring it. Turn it on
    /// for a fleet of orchestrators sharing coordinators: it is what keeps
    /// their shares fair and the coordinators' queues short.
    ///
    /// ```
    /// use tower_quality_gate::limit::AdaptiveLimitConfig;
    /// use tower_quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let client = QualityClient::builder("http://127.0.0.1:8000")
    ///     .adaptive_concurrency(AdaptiveLimitConfig::default().max_limit(500))
    ///     .concurrency_limit(None)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn adaptive_concurrency(mut self, config: impl Into<Option<AdaptiveLimitConfig>>) -> Self {
        self.adaptive = config.into();
        self
    }

    /// Balances attempts over the replicas the base URL's host resolves to,
    /// resolving it again every `interval` (`None`: 5 s, as Envoy's
    /// `STRICT_DNS` clusters, so a replica that joins takes load within
    /// about 5 s while DNS sees twelve lookups a minute per client; at
    /// least 10 ms) and soon after a replica fails to connect (at most once every
    /// 5 s), with `resolver` ([`SystemResolver`](crate::discover::SystemResolver)
    /// for the system's DNS). See [`discover`](crate::discover).
    ///
    /// Each replica connects to its own address but keeps the host name
    /// for the `Host` header and TLS (SNI and certificate checks). Replicas
    /// that appear are added to tower's power-of-two-choices balancer, those
    /// that disappear are removed once their calls in flight are over, and
    /// those that stay keep their ejection state and adaptive limit. A
    /// failed or empty resolution changes nothing.
    ///
    /// Before the first resolution answers there is no replica, and a call
    /// waits for one (within its attempt timeout). Once there are replicas
    /// they fail like [`base_urls`](Self::base_urls): when every one is
    /// ejected, attempts go to them anyway and fail at once with their own
    /// error (`Connect` for a refused connection), and the first replica
    /// back answers the next call. Needs a Tokio runtime at build time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quality_gate::discover::SystemResolver;
    /// use tower_quality_gate::QualityClient;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let client = QualityClient::builder("http://coordinator.internal:8000")
    ///     .discover_replicas(SystemResolver, Duration::from_secs(10))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn discover_replicas(
        mut self,
        resolver: impl Resolve,
        interval: impl Into<Option<Duration>>,
    ) -> Self {
        self.discovery = Some(Discovered::Resolver {
            resolver: Arc::new(resolver),
            interval: interval.into().unwrap_or(DEFAULT_RESOLVE_INTERVAL),
        });
        self
    }

    /// Balances attempts over the replicas a stream of base URLs inserts and
    /// removes (a `tower::discover::Discover` stream of
    /// `Change<K, String>`), each built with this builder's HTTP options.
    /// An insert whose URL is invalid and an error of the stream are
    /// skipped (and logged): the replicas already there keep serving. The
    /// stream serves one built client.
    ///
    /// ```
    /// use tower_quality_gate::QualityClient;
    /// use tokio::sync::mpsc;
    /// use tower::discover::Change;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let (tx, rx) = mpsc::unbounded_channel::<Result<Change<u32, String>, std::io::Error>>();
    /// let stream = futures_like::Receiver(rx);
    /// let client = QualityClient::builder("http://127.0.0.1:8000")
    ///     .discover_base_urls(stream)
    ///     .build()?;
    /// tx.send(Ok(Change::Insert(1, "http://127.0.0.1:8001".into()))).ok();
    /// # let _ = client; Ok(()) }
    /// # mod futures_like {
    /// #     pub struct Receiver<T>(pub tokio::sync::mpsc::UnboundedReceiver<T>);
    /// #     impl<T> futures_core::Stream for Receiver<T> {
    /// #         type Item = T;
    /// #         fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
    /// #             self.0.poll_recv(cx)
    /// #         }
    /// #     }
    /// # }
    /// ```
    pub fn discover_base_urls<D, K, E>(self, stream: D) -> Self
    where
        D: Stream<Item = Result<Change<K, String>, E>> + Send + 'static,
        K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
        E: Into<BoxError>,
    {
        self.discover_with(stream, |template, key, url| {
            match template.clone().base_url(url).build() {
                Ok(check) => Some(BoxCloneSyncService::new(check)),
                Err(error) => {
                    tracing::warn!(replica = ?key, %error, "skipping a discovered replica");
                    None
                }
            }
        })
    }

    /// Balances attempts over the services a stream inserts and removes (a
    /// `tower::discover::Discover` stream of `Change<K, S>`), each wrapped
    /// as a replica is: its attempt timeout, adaptive limit if set,
    /// ejection and load count. An error of the stream is skipped (and
    /// logged). The stream serves one built client.
    pub fn discover_services<D, K, S, E>(self, stream: D) -> Self
    where
        D: Stream<Item = Result<Change<K, S>, E>> + Send + 'static,
        K: Hash + Eq + Clone + fmt::Debug + Send + 'static,
        S: Service<Call, Response = QualityResponse, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError>,
    {
        self.discover_with(stream, |_, _, service| {
            Some(BoxCloneSyncService::new(service))
        })
    }

    fn discover_with<D, K, V, E, F>(mut self, stream: D, make: F) -> Self
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
        self.discovery = Some(Discovered::Stream(Arc::new(Mutex::new(Some(target)))));
        self
    }

    /// The one coordinator behind its adaptive limit, when one is set.
    pub(super) fn adaptive_target(&self) -> Result<Option<Routed>, Error> {
        let Some(config) = self.adaptive else {
            return Ok(None);
        };
        // The limit sees its attempts' timeouts as overload: the attempt
        // timeout runs inside it (the client's own still bounds the wait).
        let timed = AttemptTimeout::new(self.check_service()?, self.attempt_timeout);
        Ok(Some(BoxCloneSyncService::new(AdaptiveLimit::new(
            timed, config,
        ))))
    }

    /// The discovered replicas behind the balancer, when discovery is set.
    pub(super) fn discovered_target(&self) -> Result<Option<Routed>, Error> {
        let Some(discovered) = &self.discovery else {
            return Ok(None);
        };
        let routing = self.routing();
        let target = match discovered {
            Discovered::Resolver { resolver, interval } => {
                let name = self.resolved_name()?;
                let template = self.check.clone();
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
                            let reporting =
                                ServiceExt::<Call>::map_err(check, move |error: Error| {
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
                let template = self.check.clone();
                replicas::routed_by(routing, |replica, queue| {
                    Ok(make(&template, replica, queue))
                })?
            }
        };
        Ok(Some(target))
    }

    /// The service `health()` asks: under `discover_replicas`, one that
    /// connects where the discovery's resolver points (its first replica
    /// that accepts a connection), not to the base URL's host resolved by
    /// the system.
    pub(super) fn health_check(&self) -> Result<crate::QualityCheck, Error> {
        match &self.discovery {
            Some(Discovered::Resolver { resolver, .. }) => self
                .check
                .clone()
                .resolve_with(resolver.clone(), self.resolved_name()?)
                .build(),
            _ => self.check_service(),
        }
    }

    /// `host:port` of the base URL, for the resolver.
    fn resolved_name(&self) -> Result<String, Error> {
        let check = self.check_service()?;
        let url = check.base_url();
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
