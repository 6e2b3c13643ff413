//! The poller with `--source vault` against Vault node doubles, end to end through its own
//! API: it follows the node answering 200 and names it by its `api_addr` (scheme included),
//! serves Vault's "no active node" at once, keeps the last node while it cannot see Vault (up
//! to `--max-stale`), shows every node's last code, latency and error on the status document,
//! `/health` and `/metrics`, redirects in standalone mode with Vault's scheme, and reads its
//! nodes from `VAULT_REDIRECT_VAULT_NODES`.

// Test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use vault_redirect_doubles::{Pki, PkiSpec, Role, VaultCluster};

const WITHIN: Duration = Duration::from_secs(5);

/// `--source vault`, a fast probe, a short `--max-stale`, and one `--vault-node` per URL.
fn flags(urls: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["--source", "vault", "--vault-probe-interval", "50ms", "--max-stale", "1s"]
            .map(String::from)
            .to_vec();
    for u in urls {
        args.extend(["--vault-node".to_string(), u.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn start_vault(urls: &[String], extra: &[&str]) -> Running {
    let args = flags(urls, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The Consul address is never used with --source vault.
    start("http://127.0.0.1:1", &args).await
}

fn urls(cluster: &VaultCluster, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| cluster.api_addr(n).unwrap()).collect()
}

fn names_node(doc: &Value, cluster: &VaultCluster, name: &str) -> bool {
    let a = cluster.addr(name).unwrap();
    doc["active"]["address"] == a.ip().to_string() && doc["active"]["port"] == a.port()
}

#[tokio::test]
async fn the_node_answering_200_is_served_and_vaults_no_active_node_is_served_at_once() {
    let cluster = VaultCluster::start_three().await.unwrap();
    let p = start_vault(&urls(&cluster, &["vault-a", "vault-b", "vault-c"]), &[]).await;
    let doc = active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-a")).await;
    assert_eq!(doc["scheme"], "http");
    let v1 = doc["version"].as_u64().unwrap();

    cluster.set_active("vault-b");
    let doc = active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-b")).await;
    let v2 = doc["version"].as_u64().unwrap();
    assert!(v2 > v1, "{v2} > {v1}");

    cluster.set_no_active();
    let doc = active_until(&p, WITHIN, |d| d["active"].is_null()).await;
    assert!(doc["reason"].as_str().unwrap().contains("no Vault node is active"), "{doc}");
    let doc = active_until(&p, WITHIN, |d| {
        d["reason"].as_str() == Some("no Vault node is active (3 standby)")
    })
    .await;
    let v3 = doc["version"].as_u64().unwrap();
    assert!(v3 > v2);

    for n in ["vault-a", "vault-b", "vault-c"] {
        cluster.set_sealed(n, true);
    }
    active_until(&p, WITHIN, |d| d["reason"].as_str() == Some("every Vault node is sealed")).await;
    let (status, h) = get_json(&p.url("/health")).await;
    assert_eq!(status, 503);
    assert!(h["problems"].to_string().contains("every Vault node is sealed"), "{h}");

    for n in ["vault-a", "vault-b", "vault-c"] {
        cluster.set_sealed(n, false);
    }
    cluster.set_active("vault-c");
    let doc = active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-c")).await;
    assert!(doc["version"].as_u64().unwrap() > v3);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_poller_that_cannot_see_vault_keeps_the_last_node_up_to_max_stale() {
    let cluster = VaultCluster::start_three().await.unwrap();
    let p = start_vault(&urls(&cluster, &["vault-a", "vault-b", "vault-c"]), &[]).await;
    let doc = active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-a")).await;
    let version = doc["version"].clone();
    cluster.shutdown().await;
    // Every node refuses: blind. The status says so while the last node is still served.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let status = loop {
        let (_, s) = get_json(&p.url("/v1/status")).await;
        if s["source_error"].is_string() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never blind: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status["active"].is_object(), "{status}");
    assert_eq!(status["version"], version);
    assert!(status["source_error"].as_str().unwrap().contains("no Vault node answers"), "{status}");
    let errors: Vec<&Value> =
        status["nodes"].as_array().unwrap().iter().map(|n| &n["error"]).collect();
    assert!(
        // Refused, or a kept-alive connection closed under the request: an error either way.
        errors.iter().all(|e| e.as_str().is_some_and(|e| !e.is_empty())),
        "{status}"
    );
    // Past --max-stale (1s): no active node, with the source's own reason.
    let doc = active_until(&p, WITHIN, |d| d["active"].is_null()).await;
    assert_eq!(doc["reason"], "no good answer from Vault within --max-stale");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn status_health_and_metrics_show_each_nodes_last_code_latency_and_error() {
    let cluster = VaultCluster::start(&[("vault-a", Role::Active), ("vault-b", Role::Standby)])
        .await
        .unwrap();
    cluster.set_sealed("vault-b", true);
    let gone = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut nodes = urls(&cluster, &["vault-a", "vault-b"]);
    nodes.push(gone.clone());
    let p = start_vault(&nodes, &[]).await;
    active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-a")).await;

    let (_, s) = get_json(&p.url("/v1/status")).await;
    assert_eq!(s["source"], "vault");
    assert!(s["source_endpoint"].as_str().unwrap().contains(&nodes[0]), "{s}");
    let rows = s["nodes"].as_array().unwrap();
    let check = |i: usize| rows[i]["checks"][0]["status"].as_str().unwrap().to_string();
    assert_eq!(rows[0]["checks"][0]["name"], "sys/health");
    assert_eq!(check(0), "200 active");
    assert_eq!(check(1), "503 sealed");
    assert_eq!(check(2), "no answer");
    assert_eq!(rows[0]["active"], true);
    assert_eq!(rows[0]["labels"], serde_json::json!([format!("api_addr={}", nodes[0])]));
    assert!(rows.iter().all(|r| r["latency_ms"].is_u64()), "{s}");
    assert!(rows[2]["error"].as_str().unwrap().contains("cannot connect"), "{s}");
    assert!(rows[0]["error"].is_null());

    let (status, h) = get_json(&p.url("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(h["source_of_truth"], "vault");
    assert!(h["consul_host_port"].is_null());
    assert_eq!(h["nodes"][1]["checks"]["sys/health"], "503 sealed");
    assert!(h["nodes"][2]["error"].is_string(), "{h}");

    // The `status` subcommand prints the same rows: one column for the sys/health check,
    // the latency and the error.
    let addr = p.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vault-redirect-poller"))
            .args(["status", "--addr", &addr])
            .env_remove("VAULT_REDIRECT_LISTEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{table}");
    assert_eq!(out.status.code(), Some(0), "{table}");
    let header = table.lines().find(|l| l.starts_with("NODE")).unwrap_or_default();
    for column in ["SYS/HEALTH", "LATENCY", "ERROR"] {
        assert!(header.contains(column), "{column} not in {header:?}\n{table}");
    }
    for cell in ["vault ", "200 active", "503 sealed", "no answer", "Connection refused"] {
        assert!(table.contains(cell), "{cell:?} not in\n{table}");
    }

    let metrics = client().get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let a = cluster.addr("vault-a").unwrap();
    for needle in [
        "vault_redirect_source_info{source=\"vault\"} 1".to_string(),
        format!("vault_redirect_vault_probes_total{{node=\"{a}\",outcome=\"active\"}}"),
        "outcome=\"sealed\"".to_string(),
        "outcome=\"unreachable\"".to_string(),
        "vault_redirect_vault_probe_duration_seconds_count".to_string(),
        "vault_redirect_vault_multiple_active_total 0".to_string(),
    ] {
        assert!(metrics.contains(&needle), "{needle} not in\n{metrics}");
    }
    p.stop().await.unwrap();
}

#[tokio::test]
async fn standalone_redirects_take_vaults_scheme_from_its_api_addr() {
    let pki = Pki::new(
        "vault-source",
        None,
        &PkiSpec::leaf_for(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
    )
    .unwrap();
    let cluster = VaultCluster::start_tls(
        &[("vault-a", Role::Active), ("vault-b", Role::Standby)],
        &pki.chain,
        &pki.key,
    )
    .await
    .unwrap();
    let ca = pki.path_str("ca.pem");
    let p = start_vault(
        &urls(&cluster, &["vault-a", "vault-b"]),
        &["--vault-cacert", &ca, "--redirect-listen", "127.0.0.1:0", "--redirect-scheme", "http"],
    )
    .await;
    let doc = active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-a")).await;
    assert_eq!(doc["scheme"], "https");
    let r = client()
        .get(format!("http://{}/v1/secret/data/x?version=2", p.redirect.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("{}/v1/secret/data/x?version=2", cluster.api_addr("vault-a").unwrap())
    );
    assert!(location.starts_with("https://"), "{location}");
    p.stop().await.unwrap();
}

/// The real binary, killed on drop.
struct Child2(Child);

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_nodes_come_from_vault_redirect_vault_nodes_comma_separated() {
    let cluster = VaultCluster::start_three().await.unwrap();
    let nodes = urls(&cluster, &["vault-a", "vault-b", "vault-c"]).join(",");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vault-redirect-poller"))
        .args(["--listen", "127.0.0.1:0"])
        .env("VAULT_REDIRECT_SOURCE", "vault")
        .env("VAULT_REDIRECT_VAULT_NODES", &nodes)
        .env("VAULT_REDIRECT_VAULT_PROBE_INTERVAL", "50ms")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take();
    let child = Child2(child);
    let addr = tokio::task::spawn_blocking(move || {
        let lines = BufReader::new(stderr.unwrap()).lines().map_while(Result::ok);
        for line in lines {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.trim().to_string();
            }
        }
        panic!("the poller never said where it listens");
    })
    .await
    .unwrap();
    let url = format!("http://{addr}/v1/status");
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let (_, s) = get_json(&url).await;
        if s["active"].is_object() {
            assert_eq!(s["source"], "vault");
            assert_eq!(s["nodes"].as_array().unwrap().len(), 3);
            assert!(names_node(&s, &cluster, "vault-a"), "{s}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(child);
}

#[tokio::test]
async fn each_round_asks_every_node_once_and_only_the_active_node_for_its_leader() {
    let cluster = VaultCluster::start_three().await.unwrap();
    let p = start_vault(&urls(&cluster, &["vault-a", "vault-b", "vault-c"]), &[]).await;
    active_until(&p, WITHIN, |d| names_node(d, &cluster, "vault-a")).await;
    cluster.clear_received();
    let started = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.stop().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let count =
        |name: &str, path: &str| cluster.received(name).iter().filter(|r| r.path == path).count();
    let health: Vec<usize> =
        ["vault-a", "vault-b", "vault-c"].iter().map(|n| count(n, "/v1/sys/health")).collect();
    let leader: Vec<usize> =
        ["vault-a", "vault-b", "vault-c"].iter().map(|n| count(n, "/v1/sys/leader")).collect();
    eprintln!(
        "vault source load at 50ms: sys/health {:?}, sys/leader {:?} in {seconds:.2}s \
         ({:.1} requests/s to the active node, {:.1} to each standby)",
        health,
        leader,
        (health[0] + leader[0]) as f64 / seconds,
        health[1] as f64 / seconds
    );
    // Every node is probed in every round (a round cut by the stop may miss one answer).
    let (min, max) = (health.iter().min().unwrap(), health.iter().max().unwrap());
    assert!(*min > 0 && max - min <= 1, "{health:?}");
    // sys/leader goes to the active node once per round, never to a standby while one is
    // active.
    assert!(health[0].abs_diff(leader[0]) <= 1, "{health:?} {leader:?}");
    assert_eq!(&leader[1..], &[0, 0]);
    // One kept-alive connection per node, not one per probe.
    for n in ["vault-a", "vault-b", "vault-c"] {
        let peers: std::collections::HashSet<_> =
            cluster.received(n).iter().map(|r| r.peer).collect();
        assert_eq!(peers.len(), 1, "{n}: {peers:?}");
    }
    // No other request reaches Vault: no token, no other path.
    for n in ["vault-a", "vault-b", "vault-c"] {
        for r in cluster.received(n) {
            assert!(r.path == "/v1/sys/health" || r.path == "/v1/sys/leader", "{r:?}");
            assert!(r.query.is_none() && r.header("x-vault-token").is_none(), "{r:?}");
        }
    }
}
