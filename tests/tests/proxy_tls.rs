//! Proxy mode with TLS from Envoy to the Vault nodes (issue 18): the proxy template's `#tls `
//! lines (Vault's CA, `auto_sni`/`auto_san_validation` on the name the filter writes, its
//! `upstream_server_name`). On a real OpenBao cluster whose listeners serve a certificate of a
//! generated CA: every real client writes and reads on the active node; an Envoy that trusts
//! another CA, or expects a name the nodes' certificate does not hold, is refused by its own
//! TLS check: Envoy's 503, and nothing in any node's audit log. On Vault doubles whose
//! certificate holds DNS names only: that name is the SNI Envoy sends, it follows a failover,
//! no client header changes it, Vault never sees the header that carries it, and the default
//! (the node's IP address) fails verification against such a certificate.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::clients;
use common::openbao::BaoStack;
use common::vault::{quick_plugin, VaultStack, TOKEN};
use serde_json::json;
use vault_redirect_doubles::{Pki, PkiSpec, Role, VaultCluster};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::{openbao, pki, target_dir, wait_for};

/// Envoy's counters of its TLS client on the Vault cluster.
const SSL: &str = "cluster.vault_active.ssl";

/// A counter of Envoy's TLS client ([`SSL`]`.<name>`), 0 while Envoy has not created it.
async fn ssl_stat(envoy: &Envoy, name: &str) -> Result<u64> {
    Ok(envoy.stat(&format!("{SSL}.{name}")).await?.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_writes_and_reads_on_the_active_node_over_verified_tls() -> Result<()> {
    let cluster = openbao::shared_tls().await?;
    let stack = BaoStack::proxy(&cluster, |opts| opts).await?;
    let active = stack.wait_for_proxying(&cluster).await?;
    clients::each_writes_and_reads_through_the_proxy(&cluster, &stack, &active, "proxy/tls")
        .await?;
    // Every exchange went over TLS that Envoy verified (OpenBao's TLS listeners take nothing
    // else), by the default name: the node's address, which the certificate holds.
    let envoy = &stack.envoy;
    assert!(ssl_stat(envoy, "handshake").await? >= 1, "no TLS handshake counted");
    for failure in ["fail_verify_error", "fail_verify_san"] {
        assert_eq!(ssl_stat(envoy, failure).await?, 0, "{SSL}.{failure}");
    }
    Ok(())
}

/// In front of the shared TLS cluster with `adjust`ed Envoy options, a write must be refused by
/// Envoy's TLS check: once the filter has a state (before, it answers 503 itself, with
/// `Retry-After`), Envoy's router answers 503 (it could not connect); `failure` ([`SSL`]) says
/// why, and no node logged anything for the path.
async fn refused_by_envoys_tls_check(
    what: &str,
    adjust: impl FnOnce(EnvoyOptions) -> EnvoyOptions,
    failure: &str,
) -> Result<()> {
    let cluster = openbao::shared_tls().await?;
    cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let stack = BaoStack::proxy(&cluster, adjust).await?;
    let path = format!("secret/data/proxy/refused/{}", what.replace(' ', "-"));
    let url = stack.envoy.url(&format!("/v1/{path}"));
    let http = vault_redirect_e2e::client()?;
    let (status, body) = wait_for("an answer from Envoy's router", Duration::from_secs(30), || {
        let request = http
            .post(&url)
            .header("x-vault-token", cluster.root_token())
            .json(&json!({"data": {"never": "stored"}}));
        async move {
            let r = request.send().await.ok()?;
            let from_filter = r.headers().contains_key("retry-after");
            let status = r.status().as_u16();
            let body = r.text().await.ok()?;
            (!from_filter).then_some((status, body))
        }
    })
    .await
    .with_context(|| what.to_string())?;
    assert_eq!(status, 503, "{what}: {body}");
    assert!(body.starts_with("upstream connect error"), "{what}: {body}");
    let proxied = stack.envoy.counter_at_least("wasmcustom.vault_redirect.proxied", 1).await?;
    assert!(proxied >= 1, "{what}: the filter let no request through");
    assert!(ssl_stat(&stack.envoy, failure).await? >= 1, "{what}: {SSL}.{failure} stayed 0");
    for node in cluster.nodes() {
        let logged = cluster.audit_for(&node.name, &path)?;
        assert!(logged.is_empty(), "{what}: {} logged {logged:#?}", node.name);
    }
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_that_trusts_another_ca_refuses_the_nodes_and_nothing_reaches_vault() -> Result<()>
{
    // Another CA, with a leaf for the very same names.
    let other = pki::loopback()?;
    let other_ca = other.path("ca.pem");
    refused_by_envoys_tls_check(
        "another CA",
        |opts| EnvoyOptions { upstream_ca: Some(other_ca), ..opts },
        "fail_verify_error",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_name_the_certificate_does_not_hold_is_refused_and_nothing_reaches_vault(
) -> Result<()> {
    // A DNS name (also sent as SNI) and an IP address outside the leaf's 127.0.0.1-5.
    for name in ["{node}.wrong.example", "127.0.0.6"] {
        let plugin = quick_plugin(&format!(r#","mode":"proxy","upstream_server_name":"{name}""#));
        refused_by_envoys_tls_check(
            name,
            |opts| EnvoyOptions { plugin_config: plugin, ..opts },
            "fail_verify_san",
        )
        .await?;
    }
    Ok(())
}

/// The Vault doubles on TLS with a leaf for `vault-<x>.vault.test` only (no IP address), the
/// Consul double naming them `vault-<x>`, the poller, and Envoy in proxy mode trusting the
/// doubles' CA with `upstream_server_name` `name`.
async fn dns_named_stack(pki: &Pki, name: &str) -> Result<VaultStack> {
    let vault = VaultCluster::start_tls(
        &[("vault-a", Role::Active), ("vault-b", Role::Standby), ("vault-c", Role::Standby)],
        &pki.chain,
        &pki.key,
    )
    .await?;
    let plugin = quick_plugin(&format!(r#","mode":"proxy","upstream_server_name":"{name}""#));
    let ca = pki.path("ca.pem");
    VaultStack::launch_on(vault, &[], true, |poller| EnvoyOptions {
        plugin_config: plugin,
        ..EnvoyOptions::proxy_tls(poller, ca)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_name_is_sent_as_sni_follows_a_failover_and_no_client_can_choose_it(
) -> Result<()> {
    let names = ["vault-a.vault.test", "vault-b.vault.test", "vault-c.vault.test"];
    let dir = target_dir().join("e2e-logs");
    let pki = Pki::new("sni", Some(&dir), &PkiSpec::leaf_for(&names))?;
    let stack = dns_named_stack(&pki, "{node}.vault.test").await?;
    let http = vault_redirect_e2e::client()?;
    for (active, other) in [("vault-a", "vault-b"), ("vault-b", "vault-c")] {
        stack.switch(active);
        stack.wait_for_proxying(active).await?;
        stack.vault.clear_received();
        // A client naming another node (whose name the certificate holds too) in the header
        // Envoy takes the name from, and in Host: neither changes what Envoy sends or checks.
        let url = stack.envoy.url("/v1/secret/data/sni");
        let answer = http
            .post(&url)
            .header("x-vault-token", TOKEN)
            .header("x-vault-redirect-upstream-name", format!("{other}.vault.test"))
            .header("host", format!("{other}.vault.test"))
            .json(&json!({"data": {"on": active}}))
            .send()
            .await?;
        assert_eq!(answer.status(), 200, "{active}: {:?}", answer.text().await);
        let got = stack.vault.received(active);
        assert_eq!(got.len(), 1, "{active} received {got:#?}");
        assert_eq!(got[0].sni.as_deref(), Some(format!("{active}.vault.test").as_str()));
        // The route removed the header after the router read it: Vault never sees it.
        assert_eq!(got[0].header("x-vault-redirect-upstream-name"), None, "{:?}", got[0]);
        for node in ["vault-a", "vault-b", "vault-c"].into_iter().filter(|n| *n != active) {
            assert_eq!(stack.vault.received(node), vec![], "{node} received requests");
        }
    }
    let envoy = &stack.envoy;
    assert_eq!(ssl_stat(envoy, "fail_verify_san").await?, 0);
    stack.assert_no_failures()?;

    // The default name, the node's IP address, is not in this certificate: refused, and no
    // node receives anything. (So the names above were what Envoy checked.)
    let by_address = dns_named_stack(&pki, "{address}").await?;
    let url = by_address.envoy.url("/v1/secret/data/sni");
    let (status, body) = wait_for("an answer from Envoy's router", Duration::from_secs(20), || {
        let request = http.get(&url).header("x-vault-token", TOKEN);
        async move {
            let r = request.send().await.ok()?;
            let from_filter = r.headers().contains_key("retry-after");
            let status = r.status().as_u16();
            (!from_filter).then_some((status, r.text().await.ok()?))
        }
    })
    .await?;
    assert_eq!(status, 503, "{body}");
    assert!(ssl_stat(&by_address.envoy, "fail_verify_san").await? >= 1, "{body}");
    for node in ["vault-a", "vault-b", "vault-c"] {
        assert_eq!(by_address.vault.received(node), vec![], "{node} received requests");
    }
    by_address.assert_no_failures()
}
