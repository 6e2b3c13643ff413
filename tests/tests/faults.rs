//! The fault matrix through the whole deployment (Vault doubles, Consul double, the poller
//! binary, real Envoy with the release filter), one test per fault of docs/operations.md
//! ("Faults"). In each, a probe samples Envoy's answer every 10 ms and every sample is checked
//! against what was true: a redirect may be late (last-known-good), never to a node that was
//! not the active one, and never back to an older answer; Envoy's log must show no filter
//! panic, trap or VM failure, and the poller's log no panic.
//!
//! The poller runs with `--max-stale 2s --consul-wait 1s` and quick retries so each fault
//! plays out in seconds; the bounds asserted are generous (the machine is shared).

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::vault::{
    check_samples, quick_plugin, Probe, Sample, Seen, VaultStack, PROBE_PATH, QUICK_MAX_STALE,
    QUICK_POLLER,
};
use vault_redirect_doubles::{Fault, Role};
use vault_redirect_e2e::envoy::EnvoyOptions;
use vault_redirect_e2e::{client, wait_for};

/// How late a redirect may be and still count as right (propagation, last-known-good).
const LAG: Duration = Duration::from_secs(10);
/// How long any expected change may take on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(20);
/// Clock skew between the test and the poller's staleness timer it tolerates.
const SKEW: Duration = Duration::from_millis(500);

async fn quick_stack() -> Result<VaultStack> {
    VaultStack::plain(QUICK_POLLER, &quick_plugin("")).await
}

/// Waits until the probe sees `seen` and returns when, measured from `since`.
async fn wait_seen(probe: &Probe, seen: &Seen, since: Instant) -> Result<Duration> {
    wait_for(&format!("the probe to see {seen:?}"), SETTLE, || async {
        probe.samples().iter().find(|s| s.at >= since && s.seen == *seen).map(|s| s.at - since)
    })
    .await
}

/// The 503 Envoy answers without an active node, with Vault's error shape and the reason.
async fn no_active_reason(stack: &VaultStack) -> Result<String> {
    let r = client()?.get(stack.envoy.url(PROBE_PATH)).send().await?;
    if r.status().as_u16() != 503 || r.headers().get("retry-after").is_none() {
        bail!("expected a 503 with Retry-After, got {} {:?}", r.status(), r.headers());
    }
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
    Ok(body["errors"][0].as_str().unwrap_or_default().to_string())
}

