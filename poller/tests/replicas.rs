//! Poller replicas side by side on one Consul: the same data gives the same version on each,
//! a filter arriving with a sibling's local-event version gets this replica's view at once,
//! and the probes say whether this replica can serve, not whether Vault has a leader.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use vault_redirect_doubles::ConsulDouble;

fn version(doc: &serde_json::Value) -> u64 {
    doc["version"].as_u64().unwrap()
}

#[tokio::test]
async fn two_replicas_give_the_same_consul_data_the_same_version() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let a = start(&consul.url(), &[]).await;
    let b = start(&consul.url(), &[]).await;
    for node in ["vault-b", "vault-c"] {
        consul.set_active(node);
        let want = consul.index() << 16;
        let da = active_until(&a, Duration::from_secs(10), |d| version(d) >= want).await;
        let db = active_until(&b, Duration::from_secs(10), |d| version(d) >= want).await;
        assert_eq!(version(&da), want);
        assert_eq!(da["version"], db["version"]);
        assert_eq!(da["active"], db["active"]);
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_holding_a_siblings_local_event_is_answered_at_once_with_this_replicas_view() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let v = version(&doc);
    // A sibling that lost Consul published "no active node" at v + 1 (same Consul index).
    let started = Instant::now();
    let (status, got) = get_json(&p.url(&format!("/v1/active?index={}&wait=30s", v + 1))).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered only after {:?}",
        started.elapsed()
    );
    assert_eq!(version(&got), v + 2, "{got}");
    assert_eq!(got["active"], doc["active"]);
    assert_eq!(got["consul_index"], doc["consul_index"]);
    // The bump is this replica's version from now on, for every client.
    let (_, now) = get_json(&p.url("/v1/active")).await;
    assert_eq!(version(&now), v + 2);
    // A real change still moves to the new index's version.
    consul.set_active("vault-b");
    let want = consul.index() << 16;
    let changed = active_until(&p, Duration::from_secs(10), |d| version(d) >= want).await;
    assert_eq!(version(&changed), want);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_from_a_sibling_that_saw_newer_consul_data_waits_for_this_replicas_own_answer()
{
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let index = doc["consul_index"].as_u64().unwrap();
    // The sibling's version comes from index + 1, which this replica has not seen: it must
    // not claim its older data is newer.
    let url = p.url(&format!("/v1/active?index={}&wait=30s", (index + 1) << 16));
    let waiter = tokio::spawn(async move { get_json(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "answered with data older than the filter's");
    // Consul moves on by two changes: index + 2 is newer than the filter's version.
    consul.set_active("vault-b");
    consul.set_active("vault-c");
    let (_, got) = tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap();
    assert!(version(&got) > (index + 1) << 16, "{got}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_consul_not_vaults_election() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--max-stale", "1s", "--backoff-max", "500ms"]).await;
    active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let status = |path: &'static str| {
        let url = p.url(path);
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/readyz").await, 200);
    assert_eq!(status("/livez").await, 200);
    // An election: no node tagged active. /health says so; the replica stays ready.
    consul.update(|nodes| {
        for n in nodes.iter_mut() {
            n.role = vault_redirect_doubles::Role::Standby;
        }
    });
    active_until(&p, Duration::from_secs(10), |d| active_node(d).is_none()).await;
    assert_eq!(status("/health").await, 503);
    assert_eq!(status("/readyz").await, 200);
    // Consul gone beyond --max-stale: not ready, still live.
    consul.go_down().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status("/readyz").await != 503 {
        assert!(Instant::now() < deadline, "/readyz still 200 with Consul down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status("/livez").await, 200);
    consul.come_back().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status("/readyz").await != 200 {
        assert!(Instant::now() < deadline, "/readyz not back to 200 after Consul came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_consul_index_reset_replicas_still_agree_and_versions_still_grow() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let a = start(&consul.url(), &["--consul-wait", "1s"]).await;
    let b = start(&consul.url(), &["--consul-wait", "1s"]).await;
    let last = consul.index();
    let da = active_until(&a, Duration::from_secs(10), |d| version(d) == last << 16).await;
    active_until(&b, Duration::from_secs(10), |d| version(d) == last << 16).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A snapshot restore: the index drops to 3; then two quick failovers (indexes 4 and 5).
    consul.reset_index(3);
    consul.set_active("vault-b");
    consul.set_active("vault-c");
    let want = (last + 1 + consul.index()) << 16;
    let va = active_until(&a, Duration::from_secs(15), |d| active_node(d) == Some("vault-c")).await;
    let vb = active_until(&b, Duration::from_secs(15), |d| active_node(d) == Some("vault-c")).await;
    // Versions follow Consul's order across the reset, the same on both replicas, whichever
    // intermediate states each saw: the offset is the last index before the reset + 1.
    assert_eq!(version(&va), want, "{va}");
    assert_eq!(version(&vb), want, "{vb}");
    assert!(version(&va) > version(&da));
    assert_eq!(va["consul_index"], consul.index());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
