//! The Kubernetes source's bench (issue 17): the time from Vault's label patch to Envoy's
//! `Location` naming the new pod (Kubernetes API double -> poller on `--source kubernetes` ->
//! real Envoy), p50/p99/max over K8S_BENCH_SWITCHES failovers (default 40), beside the same
//! measurement through the Consul double in the same run as the baseline; and the poller's RSS
//! while watching, beside the Consul poller's. Not part of the test command:
//! `cargo build --release -p vault-redirect-poller && VAULT_REDIRECT_POLLER_BIN=target/release/vault-redirect-poller cargo run --release -p vault-redirect-e2e --bin k8s_bench`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vault_redirect_doubles::{three_nodes, ConsulDouble};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::kubernetes::KubeStack;
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, location, proc, wait_for};

const PATH: &str = "/v1/secret/data/bench";
/// A failover slower than this is broken, not slow.
const BOUND: Duration = Duration::from_secs(5);
/// Between switches: leaves the Consul poller's pacing (a burst of 10, then 5 requests/s) out
/// of the baseline, and gives both the same rhythm.
const GAP: Duration = Duration::from_millis(250);

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Waits until Envoy's Location is `want`, returning how long it took since `t0`.
async fn until_location(
    http: &reqwest::Client,
    url: &str,
    want: &str,
    t0: Instant,
) -> Result<Duration> {
    loop {
        if let Ok((_, Some(l))) = location(http, url).await {
            if l == want {
                return Ok(t0.elapsed());
            }
        }
        if t0.elapsed() > BOUND {
            bail!("Location not {want} after {BOUND:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Run {
    took: Vec<Duration>,
    rss_kib: u64,
}

impl Run {
    fn row(&self, name: &str) -> String {
        let mut t = self.took.clone();
        t.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MB |",
            t.len(),
            ms(quantile(&t, 0.5)),
            ms(quantile(&t, 0.99)),
            ms(quantile(&t, 1.0)),
            self.rss_kib as f64 / 1024.0
        )
    }
}

async fn kubernetes(switches: usize) -> Result<Run> {
    let stack = KubeStack::start(&[]).await?;
    let http = client()?;
    let url = stack.envoy.url(PATH);
    let want = |pod: &str| format!("http://{}:8200{PATH}", KubeStack::ip(pod));
    wait_for("the first 307", Duration::from_secs(20), || async {
        location(&http, &url).await.ok().filter(|(_, l)| l.as_deref() == Some(&want("vault-0")))
    })
    .await?;
    let order = ["vault-0", "vault-1", "vault-2"];
    let mut took = Vec::with_capacity(switches);
    for i in 0..switches {
        let (from, to) = (order[i % 3], order[(i + 1) % 3]);
        let t0 = Instant::now();
        stack.fail_over(from, to, i % 2 == 0);
        took.push(
            until_location(&http, &url, &want(to), t0)
                .await
                .with_context(|| format!("switch {i}"))?,
        );
        tokio::time::sleep(GAP).await;
    }
    let pid = stack.poller.proc.pid().context("the poller's pid")?;
    Ok(Run { took, rss_kib: proc::rss_kib(pid)? })
}

async fn consul(switches: usize) -> Result<Run> {
    let consul = ConsulDouble::start(three_nodes()).await?;
    let poller = Poller::start(&consul.url(), &[]).await?;
    let envoy = Envoy::start(EnvoyOptions::new(poller.addr)).await?;
    let http = client()?;
    let url = envoy.url(PATH);
    let nodes = [("vault-a", "127.0.0.2"), ("vault-b", "127.0.0.3"), ("vault-c", "127.0.0.4")];
    let want = |ip: &str| format!("http://{ip}:8200{PATH}");
    wait_for("the first 307", Duration::from_secs(20), || async {
        location(&http, &url).await.ok().filter(|(_, l)| l.as_deref() == Some(&want("127.0.0.2")))
    })
    .await?;
    let mut took = Vec::with_capacity(switches);
    for i in 0..switches {
        let (node, ip) = nodes[(i + 1) % 3];
        let t0 = Instant::now();
        consul.set_active(node);
        took.push(
            until_location(&http, &url, &want(ip), t0)
                .await
                .with_context(|| format!("switch {i}"))?,
        );
        tokio::time::sleep(GAP).await;
    }
    let pid = poller.proc.pid().context("the poller's pid")?;
    Ok(Run { took, rss_kib: proc::rss_kib(pid)? })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let switches: usize = match std::env::var("K8S_BENCH_SWITCHES") {
        Ok(v) => v.parse().with_context(|| format!("K8S_BENCH_SWITCHES={v:?} is not a number"))?,
        Err(_) => 40,
    };
    println!("poller: {}", vault_redirect_e2e::poller::binary()?.display());
    let k8s = kubernetes(switches).await?;
    let base = consul(switches).await?;
    println!();
    println!("| source | switches | change to Location p50 | p99 | max | poller RSS after |");
    println!("|---|---|---|---|---|---|");
    println!("{}", k8s.row("kubernetes (label patch)"));
    println!("{}", base.row("consul (baseline, same run)"));
    let p99 = |r: &Run| {
        let mut t = r.took.clone();
        t.sort();
        quantile(&t, 0.99).as_secs_f64()
    };
    println!();
    println!(
        "ratio kubernetes/consul: p99 {:.2}, RSS {:.2}",
        p99(&k8s) / p99(&base).max(1e-6),
        k8s.rss_kib as f64 / base.rss_kib.max(1) as f64
    );
    Ok(())
}
