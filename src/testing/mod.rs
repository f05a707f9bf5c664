//! An in-process coordinator for tests, examples and benches (feature
//! `test-util`): a real hyper server on 127.0.0.1 that answers
//! `POST /api/quality/check` as scripted and records what it received.
//!
//! ```
//! use quality_gate::testing::{Reply, TestCoordinator};
//! use quality_gate::{QualityClient, QualityRequest};
//!
//! # #[tokio::main] async fn main() -> Result<(), quality_gate::Error> {
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

mod reply;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use self::reply::Reply;
use self::reply::{Cut, FaultBody, InFlight};
use crate::wire::QualityRequest;

type Rule = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// One request the coordinator received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The body parsed as a check request, if it was one.
    pub request: Option<QualityRequest>,
    /// When it arrived (tokio's clock, so paused time applies).
    pub at: Instant,
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    rule: Mutex<Rule>,
    health: Mutex<Reply>,
    recorded: Mutex<Vec<Recorded>>,
    in_flight: Arc<AtomicUsize>,
    peak: AtomicUsize,
    connections: AtomicUsize,
}

/// A scriptable coordinator on 127.0.0.1, shut down when dropped.
///
/// Each check is answered by the next scripted [`Reply`] if any
/// ([`push`](Self::push)), otherwise by the rule ([`respond_with`](Self::respond_with);
/// by default an approval). `GET /health` answers 200 unless
/// [`set_health`](Self::set_health) says otherwise; other paths get 404.
pub struct TestCoordinator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
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
    /// dropped, to simulate a restart.
    pub async fn start_on(addr: SocketAddr) -> io::Result<TestCoordinator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            rule: Mutex::new(Arc::new(|_: &Recorded| Reply::approve())),
            health: Mutex::new(Reply::raw(200, "application/json", r#"{"status":"ok"}"#)),
            recorded: Mutex::new(Vec::new()),
            in_flight: Arc::new(AtomicUsize::new(0)),
            peak: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(TestCoordinator {
            addr,
            shared,
            server,
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
    /// use quality_gate::testing::{Reply, TestCoordinator};
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

    /// What `GET /health` answers.
    pub fn set_health(&self, reply: Reply) {
        *lock(&self.shared.health) = reply;
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    /// How many requests to the check endpoint arrived.
    pub fn hits(&self) -> usize {
        lock(&self.shared.recorded)
            .iter()
            .filter(|r| r.path.ends_with(crate::check::config::CHECK_PATH))
            .count()
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
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and the peak.
    pub fn reset(&self) {
        lock(&self.shared.recorded).clear();
        self.shared.peak.store(self.in_flight(), Ordering::SeqCst);
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
        self.server.abort();
    }
}

impl fmt::Debug for TestCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCoordinator")
            .field("addr", &self.addr)
            .field("hits", &self.hits())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not poison the coordinator for the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, shared.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<FaultBody>, Cut> {
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(in_flight, Ordering::SeqCst);
    let guard = InFlight(shared.in_flight.clone());

    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        request: serde_json::from_slice(&body).ok(),
        body,
        at: Instant::now(),
    };
    let reply = match (&parts.method, recorded.path.as_str()) {
        (&Method::POST, p) if p.ends_with(crate::check::config::CHECK_PATH) => {
            let scripted = lock(&shared.script).pop_front();
            scripted.unwrap_or_else(|| {
                let rule = lock(&shared.rule).clone();
                rule(&recorded)
            })
        }
        (&Method::GET, p) if p.ends_with(crate::check::config::HEALTH_PATH) => {
            lock(&shared.health).clone()
        }
        _ => Reply::raw(404, "text/plain", "not found"),
    };
    lock(&shared.recorded).push(recorded);

    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if reply.close_before_headers {
        return Err(Cut);
    }
    let mut response = Response::new(FaultBody::new(reply.body.clone(), guard));
    *response.status_mut() = reply.status;
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}
