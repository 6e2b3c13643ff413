//! The README's demo: a simulated three-node Vault cluster (Consul double), the poller, and
//! real Envoy with the filter. Shows a redirect, a failover, the redirect after it, and stops
//! everything.

use std::time::{Duration, Instant};

use anyhow::Result;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
        VaultNode::new("vault-c", "127.0.0.4", 8200, Role::Standby),
    ])
    .await?;
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
