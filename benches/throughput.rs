//! What a quality check costs the calling process, end to end over real
//! loopback HTTP, next to the fastest hand-written client and the peer a
//! user would pick instead:
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
//!
//! Every client sends the same request and gets the same verdict,
//! `{"approved":true,"gate":"all"}`, from a bare hyper server in a process
//! of its own, pinned to CPU 1 with `taskset` when there is one. Each
//! measurement is a fresh client process (this binary again, with
//! `--client`), pinned to CPU 0: it builds its client, warms the pool up,
//! runs the calling tasks for a fixed time on a current-thread runtime and
//! reports requests/s, its own CPU time per call (`/proc/self/task/*/schedstat`:
//! user and system, every thread, nanoseconds) and latency quantiles. The
//! server's CPU is not counted, so the CPU-µs per call is the client's own
//! cost, the figure a user pays.
//!
//! Rounds are interleaved: each round runs every client once at every
//! concurrency, in an order that rotates from round to round; the table
//! gives the median of the rounds, and ratios are the median of each
//! round's ratio to (a).
//!
//! A second part, `--retry`, measures the cost of retries: the default client
//! (all defaults, concurrency limit 64) at 64 calling tasks, in one process
//! with a server that answers 503 to half of the first attempts (those of
//! even task ids) and the verdict to everything else; it reports calls/s,
//! server hits per call and how many calls got a verdict, with the default
//! retry budget and without one, next to an all-successful baseline.
//!
//! ```sh
//! cargo bench --bench throughput                    # both parts, about 4 minutes
//! cargo bench --bench throughput -- --quick         # a smoke run, about 20 s
//! cargo bench --bench throughput -- --compare --clients raw,client --concurrency 16,64
//! cargo bench --bench throughput -- --retry         # only the retry cost
//! ```
//!
//! Options: `--clients raw,stack,check,client,reqwest` (raw is always run:
//! it is the reference), `--concurrency 1,16,64,256`, `--rounds N`
//! (default 5), `--duration-ms D` per measurement (default 1500);
//! `--quick` (or `QG_BENCH_QUICK=1`) means one round of 300 ms and a
//! tenth of the retry part. Tables go to stdout, one line per measurement
//! to stderr.
//!
//! For a profiler, one client alone in this process, its server in another:
//! `--client check --calls 3000 --concurrency 1` (add `--url` to use a
//! running server). `benches/cost.rs` runs the clients that way under
//! callgrind and differences two run lengths: instructions per call.
//!
//! The clients and the processes are `support/clients.rs`, shared with the
//! cost bench.

#[path = "support/clients.rs"]
mod clients;
mod support;

use std::process::Stdio;
use std::time::Duration;

use tower_quality_gate::QualityClient;

use clients::{
    client_process, server_process, Args, CheckApi, Kind, Pinning, ServerProcess, WARM_UP_PER_TASK,
};
use support::{current_thread, drive, median, Behaviour, Budget, Run, Server};

/// The concurrencies compared by default.
/// The concurrencies compared by default.
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];

