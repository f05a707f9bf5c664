//! What the reliability suites share: requests, a deterministic client, a
//! seeded PRNG, outcome tallies and error-chain probes.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_quality_gate::retry::{Jitter, JitteredBackoff};
use tower_quality_gate::testing::{Recorded, TestCoordinator};
use tower_quality_gate::{ClientBuilder, Error, QualityClient, QualityRequest, QualityResponse};

/// A request whose task id names the call.
pub fn request(n: usize) -> QualityRequest {
    QualityRequest::new(format!("task-{n}"), "agent-1").files(["src/lib.rs"])
}

/// The default stack with a deterministic backoff: waits of exactly 100 ms,
/// then 200 ms, so time bounds are exact.
pub fn builder(url: impl Into<String>) -> ClientBuilder {
    QualityClient::builder(url).backoff(JitteredBackoff::default().jitter(Jitter::None))
}

/// The default client with the deterministic backoff.
pub fn client(coordinator: &TestCoordinator) -> QualityClient {
    builder(coordinator.url()).build().unwrap()
}

/// Starts one call per number in `calls`, each on its own task with its own
/// clone of `client`; the handles come back in order.
pub fn spawn_checks(
    client: &QualityClient,
    calls: impl IntoIterator<Item = usize>,
) -> Vec<JoinHandle<Result<QualityResponse, Error>>> {
    calls
        .into_iter()
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.check(request(n)).await })
        })
        .collect()
}

/// The time between consecutive requests the coordinator received.
pub fn gaps(coordinator: &TestCoordinator) -> Vec<Duration> {
    let at: Vec<Instant> = coordinator.requests().iter().map(|r| r.at).collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The task id a recorded check was for.
pub fn task_id(r: &Recorded) -> String {
    r.request
        .as_ref()
        .map(|q| q.task_id.clone())
        .unwrap_or_default()
}

/// How many attempts of each call (by task id) reached the coordinator.
pub fn hits_per_task(coordinator: &TestCoordinator) -> HashMap<String, usize> {
    let mut hits = HashMap::new();
    for r in coordinator.requests() {
        *hits.entry(task_id(&r)).or_default() += 1;
    }
    hits
}

/// SplitMix64: a seeded, dependency-free PRNG, so a "random" run is the
/// same run every time.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw from `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Outcomes of many calls: verdicts, and errors by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub approved: usize,
    pub rejected: usize,
    pub errors: BTreeMap<&'static str, usize>,
}

impl Tally {
    pub fn add(&mut self, outcome: &Result<QualityResponse, Error>) {
        match outcome {
            Ok(v) if v.approved => self.approved += 1,
            Ok(_) => self.rejected += 1,
            Err(e) => *self.errors.entry(e.kind().as_str()).or_default() += 1,
        }
    }

    pub fn calls(&self) -> usize {
        self.approved + self.rejected + self.errors.values().sum::<usize>()
    }

    pub fn errors(&self, kind: &str) -> usize {
        self.errors.get(kind).copied().unwrap_or(0)
    }
}

/// Every error in the source chain of `err`, itself included.
fn chain(err: &Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    let first: &(dyn StdError + 'static) = err;
    std::iter::successors(Some(first), |&e| e.source())
}

/// Whether an I/O error of this kind caused `err`.
pub fn caused_by_io(err: &Error, kind: io::ErrorKind) -> bool {
    chain(err).any(|e| e.downcast_ref::<io::Error>().map(io::Error::kind) == Some(kind))
}

/// Whether the connection was reset (a RST), rather than closed.
pub fn caused_by_reset(err: &Error) -> bool {
    caused_by_io(err, io::ErrorKind::ConnectionReset)
}

/// Whether hyper saw the connection close before a response head arrived.
pub fn closed_before_head(err: &Error) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
    })
}

/// Whether the error came from sending the request and awaiting its head
/// (hyper-util's client future), as opposed to reading the body after it.
pub fn failed_before_head(err: &Error) -> bool {
    chain(err).any(|e| e.is::<hyper_util::client::legacy::Error>())
}

/// Resident memory of this process, in KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
