//! Instructions per call of each client, counted by callgrind in the client
//! process alone: deterministic, so ratios of a few percent can be told
//! apart on a busy machine where requests per second swing by ±15 %.
//!
//! The clients are the `throughput` bench's (`support/clients.rs`): (a) raw
//! hyper-util + `serde_json`, (b) tower's own stack over (a) (global
//! concurrency limit, `Retry`, `Timeout`), (c) the bare `QualityCheck`,
//! (d) the default `QualityClient` (limit raised to the concurrency), (e)
//! reqwest. The server (bare hyper) runs in a process of its own, pinned to
//! CPU 1 when `taskset` works, not under valgrind. Each client runs twice
//! under `valgrind --tool=callgrind` (pinned to CPU 0), on one
//! current-thread runtime with no tracing subscriber: a warm-up that opens
//! the pool's connections, then `N₁` and then `N₂` calls from
//! `concurrency` tasks. Instructions per call are
//! `(Ir(N₂) − Ir(N₁)) / (N₂ − N₁)`: start-up, warm-up and shutdown cancel
//! out. What is left does not depend on the machine's load, but still on
//! how the server's answers happen to batch into reads and wake-ups:
//! repeated runs agree to about 1 % (raw at 16 in flight: 39,024 to 39,414
//! in four runs).
//!
//! ```sh
//! cargo bench --bench cost                        # every client at 16 and 64 in flight, 1000 and 3000 calls; about 4 minutes
//! cargo bench --bench cost -- --clients raw,check --concurrency 16
//! cargo bench --bench cost -- --clients raw,check --concurrency 16 --top 25   # and where the instructions go
//! ```
//!
//! Options: `--clients raw,stack,check,client,reqwest` (raw is always run:
//! it is the reference), `--concurrency 16,64`, `--calls 1000,3000`,
//! `--out DIR` for the callgrind files (default `target/cost`, kept for
//! `callgrind_annotate`), `--top N` to print, per client, the N functions
//! whose exclusive instructions per call differ most from raw's (differenced
//! between the two run lengths, as the totals are), `--inclusive` to rank
//! by inclusive instructions instead, `--base KIND` to difference the
//! profile against another client than raw (`--base check` shows what the
//! layers of `client` add), `--reuse` to read the callgrind files an earlier
//! run left in `--out` instead of running the clients again. Needs `valgrind` and, for `--top`,
//! `callgrind_annotate`. CI only compiles it.

#[path = "support/clients.rs"]
mod clients;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clients::{client_process, server_process, Args, Kind, Pinning, ServerProcess};
use support::Budget;

/// One client at one concurrency, run at both lengths.
struct Measured {
    kind: Kind,
    concurrency: usize,
    /// The callgrind files of the two runs, shorter first.
    files: [PathBuf; 2],
    /// Instructions per call, differenced.
    per_call: f64,
}

struct Options {
    kinds: Vec<Kind>,
    levels: Vec<usize>,
    calls: [u64; 2],
    out: PathBuf,
    top: usize,
    inclusive: bool,
    /// The client the profile is differenced against.
    base: Kind,
    /// Reuse the callgrind files of an earlier run in `out`.
    reuse: bool,
}

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours.
    let cli = Args::from_env();
    let flag = |name: &str| cli.flag(name);
    let value = |name: &str| cli.value(name);
    let args = &cli.0;
    let numbers = |v: &str| -> Vec<u64> {
        v.split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{n}: expected a number"))
            })
            .collect()
    };

    if flag("--server") {
        server_process();
        return;
    }
    if let Some(kind) = value("--client") {
        let calls = value("--calls").map_or(1000, |v| numbers(v)[0]);
        let concurrency = value("--concurrency").map_or(1, |v| numbers(v)[0]) as usize;
        client_process(
            Kind::parse(kind),
            value("--url"),
            concurrency,
            Budget::Calls(calls),
        );
        return;
    }

    let mut kinds = vec![Kind::Raw];
    let chosen = value("--clients").map_or_else(
        || Kind::ALL.to_vec(),
        |v| v.split(',').map(|k| Kind::parse(k.trim())).collect(),
    );
    kinds.extend(chosen.into_iter().filter(|k| *k != Kind::Raw));
    let calls = value("--calls").map_or(vec![1000, 3000], numbers);
    assert!(
        calls.len() == 2 && calls[0] < calls[1],
        "--calls N1,N2 with N1 < N2"
    );
    let opts = Options {
        kinds,
        levels: value("--concurrency")
            .map_or(vec![16, 64], numbers)
            .into_iter()
            .map(|c| c as usize)
            .collect(),
        calls: [calls[0], calls[1]],
        out: PathBuf::from(value("--out").unwrap_or("target/cost")),
        top: value("--top").map_or(0, |v| numbers(v)[0] as usize),
        inclusive: flag("--inclusive"),
        base: value("--base").map_or(Kind::Raw, Kind::parse),
        reuse: flag("--reuse"),
    };
    let command = if args.is_empty() {
        "cargo bench --bench cost".to_owned()
    } else {
        format!("cargo bench --bench cost -- {}", args.join(" "))
    };
    run(&opts, &command);
}

