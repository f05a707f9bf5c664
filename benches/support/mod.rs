//! What the `throughput` and `memory` benches share: a minimal coordinator,
//! the request they send, the calling loop and the statistics.
//!
//! The coordinator here is a bare hyper HTTP/1.1 server, not the crate's
//! `TestCoordinator`: that one records every request it receives (headers,
//! body and the parsed request pushed to a `Vec` behind a mutex, kept until
//! `reset()`) and sniffs the HTTP version per connection. Over a million calls that is
//! hundreds of megabytes of memory that would swamp the client's own in the
//! RSS figures, and per-call server work plus a global lock that would blur
//! the differences between the clients. This server reads the body, answers a
//! fixed verdict, and counts hits and connections with one atomic each;
//! `GET /stats` answers `{hits} {connections}`, so a client in another
//! process can read them (see [`stats`]).

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower_quality_gate::QualityRequest;

/// The verdict the server answers with, the same for every client: a bare
/// approval, so that decoding it costs every client the same little and the
/// figures show the cost of the call, not of serde_json.
pub const VERDICT: &str = r#"{"approved":true,"gate":"all"}"#;

/// How the server answers a check.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// [`VERDICT`] at once.
    Verdict,
    /// [`VERDICT`] after this delay: a slow coordinator.
    Slow(Duration),
    /// `503` to the first attempt of every call whose task id ends in an even
    /// number, [`VERDICT`] to everything else: exactly half of the first
    /// attempts fail, and their retries succeed.
    FailHalfOfFirstAttempts,
}

struct State {
    behaviour: Behaviour,
    hits: AtomicU64,
    connections: AtomicU64,
    /// Even task ids whose first attempt was failed and whose retry has not
    /// arrived yet; bounded by the calls in flight.
    failed: Mutex<HashSet<u64>>,
}

/// A running server; it stops with its runtime.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    /// Binds a free port of 127.0.0.1 and serves on `rt`.
    pub fn start(rt: &Runtime, behaviour: Behaviour) -> Server {
        let listener = rt
            .block_on(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            behaviour,
            hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            failed: Mutex::new(HashSet::new()),
        });
        rt.spawn(accept(listener, state.clone()));
        Server { addr, state }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Checks received so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, state.clone()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/stats" {
        let stats = format!(
            "{} {}",
            state.hits.load(Ordering::Relaxed),
            state.connections.load(Ordering::Relaxed)
        );
        return Ok(Response::new(Full::new(Bytes::from(stats))));
    }
    state.hits.fetch_add(1, Ordering::Relaxed);
    // Read the whole request, as a real coordinator must.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let fail = match state.behaviour {
        Behaviour::Verdict => false,
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            false
        }
        Behaviour::FailHalfOfFirstAttempts => {
            let id = serde_json::from_slice::<QualityRequest>(&body)
                .ok()
                .and_then(|r| task_number(&r.task_id))
                .unwrap_or(1);
            let mut failed = state.failed.lock().unwrap_or_else(|e| e.into_inner());
            // A first attempt leaves a mark and fails; its retry removes it.
            id.is_multiple_of(2) && !failed.remove(&id) && failed.insert(id)
        }
    };
    let (status, body) = if fail {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(br#"{"error":"busy"}"#),
        )
    } else {
        (StatusCode::OK, Bytes::from_static(VERDICT.as_bytes()))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The number at the end of `task-{n}`.
fn task_number(task_id: &str) -> Option<u64> {
    task_id.rsplit('-').next()?.parse().ok()
}

/// `(hits, connections)` of the server at `url` (`http://127.0.0.1:port`),
/// asked over a connection of its own, which the connection count includes.
/// Blocking; called between measurements only.
pub fn stats(url: &str) -> (u64, u64) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting for /stats");
    stream
        .write_all(b"GET /stats HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .expect("asking for /stats");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reading /stats");
    let body = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
    let mut numbers = body.split_whitespace().map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

const AGENT: &str = "agent-7";
const FILES: [&str; 5] = [
    "src/lib.rs",
    "src/client/mod.rs",
    "src/retry/mod.rs",
    "tests/client.rs",
    "README.md",
];
const SUMMARY: &str = "add a retry budget shared by every clone of the client, and document it";

/// The request every bench sends: a typical check of a five-file change.
pub fn request(n: u64) -> QualityRequest {
    QualityRequest::new(format!("task-{n}"), AGENT)
        .files(FILES)
        .diff_summary(SUMMARY)
}

/// The heap [`request`]`(n)` owns if it keeps its inputs as `String`s and
/// its files as a `Vec<String>`: worked out from the inputs, so that it
/// needs nothing but the builder from the crate.
pub fn request_heap(n: u64) -> usize {
    format!("task-{n}").len()
        + AGENT.len()
        + SUMMARY.len()
        + FILES.len() * std::mem::size_of::<String>()
        + FILES.iter().map(|f| f.len()).sum::<usize>()
}

/// A current-thread Tokio runtime, time and I/O enabled: one thread runs
/// every task, as on a core of its own.
pub fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a Tokio runtime")
}

