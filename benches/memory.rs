//! Memory of `QualityClient::check` calls: the bytes each call costs while
//! it waits for a slot behind the client's concurrency limit (from 1,000 to
//! 100,000 queued calls), and while it is in flight on a connection of its
//! own (100 and 1,000 at once).
//!
//! The bench process runs two coordinators (the minimal server of
//! `support`): one answers each check after 20 ms (`QG_MEM_DELAY_MS`), for
//! the queued calls, the other after 2 s, long enough to hold every call in
//! flight while it is measured. It starts itself again once per measurement
//! as a client process, so the figures read from that process's
//! `/proc/self/status` (`VmRSS`, `VmHWM`) are the client's alone. Each
//! client process:
//!
//! 1. builds a `QualityClient` with every default but the concurrency
//!    limit, and makes 16 calls at once, so the pool holds its connections;
//! 2. reads `VmRSS` (the baseline);
//! 3. *queued* (limit 16): spawns N tasks, each making one `check` call,
//!    and waits until every one has been polled, i.e. 16 calls are in flight
//!    and N − 16 wait for a slot; reads `VmRSS` again: (queued − baseline) /
//!    N is what one queued call costs, to compare with the size of its
//!    future and its request;
//!    *in flight* (limit N): spawns N calls and waits until the server has
//!    received all N (`GET /stats`), i.e. each holds a connection and waits
//!    for its answer; (in flight − baseline) / N is what one call in flight
//!    costs, its connection included;
//! 4. for N = 10,000 queued only, lets them all finish while sampling
//!    `VmRSS` every 50 ms, then does it all again: a second wave that peaks
//!    where the first did shows that nothing accumulates per call.
//!
//! Each measurement runs in four setups: a current-thread runtime or a
//! multi-thread one with one worker, with no tracing subscriber or with a
//! `fmt` subscriber at INFO (writing to nowhere), which creates the spans of
//! every call and attempt. Every queued size runs in the first setup
//! (current-thread, no subscriber: what the cost targets are for); the
//! 10,000 drained and the 100,000 queued run in the others.
//!
//! Run it with `cargo bench --bench memory` (about 3 minutes);
//! `QG_MEM_SETUPS=current cargo bench --bench memory` runs the first setup
//! only (`current`, `current-info`, `multi`, `multi-info`).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{
    current_thread, env_or, request, request_heap, rss, runtime, stats, Behaviour, Server,
};
use tokio::runtime::Runtime;
use tower_quality_gate::{QualityClient, QualityRequest};

