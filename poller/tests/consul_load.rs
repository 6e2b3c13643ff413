//! Consul's load does not grow with the fleet: one poller keeps one blocking query on Consul
//! however many filters long-poll it. The same failovers are run with 1 and with 200
//! concurrent waiters, and the health-service requests the Consul double received are counted.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vault_redirect_doubles::ConsulDouble;

/// Active-node changes per run.
const CHANGES: u64 = 6;

/// Runs `CHANGES` failovers with `waiters` filters long-polling the poller (each re-polls with
/// the version it got, as a filter does), and returns the Consul requests the run caused.
async fn consul_requests_with(waiters: usize) -> u64 {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--consul-wait", "60s"]).await;
    let doc = active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let first = doc["version"].as_u64().unwrap();
    // Let the poller park its first blocking query, then count from here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = consul.requests();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(waiters)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..waiters).map(|_| AtomicU64::new(first)).collect());
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let (client, seen, stop, base) =
            (client.clone(), seen.clone(), stop.clone(), p.url("/v1/active"));
        tasks.push(tokio::spawn(async move {
            // Bounded: one request per change plus a few, never more than 100.
            for _ in 0..100 {
                let index = seen[i].load(Ordering::SeqCst);
                let req = client.get(format!("{base}?index={index}&wait=30s")).send();
                let doc: serde_json::Value = tokio::select! {
                    r = req => r.unwrap().json().await.unwrap(),
                    _ = stop.notified() => return,
                };
                seen[i].store(doc["version"].as_u64().unwrap(), Ordering::SeqCst);
            }
        }));
    }

    let nodes = ["vault-b", "vault-c", "vault-a"];
    for k in 0..CHANGES {
        let node = nodes[(k % 3) as usize];
        consul.set_active(node);
        // Every waiter must see this change before the next one, so changes never coalesce.
        let want = consul.index() << 16;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.iter().any(|v| v.load(Ordering::SeqCst) < want) {
            assert!(
                Instant::now() < deadline,
                "{waiters} waiters: not all saw the change to {node} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Let anything the last change set off reach Consul before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = consul.requests() - before;
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }
    p.stop().await.unwrap();
    used
}

#[tokio::test]
async fn two_hundred_waiters_cost_consul_exactly_what_one_waiter_costs() {
    let one = consul_requests_with(1).await;
    let many = consul_requests_with(200).await;
    // Each change answers the one parked blocking query, and the poller parks the next one:
    // one request per change, whatever the number of waiters. No slack is needed.
    assert_eq!(one, CHANGES, "one waiter: {one} Consul requests for {CHANGES} changes");
    assert_eq!(many, one, "200 waiters: {many} Consul requests, 1 waiter: {one}");
}
