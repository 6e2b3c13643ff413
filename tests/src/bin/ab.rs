//! A/B rounds of the filter against two baselines (issue 8's optimisation loop, issue 15's
//! choice of build): `ab [WASM...]` starts one Envoy per filter module given (the shipped
//! filter when none is), one Envoy with the native route redirect, one with the raw-ABI
//! redirect module (`bench::raw_abi_redirect_module`, assembled here: the least a wasm module
//! can do to answer a 307) and one with the same module reading `:path` first, all at once, then loads them in turn for several rounds. Each round
//! measures every contender back to back, so a round's ratios share the machine's state of the
//! moment; the report gives each round's CPU-per-request ratios to native and to the raw-ABI
//! module, and their medians over rounds. BENCH_SECONDS (default 5) and BENCH_ROUNDS (default
//! 5) bound it; BENCH_CONCURRENCY sets Envoy's workers (default 1).
//!
//! The full side-by-side report is `scripts/bench.sh`; this is the quicker loop for comparing
//! builds of the filter with each other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::bench::median;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{bench, target_dir, workspace_root};

const PATH: &str = "/v1/secret/data/app?version=2";
/// What the filter answers to [`PATH`] with vault-a active: the raw-ABI module's fixed answer.
const LOCATION: &str = "http://127.0.0.2:8200/v1/secret/data/app?version=2";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
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
    // The baselines: the raw-ABI module, and the same reading `:path` first.
    std::fs::create_dir_all(target_dir().join("bench"))?;
    for (i, (name, read_path)) in
        [("raw_abi_redirect.wasm", false), ("raw_abi_redirect_reading_path.wasm", true)]
            .into_iter()
            .enumerate()
    {
        let path = target_dir().join("bench").join(name);
        std::fs::write(&path, bench::raw_abi_redirect_module(LOCATION, read_path)?)
            .with_context(|| format!("writing {}", path.display()))?;
        modules.insert(i, path);
    }
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
    // Every contender gives the same answer, so the rounds compare the cost of one answer.
    for (name, envoy) in &contenders {
        let location = bench::check_redirect(&envoy.url(PATH)).await.context(name.clone())?;
        if location != LOCATION {
            bail!("{name} redirects to {location}, not {LOCATION}");
        }
    }

    println!("| round | contender | requests/s | p99 ms | server CPU µs/request | CPU vs native | CPU vs raw-ABI module | throughput vs native |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    // Per contender, each round's (CPU vs native, CPU vs raw-ABI module, throughput vs native).
    let mut ratios: Vec<[Vec<f64>; 3]> = vec![Default::default(); contenders.len()];
    for round in 1..=rounds {
        let mut results = Vec::new();
        for (name, envoy) in &contenders {
            let pid = envoy.proc.pid().context("envoy pid")?;
            results.push(
                bench::load(name, &envoy.url(PATH), pid, Duration::from_secs(seconds)).await?,
            );
        }
        // Contender 0 is native, 1 the raw-ABI module.
        let (Some(native), Some(raw)) = (results.first(), results.get(1)) else {
            bail!("the baselines were not measured");
        };
        for ((r, slot), (name, _)) in results.iter().zip(ratios.iter_mut()).zip(&contenders) {
            let cpu = r.cpu_us_per_req / native.cpu_us_per_req;
            let cpu_raw = r.cpu_us_per_req / raw.cpu_us_per_req;
            let tput = r.rps / native.rps;
            for (values, v) in slot.iter_mut().zip([cpu, cpu_raw, tput]) {
                values.push(v);
            }
            println!(
                "| {round} | {name} | {:.0} | {:.2} | {:.1} | {cpu:.2} | {cpu_raw:.2} | {tput:.2} |",
                r.rps, r.p99_ms, r.cpu_us_per_req
            );
        }
    }
    println!();
    println!("Medians over {rounds} rounds of {seconds} s, --concurrency {concurrency}:");
    for ((name, _), [cpu, cpu_raw, tput]) in contenders.iter().zip(ratios.iter_mut()).skip(1) {
        println!(
            "- {name}: CPU per request {:.2} x native, {:.2} x the raw-ABI module; throughput {:.2} x native",
            median(cpu),
            median(cpu_raw),
            median(tput)
        );
    }
    for (_, envoy) in contenders {
        envoy.proc.stop(Duration::from_secs(5)).await?;
    }
    Ok(())
}
