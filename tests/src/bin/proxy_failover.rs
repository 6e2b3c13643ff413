//! Proxy mode's failover figures (issue 18) on a real three-node OpenBao cluster: clients loop
//! on KV writes and reads through Envoy in proxy mode (tests/src/proxy_load.rs) while the
//! active node is SIGKILLed `KILLS` times (each time restarted as a standby afterwards) and
//! steps down `STEP_DOWNS` times, for each poller probe interval in `PROBE_INTERVALS`. Per
//! failover: the requests that failed inside its window, how long errors lasted, the requests
//! Envoy sent to a node not active, how soon the first request reached the new node. Prints
//! a Markdown report; it only measures (every request outside the windows is checked, and
//! any that failed is listed, as are writes applied twice).
//!
//! Env: `KILLS` (default 5), `STEP_DOWNS` (default 10), `PROBE_INTERVALS` (ms, default
//! `100,500`), `CLIENTS` (default 3), `PACE_MS` (least time between one client's iterations,
//! a write and its read; default 10), `STEP_DOWN_SPACING_S` (least time between two
//! step-downs, default 11: a node that stepped down waits 10 s before it takes the lock
//! again, so quicker step-downs measure that wait). Run it with
//! `scripts/proxy-bench.sh failover`.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use vault_redirect_e2e::bench::{load_average, percentile, random_below};
use vault_redirect_e2e::openbao::{ClusterOptions, OpenBaoCluster};
use vault_redirect_e2e::proxy_load::{
    fail_over, judge, node_names, summary, unanswered_writes_applied_twice, Failover, Fault,
    HealthTimeline, Load, LoadOptions, ProxyStack, Window, MARGIN,
};
use vault_redirect_e2e::wait_for;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Requests that must complete after a window before the next fault.
const SETTLED_REQUESTS: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let kills: usize = env_or("KILLS", 5);
    let step_downs: usize = env_or("STEP_DOWNS", 10);
    let clients: usize = env_or("CLIENTS", 3);
    let pace = Duration::from_millis(env_or("PACE_MS", 10));
    let spacing = Duration::from_secs(env_or("STEP_DOWN_SPACING_S", 11));
    let intervals: Vec<Duration> = env_or("PROBE_INTERVALS", "100,500".to_string())
        .split(',')
        .map(|ms| ms.trim().parse().map(Duration::from_millis).context("PROBE_INTERVALS: ms"))
        .collect::<Result<_>>()?;
    let load_before = load_average();
    let mut cluster = OpenBaoCluster::start(ClusterOptions::default()).await?;
    eprintln!("cluster formed in {:.1} s", cluster.formed_in().as_secs_f64());
    let token = cluster.root_token().to_string();
    let mut rows = Vec::new();
    for &interval in &intervals {
        let opts = LoadOptions {
            clients,
            pace,
            token: token.clone(),
            prefix: format!("bench-{}-{}", std::process::id(), interval.as_millis()),
        };
        rows.extend(run(&mut cluster, interval, kills, step_downs, spacing, opts).await?);
    }
    println!("| --vault-probe-interval | fault | failovers | failed requests per failover: p50 / max (total) | error window ms: p50 / p99 | sent to a node not active (answered) | Vault's election ms: p50 / max | new node's first 200 to its first request ms: p50 / p99 | retried after a connect failure | requests outside the windows (failed or misrouted) | writes applied twice | requests sent again after reaching Vault |");
    println!("|---|---|---:|---|---|---|---|---|---:|---|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\n{clients} clients, one write and one read per iteration, at most one iteration per {} ms each; window = the fault until the new node's first 200 + the probe interval + {} ms. Load average {load_before} before, {} after.",
        pace.as_millis(),
        MARGIN.as_millis(),
        load_average()
    );
    Ok(())
}

