//! Finds coordinator replicas through a resolver whose answer changes while
//! checks flow: replica 3 joins, replica 1 leaves, and every call still gets
//! its verdict. A real deployment passes `SystemResolver` (DNS) instead of
//! the closure below.
//!
//! ```text
//! cargo run --example dynamic_replicas
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_quality_gate::limit::AdaptiveLimitConfig;
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three replicas, on 127.0.0.1, .2 and .3, as three hosts would be.
    let mut replicas = Vec::new();
    for last in 1..=3 {
        let replica = TestCoordinator::start_on(SocketAddr::from(([127, 0, 0, last], 0))).await?;
        replica.always(Reply::approve().delay(Duration::from_millis(5)));
        replicas.push(replica);
    }

    // What "coordinator.internal" resolves to: replicas 1 and 2 for now.
    let dns = Arc::new(Mutex::new(vec![replicas[0].addr(), replicas[1].addr()]));
    let resolver = {
        let dns = dns.clone();
        move |_name: &str| {
            let addrs = dns.lock().map(|a| a.clone()).unwrap_or_default();
            async move { Ok(addrs) }
        }
    };
    // The host name stays in the URL (Host header, TLS); the port comes
    // from each resolved address.
    let client = QualityClient::builder("http://coordinator.internal")
        .discover_replicas(resolver, Duration::from_millis(100))
        .adaptive_concurrency(AdaptiveLimitConfig::default())
        .build()?;

    let stop = Arc::new(AtomicBool::new(false));
    let approved = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..16)
        .map(|i| {
            let (client, stop, approved) = (client.clone(), stop.clone(), approved.clone());
            tokio::spawn(async move {
                let mut sent = 0;
                while !stop.load(Ordering::SeqCst) {
                    sent += 1;
                    let req = QualityRequest::new(format!("task-{i}-{sent}"), "agent-1");
                    match client.check(req).await {
                        Ok(verdict) if verdict.approved => {
                            approved.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(verdict) => println!("rejected: {verdict:?}"),
                        Err(e) => println!("error: {e}"),
                    }
                }
                sent
            })
        })
        .collect();

    let hits = |replicas: &[TestCoordinator]| -> Vec<usize> {
        replicas.iter().map(TestCoordinator::hits).collect()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("replicas 1 and 2: hits {:?}", hits(&replicas));

    println!("replica 3 joins, replica 1 leaves");
    *dns.lock().map_err(|_| "poisoned")? = vec![replicas[1].addr(), replicas[2].addr()];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left_at = replicas[0].hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("replicas 2 and 3: hits {:?}", hits(&replicas));

    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for caller in callers {
        sent += caller.await?;
    }
    let approved = approved.load(Ordering::SeqCst);
    println!("{sent} calls, {approved} approved");
    assert_eq!(approved, sent, "no call may be lost");
    assert_eq!(
        replicas[0].hits(),
        left_at,
        "the removed replica gets no traffic"
    );
    assert!(replicas[2].hits() > 0, "the new replica gets traffic");
    Ok(())
}
