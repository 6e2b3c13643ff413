//! The Consul double against Consul's documented behaviour: entry shapes as Vault registers
//! them, blocking queries, headers, query options, ACLs, and the injected faults.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::Value;
use vault_redirect_doubles::{ConsulDouble, Fault, Role, VaultNode};

fn nodes() -> Vec<VaultNode> {
    vec![
        VaultNode::new("vault-a", "10.0.0.1", 8200, Role::Active),
        VaultNode::new("vault-b", "10.0.0.2", 8200, Role::Standby),
        VaultNode::new("vault-c", "10.0.0.3", 8200, Role::PerfStandby),
    ]
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).timeout(Duration::from_secs(700)).send().await.unwrap()
}

fn index_of(r: &reqwest::Response) -> u64 {
    r.headers()["x-consul-index"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn entries_have_the_shape_consul_answers_and_vault_registers() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let r = get(&format!("{}/v1/health/service/vault", consul.url())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-consul-knownleader"], "true");
    assert_eq!(r.headers()["x-consul-lastcontact"], "0");
    assert_eq!(index_of(&r), consul.index());
    let body: Value = r.json().await.unwrap();
    let entries = body.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let a = &entries[0];
    assert_eq!(a["Node"]["Node"], "vault-a");
    assert_eq!(a["Node"]["Address"], "10.0.0.1");
    assert_eq!(a["Node"]["Datacenter"], "dc1");
    assert_eq!(a["Service"]["ID"], "vault:10.0.0.1:8200");
    assert_eq!(a["Service"]["Service"], "vault");
    assert_eq!(a["Service"]["Tags"], serde_json::json!(["active", "initialized"]));
    assert_eq!(a["Service"]["Address"], "10.0.0.1");
    assert_eq!(a["Service"]["Port"], 8200);
    assert_eq!(entries[1]["Service"]["Tags"], serde_json::json!(["standby", "initialized"]));
    assert_eq!(
        entries[2]["Service"]["Tags"],
        serde_json::json!(["performance-standby", "initialized"])
    );
    let checks = a["Checks"].as_array().unwrap();
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    assert_eq!(checks[0]["ServiceID"], "");
    assert_eq!(checks[1]["CheckID"], "vault:10.0.0.1:8200:vault-sealed-check");
    assert_eq!(checks[1]["Name"], "Vault Sealed Status");
    assert_eq!(checks[1]["Status"], "passing");
    assert_eq!(checks[1]["Output"], "Vault Unsealed");
    assert_eq!(checks[1]["ServiceID"], "vault:10.0.0.1:8200");
    assert_eq!(checks[1]["Type"], "ttl");
}

#[tokio::test]
async fn a_sealed_node_has_a_critical_sealed_check_and_passing_filters_it_out() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    consul.update(|n| n[1].sealed = true);
    let body: Value =
        get(&format!("{}/v1/health/service/vault", consul.url())).await.json().await.unwrap();
    assert_eq!(body[1]["Checks"][1]["Status"], "critical");
    assert_eq!(body[1]["Checks"][1]["Output"], "Vault Sealed");
    for q in ["?passing", "?passing=true", "?passing=1"] {
        let body: Value = get(&format!("{}/v1/health/service/vault{q}", consul.url()))
            .await
            .json()
            .await
            .unwrap();
        let names: Vec<&str> =
            body.as_array().unwrap().iter().map(|e| e["Node"]["Node"].as_str().unwrap()).collect();
        assert_eq!(names, ["vault-a", "vault-c"], "{q}");
    }
    let body: Value = get(&format!("{}/v1/health/service/vault?passing=false", consul.url()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn tag_filters_and_an_unknown_service_is_an_empty_list() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let body: Value = get(&format!("{}/v1/health/service/vault?tag=active", consul.url()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body.as_array().unwrap().len(), 1);
    let r = get(&format!("{}/v1/health/service/nomad", consul.url())).await;
    assert_eq!(r.status(), 200);
    assert!(index_of(&r) > 0);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!([]));
}

#[tokio::test]
async fn a_blocking_query_is_held_until_the_index_moves() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let index = consul.index();
    let url = format!("{}/v1/health/service/vault?index={index}&wait=30s", consul.url());
    let waiter = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    consul.set_active("vault-b");
    let r = tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
    assert_eq!(index_of(&r), index + 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body[1]["Service"]["Tags"][0], "active");
    assert_eq!(body[0]["Service"]["Tags"][0], "standby");
    // Only the changed entries get a new ModifyIndex.
    assert_eq!(body[0]["Service"]["ModifyIndex"], index + 1);
    assert!(body[2]["Service"]["ModifyIndex"].as_u64().unwrap() < index + 1);
}

#[tokio::test(start_paused = true)]
async fn a_blocking_query_ends_after_its_wait_plus_at_most_a_sixteenth() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let index = consul.index();
    for (wait, expected) in [("16s", 16.0), ("100ms", 0.1), ("1m", 60.0)] {
        let started = tokio::time::Instant::now();
        let r = get(&format!("{}/v1/health/service/vault?index={index}&wait={wait}", consul.url()))
            .await;
        let took = started.elapsed().as_secs_f64();
        assert_eq!(index_of(&r), index, "an answer at the end of the wait carries the same index");
        assert!(took >= expected && took <= expected * 17.0 / 16.0 + 0.01, "{wait}: {took}");
    }
    // No wait means 5 minutes; more than 10 minutes is clamped to 10.
    let started = tokio::time::Instant::now();
    get(&format!("{}/v1/health/service/vault?index={index}", consul.url())).await;
    let took = started.elapsed().as_secs_f64();
    assert!((300.0..=318.75).contains(&took), "{took}");
    let started = tokio::time::Instant::now();
    get(&format!("{}/v1/health/service/vault?index={index}&wait=1h", consul.url())).await;
    let took = started.elapsed().as_secs_f64();
    assert!((600.0..=637.5).contains(&took), "{took}");
}

#[tokio::test]
async fn bad_index_and_wait_are_400_with_consuls_messages() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let r = get(&format!("{}/v1/health/service/vault?index=x", consul.url())).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid index");
    let r = get(&format!("{}/v1/health/service/vault?index=1&wait=soon", consul.url())).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid wait time");
}