/// A Tokio runtime with `workers` worker threads, time and I/O enabled.
pub fn runtime(name: &str, workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("building a Tokio runtime")
}

/// A bench parameter from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process's resident memory, from `/proc/self/status`, in bytes:
/// `(VmRSS, VmHWM)`, the current and the peak.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time this process has used so far, all threads, in nanoseconds
/// (`/proc/self/task/*/schedstat`, nanosecond resolution).
///
/// Unlike wall time, it hardly moves when other processes compete for the
/// cores, so throughput per CPU-second compares clients fairly on a busy
/// machine.
pub fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The value at quantile `q` of sorted latencies (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Calls per second, completed (`ok + failed`) over wall time.
    pub rps: f64,
    /// CPU time the process used per call, in microseconds: user and system,
    /// every thread (the client's alone when the server runs elsewhere).
    pub cpu_us: f64,
    /// Latency quantiles of a call, in microseconds.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Calls that returned a verdict, and calls that failed.
    pub ok: u64,
    pub failed: u64,
    /// Connections the server accepted during the run, when the caller
    /// counts them (the pool opening more than the warm-up left it).
    pub connections: u64,
}

/// How long [`drive`] goes on.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// This many calls in all.
    Calls(u64),
    /// Calls start until this much time has passed.
    For(Duration),
}

/// One way of making a check: a client, or a clone of one, owned by one
/// calling task. `true` when the call returned a verdict.
pub trait Caller: Send + 'static {
    /// Makes one call.
    fn call(&mut self, req: QualityRequest) -> impl Future<Output = bool> + Send + '_;
}

/// Task ids are unique across the process, so that the
/// [`Behaviour::FailHalfOfFirstAttempts`] server never mistakes a new call
/// for the retry of an old one.
static NEXT_TASK: AtomicU64 = AtomicU64::new(0);

/// Makes calls from `concurrency` tasks on the current runtime until the
/// budget is spent, each task calling its own [`Caller`] in a loop, and
/// times every call.
///
/// `make` builds one caller per task (a clone of the client, say).
pub async fn drive<C: Caller>(concurrency: usize, budget: Budget, make: impl Fn() -> C) -> Run {
    let next = Arc::new(AtomicU64::new(0));
    let cpu = cpu_ns();
    let started = Instant::now();
    let (calls, deadline) = match budget {
        Budget::Calls(n) => (n, None),
        Budget::For(d) => (u64::MAX, Some(started + d)),
    };
    let expected = match budget {
        Budget::Calls(n) => n as usize / concurrency + 1,
        Budget::For(_) => 1024,
    };
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let next = next.clone();
        let mut caller = make();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected);
            let mut failed = 0u64;
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= calls {
                    break;
                }
                let req = request(NEXT_TASK.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                let ok = caller.call(req).await;
                let done = Instant::now();
                latencies.push((done - t).as_nanos() as u64);
                if deadline.is_some_and(|d| done >= d) {
                    break;
                }
                failed += u64::from(!ok);
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (latencies, f) = task.await.expect("bench task panicked");
        all.extend(latencies);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_ns() - cpu) as f64 / 1e3;
    all.sort_unstable();
    let us = |q| quantile(&all, q) as f64 / 1000.0;
    Run {
        rps: all.len() as f64 / elapsed,
        cpu_us: cpu / all.len() as f64,
        p50: us(0.50),
        p99: us(0.99),
        p999: us(0.999),
        ok: all.len() as u64 - failed,
        failed,
        connections: 0,
    }
}
