//! The soak (issue 9): load through real Envoy with a failover every few seconds for
//! SOAK_SECONDS (default 600), then a report of Envoy's and the poller's RSS at start and end
//! and of every answer that was neither a 307 to a node that was active at about that time nor
//! a 503. Not part of the test command; run it with `scripts/soak.sh`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::client;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::proc::rss_kib;

const NODES: [(&str, &str); 3] =
    [("vault-a", "127.0.0.2"), ("vault-b", "127.0.0.3"), ("vault-c", "127.0.0.4")];
const CLIENTS: usize = 16;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let seconds: u64 =
        std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let failover_every = Duration::from_secs(3);
    let consul = ConsulDouble::start(
        NODES
            .iter()
            .enumerate()
            .map(|(i, (n, a))| {
                VaultNode::new(n, a, 8200, if i == 0 { Role::Active } else { Role::Standby })
            })
            .collect(),
    )
    .await?;
    let poller = Poller::start(&consul.url(), &["--log-level", "warn"]).await?;
    let envoy =
        Envoy::start(EnvoyOptions { concurrency: 2, ..EnvoyOptions::new(poller.addr) }).await?;
    let (envoy_pid, poller_pid) =
        (envoy.proc.pid().context("envoy pid")?, poller.proc.pid().context("poller pid")?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_rss = (rss_kib(envoy_pid).unwrap_or(0), rss_kib(poller_pid).unwrap_or(0));

    // The active node and the previous one: a 307 to either is right during a switch.
    let active = Arc::new(Mutex::new((0usize, 0usize)));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let wrong = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (active, stop, counts, wrong, url) = (
            active.clone(),
            stop.clone(),
            counts.clone(),
            wrong.clone(),
            envoy.url("/v1/secret/data/soak?x=1"),
        );
        tasks.push(tokio::spawn(async move {
            let http = match client() {
                Ok(c) => c,
                Err(_) => return,
            };
            while !stop.load(Ordering::Relaxed) {
                let (now, before) = *active.lock().unwrap_or_else(|e| e.into_inner());
                let key = match http.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let loc = r
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let (after, _) = *active.lock().unwrap_or_else(|e| e.into_inner());
                        let ok_targets = [now, before, after]
                            .map(|i| format!("http://{}:8200/v1/secret/data/soak?x=1", NODES[i].1));
                        match status {
                            307 if ok_targets.contains(&loc) => "307".to_string(),
                            503 => "503".to_string(),
                            _ => {
                                wrong.fetch_add(1, Ordering::Relaxed);
                                format!("WRONG {status} {loc}")
                            }
                        }
                    }
                    Err(e) => format!("client error: {e}"),
                };
                *counts.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
            }
        }));
    }
    let started = Instant::now();
    let mut switches = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(failover_every).await;
        let next = {
            let mut a = active.lock().unwrap_or_else(|e| e.into_inner());
            let next = (a.0 + 1) % NODES.len();
            *a = (next, a.0);
            next
        };
        consul.set_active(NODES[next].0);
        switches += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let end_rss = (rss_kib(envoy_pid).unwrap_or(0), rss_kib(poller_pid).unwrap_or(0));
    let log = std::fs::read_to_string(envoy.proc.log_path()).unwrap_or_default();
    let panics = log
        .lines()
        .filter(|l| {
            l.contains("panicked") || l.contains("Function: proxy_on") && l.contains("failed")
        })
        .count();

    println!(
        "## Soak ({seconds} s, {CLIENTS} clients, Envoy --concurrency 2, a failover every {} s)\n",
        failover_every.as_secs()
    );
    println!("- failovers: {switches}");
    for (k, v) in counts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("- answers {k}: {v}");
    }
    println!(
        "- wrong answers (neither a 307 to a node active around that time nor a 503): {}",
        wrong.load(Ordering::Relaxed)
    );
    println!("- filter panics or VM failures in Envoy's log: {panics}");
    println!("- Envoy RSS: start {} KiB, end {} KiB", start_rss.0, end_rss.0);
    println!("- poller RSS: start {} KiB, end {} KiB", start_rss.1, end_rss.1);
    envoy.proc.stop(Duration::from_secs(5)).await?;
    poller.proc.stop(Duration::from_secs(5)).await?;
    consul.shutdown().await;
    if wrong.load(Ordering::Relaxed) > 0 || panics > 0 {
        anyhow::bail!("the soak saw wrong answers or panics");
    }
    Ok(())
}
