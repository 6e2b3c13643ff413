//! Standalone redirect mode (`--redirect-listen`): the poller answers clients itself with the
//! filter's semantics, through core's `decide`.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vault_redirect_doubles::{ConsulDouble, Role};

fn redirect_url(p: &Running, path: &str) -> String {
    format!("http://{}{}", p.redirect.unwrap(), path)
}

/// Sends raw bytes, so request targets reqwest would never produce can be tested.
async fn raw(p: &Running, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(p.redirect.unwrap()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn every_request_gets_a_307_to_the_active_node_with_its_path_and_query() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--redirect-listen", "127.0.0.1:0"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let r = client()
        .post(redirect_url(&p, "/v1/secret/data/a%20b?version=2"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "http://127.0.0.2:8200/v1/secret/data/a%20b?version=2");
    assert_eq!(r.headers()["cache-control"], "no-store");

    consul.set_active("vault-b");
    active_until(&p, Duration::from_secs(5), |d| active_node(d) == Some("vault-b")).await;
    let r = client().get(redirect_url(&p, "/v1/sys/health")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "http://127.0.0.3:8200/v1/sys/health");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn scheme_host_and_port_follow_the_flags() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(
        &consul.url(),
        &[
            "--redirect-listen",
            "127.0.0.1:0",
            "--redirect-scheme",
            "https",
            "--redirect-host",
            "node",
            "--redirect-port",
            "443",
        ],
    )
    .await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let r = client().get(redirect_url(&p, "/v1/kv/x")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "https://vault-a:443/v1/kv/x");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn without_an_active_node_clients_get_503_with_retry_after_and_vault_errors() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    consul.update(|nodes| nodes[0].role = Role::Standby);
    let p = start(&consul.url(), &["--redirect-listen", "127.0.0.1:0"]).await;
    active_until(&p, Duration::from_secs(5), |d| d["version"] != 0).await;
    let r = client().get(redirect_url(&p, "/v1/sys/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["errors"][0].as_str().unwrap().contains("no active Vault node"), "{body}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn targets_that_are_not_paths_are_refused_and_the_host_header_is_ignored() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--redirect-listen", "127.0.0.1:0"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let absolute = raw(
        &p,
        "GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    let spoofed =
        raw(&p, "GET /v1/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
    assert!(spoofed.starts_with("HTTP/1.1 307"), "{spoofed}");
    assert!(
        spoofed.to_ascii_lowercase().contains("location: http://127.0.0.2:8200/v1/x\r\n"),
        "{spoofed}"
    );
    let long = format!("/{}", "a".repeat(9000));
    let r = client().get(redirect_url(&p, &long)).send().await.unwrap();
    assert_eq!(r.status(), 414);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn the_redirect_port_answers_vault_redirectors_health_path() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &["--redirect-listen", "127.0.0.1:0"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let (status, h) = get_json(&redirect_url(&p, "/vault-redirector-health")).await;
    assert_eq!(status, 200);
    assert_eq!(h["active_vault"], "127.0.0.2:8200");
    // Health is not a redirect; a redirect is counted as one.
    client().get(redirect_url(&p, "/v1/x")).send().await.unwrap();
    let text = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("vault_redirect_redirect_responses_total{outcome=\"redirect\"} 1"),
        "{text}"
    );
    p.stop().await.unwrap();
}
