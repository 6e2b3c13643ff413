//! A/B rounds of the filter against Envoy's native redirect (issue 8's optimisation loop):
//! `ab [WASM...]` starts one Envoy per filter module given (the workspace's release build when
//! none is) plus one Envoy with the native route redirect, all at once, then loads them in
//! turn for several rounds. Each round measures every contender back to back, so a round's
//! ratios share the machine's state of the moment; the report gives each round's CPU-per-request
//! ratio to native and the median over rounds. BENCH_SECONDS (default 5) and BENCH_ROUNDS
//! (default 5) bound it; BENCH_CONCURRENCY sets Envoy's workers (default 1).
//!
//! The full side-by-side report is `scripts/bench.sh`; this is the quicker loop for comparing
//! builds of the filter with each other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{bench, workspace_root};

const PATH: &str = "/v1/secret/data/app?version=2";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let seconds = env_or("BENCH_SECONDS", 5);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let concurrency = u32::try_from(env_or("BENCH_CONCURRENCY", 1)).context("BENCH_CONCURRENCY")?;
    let mut modules: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if modules.is_empty() {
        modules.push(host_test::shipped::filter_wasm()?);
    }
    let root = workspace_root();
    std::env::set_var(
        "VAULT_REDIRECT_POLLER_BIN",
        root.join("target/release/vault-redirect-poller"),
    );
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
    ])
    .await?;
    let poller = Poller::start(&consul.url(), &["--log-level", "warn"]).await?;

    let mut contenders = Vec::new();
    let native = Envoy::start(EnvoyOptions {
        concurrency,
        template: "envoy/bench-native-redirect.yaml.tmpl".into(),
        ..EnvoyOptions::new(poller.addr)
    })
    .await?;
    contenders.push(("native redirect".to_string(), native));
    for module in &modules {
        let name = module
            .file_name()
            .map_or_else(|| module.display().to_string(), |n| n.to_string_lossy().into_owned());
        let size = std::fs::metadata(module)
            .with_context(|| format!("reading {}", module.display()))?
            .len();
        let envoy = Envoy::start(EnvoyOptions {
            concurrency,
            wasm: Some(module.clone()),
            ..EnvoyOptions::new(poller.addr)
        })
        .await?;
        contenders.push((format!("{name} ({size} bytes)"), envoy));
    }
    for (_, envoy) in &contenders {
        bench::check_redirect(&envoy.url(PATH)).await?;
    }

    println!("| round | contender | requests/s | p99 ms | server CPU µs/request | CPU ratio to native | throughput ratio |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut ratios: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); contenders.len()];
    for round in 1..=rounds {
        let mut native_result: Option<bench::LoadResult> = None;
        for (i, (name, envoy)) in contenders.iter().enumerate() {
            let pid = envoy.proc.pid().context("envoy pid")?;
            let r = bench::load(name, &envoy.url(PATH), pid, Duration::from_secs(seconds)).await?;
            let (cpu, tput) = match &native_result {
                Some(n) => (r.cpu_us_per_req / n.cpu_us_per_req, r.rps / n.rps),
                None => (1.0, 1.0),
            };
            if let Some(slot) = ratios.get_mut(i) {
                slot.0.push(cpu);
                slot.1.push(tput);
            }
            println!(
                "| {round} | {name} | {:.0} | {:.2} | {:.1} | {cpu:.2} | {tput:.2} |",
                r.rps, r.p99_ms, r.cpu_us_per_req
            );
            if native_result.is_none() {
                native_result = Some(r);
            }
        }
    }
    println!();
    println!("Medians over {rounds} rounds of {seconds} s, --concurrency {concurrency}:");
    for ((name, _), (cpu, tput)) in contenders.iter().zip(ratios.iter_mut()).skip(1) {
        println!(
            "- {name}: CPU per request {:.2} x native, throughput {:.2} x native",
            median(cpu),
            median(tput)
        );
    }
    for (_, envoy) in contenders {
        envoy.proc.stop(Duration::from_secs(5)).await?;
    }
    Ok(())
}
