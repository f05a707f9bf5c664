//! An in-process coordinator for tests, examples and benches (feature
//! `test-util`): a real hyper server on 127.0.0.1 that answers
//! `POST /api/quality/check` as scripted and records what it received.
//!
//! ```
//! use tower_quality_gate::testing::{Reply, TestCoordinator};
//! use tower_quality_gate::{QualityClient, QualityRequest};
//!
//! # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
//! let coordinator = TestCoordinator::start().await;
//! coordinator.push(Reply::status(503)).push(Reply::reject("lint", "2 warnings"));
//!
//! let client = QualityClient::new(coordinator.url())?;
//! let verdict = client.check(QualityRequest::new("t-1", "a-1")).await?;
//! assert!(!verdict.approved);
//! assert_eq!(coordinator.hits(), 2); // the 503 was retried
//! assert_eq!(coordinator.requests()[1].request.as_ref().unwrap().task_id, "t-1");
//! # Ok(()) }
//! ```
//!
//! Besides verdicts and statuses, a [`Reply`] can be a fault: latency before
//! the head, a trickling, endless or oversized body, bad JSON, a clean close
//! or a reset before the head or in the middle of the body. The coordinator
//! itself can close its idle keep-alive connections
//! ([`close_idle_connections`](TestCoordinator::close_idle_connections)),
//! go down and come back on the same port ([`stop`](TestCoordinator::stop),
//! [`restart`](TestCoordinator::restart)).

mod body;
mod conn;
mod reply;
mod server;
mod state;
mod sync;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

pub use self::reply::Reply;
use self::server::Server;
pub use self::state::Recorded;
use self::state::{Capacity, Shared};
use self::sync::lock;

/// A scriptable coordinator on 127.0.0.1, shut down when dropped.
///
/// Each check is answered by the next scripted [`Reply`] if any
/// ([`push`](Self::push)), otherwise by the rule ([`respond_with`](Self::respond_with);
/// by default an approval). `GET /health` answers 200 unless
/// [`set_health`](Self::set_health) says otherwise; other paths get 404.
///
/// It counts what a reliability test asserts on: [`hits`](Self::hits),
/// requests [`in_flight`](Self::in_flight) and their
/// [`peak`](Self::peak_in_flight), connections accepted
/// ([`connections`](Self::connections)) and still
/// [open](Self::open_connections).
pub struct TestCoordinator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<Server>>,
}

impl TestCoordinator {
    /// Starts a coordinator on a free port of 127.0.0.1.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound; use
    /// [`start_on`](Self::start_on) to handle that.
    pub async fn start() -> TestCoordinator {
        TestCoordinator::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding a loopback port for the test coordinator")
    }

    /// Starts a coordinator on `addr`, e.g. the address of one that was
    /// dropped, to simulate a new process on the same port.
    pub async fn start_on(addr: SocketAddr) -> io::Result<TestCoordinator> {
        let shared = Arc::new(Shared::new());
        let server = Server::start(addr, shared.clone()).await?;
        Ok(TestCoordinator {
            addr: server.addr,
            shared,
            server: Mutex::new(Some(server)),
        })
    }

    /// The base URL to hand to a client: `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ----- what it answers -----

