//! Balances checks over three coordinator replicas, kills one mid-run, and
//! shows that every call still gets its verdict.
//!
//! ```text
//! cargo run --example balanced
//! ```

use std::time::Duration;

use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{QualityClient, QualityRequest};

#[tokio::main]
async fn main() -> Result<(), tower_quality_gate::Error> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let replica = TestCoordinator::start().await;
        replica.always(Reply::approve().delay(Duration::from_millis(2)));
        replicas.push(replica);
    }
    let urls: Vec<String> = replicas.iter().map(TestCoordinator::url).collect();
    println!("replicas: {urls:?}");

    let client = QualityClient::builder(urls[0].clone())
        .base_urls(urls)
        .build()?;

    let approved = run(&client, 0..200).await;
    let hits: Vec<usize> = replicas.iter().map(TestCoordinator::hits).collect();
    println!("first 200 calls: {approved} approved; hits per replica {hits:?}");
    assert_eq!(approved, 200);

    let killed = replicas.remove(1);
    println!("killing replica {}", killed.url());
    drop(killed);

    let approved = run(&client, 200..400).await;
    let hits: Vec<usize> = replicas.iter().map(TestCoordinator::hits).collect();
    println!("next 200 calls: {approved} approved; hits on the two live replicas {hits:?}");
    assert_eq!(approved, 200, "a dead replica must not cost verdicts");
    Ok(())
}

/// Sends the calls 16 at a time and counts the approvals.
async fn run(client: &QualityClient, calls: std::ops::Range<usize>) -> usize {
    let mut approved = 0;
    let ids: Vec<usize> = calls.collect();
    for chunk in ids.chunks(16) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|n| {
                let client = client.clone();
                let req = QualityRequest::new(format!("task-{n}"), "agent-1");
                tokio::spawn(async move { client.check(req).await })
            })
            .collect();
        for handle in handles {
            match handle.await {
                Ok(Ok(verdict)) if verdict.approved => approved += 1,
                Ok(Ok(verdict)) => println!("rejected: {verdict:?}"),
                Ok(Err(e)) => println!("error: {e}"),
                Err(e) => println!("task failed: {e}"),
            }
        }
    }
    approved
}
