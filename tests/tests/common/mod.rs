//! Helpers shared by the end-to-end scenarios.

#![allow(dead_code)]

/// hvac, the bao CLI and vaultrs writing and reading a secret, counting redirects.
pub mod clients;
/// A real OpenBao cluster with the registrar, poller and Envoy in front (issue 16).
pub mod openbao;
/// Vault doubles, the whole stack around them, and the answer probe (issue 7).
pub mod vault;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vault_redirect_doubles::ConsulDouble;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, wait_for};

pub use vault_redirect_doubles::three_nodes;

/// Every document of a multi-document YAML `text` (named `what` in errors), by kind; a kind
/// twice is an error. The deployment files each hold one document per kind.
pub fn yaml_documents(text: &str, what: &str) -> Result<BTreeMap<String, serde_norway::Value>> {
    use serde::Deserialize;
    let mut out = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = serde_norway::Value::deserialize(doc).with_context(|| format!("parsing {what}"))?;
        let kind = v["kind"]
            .as_str()
            .with_context(|| format!("a document of {what} has no kind"))?
            .to_string();
        if out.insert(kind.clone(), v).is_some() {
            bail!("{what} has two {kind} documents");
        }
    }
    Ok(out)
}

/// The Consul double, the poller and Envoy, running together.
pub struct Stack {
    pub consul: ConsulDouble,
    pub poller: Poller,
    pub envoy: Envoy,
}

impl Stack {
    /// Starts the stack with `plugin_config` (None: the default) and `concurrency` workers,
    /// and waits until the filter has applied a state.
    pub async fn start(plugin_config: Option<&str>, concurrency: u32) -> Result<Stack> {
        let consul = ConsulDouble::start(three_nodes()).await?;
        let poller = Poller::start(&consul.url(), &[]).await?;
        let mut opts = EnvoyOptions::new(poller.addr);
        opts.concurrency = concurrency;
        if let Some(c) = plugin_config {
            opts.plugin_config = c.to_string();
        }
        let envoy = Envoy::start(opts).await?;
        let stack = Stack { consul, poller, envoy };
        stack.wait_for_state().await?;
        Ok(stack)
    }

    /// Waits until every worker has applied a state. Envoy sums `state_updates` over the main
    /// thread and the workers, so a positive sum can be the main thread alone while a worker's
    /// first poll is still backing off (it fails with BadArgument when dispatched before the
    /// worker knows the health-checked poller cluster): also require 20 fresh connections in a
    /// row (spread over the workers) to be answered from a state.
    pub async fn wait_for_state(&self) -> Result<()> {
        wait_for("the filter's first state", Duration::from_secs(15), || async {
            let n = self.envoy.stat("wasmcustom.vault_redirect.state_updates").await.ok()??;
            (n > 0).then_some(())
        })
        .await?;
        wait_for("every worker's first state", Duration::from_secs(15), || async {
            for _ in 0..20 {
                let r = self.get_fresh("/v1/sys/health").await.ok()?;
                if r.status().as_u16() == 503 && r.text().await.ok()?.contains("no state received")
                {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// GET `path` on a fresh connection (so requests spread over Envoy's workers).
    pub async fn get_fresh(&self, path: &str) -> Result<reqwest::Response> {
        Ok(client()?.get(self.envoy.url(path)).send().await?)
    }
}

/// Runs curl with `args` (no proxy from the environment, at most 20 s); returns stdout and
/// stderr, or an error with stderr when curl fails.
pub async fn curl(args: &[&str]) -> Result<(String, String)> {
    let out = tokio::process::Command::new("curl")
        // No proxy from the environment may capture loopback traffic; bounded in time.
        .args(["--silent", "--show-error", "--noproxy", "*", "--max-time", "20"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("running curl (is it installed? scripts/setup.sh lists what the tests need)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("curl {args:?} failed ({}): {stderr}", out.status);
    }
    Ok((stdout, stderr))
}

/// curl POSTs the JSON `body` to `url` with the header `token` (`X-Vault-Token: ...`),
/// following redirects (`--data` makes curl POST by itself, without -X: on a 301/302 it would
/// switch to GET and drop the body, on a 307 it must keep both), with `extra` arguments first.
/// Returns the answer's JSON and curl's `<redirects> <final URL> <status>`.
pub async fn curl_post_json(
    extra: &[&str],
    url: &str,
    token: &str,
    body: &str,
) -> Result<(serde_json::Value, String)> {
    let mut args = extra.to_vec();
    args.extend([
        "--location",
        "--header",
        token,
        "--header",
        "Content-Type: application/json",
        "--data",
        body,
        "--write-out",
        "\n%{num_redirects} %{url_effective} %{http_code}",
        url,
    ]);
    let (out, _) = curl(&args).await?;
    let (json_text, trailer) =
        out.rsplit_once('\n').context("curl output without --write-out line")?;
    let answer = serde_json::from_str(json_text)
        .with_context(|| format!("curl's answer is not JSON: {json_text}"))?;
    Ok((answer, trailer.to_string()))
}
