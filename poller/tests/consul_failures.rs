//! How the poller lives through a misbehaving Consul: down at start, dying mid-run, hanging,
//! 500s, malformed JSON, an index going backwards, a zero index, ACL refusals, no leader.
//! Time-dependent scenarios run on tokio's paused clock.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use vault_redirect_doubles::{ConsulDouble, Fault};

const DOWN: &str = "no good answer from Consul within --max-stale";

async fn health(p: &Running) -> (u16, serde_json::Value) {
    get_json(&p.url("/health")).await
}

fn problems(h: &serde_json::Value) -> String {
    h["problems"].to_string()
}

#[tokio::test(start_paused = true)]
async fn consul_down_at_start_gives_no_active_with_a_reason_then_recovers() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.go_down().await;
    let p = start(&consul.url(), &["--backoff-max", "2s"]).await;
    let doc = active_until(&p, Duration::from_secs(5), |d| d["reason"] == DOWN).await;
    assert!(doc["active"].is_null());
    assert!(doc["version"].as_u64().unwrap() > 0);
    let (status, h) = health(&p).await;
    assert_eq!(status, 503);
    assert!(problems(&h).contains("cannot reach Consul"), "{h}");

    consul.come_back().await.unwrap();
    let doc = active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["node"], "vault-a");
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn consul_dying_mid_run_keeps_the_last_active_for_max_stale_then_none() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--max-stale", "30s"]).await;
    let before = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    consul.go_down().await;
    let died = tokio::time::Instant::now();

    tokio::time::sleep(Duration::from_secs(20)).await;
    let (_, doc) = get_json(&p.url("/v1/active")).await;
    assert_eq!(doc["active"]["node"], "vault-a", "last known good must survive a short outage");
    assert_eq!(doc["version"], before["version"]);
    assert!(doc["age_ms"].as_u64().unwrap() >= 19_000, "{doc}");
    let (status, h) = health(&p).await;
    assert_eq!(status, 200);
    assert!(problems(&h).contains("serving the last known active node"), "{h}");

    let doc = active_until(&p, Duration::from_secs(30), |d| d["active"].is_null()).await;
    let after = died.elapsed();
    assert!(
        after >= Duration::from_secs(30) && after <= Duration::from_secs(31),
        "dropped after {after:?}"
    );
    assert_eq!(doc["reason"], DOWN);
    assert!(doc["version"].as_u64().unwrap() > before["version"].as_u64().unwrap());
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hanging_consul_is_noticed_after_its_wait_and_then_max_stale_applies() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--consul-wait", "10s", "--max-stale", "30s"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    // Let the poller park a blocking query, then make Consul stop answering anything.
    tokio::time::sleep(Duration::from_millis(100)).await;
    consul.set_fault(Some(Fault::Hang));
    let hung = tokio::time::Instant::now();

    // Within the blocking query's promise (10s + 1/16), silence means "no change".
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (_, doc) = get_json(&p.url("/v1/active")).await;
    assert_eq!(doc["age_ms"], 0, "an open blocking query within its deadline is fresh: {doc}");
    assert_eq!(doc["active"]["node"], "vault-a");

    let doc = active_until(&p, Duration::from_secs(60), |d| d["active"].is_null()).await;
    let after = hung.elapsed();
    // Deadline of the open query (10s + 10s/16) plus --max-stale.
    assert!(
        after >= Duration::from_secs(40) && after <= Duration::from_secs(42),
        "dropped after {after:?}"
    );
    assert_eq!(doc["reason"], DOWN);
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn consul_500s_keep_the_last_active_and_back_off_exponentially() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--max-stale", "5m", "--backoff-max", "30s"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    consul.set_fault(Some(Fault::ServerError));
    let before = consul.requests();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let during = consul.requests() - before;
    // 250ms doubling to a 30s cap: about 10 requests in two minutes, not 480.
    assert!((5..=16).contains(&during), "{during} requests in 120s of errors");
    let (_, doc) = get_json(&p.url("/v1/active")).await;
    assert_eq!(doc["active"]["node"], "vault-a");
    let (_, h) = health(&p).await;
    assert!(problems(&h).contains("Consul answered 500"), "{h}");

    consul.set_fault(None);
    consul.set_active("vault-c");
    // Recovery is noticed within one backoff step (at most 30s).
    active_until(&p, Duration::from_secs(31), |d| active_node(d) == Some("vault-c")).await;
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn malformed_json_is_an_error_and_never_reads_as_an_empty_cluster() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--max-stale", "1m"]).await;
    let before = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    consul.set_fault(Some(Fault::MalformedJson));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, doc) = get_json(&p.url("/v1/active")).await;
    assert_eq!(doc["active"]["node"], "vault-a");
    assert_eq!(doc["version"], before["version"]);
    let (_, h) = health(&p).await;
    assert!(problems(&h).contains("not a health entry list"), "{h}");
    let metrics = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("vault_redirect_consul_requests_total{outcome=\"malformed\"}"),
        "{metrics}"
    );
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_index_that_goes_backwards_resets_the_loop_so_later_changes_are_seen_at_once() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--consul-wait", "30s"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A snapshot restore: the index drops to 3, then a failover happens at index 4.
    consul.reset_index(3);
    consul.set_active("vault-b");
    // The parked query (index 11) only ends with its wait, as with a real Consul.
    let doc =
        active_until(&p, Duration::from_secs(35), |d| active_node(d) == Some("vault-b")).await;
    assert_eq!(doc["consul_index"], 4);
    // Having reset, the poller now blocks on index 4: the next change arrives at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    consul.set_active("vault-c");
    active_until(&p, Duration::from_secs(5), |d| active_node(d) == Some("vault-c")).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    p.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_zero_index_never_makes_the_loop_spin() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.set_fault(Some(Fault::ZeroIndex));
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let before = consul.requests();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = consul.requests() - before;
    // Index 0 becomes 1, which this Consul answers at once; the rate limit (5/s) holds.
    assert!(during <= 5 * 10 + 2, "{during} requests in 10s");
    assert!(during >= 20, "the loop must keep polling: {during}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_token_is_sent_and_acl_refusals_are_errors_not_an_empty_cluster() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.require_token("good-token");
    consul.add_token_without_read("weak-token");

    let good = start(&consul.url(), &["--consul-token", "good-token"]).await;
    active_until(&good, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    good.stop().await.unwrap();

    for (args, needle) in [
        (vec!["--consul-token", "wrong-token"], "ACL not found"),
        (vec!["--consul-token", "weak-token"], "lacks service:read"),
        (vec![], "lacks service:read"),
    ] {
        let p = start(&consul.url(), &args).await;
        active_until(&p, Duration::from_secs(5), |d| d["reason"] == DOWN).await;
        let (status, h) = health(&p).await;
        assert_eq!(status, 503);
        assert!(problems(&h).contains(needle), "{args:?}: {h}");
        assert!(!h.to_string().contains("-token"), "a token leaked into health: {h}");
        p.stop().await.unwrap();
    }
}

#[tokio::test]
async fn without_a_leader_only_stale_reads_keep_answering() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.set_fault(Some(Fault::NoLeader));
    let stale = start(&consul.url(), &["--consul-stale"]).await;
    active_until(&stale, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let (_, h) = health(&stale).await;
    assert!(problems(&h).contains("no known leader"), "{h}");
    stale.stop().await.unwrap();

    let strict = start(&consul.url(), &[]).await;
    active_until(&strict, Duration::from_secs(5), |d| d["reason"] == DOWN).await;
    let (_, h) = health(&strict).await;
    assert!(problems(&h).contains("No cluster leader"), "{h}");
    strict.stop().await.unwrap();
}

#[tokio::test]
async fn the_datacenter_and_service_name_options_reach_consul() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.set_service_name("vault-prod");
    let p = start(&consul.url(), &["--service", "vault-prod", "--consul-dc", "dc1"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    p.stop().await.unwrap();

    let wrong_service = start(&consul.url(), &[]).await;
    let doc = active_until(&wrong_service, Duration::from_secs(5), |d| {
        d["reason"].is_string() && d["version"] != 0
    })
    .await;
    assert!(doc["reason"].as_str().unwrap().contains("no instance of service \"vault\""), "{doc}");
    wrong_service.stop().await.unwrap();

    let wrong_dc = start(&consul.url(), &["--service", "vault-prod", "--consul-dc", "dc9"]).await;
    active_until(&wrong_dc, Duration::from_secs(5), |d| d["reason"] == DOWN).await;
    let (_, h) = health(&wrong_dc).await;
    assert!(problems(&h).contains("No path to datacenter"), "{h}");
    wrong_dc.stop().await.unwrap();
}
