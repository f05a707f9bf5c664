//! The clients the `throughput` and `cost` benches compare, as calling
//! loops ([`Caller`]s), and the processes they run in: a server process of
//! its own (`--server`) and one client process per measurement
//! (`--client`).
//!
//! - **(a) raw**: a hand-written hyper-util legacy client doing the same
//!   POST, with `serde_json` encoding and decoding: the limit, ratio 1.00;
//! - **(b) stack**: (a) under a hand-built tower stack (a
//!   `GlobalConcurrencyLimit`, tower's `Retry` with a two-attempt policy
//!   over the encoded body, one `Timeout`), called with `oneshot` on a
//!   clone: what tower's layers cost without this crate;
//! - **(c) check**: the bare `QualityCheck` service, `oneshot` on a clone;
//! - **(d) client**: `QualityClient::check` with every default except the
//!   concurrency limit, raised to the concurrency measured so that it only
//!   does its bookkeeping (as (b)'s limit does);
//! - **(e) reqwest**: `reqwest` (HTTP/1.1, `json`), one `Client`.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::retry::{Policy, RetryLayer};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_quality_gate::{BoxError, QualityCheck, QualityClient, QualityRequest, QualityResponse};

use crate::support::{current_thread, drive, stats, Behaviour, Budget, Caller, Run, Server};

/// Unmeasured calls per calling task before each run, to open connections.
pub const WARM_UP_PER_TASK: u64 = 8;
/// The pause between the warm-up and the measured run, in milliseconds:
/// connections the pool started but did not need finish in the meantime.
const SETTLE_MS: u64 = 100;
/// The per-attempt timeout of (b), the library's default.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

// ===== (a): hyper-util and serde_json by hand =====

/// hyper-util's pooled client, configured as `QualityCheck` configures it
/// (`TCP_NODELAY`, Tokio timers), with nothing else: no span, no body cap,
/// no request id, no error classification.
#[derive(Clone)]
pub struct Raw {
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

    /// One POST of an encoded request; the verdict, decoded.
    fn send(&self, body: Bytes) -> impl Future<Output = Result<QualityResponse, BoxError>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static("raw-bench/0"));
        // The client's future owns what it needs: no clone of `self`.
        let response = self.client.request(request);
        async move {
            let response = response.await?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()).into());
            }
            let body = response.into_body().collect().await?.to_bytes();
            Ok(serde_json::from_slice(&body)?)
        }
    }
}

fn encode(req: QualityRequest) -> Bytes {
    Bytes::from(serde_json::to_vec(&req).expect("a request always encodes"))
}

impl Caller for Raw {
    async fn call(&mut self, req: QualityRequest) -> bool {
        self.send(encode(req)).await.is_ok()
    }
}

// ===== (b): a tower stack over (a) =====

/// (a) as the innermost service of (b): an encoded body in, a verdict out.
/// Its future is boxed, as a hand-written service's usually is.
impl Service<Bytes> for Raw {
    type Response = QualityResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QualityResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, body: Bytes) -> Self::Future {
        Box::pin(self.send(body))
    }
}

/// tower's `Retry` policy of (b): one retry after an error; the encoded body
/// is cloned for it (a reference count).
#[derive(Clone)]
struct RetryOnce(bool);

impl Policy<Bytes, QualityResponse, BoxError> for RetryOnce {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Bytes,
        result: &mut Result<QualityResponse, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 => {
                self.0 = false;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, body: &Bytes) -> Option<Bytes> {
        Some(body.clone())
    }
}

/// (b): limit, encode, retry, timeout, (a).
fn stack(
    url: &str,
    limit: usize,
) -> impl Service<QualityRequest, Response = QualityResponse, Error = BoxError, Future: Send + 'static>
       + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(GlobalConcurrencyLimitLayer::new(limit))
        .map_request(encode)
        .layer(RetryLayer::new(RetryOnce(true)))
        .timeout(ATTEMPT_TIMEOUT)
        .service(Raw::new(url))
}

// ===== (b), (c), (d), (e) as callers =====

/// (b) and (c): `oneshot` on a clone of the service, per call.
pub struct Oneshot<S>(S);

impl<S> Caller for Oneshot<S>
where
    S: Service<QualityRequest, Response = QualityResponse> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    async fn call(&mut self, req: QualityRequest) -> bool {
        self.0.clone().oneshot(req).await.is_ok()
    }
}

/// (d): `QualityClient::check`, the documented one-line call.
pub struct CheckApi(pub QualityClient);

impl Caller for CheckApi {
    async fn call(&mut self, req: QualityRequest) -> bool {
        self.0.check(req).await.is_ok()
    }
}

/// (e): reqwest, the way its documentation shows a JSON POST.
pub struct Reqwest {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Caller for Reqwest {
    async fn call(&mut self, req: QualityRequest) -> bool {
        let Ok(response) = self.client.post(self.url.clone()).json(&req).send().await else {
            return false;
        };
        if !response.status().is_success() {
            return false;
        }
        response.json::<QualityResponse>().await.is_ok()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Raw,
    Stack,
    Check,
    Client,
    Reqwest,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Raw,
        Kind::Stack,
        Kind::Check,
        Kind::Client,
        Kind::Reqwest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Stack => "stack",
            Kind::Check => "check",
            Kind::Client => "client",
            Kind::Reqwest => "reqwest",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Raw => "(a) raw hyper-util + serde_json",
            Kind::Stack => "(b) tower stack over (a)",
            Kind::Check => "(c) QualityCheck, oneshot",
            Kind::Client => "(d) QualityClient::check",
            Kind::Reqwest => "(e) reqwest",
        }
    }

