//! The fan-out bench (issue 11): one poller process holding FANOUT_WAITERS (default 10,000)
//! concurrent long-polls on loopback, one Consul change, and the poller's RSS and the time
//! from the change to each waiter's answer (p50, p99, max). Not part of the test command; run
//! it with `scripts/fanout-bench.sh` (release poller, soft file limit raised to the hard one).

use std::time::Duration;

use anyhow::{Context, Result};
use vault_redirect_e2e::fanout;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let waiters: usize = match std::env::var("FANOUT_WAITERS") {
        Ok(v) => v.parse().with_context(|| format!("FANOUT_WAITERS={v:?} is not a number"))?,
        Err(_) => 10_000,
    };
    let runs: usize = match std::env::var("FANOUT_RUNS") {
        Ok(v) => v.parse().with_context(|| format!("FANOUT_RUNS={v:?} is not a number"))?,
        Err(_) => 3,
    };
    let mut reports = Vec::new();
    for run in 1..=runs {
        let r = fanout::run(waiters, Duration::from_secs(60)).await?;
        println!("run {run}: {}", r.summary());
        reports.push(r);
    }
    println!();
    println!("| run | waiters | poller RSS, all parked | RSS idle | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (i, r) in reports.iter().enumerate() {
        println!(
            "| {} | {} | {:.1} MB | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} ms |",
            i + 1,
            r.waiters,
            r.rss_kib as f64 / 1024.0,
            r.idle_rss_kib as f64 / 1024.0,
            r.quantile(0.5).as_secs_f64() * 1000.0,
            r.quantile(0.99).as_secs_f64() * 1000.0,
            r.quantile(1.0).as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
