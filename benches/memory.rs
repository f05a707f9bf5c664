//! Memory of calls queued behind the client's concurrency limit: peak RSS
//! while thousands of `QualityClient::check` calls wait for one of 16 slots
//! in front of a slow coordinator, and the bytes each queued call costs.
//!
//! The bench process runs the coordinator (the minimal server of
//! `support`, answering each check after a delay, 20 ms by default) and
//! starts itself again once per measurement as a client process, so the
//! figures read from that process's `/proc/self/status` (`VmRSS`, `VmHWM`)
//! are the client's alone. Each client process:
//!
//! 1. builds a `QualityClient` with every default but a concurrency limit
//!    of 16, and makes 16 calls at once, so the pool holds its connections;
//! 2. reads `VmRSS` (the baseline);
//! 3. spawns N tasks, each making one `check` call, and waits until every
//!    one has been polled, i.e. 16 calls are in flight and N − 16 wait for a
//!    slot; reads `VmRSS` again: (queued − baseline) / N is what one queued
//!    call costs, to compare with the size of its future and its request;
//! 4. for N = 10,000 only, lets them all finish while sampling `VmRSS`
//!    every 50 ms, then does it all again: a second wave that peaks where
//!    the first did shows that nothing accumulates per call.
//!
//! Run it with `cargo bench --bench memory` (about 30 s with the default
//! delay); `QG_MEM_DELAY_MS` sets the server's delay.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quality_gate::{QualityClient, QualityRequest};
use support::{env_or, request, rss, runtime, Behaviour, Server};
use tokio::runtime::Runtime;

/// The client's concurrency limit: the slots the queued calls wait for.
const LIMIT: usize = 16;
/// Calls queued per measurement; the one marked `true` is also drained, twice.
const QUEUED: [(usize, bool); 3] = [(1_000, false), (10_000, true), (50_000, false)];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--client") {
        let url = &args[1];
        let n: usize = args[2].parse().expect("a number of calls");
        let drain = args[3] == "drain";
        client(url, n, drain);
        return;
    }

    let delay = Duration::from_millis(env_or("QG_MEM_DELAY_MS", 20));
    let server_rt = runtime("bench-server", 1);
    let server = Server::start(&server_rt, Behaviour::Slow(delay));
    println!(
        "## Memory: calls queued behind a concurrency limit of {LIMIT}, server delay {delay:?}\n"
    );
    println!("| queued calls | RSS before | RSS, all queued | per queued call | task future + request heap | VmHWM then | drained: peak RSS | 2nd wave: RSS queued / peak | failed calls |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, drain) in QUEUED {
        let exe = std::env::current_exe().expect("the bench's own path");
        let out = Command::new(exe)
            .args(["--client", &server.url(), &n.to_string()])
            .arg(if drain { "drain" } else { "queue-only" })
            .output()
            .expect("starting the client process");
        assert!(
            out.status.success(),
            "client process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        eprintln!("N={n}: {}", line.trim());
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (base, queued) = (field("rss_base"), field("rss_queued"));
        let (drained, second, failed) = if drain {
            (
                mib(field("rss_max1")),
                format!("{} / {}", mib(field("rss_queued2")), mib(field("rss_max2"))),
                (field("failed1") + field("failed2")).to_string(),
            )
        } else {
            ("–".to_owned(), "–".to_owned(), "–".to_owned())
        };
        println!(
            "| {n} | {} | {} | {} B | {} B + {} B | {} | {drained} | {second} | {failed} |",
            mib(base),
            mib(queued),
            queued.saturating_sub(base) / n as u64,
            field("future_size"),
            field("request_heap"),
            mib(field("hwm")),
        );
    }
    println!();
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

/// The heap a request owns: its strings and its list of files.
fn heap_of(req: &QualityRequest) -> usize {
    req.task_id.capacity()
        + req.agent_id.capacity()
        + req.diff_summary.capacity()
        + req.files.capacity() * std::mem::size_of::<String>()
        + req.files.iter().map(String::capacity).sum::<usize>()
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

/// One client process: queue `n` calls, measure, and optionally drain two
/// waves of them.
fn client(url: &str, n: usize, drain_twice: bool) {
    let rt = runtime("bench-client", 1);
    let client = QualityClient::builder(url)
        .concurrency_limit(Some(LIMIT))
        .build()
        .expect("a valid client");
    let future_size = std::mem::size_of_val(&call(client.clone(), request(0)));
    let request_heap = heap_of(&request(0));
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
    let rss_queued = queue(&rt, &client, n);
    let (_, hwm) = rss();
    let mut line = format!(
        "rss_base={rss_base} rss_queued={rss_queued} hwm={hwm} future_size={future_size} request_heap={request_heap}"
    );
    if drain_twice {
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
