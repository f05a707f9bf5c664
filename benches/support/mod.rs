//! What the `throughput` and `memory` benches share: a minimal in-process
//! coordinator, the request they send, the runtimes and the statistics.
//!
//! The coordinator here is a bare hyper HTTP/1.1 server, not the crate's
//! `TestCoordinator`: that one records every request it receives (headers,
//! body and the parsed request pushed to a `Vec` behind a mutex, kept until
//! `reset()`) and sniffs the HTTP version per connection. Over a million calls that is
//! hundreds of megabytes of memory that would swamp the client's own in the
//! RSS figures, and per-call server work plus a global lock that would blur
//! the differences between the clients. This server reads the body, answers a
//! fixed verdict, and counts hits with one atomic.

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
use quality_gate::QualityRequest;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// The verdict the server answers with: an approval with a realistic
/// `details` object, 300-odd bytes, like the coordinator's own answers.
pub const VERDICT: &str = r#"{"approved":true,"gate":"aiReview","message":"all gates passed","details":{"build":{"ok":true,"ms":8123},"lint":{"ok":true,"warnings":0},"test":{"ok":true,"passed":412,"failed":0},"coverage":{"ok":true,"percent":91.4},"aiReview":{"confidence":0.94,"approved":true,"findings":[]}}}"#;

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
            id % 2 == 0 && !failed.remove(&id) && failed.insert(id)
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

/// The request every bench sends: a typical check of a five-file change.
pub fn request(n: u64) -> QualityRequest {
    QualityRequest::new(format!("task-{n}"), "agent-7")
        .files([
            "src/lib.rs",
            "src/client/mod.rs",
            "src/retry/mod.rs",
            "tests/client.rs",
            "README.md",
        ])
        .diff_summary("add a retry budget shared by every clone of the client, and document it")
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

/// Where the server and the clients run.
///
/// `shared` (the default): one current-thread Tokio runtime runs both, so
/// every call costs its client and server work on one thread, in turn, with
/// no cross-thread wake-ups. That measures what a call costs in CPU and is
/// steady from run to run; on two cores it leaves the other core to
/// everything else on the machine.
///
/// `split`: a runtime each, with one worker thread each, so the server and
/// the clients run in parallel on the two cores. Closer to a real
/// deployment, but the latency of waking a parked thread and where the
/// scheduler puts the two threads dominate, so run-to-run spread is large.
pub struct Runtimes {
    server: Runtime,
    client: Option<Runtime>,
}

impl Runtimes {
    /// The layout `QG_BENCH_RUNTIME` names (`shared` or `split`).
    pub fn from_env() -> Runtimes {
        match std::env::var("QG_BENCH_RUNTIME").as_deref() {
            Ok("split") => Runtimes {
                server: runtime("bench-server", 1),
                client: Some(runtime("bench-client", 1)),
            },
            Ok("shared") | Err(_) => Runtimes {
                server: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a Tokio runtime"),
                client: None,
            },
            Ok(other) => panic!("QG_BENCH_RUNTIME={other}: expected shared or split"),
        }
    }

    /// A description for the report.
    pub fn describe(&self) -> &'static str {
        match self.client {
            None => "shared: server and clients on one current-thread runtime",
            Some(_) => "split: server and clients on a one-worker runtime each",
        }
    }

    /// The runtime the server runs on.
    pub fn server(&self) -> &Runtime {
        &self.server
    }

    /// The runtime the clients run on.
    pub fn client(&self) -> &Runtime {
        self.client.as_ref().unwrap_or(&self.server)
    }
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

/// What one run of a fixed number of calls measured.
#[derive(Clone, Debug)]
pub struct Run {
    /// Calls per second, completed (`ok + failed`) over wall time.
    pub rps: f64,
    /// Calls per second of CPU time used by the whole process (clients and,
    /// when it runs in this process, the server).
    pub cpu_rps: f64,
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

/// Makes `calls` calls from `concurrency` tasks on the current runtime, each
/// task calling its own [`Caller`] in a loop, and times every call.
///
/// `make` builds one caller per task (a clone of the client, say).
pub async fn drive<C: Caller>(concurrency: usize, calls: u64, make: impl Fn() -> C) -> Run {
    let next = Arc::new(AtomicU64::new(0));
    let cpu = cpu_ns();
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let next = next.clone();
        let mut caller = make();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity((calls as usize / concurrency) + 1);
            let mut failed = 0u64;
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= calls {
                    break;
                }
                let req = request(NEXT_TASK.fetch_add(1, Ordering::Relaxed));
                let t = std::time::Instant::now();
                let ok = caller.call(req).await;
                latencies.push(t.elapsed().as_nanos() as u64);
                failed += u64::from(!ok);
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::with_capacity(calls as usize);
    let mut failed = 0;
    for task in tasks {
        let (latencies, f) = task.await.expect("bench task panicked");
        all.extend(latencies);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_ns() - cpu) as f64 / 1e9;
    all.sort_unstable();
    let us = |q| quantile(&all, q) as f64 / 1000.0;
    Run {
        rps: all.len() as f64 / elapsed,
        cpu_rps: all.len() as f64 / cpu,
        p50: us(0.50),
        p99: us(0.99),
        p999: us(0.999),
        ok: all.len() as u64 - failed,
        failed,
        connections: 0,
    }
}