/// One probe interval: the stack, the load, the failovers; one report row per fault.
async fn run(
    cluster: &mut OpenBaoCluster,
    interval: Duration,
    kills: usize,
    step_downs: usize,
    spacing: Duration,
    opts: LoadOptions,
) -> Result<Vec<String>> {
    let stack = ProxyStack::start(cluster, interval, 2).await?;
    let timeline = HealthTimeline::start(cluster)?;
    let first = cluster.wait_until_settled(Duration::from_secs(60)).await?;
    let load = Load::start(&format!("http://{}", stack.envoy.listen), opts)?;
    let settled = |since: SystemTime| {
        let load = &load;
        move || async move { (load.done_since(since) >= SETTLED_REQUESTS).then_some(()) }
    };
    wait_for(
        "requests before the first fault",
        Duration::from_secs(30),
        settled(SystemTime::now()),
    )
    .await?;
    let mut failovers: Vec<Failover> = Vec::new();
    let mut last_step_down: Option<std::time::Instant> = None;
    let faults = std::iter::repeat_n(Fault::Kill, kills)
        .chain(std::iter::repeat_n(Fault::StepDown, step_downs));
    for fault in faults {
        if let (Fault::StepDown, Some(last)) = (fault, last_step_down) {
            // A node that stepped down does not take the lock again for 10 s (Vault's
            // manualStepDownSleepPeriod); a step-down sooner can leave no other candidate and
            // measures that sleep, not a failover.
            tokio::time::sleep(spacing.saturating_sub(last.elapsed())).await;
        }
        // Faults come at any phase of the poller's rounds, not always at the same one.
        tokio::time::sleep(random_below(interval)).await;
        if fault == Fault::StepDown {
            last_step_down = Some(std::time::Instant::now());
        }
        let f = fail_over(cluster, &timeline, fault, interval).await?;
        eprintln!("{}ms: {fault} {} -> {}", interval.as_millis(), f.old, f.new);
        wait_for("requests after the window", Duration::from_secs(60), settled(f.bound)).await?;
        if fault == Fault::Kill {
            cluster.start_node(&f.old).await?;
            cluster.wait_until_settled(Duration::from_secs(60)).await?;
            cluster.wait_for_voters(Duration::from_secs(60)).await?;
        }
        failovers.push(f);
    }
    let requests = load.stop().await;
    let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    let log = stack.access_log_for(&ids).await?;
    let verdict = judge(&requests, &log, &timeline, &failovers, &first, &node_names(cluster));
    for w in &verdict.windows {
        eprintln!("{}ms: {}", interval.as_millis(), summary(w));
        for example in &w.examples {
            eprintln!("{}ms:   e.g. {example}", interval.as_millis());
        }
    }
    for bad in verdict.settled_bad.iter().take(20) {
        eprintln!("{}ms: outside the windows: {bad}", interval.as_millis());
    }
    let twice = unanswered_writes_applied_twice(cluster, &requests).await?;
    let replays = verdict.replayed.len() + twice.len();
    let resent = stack.resent_after_reaching_vault(&log).await?;
    for r in resent.iter().take(20) {
        eprintln!("{}ms: sent again after reaching Vault: {r}", interval.as_millis());
    }
    let resent = resent.len();
    let (retries, connect_failures) = stack.retries().await?;
    eprintln!(
        "{}ms: {} requests; Envoy retried {retries} times after {connect_failures} connect failures; {} unlogged",
        interval.as_millis(),
        requests.len(),
        verdict.unlogged
    );
    let mut rows = Vec::new();
    for fault in [Fault::Kill, Fault::StepDown] {
        let windows: Vec<&Window> =
            verdict.windows.iter().filter(|w| w.failover.fault == fault).collect();
        if windows.is_empty() {
            continue;
        }
        let sorted = |f: &dyn Fn(&Window) -> Option<f64>| {
            let mut v: Vec<f64> = windows.iter().filter_map(|w| f(w)).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let failed = sorted(&|w| Some(w.failed as f64));
        let span = sorted(&|w| Some(w.error_span.map_or(0.0, |d| d.as_secs_f64() * 1e3)));
        let election = sorted(&|w| Some(w.failover.election().as_secs_f64() * 1e3));
        let switch = sorted(&|w| w.switch_ms);
        let non_active: usize = windows.iter().map(|w| w.at_non_active).sum();
        let non_active_ok: usize = windows.iter().map(|w| w.at_non_active_ok).sum();
        let retried: usize = windows.iter().map(|w| w.retried).sum();
        rows.push(format!(
            "| {}ms | {fault} | {} | {:.0} / {:.0} ({:.0}) | {:.0} / {:.0} | {non_active} ({non_active_ok}) | {:.0} / {:.0} | {:.0} / {:.0} | {retried} | {} ({}) | {} | {resent} |",
            interval.as_millis(),
            windows.len(),
            percentile(&failed, 0.5),
            percentile(&failed, 1.0),
            failed.iter().sum::<f64>(),
            percentile(&span, 0.5),
            percentile(&span, 0.99),
            percentile(&election, 0.5),
            percentile(&election, 1.0),
            percentile(&switch, 0.5),
            percentile(&switch, 0.99),
            verdict.settled,
            verdict.settled_bad.len(),
            replays,
        ));
    }
    stack.envoy.proc.stop(Duration::from_secs(5)).await?;
    stack.poller.proc.stop(Duration::from_secs(5)).await?;
    Ok(rows)
}