    /// Queues a reply for the next unanswered check.
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.shared.script).push_back(reply);
        self
    }

    /// Queues the same reply for the next `n` checks.
    pub fn push_n(&self, reply: Reply, n: usize) -> &Self {
        lock(&self.shared.script).extend(std::iter::repeat_n(reply, n));
        self
    }

    /// Answers checks the script does not cover with `rule(request)`.
    ///
    /// ```
    /// use tower_quality_gate::testing::{Reply, TestCoordinator};
    ///
    /// # #[tokio::main] async fn main() {
    /// let coordinator = TestCoordinator::start().await;
    /// coordinator.respond_with(|r| match &r.request {
    ///     Some(req) if req.files.is_empty() => Reply::reject("build", "no files"),
    ///     _ => Reply::approve(),
    /// });
    /// # }
    /// ```
    pub fn respond_with(&self, rule: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *lock(&self.shared.rule) = Arc::new(rule);
    }

    /// Answers every check the script does not cover with `reply`.
    pub fn always(&self, reply: Reply) {
        self.respond_with(move |_| reply.clone());
    }

    /// Serves `calls` checks at a time, each for `service_time` before its
    /// reply (and the reply's own delay); the others wait in a queue, first
    /// come first served, as a coordinator with `calls` build workers does.
    /// `calls` of 0 is taken as 1.
    ///
    /// [`latencies`](Self::latencies) then says how long each check took,
    /// queue included, and [`in_flight`](Self::in_flight) counts the queued
    /// ones too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quality_gate::testing::TestCoordinator;
    /// use tower_quality_gate::{QualityClient, QualityRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let coordinator = TestCoordinator::start().await;
    /// coordinator.capacity(1, Duration::from_millis(100));
    /// let client = QualityClient::new(coordinator.url())?;
    /// let (a, b) = tokio::join!(
    ///     client.check(QualityRequest::new("t-1", "a-1")),
    ///     client.check(QualityRequest::new("t-2", "a-1")),
    /// );
    /// assert!(a?.approved && b?.approved);
    /// let mut latencies = coordinator.latencies();
    /// latencies.sort();
    /// assert_eq!(latencies, [Duration::from_millis(100), Duration::from_millis(200)]);
    /// # Ok(()) }
    /// ```
    pub fn capacity(&self, calls: usize, service_time: Duration) -> &Self {
        let calls = calls.clamp(1, Semaphore::MAX_PERMITS);
        *lock(&self.shared.capacity) = Some(Capacity {
            slots: Arc::new(Semaphore::new(calls)),
            service_time,
            calls,
            shed: None,
            held: Arc::default(),
        });
        self
    }

    /// With [`capacity`](Self::capacity) set: answers `reply` at once,
    /// without serving, to a check that arrives while `queue` others
    /// already wait (as a coordinator with a bounded queue answers 503 and
    /// `Retry-After`). Does nothing without a capacity.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quality_gate::testing::{Reply, TestCoordinator};
    /// use tower_quality_gate::{QualityClient, QualityRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let coordinator = TestCoordinator::start().await;
    /// coordinator
    ///     .capacity(1, Duration::from_millis(100))
    ///     .shed_above(0, Reply::status(503).retry_after("1"));
    /// let client = QualityClient::builder(coordinator.url()).attempts(1).build()?;
    /// let (a, b) = tokio::join!(
    ///     client.check(QualityRequest::new("t-1", "a-1")),
    ///     client.check(QualityRequest::new("t-2", "a-1")),
    /// );
    /// assert!(a?.approved);
    /// assert_eq!(b.unwrap_err().retry_after(), Some(Duration::from_secs(1)));
    /// # Ok(()) }
    /// ```
    pub fn shed_above(&self, queue: usize, reply: Reply) -> &Self {
        if let Some(capacity) = lock(&self.shared.capacity).as_mut() {
            capacity.shed = Some((queue, reply));
        }
        self
    }

    /// Serves every check as soon as it arrives again (undoes
    /// [`capacity`](Self::capacity)).
    pub fn unlimited(&self) {
        *lock(&self.shared.capacity) = None;
    }

    /// How long each check took to answer, from its arrival to its
    /// response head, queue included, in order of answer (checks turned
    /// away by [`shed_above`](Self::shed_above) excluded; none while
    /// [`record_requests`](Self::record_requests) is off).
    pub fn latencies(&self) -> Vec<Duration> {
        lock(&self.shared.latencies).clone()
    }

    /// What `GET /health` answers.
    pub fn set_health(&self, reply: Reply) {
        *lock(&self.shared.health) = reply;
    }

    // ----- what it saw -----

    /// Every request received so far, in order of arrival (none while
    /// [`record_requests`](Self::record_requests) is off).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    /// Keeps every request for [`requests`](Self::requests) (default on).
    /// Turn it off for long runs: the counters still count, and memory stays
    /// flat.
    pub fn record_requests(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// How many requests to the check endpoint arrived.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst) as usize
    }

    /// How many connections are open now (idle keep-alive ones included).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.open).len()
    }

    /// Forgets recorded requests and hits, and lowers the peak to the
    /// requests in flight now.
    pub fn reset(&self) {
        lock(&self.shared.recorded).clear();
        lock(&self.shared.latencies).clear();
        self.shared.hits.store(0, Ordering::SeqCst);
        self.shared.peak.store(self.in_flight(), Ordering::SeqCst);
    }

    // ----- its connections and its life -----

    /// Closes, cleanly and at once, every open connection with no request in
    /// progress, as a server's keep-alive timeout does; returns how many.
    ///
    /// A client sees the close only when it next reads from the connection,
    /// so its pool may still hand one of them out.
    ///
    /// ```
    /// use tower_quality_gate::testing::TestCoordinator;
    /// use tower_quality_gate::{QualityClient, QualityRequest};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_quality_gate::Error> {
    /// let coordinator = TestCoordinator::start().await;
    /// let client = QualityClient::new(coordinator.url())?;
    /// client.check(QualityRequest::new("t-1", "a-1")).await?;
    /// assert_eq!(coordinator.close_idle_connections(), 1);
    /// // The pool drops the closed connection and opens another.
    /// assert!(client.check(QualityRequest::new("t-2", "a-1")).await?.approved);
    /// assert_eq!(coordinator.connections(), 2);
    /// # Ok(()) }
    /// ```
    pub fn close_idle_connections(&self) -> usize {
        self.shared.close_where(|c| c.is_idle())
    }

    /// Goes down as a crashed process would: stops listening (connections
    /// are refused) and closes every open connection, requests in progress
    /// included. Returns once all of them are gone. Does nothing if stopped.
    ///
    /// The script, the rule and the records are kept for
    /// [`restart`](Self::restart).
    ///
    /// ```
    /// use tower_quality_gate::testing::TestCoordinator;
    /// use tower_quality_gate::{QualityCheck, QualityRequest};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let coordinator = TestCoordinator::start().await;
    /// let check = QualityCheck::new(coordinator.url())?;
    /// coordinator.stop().await;
    /// let err = check.clone().oneshot(QualityRequest::new("t-1", "a-1")).await.unwrap_err();
    /// assert!(err.is_connect());
    /// coordinator.restart().await?;
    /// assert!(check.oneshot(QualityRequest::new("t-1", "a-1")).await?.approved);
    /// # Ok(()) }
    /// ```
    pub async fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            server.stop.notify_one();
            let _ = server.task.await;
        }
    }

    /// Comes back on the same address after [`stop`](Self::stop) (stopping
    /// first if it is running), with the same script, rule, records and
    /// counters.
    ///
    /// # Errors
    ///
    /// If the port cannot be bound again (another process took it).
    pub async fn restart(&self) -> io::Result<()> {
        self.stop().await;
        let server = Server::start(self.addr, self.shared.clone()).await?;
        *lock(&self.server) = Some(server);
        Ok(())
    }

    /// Whether it is listening (not [stopped](Self::stop)).
    pub fn is_running(&self) -> bool {
        lock(&self.server).is_some()
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            // The FINs go out now; aborting the accept loop drops its
            // JoinSet, which aborts every connection task.
            self.shared.close_where(|_| true);
            server.task.abort();
        }
    }
}

impl fmt::Debug for TestCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCoordinator")
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .field("hits", &self.hits())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}