/// The client's concurrency limit: the slots the queued calls wait for.
const LIMIT: usize = 16;
/// Calls queued per measurement; the one marked `true` is also drained, twice.
const QUEUED: [(usize, bool); 4] = [
    (1_000, false),
    (10_000, true),
    (30_000, false),
    (100_000, false),
];
/// Calls in flight at once per measurement, each on its own connection.
const IN_FLIGHT: [usize; 2] = [100, 1_000];
/// How long the second server holds each answer: every call of an in-flight
/// measurement must have reached it, and none been answered, when the
/// client reads its RSS.
const IN_FLIGHT_DELAY: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--client") {
        let url = &args[1];
        let n: usize = args[2].parse().expect("a number of calls");
        let setup = Setup::parse(&args[4]);
        client(url, n, &args[3], setup);
        return;
    }

    let delay = Duration::from_millis(env_or("QG_MEM_DELAY_MS", 20));
    let server_rt = runtime("bench-server", 1);
    let server = Server::start(&server_rt, Behaviour::Slow(delay));
    let holding = Server::start(&server_rt, Behaviour::Slow(IN_FLIGHT_DELAY));
    let run = |url: &str, n: usize, mode: &str, setup: Setup| -> String {
        let exe = std::env::current_exe().expect("the bench's own path");
        let out = Command::new(exe)
            .args(["--client", url, &n.to_string(), mode, setup.name()])
            .output()
            .expect("starting the client process");
        assert!(
            out.status.success(),
            "client process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        eprintln!("N={n} {mode} {}: {line}", setup.name());
        line
    };
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };

    // `QG_MEM_SETUPS=current,multi-info` runs only those setups.
    let setups: Vec<Setup> = std::env::var("QG_MEM_SETUPS").map_or_else(
        |_| Setup::ALL.to_vec(),
        |v| v.split(',').map(|s| Setup::parse(s.trim())).collect(),
    );
    // Every size for the default setup; the largest drained and the
    // largest alone for the others.
    let queued = |setup: Setup| {
        QUEUED
            .into_iter()
            .filter(move |&(n, drain)| setup == Setup::DEFAULT || drain || n == 100_000)
    };
    println!(
        "## Memory: calls queued behind a concurrency limit of {LIMIT}, server delay {delay:?}\n"
    );
    println!("| runtime, subscriber | queued calls | RSS before | RSS, all queued | per queued call | task future + request heap | VmHWM then | drained: peak RSS | 2nd wave: RSS queued / peak | failed calls |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (setup, (n, drain)) in setups
        .iter()
        .copied()
        .flat_map(|setup| queued(setup).map(move |q| (setup, q)))
    {
        let line = run(
            &server.url(),
            n,
            if drain { "drain" } else { "queue" },
            setup,
        );
        let f = |name: &str| field(&line, name);
        let (base, queued) = (f("rss_base"), f("rss_queued"));
        let (drained, second, failed) = if drain {
            (
                mib(f("rss_max1")),
                format!("{} / {}", mib(f("rss_queued2")), mib(f("rss_max2"))),
                (f("failed1") + f("failed2")).to_string(),
            )
        } else {
            ("–".to_owned(), "–".to_owned(), "–".to_owned())
        };
        println!(
            "| {} | {n} | {} | {} | {} B | {} B + {} B | {} | {drained} | {second} | {failed} |",
            setup.label(),
            mib(base),
            mib(queued),
            queued.saturating_sub(base) / n as u64,
            f("future_size"),
            f("request_heap"),
            mib(f("hwm")),
        );
    }
    println!();

    println!("## Memory: calls in flight, each on its own connection, server delay {IN_FLIGHT_DELAY:?}\n");
    println!("| runtime, subscriber | calls in flight | RSS before | RSS, all in flight | per call in flight | connections opened |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (setup, n) in setups
        .iter()
        .copied()
        .flat_map(|setup| IN_FLIGHT.into_iter().map(move |n| (setup, n)))
    {
        let line = run(&holding.url(), n, "inflight", setup);
        let f = |name: &str| field(&line, name);
        let (base, in_flight) = (f("rss_base"), f("rss_in_flight"));
        println!(
            "| {} | {n} | {} | {} | {} B | {} |",
            setup.label(),
            mib(base),
            mib(in_flight),
            in_flight.saturating_sub(base) / n as u64,
            f("connections"),
        );
    }
    println!();
}

/// How a client process runs its calls: the runtime, and whether a tracing
/// subscriber records the crate's spans.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Setup {
    /// A current-thread runtime (else one worker thread of a multi-thread one).
    current_thread: bool,
    /// A `fmt` subscriber at INFO writing to nowhere: every call's and
    /// attempt's span is created and its fields formatted.
    info: bool,
}

impl Setup {
    /// What the targets are for.
    const DEFAULT: Setup = Setup {
        current_thread: true,
        info: false,
    };
    const ALL: [Setup; 4] = [
        Setup::DEFAULT,
        Setup {
            current_thread: true,
            info: true,
        },
        Setup {
            current_thread: false,
            info: false,
        },
        Setup {
            current_thread: false,
            info: true,
        },
    ];

