//! Throughput and latency of a quality check end to end, over real loopback
//! HTTP, against an in-process server that answers a fixed verdict:
//!
//! - **(a) raw**: a hand-written hyper-util legacy client doing the same
//!   POST, with `serde_json` encoding and decoding: the practical limit;
//! - **(b) check**: the bare `QualityCheck` service;
//! - **(c) client**: the default `QualityClient` stack (concurrency limit,
//!   overall timeout, retry with the default policy and budget, per-attempt
//!   timeout), called through `tower::Service` (`ready().await`, `call`);
//! - **(d) check()**: the same client through `QualityClient::check`, the
//!   documented one-line call, which adds its own deadline over the wait for
//!   a slot.
//!
//! The same server serves all of them in the same run, at the same
//! concurrency (1, 16, 64 and 256 calling tasks), a fixed number of calls
//! per run after a warm-up that opens the pooled connections. Each client is
//! built once, with a connection pool of its own, and kept for every round. Each round runs
//! a, b, c, d in turn at every concurrency; the tables give the median of the
//! rounds, and the ratios are the median of each round's ratio to (a). The
//! client's concurrency limit is set to the largest concurrency measured
//! (256), so the limit admits every call at once and only its bookkeeping is
//! measured.
//!
//! Besides wall-clock requests/s and latency quantiles, each run reports
//! requests per CPU-second of the whole process: on a machine shared with
//! other work it barely moves when the scheduler takes the core away, so its
//! ratios stay steady where wall-clock ones swing. Each round also logs how
//! many connections the pool opened during the measured run: hyper-util's
//! pool sometimes starts new connections when a request comes before the
//! previous one's connection is back in the pool, and a run where it does
//! has a tail of tens of milliseconds, whichever client it is.
//!
//! By default the server and the clients share one current-thread Tokio
//! runtime (`QG_BENCH_RUNTIME=shared`): each call's client and server work
//! runs on one thread with no cross-thread wake-ups, which measures the CPU
//! cost of a call and is steady from run to run. `QG_BENCH_RUNTIME=split`
//! gives each a one-worker runtime of its own, in parallel on two cores.
//!
//! A second part measures the cost of retries: the default client (all
//! defaults, concurrency limit 64) at 64 calling tasks, against a server
//! that answers 503 to half of the first attempts (those of even task ids)
//! and the verdict to everything else; it reports calls/s, server hits per
//! call, and how many calls got a verdict, with the default retry budget and
//! without one, next to an all-successful baseline.
//!
//! Run it with:
//!
//! ```sh
//! cargo bench --bench throughput                  # both parts, about 2 minutes
//! QG_BENCH_SCALE=0.1 cargo bench --bench throughput   # a quick look
//! cargo bench --bench throughput -- --compare     # only the (a)–(d) comparison
//! cargo bench --bench throughput -- --retry       # only the retry cost
//! ```
//!
//! Environment: `QG_BENCH_SCALE` multiplies the calls per run (default 1:
//! 50,000 for the comparison, 10,000 for the retry part), `QG_BENCH_ROUNDS`
//! sets the rounds (default 5 and 3), `QG_BENCH_CONCURRENCY` the
//! concurrencies compared (default `1,16,64,256`), `QG_BENCH_RUNTIME` the
//! runtime layout (`shared` or `split`), and `QG_BENCH_REQUEST_IDS=off`
//! turns off the `x-request-id` header of (b)–(d), which (a) does not send. Tables go to stdout, one line per
//! run to stderr.
//!
//! For a profiler, `-- --profile raw|check|client|check-api --calls N
//! --concurrency C` makes one warm-up and one run of N calls with one client
//! and nothing else, e.g. under `valgrind --tool=callgrind`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use quality_gate::{
    QualityCheck, QualityCheckBuilder, QualityClient, QualityRequest, QualityResponse,
};
use tower::{Service, ServiceExt};

use support::{drive, env_or, median, Behaviour, Caller, Run, Runtimes, Server};

/// The concurrencies compared.
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Calls per run in the comparison, at scale 1.
const CALLS: f64 = 50_000.0;
/// Calls per run in the retry part, at scale 1: retried calls wait for
/// their backoff (50 ms on average), so these runs are slower.
const RETRY_CALLS: f64 = 10_000.0;
/// Unmeasured calls per calling task before each run, to open connections.
const WARM_UP_PER_TASK: u64 = 8;
/// The pause between the warm-up and the measured run, in milliseconds.
const SETTLE_MS: u64 = 100;

// ===== the four ways of calling =====

