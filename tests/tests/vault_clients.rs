//! Real Vault clients pointed at Envoy follow its 307 to the active Vault node and talk to it
//! directly, with the token and the body intact: curl `-L`, Python `hvac` (requests
//! underneath), and the Rust `vaultrs` crate (reqwest underneath). Every assertion is on what
//! the active node's double received; the standbys must have received nothing at all (a
//! request a standby forwards would hide the client's address from Vault's audit log).

mod common;

use anyhow::{bail, Context, Result};
use common::vault::{quick_plugin, VaultStack, TOKEN};
use common::{curl, curl_post_json};
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
    let python = vault_redirect_e2e::workspace_root().join(".venv/bin/python");
    let has_hvac = tokio::process::Command::new(&python).args(["-c", "import hvac"]).output().await;
    if !has_hvac.is_ok_and(|o| o.status.success()) {
        bail!(
            "{} cannot import hvac: run scripts/setup.sh (it installs hvac into .venv)",
            python.display()
        );
    }
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    stack.vault.clear_received();
    // requests (under hvac) follows a 307 keeping method and body; across hosts it strips only
    // Authorization, so X-Vault-Token reaches the active node. trust_env=False keeps proxy
    // variables of the environment away from loopback traffic.
    let script = r#"
import json, os, sys
import hvac, requests
session = requests.Session()
session.trust_env = False
client = hvac.Client(url=os.environ["E2E_VAULT_ADDR"], token=os.environ["E2E_VAULT_TOKEN"], session=session, timeout=20)
written = client.secrets.kv.v2.create_or_update_secret(path="team/api", secret={"key": "v1", "n": 7})
read = client.secrets.kv.v2.read_secret_version(path="team/api", raise_on_deleted_version=True)
leader = client.sys.read_leader_status()
json.dump({"written": written, "read": read, "leader": leader}, sys.stdout)
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script])
        .env("E2E_VAULT_ADDR", stack.envoy.url(""))
        .env("E2E_VAULT_TOKEN", TOKEN)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .context("hvac script timed out")??;
    if !out.status.success() {
        bail!("hvac script failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let result: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(result["written"]["data"]["version"], 1);
    assert_eq!(result["read"]["data"]["data"], json!({"key": "v1", "n": 7}));
    assert_eq!(
        result["leader"]["leader_address"],
        stack.vault.api_addr("vault-a").unwrap_or_default().as_str()
    );
    assert_eq!(
        result["leader"]["is_self"], true,
        "sys/leader was answered by the active node itself"
    );

    let post = only_request(&stack, "POST", "/v1/secret/data/team/api")?;
    assert_eq!(post.json(), Some(json!({"options": {}, "data": {"key": "v1", "n": 7}})));
    only_request(&stack, "GET", "/v1/secret/data/team/api")?;
    assert_eq!(stack.vault.secret("team/api"), Some(json!({"key": "v1", "n": 7})));
    assert_standbys_untouched(&stack);
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_vaultrs_writes_then_reads_a_secret_through_the_redirect() -> Result<()> {
    // vaultrs is built without a rustls crypto provider (see tests/Cargo.toml): install ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    stack.vault.clear_received();
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(stack.envoy.url(""))
        .token(TOKEN)
        .timeout(Some(std::time::Duration::from_secs(20)))
        .build()?;
    let client = vaultrs::client::VaultClient::new(settings)?;
    let meta = vaultrs::kv2::set(
        &client,
        "secret",
        "svc/cfg",
        &json!({"url": "postgres://db", "pool": 5}),
    )
    .await?;
    assert_eq!(meta.version, 1);
    let read: Value = vaultrs::kv2::read(&client, "secret", "svc/cfg").await?;
    assert_eq!(read, json!({"url": "postgres://db", "pool": 5}));

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