    fn name(self) -> &'static str {
        match (self.current_thread, self.info) {
            (true, false) => "current",
            (true, true) => "current-info",
            (false, false) => "multi",
            (false, true) => "multi-info",
        }
    }

    fn label(self) -> &'static str {
        match (self.current_thread, self.info) {
            (true, false) => "current-thread, none",
            (true, true) => "current-thread, INFO",
            (false, false) => "multi-thread (1 worker), none",
            (false, true) => "multi-thread (1 worker), INFO",
        }
    }

    fn parse(name: &str) -> Setup {
        Setup::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("unknown setup {name:?}"))
    }

    /// The runtime, and the subscriber installed for the process.
    fn start(self) -> Runtime {
        if self.info {
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_writer(std::io::sink)
                .init();
        }
        if self.current_thread {
            current_thread()
        } else {
            runtime("bench-client", 1)
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Calls polled at least once, finished, and failed, in the current wave.
static POLLED: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// One queued call, as a task owns it: a clone of the client and the call.
async fn call(client: QualityClient, req: QualityRequest) {
    POLLED.fetch_add(1, Ordering::Relaxed);
    if client.check(req).await.is_err() {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    DONE.fetch_add(1, Ordering::Relaxed);
}

/// Spawns `n` calls and waits until each has been polled once, so all are
/// in flight or queued for a slot; returns `VmRSS` at that moment.
fn queue(rt: &Runtime, client: &QualityClient, n: usize) -> u64 {
    POLLED.store(0, Ordering::SeqCst);
    DONE.store(0, Ordering::SeqCst);
    rt.block_on(async {
        for i in 0..n {
            tokio::spawn(call(client.clone(), request(i as u64)));
        }
        while POLLED.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    rss().0
}

/// Waits until the `n` calls of the wave have finished, sampling `VmRSS`
/// every 50 ms; returns the largest sample.
fn drain(rt: &Runtime, n: usize) -> u64 {
    rt.block_on(async {
        let mut max = 0;
        loop {
            max = max.max(rss().0);
            if DONE.load(Ordering::SeqCst) >= n {
                return max;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// One client process: queue `n` calls (or hold them in flight), measure,
/// and, for `drain`, drain two waves of them.
fn client(url: &str, n: usize, mode: &str, setup: Setup) {
    let rt = setup.start();
    let limit = if mode == "inflight" { n } else { LIMIT };
    let client = QualityClient::builder(url)
        .concurrency_limit(Some(limit))
        .build()
        .expect("a valid client");
    let future_size = std::mem::size_of_val(&call(client.clone(), request(0)));
    rt.block_on(async {
        // Open the pool's connections: 16 calls at once.
        let warm: Vec<_> = (0..LIMIT as u64)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.check(request(i)).await })
            })
            .collect();
        for call in warm {
            call.await.expect("warm-up task").expect("warm-up call");
        }
    });
    let (rss_base, _) = rss();
    if mode == "inflight" {
        let (hits, before) = stats(url);
        // The runtime runs the calls while this waits for the server to
        // have them all; every `stats` call opens a connection of its own.
        let asked = rt.block_on(async {
            for i in 0..n {
                tokio::spawn(call(client.clone(), request(i as u64)));
            }
            let started = Instant::now();
            let mut asked = 1;
            while stats(url).0 < hits + n as u64 {
                asked += 1;
                assert!(
                    started.elapsed() < IN_FLIGHT_DELAY,
                    "calls answered before all were in flight"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            asked
        });
        let mut asked = asked;
        let (rss_in_flight, _) = rss();
        assert_eq!(DONE.load(Ordering::SeqCst), 0, "a call finished early");
        let (_, after) = stats(url);
        asked += 1;
        println!(
            "rss_base={rss_base} rss_in_flight={rss_in_flight} connections={}",
            after.saturating_sub(before + asked)
        );
        std::process::exit(0);
    }
    let rss_queued = queue(&rt, &client, n);
    let (_, hwm) = rss();
    let request_heap = request_heap(0);
    let mut line = format!(
        "rss_base={rss_base} rss_queued={rss_queued} hwm={hwm} future_size={future_size} request_heap={request_heap}"
    );
    if mode == "drain" {
        let started = Instant::now();
        let rss_max1 = drain(&rt, n);
        let drained_in = started.elapsed().as_millis();
        let failed1 = FAILED.swap(0, Ordering::SeqCst);
        let rss_queued2 = queue(&rt, &client, n);
        let rss_max2 = drain(&rt, n);
        let failed2 = FAILED.load(Ordering::SeqCst);
        let (rss_end, hwm_end) = rss();
        line += &format!(
            " rss_max1={rss_max1} drained_ms={drained_in} failed1={failed1} rss_queued2={rss_queued2} rss_max2={rss_max2} failed2={failed2} rss_end={rss_end} hwm_end={hwm_end}"
        );
    }
    println!("{line}");
    // Calls still queued are abandoned with the process.
    std::process::exit(0);
}
