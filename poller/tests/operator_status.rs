//! What operators read: `GET /v1/status` (nodes, ages, waiters, the change history), the
//! status page's HTML, the `status` subcommand of the real binary, and `/metrics` in
//! Prometheus' text format. `/v1/active`'s document must not change shape for any of it.

// Test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use vault_redirect_doubles::{ConsulDouble, Role};

const BIN: &str = env!("CARGO_BIN_EXE_vault-redirect-poller");

async fn status_until(p: &Running, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, doc) = get_json(&p.url("/v1/status")).await;
        assert_eq!(code, 200);
        if pred(&doc) {
            return doc;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("/v1/status never showed {what}; last: {doc:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn status_lists_every_node_consul_reports_with_its_tags_and_sealed_check() {
    let mut nodes = three_nodes();
    nodes[2].sealed = true;
    let consul = ConsulDouble::start(nodes).await.unwrap();
    let p = start(&consul.url(), &["--service", "vault", "--max-stale", "45s"]).await;
    let s = status_until(&p, "vault-a active", |s| s["active"]["node"] == "vault-a").await;
    assert_eq!(s["healthy"], true);
    assert_eq!(s["source"], "consul");
    assert_eq!(s["source_endpoint"], consul.addr().to_string());
    assert_eq!(s["source_watching"], "service \"vault\", tag \"active\"");
    assert_eq!(s["max_stale_ms"], 45_000);
    assert_eq!(s["last_ok_age_ms"], 0, "an open blocking query keeps the view fresh: {s:#}");
    let nodes = s["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["vault-a", "vault-b", "vault-c"]);
    assert_eq!(nodes[0]["active"], true);
    assert_eq!(nodes[0]["labels"], serde_json::json!(["active", "initialized"]));
    assert_eq!(nodes[1]["active"], false);
    assert_eq!(nodes[1]["address"], "127.0.0.3");
    assert_eq!(nodes[1]["port"], 8200);
    let check =
        |n: &Value, i: usize| (n["checks"][i]["name"].clone(), n["checks"][i]["status"].clone());
    assert_eq!(check(&nodes[1], 0), ("sealed check".into(), "passing".into()));
    assert_eq!(check(&nodes[2], 0), ("sealed check".into(), "critical".into()));
    assert_eq!(nodes[2]["checks"][0]["ok"], false);
    assert_eq!(check(&nodes[2], 1), ("agent".into(), "passing".into()));
    // The poller's own first answer is not a time the cluster lacked an active node.
    let changes = s["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{s:#}");
    assert_eq!(changes[0]["to"]["node"], "vault-a");
    assert_eq!(changes[0]["no_active_for_ms"], Value::Null);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_failover_through_an_election_is_recorded_with_how_long_there_was_no_active_node() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    status_until(&p, "vault-a active", |s| s["active"]["node"] == "vault-a").await;
    // The election: nobody is tagged active for a moment.
    consul.update(|nodes| nodes.iter_mut().for_each(|n| n.role = Role::Standby));
    let s = status_until(&p, "no active node", |s| s["active"].is_null()).await;
    assert_eq!(s["healthy"], false);
    assert!(s["reason"].as_str().unwrap().contains("tagged \"active\""), "{s:#}");
    assert!(s["no_active_for_ms"].is_u64(), "{s:#}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    consul.set_active("vault-b");
    let s = status_until(&p, "vault-b active", |s| s["active"]["node"] == "vault-b").await;
    let changes = s["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{s:#}");
    // Newest first.
    assert_eq!(changes[0]["to"]["node"], "vault-b");
    assert_eq!(changes[0]["from"], Value::Null);
    let gap = changes[0]["no_active_for_ms"].as_u64().unwrap();
    assert!(gap >= 300, "the gap lasted at least the 300 ms we waited, got {gap}");
    assert_eq!(changes[1]["to"], Value::Null);
    assert_eq!(changes[1]["from"]["node"], "vault-a");
    assert!(changes[1]["reason"].as_str().unwrap().contains("tagged"), "{s:#}");
    assert!(changes[0]["version"].as_u64() > changes[1]["version"].as_u64());
    assert!(changes[0]["at_unix_ms"].as_u64() >= changes[1]["at_unix_ms"].as_u64());
    assert_eq!(s["version"], changes[0]["version"]);
    assert_eq!(s["no_active_for_ms"], Value::Null);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_history_keeps_the_last_fifty_changes() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    status_until(&p, "vault-a active", |s| s["active"]["node"] == "vault-a").await;
    // 52 handovers after the first answer: 53 changes, of which the last 50 are kept.
    let mut last = "vault-a";
    for i in 0..52 {
        last = ["vault-b", "vault-c", "vault-a"][i % 3];
        consul.set_active(last);
        status_until(&p, last, |s| s["active"]["node"] == last).await;
    }
    let s = status_until(&p, last, |s| s["active"]["node"] == last).await;
    let changes = s["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 50);
    assert_eq!(changes[0]["to"]["node"], last);
    assert_eq!(changes[0]["version"], s["version"]);
    // The oldest kept is the fourth change: the first answer and two handovers fell off.
    assert_eq!(changes[49]["to"]["node"], "vault-a");
    assert_eq!(changes[49]["from"]["node"], "vault-c");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn status_counts_open_long_polls() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let s = status_until(&p, "vault-a active", |s| s["active"]["node"] == "vault-a").await;
    let url = p.url(&format!("/v1/active?index={}&wait=30s", s["version"]));
    let waiters: Vec<_> = (0..2).map(|_| tokio::spawn(client().get(url.clone()).send())).collect();
    status_until(&p, "2 waiters", |s| s["longpoll_waiters"] == 2).await;
    consul.set_active("vault-b");
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap().status(), 200);
    }
    status_until(&p, "0 waiters", |s| s["longpoll_waiters"] == 0).await;
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_active_document_keeps_its_shape() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc =
        active_until(&p, Duration::from_secs(10), |d| active_node(d) == Some("vault-a")).await;
    let mut keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "active",
            "active_candidates",
            "age_ms",
            "consul_index",
            "last_consul_ok_unix_ms",
            "scheme",
            "version"
        ]
    );
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_status_page_is_one_self_contained_html_document() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let r = client().get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("id=\"timeline\"") && html.contains("id=\"nodes\""));
    // Everything it loads comes from this poller: no src/href to anywhere.
    assert!(!html.contains("src=") && !html.contains("<link"), "external asset in the page");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_in_text_format_for_clients_that_ask_for_it_and_openmetrics_otherwise() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--max-stale", "90s"]).await;
    active_until(&p, Duration::from_secs(10), |d| active_node(d) == Some("vault-a")).await;
    let r = client().get(p.url("/metrics")).header("accept", "text/plain").send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE vault_redirect_consul_requests_total counter\n"), "{text}");
    assert!(text.contains("vault_redirect_active_node 1\n"), "{text}");
    assert!(text.contains("vault_redirect_max_stale_seconds 90"), "{text}");
    assert!(!text.contains("# EOF"));
    // What Prometheus sends: OpenMetrics preferred.
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let r = client().get(p.url("/metrics")).header("accept", prom).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    consul.update(|nodes| nodes.iter_mut().for_each(|n| n.role = Role::Standby));
    active_until(&p, Duration::from_secs(10), |d| d["active"].is_null()).await;
    let text = client().get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("vault_redirect_active_node 0\n"), "{text}");
    p.stop().await.unwrap();
}

