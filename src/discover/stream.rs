use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tower::discover::Change;

use super::{Resolve, Resolving};

/// The shortest time between two resolutions asked for by failures: a
/// replica that keeps failing to connect does not turn into a DNS storm.
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// The shortest interval: a zero one would resolve in a loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Builds the service of a new address.
type MakeService<S> = Box<dyn FnMut(SocketAddr, &ResolveNow) -> Option<S> + Send>;

/// A `tower::discover::Discover` stream of the replicas a name resolves to;
/// see the [module docs](super).
///
/// `make` builds the service for a new address; it is handed a
/// [`ResolveNow`] that the service can use to ask for an early resolution
/// (the client's replicas do when they fail to connect). When it returns
/// `None` the address is skipped, and tried again at the next resolution.
/// A resolution that takes more than 10 s fails, and the set stays as it
/// is.
pub struct Discovery<S> {
    resolver: Arc<dyn Resolve>,
    name: String,
    interval: Duration,
    make: MakeService<S>,
    /// The addresses with a service in the balancer.
    current: HashSet<SocketAddr>,
    changes: VecDeque<Change<SocketAddr, S>>,
    resolving: Option<Resolving>,
    /// When to resolve next; made at the first poll, inside the runtime.
    timer: Option<Pin<Box<Sleep>>>,
    wanted: mpsc::Receiver<()>,
    resolve_now: ResolveNow,
    /// A failure asked for a resolution that `MIN_REFRESH` holds back.
    pending_request: bool,
    /// The earliest a failure may start a resolution.
    refresh_after: Option<Instant>,
}

/// Asks a [`Discovery`] to resolve again soon (at most once every 5 s),
/// e.g. after a replica failed to connect. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ResolveNow {
    tx: mpsc::Sender<()>,
}

impl ResolveNow {
    /// Asks for a resolution; requests made before it starts count as one.
    pub fn request(&self) {
        // A full channel already holds a request.
        let _ = self.tx.try_send(());
    }
}

// The services are never pinned: they only pass through the queue.
impl<S> Unpin for Discovery<S> {}

impl<S> Discovery<S> {
    /// Resolves `name` (`host:port`) with `resolver` at the first poll, then
    /// every `interval` (at least 10 ms), and soon after a [`ResolveNow`]
    /// request.
    pub fn new<R, F>(resolver: R, name: impl Into<String>, interval: Duration, make: F) -> Self
    where
        R: Resolve,
        F: FnMut(SocketAddr, &ResolveNow) -> Option<S> + Send + 'static,
    {
        let (tx, wanted) = mpsc::channel(1);
        Discovery {
            resolver: Arc::new(resolver),
            name: name.into(),
            interval: interval.max(MIN_INTERVAL),
            make: Box::new(make),
            current: HashSet::new(),
            changes: VecDeque::new(),
            resolving: None,
            timer: None,
            wanted,
            resolve_now: ResolveNow { tx },
            pending_request: false,
            refresh_after: None,
        }
    }

    /// A handle that asks for an early resolution.
    pub fn resolve_now(&self) -> ResolveNow {
        self.resolve_now.clone()
    }

    /// The addresses that have a service now.
    pub fn addresses(&self) -> impl Iterator<Item = &SocketAddr> {
        self.current.iter()
    }

    fn start(&mut self) {
        self.pending_request = false;
        // A resolution that never finishes must not hold back every later
        // one: it fails after this long and the set stays as it is.
        const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
        let resolving = self.resolver.resolve(&self.name);
        self.resolving = Some(Box::pin(async move {
            match tokio::time::timeout(RESOLVE_TIMEOUT, resolving).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "resolution timed out",
                )),
            }
        }));
    }

    /// Queues the changes from the current set to `addrs`: insertions
    /// first, so that the balancer is never emptied on the way.
    fn update(&mut self, addrs: Vec<SocketAddr>) {
        let next: HashSet<SocketAddr> = addrs.into_iter().collect();
        let mut added: Vec<SocketAddr> = next.difference(&self.current).copied().collect();
        added.sort();
        for addr in added {
            if let Some(service) = (self.make)(addr, &self.resolve_now) {
                self.current.insert(addr);
                self.changes.push_back(Change::Insert(addr, service));
            }
        }
        let mut gone: Vec<SocketAddr> = self.current.difference(&next).copied().collect();
        gone.sort();
        for addr in gone {
            self.current.remove(&addr);
            self.changes.push_back(Change::Remove(addr));
        }
    }
}

