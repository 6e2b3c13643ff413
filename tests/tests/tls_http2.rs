//! TLS and HTTP/2: Envoy's listener serves TLS with a certificate the test generates (h2 and
//! HTTP/1.1 offered by ALPN), the plugin configuration says `"scheme": "https"`, and clients
//! get a `307` to `https://<active>`: never a downgrade to http, which Vault's Go client
//! refuses. Clients that follow it reach the active Vault double over TLS too.

mod common;

use anyhow::{bail, Context, Result};
use common::vault::{quick_plugin, PROBE_PATH, TOKEN};
use serde_json::{json, Value};
use vault_redirect_doubles::{ConsulDouble, VaultCluster};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::pki::{self, Pki};
use vault_redirect_e2e::poller::Poller;

/// Vault doubles serving TLS, Consul, the poller, and Envoy with a TLS listener and
/// `"scheme": "https"`.
async fn tls_stack(pki: &Pki) -> Result<(VaultCluster, ConsulDouble, Poller, Envoy)> {
    let vault = VaultCluster::start_tls(
        &[
            ("vault-a", vault_redirect_doubles::Role::Active),
            ("vault-b", vault_redirect_doubles::Role::Standby),
            ("vault-c", vault_redirect_doubles::Role::Standby),
        ],
        &pki.chain,
        &pki.key,
    )
    .await?;
    vault.add_token(TOKEN);
    let consul = ConsulDouble::start(vault.consul_nodes()).await?;
    let poller = Poller::start(&consul.url(), &[]).await?;
    let opts = EnvoyOptions {
        plugin_config: quick_plugin(r#","scheme":"https""#),
        ..EnvoyOptions::tls(poller.addr, pki::files(pki))
    };
    let envoy = Envoy::start(opts).await?;
    assert!(envoy.url("/").starts_with("https://"));
    Ok((vault, consul, poller, envoy))
}

fn trusting(pki: &Pki) -> Result<reqwest::ClientBuilder> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes())?)
        .timeout(std::time::Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_gets_a_307_to_the_active_node_over_https() -> Result<()> {
    let pki = pki::loopback()?;
    let (vault, consul, _poller, envoy) = tls_stack(&pki).await?;
    // reqwest offers h2 and http/1.1 by ALPN; Envoy picks h2.
    let h2 = trusting(&pki)?.redirect(reqwest::redirect::Policy::none()).build()?;
    let want = format!("{}{PROBE_PATH}", vault.api_addr("vault-a").unwrap_or_default());
    assert!(
        want.starts_with("https://127.0.0.2:") || want.starts_with("https://127.0.0.1:"),
        "{want}"
    );
    let r = vault_redirect_e2e::wait_for(
        "an h2 307 over TLS",
        std::time::Duration::from_secs(20),
        || async {
            h2.get(envoy.url(PROBE_PATH)).send().await.ok().filter(|r| r.status().as_u16() == 307)
        },
    )
    .await?;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["location"], want.as_str());
    assert_eq!(r.headers()["cache-control"], "no-store");
    // HTTP/1.1 over the same TLS listener gets the same answer.
    let h1 = trusting(&pki)?.redirect(reqwest::redirect::Policy::none()).http1_only().build()?;
    let r = h1.post(envoy.url("/v1/secret/data/x")).body("{}").send().await?;
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_11, 307));
    assert!(r.headers()["location"].to_str()?.starts_with("https://"));

    // A failover keeps the scheme.
    vault.set_active("vault-b");
    consul.set_active("vault-b");
    let want_b = format!("{}{PROBE_PATH}", vault.api_addr("vault-b").unwrap_or_default());
    vault_redirect_e2e::wait_for(
        "the https Location of vault-b",
        std::time::Duration::from_secs(20),
        || async {
            let r = h2.get(envoy.url(PROBE_PATH)).send().await.ok()?;
            (r.headers().get("location")?.to_str().ok()? == want_b).then_some(())
        },
    )
    .await?;
    let failures = envoy.filter_failures();
    if !failures.is_empty() {
        bail!("filter failures: {failures:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_follow_the_https_redirect_and_write_on_the_active_node() -> Result<()> {
    let pki = pki::loopback()?;
    let (vault, _consul, _poller, envoy) = tls_stack(&pki).await?;
    let follow = trusting(&pki)?.build()?;
    let url = envoy.url("/v1/secret/data/tls/app");
    let w = vault_redirect_e2e::wait_for(
        "a write through the https redirect",
        std::time::Duration::from_secs(20),
        || async {
            let r = follow
                .post(&url)
                .header("X-Vault-Token", TOKEN)
                .json(&json!({"data": {"k": "tls"}}))
                .send()
                .await
                .ok()?;
            (r.status().as_u16() == 200).then_some(r)
        },
    )
    .await?;
    // The final answer came from the active double itself, over h2.
    assert_eq!(w.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        w.url().as_str(),
        format!("{}/v1/secret/data/tls/app", vault.api_addr("vault-a").unwrap_or_default())
    );
    let at_a = vault.received("vault-a");
    let post = at_a.iter().find(|r| r.method == "POST").context("vault-a got no POST")?;
    assert_eq!(post.header("x-vault-token"), Some(TOKEN));
    assert_eq!(post.json(), Some(json!({"data": {"k": "tls"}})));
    assert!(vault.received("vault-b").is_empty() && vault.received("vault-c").is_empty());

    // curl (nghttp2) over TLS with --http2: a second, independent h2 client.
    let out = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "--http2",
            "--location",
        ])
        .arg("--cacert")
        .arg(pki.path("ca.pem"))
        .args([
            "--header",
            &format!("X-Vault-Token: {TOKEN}"),
            "--write-out",
            "\n%{http_version} %{num_redirects}",
            &url,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .context("running curl")?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, trailer) = text.rsplit_once('\n').context("no --write-out line")?;
    assert_eq!(trailer, "2 1", "HTTP version and redirects followed");
    let read: Value = serde_json::from_str(body)?;
    assert_eq!(read["data"]["data"], json!({"k": "tls"}));
    let failures = envoy.filter_failures();
    if !failures.is_empty() {
        bail!("filter failures: {failures:?}");
    }
    Ok(())
}
