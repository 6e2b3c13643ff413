//! How long a failover takes to reach clients: the active node changes (the Vault doubles
//! elect it, Consul's tags follow), and the time until Envoy's `Location` names it is
//! measured over 24 switches. The design budget is 50 ms p99 (DESIGN.md); on a shared 2-core
//! machine the test asserts only a generous bound and prints the distribution.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::vault::{percentile, quick_plugin, VaultStack, PROBE_PATH};

/// Generous: a failover slower than this is broken, not slow.
const BOUND: Duration = Duration::from_secs(5);
const SWITCHES: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_reach_envoys_location_within_a_generous_bound() -> Result<()> {
    let stack = VaultStack::plain(&[], &quick_plugin("")).await?;
    let probe = stack.probe("vault-a")?;
    let http = vault_redirect_e2e::client()?;
    let url = stack.envoy.url(PROBE_PATH);
    let order = ["vault-b", "vault-c", "vault-a"];
    let mut took = Vec::with_capacity(SWITCHES);
    for i in 0..SWITCHES {
        let node = order[i % order.len()];
        let want = stack.location(node, PROBE_PATH);
        let t0 = Instant::now();
        stack.switch(node);
        probe.expect_from(t0, stack.redirect(node));
        loop {
            let r = http.get(&url).send().await?;
            if r.headers().get("location").and_then(|v| v.to_str().ok()) == Some(want.as_str()) {
                break;
            }
            if t0.elapsed() > BOUND {
                bail!("switch {i} to {node}: Location not {want} after {BOUND:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        took.push(t0.elapsed());
        // Leave the poller's Consul pacing (a token bucket of 5 requests/s after a burst of
        // 10) out of the measurement: this measures propagation, not the rate limit.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (p50, p99, max) =
        (percentile(&took, 50.0), percentile(&took, 99.0), percentile(&took, 100.0));
    println!("failover to Envoy's Location over {SWITCHES} switches: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(max <= BOUND, "slowest failover {max:?}");
    let checked = probe.check(Duration::from_secs(5))?;
    println!("probe: {checked} samples during the switches, no wrong answer");
    stack.assert_no_failures()
}