impl<S> Stream for Discovery<S> {
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // 1. Changes already known go out first.
            if let Some(change) = this.changes.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            // 2. A resolution in progress.
            if let Some(resolving) = this.resolving.as_mut() {
                let result = ready!(resolving.as_mut().poll(cx));
                this.resolving = None;
                let now = Instant::now();
                let next = crate::time::saturating_add(now, this.interval);
                match this.timer.as_mut() {
                    Some(timer) => timer.as_mut().reset(next),
                    None => this.timer = Some(Box::pin(tokio::time::sleep_until(next))),
                }
                this.refresh_after = Some(crate::time::saturating_add(now, MIN_REFRESH));
                match result {
                    Ok(addrs) if !addrs.is_empty() => this.update(addrs),
                    Ok(_) => tracing::warn!(
                        name = %this.name,
                        "the name resolved to no address; keeping the replicas"
                    ),
                    Err(error) => tracing::warn!(
                        name = %this.name,
                        %error,
                        "resolving the replicas failed; keeping them"
                    ),
                }
                continue;
            }
            // 3. The first poll resolves at once.
            if this.timer.is_none() {
                this.start();
                continue;
            }
            // 4. A failure asked for a resolution: soon, but not too often.
            while let Poll::Ready(Some(())) = this.wanted.poll_recv(cx) {
                this.pending_request = true;
            }
            if this.pending_request {
                match this.refresh_after {
                    Some(at) if at > Instant::now() => {
                        if let Some(timer) = this.timer.as_mut() {
                            if at < timer.deadline() {
                                timer.as_mut().reset(at);
                            }
                        }
                    }
                    _ => {
                        this.start();
                        continue;
                    }
                }
            }
            // 5. The interval.
            if let Some(timer) = this.timer.as_mut() {
                ready!(timer.as_mut().poll(cx));
            }
            this.start();
        }
    }
}

impl<S> fmt::Debug for Discovery<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("name", &self.name)
            .field("interval", &self.interval)
            .field("addresses", &self.current)
            .field("resolving", &self.resolving.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io;
    use std::sync::Mutex;

    use tokio_test::{assert_pending, task};
    use tower::discover::Discover;

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 8000))
    }

    /// A resolver answering whatever `set` holds, counting its calls.
    fn resolver(
        set: Arc<Mutex<io::Result<Vec<SocketAddr>>>>,
        calls: Arc<Mutex<usize>>,
    ) -> impl Resolve {
        move |_: &str| {
            *calls.lock().unwrap() += 1;
            let answer = match &*set.lock().unwrap() {
                Ok(addrs) => Ok(addrs.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            async move { answer }
        }
    }

    async fn next(d: &mut Discovery<SocketAddr>) -> Change<SocketAddr, SocketAddr> {
        match poll_fn(|cx| Pin::new(&mut *d).poll_discover(cx)).await {
            Some(Ok(change)) => change,
            _ => unreachable!("the stream never ends"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn inserts_and_removes_what_changed_and_keeps_the_rest() {
        let set = Arc::new(Mutex::new(Ok(vec![addr(1), addr(2)])));
        let calls = Arc::new(Mutex::new(0));
        let interval = Duration::from_secs(30);
        let mut d = Discovery::new(
            resolver(set.clone(), calls.clone()),
            "coordinator:8000",
            interval,
            |a, _: &ResolveNow| Some(a),
        );
        assert!(matches!(next(&mut d).await, Change::Insert(a, _) if a == addr(1)));
        assert!(matches!(next(&mut d).await, Change::Insert(a, _) if a == addr(2)));

        *set.lock().unwrap() = Ok(vec![addr(2), addr(3)]);
        let start = Instant::now();
        assert!(matches!(next(&mut d).await, Change::Insert(a, _) if a == addr(3)));
        assert_eq!(start.elapsed(), interval);
        assert!(matches!(next(&mut d).await, Change::Remove(a) if a == addr(1)));
        assert_eq!(*calls.lock().unwrap(), 2);

        // A failed or empty answer changes nothing.
        *set.lock().unwrap() = Err(io::Error::other("SERVFAIL"));
        let mut polled = task::spawn(poll_fn(|cx| Pin::new(&mut d).poll_discover(cx)));
        assert_pending!(polled.poll());
        tokio::time::advance(interval).await;
        assert_pending!(polled.poll());
        drop(polled);
        *set.lock().unwrap() = Ok(Vec::new());
        tokio::time::advance(interval).await;
        let mut polled = task::spawn(poll_fn(|cx| Pin::new(&mut d).poll_discover(cx)));
        assert_pending!(polled.poll());
        drop(polled);
        assert_eq!(*calls.lock().unwrap(), 4);
        let mut left: Vec<_> = d.addresses().copied().collect();
        left.sort();
        assert_eq!(left, [addr(2), addr(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_resolves_again_soon_but_not_often() {
        let set = Arc::new(Mutex::new(Ok(vec![addr(1)])));
        let calls = Arc::new(Mutex::new(0));
        let mut d = Discovery::new(
            resolver(set.clone(), calls.clone()),
            "coordinator:8000",
            Duration::from_secs(30),
            |a, _: &ResolveNow| Some(a),
        );
        next(&mut d).await;
        let now = d.resolve_now();
        *set.lock().unwrap() = Ok(vec![addr(2)]);
        now.request();
        now.request();
        let start = Instant::now();
        assert!(matches!(next(&mut d).await, Change::Insert(a, _) if a == addr(2)));
        // Held back to 5 s after the last resolution, not 30 s.
        assert_eq!(start.elapsed(), MIN_REFRESH);
        assert!(matches!(next(&mut d).await, Change::Remove(a) if a == addr(1)));
        assert_eq!(*calls.lock().unwrap(), 2);
    }
}