/// (a): hyper-util's pooled client and `serde_json`, written by hand, the
/// way `QualityCheck` is configured (`TCP_NODELAY`, Tokio timers) but with
/// nothing else: no span, no body cap, no error classification.
#[derive(Clone)]
struct Raw {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
}

impl Raw {
    fn new(base: &str) -> Raw {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(http);
        let uri = format!("{base}/api/quality/check")
            .parse()
            .expect("a valid URI");
        Raw { client, uri }
    }
}

impl Caller for Raw {
    async fn call(&mut self, req: QualityRequest) -> bool {
        let body = serde_json::to_vec(&req).expect("a request always encodes");
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static("raw-bench/0"));
        let Ok(response) = self.client.request(request).await else {
            return false;
        };
        if !response.status().is_success() {
            return false;
        }
        let Ok(body) = response.into_body().collect().await else {
            return false;
        };
        serde_json::from_slice::<QualityResponse>(&body.to_bytes()).is_ok()
    }
}

/// (b) and (c): any service, driven as tower intends: ready, then call.
struct Svc<S>(S);

impl<S> Caller for Svc<S>
where
    S: Service<QualityRequest> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
{
    async fn call(&mut self, req: QualityRequest) -> bool {
        match self.0.ready().await {
            Ok(svc) => svc.call(req).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// (d): `QualityClient::check`, the one-line call.
struct CheckApi(QualityClient);

impl Caller for CheckApi {
    async fn call(&mut self, req: QualityRequest) -> bool {
        self.0.check(req).await.is_ok()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Check,
    Client,
    CheckApi,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Raw, Kind::Check, Kind::Client, Kind::CheckApi];

    fn label(self) -> &'static str {
        match self {
            Kind::Raw => "(a) raw hyper-util + serde_json",
            Kind::Check => "(b) QualityCheck",
            Kind::Client => "(c) QualityClient (Service)",
            Kind::CheckApi => "(d) QualityClient::check",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "raw" => Some(Kind::Raw),
            "check" => Some(Kind::Check),
            "client" => Some(Kind::Client),
            "check-api" => Some(Kind::CheckApi),
            _ => None,
        }
    }

    /// A warm-up, then one measured run, with this kind's client.
    async fn run(self, clients: &Clients, server: &Server, concurrency: usize, calls: u64) -> Run {
        match self {
            Kind::Raw => measure(server, concurrency, calls, || clients.raw.clone()).await,
            Kind::Check => measure(server, concurrency, calls, || Svc(clients.check.clone())).await,
            Kind::Client => {
                measure(server, concurrency, calls, || Svc(clients.client.clone())).await
            }
            Kind::CheckApi => {
                measure(server, concurrency, calls, || {
                    CheckApi(clients.check_api.clone())
                })
                .await
            }
        }
    }
}

/// One client of each kind, built once and kept for every round, each with
/// a connection pool of its own: dropping and rebuilding them between runs
/// would make the server tear down and set up hundreds of connections in
/// the middle of the next run.
struct Clients {
    raw: Raw,
    check: QualityCheck,
    client: QualityClient,
    check_api: QualityClient,
}

impl Clients {
    /// The clients of `url`; the `QualityClient`s' concurrency limit is
    /// `limit`, which the caller keeps no lower than any concurrency it
    /// measures, so that the limit never makes a call wait.
    fn new(url: &str, limit: usize) -> Clients {
        let client = || {
            QualityClient::builder(url)
                .concurrency_limit(Some(limit))
                .http(check_options)
                .build()
                .expect("a valid client")
        };
        Clients {
            raw: Raw::new(url),
            check: check_options(QualityCheck::builder(url))
                .build()
                .expect("a valid check"),
            client: client(),
            check_api: client(),
        }
    }
}

/// The library's defaults, except that `QG_BENCH_REQUEST_IDS=off` stops
/// (b)–(d) sending an `x-request-id` header, which (a) does not send, to
/// see what that feature costs.
fn check_options(builder: QualityCheckBuilder) -> QualityCheckBuilder {
    match std::env::var("QG_BENCH_REQUEST_IDS").as_deref() {
        Ok("off") => builder.request_id_header(None),
        _ => builder,
    }
}

/// A warm-up that opens the pool's connections, then the measured run.
async fn measure<C: Caller>(
    server: &Server,
    concurrency: usize,
    calls: u64,
    make: impl Fn() -> C,
) -> Run {
    // Two rounds of warm-up, each followed by a pause in which connections
    // the pool started but did not need finish in the background: the run
    // then starts from a settled pool (see "new connections" in the log).
    for _ in 0..2 {
        drive(concurrency, WARM_UP_PER_TASK * concurrency as u64, &make).await;
        tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    }
    let connections = server.connections();
    let mut run = drive(concurrency, calls, make).await;
    run.connections = server.connections() - connections;
    run
}

// ===== the comparison =====

/// One figure of a run.
type Metric = fn(&Run) -> f64;

fn compare(scale: f64) {
    let rounds: usize = env_or("QG_BENCH_ROUNDS", 5);
    let calls = (CALLS * scale).max(100.0) as u64;
    // `QG_BENCH_CONCURRENCY=16,256` measures only those.
    let levels: Vec<usize> = std::env::var("QG_BENCH_CONCURRENCY")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| CONCURRENCY.to_vec());
    // The largest concurrency measured, so the limit never makes a call wait.
    let limit = levels.iter().copied().max().unwrap_or(1);
    let rts = Runtimes::from_env();
    let (server_rt, client_rt) = (rts.server(), rts.client());
    let server = Server::start(server_rt, Behaviour::Verdict);
    let clients = Clients::new(&server.url(), limit);
    println!(
        "## (a)-(d): {calls} calls per run, {rounds} rounds interleaved, median reported\n\nRuntime layout: {}. Client concurrency limit for (c) and (d): {limit}.\n",
        rts.describe()
    );

    // results[concurrency][kind][round]
    let mut results = vec![vec![Vec::new(); Kind::ALL.len()]; levels.len()];
    for round in 0..rounds {
        for (ci, &concurrency) in levels.iter().enumerate() {
            for (ki, kind) in Kind::ALL.into_iter().enumerate() {
                let run = client_rt.block_on(kind.run(&clients, &server, concurrency, calls));
                assert_eq!(run.failed, 0, "{}: calls failed", kind.label());
                eprintln!(
                    "round {round} c={concurrency:>3} {:<32} {:>8.0} req/s {:>8.0} req/CPU-s  p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>7.1} µs  {} new connections",
                    kind.label(),
                    run.rps,
                    run.cpu_rps,
                    run.p50,
                    run.p99,
                    run.p999,
                    run.connections
                );
                results[ci][ki].push(run);
            }
        }
    }

    let ratios: [(&str, Metric); 4] = [
        ("throughput, req/s (wall clock)", |r| r.rps),
        ("throughput per CPU-second (req / CPU-s)", |r| r.cpu_rps),
        ("p50 latency", |r| r.p50),
        ("p99 latency", |r| r.p99),
    ];
    for (title, metric) in ratios {
        println!("### Ratio to (a): {title}; median of the per-round ratios (min–max)\n");
        println!(
            "| concurrency | (b) QualityCheck | (c) QualityClient | (d) QualityClient::check |"
        );
        println!("|---:|---:|---:|---:|");
        for (ci, &concurrency) in levels.iter().enumerate() {
            let ratio = |ki: usize| {
                let mut r: Vec<f64> = (0..rounds)
                    .map(|i| metric(&results[ci][ki][i]) / metric(&results[ci][0][i]))
                    .collect();
                let (lo, hi) = r
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                format!("{:.3} ({lo:.2}–{hi:.2})", median(&mut r))
            };
            println!(
                "| {concurrency} | {} | {} | {} |",
                ratio(1),
                ratio(2),
                ratio(3)
            );
        }
        println!();
    }

    println!("### Absolute figures, median of the rounds\n");
    println!("| concurrency | client | req/s | req / CPU-s | p50 µs | p99 µs | p99.9 µs | connections opened in the run (median) |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for (ci, &concurrency) in levels.iter().enumerate() {
        for (ki, kind) in Kind::ALL.into_iter().enumerate() {
            let m = |f: fn(&Run) -> f64| {
                let mut v: Vec<f64> = results[ci][ki].iter().map(f).collect();
                median(&mut v)
            };
            println!(
                "| {concurrency} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} |",
                kind.label(),
                m(|r| r.rps),
                m(|r| r.cpu_rps),
                m(|r| r.p50),
                m(|r| r.p99),
                m(|r| r.p999),
                m(|r| r.connections as f64)
            );
        }
    }
    println!();
}

// ===== the cost of retries =====

#[derive(Clone, Copy)]
enum RetryCase {
    /// Every attempt succeeds: the reference.
    Baseline,
    /// Half of the first attempts fail; the default client.
    Default,
    /// Half of the first attempts fail; the default client without a budget.
    NoBudget,
}

impl RetryCase {
    const ALL: [RetryCase; 3] = [RetryCase::Baseline, RetryCase::Default, RetryCase::NoBudget];

    fn label(self) -> &'static str {
        match self {
            RetryCase::Baseline => "no failures, default client",
            RetryCase::Default => "50% of first attempts 503, default client",
            RetryCase::NoBudget => "50% of first attempts 503, no retry budget",
        }
    }
}

