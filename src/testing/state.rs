//! What every run of a coordinator shares, restarts included: the script,
//! the records, the counters and the open connections.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::conn::Conn;
use super::reply::Reply;
use super::sync::lock;
use crate::wire::QualityRequest;

/// One request the coordinator received.
#[non_exhaustive]
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
    /// The connection it arrived on, numbered from 0 in order of acceptance.
    pub connection: u64,
}

pub(crate) type Rule = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// What every run of a coordinator shares, restarts included.
pub(crate) struct Shared {
    pub(crate) script: Mutex<VecDeque<Reply>>,
    pub(crate) rule: Mutex<Rule>,
    pub(crate) health: Mutex<Reply>,
    pub(crate) recorded: Mutex<Vec<Recorded>>,
    pub(crate) recording: AtomicBool,
    pub(crate) hits: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) peak: AtomicUsize,
    pub(crate) connections: AtomicU64,
    /// The connections open now, by id.
    pub(crate) open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// How many checks it serves at a time, if it is limited.
    pub(crate) capacity: Mutex<Option<Capacity>>,
    /// How long each check took to answer, queue included.
    pub(crate) latencies: Mutex<Vec<Duration>>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            script: Mutex::new(VecDeque::new()),
            rule: Mutex::new(Arc::new(|_: &Recorded| Reply::approve())),
            health: Mutex::new(Reply::raw(200, "application/json", r#"{"status":"ok"}"#)),
            recorded: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            capacity: Mutex::new(None),
            latencies: Mutex::new(Vec::new()),
        }
    }

    /// Closes the open connections `which` selects; returns how many.
    pub(crate) fn close_where(&self, which: impl Fn(&Conn) -> bool) -> usize {
        let open: Vec<Arc<Conn>> = lock(&self.open).values().cloned().collect();
        let mut closed = 0;
        for conn in open.iter().filter(|c| which(c)) {
            conn.close();
            closed += 1;
        }
        closed
    }
}

/// Counts a request as in flight, on the coordinator and on its connection,
/// until its response body is finished or dropped.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    pub(crate) conn: Arc<Conn>,
}

impl InFlight {
    pub(crate) fn enter(shared: Arc<Shared>, conn: Arc<Conn>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        conn.enter();
        InFlight { shared, conn }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.leave();
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A coordinator that serves `slots` checks at a time, each taking
/// `service_time`; the others wait in its queue, first come first served,
/// or are turned away with `shed` once `calls + queue` are held.
#[derive(Clone, Debug)]
pub(crate) struct Capacity {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) service_time: Duration,
    pub(crate) calls: usize,
    /// The longest queue, and the reply beyond it.
    pub(crate) shed: Option<(usize, Reply)>,
    /// Checks served or queued now.
    pub(crate) held: Arc<AtomicUsize>,
}

/// A check held by a [`Capacity`], served or queued.
pub(crate) struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Capacity {
    /// Takes the check in (served or queued), or `Err` with the reply that
    /// turns it away when the queue is full.
    pub(crate) fn admit(&self) -> Result<Held, Reply> {
        let held = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = Held(self.held.clone());
        match &self.shed {
            Some((queue, reply)) if held > self.calls.saturating_add(*queue) => Err(reply.clone()),
            _ => Ok(guard),
        }
    }

    /// Waits for a slot, then serves for `service_time`.
    pub(crate) async fn serve(&self, _held: Held) {
        // The semaphore is never closed; a closed one serves at once.
        let _slot = self.slots.acquire().await;
        tokio::time::sleep(self.service_time).await;
    }
}
