//! The state API against the Consul double: the document at once, long-polls that answer on
//! a change or at the end of their wait, and failover within milliseconds.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use vault_redirect_doubles::ConsulDouble;

#[tokio::test]
async fn serves_the_active_node_from_consul() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["node"], "vault-a");
    assert_eq!(doc["active"]["address"], "127.0.0.2");
    assert_eq!(doc["active"]["port"], 8200);
    assert_eq!(doc["consul_index"], consul.index());
    assert_eq!(doc["version"], consul.index() << 16);
    assert_eq!(doc["active_candidates"], 1);
    assert!(doc["age_ms"].as_u64().unwrap() < 5_000);
    assert!(doc["last_consul_ok_unix_ms"].as_u64().is_some());
    assert!(doc.get("reason").is_none());
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_active_node_changes() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let version = doc["version"].as_u64().unwrap();

    let url = p.url(&format!("/v1/active?index={version}&wait=30s"));
    let waiter = tokio::spawn(async move { get_json(&url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the long-poll must wait while nothing changes");

    let changed_at = Instant::now();
    consul.set_active("vault-b");
    let (status, doc) = waiter.await.unwrap();
    let took = changed_at.elapsed();
    assert_eq!(status, 200);
    assert_eq!(doc["active"]["node"], "vault-b");
    assert!(doc["version"].as_u64().unwrap() > version);
    assert!(took < Duration::from_millis(500), "failover took {took:?}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_with_an_old_index_answers_at_once() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let started = Instant::now();
    let (_, doc) = get_json(&p.url("/v1/active?index=0&wait=30s")).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(doc["active"]["node"], "vault-a");
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_answers_the_current_document_when_its_wait_ends() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let version = doc["version"].as_u64().unwrap();
    let started = tokio::time::Instant::now();
    let (status, doc) = get_json(&p.url(&format!("/v1/active?index={version}&wait=40s"))).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(doc["version"].as_u64().unwrap(), version);
    // The wait plus at most 1/16 of jitter, as Consul does.
    assert!(took >= Duration::from_secs(40) && took <= Duration::from_millis(42_600), "{took:?}");
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_wait_is_capped_at_five_minutes() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let version = doc["version"].as_u64().unwrap();
    let started = tokio::time::Instant::now();
    get_json(&p.url(&format!("/v1/active?index={version}&wait=1h"))).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(300) && took <= Duration::from_secs(320), "{took:?}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn bad_index_or_wait_are_refused_naming_the_value() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let (status, body) = get_json(&p.url("/v1/active?index=abc")).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("\"abc\""), "{body}");
    let (status, body) = get_json(&p.url("/v1/active?index=1&wait=soon")).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("\"soon\""), "{body}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_version_does_not_move_when_consul_changes_something_that_does_not_matter() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let version = doc["version"].as_u64().unwrap();
    // A standby gets sealed: Consul's index moves, the active node does not.
    consul.update(|nodes| nodes[2].sealed = true);
    let index = consul.index();
    let doc = active_until(&p, Duration::from_secs(5), |d| d["consul_index"] == index).await;
    assert_eq!(doc["version"].as_u64().unwrap(), version);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_document_carries_the_redirect_scheme_as_a_hint_for_filters() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["scheme"], "http");
    p.stop().await.unwrap();
    let p = start(&consul.url(), &["--redirect-scheme", "https"]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["scheme"], "https");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn past_max_waiters_a_long_poll_is_answered_at_once_and_counted() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--max-waiters", "2"]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let version = doc["version"].as_u64().unwrap();
    let url = p.url(&format!("/v1/active?index={version}&wait=30s"));
    let parked: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { get_json(&url).await }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(parked.iter().all(|w| !w.is_finished()), "the first two long-polls must park");
    let started = Instant::now();
    let (status, third) = get_json(&url).await;
    assert_eq!((status, third["version"].as_u64()), (200, Some(version)));
    assert!(started.elapsed() < Duration::from_secs(10), "the third long-poll was held");
    let metrics = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vault_redirect_longpoll_over_limit_total 1"), "{metrics}");
    consul.set_active("vault-b");
    for w in parked {
        assert_eq!(w.await.unwrap().1["active"]["node"], "vault-b");
    }
    p.stop().await.unwrap();
}
