//! `/health`, `/vault-redirector-health` and `/metrics`: vault-redirector's fields, status
//! codes, and the metrics the issue lists.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use vault_redirect_doubles::ConsulDouble;

#[tokio::test]
async fn health_carries_vault_redirectors_fields_and_is_200_with_an_active_node() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    for path in ["/health", "/vault-redirector-health"] {
        let (status, h) = get_json(&p.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(h["healthy"], true);
        assert_eq!(h["application"], "vault-redirect-poller");
        assert!(h["source"].is_string());
        assert!(h["version"].is_string());
        assert_eq!(h["consul_host_port"], consul.addr().to_string());
        assert_eq!(h["source_of_truth"], "consul");
        assert_eq!(h["source_endpoint"], consul.addr().to_string());
        assert_eq!(h["active_vault"], "127.0.0.2:8200");
        let poll = h["last_consul_poll"].as_str().unwrap();
        assert!(poll.len() == 20 && poll.ends_with('Z') && poll.as_bytes()[10] == b'T', "{poll}");
        assert_eq!(h["problems"], serde_json::json!([]));
    }
    p.stop().await.unwrap();
}

#[tokio::test]
async fn active_vault_names_the_node_the_way_redirects_do() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--redirect-host", "node", "--redirect-port", "443"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let (_, h) = get_json(&p.url("/health")).await;
    assert_eq!(h["active_vault"], "vault-a:443");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn health_is_503_with_the_reason_before_consul_ever_answered() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.set_fault(Some(vault_redirect_doubles::Fault::Hang));
    let p = start(&consul.url(), &[]).await;
    let (status, h) = get_json(&p.url("/vault-redirector-health")).await;
    assert_eq!(status, 503);
    assert_eq!(h["healthy"], false);
    assert!(h["active_vault"].is_null());
    assert!(h["problems"].to_string().contains("waiting for the first answer from Consul"), "{h}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_changes_and_long_poll_waiters() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let version = doc["version"].as_u64().unwrap();

    let url = p.url(&format!("/v1/active?index={version}&wait=30s"));
    let waiter = tokio::spawn(async move { get_json(&url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("vault_redirect_longpoll_waiters 1"), "{text}");

    consul.set_active("vault-b");
    waiter.await.unwrap();
    let r = reqwest::get(p.url("/metrics")).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    for needle in [
        "vault_redirect_longpoll_waiters 0",
        "vault_redirect_active_changes_total 2",
        "vault_redirect_consul_requests_total{outcome=\"changed\"}",
        "vault_redirect_consul_request_duration_seconds_bucket",
        "vault_redirect_state_age_seconds",
        "vault_redirect_consul_last_ok_age_seconds",
        "vault_redirect_active_candidates 1",
        "vault_redirect_source_info{source=\"consul\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    p.stop().await.unwrap();
}
