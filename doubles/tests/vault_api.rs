//! The Vault node doubles against Vault's documented behaviour: sys/health codes, overrides
//! and body; sys/leader; KV v2 write and read behind X-Vault-Token; standby forwarding and
//! the 307 with X-Vault-No-Request-Forwarding; sealed nodes; the request record.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use vault_redirect_doubles::{Role, VaultCluster};

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn three() -> (VaultCluster, String, String, String) {
    let c = VaultCluster::start(&[
        ("vault-a", Role::Active),
        ("vault-b", Role::Standby),
        ("vault-c", Role::PerfStandby),
    ])
    .await
    .unwrap();
    let (a, b, cc) = (
        c.api_addr("vault-a").unwrap(),
        c.api_addr("vault-b").unwrap(),
        c.api_addr("vault-c").unwrap(),
    );
    (c, a, b, cc)
}

async fn status(url: &str) -> u16 {
    http().get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn each_node_listens_on_its_own_loopback_address() {
    let (c, a, b, cc) = three().await;
    let addrs: Vec<_> =
        ["vault-a", "vault-b", "vault-c"].iter().map(|n| c.addr(n).unwrap()).collect();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    assert_ne!(a, b);
    assert_ne!(b, cc);
    // On Linux every 127.0.0.0/8 address can be bound: .2, .3, .4 as in the e2e tests.
    if cfg!(target_os = "linux") {
        assert_eq!(
            addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
            ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        );
    }
    let consul = c.consul_nodes();
    assert_eq!(consul[0].address, addrs[0].ip().to_string());
    assert_eq!(consul[0].port, addrs[0].port());
    assert_eq!(consul[2].role, Role::PerfStandby);
}

#[tokio::test]
async fn sys_health_answers_vaults_default_codes_and_body() {
    let (c, a, b, cc) = three().await;
    let r = http().get(format!("{a}/v1/sys/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    for (k, v) in [
        ("initialized", json!(true)),
        ("sealed", json!(false)),
        ("standby", json!(false)),
        ("performance_standby", json!(false)),
        ("replication_performance_mode", json!("disabled")),
        ("replication_dr_mode", json!("disabled")),
    ] {
        assert_eq!(body[k], v, "{k}");
    }
    assert!(body["server_time_utc"].as_u64().unwrap() > 1_700_000_000);
    assert!(
        body["version"].is_string()
            && body["cluster_name"].is_string()
            && body["cluster_id"].is_string()
    );

    assert_eq!(status(&format!("{b}/v1/sys/health")).await, 429);
    let standby: Value =
        http().get(format!("{b}/v1/sys/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (standby["standby"].clone(), standby["performance_standby"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(status(&format!("{cc}/v1/sys/health")).await, 473);
    let perf: Value =
        http().get(format!("{cc}/v1/sys/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (perf["standby"].clone(), perf["performance_standby"].clone()),
        (json!(true), json!(true))
    );

    c.set_sealed("vault-b", true);
    let sealed = http().get(format!("{b}/v1/sys/health")).send().await.unwrap();
    assert_eq!(sealed.status(), 503);
    let sealed: Value = sealed.json().await.unwrap();
    assert_eq!(sealed["sealed"], true);
    // Vault only reads the cluster's name and ID once unsealed.
    assert!(sealed.get("cluster_name").is_none() && sealed.get("cluster_id").is_none());

    c.set_initialized("vault-b", false);
    assert_eq!(status(&format!("{b}/v1/sys/health")).await, 501);
}

#[tokio::test]
async fn sys_health_overrides_follow_vaults_precedence() {
    let (c, a, b, cc) = three().await;
    // standbyok applies to standbys, not performance standbys; perfstandbyok to those.
    assert_eq!(status(&format!("{b}/v1/sys/health?standbyok=true")).await, 200);
    assert_eq!(status(&format!("{cc}/v1/sys/health?standbyok=true")).await, 473);
    assert_eq!(status(&format!("{cc}/v1/sys/health?perfstandbyok=true")).await, 200);
    assert_eq!(status(&format!("{b}/v1/sys/health?standbyok=true&activecode=204")).await, 204);
    assert_eq!(status(&format!("{b}/v1/sys/health?standbycode=299")).await, 299);
    assert_eq!(status(&format!("{cc}/v1/sys/health?performancestandbycode=298")).await, 298);
    assert_eq!(status(&format!("{a}/v1/sys/health?activecode=202")).await, 202);
    c.set_sealed("vault-a", true);
    // The Go API client asks sealedcode=299 and uninitcode=299 to read the body as a success.
    assert_eq!(status(&format!("{a}/v1/sys/health?sealedcode=299&uninitcode=299")).await, 299);
    c.set_initialized("vault-a", false);
    assert_eq!(status(&format!("{a}/v1/sys/health?sealedcode=299&uninitcode=298")).await, 298);
    // Bad values: 400 with Vault's empty error list.
    for q in ["standbyok=maybe", "standbyok", "activecode=abc", "sealedcode="] {
        let r = http().get(format!("{b}/v1/sys/health?{q}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"errors": []}), "{q}");
    }
}

#[tokio::test]
async fn head_sys_health_gives_the_status_only_and_other_methods_are_refused() {
    let (_c, a, b, _) = three().await;
    let r = http().head(format!("{b}/v1/sys/health")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(http().head(format!("{a}/v1/sys/health")).send().await.unwrap().status(), 200);
    assert_eq!(http().post(format!("{a}/v1/sys/health")).send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn sys_leader_names_the_active_node_from_every_node() {
    let (c, a, b, _) = three().await;
    let from_b: Value =
        http().get(format!("{b}/v1/sys/leader")).send().await.unwrap().json().await.unwrap();
    assert_eq!(from_b["ha_enabled"], true);
    assert_eq!(from_b["is_self"], false);
    assert_eq!(from_b["leader_address"], a.as_str());
    assert!(from_b["leader_cluster_address"].as_str().unwrap().starts_with("https://"));
    assert_eq!(from_b["active_time"], "0001-01-01T00:00:00Z");
    assert_eq!(from_b["performance_standby"], false);
    assert_eq!(from_b["performance_standby_last_remote_wal"], 0);
    let from_a: Value =
        http().get(format!("{a}/v1/sys/leader")).send().await.unwrap().json().await.unwrap();
    assert_eq!(from_a["is_self"], true);
    assert!(from_a["active_time"].as_str().unwrap().ends_with('Z'));
    assert_ne!(from_a["active_time"], "0001-01-01T00:00:00Z");

    c.set_active("vault-b");
    let after: Value =
        http().get(format!("{a}/v1/sys/leader")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (after["is_self"].clone(), after["leader_address"].clone()),
        (json!(false), json!(b))
    );
    c.set_no_active();
    let none: Value =
        http().get(format!("{a}/v1/sys/leader")).send().await.unwrap().json().await.unwrap();
    assert_eq!(none["leader_address"], "");
    c.set_sealed("vault-a", true);
    assert_eq!(status(&format!("{a}/v1/sys/leader")).await, 503);
}

#[tokio::test]
async fn kv_v2_write_then_read_needs_a_token_and_answers_vaults_shapes() {
    let (c, a, _, _) = three().await;
    c.add_token("s.root");
    let url = format!("{a}/v1/secret/data/app/db");
    // No token, or an unknown one: 403 permission denied, and nothing is written.
    for token in [None, Some("s.wrong")] {
        let mut req = http().post(&url).json(&json!({"data": {"k": "v"}}));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"errors": ["permission denied"]}));
    }
    assert_eq!(c.secret("app/db"), None);

    let w = http()
        .post(&url)
        .header("X-Vault-Token", "s.root")
        .json(&json!({"options": {"cas": 0}, "data": {"k": "v"}}));
    let w: Value = w.send().await.unwrap().json().await.unwrap();
    assert_eq!(w["data"]["version"], 1);
    assert_eq!(w["data"]["deletion_time"], "");
    assert_eq!(w["data"]["destroyed"], false);
    assert!(w["data"]["created_time"].as_str().unwrap().ends_with('Z'));
    for k in
        ["request_id", "lease_id", "renewable", "lease_duration", "wrap_info", "warnings", "auth"]
    {
        assert!(w.get(k).is_some(), "envelope lacks {k}");
    }
    // PUT is the same operation; a wrong cas is refused.
    let put =
        http().put(&url).header("X-Vault-Token", "s.root").json(&json!({"data": {"k": "v2"}}));
    assert_eq!(put.send().await.unwrap().status(), 200);
    let cas = http()
        .post(&url)
        .header("X-Vault-Token", "s.root")
        .json(&json!({"options": {"cas": 1}, "data": {}}));
    assert_eq!(cas.send().await.unwrap().status(), 400);
    let empty = http().post(&url).header("X-Vault-Token", "s.root").json(&json!({"k": "v"}));
    let empty = empty.send().await.unwrap();
    assert_eq!(empty.status(), 400);
    assert_eq!(empty.json::<Value>().await.unwrap(), json!({"errors": ["no data provided"]}));

    let r: Value = http()
        .get(&url)
        .header("X-Vault-Token", "s.root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["data"]["data"], json!({"k": "v2"}));
    assert_eq!(r["data"]["metadata"]["version"], 2);
    let v1: Value = http()
        .get(format!("{url}?version=1"))
        .header("X-Vault-Token", "s.root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["data"]["data"], json!({"k": "v"}));
    let missing = http()
        .get(format!("{a}/v1/secret/data/nope"))
        .header("X-Vault-Token", "s.root")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap(), json!({"errors": []}));
    assert_eq!(status(&format!("{url}?version=1")).await, 403);
}

#[tokio::test]
async fn every_request_is_recorded_with_headers_and_body() {
    let (c, a, _, _) = three().await;
    c.add_token("t");
    let body = r#"{"data":{"password":"hunter2"}}"#;
    http()
        .post(format!("{a}/v1/secret/data/x?y=%2F"))
        .header("X-Vault-Token", "t")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let got = c.received("vault-a");
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
        ("POST", "/v1/secret/data/x", Some("y=%2F"))
    );
    assert_eq!(r.header("X-Vault-Token"), Some("t"));
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(r.forwarded_from, None);
    assert!(r.peer.ip().is_loopback());
    c.clear_received();
    assert!(c.received("vault-a").is_empty());
}

#[tokio::test]
async fn a_standby_forwards_to_the_active_node_by_default() {
    let (c, _, b, _) = three().await;
    c.add_token("t");
    let w = http()
        .post(format!("{b}/v1/secret/data/f"))
        .header("X-Vault-Token", "t")
        .json(&json!({"data": {"a": 1}}));
    let w = w.send().await.unwrap();
    assert_eq!(w.status(), 200, "the client gets the active node's answer from the standby");
    assert_eq!(c.secret("f"), Some(json!({"a": 1})));
    assert_eq!(c.received("vault-b").len(), 1);
    let at_a = c.received("vault-a");
    assert_eq!(at_a.len(), 1);
    assert_eq!(at_a[0].forwarded_from.as_deref(), Some("vault-b"));
    // Without an active node a standby cannot forward: 500, Vault's message.
    c.set_no_active();
    let r = http()
        .get(format!("{b}/v1/secret/data/f"))
        .header("X-Vault-Token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"errors": ["local node not active but active cluster node not found"]})
    );
}

#[tokio::test]
async fn a_standby_redirects_with_307_when_the_client_disables_forwarding() {
    let (c, a, b, _) = three().await;
    let r = http()
        .put(format!("{b}/v1/secret/data/p?version=2&x=%2F"))
        .header("X-Vault-No-Request-Forwarding", "true")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], format!("{a}/v1/secret/data/p?version=2&x=%2F").as_str());
    assert!(c.received("vault-a").is_empty(), "a redirect is not a forward");
    c.set_no_active();
    let r = http()
        .get(format!("{b}/v1/x"))
        .header("X-Vault-No-Request-Forwarding", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"errors": ["no active Vault instance found"]})
    );
}

#[tokio::test]
async fn a_sealed_node_serves_nothing_but_health() {
    let (c, a, _, _) = three().await;
    c.add_token("t");
    c.set_sealed("vault-a", true);
    let r = http()
        .get(format!("{a}/v1/secret/data/x"))
        .header("X-Vault-Token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"errors": ["Vault is sealed"]}));
    assert_eq!(status(&format!("{a}/v1/sys/health")).await, 503);
}

#[tokio::test]
async fn nodes_speak_http2_with_prior_knowledge() {
    let (_c, a, _, _) = three().await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{a}/v1/sys/health")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn dropping_the_cluster_closes_every_port() {
    let (c, a, _, _) = three().await;
    assert_eq!(status(&format!("{a}/v1/sys/health")).await, 200);
    c.shutdown().await;
    assert!(http().get(format!("{a}/v1/sys/health")).send().await.is_err());
}

#[tokio::test]
async fn over_tls_the_record_holds_the_server_name_the_client_asked_for() {
    let pki = vault_redirect_doubles::Pki::new(
        "sni",
        None,
        &vault_redirect_doubles::PkiSpec::leaf_for(&["vault-a.test", "127.0.0.2"]),
    )
    .unwrap();
    let c =
        VaultCluster::start_tls(&[("vault-a", Role::Active)], &pki.chain, &pki.key).await.unwrap();
    let addr = c.addr("vault-a").unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap())
        .resolve("vault-a.test", addr)
        .no_proxy()
        .build()
        .unwrap();
    for url in [
        format!("https://vault-a.test:{}/v1/sys/health", addr.port()),
        format!("https://{addr}/v1/sys/health"),
    ] {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200, "{url}");
    }
    let sni: Vec<Option<String>> = c.received("vault-a").into_iter().map(|r| r.sni).collect();
    // A client sends a DNS name as SNI, never an IP address.
    assert_eq!(sni, [Some("vault-a.test".to_string()), None]);
}
