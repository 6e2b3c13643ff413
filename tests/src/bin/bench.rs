//! The side-by-side benchmark (issue 8), one run, every contender against the same Consul
//! double and the same load generator (`wrk`, 32 connections, bounded time):
//!
//! (a) Envoy with the filter, (b) the same Envoy listener with Envoy's native route redirect,
//! (c) vault-redirector 0.2.0 from PyPI, (d) the poller's standalone redirect mode;
//! then failover propagation over 100 switches, and resources. Prints a Markdown report.
//!
//! Run it with `scripts/bench.sh` (it installs wrk and vault-redirector first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::bench::{
    check_redirect, load as load_for, percentile, LoadResult, CONNECTIONS,
};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::proc::{rss_kib, Proc};
use vault_redirect_e2e::{client, free_addr, workspace_root};

const PATH: &str = "/v1/secret/data/app?version=2";

/// Seconds of load per contender (BENCH_SECONDS overrides).
fn load_seconds() -> u64 {
    std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

/// Runs wrk against `url` for the configured time while measuring the CPU time of `pid`.
async fn load(name: &str, url: &str, pid: u32) -> Result<LoadResult> {
    load_for(name, url, pid, Duration::from_secs(load_seconds())).await
}

/// vault-redirector 0.2.0 from the bench virtualenv, bound to loopback only.
fn start_vault_redirector(consul: &str, port: u16) -> Result<Proc> {
    let python = workspace_root().join(".venv-bench/bin/python");
    if !python.is_file() {
        bail!("{} is missing: run scripts/bench.sh", python.display());
    }
    // vault-redirector listens on every interface; patch Twisted's listenTCP to bind 127.0.0.1.
    let code = "import sys\n\
from twisted.internet import reactor\n\
_listen = reactor.listenTCP\n\
reactor.listenTCP = lambda port, factory, **kw: _listen(port, factory, interface='127.0.0.1')\n\
from vault_redirector.runner import console_entry_point\n\
sys.argv = ['vault-redirector', '-l', '-I', '-P', sys.argv[1], sys.argv[2]]\n\
console_entry_point()\n";
    Proc::spawn(
        "vault-redirector",
        &python,
        &["-c".into(), code.into(), port.to_string(), consul.to_string()],
        &[],
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let root = workspace_root();
    std::env::set_var(
        "VAULT_REDIRECT_POLLER_BIN",
        root.join("target/release/vault-redirect-poller"),
    );
    let nodes = vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
        VaultNode::new("vault-c", "127.0.0.4", 8200, Role::Standby),
    ];
    let consul = ConsulDouble::start(nodes).await?;
    let redirect_addr = free_addr()?;
    let poller = Poller::start(
        &consul.url(),
        &["--redirect-listen", &redirect_addr.to_string(), "--log-level", "warn"],
    )
    .await?;
    let poller_pid = poller.proc.pid().context("poller pid")?;
    let idle_poller_rss = rss_kib(poller_pid)?;
    let mut results = Vec::new();
    let mut cold_starts = Vec::new();

    for concurrency in [1u32, 2] {
        let started = Instant::now();
        let envoy =
            Envoy::start(EnvoyOptions { concurrency, ..EnvoyOptions::new(poller.addr) }).await?;
        check_redirect(&envoy.url(PATH)).await?;
        cold_starts.push((concurrency, started.elapsed()));
        let pid = envoy.proc.pid().context("envoy pid")?;
        results.push(
            load(
                &format!("(a) Envoy + filter, --concurrency {concurrency}"),
                &envoy.url(PATH),
                pid,
            )
            .await?,
        );
        envoy.proc.stop(Duration::from_secs(5)).await?;

        let native = Envoy::start(EnvoyOptions {
            concurrency,
            template: "envoy/bench-native-redirect.yaml.tmpl".into(),
            ..EnvoyOptions::new(poller.addr)
        })
        .await?;
        check_redirect(&native.url(PATH)).await?;
        let pid = native.proc.pid().context("envoy pid")?;
        results.push(
            load(
                &format!("(b) Envoy native redirect, --concurrency {concurrency}"),
                &native.url(PATH),
                pid,
            )
            .await?,
        );
        native.proc.stop(Duration::from_secs(5)).await?;
    }

    let vr_port = vault_redirect_e2e::free_port("127.0.0.1")?;
    let consul_hostport = consul.addr().to_string();
    let vr = start_vault_redirector(&consul_hostport, vr_port)?;
    let vr_url = format!("http://127.0.0.1:{vr_port}{PATH}");
    check_redirect(&vr_url).await?;
    results.push(load("(c) vault-redirector 0.2.0", &vr_url, vr.pid().context("pid")?).await?);
    vr.stop(Duration::from_secs(5)).await?;

    let d_url = format!("http://{redirect_addr}{PATH}");
    check_redirect(&d_url).await?;
    let loaded_rss = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let loaded_rss = loaded_rss.clone();
        tokio::spawn(async move {
            for _ in 0..(load_seconds() * 10) {
                if let Ok(kib) = rss_kib(poller_pid) {
                    loaded_rss.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    results.push(load("(d) poller standalone redirect", &d_url, poller_pid).await?);
    sampler.abort();

    // Failover propagation: Consul's change -> first 307 naming the new node, through Envoy.
    let envoy = Envoy::start(EnvoyOptions::new(poller.addr)).await?;
    check_redirect(&envoy.url(PATH)).await?;
    let http = client()?;
    let mut samples = Vec::new();
    let order = [("vault-b", "127.0.0.3"), ("vault-c", "127.0.0.4"), ("vault-a", "127.0.0.2")];
    for i in 0..100 {
        let (node, address) = order[i % order.len()];
        let expected = format!("http://{address}:8200{PATH}");
        // Space the switches: the poller paces Consul queries (burst 10, then 5 per second, as
        // Consul asks of blocking-query clients), and back-to-back switches would measure that
        // pacing rather than the propagation of one failover.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        consul.set_active(node);
        loop {
            let r = http.get(envoy.url(PATH)).send().await?;
            if r.headers().get("location").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("switch {i} to {node} not seen within 10 s");
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);

    let wasm: PathBuf = host_test::shipped::filter_wasm()?;
    let wasm_size = std::fs::metadata(&wasm)?.len();

    println!(
        "## Results ({} s of load per contender, {CONNECTIONS} connections, wrk -t2)\n",
        load_seconds()
    );
    println!("| contender | requests/s | p50 ms | p99 ms | server CPU µs/request | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.1} | {} |",
            r.name, r.rps, r.p50_ms, r.p99_ms, r.cpu_us_per_req, r.errors
        );
        let _ = r.requests;
    }
    let find = |prefix: &str| results.iter().find(|r| r.name.starts_with(prefix));
    println!();
    for c in [1, 2] {
        if let (Some(a), Some(b)) = (
            find(&format!("(a) Envoy + filter, --concurrency {c}")),
            find(&format!("(b) Envoy native redirect, --concurrency {c}")),
        ) {
            println!(
                "- a/b at --concurrency {c}: throughput {:.2}, CPU per request {:.2}",
                a.rps / b.rps,
                a.cpu_us_per_req / b.cpu_us_per_req
            );
        }
    }
    if let (Some(a), Some(c)) =
        (find("(a) Envoy + filter, --concurrency 1"), find("(c) vault-redirector"))
    {
        println!(
            "- a/c (concurrency 1): throughput {:.1}, CPU per request {:.3}",
            a.rps / c.rps,
            a.cpu_us_per_req / c.cpu_us_per_req
        );
    }
    println!(
        "\n## Failover propagation ({} switches, Consul change -> first 307 to the new node)\n",
        samples.len()
    );
    println!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0)
    );
    println!("\n## Resources\n");
    println!("- filter .wasm: {wasm_size} bytes");
    for (c, t) in &cold_starts {
        println!(
            "- Envoy cold start with the filter (--concurrency {c}), spawn to first 307: {:.0} ms",
            t.as_secs_f64() * 1e3
        );
    }
    println!(
        "- poller RSS: idle {} KiB, peak under load {} KiB",
        idle_poller_rss,
        loaded_rss.load(std::sync::atomic::Ordering::Relaxed)
    );
    envoy.proc.stop(Duration::from_secs(5)).await?;
    poller.proc.stop(Duration::from_secs(5)).await?;
    consul.shutdown().await;
    Ok(())
}
