//! Real Vault clients pointed at Envoy follow its 307 to the active Vault node and talk to it
//! directly, with the token and the body intact: curl `-L`, Python `hvac` (requests
//! underneath), and the Rust `vaultrs` crate (reqwest underneath). Every assertion is on what
//! the active node's double received; the standbys must have received nothing at all (a
//! request a standby forwards would hide the client's address from Vault's audit log).

mod common;

use anyhow::{bail, Context, Result};
use common::vault::{quick_plugin, VaultStack, TOKEN};
use common::{clients, curl, curl_post_json};
use serde_json::{json, Value};
use vault_redirect_doubles::Received;

/// The one request the active node got for `method path`, checked to come straight from the
/// client (not forwarded) with the token.
fn only_request(stack: &VaultStack, method: &str, path: &str) -> Result<Received> {
    let got: Vec<Received> = stack
        .vault
        .received("vault-a")
        .into_iter()
        .filter(|r| r.method == method && r.path == path)
        .collect();
    if got.len() != 1 {
        bail!("vault-a received {} {method} {path} requests: {got:#?}", got.len());
    }
    let r = got.into_iter().next().context("checked above")?;
    assert_eq!(r.header("x-vault-token"), Some(TOKEN), "{method} {path}: token");
    assert_eq!(r.forwarded_from, None, "{method} {path}: came through a standby");
    Ok(r)
}

fn assert_standbys_untouched(stack: &VaultStack) {
    for standby in ["vault-b", "vault-c"] {
        assert_eq!(stack.vault.received(standby), vec![], "{standby} received requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_the_307_with_a_json_post_and_a_get_token_and_body_intact() -> Result<()> {
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    stack.vault.clear_received();
    let url = stack.envoy.url("/v1/secret/data/app/db");
    let token = format!("X-Vault-Token: {TOKEN}");
    let body = r#"{"options":{"cas":0},"data":{"username":"app","password":"p@ss w0rd/é"}}"#;
    let (written, trailer) = curl_post_json(&[], &url, &token, body).await?;
    assert_eq!(trailer, format!("1 {} 200", stack.location("vault-a", "/v1/secret/data/app/db")));
    assert_eq!(written["data"]["version"], 1);
    let post = only_request(&stack, "POST", "/v1/secret/data/app/db")?;
    assert_eq!(post.body, body.as_bytes(), "the body arrived byte for byte");
    assert_eq!(post.header("content-type"), Some("application/json"));

    let (out, _) = curl(&["--location", "--header", &token, &format!("{url}?version=1")]).await?;
    let read: Value = serde_json::from_str(&out)?;
    assert_eq!(read["data"]["data"], json!({"username": "app", "password": "p@ss w0rd/é"}));
    let get = only_request(&stack, "GET", "/v1/secret/data/app/db")?;
    assert_eq!(get.query.as_deref(), Some("version=1"));
    assert!(get.body.is_empty());
    assert_standbys_untouched(&stack);
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hvac_writes_then_reads_a_secret_through_the_redirect() -> Result<()> {
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    stack.vault.clear_received();
    let secret = json!({"key": "v1", "n": 7});
    let out = clients::hvac(&stack.envoy.url(""), TOKEN, None, "team/api", &secret).await?;
    assert_eq!(out.version, 1);
    assert_eq!(out.read, secret);
    let leader = out.leader.as_ref().context("hvac read no sys/leader")?;
    assert_eq!(
        leader["leader_address"],
        stack.vault.api_addr("vault-a").unwrap_or_default().as_str()
    );
    assert_eq!(leader["is_self"], true, "sys/leader was answered by the active node itself");
    // Each of the three calls was a 307 from Envoy, followed.
    assert_eq!(out.redirects, Some(3), "{out:?}");

    let post = only_request(&stack, "POST", "/v1/secret/data/team/api")?;
    assert_eq!(post.json(), Some(json!({"options": {}, "data": {"key": "v1", "n": 7}})));
    only_request(&stack, "GET", "/v1/secret/data/team/api")?;
    assert_eq!(stack.vault.secret("team/api"), Some(json!({"key": "v1", "n": 7})));
    assert_standbys_untouched(&stack);
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_vaultrs_writes_then_reads_a_secret_through_the_redirect() -> Result<()> {
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    stack.vault.clear_received();
    let data = json!({"url": "postgres://db", "pool": 5});
    let out = clients::vaultrs(&stack.envoy.url(""), TOKEN, None, "svc/cfg", &data).await?;
    assert_eq!((out.version, &out.read), (1, &data));
    assert_eq!(out.redirects, Some(2), "{out:?}");

    let post = only_request(&stack, "POST", "/v1/secret/data/svc/cfg")?;
    assert_eq!(post.json(), Some(json!({"data": {"url": "postgres://db", "pool": 5}})));
    only_request(&stack, "GET", "/v1/secret/data/svc/cfg")?;
    assert_standbys_untouched(&stack);
    // Envoy answered both with a 307 (and the clients never saw a standby).
    let redirects = stack.envoy.counter_at_least("wasmcustom.vault_redirect.redirects", 2).await?;
    assert!(redirects >= 2, "Envoy counted {redirects} redirects");
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_clients_write_to_the_new_active_node() -> Result<()> {
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    stack.switch("vault-c");
    stack.wait_for_location("vault-c", std::time::Duration::from_secs(20)).await?;
    stack.vault.clear_received();
    let url = stack.envoy.url("/v1/secret/data/after");
    let (out, _) = curl(&[
        "--location",
        "--header",
        &format!("X-Vault-Token: {TOKEN}"),
        "--data",
        r#"{"data":{"x":"y"}}"#,
        "--write-out",
        "\n%{url_effective}",
        &url,
    ])
    .await?;
    assert!(out.ends_with(&stack.location("vault-c", "/v1/secret/data/after")), "{out}");
    let at_c = stack.vault.received("vault-c");
    assert_eq!(at_c.len(), 1, "{at_c:#?}");
    assert_eq!(
        (at_c[0].forwarded_from.as_deref(), at_c[0].header("x-vault-token")),
        (None, Some(TOKEN))
    );
    assert!(
        stack.vault.received("vault-a").is_empty() && stack.vault.received("vault-b").is_empty()
    );
    stack.assert_no_failures()
}