/// The scenario shared by faults the poller survives on last-known-good: Consul fails in
/// some way at `t0`; redirects to the active node go on for `--max-stale`, then Envoy answers
/// 503; when Consul recovers, redirects come back. Checks the poller counted the failure
/// under `outcome`.
async fn last_known_good_then_503(
    stack: &VaultStack,
    probe: &Probe,
    outcome: &str,
    recover: impl AsyncFnOnce(),
) -> Result<()> {
    let t0 = Instant::now();
    probe.expect_from(t0 + QUICK_MAX_STALE - SKEW, Seen::NoActive);
    let stale_after = wait_seen(probe, &Seen::NoActive, t0).await?;
    println!("{outcome}: last-known-good served for {stale_after:?}, then 503");
    assert!(stale_after + SKEW >= QUICK_MAX_STALE, "503 after {stale_after:?}, before --max-stale");
    // Last-known-good was really served while Consul failed.
    let lkg = probe
        .samples()
        .iter()
        .filter(|s| s.at > t0 && s.at < t0 + stale_after && s.seen == stack.redirect("vault-a"))
        .count();
    assert!(lkg > 0, "no redirect observed between the fault and the 503");
    let reason = no_active_reason(stack).await?;
    assert!(reason.contains("max-stale") || reason.contains("Consul"), "{reason}");
    let failures = stack
        .poller_metric(&format!("vault_redirect_consul_requests_total{{outcome=\"{outcome}\"}}"))
        .await?;
    assert!(failures >= 1.0, "the poller counted {failures} {outcome} answers");

    let back = Instant::now();
    recover().await;
    probe.expect_from(back, stack.redirect("vault-a"));
    stack.wait_for_location("vault-a", SETTLE).await?;
    probe.observe(5).await?;
    let checked = probe.check(LAG)?;
    println!("{outcome}: {checked} samples, no wrong answer");
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_down_at_start_gives_503_until_it_comes_up_then_redirects() -> Result<()> {
    let stack = VaultStack::launch(QUICK_POLLER, false, |p| EnvoyOptions {
        plugin_config: quick_plugin(""),
        ..EnvoyOptions::new(p)
    })
    .await?;
    // Until the filter hears from the poller it says "no state received"; then the poller's
    // own "no active node" state.
    let reason = wait_for("the poller's no-active state in Envoy", SETTLE, || async {
        no_active_reason(&stack).await.ok().filter(|r| !r.contains("no state received"))
    })
    .await?;
    assert!(reason.starts_with("no active Vault node"), "{reason}");
    let probe =
        Probe::start(stack.envoy.url(PROBE_PATH), Duration::from_millis(10), Seen::NoActive)?;
    probe.observe(20).await?;
    let unreachable = stack
        .poller_metric("vault_redirect_consul_requests_total{outcome=\"unreachable\"}")
        .await?;
    assert!(unreachable >= 1.0, "unreachable Consul requests counted: {unreachable}");
    // The operator is told once, at warn level (docs/operations.md names this line).
    let log = match &stack.poller {
        Some(p) => std::fs::read_to_string(p.proc.log_path())?,
        None => bail!("no poller"),
    };
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("consul: cannot reach Consul at"))
        .count();
    assert_eq!(warned, 1, "{log}");

    let up = Instant::now();
    stack.consul.come_back().await?;
    probe.expect_from(up, stack.redirect("vault-a"));
    let took = stack.wait_for_location("vault-a", SETTLE).await?;
    println!("Consul up: redirects after {took:?}");
    probe.observe(5).await?;
    probe.check(LAG)?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_dying_mid_run_keeps_the_last_known_node_until_max_stale_then_503() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    stack.consul.go_down().await;
    last_known_good_then_503(&stack, &probe, "unreachable", async || {
        let _ = stack.consul.come_back().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_hanging_is_noticed_and_served_like_a_dead_consul() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    stack.consul.set_fault(Some(Fault::Hang));
    last_known_good_then_503(&stack, &probe, "timeout", async || stack.consul.set_fault(None)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_answering_500_keeps_the_last_known_node_until_max_stale_then_503() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    stack.consul.set_fault(Some(Fault::ServerError));
    last_known_good_then_503(&stack, &probe, "http_error", async || stack.consul.set_fault(None))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_answering_malformed_json_keeps_the_last_known_node_until_max_stale_then_503(
) -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    stack.consul.set_fault(Some(Fault::MalformedJson));
    last_known_good_then_503(&stack, &probe, "malformed", async || stack.consul.set_fault(None))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_index_going_backwards_does_not_stop_failovers() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    let before = stack.poller.as_ref().map(|p| p.state());
    let version_before = match before {
        Some(f) => f.await?.version,
        None => bail!("no poller"),
    };
    // A snapshot restore: the index drops far below what the poller last saw, then the
    // failover happens at that lower index.
    stack.consul.reset_index(2);
    let t = Instant::now();
    stack.switch("vault-b");
    probe.expect_from(t, stack.redirect("vault-b"));
    let took = stack.wait_for_location("vault-b", SETTLE).await?;
    println!("index went back from above 10 to {}: vault-b after {took:?}", stack.consul.index());
    // And the loop goes on from the lower index: one more failover.
    let t = Instant::now();
    stack.switch("vault-c");
    probe.expect_from(t, stack.redirect("vault-c"));
    stack.wait_for_location("vault-c", SETTLE).await?;
    let after = match stack.poller.as_ref() {
        Some(p) => p.state().await?.version,
        None => bail!("no poller"),
    };
    assert!(after > version_before, "state version went from {version_before} to {after}");
    probe.observe(5).await?;
    probe.check(LAG)?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_active_nodes_give_503_with_retry_after_until_one_is_elected() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    let t = Instant::now();
    stack.vault.set_no_active();
    stack.consul.update(|nodes| nodes.iter_mut().for_each(|n| n.role = Role::Standby));
    probe.expect_from(t, Seen::NoActive);
    wait_seen(&probe, &Seen::NoActive, t).await?;
    let reason = no_active_reason(&stack).await?;
    assert!(reason.contains("tagged \"active\""), "{reason}");
    assert_eq!(stack.poller_metric("vault_redirect_active_candidates").await?, 0.0);

    let t = Instant::now();
    stack.switch("vault-b");
    probe.expect_from(t, stack.redirect("vault-b"));
    stack.wait_for_location("vault-b", SETTLE).await?;
    probe.observe(5).await?;
    probe.check(LAG)?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_tagged_active_redirect_to_the_newest_registration_only() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    // vault-b wins the election and re-registers at once; vault-a's "active" tag lags.
    let t = Instant::now();
    stack.vault.set_active("vault-b");
    stack.consul.update(|nodes| {
        if let Some(b) = nodes.iter_mut().find(|n| n.node == "vault-b") {
            b.role = Role::Active;
        }
    });
    probe.expect_from(t, stack.redirect("vault-b"));
    stack.wait_for_location("vault-b", SETTLE).await?;
    let state = match stack.poller.as_ref() {
        Some(p) => p.state().await?,
        None => bail!("no poller"),
    };
    assert_eq!(state.active_candidates, 2, "{state:?}");
    assert_eq!(stack.poller_metric("vault_redirect_active_candidates").await?, 2.0);
    probe.observe(30).await?;
    // vault-a's tags catch up: nothing changes for clients.
    stack.consul.set_active("vault-b");
    wait_for("one candidate again", SETTLE, || async {
        (stack.poller_metric("vault_redirect_active_candidates").await.ok()? == 1.0).then_some(())
    })
    .await?;
    probe.observe(10).await?;
    probe.check(LAG)?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_active_node_is_never_a_target() -> Result<()> {
    let stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    // vault-a seals: its sealed check goes critical while its tag still says active.
    let t = Instant::now();
    stack.vault.set_sealed("vault-a", true);
    stack.consul.update(|nodes| {
        if let Some(a) = nodes.iter_mut().find(|n| n.node == "vault-a") {
            a.sealed = true;
        }
    });
    probe.expect_from(t, Seen::NoActive);
    wait_seen(&probe, &Seen::NoActive, t).await?;
    let reason = no_active_reason(&stack).await?;
    assert!(reason.contains("sealed"), "{reason}");
    probe.observe(20).await?;
    // vault-c takes over.
    let t = Instant::now();
    stack.switch("vault-c");
    probe.expect_from(t, stack.redirect("vault-c"));
    stack.wait_for_location("vault-c", SETTLE).await?;
    probe.observe(5).await?;
    probe.check(LAG)?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_ten_times_a_second_settles_on_the_final_active_node() -> Result<()> {
    // The debug header names the state version of each answer: with one worker, versions must
    // never go down, which settles what node names alone cannot while the active node cycles.
    let stack = VaultStack::plain(QUICK_POLLER, &quick_plugin(r#","debug_header":true"#)).await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    let order = ["vault-b", "vault-c", "vault-a"];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let started = Instant::now();
    // 50 changes at 10 per second: 5 s of flapping.
    for i in 0..50 {
        tick.tick().await;
        let node = order[i % order.len()];
        let t = Instant::now();
        stack.switch(node);
        probe.expect_from(t, stack.redirect(node));
    }
    let t = Instant::now();
    stack.switch("vault-b");
    probe.expect_from(t, stack.redirect("vault-b"));
    println!("flapped 50 times in {:?}", started.elapsed());
    let took = stack.wait_for_location("vault-b", SETTLE).await?;
    println!("settled on vault-b {took:?} after the last change");
    // Once settled, every answer is the final node.
    let settled = Instant::now();
    probe.observe(50).await?;
    let after: Vec<_> = probe.samples().into_iter().filter(|s| s.at > settled).collect();
    assert!(
        after.iter().all(|s| s.seen == stack.redirect("vault-b")),
        "{:?}",
        after.iter().find(|s| s.seen != stack.redirect("vault-b"))
    );
    let checked = probe.check(LAG)?;
    let versions: Vec<u64> = probe.samples().iter().filter_map(|s| s.version).collect();
    assert!(
        versions.len() * 10 >= checked * 9,
        "{} of {checked} answers named their version",
        versions.len()
    );
    if let Some(w) = versions.windows(2).find(|w| w[1] < w[0]) {
        panic!("the state version went down: {} then {}", w[0], w[1]);
    }
    let distinct = versions.windows(2).filter(|w| w[1] > w[0]).count();
    println!("flapping: {checked} samples, no wrong answer, {distinct} version steps, never down");
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_poller_leaves_the_last_state_in_place_and_its_restart_brings_the_news(
) -> Result<()> {
    let mut stack = quick_stack().await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    stack.kill_poller();
    // Without a poller, Envoy keeps redirecting to the last node it knew.
    probe.observe(30).await?;
    let t = Instant::now();
    stack.switch("vault-b");
    probe.expect_from(t, stack.redirect("vault-b"));
    probe.observe(10).await?;
    stack.restart_poller().await?;
    let took = stack.wait_for_location("vault-b", SETTLE).await?;
    println!("poller restarted: vault-b {took:?} after the restart completed");
    let failures = stack.envoy.stat("wasmcustom.vault_redirect.poll_failures").await?.unwrap_or(0);
    assert!(failures > 0, "Envoy counted no poll failure while the poller was dead");
    probe.observe(5).await?;
    probe.check(LAG)?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_takes_a_new_plugin_configuration_from_lds_without_dropping_the_state() -> Result<()>
{
    let mut stack = VaultStack::start(QUICK_POLLER, |p| EnvoyOptions {
        plugin_config: quick_plugin(""),
        ..EnvoyOptions::lds(p)
    })
    .await?;
    let probe = stack.probe("vault-a")?;
    probe.observe(5).await?;
    // No poller from here on: whatever the new configuration redirects to, it can only have
    // from the state the old one left in shared data.
    stack.kill_poller();
    probe.observe(10).await?;
    stack.envoy.set_plugin_config(&quick_plugin(r#","debug_header":true"#)).await?;
    // The first request on a new connection runs the new configuration (the debug header
    // shows it) and is redirected to the active node at once: no "no state received".
    let r = client()?.get(stack.envoy.url(PROBE_PATH)).send().await?;
    assert_eq!(r.status().as_u16(), 307, "{:?}", r.headers());
    assert_eq!(r.headers()["location"], stack.location("vault-a", PROBE_PATH).as_str());
    assert!(
        r.headers().contains_key("x-vault-redirect-state"),
        "the new configuration is not in use"
    );
    probe.observe(20).await?;
    let modified =
        stack.envoy.stat("listener_manager.listener_in_place_updated").await?.unwrap_or(0)
            + stack.envoy.stat("listener_manager.listener_modified").await?.unwrap_or(0);
    assert!(modified >= 1, "Envoy did not update its listener");

    // A configuration the filter refuses is rejected as a whole; the running one stays.
    let err = match stack.envoy.set_plugin_config(&quick_plugin(r#","scheme":"ftp""#)).await {
        Ok(()) => bail!("Envoy took scheme \"ftp\""),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("rejected"), "{err}");
    let r = client()?.get(stack.envoy.url(PROBE_PATH)).send().await?;
    assert_eq!(r.status().as_u16(), 307);
    assert!(
        r.headers().contains_key("x-vault-redirect-state"),
        "the accepted configuration was replaced"
    );
    // And the next good configuration is taken again, still from the shared state.
    stack
        .envoy
        .set_plugin_config(&quick_plugin(r#","debug_header":true,"retry_max_ms":300"#))
        .await?;
    let r = client()?.get(stack.envoy.url(PROBE_PATH)).send().await?;
    assert_eq!(r.status().as_u16(), 307, "after a rejected configuration: {:?}", r.headers());
    assert_eq!(r.headers()["location"], stack.location("vault-a", PROBE_PATH).as_str());

    // With the poller back, the new configuration follows failovers.
    stack.restart_poller().await?;
    let t = Instant::now();
    stack.switch("vault-c");
    probe.expect_from(t, stack.redirect("vault-c"));
    stack.wait_for_location("vault-c", SETTLE).await?;
    probe.observe(5).await?;
    probe.check(LAG)?;
    // The refused configuration is logged (critical), fails to load, and nothing else fails.
    stack.assert_no_failures_except(&[
        "invalid value \"ftp\"",
        "Failed to configure base Wasm plugin",
        "failed to load",
    ])
}

/// The probe's checker itself: a lagging but forward-moving view of a cycling active node
/// passes; an answer that was never right, or one that can only be an older truth after a
/// newer one was seen, fails.
#[test]
fn the_probe_check_accepts_lag_and_catches_wrong_and_backward_answers() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let r = |node: &str| Seen::Redirect(format!("http://{node}/"));
    // a (0 ms), b (100), c (200), a (300): the active node cycles.
    let truth = vec![(ms(0), r("a")), (ms(100), r("b")), (ms(200), r("c")), (ms(300), r("a"))];
    let run = |seen: &[(u64, &str)], lag: u64| {
        let samples: Vec<Sample> = seen
            .iter()
            .map(|(at, node)| Sample { at: ms(*at), seen: r(node), version: None })
            .collect();
        check_samples(&samples, &truth, Duration::from_millis(lag))
    };
    // On time.
    assert!(run(&[(10, "a"), (110, "b"), (210, "c"), (310, "a")], 0).is_ok());
    // Late, skipping b (a poller pacing its Consul queries): the `a` at 320 is still the first
    // truth, not the fourth, so the `c` after it is no step back.
    assert!(run(&[(10, "a"), (320, "a"), (330, "c"), (450, "a")], 300).is_ok());
    // Early: c before it was true.
    let early = run(&[(10, "a"), (150, "c")], 1_000).unwrap_err().to_string();
    assert!(early.contains("never right then"), "{early}");
    // Back: after c (200) an answer b, which only the older truth explains.
    let back = run(&[(10, "a"), (210, "c"), (260, "b")], 1_000).unwrap_err().to_string();
    assert!(back.contains("went back"), "{back}");
    // Unknown node.
    assert!(run(&[(10, "z")], 1_000).is_err());
}