/// Runs one measurement in a fresh client process and reads its line.
fn measure_in_process(
    pinning: Pinning,
    kind: Kind,
    url: &str,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let out = pinning
        .command(Pinning::CLIENT_CPU)
        .args(["--client", kind.name(), "--url", url])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--duration-ms", &duration.as_millis().to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("starting a client process");
    assert!(
        out.status.success(),
        "{}: client process failed",
        kind.label()
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Run {
        rps: field("rps"),
        cpu_us: field("cpu_us"),
        p50: field("p50"),
        p99: field("p99"),
        p999: field("p999"),
        ok: field("ok") as u64,
        failed: field("failed") as u64,
        connections: field("connections") as u64,
    }
}

// ===== the comparison =====

/// `/proc/loadavg`'s first three figures: how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

struct Options {
    kinds: Vec<Kind>,
    levels: Vec<usize>,
    rounds: usize,
    duration: Duration,
}

fn compare(opts: &Options, command: &str) {
    let pinning = Pinning::detect();
    let server = ServerProcess::start(pinning);
    let kinds = &opts.kinds;
    println!(
        "## Client cost per call: {} rounds interleaved, {} ms per measurement, medians\n",
        opts.rounds,
        opts.duration.as_millis()
    );
    println!("Command: `{command}`  ");
    println!("Pinning: {}.  ", pinning.describe());
    println!("Load average at the start: {}.  ", load_average());
    println!(
        "Server: its own process, one current-thread runtime. Clients: a fresh process each measurement, one current-thread runtime.\n"
    );

    // results[level][kind][round]
    let mut results = vec![vec![Vec::new(); kinds.len()]; opts.levels.len()];
    for round in 0..opts.rounds {
        for (li, &concurrency) in opts.levels.iter().enumerate() {
            for i in 0..kinds.len() {
                // Each round starts one client further along.
                let ki = (i + round) % kinds.len();
                let kind = kinds[ki];
                let run =
                    measure_in_process(pinning, kind, &server.url, concurrency, opts.duration);
                assert_eq!(run.failed, 0, "{}: calls failed", kind.label());
                eprintln!(
                    "round {round} c={concurrency:>3} {:<32} {:>8.0} req/s {:>7.2} CPU-µs/call  p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  {} new connections",
                    kind.label(),
                    run.rps,
                    run.cpu_us,
                    run.p50,
                    run.p99,
                    run.p999,
                    run.connections
                );
                results[li][ki].push(run);
            }
        }
    }

    println!(
        "Load average at the end: {}. Ratios are to (a), the median of the per-round ratios; absolute figures are the medians of the rounds.\n",
        load_average()
    );
    println!("| concurrency | client | req/s | × (a) | CPU-µs/call | × (a) | p50 µs | p99 µs | × (a) | new conns |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (li, &concurrency) in opts.levels.iter().enumerate() {
        let reference = &results[li][0];
        for (ki, kind) in kinds.iter().enumerate() {
            let runs = &results[li][ki];
            let abs = |f: fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            let ratio = |f: fn(&Run) -> f64| {
                let mut r: Vec<f64> = runs
                    .iter()
                    .zip(reference)
                    .map(|(x, a)| f(x) / f(a))
                    .collect();
                median(&mut r)
            };
            println!(
                "| {concurrency} | {} | {:.0} | {:.3} | {:.2} | {:.3} | {:.1} | {:.1} | {:.3} | {:.0} |",
                kind.label(),
                abs(|r| r.rps),
                ratio(|r| r.rps),
                abs(|r| r.cpu_us),
                ratio(|r| r.cpu_us),
                abs(|r| r.p50),
                abs(|r| r.p99),
                ratio(|r| r.p99),
                abs(|r| r.connections as f64),
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

fn retry_cost(calls: u64, rounds: usize) {
    const CONCURRENCY: usize = 64;
    let rt = current_thread();
    let ok_server = Server::start(&rt, Behaviour::Verdict);
    let flaky = Server::start(&rt, Behaviour::FailHalfOfFirstAttempts);
    println!(
        "## Retry cost: {calls} calls per run at concurrency {CONCURRENCY}, {rounds} rounds interleaved, medians\n\nServer and client in one process, one current-thread runtime (these figures count server hits, not CPU).\n"
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
            let (run, hits) = rt.block_on(async {
                let warm_up = Budget::Calls(WARM_UP_PER_TASK * CONCURRENCY as u64);
                drive(CONCURRENCY, warm_up, || CheckApi(client.clone())).await;
                let before = server.hits();
                let run = drive(CONCURRENCY, Budget::Calls(calls), || {
                    CheckApi(client.clone())
                })
                .await;
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

// ===== command line =====

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours.
    let cli = Args::from_env();
    let flag = |name: &str| cli.flag(name);
    let value = |name: &str| cli.value(name);
    let args = &cli.0;
    let number = |name: &str| {
        value(name).map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} {v}: expected a number"))
        })
    };
    let list = |v: &str| -> Vec<String> { v.split(',').map(|s| s.trim().to_owned()).collect() };

    if flag("--server") {
        server_process();
        return;
    }
    if let Some(kind) = value("--client") {
        let budget = match (number("--calls"), number("--duration-ms")) {
            (Some(calls), _) => Budget::Calls(calls),
            (None, Some(ms)) => Budget::For(Duration::from_millis(ms)),
            (None, None) => Budget::Calls(10_000),
        };
        let concurrency = number("--concurrency").unwrap_or(1) as usize;
        client_process(Kind::parse(kind), value("--url"), concurrency, budget);
        return;
    }

    let quick = flag("--quick") || std::env::var("QG_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut kinds = vec![Kind::Raw];
    let chosen = value("--clients").map_or_else(
        || Kind::ALL.to_vec(),
        |v| list(v).iter().map(|k| Kind::parse(k)).collect(),
    );
    kinds.extend(chosen.into_iter().filter(|k| *k != Kind::Raw));
    let levels = value("--concurrency").map_or_else(
        || CONCURRENCY.to_vec(),
        |v| {
            list(v)
                .iter()
                .map(|c| c.parse().expect("--concurrency 1,16,…"))
                .collect()
        },
    );
    let opts = Options {
        kinds,
        levels,
        rounds: number("--rounds").unwrap_or(if quick { 1 } else { 5 }) as usize,
        duration: Duration::from_millis(number("--duration-ms").unwrap_or(if quick {
            300
        } else {
            1500
        })),
    };
    let command = if args.is_empty() {
        "cargo bench --bench throughput".to_owned()
    } else {
        format!("cargo bench --bench throughput -- {}", args.join(" "))
    };
    let only_retry = flag("--retry");
    let only_compare = flag("--compare");
    if !only_retry {
        compare(&opts, &command);
    }
    if !only_compare {
        let (calls, rounds) = if quick { (1_000, 1) } else { (10_000, 3) };
        retry_cost(calls, rounds);
    }
}