/// Runs `vault-redirect-poller status` and returns (exit code, stdout, stderr).
fn status_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("status")
        .args(args)
        .env_remove("VAULT_REDIRECT_LISTEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_status_subcommand_prints_the_table_and_exits_by_health() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(10), |d| active_node(d) == Some("vault-a")).await;
    let addr = p.addr.to_string();
    let a = addr.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || status_cli(&["--addr", &a])).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("vault-redirect-poller at {addr}: OK\n")), "{out}");
    let active = out.lines().find(|l| l.starts_with("active ")).unwrap_or_default();
    assert!(active.ends_with("vault-a (127.0.0.2:8200)"), "{out}");
    for node in ["vault-a", "vault-b", "vault-c"] {
        assert!(
            out.lines().any(|l| l.starts_with(node) && l.contains("passing")),
            "{node} missing:\n{out}"
        );
    }

    // Two nodes tagged active: still serving, with a problem: 1.
    consul.update(|nodes| nodes[1].role = Role::Active);
    active_until(&p, Duration::from_secs(10), |d| d["active_candidates"] == 2).await;
    let a = addr.clone();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || status_cli(&["--addr", &a])).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": WARNING") && out.contains("2 nodes qualify as active"), "{out}");

    // No active node: 2, and the JSON form says the same.
    consul.update(|nodes| nodes.iter_mut().for_each(|n| n.role = Role::Standby));
    active_until(&p, Duration::from_secs(10), |d| d["active"].is_null()).await;
    let a = addr.clone();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || status_cli(&["--addr", &a, "--json"])).await.unwrap();
    assert_eq!(code, 2, "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["healthy"], false);
    // vault-a, then vault-b (the newest registration of the two), then none.
    let to: Vec<Value> =
        doc["changes"].as_array().unwrap().iter().map(|c| c["to"]["node"].clone()).collect();
    assert_eq!(to, [Value::Null, "vault-b".into(), "vault-a".into()]);

    // Nothing listening: 3, with the reason on stderr.
    p.stop().await.unwrap();
    let a = addr.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || status_cli(&["--addr", &a, "--timeout", "2s"]))
            .await
            .unwrap();
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("UNKNOWN") && err.contains(&addr), "{out}{err}");
}

#[test]
fn status_refuses_a_bad_address_naming_it() {
    let (code, _, err) = status_cli(&["--addr", "http://x:1/v1/active"]);
    assert_eq!(code, 3);
    assert!(err.contains("http://x:1/v1/active"), "{err}");
}