#[tokio::test(start_paused = true)]
async fn after_an_index_reset_a_query_on_the_old_index_waits_then_answers_the_lower_one() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let old = consul.index();
    consul.reset_index(2);
    let r = get(&format!("{}/v1/health/service/vault?index={old}&wait=10s", consul.url())).await;
    assert_eq!(index_of(&r), 2);
}

#[tokio::test]
async fn acl_tokens_are_checked_like_consul() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    consul.require_token("good");
    consul.add_token_without_read("weak");
    let url = format!("{}/v1/health/service/vault", consul.url());
    let c = reqwest::Client::new();
    let r = c.get(&url).header("X-Consul-Token", "good").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap().as_array().unwrap().len(), 3);
    let r = c.get(&url).bearer_auth("good").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap().as_array().unwrap().len(), 3);
    let r = c.get(&url).header("X-Consul-Token", "nope").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "ACL not found");
    for token in [Some("weak"), None] {
        let mut req = c.get(&url);
        if let Some(t) = token {
            req = req.header("X-Consul-Token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-consul-results-filtered-by-acls"], "true");
        assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!([]));
    }
}

#[tokio::test]
async fn faults_answer_like_a_failing_consul() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let url = format!("{}/v1/health/service/vault", consul.url());
    consul.set_fault(Some(Fault::ServerError));
    assert_eq!(get(&url).await.status(), 500);
    consul.set_fault(Some(Fault::MalformedJson));
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    consul.set_fault(Some(Fault::NoLeader));
    let r = get(&url).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "No cluster leader");
    let r = get(&format!("{url}?stale")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-consul-knownleader"], "false");
    consul.set_fault(Some(Fault::ZeroIndex));
    assert_eq!(index_of(&get(&url).await), 0);
    consul.set_fault(Some(Fault::Hang));
    assert!(tokio::time::timeout(Duration::from_millis(300), get(&url)).await.is_err());
    consul.set_fault(None);
    assert_eq!(get(&url).await.status(), 200);
    let r = get(&format!("{url}?dc=dc2")).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "No path to datacenter");
}

#[tokio::test]
async fn going_down_closes_the_port_and_open_connections_and_coming_back_reopens_it() {
    let consul = ConsulDouble::start(nodes()).await.unwrap();
    let index = consul.index();
    let url = format!("{}/v1/health/service/vault?index={index}&wait=1m", consul.url());
    let parked = tokio::spawn(async move { reqwest::get(url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    consul.go_down().await;
    let parked = tokio::time::timeout(Duration::from_secs(2), parked).await.unwrap().unwrap();
    assert!(parked.is_err(), "an open blocking query must break when Consul dies");
    assert!(tokio::net::TcpStream::connect(consul.addr()).await.is_err());
    consul.come_back().await.unwrap();
    assert_eq!(get(&format!("{}/v1/health/service/vault", consul.url())).await.status(), 200);
    let before = consul.requests();
    get(&format!("{}/v1/health/service/vault", consul.url())).await;
    assert_eq!(consul.requests(), before + 1);
    consul.shutdown().await;
}