fn retry_cost(scale: f64) {
    const CONCURRENCY: usize = 64;
    let rounds: usize = env_or("QG_BENCH_ROUNDS", 3);
    let calls = (RETRY_CALLS * scale).max(100.0) as u64;
    let rts = Runtimes::from_env();
    let (server_rt, client_rt) = (rts.server(), rts.client());
    let ok_server = Server::start(server_rt, Behaviour::Verdict);
    let flaky = Server::start(server_rt, Behaviour::FailHalfOfFirstAttempts);
    println!(
        "## Retry cost: {calls} calls per run at concurrency {CONCURRENCY}, {rounds} rounds interleaved, median reported\n\nRuntime layout: {}.\n",
        rts.describe()
    );

    // results[case][round] = (run, hits per call)
    let mut results = vec![Vec::new(); RetryCase::ALL.len()];
    for round in 0..rounds {
        for (i, case) in RetryCase::ALL.into_iter().enumerate() {
            let server = match case {
                RetryCase::Baseline => &ok_server,
                _ => &flaky,
            };
            // Every default, the concurrency limit (64) included; a fresh
            // client, so each case starts with a full budget.
            let builder = QualityClient::builder(server.url());
            let builder = match case {
                RetryCase::NoBudget => builder.retry_budget(None),
                _ => builder,
            };
            let client = builder.build().expect("a valid client");
            let (run, hits) = client_rt.block_on(async {
                drive(CONCURRENCY, WARM_UP_PER_TASK * CONCURRENCY as u64, || {
                    CheckApi(client.clone())
                })
                .await;
                let before = server.hits();
                let run = drive(CONCURRENCY, calls, || CheckApi(client.clone())).await;
                (run, server.hits() - before)
            });
            let per_call = hits as f64 / calls as f64;
            eprintln!(
                "round {round} {:<44} {:>8.0} calls/s  {per_call:.3} hits/call  {} ok  {} failed  p50 {:.1} µs  p99 {:.1} µs",
                case.label(),
                run.rps,
                run.ok,
                run.failed,
                run.p50,
                run.p99
            );
            results[i].push((run, per_call));
        }
    }

    println!("| case | calls/s | server hits per call | calls with a verdict | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, case) in RetryCase::ALL.into_iter().enumerate() {
        let m = |f: &dyn Fn(&(Run, f64)) -> f64| {
            let mut v: Vec<f64> = results[i].iter().map(f).collect();
            median(&mut v)
        };
        println!(
            "| {} | {:.0} | {:.3} | {:.1}% | {:.1} | {:.1} |",
            case.label(),
            m(&|r| r.0.rps),
            m(&|r| r.1),
            m(&|r| 100.0 * r.0.ok as f64 / (r.0.ok + r.0.failed) as f64),
            m(&|r| r.0.p50),
            m(&|r| r.0.p99),
        );
    }
    println!();
}

// ===== one client alone, for a profiler =====

fn profile(kind: Kind, calls: u64, concurrency: usize) {
    let rts = Runtimes::from_env();
    let (server_rt, client_rt) = (rts.server(), rts.client());
    let server = Server::start(server_rt, Behaviour::Verdict);
    let clients = Clients::new(&server.url(), concurrency);
    let run = client_rt.block_on(kind.run(&clients, &server, concurrency, calls));
    println!(
        "{}: {calls} calls at concurrency {concurrency}: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, {} failed",
        kind.label(),
        run.rps,
        run.p50,
        run.p99,
        run.failed
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else selects a part.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let scale: f64 = env_or("QG_BENCH_SCALE", 1.0);
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        let kind = args
            .get(i + 1)
            .and_then(|k| Kind::parse(k))
            .expect("--profile raw|check|client|check-api");
        let calls = value("--calls").unwrap_or(10_000);
        let concurrency = value("--concurrency").unwrap_or(1) as usize;
        profile(kind, calls, concurrency);
        return;
    }
    let only_compare = args.iter().any(|a| a == "--compare");
    let only_retry = args.iter().any(|a| a == "--retry");
    if !only_retry {
        compare(scale);
    }
    if !only_compare {
        retry_cost(scale);
    }
}