fn run(opts: &Options, command: &str) {
    std::fs::create_dir_all(&opts.out).expect("creating the output directory");
    let pinning = Pinning::detect();
    let server = ServerProcess::start(pinning);
    let mut measured = Vec::new();
    for &concurrency in &opts.levels {
        for &kind in &opts.kinds {
            let files = opts.calls.map(|n| {
                let file = opts
                    .out
                    .join(format!("{}-c{concurrency}-{n}.out", kind.name()));
                if !(opts.reuse && file.exists()) {
                    callgrind(pinning, &file, kind, &server.url, concurrency, n);
                }
                file
            });
            let ir = files.clone().map(|f| total(&f));
            let per_call = (ir[1] - ir[0]) as f64 / (opts.calls[1] - opts.calls[0]) as f64;
            eprintln!(
                "c={concurrency:>3} {:<32} Ir {} / {}: {per_call:.0} per call",
                kind.label(),
                ir[0],
                ir[1]
            );
            measured.push(Measured {
                kind,
                concurrency,
                files,
                per_call,
            });
        }
    }

    println!(
        "## Instructions per call (callgrind, client process, {} − {} calls)\n",
        opts.calls[1], opts.calls[0]
    );
    println!("Command: `{command}`  ");
    println!("Pinning: {}.\n", pinning.describe());
    print!("| client |");
    for c in &opts.levels {
        print!(" c={c} | × (a) |");
    }
    println!();
    print!("|---|");
    for _ in &opts.levels {
        print!("---:|---:|");
    }
    println!();
    let find = |kind: Kind, c: usize| {
        measured
            .iter()
            .find(|m| m.kind == kind && m.concurrency == c)
            .expect("measured")
    };
    for &kind in &opts.kinds {
        print!("| {} |", kind.label());
        for &c in &opts.levels {
            let m = find(kind, c);
            let raw = find(Kind::Raw, c);
            print!(
                " {} | {:.3} |",
                thousands(m.per_call),
                m.per_call / raw.per_call
            );
        }
        println!();
    }
    println!();

    if opts.top > 0 {
        let what = if opts.inclusive {
            "inclusive"
        } else {
            "exclusive"
        };
        for &c in &opts.levels {
            let base = find(opts.base, c);
            let raw = profile(base, opts);
            for &kind in opts.kinds.iter().filter(|k| **k != opts.base) {
                let m = find(kind, c);
                let own = profile(m, opts);
                println!(
                    "### {} − {}, c={c}: {what} instructions per call, by function ({} in all)\n",
                    kind.label(),
                    opts.base.name(),
                    thousands(m.per_call - base.per_call)
                );
                println!(
                    "| Δ per call | {} | {} | function |",
                    kind.name(),
                    opts.base.name()
                );
                println!("|---:|---:|---:|---|");
                let mut names: Vec<&String> = own.keys().chain(raw.keys()).collect();
                names.sort();
                names.dedup();
                let mut rows: Vec<(f64, f64, f64, &String)> = names
                    .into_iter()
                    .map(|n| {
                        let a = own.get(n).copied().unwrap_or(0.0);
                        let r = raw.get(n).copied().unwrap_or(0.0);
                        (a - r, a, r, n)
                    })
                    .collect();
                rows.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
                for (d, a, r, n) in rows.into_iter().take(opts.top) {
                    println!("| {d:+.0} | {a:.0} | {r:.0} | `{n}` |");
                }
                println!();
            }
        }
    }
}

/// Runs one client process under callgrind, its output to `file`.
fn callgrind(pinning: Pinning, file: &Path, kind: Kind, url: &str, concurrency: usize, calls: u64) {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut command = if pinning.taskset {
        let mut c = Command::new("taskset");
        c.args(["-c", Pinning::CLIENT_CPU, "valgrind"]);
        c
    } else {
        Command::new("valgrind")
    };
    let status = command
        .args(["--tool=callgrind", "--dump-instr=no", "--quiet"])
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(exe)
        .args(["--client", kind.name(), "--url", url])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--calls", &calls.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("starting valgrind (is it installed?)");
    let line = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && line.contains(" failed=0 "),
        "{} at {concurrency}: the client process failed: {line}",
        kind.label()
    );
}

/// The total instruction count of a callgrind output file.
fn total(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("reading a callgrind file");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no summary line", file.display()))
}

/// Per function, the instructions per call: each run's
/// `callgrind_annotate` figures, differenced like the totals.
fn profile(m: &Measured, opts: &Options) -> HashMap<String, f64> {
    let [short, long] = [&m.files[0], &m.files[1]].map(|f| annotate(f, opts.inclusive));
    let calls = (opts.calls[1] - opts.calls[0]) as f64;
    let mut per_call: HashMap<String, f64> = HashMap::new();
    for (name, ir) in long {
        let before = short.get(&name).copied().unwrap_or(0);
        per_call.insert(name, (ir as f64 - before as f64) / calls);
    }
    for (name, ir) in short {
        per_call.entry(name).or_insert(-(ir as f64) / calls);
    }
    per_call
}

/// `callgrind_annotate`'s per-function counts of one file.
fn annotate(file: &Path, inclusive: bool) -> HashMap<String, u64> {
    let out = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .args(["--threshold=100", "--auto=no"])
        .arg(file)
        .output()
        .expect("running callgrind_annotate");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((number, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ir) = number.replace(',', "").parse::<u64>() else {
            continue;
        };
        // "(12.34%)" after the count, then "file:function [object]".
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or(r, |(_, name)| name),
            None => rest,
        };
        let name = rest.trim();
        let name = name.rsplit_once(" [").map_or(name, |(n, _)| n);
        if name.is_empty() || name == "PROGRAM TOTALS" {
            continue;
        }
        *counts.entry(name.to_owned()).or_insert(0) += ir;
    }
    counts
}

/// `38512.4` as `38,512`.
fn thousands(n: f64) -> String {
    let sign = if n < 0.0 { "-" } else { "" };
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}
