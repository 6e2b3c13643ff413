//! Which node the poller serves, end to end through the Consul double: zero actives, two
//! actives (deterministic, reported in health and metrics), a sealed active, a custom tag.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};

async fn metrics(p: &Running) -> String {
    reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn zero_actives_mean_no_active_node_with_a_reason() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    consul.update(|nodes| nodes[0].role = Role::Standby);
    let doc = active_until(&p, Duration::from_secs(5), |d| d["active"].is_null()).await;
    assert!(doc["reason"].as_str().unwrap().contains("tagged \"active\""), "{doc}");
    let (status, h) = get_json(&p.url("/health")).await;
    assert_eq!(status, 503);
    assert_eq!(h["healthy"], false);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn two_actives_pick_the_newest_registration_and_are_reported() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d) == Some("vault-a")).await;
    // vault-c takes over while vault-a's registration still says active.
    consul.update(|nodes| nodes[2].role = Role::Active);
    let doc = active_until(&p, Duration::from_secs(5), |d| d["active_candidates"] == 2).await;
    assert_eq!(doc["active"]["node"], "vault-c");
    let (status, h) = get_json(&p.url("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(h["active_candidates"], serde_json::json!(["vault-c", "vault-a"]));
    assert!(h["problems"].to_string().contains("2 nodes qualify as active"), "{h}");
    assert!(metrics(&p).await.contains("vault_redirect_active_candidates 2"));

    // A second poller on the same Consul makes the same choice and the same version.
    let q = start(&consul.url(), &[]).await;
    let other = active_until(&q, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(other["active"], doc["active"]);
    q.stop().await.unwrap();

    // Once vault-a's tags catch up, one candidate is left and the warning goes away.
    consul.update(|nodes| nodes[0].role = Role::Standby);
    active_until(&p, Duration::from_secs(5), |d| d["active_candidates"] == 1).await;
    let (_, h) = get_json(&p.url("/health")).await;
    assert_eq!(h["problems"], serde_json::json!([]));
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_sealed_active_is_never_served() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d) == Some("vault-a")).await;
    consul.update(|nodes| nodes[0].sealed = true);
    let doc = active_until(&p, Duration::from_secs(5), |d| d["active"].is_null()).await;
    assert!(doc["reason"].as_str().unwrap().contains("sealed"), "{doc}");
    // A sealed node that keeps its stale active tag next to the new active is skipped.
    consul.update(|nodes| nodes[1].role = Role::Active);
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["node"], "vault-b");
    assert_eq!(doc["active_candidates"], 1);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn an_empty_service_address_is_served_as_the_node_address() {
    let mut node = VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active);
    node.service_address = Some(String::new());
    let consul = ConsulDouble::start(vec![node]).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["address"], "127.0.0.2");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_poisoned_address_is_refused_and_counted() {
    let mut node = VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active);
    node.service_address = Some("evil.example/phish?".into());
    let consul = ConsulDouble::start(vec![node]).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| d["version"] != 0).await;
    assert!(doc["active"].is_null(), "{doc}");
    assert!(metrics(&p).await.contains("vault_redirect_refused_targets_total 1"));
    p.stop().await.unwrap();
}

#[tokio::test]
async fn another_tag_can_mark_the_active_node() {
    let mut nodes = three_nodes();
    nodes[1].service_tags = vec!["primary".into()];
    let consul = ConsulDouble::start(nodes).await.unwrap();
    let p = start(&consul.url(), &["--active-tag", "primary"]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["node"], "vault-b");
    p.stop().await.unwrap();
}