    pub fn parse(s: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .unwrap_or_else(|| panic!("unknown client {s:?}: raw|stack|check|client|reqwest"))
    }

    /// Builds this kind's client for `url`, warms it up and measures it.
    async fn measure(self, url: &str, concurrency: usize, budget: Budget) -> Run {
        match self {
            Kind::Raw => {
                let raw = Raw::new(url);
                measure(url, concurrency, budget, || raw.clone()).await
            }
            Kind::Stack => {
                let stack = stack(url, concurrency);
                measure(url, concurrency, budget, || Oneshot(stack.clone())).await
            }
            Kind::Check => {
                let check = QualityCheck::new(url).expect("a valid check");
                measure(url, concurrency, budget, || Oneshot(check.clone())).await
            }
            Kind::Client => {
                let client = QualityClient::builder(url)
                    .concurrency_limit(Some(concurrency))
                    .build()
                    .expect("a valid client");
                measure(url, concurrency, budget, || CheckApi(client.clone())).await
            }
            Kind::Reqwest => {
                let client = reqwest::Client::new();
                let check_url: reqwest::Url = format!("{url}/api/quality/check")
                    .parse()
                    .expect("a valid URL");
                measure(url, concurrency, budget, || Reqwest {
                    client: client.clone(),
                    url: check_url.clone(),
                })
                .await
            }
        }
    }
}

/// A warm-up that opens the pool's connections, then the measured run.
async fn measure<C: Caller>(
    url: &str,
    concurrency: usize,
    budget: Budget,
    make: impl Fn() -> C,
) -> Run {
    // Two rounds of warm-up, each followed by a pause: the run then starts
    // from a settled pool.
    let warm_up = Budget::Calls(WARM_UP_PER_TASK * concurrency as u64);
    for _ in 0..2 {
        drive(concurrency, warm_up, &make).await;
        tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    }
    let (_, before) = stats(url);
    let mut run = drive(concurrency, budget, make).await;
    let (_, after) = stats(url);
    // The second `stats` call's own connection is not the client's.
    run.connections = after.saturating_sub(before + 1);
    run
}

// ===== processes =====

/// Where the server and the clients run.
#[derive(Clone, Copy)]
pub struct Pinning {
    /// `taskset` works and there are two CPUs to put the processes on.
    pub taskset: bool,
}

impl Pinning {
    pub const SERVER_CPU: &str = "1";
    pub const CLIENT_CPU: &str = "0";

    pub fn detect() -> Pinning {
        let works = |cpu: &str| {
            Command::new("taskset")
                .args(["-c", cpu, "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        Pinning {
            taskset: works(Self::SERVER_CPU) && works(Self::CLIENT_CPU),
        }
    }

    pub fn describe(self) -> &'static str {
        if self.taskset {
            "applied: server on CPU 1, each client process on CPU 0 (taskset)"
        } else {
            "NOT applied (no working taskset or fewer than 2 CPUs): separate processes only"
        }
    }

    /// A command running this bench binary, on `cpu` when pinning works.
    pub fn command(self, cpu: &str) -> Command {
        let exe = std::env::current_exe().expect("the bench's own path");
        if self.taskset {
            let mut command = Command::new("taskset");
            command.args(["-c", cpu]).arg(exe);
            command
        } else {
            Command::new(exe)
        }
    }
}

/// The coordinator in a process of its own: this binary with `--server`.
/// It exits when its stdin closes, so it never outlives the bench.
pub struct ServerProcess {
    child: Child,
    pub url: String,
}

impl ServerProcess {
    pub fn start(pinning: Pinning) -> ServerProcess {
        let mut child = pinning
            .command(Pinning::SERVER_CPU)
            .arg("--server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the server process");
        let mut url = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut url)
            .expect("reading the server's URL");
        ServerProcess {
            child,
            url: url.trim().to_owned(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--server`: serve until stdin closes.
pub fn server_process() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = current_thread();
    let server = Server::start(&rt, Behaviour::Verdict);
    println!("{}", server.url());
    rt.block_on(std::future::pending::<()>());
}

/// `--client`: one measurement in this process, printed as one line.
pub fn client_process(kind: Kind, url: Option<&str>, concurrency: usize, budget: Budget) {
    // Without a URL (a profiler run), a server process of our own, unpinned.
    let own = url
        .is_none()
        .then(|| ServerProcess::start(Pinning { taskset: false }));
    let url = url.map_or_else(
        || own.as_ref().map(|s| s.url.clone()),
        |u| Some(u.to_owned()),
    );
    let url = url.expect("a server URL");
    let run = current_thread().block_on(kind.measure(&url, concurrency, budget));
    println!(
        "rps={} cpu_us={} p50={} p99={} p999={} ok={} failed={} connections={}",
        run.rps, run.cpu_us, run.p50, run.p99, run.p999, run.ok, run.failed, run.connections
    );
}

/// The bench's command line, as `cargo bench` passes it (its `--bench`
/// left out).
pub struct Args(pub Vec<String>);

impl Args {
    pub fn from_env() -> Args {
        Args(
            std::env::args()
                .skip(1)
                .filter(|a| a != "--bench")
                .collect(),
        )
    }

    /// Whether `--name` is given.
    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// The value after `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
}
